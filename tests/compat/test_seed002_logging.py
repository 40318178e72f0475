"""Seed 002's logging and tracking shapes (/work/shared/seeds/002_df445be1a0a37746.txt): structured
``TrainingLogger.info/warning/error/debug``, ``JSONFormatter`` on the standard logging module,
``ExperimentTracker("project", config)`` and ``backend="console"``; only the imports changed."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from trainengine.compat.seed002 import ExperimentTracker, JSONFormatter, MetricsTracker, TrainingLogger
from trainengine.errors import ConfigError
from trainengine.monitoring import MetricsEngine
from trainengine.tracking import read_jsonl


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def test_training_logger_messages_are_structured_records(capsys):
    logger = TrainingLogger("exp", log_dir="logs", level="INFO")
    grad_norm, global_step = torch.tensor(float("inf")), 12
    # seed 002 lines 1996, 2033, 2083: the standard logging calls
    logger.warning(f"Gradient norm is {grad_norm}, skipping step")
    logger.info("New best val loss: 2.1000", step=global_step, metrics={"val/loss": torch.tensor(2.1)}, ckpt="c1")
    logger.error("OOM", step=global_step, epoch=1)
    logger.debug("not recorded at level INFO")
    logger.log_end()
    logger.close()
    records = read_jsonl(logger.log_file)
    assert [(r["event"], r["level"]) for r in records] == [
        ("log", "WARNING"),
        ("log", "INFO"),
        ("log", "ERROR"),
        ("end", "INFO"),
    ]
    assert records[0]["message"] == "Gradient norm is inf, skipping step"
    assert records[1]["step"] == 12 and records[1]["metrics"] == {"val/loss": pytest.approx(2.1)}
    assert records[1]["data"] == {"ckpt": "c1"} and records[2]["epoch"] == 1
    out = capsys.readouterr().out
    assert "WARNING - Gradient norm is inf, skipping step" in out
    assert "INFO - New best val loss: 2.1000 | step=12 | val/loss=2.1" in out and "ckpt=c1" in out
    assert "not recorded" not in out


def test_debug_messages_are_kept_at_level_debug_and_bad_levels_are_refused():
    logger = TrainingLogger("dbg", log_dir="logs", log_to_console=False, level="DEBUG")
    logger.debug("tokens per batch", tokens=4096)
    logger.close()
    (record,) = read_jsonl(logger.log_file)
    assert (record["level"], record["data"]) == ("DEBUG", {"tokens": 4096})
    with pytest.raises(ValueError, match="invalid log level 'LOUD': use one of DEBUG, INFO, WARNING, ERROR"):
        TrainingLogger("x", log_to_console=False, log_to_file=False, level="LOUD")


def test_json_formatter_on_the_standard_logging_module(tmp_path):
    # seed 002 lines 182 and 230-234: a FileHandler with JSONFormatter, extra fields on the record
    log_file = tmp_path / "experiment.jsonl"
    logger = logging.getLogger("training.seed002_json")
    logger.setLevel(logging.INFO)
    file_handler = logging.FileHandler(log_file)
    file_handler.setFormatter(JSONFormatter())
    logger.addHandler(file_handler)
    try:
        msg = "Step 100 | train/loss=3.4200"
        logger.info(msg, extra={"metrics": {"train/loss": torch.tensor(3.42), "ppl": float("nan")}, "step": 100})
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(file_handler)
        file_handler.close()
    first, second = (json.loads(line) for line in log_file.read_text().splitlines())
    assert first["message"] == msg and first["level"] == "INFO" and first["step"] == 100
    assert first["metrics"] == {"train/loss": pytest.approx(3.42), "ppl": None}  # NaN as null: valid JSON
    assert first["timestamp"].endswith("+00:00") and first["logger"] == "training.seed002_json"
    assert second["level"] == "ERROR" and "RuntimeError: boom" in second["exception"]


@dataclass
class _Cfg:
    lr: float = 1e-3
    batch_size: int = 32


def test_tracker_takes_the_config_second_and_prints_to_the_console(capsys):
    # seed 002 line 33: ExperimentTracker("project", config); backend="console" (line 650)
    config = _Cfg()
    with ExperimentTracker("project", config, backend="console") as tracker:
        tracker.log_metrics({"train/loss": torch.tensor(3.42), "lr": 1e-3}, 100)
        tracker.save_artifact(__file__, "best_model")
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("tracking project/project-") and out[0].endswith("(console)")
    assert out[1] == "Step 100 | train/loss=3.42 | lr=0.001"
    assert out[2] == f"Artifact 'best_model' saved at: {Path(__file__)}"
    assert out[3].endswith("finished (completed)")
    assert tracker.backend == "console" and not Path("runs").exists()  # console writes no file
    # A dataclass config reaches the back-ends as a dict; the named form still works.
    named = ExperimentTracker("project", "run1", config, backend="jsonl")
    named.finish()
    params = json.loads((Path("runs/project/run1/tracker.jsonl")).read_text().splitlines()[0])["params"]
    assert params == {"lr": 1e-3, "batch_size": 32}


def test_tracker_refuses_a_config_given_twice():
    with pytest.raises(ConfigError, match=r"experiment_name must be a str, got dict and config= as well"):
        ExperimentTracker("project", {"lr": 1}, config={"lr": 2}, backend="console")


def test_metrics_tracker_is_the_metrics_engine():
    assert MetricsTracker is MetricsEngine
    assert sys.modules["trainengine.compat.seed002"].__all__  # the module lists its names
