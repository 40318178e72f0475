"""Gradient health checks: exploding, vanishing and non-finite gradients.

:class:`GradientMonitor` measures every parameter's gradient norm with one fused
``torch._foreach_norm`` call per device and brings all the numbers to the host in a single
copy, so a check costs one host-device sync for the whole model. It is meant to run every
``check_interval`` optimizer steps, either by hand (``monitor.check_step(model)``) or as a
trainer callback through :meth:`GradientMonitor.on_before_optimizer_step`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from trainengine.errors import ConfigError
from trainengine.probes import collect_grads, grad_norms

__all__ = ["GradientHealth", "GradientMonitor"]

logger = logging.getLogger("trainengine.monitoring")

Severity = Literal["ok", "warning", "critical"]

_FIX_EXPLODING = "lower the learning rate or set training.max_grad_norm"
_FIX_VANISHING = (
    "raise the learning rate, check that the loss is not detached from the model, "
    "or add normalization/residual connections"
)
_FIX_NO_GRADIENTS = (
    "check that the loss depends on the model's outputs and that parameters have requires_grad=True"
)


@dataclass(frozen=True)
class GradientHealth:
    """The gradient statistics of one check.

    Norms are L2 norms computed in float32. ``per_layer`` maps parameter names to gradient
    norms for the ``top_k`` largest (non-finite ones first).

    Attributes:
        step: Optimizer step the check belongs to.
        total_norm: L2 norm over all gradients (what ``clip_grad_norm_`` would report).
        max_norm: Largest per-parameter gradient norm.
        min_norm: Smallest per-parameter gradient norm.
        max_norm_param: Name of the parameter with ``max_norm``.
        min_norm_param: Name of the parameter with ``min_norm``.
        num_nonfinite: Parameters whose gradient norm is NaN/Inf (NaN/Inf entries, or a norm
            that overflows float32).
        has_vanishing_gradients: ``total_norm`` is below the vanishing threshold.
        has_exploding_gradients: ``total_norm`` is above the critical threshold, or some
            gradient is non-finite.
        severity: ``critical`` when exploding; ``warning`` above the warning threshold, when
            vanishing, or when no parameter has a gradient; ``ok`` otherwise.
        per_layer: Parameter name -> gradient norm, largest first.
        num_params: Parameters that had a gradient.
        no_gradients: True when no parameter had a gradient (all norms are then 0).

    Example:
        >>> health = GradientMonitor().check_step(torch.nn.Linear(2, 1))
        >>> health.no_gradients, health.severity
        (True, 'warning')
    """

    step: int
    total_norm: float
    max_norm: float
    min_norm: float
    max_norm_param: str
    min_norm_param: str
    num_nonfinite: int
    has_vanishing_gradients: bool
    has_exploding_gradients: bool
    severity: Severity
    per_layer: dict[str, float] = field(default_factory=dict)
    num_params: int = 0
    no_gradients: bool = False


def _sort_key(item: tuple[str, float]) -> float:
    # NaN/Inf first: they are what the user needs to see.
    value = item[1]
    return -math.inf if not math.isfinite(value) else -value


class GradientMonitor:
    """Detects exploding, vanishing and non-finite gradients.

    Use it by hand after ``backward()``, or pass it to the trainer as a callback: its
    :meth:`on_before_optimizer_step` runs a check every ``check_interval`` optimizer steps (after
    unscaling, before clipping) and logs problems.

    Args:
        check_interval: Check every this many optimizer steps (step 0, N, 2N, ...).
        norm_threshold_warning: Total norm above which a check is a ``warning``.
        norm_threshold_critical: Total norm above which a check is ``critical`` (exploding).
        vanishing_threshold: Total norm below which gradients count as vanishing.
        log_fn: Receives each problem message; default: the ``trainengine.monitoring`` logger
            (WARNING for warnings, ERROR for critical).
        per_layer_top_k: How many parameters :attr:`GradientHealth.per_layer` keeps.
        max_history: How many records :attr:`history` keeps (oldest dropped; ``None`` keeps
            all). :meth:`summary` counts every check regardless.

    Raises:
        ConfigError: If an argument is out of range.

    Example:
        >>> model = torch.nn.Linear(3, 1)
        >>> model(torch.ones(4, 3)).sum().backward()
        >>> monitor = GradientMonitor(check_interval=10)
        >>> health = monitor.check_step(model, step=0)
        >>> health.severity, health.num_params
        ('warning', 2)
        >>> monitor.summary()["num_checks"]
        1
    """

    def __init__(
        self,
        check_interval: int = 10,
        norm_threshold_warning: float = 1.0,
        norm_threshold_critical: float = 10.0,
        vanishing_threshold: float = 1e-7,
        log_fn: Callable[[str], None] | None = None,
        *,
        per_layer_top_k: int = 10,
        max_history: int | None = 1000,
    ) -> None:
        problems: list[str] = []
        if not isinstance(check_interval, int) or check_interval < 1:
            problems.append(f"check_interval must be an integer >= 1, got {check_interval!r}")
        if norm_threshold_warning <= 0:
            problems.append(f"norm_threshold_warning must be > 0, got {norm_threshold_warning}")
        if norm_threshold_critical < norm_threshold_warning:
            problems.append(
                f"norm_threshold_critical ({norm_threshold_critical}) must be >= "
                f"norm_threshold_warning ({norm_threshold_warning})"
            )
        if vanishing_threshold < 0 or vanishing_threshold >= norm_threshold_warning:
            problems.append(
                f"vanishing_threshold must be in [0, norm_threshold_warning), got "
                f"{vanishing_threshold}"
            )
        if per_layer_top_k < 0:
            problems.append(f"per_layer_top_k must be >= 0, got {per_layer_top_k}")
        if max_history is not None and max_history < 1:
            problems.append(f"max_history must be >= 1 or None, got {max_history}")
        if problems:
            raise ConfigError(problems, prefix="invalid GradientMonitor settings")
        self.check_interval = check_interval
        self.norm_threshold_warning = float(norm_threshold_warning)
        self.norm_threshold_critical = float(norm_threshold_critical)
        self.vanishing_threshold = float(vanishing_threshold)
        self.log_fn = log_fn
        self.per_layer_top_k = per_layer_top_k
        self.max_history = max_history
        self.history: list[GradientHealth] = []
        self.last_health: GradientHealth | None = None
        self._num_calls = 0
        self._counts = {"checks": 0, "warnings": 0, "critical": 0, "vanishing": 0, "nonfinite": 0}
        self._max_total_norm = 0.0

    # ------------------------------------------------------------------ checks
    def should_check(self, step: int) -> bool:
        """True on the steps a check runs: ``step % check_interval == 0``."""
        return step % self.check_interval == 0

    def check_step(self, model: nn.Module, step: int | None = None) -> GradientHealth:
        """Measure the current gradients of ``model`` and record the result.

        Call it after ``backward()`` (and after ``GradScaler.unscale_`` under fp16), before
        ``optimizer.zero_grad()``. Costs one host-device sync for the whole model.

        Args:
            model: The module whose ``.grad`` tensors are inspected; parameters without a
                gradient are skipped.
            step: Step to record; default: the number of earlier ``check_step`` calls.

        Returns:
            The :class:`GradientHealth` of this check (also appended to :attr:`history`).
        """
        if step is None:
            step = self._num_calls
        self._num_calls += 1
        names, grads = collect_grads(model.named_parameters())
        if not grads:
            health = GradientHealth(
                step=step,
                total_norm=0.0,
                max_norm=0.0,
                min_norm=0.0,
                max_norm_param="",
                min_norm_param="",
                num_nonfinite=0,
                has_vanishing_gradients=False,
                has_exploding_gradients=False,
                severity="warning",
                per_layer={},
                num_params=0,
                no_gradients=True,
            )
            self._record(health)
            return health

        with torch.no_grad():
            packed = grad_norms(grads)
        # The only host sync of a check: one copy of P + 1 floats.
        values = packed.cpu().tolist()
        norms, total = values[:-1], values[-1]

        num_nonfinite = sum(1 for v in norms if not math.isfinite(v))
        ranked = sorted(zip(names, norms), key=_sort_key)  # largest (non-finite first)
        max_param, max_norm = ranked[0]
        min_param, min_norm = ranked[-1]
        exploding = (
            num_nonfinite > 0
            or not math.isfinite(total)
            or total > self.norm_threshold_critical
        )
        vanishing = not exploding and total < self.vanishing_threshold
        severity: Severity
        if exploding:
            severity = "critical"
        elif total > self.norm_threshold_warning or vanishing:
            severity = "warning"
        else:
            severity = "ok"
        health = GradientHealth(
            step=step,
            total_norm=total,
            max_norm=max_norm,
            min_norm=min_norm,
            max_norm_param=max_param,
            min_norm_param=min_param,
            num_nonfinite=num_nonfinite,
            has_vanishing_gradients=vanishing,
            has_exploding_gradients=exploding,
            severity=severity,
            per_layer=dict(ranked[: self.per_layer_top_k]),
            num_params=len(grads),
        )
        self._record(health)
        return health

    def _record(self, health: GradientHealth) -> None:
        self.last_health = health
        self.history.append(health)
        if self.max_history is not None and len(self.history) > self.max_history:
            del self.history[: len(self.history) - self.max_history]
        self._counts["checks"] += 1
        self._counts["warnings"] += health.severity == "warning"
        self._counts["critical"] += health.severity == "critical"
        self._counts["vanishing"] += health.has_vanishing_gradients
        self._counts["nonfinite"] += health.num_nonfinite > 0
        if math.isfinite(health.total_norm):
            self._max_total_norm = max(self._max_total_norm, health.total_norm)

    def summary(self) -> dict[str, Any]:
        """Counts over every check so far (not only the kept :attr:`history`).

        Returns:
            ``num_checks``, ``num_warnings``, ``num_critical``, ``num_vanishing``,
            ``num_nonfinite`` (checks with a NaN/Inf gradient), ``max_total_norm`` (largest
            finite total norm seen; 0.0 before any finite check) and ``last_severity``.
        """
        return {
            "num_checks": self._counts["checks"],
            "num_warnings": self._counts["warnings"],
            "num_critical": self._counts["critical"],
            "num_vanishing": self._counts["vanishing"],
            "num_nonfinite": self._counts["nonfinite"],
            "max_total_norm": self._max_total_norm,
            "last_severity": self.last_health.severity if self.last_health else None,
        }

    # ------------------------------------------------------------------ reporting
    def describe(self, health: GradientHealth) -> str | None:
        """A one-line problem report for ``health``, or ``None`` when it is ``ok``."""
        if health.severity == "ok":
            return None
        head = f"gradient check at step {health.step}: "
        if health.no_gradients:
            return head + f"no parameter has a gradient; {_FIX_NO_GRADIENTS}"
        worst = f"largest: '{health.max_norm_param}' with norm {health.max_norm:.4g}"
        if health.num_nonfinite:
            return (
                head + f"{health.num_nonfinite} parameter(s) have non-finite gradients "
                f"(total norm {health.total_norm:.4g}; {worst}); {_FIX_EXPLODING} "
                "(under fp16 with a GradScaler, an occasional non-finite step is skipped "
                "automatically)"
            )
        if health.has_exploding_gradients:
            return (
                head + f"total gradient norm {health.total_norm:.4g} exceeds the critical "
                f"threshold {self.norm_threshold_critical:g} ({worst}); {_FIX_EXPLODING}"
            )
        if health.has_vanishing_gradients:
            return (
                head + f"total gradient norm {health.total_norm:.3g} is below the vanishing "
                f"threshold {self.vanishing_threshold:g} ({worst}); {_FIX_VANISHING}"
            )
        return (
            head + f"total gradient norm {health.total_norm:.4g} exceeds the warning "
            f"threshold {self.norm_threshold_warning:g} ({worst}); {_FIX_EXPLODING}"
        )

    def report(self, health: GradientHealth) -> str | None:
        """Send :meth:`describe`'s message to ``log_fn`` or the logger; return it."""
        message = self.describe(health)
        if message is None:
            return None
        if self.log_fn is not None:
            self.log_fn(message)
        elif health.severity == "critical":
            logger.error(message)
        else:
            logger.warning(message)
        return message

    # ------------------------------------------------------------------ callback
    def on_before_optimizer_step(self, trainer: Any, step: int | None = None) -> None:
        """Trainer event: gradients are final (after backward and unscale, before clipping).

        Checks ``trainer.model`` when :meth:`should_check` says so and reports problems.

        Args:
            trainer: Any object with ``.model`` (and ``.state.step`` when ``step`` is omitted).
            step: The optimizer step about to be taken (0-based).
        """
        if step is None:
            step = trainer.state.step
        if not self.should_check(step):
            return
        health = self.check_step(trainer.model, step=step)
        self.report(health)
        callbacks = getattr(trainer, "callbacks", None)
        if callbacks is not None and hasattr(callbacks, "fire"):
            # The findings become logged metrics (logs.jsonl, trackers, the experiment DB).
            callbacks.fire("on_log", trainer, {
                "type": "gradient", "step": step + 1, "epoch": getattr(trainer.state, "epoch", None),
                "train/grad_norm": health.total_norm, "train/grad_norm_max": health.max_norm,
                "train/grad_norm_min": health.min_norm, "train/grad_nonfinite": health.num_nonfinite,
                "severity": health.severity,
            })

    def __repr__(self) -> str:
        return (
            f"GradientMonitor(check_interval={self.check_interval}, "
            f"norm_threshold_warning={self.norm_threshold_warning:g}, "
            f"norm_threshold_critical={self.norm_threshold_critical:g}, "
            f"vanishing_threshold={self.vanishing_threshold:g})"
        )
