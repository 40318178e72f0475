"""The learning-rate range test: train a fresh copy with an exponentially growing learning rate.

Leslie Smith's range test (as in fastai's ``lr_find``): starting at ``min_lr`` the learning rate
is multiplied by the same factor after every optimizer step until ``max_lr``; the loss of every
step is recorded and smoothed (an exponential moving average with bias correction) and the test
stops once the smoothed loss exceeds ``diverge_factor`` times its best value. The run is the
engine's own loop (:class:`~trainengine.engine.Trainer`: the config's optimizer, precision,
accumulation, clipping and data order), with a callback that sets the learning rate before each
step and stops the loop through the Trainer's own stop decision.

The suggestion is the learning rate where the smoothed loss falls fastest per decade of
learning rate (the steepest negative slope against ``log10(lr)``, looked for between the start
and the minimum of the smoothed loss); with fewer than 3 points before the minimum it falls back
to the learning rate of the minimum loss divided by 10.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import nn

from trainengine._io import atomic_write_json, atomic_write_text
from trainengine.config import TrainingConfig, TrainingSection, deep_merge
from trainengine.engine import Callback, Trainer, build_from_config, capture_rng_state, restore_rng_state
from trainengine.errors import ConfigError

if TYPE_CHECKING:
    from trainengine.engine._step import StepOutput
    from trainengine.tasks import TaskSpec

__all__ = ["LRFindResult", "lr_find", "suggest_lr", "smooth_losses"]

# Where a device loss is read back at most this often (the CPU's float losses are read every step).
_DEVICE_READ_INTERVAL = 10


def smooth_losses(losses: list[float], beta: float) -> list[float]:
    """Exponential moving average with bias correction: ``avg_i / (1 - beta^(i+1))``.

    Without the correction the first values would be pulled towards 0; with it the first
    smoothed value is the first loss.

    Example:
        >>> smooth_losses([2.0, 2.0, 2.0], 0.9)
        [2.0, 2.0, 2.0]
        >>> [round(v, 3) for v in smooth_losses([1.0, 3.0], 0.5)]
        [1.0, 2.333]
    """
    out: list[float] = []
    avg = 0.0
    for i, loss in enumerate(losses):
        avg = beta * avg + (1.0 - beta) * loss
        out.append(avg / (1.0 - beta ** (i + 1)))
    return out


def _lr_upper_bound() -> float:
    """``training.learning_rate``'s own upper bound (the field's constraint), so the override validates."""
    for meta in TrainingSection.model_fields["learning_rate"].metadata:
        bound = getattr(meta, "le", None)
        if bound is not None:
            return float(bound)
    return math.inf


def suggest_lr(
    lrs: list[float], smoothed: list[float]
) -> tuple[float, Literal["steepest", "min_loss/10"], float | None, float]:
    """The suggested learning rate from a range test's curve.

    Args:
        lrs: the learning rate of every step (growing).
        smoothed: the smoothed loss of every step.

    Returns:
        ``(suggested lr, method, steepest lr or None, lr of the minimum loss)``: ``steepest`` =
        the most negative slope of the smoothed loss against ``log10(lr)`` at a point strictly
        between the start and the minimum; ``min_loss/10`` when there is no such point.

    Raises:
        ConfigError: no finite loss at all (the range test diverged at once: lower ``min_lr``).

    Example:
        >>> lrs = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
        >>> suggest_lr(lrs, [2.0, 1.95, 1.2, 0.9, 5.0])[:2]
        (0.01, 'steepest')
    """
    values = np.asarray(smoothed, dtype=float)
    finite = np.isfinite(values)
    if not finite.any():
        raise ConfigError(
            f"the learning-rate range test produced no finite loss (already at lr {lrs[0]:g}) — lower --min-lr"
        )
    i_min = int(np.nanargmin(np.where(finite, values, np.nan)))
    min_loss_lr = float(lrs[i_min])
    if i_min < 2:
        return min_loss_lr / 10.0, "min_loss/10", None, min_loss_lr
    # Slope per decade: the loss against log10(lr) by central differences, so only the points between
    # the first and the minimum are candidates (the minimum itself sits at the edge of divergence).
    slopes = np.gradient(values[: i_min + 1], np.log10(np.asarray(lrs[: i_min + 1], dtype=float)))
    steepest = float(lrs[1 + int(np.argmin(slopes[1:i_min]))])
    return steepest, "steepest", steepest, min_loss_lr


@dataclass
class LRFindResult:
    """What a learning-rate range test found.

    Attributes:
        lrs: the learning rate of every recorded step.
        losses: the training loss of every step (at that step's learning rate).
        smoothed_losses: ``losses`` smoothed (bias-corrected exponential moving average).
        suggested_lr: the suggestion, rounded to 3 significant digits and kept within
            ``training.learning_rate``'s bounds.
        method: how it was chosen: ``steepest`` (steepest descent of the smoothed loss) or
            ``min_loss/10``.
        steepest_lr: the steepest-descent learning rate (None with too few points).
        min_loss_lr: the learning rate of the minimum smoothed loss.
        diverged: the smoothed loss exceeded ``diverge_factor`` x its best (or became non-finite)
            and the test stopped early.
        files: written files (``plot``, ``override``, ``curve``) when an output folder was given.
    """

    lrs: list[float]
    losses: list[float]
    smoothed_losses: list[float]
    suggested_lr: float
    method: Literal["steepest", "min_loss/10"]
    steepest_lr: float | None
    min_loss_lr: float
    diverged: bool
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def num_steps(self) -> int:
        """Optimizer steps the test ran (recorded points)."""
        return len(self.lrs)

    @property
    def set_line(self) -> str:
        """The override for ``trainengine train``: ``--set training.learning_rate=X``."""
        return f"--set training.learning_rate={self.suggested_lr:g}"

    def override(self) -> dict[str, Any]:
        """The config layer ``{"training": {"learning_rate": X}}`` (merge it over a config)."""
        return {"training": {"learning_rate": self.suggested_lr}}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (what ``lr_find.json`` holds)."""
        return {
            "suggested_lr": self.suggested_lr,
            "method": self.method,
            "steepest_lr": self.steepest_lr,
            "min_loss_lr": self.min_loss_lr,
            "diverged": self.diverged,
            "num_steps": self.num_steps,
            "lrs": self.lrs,
            "losses": [v if math.isfinite(v) else None for v in self.losses],
            "smoothed_losses": [v if math.isfinite(v) else None for v in self.smoothed_losses],
        }

    def save(self, output_dir: str | Path) -> dict[str, Path]:
        """Write ``lr_find.png`` (loss against lr), ``lr_find.yaml`` (the override) and ``lr_find.json``.

        Returns:
            The paths by kind (``plot``, ``override``, ``curve``); also kept in :attr:`files`.
        """
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        header = (
            f"# trainengine lr-find: suggested learning rate ({self.method}; "
            f"minimum loss at lr {self.min_loss_lr:.3g})\n"
            f"# use: trainengine train --config CONFIG {self.set_line}\n"
        )
        import yaml

        self.files = {
            "plot": self.plot(out / "lr_find.png"),
            "override": atomic_write_text(out / "lr_find.yaml", header + yaml.safe_dump(self.override())),
            "curve": atomic_write_json(out / "lr_find.json", self.to_dict()),
        }
        return self.files

    def plot(self, path: str | Path) -> Path:
        """Write the loss-vs-learning-rate PNG (log x axis; raw and smoothed loss, the suggestion marked)."""
        import matplotlib

        matplotlib.use("Agg")  # files only: no display on servers and CI
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(self.lrs, self.losses, color="lightgrey", label="loss")
        ax.plot(self.lrs, self.smoothed_losses, color="tab:blue", label="smoothed loss")
        ax.axvline(self.suggested_lr, color="tab:red", linestyle="--", label=f"suggested {self.suggested_lr:.3g}")
        ax.set_xscale("log")
        finite = [v for v in self.smoothed_losses if math.isfinite(v)]
        if finite:
            # The diverged tail would flatten the interesting part: cap the y axis near the start loss.
            ax.set_ylim(min(finite) * 0.95 if min(finite) > 0 else min(finite), max(finite[0], min(finite)) * 1.5)
        ax.set_xlabel("learning rate")
        ax.set_ylabel("training loss")
        ax.set_title("learning-rate range test")
        ax.legend(loc="upper left")
        fig.tight_layout()
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=100)
        plt.close(fig)
        return out


class _RangeTest(Callback):
    """Sets the learning rate before every optimizer step and stops the loop when the loss diverges.

    The learning rate is written into every parameter group right before the optimizer steps,
    so whatever the config's schedule did after the previous step does not matter.
    """

    def __init__(self, min_lr: float, max_lr: float, num_steps: int, beta: float, diverge_factor: float) -> None:
        self.min_lr = min_lr
        # lr(s) = min_lr * factor**s reaches max_lr at the last step.
        self.factor = (max_lr / min_lr) ** (1.0 / max(num_steps - 1, 1))
        self.beta = beta
        self.diverge_factor = diverge_factor
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        self.diverged = False
        self._pending: list[torch.Tensor | float] = []
        self._avg = 0.0
        self._best = math.inf

    def on_before_optimizer_step(self, trainer: Any, step: int) -> None:
        lr = self.min_lr * self.factor**step
        for group in trainer.optimizer.param_groups:
            group["lr"] = lr
        self.lrs.append(lr)

    def on_step_end(self, trainer: Any, output: StepOutput) -> None:
        if self.diverged:
            return
        self._pending.append(output.loss)
        # A CPU loss is already a float; a device loss is read back every few steps only.
        if isinstance(output.loss, float) or len(self._pending) >= _DEVICE_READ_INTERVAL:
            self._drain(trainer)

    def on_train_end(self, trainer: Any, results: dict[str, Any]) -> None:
        self._drain(trainer)

    def _drain(self, trainer: Any) -> None:
        if not self._pending or self.diverged:
            self._pending.clear()
            return
        values = torch.stack([torch.as_tensor(v, dtype=torch.float32) for v in self._pending]).cpu().tolist()
        self._pending.clear()
        for loss in values:
            i = len(self.losses)
            self.losses.append(loss)
            self._avg = self.beta * self._avg + (1.0 - self.beta) * loss
            smoothed = self._avg / (1.0 - self.beta ** (i + 1))
            self.smoothed.append(smoothed)
            if not math.isfinite(smoothed) or smoothed > self.diverge_factor * self._best:
                self.diverged = True
                trainer.request_stop("lr_find: the loss diverged")
                break
            self._best = min(self._best, smoothed)
        del self.lrs[len(self.losses) :]  # steps taken after the divergence (device read interval)


def _check_range(min_lr: float, max_lr: float, num_steps: int, beta: float, diverge_factor: float) -> None:
    problems = []
    if not min_lr > 0:
        problems.append(f"min_lr must be > 0, got {min_lr:g}")
    if not max_lr > min_lr:
        problems.append(f"max_lr ({max_lr:g}) must be above min_lr ({min_lr:g})")
    if num_steps < 2:
        problems.append(f"num_steps must be >= 2, got {num_steps}")
    if not 0.0 <= beta < 1.0:
        problems.append(f"smoothing must be in [0, 1), got {beta:g}")
    if not diverge_factor > 1.0:
        problems.append(f"diverge_factor must be > 1, got {diverge_factor:g}")
    if problems:
        raise ConfigError(problems, prefix="invalid learning-rate range test")


def _range_test_config(config: TrainingConfig, num_steps: int) -> TrainingConfig:
    """The config of the test run: the same optimizer, data, precision and clipping; no evaluation,
    checkpoints, early stopping or schedule (the test sets the learning rate itself)."""
    layer = {
        "training": {
            "max_steps": num_steps,
            "eval_interval_steps": None,
            "eval_every_epoch": False,
            "eval_at_start": False,
            "early_stopping_patience": None,
            "log_interval_steps": num_steps,
            # A diverging loss is the expected end of the test, not a failure.
            "nonfinite_policy": "skip",
            "max_nonfinite_fraction": None,
        },
        "scheduler": {"name": "constant", "warmup_steps": 0, "warmup_ratio": 0.0},
        "checkpointing": {"enabled": False, "save_on_interrupt": False},
    }
    return TrainingConfig.from_dict(deep_merge(config.to_dict(), layer))


def lr_find(
    config: TrainingConfig,
    *,
    model: nn.Module | None = None,
    task_spec: TaskSpec | None = None,
    train_data: Any = None,
    min_lr: float = 1e-7,
    max_lr: float = 10.0,
    num_steps: int = 100,
    smoothing: float = 0.9,
    diverge_factor: float = 4.0,
    output_dir: str | Path | None = None,
) -> LRFindResult:
    """Run an exponential learning-rate range test and suggest a learning rate.

    A fresh model is built from ``config`` (weights seeded by ``training.seed``, as ``trainengine
    train`` does), or a deep copy of ``model`` is trained: the model you pass is never changed.
    The optimizer is built from ``config.optimizer`` inside the test. The global RNG states
    (python, numpy, torch, CUDA) are the same after the call as before it.

    Args:
        config: the run's config (optimizer, data, batch size, precision, clipping).
        model: a model to test a copy of; None = build ``config.model`` for ``config.data``.
        task_spec: the task (required with ``model``; else built from the config).
        train_data: training data (with ``model``); None = the data ``config.data`` names.
        min_lr: the first step's learning rate.
        max_lr: the last step's learning rate (reached only when the loss has not diverged).
        num_steps: optimizer steps at most.
        smoothing: the moving average's ``beta`` (0 = no smoothing).
        diverge_factor: stop once the smoothed loss exceeds this times its best value.
        output_dir: where to write ``lr_find.png``, ``lr_find.yaml`` and ``lr_find.json``; None = no files.

    Returns:
        An :class:`LRFindResult` (``suggested_lr``, the curve, ``set_line``).

    Raises:
        ConfigError: a bad range, ``model`` without ``task_spec``, or no finite loss at all.

    Example:
        >>> from trainengine import TrainingConfigBuilder
        >>> cfg = TrainingConfigBuilder.quick_prototype().with_data(dataset="digits", max_train_samples=256).build()
        >>> result = lr_find(cfg, num_steps=30, min_lr=1e-5, max_lr=1.0)
        >>> 1e-5 <= result.suggested_lr <= 1.0
        True
    """
    _check_range(min_lr, max_lr, num_steps, smoothing, diverge_factor)
    if model is not None and task_spec is None:
        raise ConfigError("lr_find(model=...) needs task_spec= too (TaskSpec.classification(...), ...)")
    test_config = _range_test_config(config, num_steps)
    rng = capture_rng_state()
    try:
        if model is None:
            torch.manual_seed(config.training.seed)  # the same fresh start as `trainengine train`
            built = build_from_config(test_config)
            model, model_config, task_spec = built.model, built.model_config, built.task_spec
            train_data = built.splits.train
        else:
            model, model_config = copy.deepcopy(model), None
        assert task_spec is not None  # narrowing only: a model without task_spec was refused above
        probe = _RangeTest(min_lr, max_lr, num_steps, smoothing, diverge_factor)
        # Validation is not needed: the test reads the training loss of every step.
        Trainer(model, model_config, test_config, task_spec, callbacks=[probe]).train(train_data, None)
    finally:
        restore_rng_state(rng)
    suggested, method, steepest, min_loss_lr = suggest_lr(probe.lrs, probe.smoothed)
    suggested = min(float(f"{suggested:.3g}"), _lr_upper_bound())
    result = LRFindResult(
        lrs=probe.lrs,
        losses=probe.losses,
        smoothed_losses=probe.smoothed,
        suggested_lr=suggested,
        method=method,
        steepest_lr=steepest,
        min_loss_lr=min_loss_lr,
        diverged=probe.diverged,
    )
    if output_dir is not None:
        result.save(output_dir)
    return result
