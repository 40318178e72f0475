"""Console output: live bar on a terminal, plain periodic lines elsewhere, and the summary table."""

from __future__ import annotations

import io

import torch
from rich.console import Console

from trainengine import TaskSpec, Trainer, TrainingConfigBuilder
from trainengine.models import MLP
from trainengine.tracking import ConsoleProgress


def _train(tmp_path, progress: ConsoleProgress, steps: int = 30):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(320, 4, generator=g), torch.randint(0, 3, (320,), generator=g)  # 256 train, 64 val
    cfg = (
        TrainingConfigBuilder()
        .with_training(
            max_steps=steps, batch_size=16, log_interval_steps=5, eval_interval_steps=10, eval_every_epoch=False
        )
        .with_tracking(output_dir=str(tmp_path), progress="off")
        .build()
    )
    return Trainer(MLP(4, 3), None, cfg, TaskSpec.classification("x", 3), callbacks=[progress]).train(
        (x[:256], y[:256]), (x[256:], y[256:])
    )


def test_plain_lines_when_not_a_terminal(tmp_path):
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False, width=300)
    results = _train(tmp_path, ConsoleProgress(mode="auto", plain_interval_s=0.0, console=console))
    text = buf.getvalue()
    lines = [line for line in text.splitlines() if line.startswith("step ")]
    assert len(lines) == 6  # one per logging step (every 5 of 30 steps) with no minimum interval
    assert lines[0].startswith("step 5/30 | epoch 0 | loss ")
    for part in ("| lr ", "samples/s", "| ETA "):
        assert part in lines[0]
    assert "eval @ step 10: val/loss" in text
    # The summary table and the run directory.
    for row in ("best val/accuracy", "steps", "wall time", "throughput", "run directory"):
        assert row in text
    assert results["run_dir"] in text.replace("\n", "")
    assert "\x1b[" not in text  # no terminal control codes in a log file


def test_live_bar_on_a_terminal(tmp_path):
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=200)
    _train(tmp_path, ConsoleProgress(mode="auto", console=console))
    text = buf.getvalue()
    assert "\x1b[" in text  # a live display redraws with control codes
    assert "30/30" in text and "samples/s" in text and "ETA" in text and "loss " in text and "lr " in text
