"""Learning-rate schedules: every curve is checked against its formula, computed here."""

from __future__ import annotations

import io
import itertools
import math

import pytest
import torch

from trainengine.engine.schedules import (
    SCHEDULER_NAMES,
    LRScheduleHandle,
    build_scheduler,
    resolve_warmup_steps,
)
from trainengine.errors import CheckpointError, ConfigError


def _optimizer(lrs: tuple[float, ...] = (1.0,), kind: str = "sgd", **kwargs: object) -> torch.optim.Optimizer:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lr} for lr in lrs]
    if kind == "adamw":
        return torch.optim.AdamW(groups, **kwargs)
    return torch.optim.SGD(groups, **kwargs)


def _curve(handle: LRScheduleHandle, opt: torch.optim.Optimizer, num_steps: int) -> list[list[float]]:
    """The lr of each group used by updates 0 .. num_steps-1 (read before each update)."""
    out = []
    for _ in range(num_steps):
        lrs = [g["lr"] for g in opt.param_groups]
        assert lrs == handle.get_last_lr()
        out.append(lrs)
        opt.step()  # params have no grad: a no-op update that keeps torch's call-order check happy
        handle.step()
    return out


def _first(curve: list[list[float]]) -> list[float]:
    return [lrs[0] for lrs in curve]


def _expected_decay(name: str, s: int, total: int, warmup: int, floor: float) -> float:
    """Multiplier at step s, written independently of the implementation."""
    if s < warmup:
        return (s + 1) / (warmup + 1)
    if name == "constant":
        return 1.0
    p = min(1.0, (s - warmup) / (total - 1 - warmup))
    if name == "cosine":
        return floor + (1 - floor) * (math.cos(math.pi * p) + 1) / 2
    return 1 - p * (1 - floor)


# ---------------------------------------------------------------- warmup family
@pytest.mark.parametrize("name", ["cosine", "linear", "constant"])
@pytest.mark.parametrize("warmup", [0, 1, 7])
def test_warmup_family_matches_formula(name: str, warmup: int) -> None:
    total, base, floor = 40, 0.3, 0.1
    opt = _optimizer((base,))
    handle = build_scheduler(opt, name=name, total_steps=total, warmup_steps=warmup, min_lr_ratio=floor)
    got = _first(_curve(handle, opt, total))
    expected = [base * _expected_decay(name, s, total, warmup, floor) for s in range(total)]
    assert got == pytest.approx(expected, rel=1e-12, abs=0)


@pytest.mark.parametrize("name", ["cosine", "linear"])
def test_decay_endpoints_exact_and_floor_holds(name: str) -> None:
    total, warmup, base, floor = 25, 5, 2e-3, 0.05
    opt = _optimizer((base,))
    handle = build_scheduler(opt, name=name, total_steps=total, warmup_steps=warmup, min_lr_ratio=floor)
    got = _first(_curve(handle, opt, total + 10))
    assert got[warmup] == base  # peak exactly, first update at the full lr
    assert max(got) == base and got.index(base) == warmup
    assert got[total - 1] == base * floor  # floor exactly at the last planned step
    assert got[total - 2] > base * floor
    assert all(lr == base * floor for lr in got[total:])  # held when stepped beyond


def test_warmup_starts_above_zero_and_rises_strictly() -> None:
    opt = _optimizer((1.0,))
    handle = build_scheduler(opt, name="cosine", total_steps=20, warmup_steps=4)
    got = _first(_curve(handle, opt, 5))
    assert got == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert got[0] > 0


def test_cosine_zero_floor_and_decreasing() -> None:
    opt = _optimizer((1.0,))
    handle = build_scheduler(opt, name="cosine", total_steps=11)
    got = _first(_curve(handle, opt, 11))
    assert got[0] == 1.0 and got[-1] == 0.0
    assert got[5] == pytest.approx(0.5)  # half-way through a half-cosine
    assert all(a > b for a, b in itertools.pairwise(got))


def test_single_post_warmup_step_runs_at_peak() -> None:
    opt = _optimizer((1.0,))
    handle = build_scheduler(opt, name="cosine", total_steps=3, warmup_steps=2)
    assert _first(_curve(handle, opt, 3)) == pytest.approx([1 / 3, 2 / 3, 1.0])
    opt = _optimizer((0.5,))
    handle = build_scheduler(opt, name="linear", total_steps=1)
    assert _first(_curve(handle, opt, 1)) == [0.5]


@pytest.mark.parametrize(
    ("ratio", "total", "expected"),
    [(0.1, 100, 10), (0.06, 1000, 60), (0.5, 5, 3), (0.15, 10, 2), (0.04, 10, 0), (0.249, 10, 2)],
)
def test_warmup_ratio_rounds_half_up(ratio: float, total: int, expected: int) -> None:
    assert resolve_warmup_steps(total, warmup_ratio=ratio) == expected
    opt = _optimizer((1.0,))
    handle = build_scheduler(opt, name="constant", total_steps=total, warmup_ratio=ratio)
    assert handle.warmup_steps == expected
    got = _first(_curve(handle, opt, expected + 1))
    assert got[expected] == 1.0
    if expected:
        assert got[expected - 1] < 1.0


def test_per_group_base_lrs_respected() -> None:
    bases = (1.0, 0.01, 3e-4)
    total, warmup, floor = 30, 4, 0.2
    opt = _optimizer(bases)
    handle = build_scheduler(opt, name="cosine", total_steps=total, warmup_steps=warmup, min_lr_ratio=floor)
    curve = _curve(handle, opt, total)
    for g, base in enumerate(bases):
        expected = [base * _expected_decay("cosine", s, total, warmup, floor) for s in range(total)]
        assert [lrs[g] for lrs in curve] == pytest.approx(expected, rel=1e-12, abs=0)
    assert handle.base_lrs == list(bases)


# ---------------------------------------------------------------- validation
def test_both_warmups_is_an_error() -> None:
    with pytest.raises(ConfigError, match="set only one"):
        build_scheduler(_optimizer(), name="cosine", total_steps=100, warmup_steps=5, warmup_ratio=0.1)
    with pytest.raises(ValueError):  # ConfigError is a ValueError
        resolve_warmup_steps(100, warmup_steps=5, warmup_ratio=0.1)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [({"warmup_steps": 10}, "warmup_steps=10"), ({"warmup_ratio": 0.96}, "warmup_ratio=0.96")],
)
def test_warmup_not_shorter_than_total_is_an_error(kwargs: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match="shorter than total_steps") as info:
        build_scheduler(_optimizer(), name="linear", total_steps=10, **kwargs)
    assert needle in str(info.value)


def test_unknown_name_lists_available() -> None:
    with pytest.raises(ConfigError) as info:
        build_scheduler(_optimizer(), name="cosin", total_steps=10)  # type: ignore[arg-type]  # a bad name on purpose
    for name in SCHEDULER_NAMES:
        assert name in str(info.value)


def test_all_problems_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        build_scheduler(
            _optimizer(),
            name="reduce_on_plateau",
            total_steps=10,
            plateau_factor=1.5,
            plateau_patience=-1,
        )
    assert len(info.value.problems) == 2


@pytest.mark.parametrize("name", ["one_cycle", "cyclic"])
def test_warmup_rejected_where_schedule_ramps_itself(name: str) -> None:
    with pytest.raises(ConfigError, match="set it to 0"):
        build_scheduler(_optimizer(), name=name, total_steps=100, warmup_steps=5)


def test_one_cycle_too_short_rising_phase_is_an_error() -> None:
    with pytest.raises(ConfigError, match="one_cycle_pct_start"):
        build_scheduler(_optimizer(), name="one_cycle", total_steps=5, one_cycle_pct_start=0.3)


# ---------------------------------------------------------------- one-cycle
def test_one_cycle_curve_and_peak_location() -> None:
    total, pct, div, final_div, base = 100, 0.25, 25.0, 1e4, 0.4
    opt = _optimizer((base,))
    handle = build_scheduler(
        opt,
        name="one_cycle",
        total_steps=total,
        one_cycle_pct_start=pct,
        one_cycle_div_factor=div,
        one_cycle_final_div_factor=final_div,
    )
    got = _first(_curve(handle, opt, total))
    start, end = base / div, base / div / final_div
    peak = pct * total - 1  # 24

    def cos_anneal(a: float, b: float, frac: float) -> float:
        return b + (a - b) * (1 + math.cos(math.pi * frac)) / 2

    expected = [
        cos_anneal(start, base, s / peak) if s <= peak else cos_anneal(base, end, (s - peak) / (total - 1 - peak))
        for s in range(total)
    ]
    assert got == pytest.approx(expected, rel=1e-9)
    assert got.index(max(got)) == 24 and got[24] == pytest.approx(base)
    assert got[0] == pytest.approx(start) and got[-1] == pytest.approx(end)


def test_one_cycle_holds_last_lr_past_total() -> None:
    opt = _optimizer((1.0,))
    handle = build_scheduler(opt, name="one_cycle", total_steps=20)
    got = _first(_curve(handle, opt, 30))  # torch's OneCycleLR alone would raise here
    assert all(lr == got[19] for lr in got[20:])


def test_one_cycle_momentum_cycling() -> None:
    opt = _optimizer((1e-3,), kind="adamw", betas=(0.9, 0.999))
    handle = build_scheduler(opt, name="one_cycle", total_steps=20, one_cycle_pct_start=0.5)
    assert opt.param_groups[0]["betas"][0] == pytest.approx(0.95)  # beta1 high while lr is low
    _curve(handle, opt, 9)  # now at step 9 = pct_start * total - 1, the peak
    assert opt.param_groups[0]["betas"] == pytest.approx((0.85, 0.999))
    # Plain SGD without momentum must stay without momentum.
    opt = _optimizer((0.1,))
    handle = build_scheduler(opt, name="one_cycle", total_steps=20)
    _curve(handle, opt, 10)
    assert opt.param_groups[0]["momentum"] == 0


# ---------------------------------------------------------------- cyclic
@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
def test_cyclic_matches_formula(mode: str) -> None:
    base, ratio, half, gamma = 1e-2, 0.1, 5, 0.97
    opt = _optimizer((base,))
    handle = build_scheduler(
        opt,
        name="cyclic",
        total_steps=100,
        cycle_steps=half,
        cyclic_base_lr_ratio=ratio,
        cyclic_mode=mode,
        cyclic_gamma=gamma,
    )
    got = _first(_curve(handle, opt, 47))
    low = base * ratio
    for s, lr in enumerate(got):
        cycle = math.floor(1 + s / (2 * half))
        x = abs(s / half - 2 * cycle + 1)
        scale = {"triangular": 1.0, "triangular2": 1 / 2 ** (cycle - 1), "exp_range": gamma**s}[mode]
        assert lr == pytest.approx(low + (base - low) * max(0.0, 1 - x) * scale, rel=1e-9), s
    assert got[0] == pytest.approx(low)
    peak = base if mode != "exp_range" else low + (base - low) * gamma**half
    assert got[half] == pytest.approx(peak)


# ---------------------------------------------------------------- plateau
def test_plateau_reduces_after_patience_non_improving_evals_not_before() -> None:
    base, patience = 0.5, 2
    opt = _optimizer((base, 0.05))
    handle = build_scheduler(opt, name="reduce_on_plateau", total_steps=100, plateau_patience=patience)
    assert handle.needs_metric
    seen = []
    for metric in [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]:
        handle.step()
        handle.step_eval(metric)
        seen.append(handle.get_last_lr())
    # eval 0 sets the best; evals 1..2 are tolerated; eval 3 is the (patience+1)-th bad one.
    assert [lrs[0] for lrs in seen[:3]] == [base] * 3
    assert seen[3] == pytest.approx([base * 0.1, 0.005])
    assert seen[5] == pytest.approx([base * 0.1, 0.005])
    assert seen[6] == pytest.approx([base * 0.01, 0.0005])


def test_plateau_improving_metric_never_reduces_and_mode_max() -> None:
    opt = _optimizer((0.1,))
    handle = build_scheduler(opt, name="reduce_on_plateau", total_steps=100, plateau_patience=0)
    for metric in [5.0, 4.0, 3.0, 2.0]:
        handle.step_eval(metric)
    assert handle.get_last_lr() == [0.1]
    opt = _optimizer((0.1,))
    handle = build_scheduler(opt, name="reduce_on_plateau", total_steps=100, plateau_patience=0, plateau_mode="max")
    handle.step_eval(0.5)
    handle.step_eval(0.9)  # accuracy went up: fine
    assert handle.get_last_lr() == [0.1]
    handle.step_eval(0.8)
    assert handle.get_last_lr() == pytest.approx([0.01])


def test_plateau_floor_and_cooldown() -> None:
    opt = _optimizer((1.0,))
    handle = build_scheduler(
        opt,
        name="reduce_on_plateau",
        total_steps=100,
        plateau_patience=0,
        plateau_cooldown=1,
        plateau_factor=0.5,
        min_lr_ratio=0.2,
    )
    lrs = []
    for _ in range(8):
        handle.step_eval(1.0)
        lrs.append(handle.get_last_lr()[0])
    # bad evals at 1, (cooldown 2), 3, (cooldown 4), 5 -> 0.5, 0.5, 0.25, 0.25, floor 0.2
    assert lrs == pytest.approx([1.0, 0.5, 0.5, 0.25, 0.25, 0.2, 0.2, 0.2])


def test_plateau_warmup_and_evals_during_warmup_ignored() -> None:
    opt = _optimizer((1.0,))
    handle = build_scheduler(opt, name="reduce_on_plateau", total_steps=100, warmup_steps=3, plateau_patience=0)
    lrs = []
    for s in range(6):
        lrs.append(handle.get_last_lr()[0])
        # Worsening during warmup (would cut at once with patience 0 if counted); after it,
        # 5.0 is the first counted value (the best so far) and 4.0 improves on it.
        handle.step_eval([1.0, 2.0, 3.0, 5.0, 4.0, 4.0][s])
        opt.step()
        handle.step()
    assert lrs == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])
    assert handle.get_last_lr() == pytest.approx([0.1])  # the flat 4.0 after 4.0 cut it


def test_step_eval_is_a_no_op_for_step_schedules() -> None:
    opt = _optimizer((1.0,))
    handle = build_scheduler(opt, name="constant", total_steps=10)
    assert not handle.needs_metric
    for metric in [1.0, 2.0, 3.0, 4.0]:
        handle.step_eval(metric)
    assert handle.get_last_lr() == [1.0]


# ---------------------------------------------------------------- resume
_RESUME_CASES = [
    ("cosine", {"warmup_steps": 5, "min_lr_ratio": 0.1}),
    ("linear", {"warmup_ratio": 0.1}),
    ("constant", {"warmup_steps": 3}),
    ("one_cycle", {}),
    ("cyclic", {"cycle_steps": 4, "cyclic_mode": "triangular2"}),
    ("reduce_on_plateau", {"warmup_steps": 2, "plateau_patience": 1}),
]


def _drive(handle: LRScheduleHandle, opt: torch.optim.Optimizer, start: int, stop: int) -> list[list[float]]:
    lrs = []
    for s in range(start, stop):
        lrs.append(handle.get_last_lr())
        opt.step()
        handle.step()
        if s % 3 == 2:
            handle.step_eval(1.0 + 0.01 * (s % 2))  # flat metric: plateau cuts happen
    return lrs


@pytest.mark.parametrize(("name", "kwargs"), _RESUME_CASES)
@pytest.mark.parametrize("restore_optimizer", [True, False])
def test_state_dict_round_trip_continues_identically(name: str, kwargs: dict, restore_optimizer: bool) -> None:
    total, cut = 40, 17
    opt_a = _optimizer((0.1, 0.02), kind="adamw")
    a = build_scheduler(opt_a, name=name, total_steps=total, **kwargs)
    _drive(a, opt_a, 0, cut)

    buf = io.BytesIO()
    torch.save({"sched": a.state_dict(), "opt": opt_a.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)  # must be plain, safely loadable data

    opt_b = _optimizer((0.1, 0.02), kind="adamw")
    b = build_scheduler(opt_b, name=name, total_steps=total, **kwargs)
    if restore_optimizer:
        opt_b.load_state_dict(saved["opt"])
    b.load_state_dict(saved["sched"])
    assert b.num_steps == cut
    assert _drive(b, opt_b, cut, total) == _drive(a, opt_a, cut, total)


def test_load_state_dict_rejects_another_schedule() -> None:
    a = build_scheduler(_optimizer(), name="cosine", total_steps=10)
    b = build_scheduler(_optimizer(), name="linear", total_steps=10)
    with pytest.raises(CheckpointError, match="'cosine'"):
        b.load_state_dict(a.state_dict())
