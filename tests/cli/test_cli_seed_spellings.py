"""The seeds' CLI spellings: `train --d-model/--n-heads/--n-layers/--data-train`, `export --format`.

Seed 002 lines 1613-1618 (`--d-model`, `--n-heads`, `--n-layers`), 1630 (`--data-train`) and
3182-3184 (`export ... --format onnx`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainengine.cli.main import main
from trainengine.models import GPT, GPTConfig

# A two-step GPT run on a 4 KiB corpus: small enough to be quick, real enough to build the model.
GPT_RUN = [
    "--dataset", "pystdlib", "--max-steps", "2", "--run-name", "gpt",
    "--set", "data.max_corpus_bytes=4096", "--set", "data.max_length=16", "--set", "model.max_seq_len=16",
    "--set", "tracking.progress=off", "--set", "tracking.experiment_db=false",
]  # fmt: skip


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory) -> Path:
    """A run trained with the seed's model-size flags (shared: training once is enough)."""
    out = tmp_path_factory.mktemp("seed_flags")
    code = main(["train", *GPT_RUN, "--output-dir", str(out), "--d-model", "32", "--n-heads", "2", "--n-layers", "1"])
    assert code == 0
    return out / "default" / "gpt"


def test_model_size_flags_build_that_gpt(gpt_run):
    run = json.loads((gpt_run / "run.json").read_text(encoding="utf-8"))
    kwargs = run["model"]["spec"]["kwargs"]
    assert (kwargs["d_model"], kwargs["n_heads"], kwargs["n_layers"]) == (32, 2, 1)
    # The trained model is that GPT: the same parameter count as one built directly.
    expected = sum(
        p.numel()
        for p in GPT(GPTConfig(vocab_size=256, max_seq_len=16, d_model=32, n_heads=2, n_layers=1)).parameters()
    )
    assert run["model"]["num_parameters"] == expected


def test_bad_model_size_flags_are_one_user_error(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["train", *GPT_RUN, "--d-model", "32", "--n-heads", "3"])
    assert code != 0
    err = capsys.readouterr().err
    assert "model.d_model (32) must be divisible by model.n_heads (3)" in err
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_export_format_is_the_single_format_spelling(capsys, gpt_run, tmp_path):
    assert main(["export", "--checkpoint", str(gpt_run), "--format", "pytorch", "--output-dir", str(tmp_path)]) == 0
    (bundle,) = tmp_path.iterdir()
    assert list(json.loads((bundle / "manifest.json").read_text())["formats"]) == ["pytorch"]


def test_export_format_and_formats_together_are_refused(capsys, gpt_run, tmp_path):
    code = main(["export", "--checkpoint", str(gpt_run), "--format", "onnx", "--formats", "pytorch"])
    assert code != 0
    assert "give --format or --formats, not both" in capsys.readouterr().err


@pytest.mark.slow
def test_export_format_onnx_as_the_seed_writes_it(capsys, gpt_run, tmp_path):
    # Seed 002 lines 3182-3184: `python tools/export.py --checkpoint ... --format onnx`.
    assert main(["export", "--checkpoint", str(gpt_run), "--format", "onnx", "--output-dir", str(tmp_path)]) == 0
    (bundle,) = tmp_path.iterdir()
    assert list(json.loads((bundle / "manifest.json").read_text())["formats"]) == ["onnx"]
    assert (bundle / "model.onnx").is_file()


def test_data_train_is_the_train_file_flag(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["train", "--data-train", "no_such_file.csv", "--max-steps", "1"])
    assert code != 0
    assert "no_such_file.csv" in capsys.readouterr().err  # it went to data.train_file, which is read
