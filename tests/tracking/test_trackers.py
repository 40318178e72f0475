"""ExperimentTracker back-ends, each read back with its own reader; TrainingLogger (seed 002)."""

from __future__ import annotations

import json
import sys
import time

import pytest
import torch

from trainengine import ConfigError, MissingExtraError
from trainengine.tracking import ExperimentTracker, TrainingLogger, read_jsonl


def _log_three(tracker):
    for step in range(3):
        tracker.log_metrics({"train/loss": 1.0 / (step + 1), "val/acc": torch.tensor(0.5 + step / 10)}, step=step)


def test_jsonl_backend_reads_back(tmp_path):
    with ExperimentTracker(
        "proj", "run1", {"lr": 1e-3}, backend="jsonl", log_dir=tmp_path, tags=["t"], notes="n"
    ) as tracker:
        _log_three(tracker)
        tracker.log_text("sample", "hello", step=2)
        (tmp_path / "w.bin").write_bytes(b"123")
        tracker.save_artifact(tmp_path / "w.bin", "weights")
    records = read_jsonl(tracker.directory / "tracker.jsonl")
    assert records[0] == {"type": "params", "params": {"lr": 1e-3}, "tags": ["t"], "notes": "n"}
    metrics = [r for r in records if r["type"] == "metrics"]
    assert [m["step"] for m in metrics] == [0, 1, 2]
    assert metrics[2]["metrics"]["train/loss"] == pytest.approx(1 / 3) and metrics[2]["metrics"][
        "val/acc"
    ] == pytest.approx(0.7)
    assert (tracker.directory / "artifacts" / "weights").read_bytes() == b"123"
    assert records[-1] == {"type": "finish", "status": "completed"}


def test_tensorboard_backend_reads_back_with_tensorboards_reader(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with ExperimentTracker("proj", "run1", {"lr": 1e-3}, backend="tensorboard", log_dir=tmp_path) as tracker:
        _log_three(tracker)
    acc = EventAccumulator(str(tracker.directory / "tensorboard"))
    acc.Reload()
    scalars = acc.Scalars("train/loss")
    assert [s.step for s in scalars] == [0, 1, 2]
    assert [round(s.value, 4) for s in scalars] == [1.0, 0.5, 0.3333]


def test_mlflow_backend_reads_back_with_mlflow_client(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with ExperimentTracker(
        "proj", "run1", {"lr": 1e-3, "model": {"d_model": 8}}, backend="mlflow", log_dir=tmp_path, tags=["base"]
    ) as tracker:
        _log_three(tracker)
        tracker.log_text("sample", "hello")
    backend = tracker.backends[0]
    client = MlflowClient(tracking_uri=backend.tracking_uri)
    run = client.get_run(backend.run_id)
    assert run.data.params == {"lr": "0.001", "model.d_model": "8"}
    assert run.info.status == "FINISHED" and run.info.run_name == "run1"
    history = client.get_metric_history(backend.run_id, "train/loss")
    assert sorted((m.step, round(m.value, 4)) for m in history) == [(0, 1.0), (1, 0.5), (2, 0.3333)]


def test_wandb_backend_offline_reads_back(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    with ExperimentTracker("proj", "run1", {"lr": 1e-3}, backend="wandb", log_dir=tmp_path) as tracker:
        _log_three(tracker)
    files = list((tracker.directory / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    # wandb's service process may still be appending the last records when finish() returns on a
    # loaded machine: poll the file (with a deadline) until the three history records are there.
    deadline = time.monotonic() + 30
    while True:
        history, config = _read_wandb_file(files[0])
        if len(history) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert [round(h["train/loss"], 4) for h in history] == [1.0, 0.5, 0.3333]
    assert [h["_step"] for h in history] == [0, 1, 2]
    assert config["lr"] == 1e-3


def _read_wandb_file(path):
    """(history records, config) of an offline ``.wandb`` file."""
    from wandb.proto import wandb_internal_pb2

    history: list[dict] = []
    config: dict = {}
    for raw in _wandb_records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in record.history.item})
        elif kind in ("config", "run"):  # the initial config travels inside the run record
            updates = record.config.update if kind == "config" else record.run.config.update
            config.update({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in updates})
    return history, config


def _wandb_records(path):
    """The records of an offline ``.wandb`` file: a 7-byte header, then LevelDB-log framing
    (32 KiB blocks; per record: CRC32C, length, type FULL/FIRST/MIDDLE/LAST, payload)."""
    import struct

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left  # block trailer padding
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk
            pending = b""
        elif kind == 0:
            pos += block - pos % block if pos % block else 0  # zero padding to the block end


def test_auto_picks_installed_and_configured_backends(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    tracker = ExperimentTracker("proj", "auto1", backend="auto", log_dir=tmp_path)
    tracker.finish()
    assert (
        tracker.backend_names[0] == "jsonl"
        and "mlflow" not in tracker.backend_names
        and "wandb" not in tracker.backend_names
    )


def test_unknown_backend_lists_the_available_ones(tmp_path):
    expected = "unknown tracker 'wandbb' — available: console, jsonl, mlflow, tensorboard, wandb"
    with pytest.raises(ConfigError, match=expected):
        ExperimentTracker("proj", "r", backend="wandbb", log_dir=tmp_path)


def test_only_rank_zero_writes(tmp_path):
    tracker = ExperimentTracker("proj", "r", backend="jsonl", log_dir=tmp_path, rank=1)
    tracker.log_metrics({"x": 1.0}, step=0)
    tracker.finish()
    assert not tracker.directory.exists()


def test_missing_extra_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard.compat.proto.event_pb2", None)
    with pytest.raises(MissingExtraError, match=r'pip install "trainengine\[track\]"'):
        ExperimentTracker("proj", "r", backend="tensorboard", log_dir=tmp_path)


def test_unsafe_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match="invalid experiment_name"):
        ExperimentTracker("proj", "../escape", backend="jsonl", log_dir=tmp_path)


def test_training_logger_seed_002_example(tmp_path, capsys):
    logger = TrainingLogger("shakespeare_experiment", log_dir=str(tmp_path))
    logger.log_start(config={"model": {"d_model": 512, "n_heads": 8}, "training": {"lr": 1e-4, "batch_size": 32}})
    info = logger.log_system_info()
    assert info["torch"] == torch.__version__ and info["cpu_count"] >= 1
    logger.log_hyperparams({"learning_rate": 1e-4, "batch_size": 32})
    for step in range(3):
        logger.log_metrics({"loss": torch.tensor(3.0 - step), "learning_rate": 1e-4}, step=step, prefix="train/")
    logger.log_metrics({"loss": float("nan")}, step=3, prefix="val/")
    logger.log_checkpoint(checkpoint_path="checkpoint_2.pt", step=2, metrics={"loss": 1.0})
    try:
        raise RuntimeError("boom")
    except RuntimeError as e:
        logger.log_error(e, step=3)
    logger.log_end(final_metrics={"best_val_loss": 2.1})
    logger.close()
    out = capsys.readouterr().out
    assert "step 1 | train/loss=2.0000 | train/learning_rate=0.0001" in out
    logs = read_jsonl(logger.log_file)
    assert [r["event"] for r in logs] == [
        "start",
        "system_info",
        "hyperparams",
        "metrics",
        "metrics",
        "metrics",
        "metrics",
        "checkpoint",
        "error",
        "end",
    ]
    train_losses = [log["metrics"]["train/loss"] for log in logs if "train/loss" in log.get("metrics", {})]
    assert train_losses == [3.0, 2.0, 1.0]
    assert logs[6]["metrics"] == {"val/loss": None}  # NaN stays visible as null, never a crash
    assert "RuntimeError: boom" in logs[8]["data"]["traceback"]
    assert all(
        set(r) == {"timestamp", "level", "event", "message", "experiment", "step", "epoch", "metrics", "data"}
        for r in logs
    )
