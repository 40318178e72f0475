"""Step logic: accumulation normalisation, batch splitting, optimizer groups, no host syncs."""

from __future__ import annotations

import os
import sys

import pytest
import torch
from torch import nn

from trainengine import TaskSpec, Trainer
from trainengine.config import OptimizerSection
from trainengine.engine import Runtime, StepRunner, build_optimizer, param_groups, split_batch
from trainengine.errors import DataError
from trainengine.models import GPT, MLP, GPTConfig


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def _runner(model, task):
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    return StepRunner(model, opt, task.loss_strategy, Runtime("cpu", "fp32"), max_grad_norm=None)


def test_accumulating_8_micro_batches_of_2_equals_one_batch_of_16():
    torch.manual_seed(0)
    model = MLP(6, 4, hidden_dims=(8,), dropout=0.0)
    task = TaskSpec.classification("x", num_classes=4)
    x, y = torch.randn(16, 6), torch.randint(0, 4, (16,))
    runner = _runner(model, task)

    runner.forward_backward([(x, y)])
    full = _grads(model)
    model.zero_grad(set_to_none=True)
    runner.forward_backward([(x[i : i + 2], y[i : i + 2]) for i in range(0, 16, 2)])
    accumulated = _grads(model)
    for name in full:
        torch.testing.assert_close(accumulated[name], full[name], rtol=1e-5, atol=1e-7)


def test_token_loss_accumulation_with_uneven_padding_matches_the_full_batch():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=32, max_seq_len=12, d_model=16, n_heads=2, n_layers=1))
    task = TaskSpec.language_modeling("toy")
    x = torch.randint(0, 32, (8, 12))
    labels = torch.randint(0, 32, (8, 12))
    # Very different numbers of real targets per micro-batch: averaging per micro-batch would be wrong.
    lengths = [12, 1, 3, 12, 2, 7, 12, 5]
    for row, n in enumerate(lengths):
        labels[row, n:] = -100
    runner = _runner(model, task)
    runner.forward_backward([(x, labels)])
    full = _grads(model)
    model.zero_grad(set_to_none=True)
    runner.forward_backward([(x[i : i + 2], labels[i : i + 2]) for i in range(0, 8, 2)])
    accumulated = _grads(model)
    for name in full:
        torch.testing.assert_close(accumulated[name], full[name], rtol=1e-4, atol=1e-6)
    # And the naive mean of micro-batch means is measurably different (the test can fail).
    model.zero_grad(set_to_none=True)
    for i in range(0, 8, 2):
        (task.loss_strategy(model(x[i : i + 2]), labels[i : i + 2]) / 4).backward()
    naive = _grads(model)
    assert any(not torch.allclose(naive[n], full[n], rtol=1e-3, atol=1e-5) for n in full)


def test_trainer_with_accumulation_matches_large_batch_training(tmp_path):
    """End to end: batch 4 x accumulation 4 gives the same weights as batch 16 (SGD, no shuffle)."""
    from trainengine import TrainingConfigBuilder

    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 5, generator=g), torch.randint(0, 3, (64,), generator=g)
    task = TaskSpec.classification("x", num_classes=3)

    def run(batch, accum):
        cfg = (
            TrainingConfigBuilder()
            .with_training(
                epochs=2,
                batch_size=batch,
                gradient_accumulation_steps=accum,
                max_grad_norm=1.0,
                learning_rate=0.1,
                device="cpu",
            )
            .with_optimizer(name="sgd", momentum=0.9, weight_decay=0.0)
            .with_scheduler(name="constant")
            .with_data(shuffle=False)
            .with_tracking(write_run_dir=False, progress="off")
            .build()
        )
        torch.manual_seed(0)
        model = MLP(5, 3, hidden_dims=(7,), dropout=0.0)
        Trainer(model, None, cfg, task).train((x, y))
        return model

    a, b = run(16, 1), run(4, 4)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6, msg=name)


def test_split_batch_kinds():
    x, y = torch.zeros(2, 3), torch.zeros(2, dtype=torch.long)
    assert split_batch((x, y))[1] is y
    inputs, labels = split_batch({"input_ids": x, "labels": y})
    assert inputs is x and labels is y
    inputs, labels = split_batch({"input_ids": x, "attention_mask": x, "labels": y})
    assert set(inputs) == {"input_ids", "attention_mask"}
    with pytest.raises(DataError, match="cannot split a batch of type tuple of length 3"):
        split_batch((x, y, y))
    with pytest.raises(DataError, match="'labels' key"):
        split_batch({"x": x})


def test_no_weight_decay_on_bias_norm_and_embedding():
    model = GPT(GPTConfig(vocab_size=16, max_seq_len=8, d_model=16, n_heads=2, n_layers=1, bias=True))
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(names[id(p)].endswith("weight") for p in decay["params"])
    assert any("ln" in names[id(p)] for p in no_decay["params"])
    assert all(p.ndim >= 2 for p in decay["params"])
    # Tied weights are counted once.
    total = sum(p.numel() for g in (decay, no_decay) for p in g["params"])
    assert total == sum(p.numel() for p in model.parameters())


def test_optimizer_is_fused_so_bad_steps_skip_on_device():
    model = nn.Linear(3, 2)
    for name in ("adamw", "adam", "sgd"):
        opt = build_optimizer(model, OptimizerSection(name=name), 1e-3, torch.device("cpu"))
        assert opt.defaults.get("fused") is True
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(frozen, OptimizerSection(), 1e-3, torch.device("cpu"))


def test_training_steps_do_not_read_values_back_from_the_device(monkeypatch, tmp_path):
    """Between logging steps the accelerator path never calls .item()/.tolist()/bool()/float()."""
    from trainengine import TrainingConfigBuilder

    x, y = torch.randn(400, 4), torch.randint(0, 3, (400,))
    cfg = (
        TrainingConfigBuilder()
        .with_training(max_steps=40, batch_size=10, log_interval_steps=20, eval_every_epoch=False, device="cpu")
        .with_tracking(write_run_dir=False, progress="off")
        .build()
    )
    task = TaskSpec.classification("x", num_classes=3)
    calls = []

    class Count:
        def on_train_start(self, trainer):
            # CI has no GPU: take the accelerator path (device-side skip flag) on the CPU.
            trainer.step_runner.check_on_host = False
            for name in ("item", "tolist", "__bool__", "__float__", "__int__", "cpu", "numpy"):
                original = getattr(torch.Tensor, name)

                def wrapped(self, *a, _orig=original, _name=name, **k):
                    # Count reads made by trainengine itself (the DataLoader's sampler, torch's or
                    # ours in data/_loader.py, works on CPU index tensors, which is no device read).
                    caller = sys._getframe(1).f_code.co_filename
                    sampler = caller.endswith(os.path.join("data", "_loader.py"))
                    if "trainengine" in caller and "tests" not in caller and not sampler:
                        calls.append((_name, trainer.state.step))
                    return _orig(self, *a, **k)

                monkeypatch.setattr(torch.Tensor, name, wrapped)

    Trainer(MLP(4, 3), None, cfg, task, callbacks=[Count()]).train((x, y))
    monkeypatch.undo()
    # The only reads are one tolist at each of the two logging steps (20 and 40), then the
    # final evaluation's metrics (after step 40).
    assert [c for c in calls if c[1] < 40] == [("tolist", 20)]
    assert calls.count(("tolist", 40)) == 1
