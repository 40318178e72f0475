"""The logging window: per-step device values are kept and read back together at logging steps.

Between two logging steps the loop only appends ``(loss, found_inf)`` pairs (device tensors on
accelerators, floats on the CPU) and adds host-side counters; :meth:`LogWindow.flush` reads all
pending values back in one transfer and turns the window into one ``train`` log record with the
system metrics (speed, data wait, memory, MFU).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from trainengine.engine._runtime import Runtime
from trainengine.engine._state import TrainState
from trainengine.probes import gpu_memory_stats, mfu, rss_mib

__all__ = ["LogWindow"]

logger = logging.getLogger("trainengine")


class LogWindow:
    """Losses, skip flags and counters since the last logging step.

    Args:
        runtime: the device and world size (for GPU memory and MFU).
        language_modeling: report tokens/s (and MFU when ``flops_per_token`` and ``peak_flops``
            are known).
        flops_per_token: the model's training FLOPs per token, or None.
        peak_flops: the device's peak FLOP/s, or None.

    Example:
        >>> from trainengine.engine import Runtime, TrainState
        >>> window = LogWindow(Runtime("cpu", "fp32"), language_modeling=False)
        >>> window.add(0.5, 0.0, num_samples=16, num_tokens=16)
        >>> state = TrainState(step=1)
        >>> window.flush(state, lr=1e-3, data_wait=0.0)["train/loss"]
        0.5
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        language_modeling: bool,
        flops_per_token: float | None = None,
        peak_flops: float | None = None,
    ) -> None:
        self.runtime = runtime
        self.language_modeling = language_modeling
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops
        # (loss, found_inf) of the steps since the last flush: device tensors off the CPU.
        self.pending: list[tuple[Any, Any]] = []
        self.samples = 0
        self.tokens = 0
        self.start_time = time.perf_counter()
        self.start_step = 0

    def reset(self, step: int) -> None:
        """Start a fresh window at ``step`` (the loop calls this when it starts or resumes)."""
        self.pending = []
        self.samples = self.tokens = 0
        self.start_time = time.perf_counter()
        self.start_step = step

    def add(self, loss: Any, found_inf: Any, *, num_samples: int, num_tokens: int) -> None:
        """Record one optimizer step; nothing is read from the device here."""
        self.pending.append((loss, found_inf))
        self.samples += num_samples
        self.tokens += num_tokens

    def flush(self, state: TrainState, *, lr: float, data_wait: float) -> dict[str, Any] | None:
        """Read the pending values back (the only per-log sync) and return the ``train`` record.

        Adds the window's skipped (non-finite) steps to ``state.num_nonfinite_steps``. Returns
        None when there is nothing to report (no step since the last flush).
        """
        if not self.pending or state.step == 0:
            return None
        # One read-back for all steps since the last log: [loss0, flag0, loss1, flag1, ...].
        flat = [v for pair in self.pending for v in pair]
        values = flat if isinstance(flat[0], float) else torch.stack([t.float() for t in flat]).tolist()
        losses, flags = values[0::2], values[1::2]
        rt = self.runtime
        if rt.world_size > 1:
            # Each process holds its share of every step's loss (its loss sum over the global window's
            # targets): the step's loss is their sum; a step skipped anywhere counts as skipped.
            losses = rt.all_reduce_sum(torch.tensor(losses, dtype=torch.float64, device=rt.device)).tolist()
            flags = rt.all_reduce_max(torch.tensor(flags, dtype=torch.float64, device=rt.device)).tolist()
            self.samples *= rt.world_size  # every process trains on equally many samples per step
            self.tokens *= rt.world_size
        kept = [v for v, bad in zip(losses, flags, strict=True) if not bad]
        skipped_now = int(sum(flags))
        state.num_nonfinite_steps += skipped_now
        now = time.perf_counter()
        elapsed = max(now - self.start_time, 1e-9)
        record = {
            "type": "train",
            "step": state.step,
            "epoch": state.epoch,
            "train/loss": sum(kept) / len(kept) if kept else float("nan"),
            "lr": lr,
            "train/samples_per_second": self.samples / elapsed,
            "train/nonfinite_steps": state.num_nonfinite_steps,
            **self.system_metrics(elapsed, steps=max(state.step - self.start_step, 1), data_wait=data_wait),
        }
        if skipped_now:
            logger.warning(
                "%d optimizer step(s) skipped because the loss or a gradient was not finite (total %d, up to step %d)",
                skipped_now,
                state.num_nonfinite_steps,
                state.step,
            )
        self.reset(state.step)
        return record

    def mfu(self, tokens_per_second: float | None) -> float | None:
        """Model FLOPs utilisation at this throughput (None without FLOPs or a peak)."""
        return mfu(tokens_per_second, self.flops_per_token, self.peak_flops, self.runtime.world_size)

    def system_metrics(self, elapsed: float, *, steps: int, data_wait: float) -> dict[str, float]:
        """Speed and memory over the window (host-side counters only: no device sync)."""
        out = {
            "system/step_time_ms": elapsed / steps * 1e3,
            "system/data_wait_fraction": min(data_wait / elapsed, 1.0),
            "system/rss_mib": rss_mib(),
        }
        if self.language_modeling:
            tps = self.tokens / elapsed
            out["train/tokens_per_second"] = tps
            value = self.mfu(tps)
            if value is not None:
                out["system/mfu"] = value
        out.update({f"system/{k}": v for k, v in gpu_memory_stats(self.runtime.device).items()})
        return out
