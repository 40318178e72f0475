"""Learning-rate schedules, counted in optimizer steps.

Every schedule is built by :func:`build_scheduler` and driven through one small
:class:`LRScheduleHandle`, so the training loop never branches on the schedule kind:

* ``handle.step()`` after **every optimizer step** (not every micro-batch);
* ``handle.step_eval(metric)`` after **every evaluation** (only ``reduce_on_plateau`` acts on it).

Schedules come from a name -> builder table, :data:`trainengine.registries.SCHEDULES`: the
built-ins below are its entries, and a schedule added with
:func:`~trainengine.registries.register_schedule` is selectable as ``scheduler.name`` in YAML
(see :class:`ScheduleBuilder` and docs/extending.md).

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

      cosine: lr(s) = floor + (base - floor) * 0.5 * (1 + cos(pi * p))
      linear: lr(s) = base - (base - floor) * p
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

Why one module of this length: six built-in schedules, their builder table and the one
LRScheduleHandle the loop drives; each schedule is ~40 lines and they share the warmup arithmetic,
so they stay together.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any, Literal, Protocol, cast

from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    CyclicLR,
    LambdaLR,
    LRScheduler,
    OneCycleLR,
    ReduceLROnPlateau,
)

from trainengine.errors import CheckpointError, ConfigError
from trainengine.registries import SCHEDULES

__all__ = [
    "SCHEDULER_NAMES",
    "SchedulerName",
    "ScheduleBuilder",
    "LRScheduleHandle",
    "build_scheduler",
    "resolve_warmup_steps",
    "cosine_schedule",
    "linear_schedule",
    "constant_schedule",
    "one_cycle_schedule",
    "cyclic_schedule",
    "reduce_on_plateau_schedule",
]

SchedulerName = Literal["cosine", "linear", "constant", "one_cycle", "cyclic", "reduce_on_plateau"]

#: The built-in schedules, in documentation order (every registered name is in
#: :data:`trainengine.registries.SCHEDULES`).
SCHEDULER_NAMES: tuple[str, ...] = (
    "cosine",
    "linear",
    "constant",
    "one_cycle",
    "cyclic",
    "reduce_on_plateau",
)

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
    return math.floor(warmup_ratio * total_steps + 0.5 + 1e-9)


def _warmup_factor(step: int, warmup: int) -> float:
    # (s + 1) / (W + 1): update 0 is already useful, update W is the first at the peak.
    return (step + 1) / (warmup + 1)


def _make_lambda(name: str, *, total_steps: int, warmup: int, min_lr_ratio: float) -> Callable[[int], float]:
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
        >>> h.step_eval(1.0)
        >>> h.step_eval(2.0)
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
        cast(ReduceLROnPlateau, self.scheduler).step(float(metric))  # needs_metric: it is one

    def get_last_lr(self) -> list[float]:
        """The lr of each param group that the next optimizer step will use."""
        # The param groups hold the lr torch's schedulers last set (they write both there and to
        # their private _last_lr), and also what scale() and load_state_dict() set.
        return [g["lr"] for g in self.optimizer.param_groups]

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
        # No write to torch's private ``scheduler._last_lr``: get_last_lr() reads the param
        # groups, which hold the scaled lr now, and the next scheduler.step() recomputes it.

    def _set_lrs(self, lrs: list[float]) -> None:
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr

    def __repr__(self) -> str:
        return (
            f"LRScheduleHandle(name={self.name!r}, total_steps={self.total_steps}, "
            f"warmup_steps={self.warmup_steps}, num_steps={self._num_steps})"
        )


class ScheduleBuilder(Protocol):
    """Builds one schedule: the value of a :data:`trainengine.registries.SCHEDULES` entry.

    Called with the optimizer, the scheduler section (a
    :class:`~trainengine.config.SchedulerSection`: read your settings from it), the planned
    number of optimizer steps, the resolved warmup length, each param group's peak lr and the
    monitored metric's mode; returns a torch ``LRScheduler`` (a ``ReduceLROnPlateau`` is fed
    every evaluation's metric). Raise :class:`~trainengine.errors.ConfigError` listing every
    invalid setting. The returned scheduler is stepped once per optimizer step.
    """

    def __call__(
        self,
        optimizer: Optimizer,
        section: Any,
        *,
        total_steps: int,
        warmup_steps: int,
        base_lrs: list[float],
        monitor_mode: Literal["min", "max"],
    ) -> LRScheduler: ...


def _settings(section: Any, fields: dict[str, Any]) -> Any:
    """The scheduler section to build from: ``section`` as given, or the keyword form's fields
    over :class:`SchedulerSection`'s defaults (not validated here: the builders check them)."""
    from trainengine.config import SchedulerSection

    if section is not None and fields:
        raise ConfigError(
            f"pass the scheduler section or keyword settings, not both (got section and {', '.join(sorted(fields))})",
            prefix="invalid scheduler settings",
        )
    if section is not None:
        if isinstance(section, Mapping):
            fields = dict(section)
        else:
            return section
    known = SchedulerSection.model_fields
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise ConfigError(
            [f"unknown scheduler setting {k!r} — valid: {', '.join(known)}" for k in unknown],
            prefix="invalid scheduler settings",
        )
    values = {k: info.get_default(call_default_factory=True) for k, info in known.items()}
    values.update(fields)
    return SimpleNamespace(**values)


def build_scheduler(
    optimizer: Optimizer,
    section: Any = None,
    total_steps: int | None = None,
    *,
    monitor_mode: Literal["min", "max"] = "min",
    plateau_mode: Literal["min", "max"] | None = None,
    **fields: Any,
) -> LRScheduleHandle:
    """Build the learning-rate schedule ``section.name`` over ``total_steps`` optimizer steps.

    The schedule comes from :data:`trainengine.registries.SCHEDULES` (name -> builder), so a
    schedule registered with :func:`~trainengine.registries.register_schedule` is selectable as
    ``scheduler.name`` in YAML. The exact lr of every built-in schedule is given in this
    module's docstring. Each param group keeps its own base lr (its ``lr`` when the schedule is
    built), so discriminative lrs survive.

    Args:
        optimizer: The optimizer whose param groups are scheduled.
        section: The scheduler section (``config.scheduler``) or a mapping of its fields. Left
            out, the section's fields can be given as keywords instead
            (``build_scheduler(opt, name="cosine", total_steps=5, warmup_steps=1)``).
        total_steps: Planned number of optimizer steps (>= 1).
        monitor_mode: ``min`` when the monitored metric improves downwards (loss), ``max``
            otherwise (accuracy); ``reduce_on_plateau`` compares evaluations with it.
        plateau_mode: Older name of ``monitor_mode``.
        **fields: :class:`~trainengine.config.SchedulerSection` fields (``name``,
            ``warmup_steps``, ``warmup_ratio``, ``min_lr_ratio``, ``cycle_steps``, ...), when no
            section is passed.

    Returns:
        An :class:`LRScheduleHandle`; the optimizer's lrs are already set for step 0.

    Raises:
        ConfigError: Listing every invalid setting at once (unknown name with the registered
            ones, both warmups set, warmup >= total_steps, out-of-range values, warmup with
            one_cycle/cyclic).

    Example:
        >>> import torch
        >>> from trainengine.config import SchedulerSection
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        >>> h = build_scheduler(opt, SchedulerSection(name="linear"), total_steps=11)
        >>> h.get_last_lr()
        [0.1]
    """
    if total_steps is None and "total_steps" in fields:
        total_steps = fields.pop("total_steps")
    settings = _settings(section, fields)
    mode = plateau_mode if plateau_mode is not None else monitor_mode
    name = settings.name
    problem = SCHEDULES.problem(name)
    if problem is not None:
        raise ConfigError(problem, prefix="invalid scheduler settings")
    warmup_steps, warmup_ratio, min_lr_ratio = settings.warmup_steps, settings.warmup_ratio, settings.min_lr_ratio
    problems: list[str] = []
    if not isinstance(total_steps, int) or isinstance(total_steps, bool) or total_steps < 1:
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
    if mode not in ("min", "max"):
        problems.append(f"monitor_mode must be 'min' or 'max', got {mode!r}")
    if problems:
        raise ConfigError(problems, prefix="invalid scheduler settings")
    total_steps = cast(int, total_steps)  # an int >= 1, checked above

    warmup = resolve_warmup_steps(total_steps, warmup_steps, warmup_ratio)
    if warmup >= total_steps:
        source = f"warmup_ratio={warmup_ratio}" if warmup_ratio > 0 else f"warmup_steps={warmup_steps}"
        raise ConfigError(
            f"warmup ({warmup} steps, from {source}) must be shorter than total_steps "
            f"({total_steps}); lower it so some steps run at the peak lr",
            prefix="invalid scheduler settings",
        )

    # 'initial_lr' is set by torch schedulers; reuse it so rebuilding on a resumed optimizer
    # keeps the original peak instead of the current (decayed) lr.
    base_lrs = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
    builder = SCHEDULES.get(name)
    scheduler = builder(
        optimizer, settings, total_steps=total_steps, warmup_steps=warmup, base_lrs=base_lrs, monitor_mode=mode
    )
    if not isinstance(scheduler, (LRScheduler, ReduceLROnPlateau)):
        raise ConfigError(
            f"schedule {name!r} returned {type(scheduler).__name__}; "
            "a schedule builder must return a torch LRScheduler",
            prefix="invalid scheduler settings",
        )
    return LRScheduleHandle(
        name,
        optimizer,
        scheduler,
        total_steps=total_steps,
        warmup_steps=warmup,
        base_lrs=base_lrs,
    )


# ----------------------------------------------------------------------------- built-in schedules
# The entries of trainengine.registries.SCHEDULES (registered there lazily by "module:attr").


def _warmup_source(section: Any) -> str:
    return (
        f"warmup_ratio={section.warmup_ratio}" if section.warmup_ratio > 0 else f"warmup_steps={section.warmup_steps}"
    )


def _lambda_schedule(name: str) -> ScheduleBuilder:
    def build(
        optimizer: Optimizer,
        section: Any,
        *,
        total_steps: int,
        warmup_steps: int,
        base_lrs: list[float],
        monitor_mode: Literal["min", "max"],
    ) -> LRScheduler:
        return LambdaLR(
            optimizer,
            _make_lambda(name, total_steps=total_steps, warmup=warmup_steps, min_lr_ratio=section.min_lr_ratio),
        )

    build.__name__ = build.__qualname__ = f"{name}_schedule"
    build.__doc__ = f"``{name}``: linear warmup, then the {name} curve of this module's docstring."
    return build


cosine_schedule = _lambda_schedule("cosine")
linear_schedule = _lambda_schedule("linear")
constant_schedule = _lambda_schedule("constant")


def one_cycle_schedule(
    optimizer: Optimizer,
    section: Any,
    *,
    total_steps: int,
    warmup_steps: int,
    base_lrs: list[float],
    monitor_mode: Literal["min", "max"],
) -> LRScheduler:
    """``one_cycle``: :class:`torch.optim.lr_scheduler.OneCycleLR` peaking at the base lr."""
    problems = []
    if warmup_steps > 0:
        problems.append(
            f"{_warmup_source(section)} is not used by the 'one_cycle' schedule, which has its own ramp-up; "
            "set it to 0 and tune one_cycle_pct_start instead"
        )
    pct = section.one_cycle_pct_start
    if not 0.0 < pct < 1.0:
        problems.append(f"one_cycle_pct_start must be in (0, 1), got {pct}")
    elif pct * total_steps - 1 < 1:
        # OneCycleLR divides by the rising phase's length (pct_start * T - 1 steps).
        problems.append(
            f"one_cycle needs one_cycle_pct_start * total_steps >= 2 so the lr can rise, got "
            f"{pct} * {total_steps} = {pct * total_steps:g}; raise total_steps or one_cycle_pct_start"
        )
    if section.one_cycle_div_factor <= 0 or section.one_cycle_final_div_factor <= 0:
        problems.append(
            "one_cycle_div_factor and one_cycle_final_div_factor must be > 0, got "
            f"{section.one_cycle_div_factor} and {section.one_cycle_final_div_factor}"
        )
    if problems:
        raise ConfigError(problems, prefix="invalid scheduler settings")
    return OneCycleLR(
        optimizer,
        max_lr=base_lrs,
        total_steps=total_steps,
        pct_start=pct,
        anneal_strategy="cos",
        cycle_momentum=_has_momentum(optimizer),
        div_factor=section.one_cycle_div_factor,
        final_div_factor=section.one_cycle_final_div_factor,
    )


def cyclic_schedule(
    optimizer: Optimizer,
    section: Any,
    *,
    total_steps: int,
    warmup_steps: int,
    base_lrs: list[float],
    monitor_mode: Literal["min", "max"],
) -> LRScheduler:
    """``cyclic``: :class:`torch.optim.lr_scheduler.CyclicLR` between a fraction of the base lr and it."""
    problems = []
    if warmup_steps > 0:
        problems.append(
            f"{_warmup_source(section)} is not used by the 'cyclic' schedule, which has its own ramp-up; "
            "set it to 0 and tune cyclic_base_lr_ratio/cycle_steps instead"
        )
    if section.cycle_steps < 1:
        problems.append(f"cycle_steps must be >= 1, got {section.cycle_steps}")
    if not 0.0 < section.cyclic_base_lr_ratio <= 1.0:
        problems.append(f"cyclic_base_lr_ratio must be in (0, 1], got {section.cyclic_base_lr_ratio}")
    if section.cyclic_mode not in _CYCLIC_MODES:
        problems.append(f"cyclic_mode must be one of {', '.join(_CYCLIC_MODES)}, got {section.cyclic_mode!r}")
    if not 0.0 < section.cyclic_gamma <= 1.0:
        problems.append(f"cyclic_gamma must be in (0, 1], got {section.cyclic_gamma}")
    if problems:
        raise ConfigError(problems, prefix="invalid scheduler settings")
    return CyclicLR(
        optimizer,
        base_lr=[b * section.cyclic_base_lr_ratio for b in base_lrs],
        max_lr=base_lrs,
        step_size_up=section.cycle_steps,
        mode=section.cyclic_mode,
        gamma=section.cyclic_gamma,
        cycle_momentum=False,
    )


def reduce_on_plateau_schedule(
    optimizer: Optimizer,
    section: Any,
    *,
    total_steps: int,
    warmup_steps: int,
    base_lrs: list[float],
    monitor_mode: Literal["min", "max"],
) -> ReduceLROnPlateau:
    """``reduce_on_plateau``: warmup (driven by :class:`LRScheduleHandle`), then
    :class:`torch.optim.lr_scheduler.ReduceLROnPlateau` on the evaluations' metric."""
    problems = []
    if not 0.0 < section.plateau_factor < 1.0:
        problems.append(f"plateau_factor must be in (0, 1), got {section.plateau_factor}")
    if section.plateau_patience < 0:
        problems.append(f"plateau_patience must be >= 0, got {section.plateau_patience}")
    if section.plateau_cooldown < 0:
        problems.append(f"plateau_cooldown must be >= 0, got {section.plateau_cooldown}")
    if section.plateau_threshold < 0:
        problems.append(f"plateau_threshold must be >= 0, got {section.plateau_threshold}")
    if problems:
        raise ConfigError(problems, prefix="invalid scheduler settings")
    for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
        group.setdefault("initial_lr", base)
        group["lr"] = base * _warmup_factor(0, warmup_steps) if warmup_steps > 0 else base
    return ReduceLROnPlateau(
        optimizer,
        mode=monitor_mode,
        factor=section.plateau_factor,
        patience=section.plateau_patience,
        threshold=section.plateau_threshold,
        cooldown=section.plateau_cooldown,
        min_lr=[b * section.min_lr_ratio for b in base_lrs],
    )
