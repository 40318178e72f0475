"""`trainengine train` and `trainengine quickstart`: run directories, precedence, user errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import trainengine.cli._train as train_mod
from trainengine.cli.main import main
from trainengine.config import TrainingConfig, get_preset

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "--dataset",
    "digits",
    "--epochs",
    "1",
    "--output-dir",
    "tmp",
    "--set",
    "training.max_steps=5",
    "--set",
    "tracking.progress=plain",
]


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def captured(monkeypatch) -> list[Any]:
    """Record the config every `train` call resolves, and still train for real."""
    seen: list[Any] = []
    real = train_mod.run_training

    def recording(cfg, resume_from=None):
        seen.append(cfg)
        return real(cfg)

    monkeypatch.setattr(train_mod, "run_training", recording)
    return seen


@pytest.fixture
def no_training(monkeypatch) -> list[Any]:
    """Record the resolved config without training (for precedence tests)."""
    seen: list[Any] = []

    def fake(cfg, resume_from=None):
        seen.append(cfg)
        return {"run_dir": None}

    monkeypatch.setattr(train_mod, "run_training", fake)
    return seen


# -- a real tiny run --------------------------------------------------------------------------------


def test_train_writes_a_complete_run_directory(capsys, in_tmp, captured):
    code, out, err = _run(capsys, "train", *TINY, "--run-name", "r1")
    assert code == 0, err
    run_dir = in_tmp / "tmp" / "default" / "r1"
    for name in ("config.yaml", "run.json", "logs.jsonl", "model.safetensors"):
        assert (run_dir / name).is_file(), name
    run = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    assert run["status"] == "completed"
    assert run["results"]["steps"] == 5
    assert run["seed"] == 42
    # Every log line is a JSON object with a timestamp.
    records = [json.loads(line) for line in (run_dir / "logs.jsonl").read_text(encoding="utf-8").splitlines()]
    assert records and all("time" in r for r in records)
    # config.yaml is what ran, minus the run name (so re-running it as is gets a new run folder).
    (ran,) = captured
    saved = TrainingConfig.load(run_dir / "config.yaml")
    assert (saved.training.max_steps, saved.epochs, saved.data.dataset, saved.tracking.run_name) == (
        5,
        1,
        "digits",
        None,
    )
    saved.tracking.run_name = "r1"
    assert saved == ran
    code, _, err = _run(capsys, "train", "--config", str(run_dir / "config.yaml"))
    assert code == 0, err
    # The summary ends with the run directory.
    assert "tmp/default/r1" in out


def test_same_run_name_twice_is_refused(capsys, in_tmp):
    code, _, err = _run(capsys, "train", *TINY, "--run-name", "twice")
    assert code == 0, err
    before = (in_tmp / "tmp" / "default" / "twice" / "run.json").read_text(encoding="utf-8")
    code, _, err = _run(capsys, "train", *TINY, "--run-name", "twice")
    assert code == 2
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1
    assert "already exists" in error_lines[0] and "twice" in error_lines[0]
    assert "Traceback" not in err
    # The first run is left alone.
    assert (in_tmp / "tmp" / "default" / "twice" / "run.json").read_text(encoding="utf-8") == before


@pytest.mark.parametrize(
    ("output_dir", "blocked"),
    [
        ("ro/runs", "ro/runs"),  # the output folder cannot be created
        ("ro", "ro/default"),  # it exists, but its experiment folder cannot be created
        ("out", "out/default/r"),  # the experiment folder exists, the run's folder cannot be created
    ],
)
def test_unwritable_output_dir_is_one_error_line_naming_the_folder(
    capsys, caplog, in_tmp, permissions_enforced, output_dir, blocked
):
    """Issue 10 item 2: was rc 1 with an OSError traceback (and more from the callbacks' on_exception)."""
    (in_tmp / "ro").mkdir()
    (in_tmp / "out" / "default").mkdir(parents=True)
    for folder in (in_tmp / "ro", in_tmp / "out" / "default"):
        folder.chmod(0o555)
    before = sorted(in_tmp.rglob("*"))
    try:
        with permissions_enforced():  # a 0o555 folder refuses writes even to root (tests/_permissions.py)
            code, out, err = _run(capsys, "train", *TINY, "--output-dir", output_dir, "--run-name", "r")
    finally:
        for folder in (in_tmp / "ro", in_tmp / "out" / "default"):
            folder.chmod(0o755)
    assert code == 2, err
    assert "Traceback" not in out + err
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, err
    assert f"{blocked}: Permission denied" in error_lines[0]  # the folder that refused, as the user named it
    assert "--output-dir" in error_lines[0]  # and says what to change
    assert sorted(in_tmp.rglob("*")) == before  # nothing written anywhere


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", ""])
def test_run_names_that_escape_the_folder_are_rejected(capsys, in_tmp, no_training, name):
    code, _, err = _run(capsys, "train", *TINY, "--run-name", name)
    assert code == 2
    assert "tracking.run_name" in err
    assert "Traceback" not in err
    assert no_training == []  # refused before any training starts
    assert not (in_tmp / "x").exists() and not (in_tmp / "tmp").exists()


def test_experiment_name_is_validated_too(capsys, in_tmp, no_training):
    code, _, err = _run(capsys, "train", *TINY, "--experiment-name", "../../etc")
    assert code == 2 and "tracking.experiment_name" in err


@pytest.mark.skipif(
    not (REPO / "configs" / "digits_mlp.yaml").is_file(), reason="configs/digits_mlp.yaml not there yet"
)
def test_train_with_the_example_digits_config(capsys, in_tmp, captured):
    config = REPO / "configs" / "digits_mlp.yaml"
    code, _, err = _run(
        capsys,
        "train",
        "--config",
        str(config),
        "--max-steps",
        "3",
        "--output-dir",
        "tmp",
        "--run-name",
        "ex",
        "--set",
        "tracking.progress=plain",
    )
    assert code == 0, err
    run_dir = in_tmp / "tmp" / TrainingConfig.load(config).tracking.experiment_name / "ex"
    assert json.loads((run_dir / "run.json").read_text(encoding="utf-8"))["status"] == "completed"
    saved = TrainingConfig.load(run_dir / "config.yaml")
    saved.tracking.run_name = "ex"  # left out of config.yaml so a re-run gets its own folder
    assert saved == captured[0]


# -- precedence through the CLI ---------------------------------------------------------------------


def test_cli_precedence_flags_over_set_over_file_over_preset(capsys, in_tmp, no_training):
    (in_tmp / "run.yaml").write_text(
        "training:\n  epochs: 4\n  batch_size: 5\n  seed: 11\n  learning_rate: 0.002\ndata:\n  dataset: digits\n",
        encoding="utf-8",
    )
    code, _, err = _run(
        capsys,
        "train",
        "--preset",
        "baseline",
        "--config",
        "run.yaml",
        "--set",
        "training.epochs=6",
        "--set",
        "training.batch_size=7",
        "--epochs",
        "9",
        "--lr",
        "0.05",
    )
    assert code == 0, err
    (cfg,) = no_training
    assert cfg.epochs == 9  # flag > --set
    assert cfg.learning_rate == 0.05  # flag > file
    assert cfg.batch_size == 7  # --set > file
    assert cfg.training.seed == 11  # file > defaults
    assert cfg.checkpointing.enabled is True  # preset > defaults
    assert cfg.scheduler.warmup_ratio == get_preset("baseline")["scheduler"]["warmup_ratio"]


def test_every_common_flag_lands_in_its_field(capsys, in_tmp, no_training):
    code, _, err = _run(
        capsys,
        "train",
        "--learning-rate",
        "0.003",
        "--batch-size",
        "6",
        "--epochs",
        "2",
        "--max-steps",
        "8",
        "--experiment-name",
        "exp",
        "--run-name",
        "rn",
        "--seed",
        "3",
        "--dataset",
        "diabetes",
        "--device",
        "cpu",
        "--output-dir",
        "out",
    )
    assert code == 0, err
    (cfg,) = no_training
    assert (cfg.learning_rate, cfg.batch_size, cfg.epochs, cfg.training.max_steps, cfg.training.seed) == (
        0.003,
        6,
        2,
        8,
        3,
    )
    assert (cfg.tracking.experiment_name, cfg.tracking.run_name, cfg.tracking.output_dir) == ("exp", "rn", "out")
    assert (cfg.data.dataset, cfg.training.device) == ("diabetes", "cpu")


def test_bad_flag_value_is_a_user_error_naming_the_field(capsys, in_tmp, no_training):
    code, _, err = _run(capsys, "train", "--dataset", "digits", "--epochs", "0", "--set", "training.lernin_rate=1")
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert "did you mean training.learning_rate?" in err
    assert no_training == []
    code, _, err = _run(capsys, "train", "--dataset", "digits", "--epochs", "0")
    assert code == 2 and "training.epochs" in err and "flags" in err


def test_unknown_preset_and_missing_file_are_user_errors(capsys, in_tmp, no_training):
    code, _, err = _run(capsys, "train", "--preset", "prodution")
    assert code == 2 and "production" in err
    code, _, err = _run(capsys, "train", "--config", "missing.yaml")
    assert code == 2 and "missing.yaml" in err
    assert no_training == []


def test_train_without_a_dataset_is_a_clear_user_error(capsys, in_tmp):
    code, _, err = _run(capsys, "train", "--max-steps", "2", "--output-dir", "tmp")
    assert code == 2
    assert "data.dataset" in err and "digits" in err
    assert "Traceback" not in err


# -- quickstart -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_quickstart_one_epoch_prints_summary_and_run_directory(capsys, in_tmp):
    code, out, err = _run(capsys, "quickstart", "--epochs", "1", "--output-dir", "tmp")
    assert code == 0, err
    for fragment in ("best val/accuracy", "steps", "wall time", "throughput"):
        assert fragment in out, fragment
    line = [ln for ln in out.splitlines() if ln.startswith("quickstart:")][-1]
    run_dir = Path(line.split("run directory:", 1)[1].strip())
    assert run_dir.parent == Path("tmp") / "quickstart"
    assert (in_tmp / run_dir / "model.safetensors").is_file()
    run = json.loads((in_tmp / run_dir / "run.json").read_text(encoding="utf-8"))
    assert run["status"] == "completed"
    assert run["data"]["dataset"] == "digits"
    # One epoch of digits already learns something: far above chance (0.1).
    assert run["results"]["best_metric"] > 0.5


def test_version(capsys):
    code, out, _ = _run(capsys, "version")
    assert code == 0 and out.startswith("trainengine ") and "torch" in out


@pytest.mark.slow
def test_quickstart_reaches_95_percent(tmp_path):
    """What `make demo` runs: digits, >= 0.95 validation accuracy (its 3-minute budget: benchmarks/budgets.py)."""
    from trainengine.cli._quickstart import quickstart_config
    from trainengine.cli._train import run_training

    config = quickstart_config(output_dir=str(tmp_path))
    config.tracking.progress = "off"
    results = run_training(config)
    assert results["best_metric_name"] == "val/accuracy"
    assert results["best_metric"] >= 0.95
