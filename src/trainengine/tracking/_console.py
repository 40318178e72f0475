"""Console output: a live progress bar on a terminal, plain periodic lines elsewhere, a summary table."""

from __future__ import annotations

import sys
import time
from typing import Any, Literal

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

__all__ = ["ConsoleProgress", "format_duration"]


def format_duration(seconds: float) -> str:
    seconds = max(0, round(float(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"


class ConsoleProgress:
    """Shows step, loss, lr, samples/s and ETA while training, then a summary table.

    Args:
        mode: ``auto`` (a bar on a terminal, plain lines otherwise), ``bar`` or ``plain``.
        plain_interval_s: minimum seconds between two plain progress lines.
        console: where to print (default: standard error for progress, standard output for the summary).
    """

    rank_zero_only = True

    def __init__(
        self,
        mode: Literal["auto", "bar", "plain"] = "auto",
        plain_interval_s: float = 5.0,
        console: Console | None = None,
    ) -> None:
        # soft_wrap: a log file gets whole lines, not lines cut at 80 columns.
        self.console = console or Console(stderr=True, soft_wrap=True)
        self.out = console or Console()
        self.bar = mode == "bar" or (mode == "auto" and self.console.is_terminal)
        self.plain_interval_s = plain_interval_s
        self._progress: Progress | None = None
        self._task: Any = None
        # Any: passed to rich's add_task/update as **fields, whose named parameters are not str.
        self._fields: dict[str, Any] = {"loss": "-", "lr": "-", "sps": "-"}
        self._last_refresh = 0.0
        self._last_plain = 0.0
        self._start = 0.0

    def on_train_start(self, trainer: Any) -> None:
        self._start = time.perf_counter()
        total = trainer.total_steps
        rt = trainer.runtime
        where = f" → {trainer.run_dir}" if trainer.run_dir is not None else ""
        trainable = getattr(trainer, "num_trainable_parameters", trainer.num_parameters)
        params = f"{trainer.num_parameters:,} parameters"
        if trainable != trainer.num_parameters:
            params += f" ({trainable:,} trainable, {trainable / max(trainer.num_parameters, 1):.2%})"
        self.console.print(
            f"[bold]trainengine[/] {trainer.task_spec.task_type} on {rt.device} ({rt.precision}), "
            f"{params}, {total} steps{where}"
        )
        if self.bar:
            self._progress = Progress(
                TextColumn("[bold blue]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]} · lr {task.fields[lr]} · {task.fields[sps]} samples/s"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task("train", total=total, **self._fields)

    def on_step_end(self, trainer: Any, output: Any) -> None:
        # Host-side counters only; redraw at most 10 times a second.
        if self._progress is None:
            return
        now = time.perf_counter()
        if now - self._last_refresh >= 0.1:
            self._last_refresh = now
            self._progress.update(self._task, completed=trainer.state.step)

    def on_log(self, trainer: Any, record: dict[str, Any]) -> None:
        if record.get("type") != "train":
            return
        self._fields = {
            "loss": f"{record['train/loss']:.4f}",
            "lr": f"{record['lr']:.2e}",
            "sps": f"{record['train/samples_per_second']:,.0f}",
        }
        if self._progress is not None:
            self._progress.update(self._task, completed=trainer.state.step, **self._fields)
            return
        now = time.perf_counter()
        if now - self._last_plain >= self.plain_interval_s:
            self._last_plain = now
            step, total = trainer.state.step, trainer.total_steps
            elapsed = now - self._start
            eta = elapsed / step * (total - step) if step else 0.0
            self.console.print(
                f"step {step}/{total} | epoch {record['epoch']} | loss {self._fields['loss']} | "
                f"lr {self._fields['lr']} | "
                f"{self._fields['sps']} samples/s | ETA {format_duration(eta)}",
                highlight=False,
            )

    def on_eval_end(self, trainer: Any, metrics: dict[str, float]) -> None:
        text = " | ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        line = f"eval @ step {trainer.state.step}: {text}"
        if self._progress is not None:
            self._progress.console.print(line, highlight=False)
        else:
            self.console.print(line, highlight=False)

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def on_train_end(self, trainer: Any, results: dict[str, Any]) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=trainer.state.step)
        self._stop()
        table = Table(title="training summary", show_header=False)
        table.add_column("what", style="bold")
        table.add_column("value")
        best = results.get("best_metric")
        table.add_row(
            f"best {results['best_metric_name']}",
            f"{best:.4f} (step {results['best_step']})" if best is not None else "-",
        )
        if results.get("best_val_loss") is not None and results["best_metric_name"] != "val/loss":
            table.add_row("best val/loss", f"{results['best_val_loss']:.4f}")
        table.add_row("steps", f"{results['steps']} ({results['epochs']:g} epochs)")
        table.add_row("wall time", format_duration(results["wall_time_s"]) + f" ({results['wall_time_s']:.1f} s)")
        table.add_row(
            "throughput",
            f"{results['samples_per_second']:,.0f} samples/s"
            + (f", {results['tokens_per_second']:,.0f} tokens/s" if results.get("tokens_per_second") else ""),
        )
        if results.get("mfu") is not None:
            table.add_row("MFU", f"{results['mfu']:.1%}")
        if results.get("nonfinite_steps"):
            table.add_row("skipped non-finite steps", str(results["nonfinite_steps"]))
        if results.get("stop_reason"):
            table.add_row("stopped", results["stop_reason"])
        table.add_row("run directory", str(results.get("run_dir") or "-"))
        self.out.print(table)
        sys.stdout.flush()

    def on_exception(self, trainer: Any, exc: BaseException) -> None:
        self._stop()
