"""The seeds' learning-rate helpers by name, built on :mod:`trainengine.engine.schedules`.

Seed 004 writes ``get_warmup_cosine_scheduler`` (lines 75-99 and 1607-1616) and uses Hugging
Face's ``get_linear_schedule_with_warmup`` (line 819); seed 002 uses
``get_cosine_schedule_with_warmup`` (line 1326). Each helper here is one call of the engine's
:func:`~trainengine.engine.schedules.build_scheduler` and returns the torch scheduler it builds
(a :class:`torch.optim.lr_scheduler.LambdaLR`), so ``scheduler.step()``, ``state_dict()`` and
``load_state_dict()`` work as the seeds use them, and the curve is exactly the engine's
``scheduler.name: cosine`` / ``linear`` curve.

One deliberate difference from the seeds' own ``lr_lambda``: the engine's warmup is
``(s + 1) / (W + 1)``, so the first update already moves the weights (the seeds' ``s / W`` spends
update 0 at lr 0), and the floor is reached at the last planned update ``total_steps - 1`` and
held after it (the seeds' cosine would rise again past ``total_steps``). The exact formulas are
in :mod:`trainengine.engine.schedules`.
"""

from __future__ import annotations

from typing import cast

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from trainengine.engine.schedules import build_scheduler
from trainengine.errors import ConfigError

__all__ = [
    "get_warmup_cosine_scheduler",
    "get_linear_schedule_with_warmup",
    "get_cosine_schedule_with_warmup",
]


def _lambda_schedule(
    optimizer: Optimizer, name: str, *, warmup_steps: int, total_steps: int, min_lr_ratio: float
) -> LambdaLR:
    handle = build_scheduler(
        optimizer, name=name, total_steps=total_steps, warmup_steps=warmup_steps, min_lr_ratio=min_lr_ratio
    )
    # cosine / linear are LambdaLR schedules whose handle.step() is scheduler.step(): handing out
    # the torch scheduler itself gives the seeds' type without a second implementation of the curve.
    return cast(LambdaLR, handle.scheduler)


def _refuse_last_epoch(last_epoch: int, helper: str) -> None:
    if last_epoch != -1:
        raise ConfigError(
            f"{helper}(last_epoch={last_epoch}) is not supported: build the schedule fresh (last_epoch=-1) and "
            "restore its position with scheduler.load_state_dict(state) from your checkpoint",
            prefix="invalid scheduler settings",
        )


def get_warmup_cosine_scheduler(
    optimizer: Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.01
) -> LambdaLR:
    """Linear warmup, then cosine annealing to ``min_lr_ratio`` x the peak (seed 004's helper).

    The engine's ``scheduler.name: cosine`` curve (see the module docstring for the one
    difference from the seed's own lambda). Step it after every ``optimizer.step()``.

    Args:
        optimizer: The optimizer; each param group's current ``lr`` is its peak.
        warmup_steps: Optimizer steps of linear warmup (0 = none).
        total_steps: Planned optimizer steps; the floor is reached at the last one.
        min_lr_ratio: Final lr as a fraction of the peak, in [0, 1].

    Returns:
        A :class:`torch.optim.lr_scheduler.LambdaLR`; the optimizer's lr is set for step 0.

    Raises:
        ConfigError: ``warmup_steps >= total_steps``, ``total_steps < 1`` or ``min_lr_ratio``
            outside [0, 1], each with the value given.

    Example:
        >>> import torch
        >>> opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
        >>> sched = get_warmup_cosine_scheduler(opt, warmup_steps=1, total_steps=3, min_lr_ratio=0.01)
        >>> lrs = []
        >>> for _ in range(3):
        ...     lrs.append(opt.param_groups[0]["lr"])
        ...     opt.step()
        ...     sched.step()
        >>> [round(lr, 6) for lr in lrs]
        [0.0005, 0.001, 1e-05]
    """
    return _lambda_schedule(
        optimizer, "cosine", warmup_steps=warmup_steps, total_steps=total_steps, min_lr_ratio=min_lr_ratio
    )


def get_linear_schedule_with_warmup(
    optimizer: Optimizer, num_warmup_steps: int, num_training_steps: int, last_epoch: int = -1
) -> LambdaLR:
    """Linear warmup, then linear decay to 0 (Hugging Face's helper, used by seed 004 line 819).

    The engine's ``scheduler.name: linear`` curve with ``min_lr_ratio`` 0.

    Args:
        optimizer: The optimizer; each param group's current ``lr`` is its peak.
        num_warmup_steps: Optimizer steps of linear warmup.
        num_training_steps: Planned optimizer steps; the lr is 0 at the last one.
        last_epoch: Only -1 (a fresh schedule); resume with ``load_state_dict``.

    Returns:
        A :class:`torch.optim.lr_scheduler.LambdaLR`.

    Raises:
        ConfigError: Warmup not shorter than the run, or ``last_epoch`` other than -1.

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        >>> sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=0, num_training_steps=3)
        >>> lrs = []
        >>> for _ in range(3):
        ...     lrs.append(opt.param_groups[0]["lr"])
        ...     opt.step()
        ...     sched.step()
        >>> lrs
        [1.0, 0.5, 0.0]
    """
    _refuse_last_epoch(last_epoch, "get_linear_schedule_with_warmup")
    return _lambda_schedule(
        optimizer, "linear", warmup_steps=num_warmup_steps, total_steps=num_training_steps, min_lr_ratio=0.0
    )


def get_cosine_schedule_with_warmup(
    optimizer: Optimizer,
    num_warmup_steps: int,
    num_training_steps: int,
    num_cycles: float = 0.5,
    last_epoch: int = -1,
) -> LambdaLR:
    """Linear warmup, then half a cosine down to 0 (Hugging Face's helper, used by seed 002 line 1326).

    The engine's ``scheduler.name: cosine`` curve with ``min_lr_ratio`` 0.

    Args:
        optimizer: The optimizer; each param group's current ``lr`` is its peak.
        num_warmup_steps: Optimizer steps of linear warmup.
        num_training_steps: Planned optimizer steps; the lr is 0 at the last one.
        num_cycles: Only 0.5 (one half cosine wave, the default); the engine has no multi-wave cosine.
        last_epoch: Only -1 (a fresh schedule); resume with ``load_state_dict``.

    Returns:
        A :class:`torch.optim.lr_scheduler.LambdaLR`.

    Raises:
        ConfigError: Warmup not shorter than the run, ``num_cycles`` other than 0.5 or
            ``last_epoch`` other than -1.

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        >>> sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=0, num_training_steps=3)
        >>> [round(g["lr"], 6) for g in opt.param_groups]
        [1.0]
    """
    if num_cycles != 0.5:
        raise ConfigError(
            f"get_cosine_schedule_with_warmup(num_cycles={num_cycles}) is not supported: the engine's cosine is one "
            "half wave from the peak to the floor (num_cycles=0.5); for repeated cycles use scheduler.name cyclic",
            prefix="invalid scheduler settings",
        )
    _refuse_last_epoch(last_epoch, "get_cosine_schedule_with_warmup")
    return _lambda_schedule(
        optimizer, "cosine", warmup_steps=num_warmup_steps, total_steps=num_training_steps, min_lr_ratio=0.0
    )
