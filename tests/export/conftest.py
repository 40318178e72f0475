"""Shared fixtures: one trained digits run (with checkpoints) and its export bundle, made once."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory) -> Path:
    """A real `trainengine train` run on digits: 120 steps, checkpoints, run directory."""
    from trainengine.cli._train import run_training
    from trainengine.config import TrainingConfigBuilder

    root = tmp_path_factory.mktemp("export_run")
    config = (
        TrainingConfigBuilder.quick_prototype()
        .with_data(dataset="digits")
        .with_model(architecture="mlp", hidden_dims=[64])
        .with_training(max_steps=120, batch_size=32, learning_rate=3e-3, seed=0)
        .with_checkpointing(enabled=True, save_every_n_steps=60, save_every_n_epochs=None)
        .with_tracking(experiment_name="digits-mlp", output_dir=str(root / "runs"), progress="off", experiment_db=False)
        .build()
    )
    results = run_training(config)
    assert results["best_metric"] > 0.85  # a trained model: predictions mean something
    return Path(results["run_dir"])


@pytest.fixture(scope="session")
def digits_bundle(digits_run, tmp_path_factory) -> Path:
    """The run exported with every format and int8 quantization."""
    from trainengine.export import export_checkpoint

    out = tmp_path_factory.mktemp("export_bundle")
    return export_checkpoint(
        digits_run, formats=["onnx", "torchscript", "torch_export", "pytorch"], output_dir=out, quantize="dynamic-int8"
    )
