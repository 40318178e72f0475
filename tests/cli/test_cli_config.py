"""`trainengine config presets|show|validate`, error exits and --debug."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from trainengine.cli._common import resolve_config
from trainengine.cli.main import main
from trainengine.config import PRESETS, TrainingConfig, TrainingSection
from trainengine.errors import ConfigError

PRESET_NAMES = ["quick_prototype", "baseline", "production", "low_memory", "prm_lora"]


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def good_yaml(tmp_path) -> Path:
    path = tmp_path / "good.yaml"
    path.write_text("training:\n  epochs: 2\n  learning_rate: 0.01\ndata:\n  dataset: digits\n", encoding="utf-8")
    return path


@pytest.fixture
def bad_yaml(tmp_path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "training:\n  learning_rate: -1\n  batch_size: 0\n  learnin_rate: 3\noptimizer:\n  beta1: 2\n",
        encoding="utf-8",
    )
    return path


# -- presets ---------------------------------------------------------------------------------------


def test_config_presets_lists_every_preset(capsys):
    code, out, err = _run(capsys, "config", "presets")
    assert code == 0, err
    for name in PRESET_NAMES:
        assert name in out
    assert set(PRESETS) == set(PRESET_NAMES)
    # Each row says what the preset is for (the first line of its docstring).
    assert "10 epochs" in out and "20 epochs" in out


# -- show ------------------------------------------------------------------------------------------


def test_config_show_prints_yaml_that_loads_back(capsys, tmp_path):
    code, out, err = _run(capsys, "config", "show", "--preset", "baseline", "--set", "training.epochs=7")
    assert code == 0, err
    path = tmp_path / "shown.yaml"
    path.write_text(out, encoding="utf-8")
    cfg = TrainingConfig.load(path)
    assert cfg.epochs == 7
    assert cfg.checkpointing.enabled is True  # the rest of the preset is there
    assert cfg == resolve_config(None, "baseline", ["training.epochs=7"])


def test_config_show_json_with_a_file(capsys, good_yaml):
    code, out, err = _run(
        capsys, "config", "show", "--config", str(good_yaml), "--format", "json", "-s", "training.seed=5"
    )
    assert code == 0, err
    cfg = TrainingConfig.from_dict(json.loads(out))
    assert (cfg.epochs, cfg.learning_rate, cfg.training.seed, cfg.data.dataset) == (2, 0.01, 5, "digits")


def test_config_show_without_anything_prints_the_defaults(capsys):
    code, out, _ = _run(capsys, "config", "show")
    assert code == 0
    assert TrainingConfig.from_dict(yaml.safe_load(out)) == TrainingConfig()


def test_config_show_unknown_format_is_a_user_error(capsys):
    code, _, err = _run(capsys, "config", "show", "--format", "xml")
    assert code == 2
    assert "xml" in err and "yaml" in err and "json" in err


def test_config_show_explain_lists_every_field_with_its_description(capsys):
    code, out, err = _run(capsys, "config", "show", "--explain")
    assert code == 0, err
    assert "training.learning_rate" in out
    assert TrainingSection.model_fields["learning_rate"].description in out
    # Every field is there, each by its full dotted path on one line.
    lines = out.splitlines()
    for row in TrainingConfig.explain():
        hits = [line for line in lines if line.lstrip().startswith(row["path"] + " ")]
        assert hits, row["path"]
        assert row["description"] in hits[0]


# -- validate --------------------------------------------------------------------------------------


def test_config_validate_good_file_exits_zero(capsys, good_yaml):
    code, out, err = _run(capsys, "config", "validate", str(good_yaml))
    assert code == 0, err
    assert "valid" in out and str(good_yaml) in out


def test_config_validate_bad_file_exits_two_with_one_line_listing_every_problem(capsys, bad_yaml):
    code, out, err = _run(capsys, "config", "validate", str(bad_yaml))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("error:")
    for fragment in (
        "training.learning_rate",
        "training.batch_size",
        "optimizer.beta1",
        "unknown field training.learnin_rate — did you mean training.learning_rate?",
        str(bad_yaml),
    ):
        assert fragment in line
    assert "Traceback" not in err and "Traceback" not in out


def test_config_validate_with_bad_overrides_lists_them_all_on_one_line(capsys, good_yaml):
    code, _, err = _run(capsys, "config", "validate", str(good_yaml), "--set", "training.epochs=[1", "--set", "nokey")
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert "training.epochs" in err and "nokey" in err


def test_config_validate_missing_file(capsys, tmp_path):
    missing = tmp_path / "missing.yaml"
    code, _, err = _run(capsys, "config", "validate", str(missing))
    assert code == 2
    assert "not found" in err and str(missing) in err
    assert len(err.strip().splitlines()) == 1


def test_config_validate_cross_field_problem(capsys, tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("model:\n  d_model: 100\n  n_heads: 3\n", encoding="utf-8")
    code, _, err = _run(capsys, "config", "validate", str(path))
    assert code == 2
    assert "model.d_model" in err and "model.n_heads" in err


def test_debug_raises_instead_of_exiting(capsys, bad_yaml):
    with pytest.raises(ConfigError):
        main(["--debug", "config", "validate", str(bad_yaml)])
    # And the flag does not stick to the next call.
    assert main(["config", "validate", str(bad_yaml)]) == 2


def test_usage_errors_exit_two(capsys):
    code, _, err = _run(capsys, "config", "show", "--no-such-flag")
    assert code == 2
    assert "no-such-flag" in err


# -- through the real entry point -------------------------------------------------------------------


def _entry(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(Path(__file__).resolve().parents[2] / "src"), os.environ.get("PYTHONPATH")])
        ),
    }
    return subprocess.run(
        [sys.executable, "-m", "trainengine", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_entry_point_user_error_is_one_line_exit_two(bad_yaml, tmp_path):
    proc = _entry("config", "validate", str(bad_yaml), cwd=tmp_path)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "training.batch_size" in proc.stderr


def test_entry_point_debug_shows_the_traceback(bad_yaml, tmp_path):
    proc = _entry("--debug", "config", "validate", str(bad_yaml), cwd=tmp_path)
    assert proc.returncode not in (0, 2)
    assert "Traceback" in proc.stderr
    assert "ConfigError" in proc.stderr
