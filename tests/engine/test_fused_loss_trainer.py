"""training.fused_loss through the Trainer: the same training as the plain loss, recorded in run.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from trainengine import TaskSpec, Trainer, TrainingConfigBuilder
from trainengine.errors import ConfigError
from trainengine.models import GPT, GPTConfig


def _run(
    tmp_path: Path, fused: str, accumulation: int = 1, model: nn.Module | None = None, compile: bool = False
) -> tuple[list, dict]:
    torch.manual_seed(0)
    tokens = torch.randint(0, 64, (32, 17), generator=torch.Generator().manual_seed(1))
    data = (tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous())
    cfg = (
        TrainingConfigBuilder()
        .with_training(max_steps=4, batch_size=8, learning_rate=1e-2, fused_loss=fused, eval_every_epoch=False,
                       gradient_accumulation_steps=accumulation, log_interval_steps=1, compile=compile)
        .with_tracking(output_dir=str(tmp_path / fused), progress="off", experiment_db=False)
        .build()
    )  # fmt: skip
    losses: list[float] = []

    class Losses:
        def on_log(self, trainer, record):
            if "train/loss" in record:
                losses.append(record["train/loss"])

    model = model or GPT(GPTConfig(vocab_size=64, max_seq_len=16, d_model=32, n_heads=4, n_layers=2))
    results = Trainer(model, None, cfg, TaskSpec.language_modeling("toy"), callbacks=[Losses()]).train(data)
    facts = json.loads((Path(results["run_dir"]) / "run.json").read_text())
    return losses, facts


@pytest.mark.parametrize("accumulation", [1, 2])
def test_the_fused_loss_trains_like_the_plain_one(tmp_path, accumulation):
    fused, fused_facts = _run(tmp_path, "on", accumulation)
    plain, plain_facts = _run(tmp_path, "off", accumulation)
    assert fused_facts["speed"]["fused_loss"] is True and plain_facts["speed"]["fused_loss"] is False
    assert len(fused) == len(plain) == 4
    assert fused == pytest.approx(plain, rel=1e-5)


def test_on_refuses_a_model_without_hidden_states_and_head(tmp_path):
    class Plain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.out = nn.Embedding(64, 16), nn.Linear(16, 64)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.emb(x))

    with pytest.raises(ConfigError, match=r"training\.fused_loss is on, but"):
        _run(tmp_path, "on", model=Plain())
    losses, facts = _run(tmp_path, "auto", model=Plain())  # auto: the plain loss
    assert len(losses) == 4 and facts["speed"]["fused_loss"] is False


def test_auto_takes_the_fused_loss_under_compile_only(tmp_path, monkeypatch):
    # Eager the fused loss trades speed for memory (an explicit `on`); compiled it wins both.
    monkeypatch.setenv("TRAINENGINE_COMPILE_BACKEND", "aot_eager")
    _, eager = _run(tmp_path / "eager", "auto")
    _, compiled = _run(tmp_path / "compiled", "auto", compile=True)
    assert eager["speed"]["fused_loss"] is False and compiled["speed"]["fused_loss"] is True
