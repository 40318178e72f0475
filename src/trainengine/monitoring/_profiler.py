"""``monitoring.profile_steps`` / ``trainengine train --profile N``: where the time of a step goes.

:class:`StepProfiler` runs ``torch.profiler`` over ``N`` optimizer steps after a warm-up
(compilation, the allocator and the data loader settle first) and writes into
``<run_dir>/profile/`` (``<output_dir>/profile-<time>`` without a run directory):

* ``*.pt.trace.json``: the trace, which Chrome's ``chrome://tracing`` / Perfetto open and
  TensorBoard's profiler plugin reads (``tensorboard --logdir <run_dir>/profile``);
* ``profile_summary.txt``: the top operators and kernels by self device time (self CPU time on a
  CPU-only run) and by memory allocated, per profiled step;
* ``profile_summary.json``: the same rows as data (``name``, ``calls``, ``self_ms``,
  ``total_ms``, ``self_memory_mb``).

The profiler adds overhead while it records, so only the profiled steps are slowed; the run's
throughput figures include them (profile a short run, not a long one).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

__all__ = ["StepProfiler"]

logger = logging.getLogger("trainengine")

_ROWS = 25


class StepProfiler:
    """A Trainer callback that profiles ``steps`` optimizer steps after ``warmup`` steps.

    Args:
        steps: optimizer steps to record (>= 1).
        warmup: steps to run before recording (the profiler's own warm-up step comes after them).
        out_dir: where the files go; None = ``<run_dir>/profile`` (or ``<output_dir>/profile-<time>``).

    Example:
        >>> StepProfiler(steps=3, warmup=2).steps
        3
    """

    rank_zero_only = True

    def __init__(self, steps: int, warmup: int = 5, out_dir: str | Path | None = None) -> None:
        if steps < 1 or warmup < 0:
            raise ValueError(f"profile steps must be >= 1 and warmup >= 0, got {steps} and {warmup}")
        self.steps, self.warmup = int(steps), int(warmup)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.summary_path: Path | None = None
        self._prof: Any = None
        self._recorded = 0
        self._device = "cpu"

    def _folder(self, trainer: Any) -> Path:
        if self.out_dir is not None:
            return self.out_dir
        run_dir = getattr(trainer, "run_dir", None)
        if run_dir is not None:
            return Path(run_dir) / "profile"
        root = Path(trainer.config.tracking.output_dir)
        return root / f"profile-{time.strftime('%Y%m%d-%H%M%S')}"

    def on_train_start(self, trainer: Any) -> None:
        from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

        device = trainer.runtime.device.type if trainer.runtime is not None else "cpu"
        self._device = device
        activities = [ProfilerActivity.CPU]
        if device == "cuda":
            activities.append(ProfilerActivity.CUDA)
        self.out_dir = self._folder(trainer)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._prof = profile(
            activities=activities,
            # The profiler's own warm-up step is not recorded either: its numbers carry its start-up.
            schedule=schedule(wait=max(0, self.warmup - 1), warmup=min(1, self.warmup), active=self.steps, repeat=1),
            on_trace_ready=tensorboard_trace_handler(str(self.out_dir)),
            record_shapes=True,
            profile_memory=True,
            with_stack=False,
        )
        self._prof.__enter__()

    def on_step_end(self, trainer: Any, output: Any) -> None:
        if self._prof is None:
            return
        self._prof.step()
        step = trainer.state.step
        if step > self.warmup:
            self._recorded += 1
        if self._recorded >= self.steps:
            self._finish()

    def on_train_end(self, trainer: Any, results: dict[str, Any]) -> None:
        self._finish()

    def on_exception(self, trainer: Any, exc: BaseException) -> None:
        if self._prof is not None:
            self._prof.__exit__(None, None, None)
            self._prof = None

    def _finish(self) -> None:
        prof, self._prof = self._prof, None
        if prof is None:
            return
        prof.__exit__(None, None, None)
        if self._recorded == 0:
            logger.warning(
                "profile: the run ended before step %d, so nothing was recorded — lower "
                "monitoring.profile_warmup_steps or train longer",
                self.warmup + 1,
            )
            return
        self._write(prof)

    def _write(self, prof: Any) -> None:
        assert self.out_dir is not None  # set at train start
        device = "cuda" if self._device == "cuda" else "cpu"
        by_time, by_memory = f"self_{device}_time_total", f"self_{device}_memory_usage"
        averages = prof.key_averages()
        tables = [
            f"# {self._recorded} profiled step(s) after {self.warmup} warm-up step(s); device {self._device}",
            f"## top operators and kernels by {by_time}",
            averages.table(sort_by=by_time, row_limit=_ROWS, max_name_column_width=80),
            f"## top operators by {by_memory} (memory allocated by the operator itself)",
            averages.table(sort_by=by_memory, row_limit=_ROWS, max_name_column_width=80),
        ]
        self.summary_path = self.out_dir / "profile_summary.txt"
        self.summary_path.write_text("\n".join(tables) + "\n", encoding="utf-8")
        rows = sorted(averages, key=lambda e: getattr(e, by_time, 0.0), reverse=True)[:_ROWS]
        data: dict[str, Any] = {
            "steps": self._recorded,
            "warmup_steps": self.warmup,
            "device": self._device,
            "sort_by": by_time,
            "rows": [
                {
                    "name": e.key,
                    "calls": e.count,
                    "self_ms": getattr(e, by_time, 0.0) / 1000.0,
                    "total_ms": getattr(e, f"{device}_time_total", 0.0) / 1000.0,
                    "self_memory_mb": getattr(e, by_memory, 0) / 1e6,
                }
                for e in rows
            ],
        }
        (self.out_dir / "profile_summary.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        top = ", ".join(f"{r['name']} {r['self_ms']:.1f} ms" for r in data["rows"][:5])
        logger.info("profile of %d step(s) written to %s — top: %s", self._recorded, self.out_dir, top)
