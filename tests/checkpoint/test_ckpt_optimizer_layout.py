"""Optimizer state loads by parameter name into any group layout; schedulers load when of the same kind."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from trainengine.checkpoint import CheckpointManager, named_optimizer_state
from trainengine.engine.schedules import LRScheduleHandle
from trainengine.errors import CheckpointError


def _mlp(seed: int = 0, extra: bool = False) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(6, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 3)]
    if extra:
        layers.append(nn.Linear(3, 3))
    return nn.Sequential(*layers)


def _decay_groups(model: nn.Module, lr: float = 1e-2) -> torch.optim.AdamW:
    """The engine's layout: matrices decayed, biases and norm gains not."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=lr)


def _train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int = 3) -> None:
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(16, 6, generator=gen)
        loss = model(x).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _by_name(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, dict]:
    return {name: optimizer.state[p] for name, p in model.named_parameters() if p in optimizer.state}


def _save(tmp_path, model, optimizer, *, named: bool = True, scheduler=None):
    manager = CheckpointManager(tmp_path / "ckpt")
    state = {"optimizer": optimizer if named else optimizer.state_dict()}
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    return manager, manager.save(step=3, epoch=0, model=model, state=state, metrics={"val/loss": 1.0})


def test_two_groups_load_into_one_group_by_name(tmp_path, caplog):
    model = _mlp()
    opt = _decay_groups(model)
    _train(model, opt)
    manager, path = _save(tmp_path, model, opt)

    user_model = _mlp(seed=5)
    user_opt = torch.optim.AdamW(user_model.parameters(), lr=5e-4)  # one group, the user's own lr
    with caplog.at_level(logging.WARNING, logger="trainengine"):
        manager.load_checkpoint(path, user_model, optimizer=user_opt)

    saved, loaded = _by_name(model, opt), _by_name(user_model, user_opt)
    assert set(loaded) == {n for n, _ in model.named_parameters()}
    for name, entry in saved.items():  # the moments went to the parameter of the same name
        torch.testing.assert_close(loaded[name]["exp_avg"], entry["exp_avg"], rtol=0, atol=0)
        torch.testing.assert_close(loaded[name]["exp_avg_sq"], entry["exp_avg_sq"], rtol=0, atol=0)
        assert float(loaded[name]["step"]) == 3.0
    assert len(user_opt.param_groups) == 1 and user_opt.param_groups[0]["lr"] == 5e-4
    assert user_opt.param_groups[0]["weight_decay"] == 0.01  # AdamW's default: the user's choice stands
    assert "param_names" not in user_opt.param_groups[0]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "hyperparameters" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0].getMessage()
    _train(user_model, user_opt, steps=1)  # the loaded state is usable
    assert float(user_opt.state[next(user_model.parameters())]["step"]) == 4.0


def test_one_group_loads_into_two_groups(tmp_path):
    model = _mlp()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _train(model, opt)
    manager, path = _save(tmp_path, model, opt)
    user_model = _mlp(seed=5)
    user_opt = _decay_groups(user_model, lr=3e-4)
    manager.load_checkpoint(path, user_model, optimizer=user_opt)
    saved, loaded = _by_name(model, opt), _by_name(user_model, user_opt)
    for name, entry in saved.items():
        torch.testing.assert_close(loaded[name]["exp_avg"], entry["exp_avg"], rtol=0, atol=0)
    assert [g["weight_decay"] for g in user_opt.param_groups] == [0.1, 0.0]
    assert [g["lr"] for g in user_opt.param_groups] == [3e-4, 3e-4]


def test_same_layout_restores_hyperparameters_without_warning(tmp_path, caplog):
    model = _mlp()
    opt = _decay_groups(model, lr=1e-2)
    _train(model, opt)
    manager, path = _save(tmp_path, model, opt)
    user_model = _mlp(seed=5)
    user_opt = _decay_groups(user_model, lr=7e-4)
    with caplog.at_level(logging.WARNING, logger="trainengine"):
        manager.load_checkpoint(path, user_model, optimizer=user_opt)
    assert [g["lr"] for g in user_opt.param_groups] == [1e-2, 1e-2]  # plain resume semantics
    assert not [r for r in caplog.records if "hyperparameters" in r.getMessage()]
    torch.testing.assert_close(
        _by_name(user_model, user_opt)["0.weight"]["exp_avg"], opt.state[model[0].weight]["exp_avg"]
    )


@pytest.mark.parametrize(
    "saved_extra, expected",
    [
        (False, "missing from the checkpoint: 4.bias, 4.weight"),
        (True, "in the checkpoint but not in the optimizer: 4.bias, 4.weight"),
    ],
)
def test_different_parameter_set_is_an_error_naming_them(tmp_path, saved_extra, expected):
    model = _mlp(extra=saved_extra)
    opt = _decay_groups(model)
    _train(model, opt)
    _, path = _save(tmp_path, model, opt)
    user_model = _mlp(extra=not saved_extra)
    user_opt = torch.optim.AdamW(user_model.parameters())
    from trainengine.checkpoint import read_checkpoint
    from trainengine.checkpoint._optim_state import load_optimizer_state

    loaded = read_checkpoint(path)
    with pytest.raises(CheckpointError, match=expected):
        load_optimizer_state(user_opt, loaded.state["optimizer"], user_model, where=str(path))


def test_old_checkpoint_without_names_loads_only_into_the_same_layout(tmp_path):
    model = _mlp()
    opt = _decay_groups(model)
    _train(model, opt)
    manager, path = _save(tmp_path, model, opt, named=False)
    user_model = _mlp(seed=5)
    same = _decay_groups(user_model)
    manager.load_checkpoint(path, user_model, optimizer=same)
    torch.testing.assert_close(same.state[user_model[0].weight]["exp_avg"], opt.state[model[0].weight]["exp_avg"])
    with pytest.raises(CheckpointError, match=r"sizes \[2, 4\].*\[6\].*does not record parameter names"):
        manager.load_checkpoint(path, user_model, optimizer=torch.optim.AdamW(user_model.parameters()))


def test_names_are_canonical_across_wrappers(tmp_path):
    class Wrapper(nn.Module):  # like DDP: everything under "module."
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.module = inner

    model = _mlp()
    opt = _decay_groups(model)
    _train(model, opt)
    assert named_optimizer_state(opt, Wrapper(model))["param_groups"][0]["param_names"] == ["0.weight", "3.weight"]
    manager, path = _save(tmp_path, Wrapper(model), opt)
    user = Wrapper(_mlp(seed=5))
    user_opt = torch.optim.AdamW(user.parameters())
    manager.load_checkpoint(path, user, optimizer=user_opt)
    torch.testing.assert_close(user_opt.state[user.module[3].bias]["exp_avg"], opt.state[model[3].bias]["exp_avg"])


def _handle(optimizer: torch.optim.Optimizer, name: str = "linear", total: int = 10) -> LRScheduleHandle:
    base = [g["lr"] for g in optimizer.param_groups]
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 - s / total)
    return LRScheduleHandle(name, optimizer, sched, total_steps=total, warmup_steps=0, base_lrs=base)


def test_engine_schedule_loads_into_a_user_torch_scheduler_on_another_layout(tmp_path):
    model = _mlp()
    opt = _decay_groups(model, lr=1e-2)
    handle = _handle(opt)
    for _ in range(4):
        _train(model, opt, steps=1)
        handle.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.6)
    manager, path = _save(tmp_path, model, opt, scheduler=handle)

    user_model = _mlp(seed=5)
    user_opt = torch.optim.AdamW(user_model.parameters(), lr=2e-3)
    user_sched = torch.optim.lr_scheduler.LambdaLR(user_opt, lambda s: 1.0 - s / 10)
    manager.load_checkpoint(path, user_model, optimizer=user_opt, scheduler=user_sched)
    assert user_sched.last_epoch == 4
    # The schedule's position (x0.6) carries over onto the user's own base lr.
    assert user_opt.param_groups[0]["lr"] == pytest.approx(2e-3 * 0.6)
    assert user_sched.get_last_lr() == [pytest.approx(2e-3 * 0.6)]
    user_opt.step()
    user_sched.step()
    assert user_opt.param_groups[0]["lr"] == pytest.approx(2e-3 * 0.5)  # continues from step 4


def test_engine_schedule_loads_into_a_handle(tmp_path):
    model = _mlp()
    opt = _decay_groups(model, lr=1e-2)
    handle = _handle(opt)
    for _ in range(3):
        _train(model, opt, steps=1)
        handle.step()
    manager, path = _save(tmp_path, model, opt, scheduler=handle)
    user_model = _mlp(seed=5)
    same_layout = _decay_groups(user_model, lr=1e-2)
    user_handle = _handle(same_layout)
    manager.load_checkpoint(path, user_model, optimizer=same_layout, scheduler=user_handle)
    assert user_handle.num_steps == 3 and user_handle.get_last_lr() == pytest.approx([1e-2 * 0.7] * 2)
    one_group = torch.optim.AdamW(user_model.parameters(), lr=4e-3)
    other_handle = _handle(one_group)
    manager.load_checkpoint(path, user_model, optimizer=one_group, scheduler=other_handle)
    assert other_handle.num_steps == 3 and one_group.param_groups[0]["lr"] == pytest.approx(4e-3 * 0.7)


def test_scheduler_of_another_kind_is_a_clear_error(tmp_path):
    model = _mlp()
    opt = _decay_groups(model)
    handle = _handle(opt)
    manager, path = _save(tmp_path, model, opt, scheduler=handle)
    user_model = _mlp(seed=5)
    user_opt = torch.optim.AdamW(user_model.parameters())
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(user_opt, T_max=10)
    with pytest.raises(
        CheckpointError, match=r"trainengine schedule 'linear'.*CosineAnnealingLR.*leave scheduler= out"
    ):
        manager.load_checkpoint(path, user_model, optimizer=user_opt, scheduler=cosine)
    with pytest.raises(CheckpointError, match=r"schedule 'linear'.*schedule 'cosine'"):
        manager.load_checkpoint(path, user_model, optimizer=user_opt, scheduler=_handle(user_opt, name="cosine"))
