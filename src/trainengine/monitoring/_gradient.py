"""Gradient health checks: exploding, vanishing and non-finite gradients.

:class:`GradientMonitor` measures every parameter's gradient norm with one fused
``torch._foreach_norm`` call per device and brings all the numbers to the host in a single
copy, so a check costs one host-device sync for the whole model. It is meant to run every
``check_interval`` optimizer steps, either by hand (``monitor.check_step(model)``) or as a
trainer callback through :meth:`GradientMonitor.on_before_optimizer_step`.

What counts as "too large" is judged against the run's own recent history by default: a
healthy model's gradient norm may sit at 0.3 or at 30, so an absolute limit either cries wolf
or sleeps through a spike. A check is a spike when its norm is many times the median of the
recent checks *and* far outside their spread (median absolute deviation). Absolute thresholds
are still there for users who know their model's scale.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections import deque
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
_FIX_NO_GRADIENTS = "check that the loss depends on the model's outputs and that parameters have requires_grad=True"


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
        reference_norm: The median total norm of the recent checks this one was judged
            against (relative mode, after the warm-up); None otherwise.

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
    reference_norm: float | None = None

    @property
    def spike_ratio(self) -> float | None:
        """``total_norm / reference_norm`` (how many times the recent median), or None."""
        if self.reference_norm is None or self.reference_norm <= 0 or not math.isfinite(self.total_norm):
            return None
        return self.total_norm / self.reference_norm


def _num(value: float | None) -> str:
    """A norm for people: 3 significant digits (``12.3``, ``0.0042``, ``1.5e+04``)."""
    return "n/a" if value is None else f"{value:.3g}"


def _sort_key(item: tuple[str, float]) -> float:
    # NaN/Inf first: they are what the user needs to see.
    value = item[1]
    return -math.inf if not math.isfinite(value) else -value


class GradientMonitor:
    """Detects exploding, vanishing and non-finite gradients.

    Use it by hand after ``backward()``, or pass it to the trainer as a callback: its
    :meth:`on_before_optimizer_step` runs a check every ``check_interval`` optimizer steps (after
    unscaling, before clipping) and logs problems.

    **Relative thresholds (the default).** Each threshold left at None is judged against the
    last ``spike_window`` finite total norms: with their median ``m`` and median absolute
    deviation ``d``, a check is a ``warning`` when its norm is at least ``spike_warning_factor
    * m`` and more than ``spike_min_deviations * 1.4826 * d`` above ``m``, and ``critical``
    (exploding) likewise with ``spike_critical_factor``. The first ``spike_warmup`` checks only
    build the history (a non-finite gradient is critical from the first check on). A steady
    rise over the window — gradients growing as a model starts to learn — moves the median
    with it and is not a spike.

    Args:
        check_interval: Check every this many optimizer steps (step 0, N, 2N, ...).
        norm_threshold_warning: Total norm above which a check is a ``warning``; None (the
            default) = relative to the recent median (``spike_warning_factor``).
        norm_threshold_critical: Total norm above which a check is ``critical`` (exploding);
            None (the default) = relative (``spike_critical_factor``).
        vanishing_threshold: Total norm below which gradients count as vanishing.
        log_fn: Receives each problem message; default: the ``trainengine.monitoring`` logger
            (WARNING for warnings, ERROR for critical).
        per_layer_top_k: How many parameters :attr:`GradientHealth.per_layer` keeps.
        max_history: How many records :attr:`history` keeps (oldest dropped; ``None`` keeps
            all). :meth:`summary` counts every check regardless.
        spike_window: Relative mode: how many recent finite checks the median is taken over.
        spike_warmup: Relative mode: checks recorded before a relative alert can fire.
        spike_warning_factor: Relative mode: a ``warning`` needs a norm this many times the median.
        spike_critical_factor: Relative mode: ``critical`` needs this many times the median.
        spike_min_deviations: Relative mode: and this many robust standard deviations
            (``1.4826 * MAD``) above the median, so a noisy history needs a larger jump.

    Raises:
        ConfigError: If an argument is out of range.

    Example:
        >>> model = torch.nn.Linear(3, 1)
        >>> model(torch.ones(4, 3)).sum().backward()
        >>> monitor = GradientMonitor(check_interval=10)  # relative: the first checks build the history
        >>> health = monitor.check_step(model, step=0)
        >>> health.severity, health.num_params
        ('ok', 2)
        >>> GradientMonitor(norm_threshold_warning=1.0).check_step(model).severity  # absolute
        'warning'
        >>> monitor.summary()["num_checks"]
        1
    """

    def __init__(
        self,
        check_interval: int = 10,
        norm_threshold_warning: float | None = None,
        norm_threshold_critical: float | None = None,
        vanishing_threshold: float = 1e-7,
        log_fn: Callable[[str], None] | None = None,
        *,
        per_layer_top_k: int = 10,
        max_history: int | None = 1000,
        spike_window: int = 25,
        spike_warmup: int = 8,
        spike_warning_factor: float = 5.0,
        spike_critical_factor: float = 20.0,
        spike_min_deviations: float = 6.0,
    ) -> None:
        problems: list[str] = []
        if not isinstance(check_interval, int) or check_interval < 1:
            problems.append(f"check_interval must be an integer >= 1, got {check_interval!r}")
        warn, crit = norm_threshold_warning, norm_threshold_critical
        for name, value in (("norm_threshold_warning", warn), ("norm_threshold_critical", crit)):
            if value is not None and not value > 0:
                problems.append(f"{name} must be > 0 or None (relative to the recent median), got {value}")
        if warn is not None and crit is not None and crit < warn:
            problems.append(f"norm_threshold_critical ({crit}) must be >= norm_threshold_warning ({warn})")
        if vanishing_threshold < 0 or (warn is not None and vanishing_threshold >= warn):
            problems.append(f"vanishing_threshold must be in [0, norm_threshold_warning), got {vanishing_threshold}")
        if not isinstance(spike_window, int) or spike_window < 3:
            problems.append(f"spike_window must be an integer >= 3, got {spike_window!r}")
        if not isinstance(spike_warmup, int) or spike_warmup < 1:
            problems.append(f"spike_warmup must be an integer >= 1, got {spike_warmup!r}")
        if not spike_warning_factor > 1 or spike_critical_factor < spike_warning_factor:
            problems.append(
                f"spike factors must satisfy 1 < spike_warning_factor <= spike_critical_factor, got "
                f"{spike_warning_factor} and {spike_critical_factor}"
            )
        if spike_min_deviations < 0:
            problems.append(f"spike_min_deviations must be >= 0, got {spike_min_deviations}")
        if per_layer_top_k < 0:
            problems.append(f"per_layer_top_k must be >= 0, got {per_layer_top_k}")
        if max_history is not None and max_history < 1:
            problems.append(f"max_history must be >= 1 or None, got {max_history}")
        if problems:
            raise ConfigError(problems, prefix="invalid GradientMonitor settings")
        self.check_interval = check_interval
        self.norm_threshold_warning = None if warn is None else float(warn)
        self.norm_threshold_critical = None if crit is None else float(crit)
        self.spike_warmup = spike_warmup
        self.spike_warning_factor = float(spike_warning_factor)
        self.spike_critical_factor = float(spike_critical_factor)
        self.spike_min_deviations = float(spike_min_deviations)
        # Recent finite total norms (relative mode): what "normal" means for this run.
        self._recent: deque[float] = deque(maxlen=spike_window)
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
        ranked = sorted(zip(names, norms, strict=True), key=_sort_key)  # largest (non-finite first)
        max_param, max_norm = ranked[0]
        min_param, min_norm = ranked[-1]
        finite = num_nonfinite == 0 and math.isfinite(total)
        reference = self._reference() if finite else None
        exploding = not finite or self._above(
            total, self.norm_threshold_critical, self.spike_critical_factor, reference
        )
        vanishing = not exploding and total < self.vanishing_threshold
        severity: Severity
        if exploding:
            severity = "critical"
        elif self._above(total, self.norm_threshold_warning, self.spike_warning_factor, reference) or vanishing:
            severity = "warning"
        else:
            severity = "ok"
        if finite:
            self._recent.append(total)
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
            reference_norm=None if reference is None else reference[0],
        )
        self._record(health)
        return health

    def _reference(self) -> tuple[float, float] | None:
        """(median, robust deviation) of the recent finite norms; None during the warm-up."""
        if len(self._recent) < self.spike_warmup:
            return None
        median = statistics.median(self._recent)
        mad = statistics.median(abs(v - median) for v in self._recent)
        return median, 1.4826 * mad  # 1.4826 * MAD estimates a normal distribution's std

    def _above(
        self, total: float, absolute: float | None, factor: float, reference: tuple[float, float] | None
    ) -> bool:
        if absolute is not None:
            return total > absolute
        if reference is None:
            return False
        median, deviation = reference
        return total >= factor * median and total > median + self.spike_min_deviations * deviation

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
        step = health.step
        if health.no_gradients:
            return f"No parameter has a gradient at step {step}; {_FIX_NO_GRADIENTS}."
        worst = f"the largest is '{health.max_norm_param}' at {_num(health.max_norm)}"
        if health.num_nonfinite or not math.isfinite(health.total_norm):
            return (
                f"Non-finite gradients at step {step}: {health.num_nonfinite} parameter(s) have NaN/Inf "
                f"gradients ({worst}); {_FIX_EXPLODING} (under fp16 with a GradScaler, an occasional "
                "non-finite step is skipped automatically)."
            )
        if health.has_vanishing_gradients:
            return (
                f"Gradient norm {health.total_norm:.3g} at step {step} is below the vanishing threshold "
                f"{self.vanishing_threshold:g} ({worst}); {_FIX_VANISHING}."
            )
        critical = health.has_exploding_gradients
        limit = self.norm_threshold_critical if critical else self.norm_threshold_warning
        level = "critical" if critical else "warning"
        ratio = health.spike_ratio
        if limit is None and ratio is not None and health.reference_norm is not None:
            what = f"{ratio:.1f}\u00d7 the recent median {_num(health.reference_norm)}"
        else:
            what = f"above the {level} threshold {_num(limit)}"
        return f"Gradient norm {_num(health.total_norm)} is {what} at step {step} ({level}; {worst}); {_FIX_EXPLODING}."

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
        message = self.report(health)
        callbacks = getattr(trainer, "callbacks", None)
        if callbacks is not None and hasattr(callbacks, "fire"):
            # The findings become logged metrics (logs.jsonl, trackers, the experiment DB).
            callbacks.fire(
                "on_log",
                trainer,
                {
                    "type": "gradient",
                    "step": step + 1,
                    "epoch": getattr(trainer.state, "epoch", None),
                    "train/grad_norm": health.total_norm,
                    "train/grad_norm_max": health.max_norm,
                    "train/grad_norm_min": health.min_norm,
                    "train/grad_nonfinite": health.num_nonfinite,
                    "severity": health.severity,
                    **({"message": message} if message else {}),
                },
            )

    def __repr__(self) -> str:
        return (
            f"GradientMonitor(check_interval={self.check_interval}, "
            f"norm_threshold_warning={self.norm_threshold_warning}, "
            f"norm_threshold_critical={self.norm_threshold_critical}, "
            f"vanishing_threshold={self.vanishing_threshold:g})"
        )
