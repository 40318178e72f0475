"""CLI: runs list / show / compare / plot over real run directories."""

from __future__ import annotations

import pytest

from trainengine.cli.main import main

TINY = [
    "--dataset",
    "digits",
    "--output-dir",
    "runs",
    "--set",
    "tracking.progress=off",
    "--max-steps",
    "20",
    "--set",
    "training.eval_interval_steps=10",
]


@pytest.fixture
def two_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *TINY, "--run-name", "lr-high", "--learning-rate", "3e-3"]) == 0
    assert main(["train", *TINY, "--run-name", "lr-low", "--learning-rate", "1e-4"]) == 0
    capsys.readouterr()
    return tmp_path


def test_list_show_compare(two_runs, capsys):
    assert main(["runs", "list"]) == 0
    out = capsys.readouterr().out
    assert "default/lr-high" in out and "default/lr-low" in out and out.count("completed") == 2
    assert main(["runs", "show", "default/lr-high"]) == 0
    out = capsys.readouterr().out
    assert "results.steps" in out and "20" in out and "MLP" in out
    assert main(["runs", "compare", "lr-high", "lr-low", "--metric", "val/accuracy"]) == 0
    out = capsys.readouterr().out
    assert "val/accuracy best" in out and "training.learning_rate" in out and "0.003" in out and "0.0001" in out
    assert main(["runs", "show", "nope"]) == 2


def test_plot_writes_an_image_with_one_curve_per_run(two_runs, capsys):
    from PIL import Image

    assert main(["runs", "plot", "lr-high", "lr-low", "--metric", "train/loss", "--output", "curves.png"]) == 0
    image = Image.open(two_runs / "curves.png")
    assert image.size[0] > 500 and image.size[1] > 300
    colors = image.convert("RGB").getcolors(maxcolors=100_000)
    assert len(colors) > 10  # not a blank canvas
    assert main(["runs", "plot", "lr-high", "--metric", "no/such"]) == 2
