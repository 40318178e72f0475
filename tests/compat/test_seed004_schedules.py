"""Seed 004's schedule helpers by name: the seed's snippets run, and the curves are the engine's.

Snippets are copied from /work/shared/seeds/004_676389e169f62971.txt (line numbers beside each)
with only their imports changed; a pre-trained model the seed downloads (timm ViT, BERT) is
replaced by a tiny nn.Linear, which the schedule never looks at.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from trainengine.compat.seed004 import (
    get_cosine_schedule_with_warmup,
    get_linear_schedule_with_warmup,
    get_warmup_cosine_scheduler,
)
from trainengine.engine.schedules import build_scheduler
from trainengine.errors import ConfigError


def _lrs(optimizer: torch.optim.Optimizer, scheduler, steps: int) -> list[float]:
    """The lr each of ``steps`` optimizer updates uses."""
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def _core_lrs(lr: float, steps: int, **fields) -> list[float]:
    """The same run through the engine's own schedule (trainengine.engine.schedules)."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    return _lrs(opt, build_scheduler(opt, total_steps=steps, **fields), steps)


# Seed 004 lines 101-115, verbatim. Run with exec(): its `for step ...: ...` body is the seed's
# placeholder, which the linters would rewrite.
USAGE_SNIPPET = """
# Usage
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
scheduler = get_warmup_cosine_scheduler(
    optimizer,
    warmup_steps=1000,
    total_steps=10000,
    min_lr_ratio=0.01
)

for step in range(10000):
    # Training step
    ...
    optimizer.step()
    scheduler.step()  # Update LR after each step
"""


def test_seed_usage_snippet_runs_and_ends_at_the_floor():
    names = {"torch": torch, "model": nn.Linear(4, 2), "get_warmup_cosine_scheduler": get_warmup_cosine_scheduler}
    exec(USAGE_SNIPPET, names)
    optimizer, scheduler = names["optimizer"], names["scheduler"]
    assert isinstance(scheduler, LRScheduler)  # the seed's type: a torch scheduler, not a wrapper
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.01)  # min_lr_ratio x peak


def _multipliers(scheduler, steps: int) -> list[float]:
    """The lr multiplier at each optimizer step (no optimizer stepping needed)."""
    return [scheduler.lr_lambdas[0](s) for s in range(steps)]


def _core_multipliers(steps: int, **fields) -> list[float]:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    return _multipliers(build_scheduler(opt, total_steps=steps, **fields).scheduler, steps)


def test_warmup_cosine_is_the_engine_cosine_curve_step_for_step():
    opt = torch.optim.AdamW(nn.Linear(4, 2).parameters(), lr=1e-3)
    seed = _lrs(opt, get_warmup_cosine_scheduler(opt, warmup_steps=10, total_steps=50, min_lr_ratio=0.01), 50)
    core = _core_lrs(1e-3, 50, name="cosine", warmup_steps=10, min_lr_ratio=0.01)
    assert seed == core
    # The shape the seed describes: warmup rises to the peak, cosine falls to 1% of it.
    assert seed[0] < seed[9] < seed[10] == pytest.approx(1e-3)
    assert seed[-1] == pytest.approx(1e-5)
    assert all(a >= b for a, b in itertools.pairwise(seed[10:]))


def test_transfer_learning_snippet_uses_the_default_min_lr_ratio():
    model = nn.Linear(4, 2)  # stands in for timm's pre-trained ViT (seed 004 line 798)
    # fmt: off
    # --- seed 004 lines 800-804, verbatim ---
    # Fine-tune with very small learning rate
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01)

    # Use warm-up + cosine decay
    scheduler = get_warmup_cosine_scheduler(optimizer, warmup_steps=500, total_steps=10000)
    # --- end of snippet ---
    # fmt: on
    m = _multipliers(scheduler, 10000)
    assert m == _core_multipliers(10000, name="cosine", warmup_steps=500, min_lr_ratio=0.01)
    # The seed's curve at its landmarks: peak after warmup, half-way down at the middle of the
    # decay, 1% of the peak (the default min_lr_ratio) at the end.
    assert m[500] == 1.0 and m[-1] == 0.01
    assert m[500 + (9999 - 500) // 2] == pytest.approx(0.01 + 0.99 * 0.5, abs=1e-3)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-5 / 501)  # step 0: warmup already moves


def test_linear_schedule_with_warmup_snippet_is_the_engine_linear_curve():
    from torch.optim import AdamW  # the seed imports AdamW from transformers (removed there since 4.x)

    model = nn.Linear(4, 2)  # stands in for BERT (seed 004 line 813)
    # fmt: off
    # --- seed 004 lines 815-823, verbatim ---
    # Fine-tune all parameters
    optimizer = AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)

    # Warm-up + linear decay (standard for transformers)
    scheduler = get_linear_schedule_with_warmup(
        optimizer,
        num_warmup_steps=1000,
        num_training_steps=10000
    )
    # --- end of snippet ---
    # fmt: on
    m = _multipliers(scheduler, 10000)
    assert m == _core_multipliers(10000, name="linear", warmup_steps=1000, min_lr_ratio=0.0)
    assert m[1000] == 1.0 and m[-1] == 0.0
    assert m[1000 + (9999 - 1000) // 2] == pytest.approx(0.5, abs=1e-3)  # linear: half-way is half


def test_cosine_schedule_with_warmup_of_seed_002_decays_to_zero():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.5)
    lrs = _lrs(opt, get_cosine_schedule_with_warmup(opt, num_warmup_steps=3, num_training_steps=20), 20)
    assert lrs == _core_lrs(0.5, 20, name="cosine", warmup_steps=3, min_lr_ratio=0.0)
    assert lrs[-1] == 0.0


def test_scheduler_state_dict_resumes_the_curve_exactly():
    def fresh():
        opt = torch.optim.AdamW(nn.Linear(4, 2).parameters(), lr=1e-3)
        return opt, get_warmup_cosine_scheduler(opt, warmup_steps=5, total_steps=30)

    opt, sched = fresh()
    full = _lrs(opt, sched, 30)
    opt, sched = fresh()
    _lrs(opt, sched, 12)
    state_opt, state_sched = opt.state_dict(), sched.state_dict()
    opt2, sched2 = fresh()
    opt2.load_state_dict(state_opt)
    sched2.load_state_dict(state_sched)
    assert _lrs(opt2, sched2, 18) == full[12:]


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda o: get_warmup_cosine_scheduler(o, warmup_steps=100, total_steps=100), ["warmup (100 steps", "100"]),
        (lambda o: get_warmup_cosine_scheduler(o, 1, 10, min_lr_ratio=1.5), ["min_lr_ratio", "1.5"]),
        (lambda o: get_cosine_schedule_with_warmup(o, 1, 10, num_cycles=2.0), ["num_cycles=2.0", "cyclic"]),
        (lambda o: get_linear_schedule_with_warmup(o, 1, 10, last_epoch=4), ["last_epoch=4", "load_state_dict"]),
    ],
)
def test_bad_arguments_say_what_and_how_to_fix(call, words):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ConfigError) as info:
        call(opt)
    for word in words:
        assert word in str(info.value)
