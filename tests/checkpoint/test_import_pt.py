"""``trainengine checkpoints import FILE.pt``: seed 002 / 004 ``torch.save`` checkpoints converted into
the pickle-free folder format with ``torch.load(weights_only=True)`` only; anything else refused."""

from __future__ import annotations

import json
import pickle
import random
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from trainengine.checkpoint import load_checkpoint, verify_checkpoint
from trainengine.checkpoint._import_pt import import_pt_checkpoint
from trainengine.cli.main import main
from trainengine.errors import CheckpointError


def _trained():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2)
    for _ in range(3):
        model(torch.randn(5, 4)).sum().backward()
        optimizer.step()
        scheduler.step()
    return model, optimizer, scheduler


def _seed002_file(path, model, optimizer, scheduler):
    # The seed's "complete checkpoint for resuming training" (seed 002 lines 997-1029), with plain values.
    checkpoint = {
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": optimizer.state_dict(),
        "scheduler_state_dict": scheduler.state_dict(),
        "step": 7000,
        "epoch": 3,
        "train_loss": 2.4,
        "val_loss": 2.1,
        "best_val_loss": 2.05,
        "config": {"d_model": 8, "n_layers": 2},
        "timestamp": "2024-11-17T14:32:15",
        "git_commit": "abc123",
        "pytorch_version": torch.__version__,
        "learning_rate": optimizer.param_groups[0]["lr"],
        "grad_norm": torch.tensor(0.75),
    }
    torch.save(checkpoint, path)


def test_a_seed_checkpoint_round_trips_into_fresh_objects(tmp_path):
    model, optimizer, scheduler = _trained()
    _seed002_file(tmp_path / "checkpoint_7000.pt", model, optimizer, scheduler)
    folder = import_pt_checkpoint(tmp_path / "checkpoint_7000.pt")
    assert folder == tmp_path / "checkpoint_7000" / "ckpt-000007000"
    assert verify_checkpoint(folder) == []
    assert not [p for p in folder.iterdir() if p.suffix not in (".json", ".safetensors")]

    fresh = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
    fresh_sched = torch.optim.lr_scheduler.StepLR(fresh_opt, step_size=2)
    meta = load_checkpoint(folder, fresh, fresh_opt, fresh_sched)
    assert (meta.step, meta.epoch) == (7000, 3)
    assert meta.metrics == {
        "train_loss": 2.4,
        "val_loss": 2.1,
        "best_val_loss": 2.05,
        "learning_rate": optimizer.param_groups[0]["lr"],
        "grad_norm": 0.75,
    }
    assert meta.config == {"d_model": 8, "n_layers": 2} and meta.git_commit == "abc123"
    assert meta.extra["imported_from"]["file"].endswith("checkpoint_7000.pt")
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    saved, loaded = optimizer.state_dict()["state"], fresh_opt.state_dict()["state"]
    assert all(torch.equal(saved[i]["exp_avg_sq"], loaded[i]["exp_avg_sq"]) for i in saved)
    assert fresh_sched.state_dict()["last_epoch"] == 3


def test_a_bare_state_dict_imports_under_the_given_step_and_output(tmp_path):
    model, _, _ = _trained()
    torch.save(model.state_dict(), tmp_path / "model.pt")  # seed 002 line 2341
    folder = import_pt_checkpoint(tmp_path / "model.pt", tmp_path / "out", step=12)
    assert folder == tmp_path / "out" / "ckpt-000000012"
    fresh = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    load_checkpoint(folder, fresh)
    assert torch.equal(fresh[0].weight, model[0].weight)
    with pytest.raises(CheckpointError, match=r"ckpt-000000012 already exists; pass overwrite=True"):
        import_pt_checkpoint(tmp_path / "model.pt", tmp_path / "out", step=12)
    assert import_pt_checkpoint(tmp_path / "model.pt", tmp_path / "out", step=12, overwrite=True) == folder
    import_pt_checkpoint(tmp_path / "model.pt", tmp_path / "out", step=13)
    assert sorted(p.name for p in (tmp_path / "out").glob("ckpt-*")) == ["ckpt-000000012", "ckpt-000000013"]


class _Pickled:  # a class a pickle would have to import and construct
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        # seed 004's "random_state" (lines 855-860): numpy arrays are not plain containers
        (
            lambda m: {"model_state_dict": m.state_dict(), "random_state": {"numpy_rng_state": np.random.get_state()}},
            "numpy",
        ),
        (lambda m: m, "Sequential"),  # torch.save(model, 'model.pt'): seed 002 line 2356
        (lambda m: {"model_state_dict": m.state_dict(), "extra": _Pickled()}, "print"),
    ],
    ids=["numpy-rng-state", "whole-module", "pickled-callable"],
)
def test_anything_weights_only_refuses_is_refused_with_the_reason(tmp_path, capsys, payload, reason):
    model, _, _ = _trained()
    torch.save(payload(model), tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"refused — torch.load\(weights_only=True\) cannot read it") as info:
        import_pt_checkpoint(tmp_path / "bad.pt")
    message = str(info.value)
    assert reason in message and "never unpickles" in message and "weights_only=False" not in message
    assert "this must never run" not in capsys.readouterr().out
    assert not (tmp_path / "bad").exists()


def test_files_without_weights_or_with_bad_fields_are_refused(tmp_path):
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="holds a list, not a dict"):
        import_pt_checkpoint(tmp_path / "list.pt")
    torch.save({"step": 3, "config": {}}, tmp_path / "noweights.pt")
    with pytest.raises(CheckpointError, match="no model weights .* found the keys config, step"):
        import_pt_checkpoint(tmp_path / "noweights.pt")
    torch.save({"model_state_dict": OrderedDict(w=torch.ones(1)), "step": -5}, tmp_path / "neg.pt")
    with pytest.raises(CheckpointError, match=r"'step' must be a non-negative whole number, got -5"):
        import_pt_checkpoint(tmp_path / "neg.pt")
    with pytest.raises(CheckpointError, match="no such file"):
        import_pt_checkpoint(tmp_path / "missing.pt")


def test_the_cli_imports_and_refuses(tmp_path, capsys):
    model, optimizer, scheduler = _trained()
    _seed002_file(tmp_path / "checkpoint_7000.pt", model, optimizer, scheduler)
    code = main(["checkpoints", "import", str(tmp_path / "checkpoint_7000.pt"), "--output", str(tmp_path / "ckpts")])
    assert code == 0
    assert f"-> {tmp_path / 'ckpts' / 'ckpt-000007000'}" in capsys.readouterr().out
    assert main(["checkpoints", "verify", str(tmp_path / "ckpts")]) == 0
    index = json.loads((tmp_path / "ckpts" / "index.json").read_text())
    assert [c["step"] for c in index["checkpoints"]] == [7000]

    with open(tmp_path / "pickled.pt", "wb") as fh:
        pickle.dump({"model_state_dict": {}, "rng": random.getstate}, fh)
    assert main(["checkpoints", "import", str(tmp_path / "pickled.pt")]) == 2
    assert "refused" in capsys.readouterr().err
