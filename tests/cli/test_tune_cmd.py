"""`trainengine tune` (a study that continues when run again, workers, a live table) and `trainengine lr-find`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import optuna
import pytest
import yaml

from trainengine.cli.main import main


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    config = {
        "data": {"dataset": "digits", "max_train_samples": 256, "max_val_samples": 64},
        "training": {"max_steps": 6, "eval_interval_steps": 3, "eval_every_epoch": False, "batch_size": 32},
        "tracking": {"progress": "off", "output_dir": str(tmp_path / "runs"), "experiment_name": "cli"},
    }
    space = {
        "training.learning_rate": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
        "training.batch_size": {"type": "categorical", "choices": [16, 32]},
    }
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    return {"config": tmp_path / "base.yaml", "space": tmp_path / "space.yaml", "runs": tmp_path / "runs"}


def test_tune_runs_a_study_and_running_it_again_continues_it(capsys, files):
    args = ["tune", "--config", str(files["config"]), "--space", str(files["space"]), "--sampler", "random"]
    code, out, err = _run(capsys, *args, "--trials", "2")
    assert code == 0, err
    study_dir = files["runs"] / "cli" / "tune-cli"
    assert "best trial" in out and f"study directory: {study_dir}" in out
    assert "trial-0001" in out  # the trials table (printed once when not on a terminal)
    best = re.search(r"trainengine train --config (\S+)", out)
    assert best is not None and Path(best.group(1)) == study_dir / "best_config.yaml"
    assert yaml.safe_load(Path(best.group(1)).read_text())["data"]["dataset"] == "digits"

    code, out, err = _run(capsys, *args, "--trials", "3")  # the same command, a larger total
    assert code == 0, err
    study = optuna.load_study(study_name="tune-cli", storage=f"sqlite:///{study_dir / 'study.db'}")
    assert sorted(t.number for t in study.get_trials()) == [0, 1, 2]  # one more trial, numbered on
    assert json.loads((study_dir / "study_summary.json").read_text())["num_trials"] == 3


def test_a_bad_space_is_one_listed_error_before_any_trial(capsys, files, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"training.learnig_rate": {"type": "float", "low": 1e-3, "high": 1e-1}}))
    code, _, err = _run(capsys, "tune", "--config", str(files["config"]), "--space", str(bad), "--trials", "2")
    assert code == 2
    assert err.startswith("error:") and "learning_rate" in err  # the did-you-mean names the real key
    assert not (files["runs"] / "cli" / "tune-cli").exists()


def test_lr_find_prints_and_writes_a_suggested_learning_rate(capsys, files, tmp_path):
    out_dir = tmp_path / "lr"
    code, out, err = _run(
        capsys, "lr-find", "--config", str(files["config"]), "--min-lr", "1e-4", "--max-lr", "10",
        "--steps", "40", "--output-dir", str(out_dir),
    )  # fmt: skip
    assert code == 0, err
    match = re.search(r"suggested learning rate: (\S+)", out)
    assert match is not None
    suggested = float(match.group(1))
    assert 1e-4 <= suggested <= 10
    assert yaml.safe_load((out_dir / "lr_find.yaml").read_text()) == {"training": {"learning_rate": suggested}}
    assert (out_dir / "lr_find.png").read_bytes()[:4] == b"\x89PNG"
    assert f"trainengine train --config {files['config']} --set training.learning_rate={match.group(1)}" in out
    curve = json.loads((out_dir / "lr_find.json").read_text())
    assert curve["suggested_lr"] == suggested and len(curve["lrs"]) == len(curve["losses"]) <= 40
