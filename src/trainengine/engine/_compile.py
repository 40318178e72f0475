"""``training.compile``: the training step's forward and loss compiled as one graph.

The step function ``(model, inputs, labels) -> loss`` calls the (uncompiled) model under the
runtime's autocast and computes the loss in the same graph, so the compiler fuses the loss
arithmetic (cross-entropy upcast to fp32) into its kernels: no fp32 copy of the full logits is
ever made by eager code. The model itself stays a plain module (canonical state-dict keys).

Graph breaks are read from dynamo's counters after the first compiled step (no second trace),
logged once and kept in :attr:`CompiledStep.report`; a recompilation is logged when it happens,
found by comparing dynamo's graph counter around each call (two dict reads per micro-batch).
"""

from __future__ import annotations

import contextlib
import logging
import os
import types
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from trainengine.engine._runtime import Runtime
from trainengine.engine._step import call_model, extract_logits

__all__ = ["BACKEND_ENV", "CompiledStep", "compile_backend", "compile_module"]

logger = logging.getLogger("trainengine")

#: Environment variable naming the torch.compile backend (default ``inductor``); tests set
#: ``aot_eager``, which runs the same traced graphs without inductor's code generation.
BACKEND_ENV = "TRAINENGINE_COMPILE_BACKEND"

# Modes whose graphs run as CUDA graphs: their outputs are overwritten by the next call.
_CUDAGRAPH_MODES = frozenset({"reduce-overhead", "max-autotune"})
_MAX_REASONS = 20  # recompile reasons kept in the report
_MAX_SHOWN = 2  # guard failures shown per recompilation


def compile_backend() -> str:
    """The torch.compile backend: ``$TRAINENGINE_COMPILE_BACKEND``, else ``inductor``."""
    return os.environ.get(BACKEND_ENV) or "inductor"


def _compile(fn: Any, mode: str) -> Any:
    backend = compile_backend()
    # ``mode`` selects inductor options; other backends (aot_eager, eager) take none.
    return torch.compile(fn, backend=backend, mode=mode if backend == "inductor" else None)


def compile_module(model: nn.Module, mode: str = "default") -> Any:
    """``torch.compile(model)`` with the configured backend (the evaluation forward)."""
    return _compile(model, mode)


def _fresh(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A copy of ``fn`` with its own code object.

    Dynamo keys its cache (and its recompile limit) on the code object, which every closure of
    one ``def`` shares: a second Trainer in the process would otherwise reuse, or recompile, the
    first one's graphs, and its report would count no graph breaks. A fresh code object gives each
    step its own cache, freed with it.
    """
    code = fn.__code__.replace()
    return types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


def _short(reason: str) -> str:
    """Dynamo's graph-break message in one line: its headline and its explanation."""
    lines = [line.strip() for line in reason.strip().splitlines() if line.strip()]
    if not lines:
        return "unknown reason"
    head = lines[0]
    explanation = next(
        (line.removeprefix("Explanation:").strip() for line in lines if line.startswith("Explanation:")), ""
    )
    return f"{head}: {explanation}" if explanation else head


def _one_line(failure: str, limit: int = 200) -> str:
    """A guard failure's first line, whitespace collapsed, at most ``limit`` characters."""
    line = " ".join(failure.strip().splitlines()[0].split()) if failure.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _dynamo_counters() -> Any:
    from torch._dynamo.utils import counters

    return counters


def _guard_failure_counts() -> dict[Any, int]:
    """How many guard failures (recompile reasons) dynamo recorded per code object so far.

    Read only after the first step and when a recompilation happened: it walks every code object
    dynamo compiled in the process. Empty if torch moved this internal table.
    """
    try:
        from torch._dynamo.utils import guard_failures
    except ImportError:  # pragma: no cover - a torch without it: reasons read "unknown"
        return {}
    return {code: len(failures) for code, failures in list(guard_failures.items())}


def _new_guard_failures(before: dict[Any, int], codes: tuple[types.CodeType, ...]) -> tuple[list[str], dict[Any, int]]:
    """Guard failures recorded since ``before``: the step's (``codes``) if any, else all new ones.

    After a graph break inner frames (the model's ``forward``) compile on their own; their
    recompilations are recorded under their own code objects, whose names prefix the reasons.
    """
    from torch._dynamo.utils import guard_failures

    now = _guard_failure_counts()
    fresh = {code: guard_failures[code][before.get(code, 0) :] for code, n in now.items() if n > before.get(code, 0)}
    own = [f for code in codes for f in fresh.get(code, ())]
    if own:
        return own, now
    return [f"{getattr(code, 'co_name', code)}: {f}" for code, failures in fresh.items() for f in failures], now


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Every module in eval mode (no dropout, no BatchNorm statistics update), then as it was."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


class CompiledStep:
    """The compiled forward + loss of one micro-batch.

    ``step(model, inputs, labels)`` returns the mean loss per target of the micro-batch;
    ``step(model, inputs, labels, total)`` returns ``loss_sum / total`` (gradient accumulation,
    ``total`` the window's targets). Backward runs through the compiled graph's backward.

    Args:
        loss_strategy: the task's loss (``mean_loss``, ``loss_sum``).
        runtime: device and precision (the autocast inside the graph).
        mode: ``training.compile_mode``.
        accumulation_steps: > 1 takes the ``loss_sum / total`` function for every window, so an
            epoch's shorter last window compiles nothing new.
        fused: ``(inputs, labels) -> (loss_sum, num_targets)`` that never makes the full logits
            (:class:`~trainengine.engine._fused.FusedLMLoss`, bound to the model), run under the
            autocast in place of the model call and ``loss_strategy``; None: the plain loss.

    Attributes:
        report: ``{"backend", "mode", "graph_breaks", "graphs", "reasons", "recompiles", "recompile_reasons"}``,
            filled after the first step and on every recompilation (the same dict throughout).
    """

    def __init__(
        self,
        loss_strategy: Any,
        runtime: Runtime,
        *,
        mode: str = "default",
        accumulation_steps: int = 1,
        fused: Callable[[Any, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> None:
        device_type, dtype = runtime.device.type, runtime.autocast_dtype
        loss = loss_strategy

        def autocast() -> contextlib.AbstractContextManager[Any]:
            # The runtime's autocast, built inside the traced function so it is part of the graph.
            return torch.autocast(device_type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

        def forward(model: nn.Module, inputs: Any) -> torch.Tensor:
            with autocast():
                return extract_logits(call_model(model, inputs))

        def mean_loss_step(model: nn.Module, inputs: Any, labels: torch.Tensor) -> torch.Tensor:
            if fused is not None:
                with autocast():
                    loss_sum, num_targets = fused(inputs, labels)
                return loss_sum / num_targets  # no targets: NaN, a skipped step (as mean_loss)
            return loss.mean_loss(forward(model, inputs), labels)

        def sum_loss_step(model: nn.Module, inputs: Any, labels: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
            if fused is not None:
                with autocast():
                    loss_sum = fused(inputs, labels)[0]
                return loss_sum / total
            return loss.loss_sum(forward(model, inputs), labels) / total

        self._mean_fn = _fresh(mean_loss_step)
        self._sum_fn = _fresh(sum_loss_step)
        self._codes = (self._mean_fn.__code__, self._sum_fn.__code__)
        self._compiled_mean = _compile(self._mean_fn, mode)
        self._compiled_sum = _compile(self._sum_fn, mode)
        self.accumulate = accumulation_steps > 1
        self.cudagraphs = mode in _CUDAGRAPH_MODES and runtime.device.type == "cuda"
        self.report: dict[str, Any] = {
            "backend": compile_backend(),
            "mode": mode,
            "graph_breaks": None,  # None until the first step ran; dynamo counts a break per (re)trace
            "graphs": None,  # graphs compiled for the first step (1: no break)
            "reasons": {},
            "recompiles": 0,
            "recompile_reasons": [],
        }
        self._counters: Any = None
        self._breaks_before: Counter[str] | None = None
        self._graphs_before = 0
        self._first_step_done = False
        self._seen_failures: dict[Any, int] = {}

    def validate_first(self, model: nn.Module, inputs: Any, runtime: Runtime) -> torch.Tensor:
        """Eager logits of the first micro-batch for the one-time shape and label checks.

        Under ``no_grad`` and in eval mode: no activations kept, no BatchNorm statistics or
        dropout randomness consumed, so the compiled step that follows trains exactly as before.
        """
        with torch.no_grad(), _eval_mode(model), runtime.autocast():
            return extract_logits(call_model(model, inputs))

    def __call__(
        self, model: nn.Module, inputs: Any, labels: torch.Tensor, total: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self._counters is None:  # the first call: what dynamo counted before this step
            self._counters = _dynamo_counters()
            self._breaks_before = Counter(self._counters["graph_break"])
            self._graphs_before = self._counters["stats"]["unique_graphs"]
        stats = self._counters["stats"]
        graphs = stats["unique_graphs"]
        if self.cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        if total is None:
            loss = self._compiled_mean(model, inputs, labels)
        else:
            loss = self._compiled_sum(model, inputs, labels, total)
        if stats["unique_graphs"] != graphs and self._first_step_done:
            self._on_recompile(stats["unique_graphs"] - graphs)
        # CUDA graphs reuse their output memory on the next call: keep the value.
        return loss.clone() if self.cudagraphs else loss

    def end_first_step(self) -> None:
        """Count the first step's graph breaks (from dynamo's counters) and log them once."""
        if self._first_step_done or self._counters is None:
            return
        self._first_step_done = True
        self._seen_failures = _guard_failure_counts()
        before = self._breaks_before or Counter()
        reasons: Counter[str] = Counter()
        for reason, count in self._counters["graph_break"].items():
            if count > before.get(reason, 0):
                reasons[_short(reason)] += count - before.get(reason, 0)
        self._breaks_before = None
        total = sum(reasons.values())
        graphs = self._counters["stats"]["unique_graphs"] - self._graphs_before
        self.report["graph_breaks"] = total
        self.report["graphs"] = graphs
        self.report["reasons"] = dict(reasons.most_common())
        if total:
            logger.warning(
                "compile: %d graph break%s: %s — %d graph%s compiled; Python runs between them (slower, less "
                "fusion); TORCH_LOGS=graph_breaks shows where",
                total,
                "" if total == 1 else "s",
                ", ".join(f"{reason} (x{count})" for reason, count in reasons.most_common()),
                graphs,
                "" if graphs == 1 else "s",
            )
        else:
            logger.info("compile: 0 graph breaks — the step's forward and loss are one graph")

    def _on_recompile(self, new_graphs: int) -> None:
        try:
            fresh, self._seen_failures = _new_guard_failures(self._seen_failures, self._codes)
        except ImportError:  # pragma: no cover - a torch without the table
            fresh = []
        reason = "; ".join(_one_line(f) for f in fresh[:_MAX_SHOWN] if f.strip()) or (
            "a new graph (a window of another length, or a shape specialised on its second use)"
        )
        if len(fresh) > _MAX_SHOWN:
            reason += f"; and {len(fresh) - _MAX_SHOWN} more"
        self.report["recompiles"] += 1
        if len(self.report["recompile_reasons"]) < _MAX_REASONS:
            self.report["recompile_reasons"].append(reason)
        logger.warning(
            "compile: the training step recompiled (%d new graph%s): %s — a changing shape (a smaller last "
            "batch: training.drop_last) or a changed module costs a compile each time; TORCH_LOGS=recompiles shows why",
            new_graphs,
            "" if new_graphs == 1 else "s",
            reason,
        )
