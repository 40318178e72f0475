"""Learning-rate schedules, counted in optimizer steps.

Every schedule is built by :func:`build_scheduler` and driven through one small
:class:`LRScheduleHandle`, so the training loop never branches on the schedule kind:

* ``handle.step()`` after **every optimizer step** (not every micro-batch);
* ``handle.step_eval(metric)`` after **every evaluation** (only ``reduce_on_plateau`` acts on it).

Exact learning rate of each schedule
------------------------------------
Let ``s`` be the 0-based index of an optimizer update (the lr that update ``s`` uses), ``base``
the param group's own initial lr, ``W`` the warmup length, ``T = total_steps``,
``floor = base * min_lr_ratio``.

* **warmup** (``cosine``, ``linear``, ``constant``, ``reduce_on_plateau``), for ``s < W``::

      lr(s) = base * (s + 1) / (W + 1)

  so update 0 already moves the weights (``base / (W + 1)``; the ``s / W`` convention spends
  the first update at lr 0), the lr rises strictly, and update ``W`` is the first at ``base``.
* after warmup, with ``p = min(1, (s - W) / (T - 1 - W))`` (``p = 0`` when ``T - 1 == W``: a
  single post-warmup update runs at the peak)::

      cosine:   lr(s) = floor + (base - floor) * 0.5 * (1 + cos(pi * p))
      linear:   lr(s) = base - (base - floor) * p
      constant: lr(s) = base

  so ``lr(W) == base`` (peak) and ``lr(T - 1) == floor`` exactly; stepping past ``T - 1`` holds
  the floor.
* ``one_cycle``: :class:`torch.optim.lr_scheduler.OneCycleLR` with ``max_lr = base``, cosine
  annealing: rises from ``base / div_factor`` at ``s = 0`` to ``base`` at
  ``s = pct_start * T - 1``, then falls to ``base / (div_factor * final_div_factor)`` at
  ``s = T - 1``; stepping past ``T`` holds the last lr (torch would raise). Momentum (SGD
  ``momentum`` > 0, or beta1 of Adam/AdamW ``betas``) is cycled 0.95 -> 0.85 -> 0.95 inversely
  to the lr, as the one-cycle policy prescribes; an optimizer without momentum is left alone.
* ``cyclic``: :class:`torch.optim.lr_scheduler.CyclicLR` between ``base * cyclic_base_lr_ratio``
  and ``base`` with half-cycle ``cycle_steps``: ``lr(s) = low + (base - low) * max(0, 1 - x) *
  scale``, ``x = |s / cycle_steps - 2 * floor(1 + s / (2 * cycle_steps)) + 1|``; it keeps cycling
  past ``T``. Momentum is never cycled.
* ``reduce_on_plateau``: optional warmup as above, then ``base`` until
  :class:`torch.optim.lr_scheduler.ReduceLROnPlateau` multiplies it by ``plateau_factor`` at the
  ``(plateau_patience + 1)``-th consecutive evaluation without improvement (torch semantics:
  ``patience`` non-improving evaluations are tolerated), never below ``floor``. Evaluations that
  happen during warmup are ignored (their metrics are not yet comparable).

Warmup is not accepted for ``one_cycle`` (use ``one_cycle_pct_start``) or ``cyclic`` (it starts
at its low lr and ramps up by itself).

Example:
    >>> import torch
    >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    >>> sched = build_scheduler(opt, name="cosine", total_steps=5, warmup_steps=1)
    >>> lrs = []
    >>> for _ in range(5):
    ...     lrs.append(sched.get_last_lr()[0])
    ...     opt.step()
    ...     sched.step()
    >>> [round(x, 4) for x in lrs]
    [0.5, 1.0, 0.75, 0.25, 0.0]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    CyclicLR,
    LambdaLR,
    LRScheduler,
    OneCycleLR,
    ReduceLROnPlateau,
)

from trainengine.errors import CheckpointError, ConfigError

__all__ = [
    "SCHEDULER_NAMES",
    "SchedulerName",
    "LRScheduleHandle",
    "build_scheduler",
    "resolve_warmup_steps",
]

SchedulerName = Literal["cosine", "linear", "constant", "one_cycle", "cyclic", "reduce_on_plateau"]

#: Every name :func:`build_scheduler` accepts, in documentation order.
SCHEDULER_NAMES: tuple[str, ...] = (
    "cosine",
    "linear",
    "constant",
    "one_cycle",
    "cyclic",
    "reduce_on_plateau",
)

_WARMUP_FAMILY = ("cosine", "linear", "constant")
_CYCLIC_MODES = ("triangular", "triangular2", "exp_range")


def resolve_warmup_steps(total_steps: int, warmup_steps: int = 0, warmup_ratio: float = 0.0) -> int:
    """Return the warmup length in optimizer steps.

    ``warmup_steps`` wins when given; otherwise ``warmup_ratio * total_steps`` rounded to the
    nearest integer, halves rounded **up** (``0.5 * 5 -> 3``; Python's ``round`` would give 2).

    Args:
        total_steps: Number of optimizer steps of the run.
        warmup_steps: Explicit warmup length (0 = use ``warmup_ratio``).
        warmup_ratio: Warmup as a fraction of ``total_steps``.

    Returns:
        The warmup length (not validated against ``total_steps``; :func:`build_scheduler` does).

    Raises:
        ConfigError: If both are set.

    Example:
        >>> resolve_warmup_steps(1000, warmup_ratio=0.06)
        60
    """
    if warmup_steps > 0 and warmup_ratio > 0:
        raise ConfigError(
            f"warmup_steps={warmup_steps} and warmup_ratio={warmup_ratio} are both set; "
            "set only one of them (the other to 0)",
            prefix="invalid scheduler settings",
        )
    if warmup_steps > 0:
        return int(warmup_steps)
    # + 1e-9 guards against products like 0.15 * 10 = 1.4999999999999998 rounding down.
    return int(math.floor(warmup_ratio * total_steps + 0.5 + 1e-9))


def _warmup_factor(step: int, warmup: int) -> float:
    # (s + 1) / (W + 1): update 0 is already useful, update W is the first at the peak.
    return (step + 1) / (warmup + 1)


def _make_lambda(
    name: str, *, total_steps: int, warmup: int, min_lr_ratio: float
) -> Callable[[int], float]:
    """Multiplier of the base lr at optimizer step ``s`` for the warmup family."""
    decay_span = total_steps - 1 - warmup  # number of steps from the peak to the floor

    def lr_lambda(step: int) -> float:
        if step < warmup:
            return _warmup_factor(step, warmup)
        if name == "constant":
            return 1.0
        progress = 0.0 if decay_span <= 0 else min(1.0, (step - warmup) / decay_span)
        # Endpoints returned as is: min + (1 - min) is not always exactly 1.0 in floating point.
        if progress <= 0.0:
            return 1.0
        if progress >= 1.0:
            return min_lr_ratio
        if name == "cosine":
            return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0 - (1.0 - min_lr_ratio) * progress  # linear

    # A plain function (not a callable object) keeps LambdaLR.state_dict free of closure state,
    # so a resumed run uses the schedule built from its current config.
    return lr_lambda


def _has_momentum(optimizer: Optimizer) -> bool:
    """True when one-cycle may cycle momentum without changing what the optimizer does."""
    groups = optimizer.param_groups
    if "betas" in optimizer.defaults:
        return all("betas" in g for g in groups)
    # SGD always has a 'momentum' default; cycling it when it is 0 would silently turn it on.
    return "momentum" in optimizer.defaults and all(g.get("momentum", 0) > 0 for g in groups)


class LRScheduleHandle:
    """One interface over every schedule; the training loop only talks to this.

    It never reads tensor values, so stepping it forces no host-device sync.

    Attributes:
        name: The schedule name given to :func:`build_scheduler`.
        scheduler: The underlying torch scheduler.
        needs_metric: True when :meth:`step_eval` must be fed a metric (``reduce_on_plateau``).
        warmup_steps: Resolved warmup length in optimizer steps.
        total_steps: Planned number of optimizer steps.
        base_lrs: Each param group's peak lr.

    Example:
        >>> import torch
        >>> opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
        >>> h = build_scheduler(opt, name="reduce_on_plateau", total_steps=100, plateau_patience=0)
        >>> h.step_eval(1.0); h.step_eval(2.0)
        >>> h.get_last_lr()
        [0.0001]
    """

    def __init__(
        self,
        name: str,
        optimizer: Optimizer,
        scheduler: LRScheduler,
        *,
        total_steps: int,
        warmup_steps: int,
        base_lrs: list[float],
    ) -> None:
        self.name = name
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.needs_metric = isinstance(scheduler, ReduceLROnPlateau)
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.base_lrs = list(base_lrs)
        self._num_steps = 0  # optimizer steps taken so far

    @property
    def num_steps(self) -> int:
        """Number of :meth:`step` calls so far (= optimizer steps taken)."""
        return self._num_steps

    def step(self) -> None:
        """Advance by one optimizer step; call right after ``optimizer.step()``."""
        self._num_steps += 1
        if self.needs_metric:
            if self._num_steps <= self.warmup_steps:
                self._set_lrs(
                    [b * _warmup_factor(self._num_steps, self.warmup_steps) for b in self.base_lrs]
                    if self._num_steps < self.warmup_steps
                    else self.base_lrs
                )
            return
        if isinstance(self.scheduler, OneCycleLR) and self._num_steps >= self.scheduler.total_steps:
            # OneCycleLR raises past its end; hold the final lr instead so a run that takes a
            # few extra steps (e.g. a rounded epoch count) keeps training.
            return
        self.scheduler.step()

    def step_eval(self, metric: float) -> None:
        """Report an evaluation result; only ``reduce_on_plateau`` acts on it.

        Args:
            metric: The monitored value (lower is better for ``plateau_mode='min'``).
        """
        if not self.needs_metric or self._num_steps < self.warmup_steps:
            return
        self.scheduler.step(float(metric))

    def get_last_lr(self) -> list[float]:
        """The lr of each param group that the next optimizer step will use."""
        if self.needs_metric:
            return [g["lr"] for g in self.optimizer.param_groups]
        return list(self.scheduler.get_last_lr())

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the schedule exactly (optimizer state excluded)."""
        return {
            "name": self.name,
            "num_steps": self._num_steps,
            "warmup_steps": self.warmup_steps,
            "base_lrs": list(self.base_lrs),
            "lrs": [g["lr"] for g in self.optimizer.param_groups],
            "scheduler": self.scheduler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output, including the current lr of each group.

        Raises:
            CheckpointError: If the state belongs to another schedule or group count.
        """
        if state.get("name") != self.name:
            raise CheckpointError(
                f"scheduler state is for schedule {state.get('name')!r} but this run uses "
                f"{self.name!r}; resume with the same scheduler name or start a new run"
            )
        if len(state["lrs"]) != len(self.optimizer.param_groups):
            raise CheckpointError(
                f"scheduler state has {len(state['lrs'])} param groups but the optimizer has "
                f"{len(self.optimizer.param_groups)}; resume with the same model/optimizer setup"
            )
        self.scheduler.load_state_dict(state["scheduler"])
        self._num_steps = int(state["num_steps"])
        self.warmup_steps = int(state["warmup_steps"])
        self.base_lrs = list(state["base_lrs"])
        # The lr lives in the optimizer; set it too so resume is exact even if only this state
        # was restored.
        self._set_lrs(state["lrs"])

    def scale(self, factor: float) -> None:
        """Multiply every learning rate of the schedule, now and from here on, by ``factor``.

        Used by ``nonfinite_policy: rollback`` to continue with a lower learning rate.
        """
        self.base_lrs = [b * factor for b in self.base_lrs]
        for group in self.optimizer.param_groups:
            group["lr"] *= factor
            for key in ("initial_lr", "max_lr", "min_lr"):
                if key in group:
                    group[key] *= factor
        for attr in ("base_lrs", "max_lrs", "min_lrs"):
            values = getattr(self.scheduler, attr, None)
            if isinstance(values, list):
                setattr(self.scheduler, attr, [v * factor for v in values])
        if hasattr(self.scheduler, "_last_lr"):
            self.scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def _set_lrs(self, lrs: list[float]) -> None:
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr

    def __repr__(self) -> str:
        return (
            f"LRScheduleHandle(name={self.name!r}, total_steps={self.total_steps}, "
            f"warmup_steps={self.warmup_steps}, num_steps={self._num_steps})"
        )


def build_scheduler(
    optimizer: Optimizer,
    *,
    name: SchedulerName,
    total_steps: int,
    warmup_steps: int = 0,
    warmup_ratio: float = 0.0,
    min_lr_ratio: float = 0.0,
    cycle_steps: int = 2000,
    cyclic_base_lr_ratio: float = 0.1,
    cyclic_mode: Literal["triangular", "triangular2", "exp_range"] = "triangular",
    cyclic_gamma: float = 1.0,
    one_cycle_pct_start: float = 0.3,
    one_cycle_div_factor: float = 25.0,
    one_cycle_final_div_factor: float = 1e4,
    plateau_factor: float = 0.1,
    plateau_patience: int = 3,
    plateau_threshold: float = 1e-4,
    plateau_mode: Literal["min", "max"] = "min",
    plateau_cooldown: int = 0,
) -> LRScheduleHandle:
    """Build a learning-rate schedule over ``total_steps`` optimizer steps.

    The exact lr of every schedule is given in this module's docstring. Each param group keeps
    its own base lr (its ``lr`` when the schedule is built), so discriminative lrs survive.

    Args:
        optimizer: The optimizer whose param groups are scheduled.
        name: One of ``cosine``, ``linear``, ``constant``, ``one_cycle``, ``cyclic``,
            ``reduce_on_plateau``.
        total_steps: Planned number of optimizer steps (>= 1).
        warmup_steps: Linear warmup length; exclusive with ``warmup_ratio``.
        warmup_ratio: Warmup as a fraction of ``total_steps`` in [0, 1).
        min_lr_ratio: Floor as a fraction of the base lr (end of cosine/linear, lower bound of
            reduce_on_plateau), in [0, 1].
        cycle_steps: Half-cycle length of ``cyclic`` (steps from low to high lr).
        cyclic_base_lr_ratio: Low lr of ``cyclic`` as a fraction of the base lr, in (0, 1].
        cyclic_mode: Amplitude policy of ``cyclic``.
        cyclic_gamma: Per-step amplitude decay of ``cyclic_mode='exp_range'``, in (0, 1].
        one_cycle_pct_start: Fraction of steps spent rising, in (0, 1).
        one_cycle_div_factor: Start lr = base / div_factor.
        one_cycle_final_div_factor: End lr = start lr / final_div_factor.
        plateau_factor: Multiplier applied on a plateau, in (0, 1).
        plateau_patience: Non-improving evaluations tolerated before a cut.
        plateau_threshold: Relative improvement that counts as better.
        plateau_mode: ``min`` when lower is better (loss), ``max`` otherwise (accuracy).
        plateau_cooldown: Evaluations to wait after a cut before counting again.

    Returns:
        An :class:`LRScheduleHandle`; the optimizer's lrs are already set for step 0.

    Raises:
        ConfigError: Listing every invalid setting at once (unknown name, both warmups set,
            warmup >= total_steps, out-of-range values, warmup with one_cycle/cyclic).

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        >>> h = build_scheduler(opt, name="linear", total_steps=11, warmup_ratio=0.0)
        >>> h.get_last_lr()
        [0.1]
    """
    problems: list[str] = []
    if name not in SCHEDULER_NAMES:
        raise ConfigError(
            f"unknown scheduler {name!r} — available: {', '.join(SCHEDULER_NAMES)}",
            prefix="invalid scheduler settings",
        )
    if not isinstance(total_steps, int) or total_steps < 1:
        problems.append(f"total_steps must be an integer >= 1, got {total_steps!r}")
    if warmup_steps < 0:
        problems.append(f"warmup_steps must be >= 0, got {warmup_steps}")
    if not 0.0 <= warmup_ratio < 1.0:
        problems.append(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")
    if warmup_steps > 0 and warmup_ratio > 0:
        problems.append(
            f"warmup_steps={warmup_steps} and warmup_ratio={warmup_ratio} are both set; "
            "set only one of them (the other to 0)"
        )
    if not 0.0 <= min_lr_ratio <= 1.0:
        problems.append(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    if problems:
        raise ConfigError(problems, prefix="invalid scheduler settings")

    warmup = resolve_warmup_steps(total_steps, warmup_steps, warmup_ratio)
    source = f"warmup_ratio={warmup_ratio}" if warmup_ratio > 0 else f"warmup_steps={warmup_steps}"
    if warmup >= total_steps:
        problems.append(
            f"warmup ({warmup} steps, from {source}) must be shorter than total_steps "
            f"({total_steps}); lower it so some steps run at the peak lr"
        )
    if warmup > 0 and name in ("one_cycle", "cyclic"):
        hint = "one_cycle_pct_start" if name == "one_cycle" else "cyclic_base_lr_ratio/cycle_steps"
        problems.append(
            f"{source} is not used by the {name!r} schedule, which has its own ramp-up; "
            f"set it to 0 and tune {hint} instead"
        )
    if name == "cyclic":
        if cycle_steps < 1:
            problems.append(f"cycle_steps must be >= 1, got {cycle_steps}")
        if not 0.0 < cyclic_base_lr_ratio <= 1.0:
            problems.append(f"cyclic_base_lr_ratio must be in (0, 1], got {cyclic_base_lr_ratio}")
        if cyclic_mode not in _CYCLIC_MODES:
            problems.append(
                f"cyclic_mode must be one of {', '.join(_CYCLIC_MODES)}, got {cyclic_mode!r}"
            )
        if not 0.0 < cyclic_gamma <= 1.0:
            problems.append(f"cyclic_gamma must be in (0, 1], got {cyclic_gamma}")
    if name == "one_cycle":
        if not 0.0 < one_cycle_pct_start < 1.0:
            problems.append(f"one_cycle_pct_start must be in (0, 1), got {one_cycle_pct_start}")
        elif one_cycle_pct_start * total_steps - 1 < 1:
            # OneCycleLR divides by the rising phase's length (pct_start * T - 1 steps).
            problems.append(
                f"one_cycle needs one_cycle_pct_start * total_steps >= 2 so the lr can rise, got "
                f"{one_cycle_pct_start} * {total_steps} = {one_cycle_pct_start * total_steps:g}; "
                "raise total_steps or one_cycle_pct_start"
            )
        if one_cycle_div_factor <= 0 or one_cycle_final_div_factor <= 0:
            problems.append(
                "one_cycle_div_factor and one_cycle_final_div_factor must be > 0, got "
                f"{one_cycle_div_factor} and {one_cycle_final_div_factor}"
            )
    if name == "reduce_on_plateau":
        if not 0.0 < plateau_factor < 1.0:
            problems.append(f"plateau_factor must be in (0, 1), got {plateau_factor}")
        if plateau_patience < 0:
            problems.append(f"plateau_patience must be >= 0, got {plateau_patience}")
        if plateau_cooldown < 0:
            problems.append(f"plateau_cooldown must be >= 0, got {plateau_cooldown}")
        if plateau_threshold < 0:
            problems.append(f"plateau_threshold must be >= 0, got {plateau_threshold}")
        if plateau_mode not in ("min", "max"):
            problems.append(f"plateau_mode must be 'min' or 'max', got {plateau_mode!r}")
    if problems:
        raise ConfigError(problems, prefix="invalid scheduler settings")

    # 'initial_lr' is set by torch schedulers; reuse it so rebuilding on a resumed optimizer
    # keeps the original peak instead of the current (decayed) lr.
    base_lrs = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]

    scheduler: LRScheduler
    if name in _WARMUP_FAMILY:
        scheduler = LambdaLR(
            optimizer,
            _make_lambda(name, total_steps=total_steps, warmup=warmup, min_lr_ratio=min_lr_ratio),
        )
    elif name == "one_cycle":
        scheduler = OneCycleLR(
            optimizer,
            max_lr=base_lrs,
            total_steps=total_steps,
            pct_start=one_cycle_pct_start,
            anneal_strategy="cos",
            cycle_momentum=_has_momentum(optimizer),
            div_factor=one_cycle_div_factor,
            final_div_factor=one_cycle_final_div_factor,
        )
    elif name == "cyclic":
        scheduler = CyclicLR(
            optimizer,
            base_lr=[b * cyclic_base_lr_ratio for b in base_lrs],
            max_lr=base_lrs,
            step_size_up=cycle_steps,
            mode=cyclic_mode,
            gamma=cyclic_gamma,
            cycle_momentum=False,
        )
    else:  # reduce_on_plateau
        for group, base in zip(optimizer.param_groups, base_lrs):
            group.setdefault("initial_lr", base)
            group["lr"] = base * _warmup_factor(0, warmup) if warmup > 0 else base
        scheduler = ReduceLROnPlateau(
            optimizer,
            mode=plateau_mode,
            factor=plateau_factor,
            patience=plateau_patience,
            threshold=plateau_threshold,
            cooldown=plateau_cooldown,
            min_lr=[b * min_lr_ratio for b in base_lrs],
        )
    return LRScheduleHandle(
        name,
        optimizer,
        scheduler,
        total_steps=total_steps,
        warmup_steps=warmup,
        base_lrs=base_lrs,
    )
