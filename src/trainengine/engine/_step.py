"""One optimizer step: forward/backward over an accumulation window, clip, step.

Nothing here reads a value back from the device: the loss, the gradient norm and the
non-finite flag stay tensors, and the fused optimizer skips a bad step on the device itself.
The Trainer reads the accumulated numbers back only on logging steps.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from trainengine.engine._optim import supports_found_inf
from trainengine.engine._runtime import Runtime
from trainengine.errors import DataError

__all__ = ["split_batch", "call_model", "extract_logits", "StepRunner", "StepOutput"]

logger = logging.getLogger("trainengine")


def split_batch(batch: Any) -> tuple[Any, torch.Tensor]:
    """Split a batch into (model inputs, labels).

    Accepted: ``(inputs, labels)`` tuples/lists, and dicts with a ``labels`` key (the other
    keys are the model's keyword inputs; a lone ``input_ids`` is passed positionally).

    Raises:
        DataError: any other shape of batch.
    """
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    if isinstance(batch, Mapping) and "labels" in batch:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        if len(inputs) == 1 and "input_ids" in inputs:
            return inputs["input_ids"], batch["labels"]
        return inputs, batch["labels"]
    kind = type(batch).__name__
    size = f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""
    keys = f" with keys {sorted(batch)}" if isinstance(batch, Mapping) else ""
    raise DataError(
        f"cannot split a batch of type {kind}{size}{keys} into inputs and labels — "
        "yield (inputs, labels) pairs or dicts with a 'labels' key"
    )


def call_model(model: nn.Module, inputs: Any) -> Any:
    # The Tensor check first: isinstance against the Mapping ABC is slow on the hot path.
    if isinstance(inputs, torch.Tensor):
        return model(inputs)
    return model(**inputs) if isinstance(inputs, Mapping) else model(inputs)


def extract_logits(output: Any) -> torch.Tensor:
    """Logits from a model output: a tensor, ``.logits`` (Hugging Face), a dict, or a tuple."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, Mapping) and "logits" in output:
        return output["logits"]
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise DataError(
        f"the model returned {type(output).__name__}; return a tensor of logits, or an object/dict with 'logits'"
    )


def _batch_size(batch: Any) -> int:
    _, labels = split_batch(batch)
    return int(labels.shape[0])


def _split_batch_in_two(batch: Any) -> list[Any]:
    """Split a batch along dim 0 into two halves of the same structure."""
    size = _batch_size(batch)
    half = (size + 1) // 2

    def part(obj: Any, sl: slice) -> Any:
        if isinstance(obj, torch.Tensor):
            return obj[sl]
        if isinstance(obj, Mapping):
            return {k: part(v, sl) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(part(v, sl) for v in obj)
        return obj

    return [part(batch, slice(0, half)), part(batch, slice(half, size))]


class StepOutput:
    """What one optimizer step produced; on accelerators the values stay on the device."""

    __slots__ = ("found_inf", "loss", "num_samples", "num_tokens")

    def __init__(
        self, loss: torch.Tensor | float, found_inf: torch.Tensor | float, num_samples: int, num_tokens: int
    ) -> None:
        self.loss = loss  # mean loss per target over the window (a float on the CPU)
        self.found_inf = found_inf  # 1.0 when the step was skipped as non-finite, else 0.0
        self.num_samples = num_samples
        self.num_tokens = num_tokens


class StepRunner:
    """Forward/backward/accumulate/clip/step for one model and optimizer.

    Args:
        model: the module to call (the plain module: ``compiled`` calls it inside its graph).
        optimizer: its optimizer.
        loss_strategy: the task's loss (``loss_sum``, ``num_targets``, ``validate_inputs``).
        runtime: device and precision.
        max_grad_norm: clip threshold, or None for no clipping.
        scaler: GradScaler for fp16, else None.
        compiled: a :class:`~trainengine.engine._compile.CompiledStep` (``training.compile``): forward
            and loss of each micro-batch run as one compiled graph; None runs them eagerly.
        fused: language modeling (``training.fused_loss``): ``(inputs, labels) -> (loss_sum,
            num_targets)`` from the model's hidden states and head, never making the full logits
            (:class:`~trainengine.engine._fused.FusedLMLoss`); None = logits and the task's loss.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_strategy: Any,
        runtime: Runtime,
        max_grad_norm: float | None,
        scaler: torch.amp.GradScaler | None = None,
        *,
        oom_policy: str = "raise",
        oom_max_splits: int = 3,
        compiled: Any = None,
        fused: Any = None,
    ) -> None:
        self.model = model
        self.compiled = compiled
        self.fused = fused
        self.optimizer = optimizer
        self.loss = loss_strategy
        self.runtime = runtime
        self.max_grad_norm = max_grad_norm
        self.scaler = scaler
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        self.sharded = runtime.checkpoint_io is not None  # FSDP2: the parameters are DTensors
        # The fused optimizer's found_inf flag is a plain tensor; with DTensor parameters it would be mixed with
        # DTensors in one op, which DTensor refuses. Sharded runs read the flag back instead (not yet measured on
        # a GPU: see benchmarks/README.md).
        self._device_skip = supports_found_inf(optimizer) and scaler is None and not self.sharded
        # On the CPU reading a value is no device sync: check non-finite steps on the host.
        self.check_on_host = runtime.device.type == "cpu"
        self._validated = False
        self.check_labels = True  # the Trainer turns it off when setup checked every label
        self.oom_policy = oom_policy
        self.oom_max_splits = oom_max_splits
        self.num_oom_splits = 0

    def forward_backward(self, window: Sequence[Any]) -> tuple[torch.Tensor, int, int] | None:
        """Accumulate gradients over a window, applying the out-of-memory policy.

        ``raise`` re-raises with a hint; ``skip`` frees memory and returns None (no step);
        ``split`` retries the whole window with every micro-batch halved — the loss is normalised
        by the window's targets, so the gradients and the effective batch stay the same.
        """
        attempt = list(window)
        for splits in range(self.oom_max_splits + 1):
            try:
                return self._forward_backward(attempt)
            except torch.OutOfMemoryError as exc:
                self._free_after_oom()
                if self.oom_policy == "skip":
                    return None
                sizes = {_batch_size(b) for b in attempt}
                if self.oom_policy == "raise" or splits == self.oom_max_splits or max(sizes) <= 1:
                    raise torch.OutOfMemoryError(
                        f"{exc}\nout of memory in a training step (micro-batch size {max(sizes)}): "
                        "lower training.batch_size and raise training.gradient_accumulation_steps, "
                        "or set training.oom_policy to split or skip"
                    ) from None
                attempt = [half for b in attempt for half in _split_batch_in_two(b)]
                self.num_oom_splits += 1
                logger.warning(
                    "out of memory: retrying the step as %d micro-batches of <= %d (oom_policy split)",
                    len(attempt),
                    max(_batch_size(b) for b in attempt),
                )
        return None  # unreachable: the loop returns or raises

    def _free_after_oom(self) -> None:
        # Gradients of the failed attempt are partial: drop them with the activations.
        self.optimizer.zero_grad(set_to_none=True)
        if self.runtime.device.type == "cuda":
            torch.cuda.empty_cache()

    def _forward_backward(self, window: Sequence[Any]) -> tuple[torch.Tensor, int, int]:
        """Accumulate gradients over the micro-batches of one optimizer step.

        Each micro-batch's summed loss is divided by the number of targets in the WHOLE
        window, so 8 micro-batches of 2 give the gradients of one batch of 16 — also for
        token losses with padding, where micro-batches hold different numbers of targets.
        A window of one micro-batch takes the fused mean-loss kernel instead.

        Returns:
            (mean loss per target over the window (detached, on the device), samples, tokens).
        """
        if self.compiled is not None:
            return self._forward_backward_compiled(window)
        if self.fused is not None:
            return self._forward_backward_fused(window)
        world = self.runtime.world_size
        if len(window) == 1 and world == 1:
            inputs, labels = split_batch(window[0])
            with self.runtime.autocast():
                logits = extract_logits(call_model(self.model, inputs))
            self._validate_once(logits, labels)
            loss = self.loss.mean_loss(logits, labels)
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            return loss.detach(), labels.shape[0], labels.numel()
        split = [split_batch(b) for b in window]
        total = self._window_targets(split)
        loss_acc: torch.Tensor | None = None
        num_samples = num_tokens = 0
        for i, (inputs, labels) in enumerate(split):
            # DDP: gradients are all-reduced once, in the backward of the window's last micro-batch.
            with self.runtime.no_sync(self.model, sync=i == len(split) - 1):
                with self.runtime.autocast():
                    logits = extract_logits(call_model(self.model, inputs))
                self._validate_once(logits, labels)
                loss_sum = self.loss.loss_sum(logits, labels)
                # An all-padding window divides 0 by 0: NaN, so the step is skipped as non-finite.
                loss = loss_sum / total
                self._backward(loss, world)
            loss_acc = loss.detach() if loss_acc is None else loss_acc + loss.detach()
            num_samples += labels.shape[0]
            num_tokens += labels.numel()
        assert loss_acc is not None  # a window is never empty
        return loss_acc, num_samples, num_tokens

    def _forward_backward_fused(self, window: Sequence[Any]) -> tuple[torch.Tensor, int, int]:
        """:meth:`_forward_backward` with the fused linear + cross-entropy (no full logits)."""
        split = [split_batch(b) for b in window]
        if not self._validated:
            labels = split[0][1]
            if self.check_labels:  # label values need one read-back: the first batch only
                vocab = self.fused.head.weight.shape[0]
                self.loss.check_label_values(labels, num_classes=vocab, what="first training batch")
            self._validated = True  # shapes and dtypes are checked by the fused loss itself
        total = self.loss.num_targets(split[0][1])
        for _, labels in split[1:]:
            total = total + self.loss.num_targets(labels)
        loss_acc: torch.Tensor | None = None
        for inputs, labels in split:
            with self.runtime.autocast():
                loss_sum, _ = self.fused(inputs, labels)
            # An all-padding window divides 0 by 0: NaN, so the step is skipped as non-finite.
            loss = loss_sum / total
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            loss_acc = loss.detach() if loss_acc is None else loss_acc + loss.detach()
        assert loss_acc is not None  # a window is never empty
        return loss_acc, sum(lab.shape[0] for _, lab in split), sum(lab.numel() for _, lab in split)

    def _forward_backward_compiled(self, window: Sequence[Any]) -> tuple[torch.Tensor, int, int]:
        """:meth:`_forward_backward` with each micro-batch's forward and loss one compiled graph."""
        step = self.compiled
        split = [split_batch(b) for b in window]
        if not self._validated:
            # One eager forward (no_grad, eval mode) of the first micro-batch for the shape and
            # label checks: a compiled graph gives no logits to check, and fails obscurely on bad shapes.
            self._validate_once(step.validate_first(self.model, split[0][0], self.runtime), split[0][1])
        num_samples = sum(labels.shape[0] for _, labels in split)
        num_tokens = sum(labels.numel() for _, labels in split)
        world = self.runtime.world_size
        if len(split) == 1 and not step.accumulate and world == 1:
            inputs, labels = split[0]
            loss = step(self.model, inputs, labels)
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            step.end_first_step()
            return loss.detach(), num_samples, num_tokens
        total = self._window_targets(split)
        loss_acc: torch.Tensor | None = None
        for i, (inputs, labels) in enumerate(split):
            with self.runtime.no_sync(self.model, sync=i == len(split) - 1):
                # An all-padding window divides 0 by 0: NaN, so the step is skipped as non-finite.
                loss = step(self.model, inputs, labels, total)
                self._backward(loss, world)
            loss_acc = loss.detach() if loss_acc is None else loss_acc + loss.detach()
        step.end_first_step()
        assert loss_acc is not None  # a window is never empty
        return loss_acc, num_samples, num_tokens

    def _window_targets(self, split: Sequence[tuple[Any, torch.Tensor]]) -> Any:
        """Targets of the whole window — over every process: the loss of a global batch, token-exact."""
        total = self.loss.num_targets(split[0][1])
        for _, labels in split[1:]:
            total = total + self.loss.num_targets(labels)
        if self.runtime.world_size > 1:  # one all-reduce per optimizer step (the stop flags ride along)
            total = self.runtime.reduce_window_targets(total)
        return total

    def _backward(self, loss: torch.Tensor, world: int) -> None:
        # DDP averages gradients over processes; loss_sum / global targets * world undoes that, so the
        # gradient is the one of the global window's summed loss over its targets.
        scaled = loss * world if world > 1 else loss
        (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()

    def _validate_once(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        if not self._validated:
            # Shapes and dtypes are host metadata: checking them costs no sync, but it is
            # Python work, so it happens on the first batch only.
            self.loss.validate_inputs(logits, labels)
            if self.check_labels:  # label values need one read-back: the first batch only
                self.loss.check_label_values(labels, num_classes=logits.shape[-1], what="first training batch")
            self._validated = True

    def unscale(self) -> None:
        """fp16: divide the gradients by the loss scale (before anything looks at them)."""
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)

    def clip_and_step(self, loss: torch.Tensor) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """Clip, and step unless the loss or a gradient is non-finite (call :meth:`unscale` first).

        On an accelerator nothing is read back: a device flag (1.0 = skip) goes to the fused
        optimizer, which skips the update on the device. On the CPU a tensor's value is a plain
        memory read, not a device sync, so the check happens on the host, which costs far less
        than extra kernels there.

        Returns:
            (the loss, the skip flag): floats on the CPU, device tensors elsewhere; the Trainer
            reads device values back only on logging steps.
        """
        if self.max_grad_norm is not None:
            total_norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm, foreach=True)
        else:
            grads = [p.grad for p in self.params if p.grad is not None]
            total_norm = torch.nn.utils.get_total_norm(grads, foreach=True)
        if self.sharded:  # FSDP2: a DTensor (replicated after the reduction); the flag math wants a tensor
            total_norm = total_norm.full_tensor()  # type: ignore[attr-defined]  # a DTensor at run time, typed Tensor
        if self.check_on_host:
            loss_value = loss.item()
            skip = not math.isfinite(loss_value + total_norm.item())
            if not skip:
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            return loss_value, float(skip)
        # norm + loss is non-finite iff either is; times 0 that is NaN (inf * 0, NaN * 0) or 0,
        # and nan_to_num turns it into the 1.0 / 0.0 float flag fused optimizers take.
        flag = torch.nan_to_num((total_norm + loss).mul_(0.0), nan=1.0)
        flag = flag if flag.dtype == torch.float32 else flag.float()
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # the scaler skips on its own inf check
            self.scaler.update()
        elif self._device_skip:
            # Torch internal: fused Adam/AdamW/SGD read ``found_inf`` (the attribute GradScaler sets)
            # and skip the update on the device, step count included. Kept because it was measured
            # to matter: against ``if not bool(flag)`` (one host sync per step) it is up to 14%
            # faster per step where CPU and GPU time are balanced, 3-5% when GPU-bound, within noise
            # when launch-bound (H200, torch 2.11; benchmarks/found_inf_skip.py). If torch changes
            # it, tests/engine/test_found_inf.py fails.
            self.optimizer.found_inf = flag  # type: ignore[attr-defined]  # torch-internal attribute, see above
            self.optimizer.step()
        elif not bool(flag):  # a non-fused optimizer off the CPU: one read per step is the price
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss, flag
