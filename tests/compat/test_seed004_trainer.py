"""Seed 004's ProductionTrainer (seed 004 lines 1257-1604) over trainengine.Trainer.

The seed shows the class, not a script using it; these tests use it as the class is written:
``ProductionTrainer(model, train_loader, val_loader, config)``, ``get_default_config()``,
``train()``, ``evaluate()``, ``save_checkpoint(filename, is_best)``, ``load_checkpoint(path)``.
A tiny linearly separable data set stands in for the user's DataLoaders.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from trainengine import TrainingConfig
from trainengine.compat.seed004 import ProductionTrainer
from trainengine.errors import CheckpointError, ConfigError, TrainEngineError

# The keys of the seed's get_default_config() (seed 004 lines 1333-1370), in its order.
SEED_KEYS = [
    "learning_rate", "weight_decay", "optimizer", "betas", "scheduler", "warmup_steps", "total_steps",
    "min_lr_ratio", "epochs", "accumulation_steps", "grad_clip", "use_amp", "dropout", "label_smoothing",
    "checkpoint_dir", "save_every", "keep_last_k", "early_stopping", "patience", "use_wandb", "project_name", "seed",
]  # fmt: skip


def _loaders(n_train: int = 48, batch_size: int = 16) -> tuple[DataLoader, DataLoader]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_train + 32, 4, generator=g)
    y = (x[:, 0] - x[:, 1] > 0).long()
    # shuffle=False: the data order is then the same in a resumed run (a user's unseeded
    # shuffling loader is not something the engine can replay).
    train = DataLoader(TensorDataset(x[:n_train], y[:n_train]), batch_size=batch_size, shuffle=False)
    return train, DataLoader(TensorDataset(x[n_train:], y[n_train:]), batch_size=16)


def _model() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def _config(tmp_path: Path, **changes) -> dict:
    config = ProductionTrainer.get_default_config()
    config.update(epochs=2, warmup_steps=1, learning_rate=0.05, use_wandb=False, save_every=1)
    config.update(checkpoint_dir=str(tmp_path / "checkpoints"), **changes)
    return config


@pytest.fixture
def base(tmp_path) -> TrainingConfig:
    """Where the run directory goes and no console output (what the seed dict does not cover)."""
    return TrainingConfig(tracking={"output_dir": str(tmp_path / "runs"), "progress": "off", "experiment_db": False})


def test_default_config_has_the_seeds_keys_and_maps_onto_the_engine(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the seed's checkpoint_dir is ./checkpoints
    default = ProductionTrainer.get_default_config()
    assert list(default) == SEED_KEYS
    # 200 batches x 100 epochs = 20000 steps > total_steps 10000: the run stops at total_steps.
    x = torch.randn(200, 4)
    loader = DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=1)
    cfg = ProductionTrainer(_model(), loader, loader, default).training_config
    t, o, s, c, tr = cfg.training, cfg.optimizer, cfg.scheduler, cfg.checkpointing, cfg.tracking
    assert (t.learning_rate, t.epochs, t.max_steps, t.max_grad_norm, t.label_smoothing) == (1e-3, 100, 10000, 1.0, 0.1)
    assert (t.precision, t.early_stopping_patience, t.monitor, t.seed) == ("auto", 10, "val/loss", 42)
    assert (o.name, o.weight_decay, o.beta1, o.beta2) == ("adamw", 1e-4, 0.9, 0.999)
    assert (s.name, s.warmup_steps, s.min_lr_ratio) == ("cosine", 1000, 0.01)
    assert (c.enabled, c.checkpoint_dir, c.save_every_n_epochs, c.keep_last_n) == (True, "./checkpoints", 10, 5)
    assert (tr.backends, tr.project) == (["wandb"], "my-project")
    assert (tmp_path / "checkpoints").is_dir()  # created at construction, as the seed does


def test_other_seed_choices_map_too(tmp_path):
    train, _ = _loaders()
    cfg = ProductionTrainer(
        _model(), train, None, _config(tmp_path, scheduler="onecycle", optimizer="sgd", use_amp=False, grad_clip=0)
    ).training_config
    assert (cfg.scheduler.name, cfg.scheduler.warmup_steps) == ("one_cycle", 0)  # one-cycle ramps by itself
    assert (cfg.optimizer.name, cfg.optimizer.momentum, cfg.optimizer.nesterov) == ("sgd", 0.9, True)
    assert (cfg.training.precision, cfg.training.max_grad_norm) == ("fp32", None)
    assert cfg.training.early_stopping_patience is None  # no validation data: no early stopping (as the seed)


@pytest.mark.parametrize(("rank", "world_size"), [(0, 2), (1, 1)])
def test_a_rank_or_world_size_that_is_not_this_process_is_refused(tmp_path, rank, world_size):
    # Several processes are DDP under torchrun (tests/distributed); outside it they would train alone.
    train, val = _loaders()
    with pytest.raises(ConfigError, match=f"world_size={world_size}") as info:
        ProductionTrainer(_model(), train, val, _config(tmp_path), rank=rank, world_size=world_size)
    assert "does not match this process (RANK=0, WORLD_SIZE=1)" in str(info.value)
    assert f"torchrun --nproc-per-node {world_size}" in str(info.value)


def test_unknown_key_and_too_long_warmup_say_how_to_fix(tmp_path):
    train, val = _loaders()
    with pytest.raises(ConfigError, match="unknown key 'learning_rte' — did you mean 'learning_rate'"):
        ProductionTrainer(_model(), train, val, {"learning_rte": 1e-3, "checkpoint_dir": str(tmp_path)})
    # The seed's default warmup (1000 steps) on a 6-step run.
    with pytest.raises(ConfigError, match="warmup_steps=1000 must be smaller than the run's 6 optimizer steps"):
        ProductionTrainer(_model(), train, val, _config(tmp_path, warmup_steps=1000))


def test_evaluate_reports_loss_and_percent_accuracy_of_the_model(tmp_path, base):
    train, val = _loaders()
    model = _model()
    trainer = ProductionTrainer(model, train, val, _config(tmp_path, label_smoothing=0.0), training_config=base)
    metrics = trainer.evaluate()  # before train(): the model as given
    x, y = val.dataset.tensors
    with torch.no_grad():
        logits = model(x)
    assert metrics["accuracy"] == pytest.approx(100.0 * (logits.argmax(1) == y).float().mean().item())
    assert metrics["loss"] == pytest.approx(nn.functional.cross_entropy(logits, y).item(), rel=1e-5)
    assert ProductionTrainer(_model(), train, None, _config(tmp_path)).evaluate() is None


def test_train_save_load_and_resume_through_the_engines_checkpoints(tmp_path, base):
    train, val = _loaders()
    config = _config(tmp_path)
    trainer = ProductionTrainer(_model(), train, val, config, training_config=base)
    before = trainer.evaluate()
    results = trainer.train()
    after = trainer.evaluate()
    assert (trainer.epoch, trainer.global_step) == (2, 6)
    assert after["loss"] < before["loss"]
    assert trainer.best_val_loss == min(r["val/loss"] for r in results["history"]["val"])
    assert trainer.optimizer.param_groups[0]["lr"] < 0.05 * 0.02  # the cosine reached its floor (1% of the peak)

    # save_checkpoint writes the engine's pickle-free folder (safetensors + JSON), never a .pth.
    path = trainer.save_checkpoint("final.pth", is_best=True)
    ckpt_dir = Path(config["checkpoint_dir"])
    assert path is not None and path.parent == ckpt_dir / "final"
    assert (ckpt_dir / "best_model").is_dir() and not list(ckpt_dir.rglob("*.pth"))
    assert {f.suffix for f in path.iterdir()} == {".safetensors", ".json"}

    # load_checkpoint with the seed's file name: weights, epoch, step and best loss are back.
    loaded = ProductionTrainer(_model(), train, val, config, training_config=base)
    loaded.load_checkpoint(ckpt_dir / "final.pth")
    assert (loaded.epoch, loaded.global_step, loaded.best_val_loss) == (2, 6, trainer.best_val_loss)
    for a, b in zip(loaded.model.state_dict().values(), trainer.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert loaded.evaluate() == after

    # Resuming from the periodic checkpoint of epoch 1 ends exactly where the straight run ended.
    resumed = ProductionTrainer(_model(), train, val, config, training_config=base)
    resumed.load_checkpoint(ckpt_dir / "ckpt-000000003")
    assert (resumed.epoch, resumed.global_step) == (1, 3)
    resumed.train()
    assert resumed.global_step == 6
    for a, b in zip(resumed.model.state_dict().values(), trainer.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)

    # A second train() continues only from a checkpoint.
    with pytest.raises(TrainEngineError, match="load_checkpoint"):
        trainer.train()


class _Planted:
    """Unpickling this would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_file_is_refused_and_never_unpickled(tmp_path):
    train, val = _loaders()
    trainer = ProductionTrainer(_model(), train, val, _config(tmp_path))
    marker = tmp_path / "unpickled"
    evil = tmp_path / "checkpoint.pth"
    evil.write_bytes(pickle.dumps({"model_state_dict": _Planted(marker)}))
    with pytest.raises(CheckpointError, match="trainengine checkpoints import"):
        trainer.load_checkpoint(evil)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        trainer.load_checkpoint(tmp_path / "missing.pth")


def test_save_checkpoint_before_train_says_why(tmp_path):
    train, val = _loaders()
    with pytest.raises(TrainEngineError, match="call it after train"):
        ProductionTrainer(_model(), train, val, _config(tmp_path)).save_checkpoint()


def test_seed004_load_checkpoint_returns_epoch_and_best_val_loss(tmp_path):
    # Seed 004 l.878-905: `epoch, best = load_checkpoint(path, model, optimizer, scheduler)`.
    from trainengine.compat.seed002 import CheckpointManager
    from trainengine.compat.seed004 import load_checkpoint

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    manager = CheckpointManager(tmp_path / "ckpts", keep_best_n=2)
    path = manager.save(model, optimizer, None, step=7, val_loss=0.25, epoch=3)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    fresh = torch.nn.Linear(3, 2)
    epoch, best_val_loss = load_checkpoint(path, fresh, torch.optim.SGD(fresh.parameters(), lr=0.1))
    assert (epoch, best_val_loss) == (3, 0.25)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in saved.items())
