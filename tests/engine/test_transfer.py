"""Transfer learning (``transfer:``): freezing, discriminative lrs, gradual and progressive unfreezing.

Every test trains a small backbone (an input layer, three blocks in a ``ModuleList``, a head) with
the public Trainer and checks which parameters moved (bitwise) and the optimizer's group lrs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from trainengine import TaskSpec, Trainer
from trainengine.engine._transfer import TransferSchedule, find_layer_groups
from trainengine.errors import ConfigError
from trainengine.models import GPT, GPTConfig

LR = 1e-2
TASK = TaskSpec.classification("blobs", 3)
# Layer groups found from Net: embeddings (embed), layers.0, layers.1, layers.2, head.
GROUPS = ["embed", "layers.0", "layers.1", "layers.2", "head"]


class Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.lin = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.tanh(self.lin(self.norm(x)))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.layers = nn.ModuleList(Block(8) for _ in range(3))
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for block in self.layers:
            x = block(x)
        return self.head(x)


def _net() -> Net:
    torch.manual_seed(0)
    return Net()


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _moved(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], prefix: str) -> list[bool]:
    """Per parameter under ``prefix``: whether it changed at all (bitwise)."""
    keys = [k for k in before if k == prefix or k.startswith(prefix + ".")]
    assert keys, prefix
    return [not torch.equal(before[k], after[k]) for k in keys]


class Recorder:
    """Weights and group lrs at every epoch start (after the transfer schedule applied it) and at the end."""

    def __init__(self) -> None:
        self.weights: dict[int, dict[str, torch.Tensor]] = {}
        self.lrs: dict[int, list[float]] = {}
        self.requires_grad: dict[int, dict[str, bool]] = {}
        self.fresh_state: dict[int, dict[str, bool]] = {}

    def on_epoch_start(self, trainer, epoch):
        self.weights[epoch] = _snapshot(trainer.model)
        self.lrs[epoch] = [g["lr"] for g in trainer.optimizer.param_groups]
        self.requires_grad[epoch] = {n: p.requires_grad for n, p in trainer.model.named_parameters()}
        self.fresh_state[epoch] = {
            n: len(trainer.optimizer.state.get(p, {})) == 0 for n, p in trainer.model.named_parameters()
        }

    def on_train_end(self, trainer, results):
        self.weights["end"] = _snapshot(trainer.model)
        self.lrs["end"] = [g["lr"] for g in trainer.optimizer.param_groups]


def _train(make_config, blobs, model, *, epochs=1, callbacks=(), weight_decay=0.1, scheduler=None, **transfer):
    builder = make_config(epochs=epochs, learning_rate=LR).with_optimizer(weight_decay=weight_decay)
    builder = builder.with_section("transfer", **transfer).with_tracking(write_run_dir=False)
    if scheduler:
        builder = builder.with_scheduler(**scheduler)
    trainer = Trainer(model, None, builder.build(), TASK, callbacks=list(callbacks))
    trainer.train(*blobs)
    return trainer


def test_freeze_and_unfreeze_patterns_keep_frozen_weights_bitwise_equal(make_config, blobs):
    model = _net()
    before = _snapshot(model)
    # Weight decay is on: a frozen matrix must not be decayed either.
    trainer = _train(make_config, blobs, model, freeze=["embed", "layers.*"], unfreeze=["layers.2.norm"])
    after = _snapshot(model)
    for prefix in ["embed", "layers.0", "layers.1", "layers.2.lin"]:
        assert not any(_moved(before, after, prefix)), prefix
    assert all(_moved(before, after, "layers.2.norm")) and all(_moved(before, after, "head"))
    # Only what ever trains is in the optimizer, and the model's flags come back as they were.
    in_optimizer = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for p in [*model.layers[2].norm.parameters(), *model.head.parameters()]}
    assert all(p.requires_grad for p in model.parameters())


def test_unknown_pattern_is_a_config_error_showing_real_names(make_config, blobs):
    with pytest.raises(ConfigError) as info:
        _train(make_config, blobs, _net(), freeze=["backbone.*"])
    message = str(info.value)
    assert "transfer.freeze" in message and "'backbone.*'" in message
    assert "embed.weight" in message and "head.bias" in message  # real names to pick from
    with pytest.raises(ConfigError, match=r"transfer.unfreeze_at_epoch.2: pattern 'layer.9'"):
        TransferSchedule(_net(), _section(unfreeze_at_epoch={2: ["layer.9"]}))
    with pytest.raises(ConfigError, match="would ever train"):
        TransferSchedule(_net(), _section(freeze=["*"]))


def _section(**fields):
    from trainengine.config._sections import TransferSection

    return TransferSection(**fields)


def test_gradual_unfreezing_starts_a_layer_at_its_epoch_with_fresh_optimizer_state(make_config, blobs):
    model = _net()
    rec = Recorder()
    _train(
        make_config,
        blobs,
        model,
        epochs=2,
        callbacks=[rec],
        freeze=["embed", "layers"],
        unfreeze_at_epoch={1: ["layers.2"]},
    )
    w0, w1, end = rec.weights[0], rec.weights[1], rec.weights["end"]
    # Epoch 0: the head alone; layers.2 frozen (no gradient, no moments, no decay).
    assert all(_moved(w0, w1, "head")) and not any(_moved(w0, w1, "layers.2"))
    assert rec.requires_grad[0]["layers.2.lin.weight"] is False
    # Epoch 1: layers.2 trains, starting from fresh optimizer state; the rest stays frozen.
    assert rec.requires_grad[1]["layers.2.lin.weight"] is True
    assert rec.fresh_state[1]["layers.2.lin.weight"] and not rec.fresh_state[1]["head.weight"]
    assert all(_moved(w1, end, "layers.2")) and all(_moved(w1, end, "head"))
    for prefix in ["embed", "layers.0", "layers.1"]:
        assert not any(_moved(w0, end, prefix)), prefix


def test_discriminative_learning_rates_decay_by_depth_and_follow_the_schedule(make_config, blobs):
    seen: list[list[float]] = []

    class Lrs:
        def on_step_end(self, trainer, output):
            seen.append(trainer.scheduler.get_last_lr())

    rec = Recorder()
    trainer = _train(
        make_config,
        blobs,
        _net(),
        callbacks=[rec, Lrs()],
        lr_decay=0.5,
        scheduler={"name": "cosine", "warmup_steps": 3},
    )
    groups = trainer.optimizer.param_groups
    # Two optimizer groups (decayed matrices, the rest) per layer group, input first.
    assert [g["transfer_group"] for g in groups] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    expected = [LR * 0.5 ** (4 - g["transfer_group"]) for g in groups]
    assert [g["initial_lr"] for g in groups] == pytest.approx(expected, rel=1e-12)
    # Warmup and cosine scale every group alike: after the warmup each is at its own peak.
    assert seen[2] == pytest.approx(expected, rel=1e-12)  # after step 3 = the first at the peak
    for lrs in seen:
        assert lrs == pytest.approx([e * lrs[-1] / expected[-1] for e in expected], rel=1e-9, abs=1e-15)
    assert seen[-1][-1] < seen[2][-1]  # the cosine did decay


def test_layer_groups_from_patterns_and_from_models():
    model = _net()
    groups = find_layer_groups(model, ["*", "layers.2", "head"])
    assert [g.label for g in groups] == ["*", "layers.2", "head"]
    assert groups[0].names[:2] == ("embed.weight", "embed.bias") and "layers.1.lin.bias" in groups[0].names
    assert all(n.startswith("layers.2.") for n in groups[1].names)
    assert [g.label for g in find_layer_groups(model)] == ["embeddings", "layers.0", "layers.1", "layers.2", "head"]
    # The built-in GPT: its tied embedding / lm_head weight goes to the head (nearest the output).
    gpt = GPT(GPTConfig(vocab_size=32, max_seq_len=8, d_model=16, n_heads=2, n_layers=2))
    gpt_groups = find_layer_groups(gpt)
    assert [g.label for g in gpt_groups] == ["embeddings", "transformer.h.0", "transformer.h.1", "head"]
    assert "transformer.wpe.weight" in gpt_groups[0].names
    assert "transformer.wte.weight" in gpt_groups[-1].names and "transformer.ln_f.weight" in gpt_groups[-1].names
    # No block list: the top-level children are the groups.
    seq = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
    assert [g.label for g in find_layer_groups(seq)] == ["0", "2"]


def test_progressive_three_phases(make_config, blobs):
    model = _net()
    rec = Recorder()
    trainer = _train(make_config, blobs, model, epochs=3, callbacks=[rec], schedule="progressive", phase_epochs=[1, 1])
    w = rec.weights
    # Phase 1 (epoch 0): the head alone at training.learning_rate.
    assert all(_moved(w[0], w[1], "head"))
    for prefix in GROUPS[:-1]:
        assert not any(_moved(w[0], w[1], prefix)), prefix
    # Phase 2 (epoch 1): the top half of the 4 backbone groups (layers.1, layers.2) and the head.
    for prefix in ["layers.1", "layers.2", "head"]:
        assert all(_moved(w[1], w[2], prefix)), prefix
    for prefix in ["embed", "layers.0"]:
        assert not any(_moved(w[1], w[2], prefix)), prefix
    # Phase 3 (epoch 2): everything.
    for prefix in GROUPS:
        assert all(_moved(w[2], w["end"], prefix)), prefix
    depth = [4 - g["transfer_group"] for g in trainer.optimizer.param_groups]
    head = [i for i, d in enumerate(depth) if d == 0]
    assert [rec.lrs[0][i] for i in head] == pytest.approx([LR, LR])
    assert rec.lrs[1] == pytest.approx([LR * 0.5**d for d in depth], rel=1e-12)
    assert rec.lrs[2] == pytest.approx([LR * 0.5**d * 0.1 for d in depth], rel=1e-12)
    # The schedule's base lrs moved with the phase: its steps kept the phase-3 rates.
    assert rec.lrs["end"] == pytest.approx(rec.lrs[2], rel=1e-12)


def test_resume_mid_phase_restores_frozen_set_and_lrs(make_config, blobs, tmp_path: Path):
    def config(out: str):
        return (
            make_config(epochs=3, learning_rate=LR, batch_size=32)  # 5 steps an epoch
            .with_optimizer(weight_decay=0.1)
            .with_section("transfer", schedule="progressive", phase_epochs=[1, 1], lr_decay=0.3)
            .with_checkpointing(enabled=True, save_every_n_steps=8, save_every_n_epochs=None, keep_last_n=5)
            .with_tracking(output_dir=str(tmp_path / out), run_name="r", write_run_dir=True)
            .build()
        )

    full_model = _net()
    full = Trainer(full_model, None, config("full"), TASK)
    full.train(*blobs)
    step8 = sorted((tmp_path / "full").rglob("*000000008*"))
    assert step8, list((tmp_path / "full").rglob("*"))

    seen = {}

    class AtStart:
        def on_train_start(self, trainer):
            seen["epoch"] = trainer.state.epoch
            seen["trains"] = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
            seen["lrs"] = [g["lr"] for g in trainer.optimizer.param_groups]

    resumed_model = _net()
    resumed = Trainer(resumed_model, None, config("full"), TASK, callbacks=[AtStart()])
    resumed.train(*blobs, resume_from=step8[0])
    # Step 8 is mid epoch 1: phase 2, so layers.1, layers.2 and the head train.
    assert seen["epoch"] == 1
    assert seen["trains"] == {n for n, _ in resumed_model.named_parameters() if n.split(".")[0] == "head"} | {
        n for n, _ in resumed_model.named_parameters() if n.startswith(("layers.1.", "layers.2."))
    }
    depth = [4 - g["transfer_group"] for g in resumed.optimizer.param_groups]
    assert seen["lrs"] == pytest.approx([LR * 0.3**d for d in depth], rel=1e-12)
    # ...and the resumed run ends exactly where the uninterrupted one did.
    for key, value in full_model.state_dict().items():
        assert torch.equal(value, resumed_model.state_dict()[key]), key
