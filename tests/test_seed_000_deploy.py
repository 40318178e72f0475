"""Seed 000's "Export & Deployment" and "Monitor Model Performance in Production" examples, run
with only their imports changed (the registry examples are in tests/registry/test_registry_seed.py).

The set-up (a small GPT trained for a few steps, as in the seed's language-model example) is
test scaffolding; the calls to create_export_bundle are the seed's own.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainengine import TaskSpec, Trainer, TrainingConfigBuilder, create_export_bundle
from trainengine.data import load_builtin
from trainengine.export import verify_bundle
from trainengine.models import GPT, GPTConfig

pytest.importorskip("onnxruntime")


@pytest.fixture
def trained(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    splits = load_builtin("pystdlib", max_length=32, max_train_samples=64, max_val_samples=16)
    model_config = GPTConfig(vocab_size=256, max_seq_len=32, d_model=32, n_heads=2, n_layers=1)
    model = GPT(model_config)
    config = TrainingConfigBuilder.quick_prototype().with_training(max_steps=4).with_tracking(progress="off").build()
    task_spec = TaskSpec.language_modeling(name="wikitext")
    Trainer(model, model_config, config, task_spec).train(splits.train, splits.val)
    return model, model_config, task_spec, config


def test_export_complete_bundle(trained):
    model, model_config, task_spec, config = trained
    export_dir = create_export_bundle(
        model=model,
        config=model_config,
        task_spec=task_spec,
        training_config=config,
        formats=["onnx", "torchscript", "pytorch"],
        output_dir="./exports",
    )
    # "Complete bundle": 3 formats, task spec, training config, inference script, Dockerfile, README.
    names = {p.name for p in Path(export_dir).iterdir()}
    assert {
        "model.onnx",
        "model.torchscript.pt",
        "model.safetensors",
        "task_spec.json",
        "training_config.yaml",
        "inference.py",
        "Dockerfile",
        "README.md",
    } <= names
    assert Path(export_dir).parent.resolve() == Path("exports").resolve() and Path(export_dir).name.startswith("model_")
    assert verify_bundle(export_dir) == []
    spec = json.loads((Path(export_dir) / "model_config.json").read_text())["spec"]
    assert spec == {"architecture": "gpt", "kwargs": json.loads(json.dumps(vars(model_config)))}


def test_export_includes_monitoring_config(trained):
    model, model_config, task_spec, config = trained
    export_dir = create_export_bundle(
        model=model,
        config=model_config,
        task_spec=task_spec,
        training_config=config,
        formats=["onnx"],  # the seed's "..."
        monitoring_config={
            "latency_threshold_ms": 100,
            "error_rate_threshold": 0.01,
            "drift_threshold": 0.2,
            "alert_email": "team@example.com",
        },
    )
    monitoring = json.loads((Path(export_dir) / "monitoring.json").read_text())
    assert monitoring["latency_threshold_ms"] == 100 and monitoring["alert_email"] == "team@example.com"
    assert "100" in (Path(export_dir) / "README.md").read_text()
