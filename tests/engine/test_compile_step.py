"""training.compile: forward + loss as one compiled graph (aot_eager on the CPU), its report and recompile log."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from trainengine import TaskSpec, Trainer, TrainingConfigBuilder
from trainengine.engine._compile import BACKEND_ENV
from trainengine.errors import TaskError
from trainengine.models import GPT, MLP, GPTConfig

CLS3 = TaskSpec.classification("blobs", num_classes=3)


@pytest.fixture(autouse=True)
def _aot_eager(monkeypatch):
    # The traced graphs without inductor's code generation: seconds, not minutes, on the CPU.
    monkeypatch.setenv(BACKEND_ENV, "aot_eager")


def _config(tmp_path, **training):
    training = {
        "epochs": 1,
        "batch_size": 16,
        "learning_rate": 1e-2,
        "log_interval_steps": 1,
        "device": "cpu",
    } | training
    return (
        TrainingConfigBuilder()
        .with_training(**training)
        .with_scheduler(name="constant")
        .with_tracking(output_dir=str(tmp_path / "runs"), progress="off", write_run_dir=False, experiment_db=False)
        .build()
    )


def _blobs(n=64):
    g = torch.Generator().manual_seed(0)
    centers = torch.eye(3, 4) * 2.0
    y = torch.randint(0, 3, (n,), generator=g)
    return centers[y] + 0.3 * torch.randn(n, 4, generator=g), y


def _train_both(tmp_path, model, task, data, val=None, **training):
    """(eager results, eager model, compiled trainer, compiled model) from one starting model."""
    out = []
    for compiled in (False, True):
        m = copy.deepcopy(model)
        trainer = Trainer(m, None, _config(tmp_path / str(compiled), compile=compiled, **training), task)
        results = trainer.train(data, val)
        out += [trainer, m] if compiled else [results, m]
    return out


def _losses(results):
    return [r["loss"] for r in results["history"]["train"]]


def test_compiled_step_matches_eager_for_classification_and_gpt_with_accumulation(tmp_path):
    torch.manual_seed(0)
    x, y = _blobs()
    eager_res, eager, trainer, compiled = _train_both(
        tmp_path / "mlp", MLP(4, 3, hidden_dims=(16,)), CLS3, (x, y), (x[:32], y[:32]), gradient_accumulation_steps=2
    )
    # The step ran through the compiled function (its report filled), not the eager path.
    assert trainer.compile_report["graph_breaks"] == 0 and trainer.compile_report["backend"] == "aot_eager"
    assert trainer.step_runner.compiled is not None and trainer.step_runner.model is compiled
    results = trainer.history
    assert len(results["train"]) == 2
    torch.testing.assert_close([r["loss"] for r in results["train"]], _losses(eager_res), rtol=1e-6, atol=1e-6)
    assert results["val"][-1]["val/loss"] == pytest.approx(eager_res["history"]["val"][-1]["val/loss"], rel=1e-5)
    for (name, p), q in zip(compiled.state_dict().items(), eager.state_dict().values(), strict=True):
        assert not name.startswith("_orig_mod")
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)

    # The built-in GPT (language modeling), bf16 autocast inside the graph, accumulation 2.
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=32, max_seq_len=8, d_model=16, n_heads=2, n_layers=1, dropout=0.0))
    ids = torch.randint(0, 32, (16, 8))
    labels = ids.roll(-1, dims=1)
    labels[::3, 5:] = -100  # uneven padding: loss_sum / window targets
    eager_res, eager, trainer, compiled = _train_both(
        tmp_path / "gpt",
        gpt,
        TaskSpec.language_modeling("toy"),
        (ids, labels),
        batch_size=4,
        gradient_accumulation_steps=2,
        precision="bf16",
        fused_loss="on",  # both paths take the chunked loss: the compiled graph is what differs
    )
    assert len(trainer.history["train"]) == 2 and trainer.compile_report["graph_breaks"] is not None
    torch.testing.assert_close(_losses({"history": trainer.history}), _losses(eager_res), rtol=2e-3, atol=2e-3)
    for p, q in zip(compiled.parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=2e-3, atol=2e-3)
    assert not torch.equal(next(compiled.parameters()), next(gpt.parameters()))  # it trained


class _Breaking(nn.Module):
    """An MLP whose forward reads a value on the host (a NaN check): a graph break."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.isnan().any().item():  # .item(): dynamo cannot keep this in the graph
            raise ValueError("NaN input")
        return self.body(x)


def test_graph_breaks_are_counted_once_with_their_reason_and_training_still_works(tmp_path, caplog):
    torch.manual_seed(0)
    x, y = _blobs()
    model = _Breaking()
    trainer = Trainer(model, None, _config(tmp_path, epochs=3, compile=True), CLS3)
    with caplog.at_level(logging.INFO, logger="trainengine"):
        trainer.train((x, y))
    report = trainer.compile_report
    assert report["graph_breaks"] >= 1
    assert any("item" in reason for reason in report["reasons"]), report["reasons"]
    lines = [r.getMessage() for r in caplog.records if "graph break" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith(f"compile: {report['graph_breaks']} graph break")
    assert "(x" in lines[0] and "item" in lines[0]
    losses = [r["loss"] for r in trainer.history["train"]]
    assert len(losses) == 12 and losses[-1] < 0.8 * losses[0]
    assert report["recompiles"] == 0  # the break's resume function compiled in the first step


def test_a_smaller_last_batch_logs_one_recompilation(tmp_path, caplog):
    torch.manual_seed(0)
    x, y = _blobs(40)  # batches of 16, 16, 8: the last one changes the shape
    trainer = Trainer(MLP(4, 3, hidden_dims=(8,)), None, _config(tmp_path, epochs=3, compile=True), CLS3)
    with caplog.at_level(logging.WARNING, logger="trainengine"):
        trainer.train((x, y))
    warnings = [r.getMessage() for r in caplog.records if "recompiled" in r.getMessage()]
    # Once: the recompiled graph takes a dynamic batch size, so later epochs compile nothing new.
    assert len(warnings) == 1, warnings
    assert "size mismatch" in warnings[0] and "expected 16, actual 8" in warnings[0]
    assert trainer.compile_report["recompiles"] == 1
    assert "expected 16, actual 8" in trainer.compile_report["recompile_reasons"][0]
    assert len(trainer.history["train"]) == 9


@dataclass
class _Output:
    """The shape of a Hugging Face ModelOutput: logits under ``.logits``, other fields beside."""

    logits: torch.Tensor
    hidden: torch.Tensor | None = None


class _HFStyle(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> _Output:
        hidden = torch.relu(self.body(input_ids)) * attention_mask[:, :1]
        return _Output(logits=self.head(hidden), hidden=hidden)


def test_hugging_face_style_outputs_and_dict_batches_compile(tmp_path):
    torch.manual_seed(0)
    x, y = _blobs()
    samples = [{"input_ids": x[i], "attention_mask": torch.ones(4), "labels": y[i]} for i in range(64)]
    data = DataLoader(samples, batch_size=16)  # dict batches: keyword inputs and "labels"
    eager_res, eager, trainer, compiled = _train_both(tmp_path, _HFStyle(), CLS3, data, epochs=2)
    assert trainer.compile_report["graph_breaks"] == 0, trainer.compile_report["reasons"]
    torch.testing.assert_close(_losses({"history": trainer.history}), _losses(eager_res), rtol=1e-6, atol=1e-6)
    for p, q in zip(compiled.parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)


def test_a_bad_first_batch_fails_with_the_eager_check_before_anything_compiles(tmp_path):
    x, y = _blobs()
    trainer = Trainer(MLP(4, 2), None, _config(tmp_path, compile=True), CLS3)  # 2 outputs for 3 classes
    with pytest.raises(TaskError, match=r"got logits float32 \[16, 2\]"):
        trainer.train((x, y))
    assert trainer.compile_report["graph_breaks"] is None  # the compiled step never ran
