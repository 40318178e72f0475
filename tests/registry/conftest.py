"""Shared fixtures for registry tests: one real training run (checkpoint + run directory), small
weights files and a hand-made export bundle following the deploy contract."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch


@dataclass(frozen=True)
class TrainedRun:
    checkpoint: Path  # ckpt-* folder written by CheckpointManager during training
    run_dir: Path  # run.json + model.safetensors + config.yaml
    run_facts: dict


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> TrainedRun:
    """A 5-step MLP run on the digits with checkpointing: trained once per test session."""
    from trainengine.cli._train import run_training
    from trainengine.config import TrainingConfigBuilder

    root = tmp_path_factory.mktemp("trained")
    config = (
        TrainingConfigBuilder.quick_prototype()
        .with_data(dataset="digits", max_train_samples=200, max_val_samples=100)
        .with_model(architecture="mlp", hidden_dims=[16])
        .with_training(max_steps=5, device="cpu")
        .with_checkpointing(checkpoint_dir=str(root / "ck"), save_every_n_steps=5)
        .with_tracking(output_dir=str(root / "runs"), progress="off", experiment_db=False)
        .build()
    )
    results = run_training(config)
    run_dir = Path(results["run_dir"])
    checkpoints = sorted((root / "ck").glob("ckpt-*"))
    assert checkpoints, "training wrote no checkpoint"
    return TrainedRun(checkpoints[-1], run_dir, json.loads((run_dir / "run.json").read_text()))


MLP_SPEC = {"architecture": "mlp", "kwargs": {"input_dim": 6, "output_dim": 3, "hidden_dims": [8], "dropout": 0.0}}


def tiny_mlp(seed: int = 0) -> torch.nn.Module:
    from trainengine.models import rebuild_model

    torch.manual_seed(seed)
    return rebuild_model(MLP_SPEC).eval()


@pytest.fixture
def weights_pt(tmp_path) -> Path:
    """A torch.save'd state dict of a tiny MLP (MLP_SPEC, seed 0)."""
    path = tmp_path / "src" / "weights.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tiny_mlp(0).state_dict(), path)
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_bundle(
    folder: Path, model: torch.nn.Module, spec: dict | None = MLP_SPEC, *, with_manifest: bool = True
) -> Path:
    """An export bundle laid out as docs say (pytorch format only); manifest.json written last."""
    from safetensors.torch import save_model

    folder.mkdir(parents=True)
    save_model(model, str(folder / "model.safetensors"))
    (folder / "model_config.json").write_text(
        json.dumps({"spec": spec, "class": type(model).__name__, "config": None, "num_parameters": 1})
    )
    (folder / "task_spec.json").write_text(json.dumps({"task_type": "classification", "num_classes": 3}))
    (folder / "training_config.yaml").write_text("training:\n  learning_rate: 0.01\n")
    files = {p.name: _sha(p) for p in sorted(folder.iterdir())}
    if with_manifest:
        manifest = {
            "format_version": 1,
            "name": "model",
            "task_type": "classification",
            "model_spec": spec,
            "formats": {"pytorch": {"files": ["model.safetensors", "model_config.json"]}},
            "lineage": {"run_id": "run-42", "git_commit": "abc123", "data_fingerprint": "fp-1", "checkpoint": None},
            "files": files,
        }
        (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


# Test modules cannot import this conftest (--import-mode=importlib): helpers are fixtures.
@pytest.fixture
def mlp_spec() -> dict:
    return json.loads(json.dumps(MLP_SPEC))


@pytest.fixture
def make_mlp():
    """Factory: ``make_mlp(seed) -> MLP`` built from MLP_SPEC in eval mode."""
    return tiny_mlp


@pytest.fixture
def open_registry(sql_db, tmp_path):
    """Factory: ``open_registry(name="models.db", **kwargs) -> ModelRegistry`` on this test's back-end.

    Runs each test using it on SQLite and on PostgreSQL (``sql_db``, tests/_postgres.py). A server
    database needs ``artifact_root=``: it defaults to where SQLite puts it beside the file
    (``<tmp_path>/<name stem>-artifacts``), so both back-ends' tests assert the same paths.
    """
    from trainengine.registry import ModelRegistry

    def open_(name: str = "models.db", **kwargs):
        if not sql_db.is_sqlite:
            file = tmp_path / name
            kwargs.setdefault("artifact_root", file.with_name(f"{file.stem}-artifacts"))
        return ModelRegistry(sql_db(name), **kwargs)

    return open_


@pytest.fixture
def bundle_factory():
    """Factory: ``bundle_factory(folder, model, spec=MLP_SPEC, with_manifest=True) -> folder``."""
    return make_bundle
