"""Adapter-only checkpoints, exact resume through the Trainer, and merged export of a LoRA reward model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

from trainengine import TaskSpec, Trainer, TrainingConfigBuilder
from trainengine.checkpoint import CheckpointManager, load_model_state
from trainengine.errors import CheckpointError
from trainengine.models import build_model, rebuild_model

VOCAB = 64
LLAMA = {
    "model_type": "llama",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 512,
}
LORA = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": [], "bias": "none"}


def _build(lora: dict[str, Any] | None = LORA, **kw: Any) -> torch.nn.Module:
    return build_model(
        "reward_model", backbone_config=LLAMA, vocab_size=VOCAB, mlp_hidden_dims=[16], mlp_dropout=0.0, lora=lora, **kw
    )


class _Steps(torch.utils.data.Dataset):
    """Fixed-length reward samples (the default collate batches them into the reward Batch)."""

    def __init__(self, n: int = 24, length: int = 12) -> None:
        gen = torch.Generator().manual_seed(0)
        self.ids = torch.randint(1, VOCAB, (n, length), generator=gen)
        self.labels = torch.rand(n, 3, generator=gen)
        self.labels[::3, 2] = -100.0  # a padding step

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.ids[i],
            "attention_mask": torch.ones_like(self.ids[i]),
            "step_positions": torch.tensor([3, 7, 11]),
            "step_mask": self.labels[i] != -100.0,
            "source_ids": torch.tensor(0),
            "labels": self.labels[i],
        }


def _trainer(out: Path, max_steps: int, name: str) -> tuple[Trainer, torch.nn.Module]:
    config = (
        TrainingConfigBuilder()
        .with_training(
            max_steps=max_steps,
            batch_size=4,
            learning_rate=1e-2,
            device="cpu",
            deterministic=True,
            eval_interval_steps=100,
            log_interval_steps=100,
        )
        .with_scheduler(name="constant")  # the same lr whatever max_steps is
        .with_checkpointing(save_every_n_steps=4, save_every_n_epochs=None, keep_last_n=3)
        .with_tracking(output_dir=str(out), run_name=name, progress="off")
        .build()
    )
    model = _build()
    return Trainer(model, None, config, TaskSpec.reward("prm")), model


def _trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.slow
def test_lora_resume_through_the_trainer_is_exact(tmp_path: Path) -> None:
    data = _Steps()
    straight, model_a = _trainer(tmp_path / "a", 6, "straight")
    straight.train(data)

    first, _ = _trainer(tmp_path / "b", 4, "first")
    results = first.train(data)
    ckpt = Path(results["last_checkpoint"])
    stored = CheckpointManager(ckpt.parent, read_only=True).read(ckpt).model_state
    assert stored and all(".lora_" in k or k.startswith("head.") for k in stored)  # adapters + head only

    resumed, model_b = _trainer(tmp_path / "b", 6, "first")
    resumed.train(data, resume_from=ckpt)
    a, b = _trainable(model_a), _trainable(model_b)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    # the frozen base is the seeded one, untouched
    base_a = {n: p for n, p in model_a.named_parameters() if not p.requires_grad}
    base_b = dict(model_b.named_parameters())
    assert all(torch.equal(p, base_b[n]) for n, p in base_a.items())


def test_adapter_checkpoint_is_small_and_loads_strictly(tmp_path: Path) -> None:
    lora_model, full_model = _build(), _build(lora=None)
    with torch.no_grad():
        for name, p in lora_model.named_parameters():
            if "lora_B" in name:
                p.normal_()  # a trained adapter (lora_B starts at zero)
    small = CheckpointManager(tmp_path / "lora").save(step=1, epoch=0, model=lora_model)
    big = CheckpointManager(tmp_path / "full").save(step=1, epoch=0, model=full_model)
    size_small = (small / "model.safetensors").stat().st_size
    size_big = (big / "model.safetensors").stat().st_size
    assert size_small * 5 < size_big

    # A fresh model from the same spec gets the adapters back: identical scores.
    fresh = rebuild_model(lora_model._trainengine_model_spec)
    state = CheckpointManager(tmp_path / "lora", read_only=True).read(small).model_state
    load_model_state(fresh, state)
    ids = torch.randint(0, VOCAB, (2, 9))
    lora_model.eval()
    fresh.eval()
    assert torch.equal(fresh(ids), lora_model(ids))
    # Strict on the subset: a missing adapter is refused, naming it.
    del state[next(k for k in state if "lora_B" in k)]
    with pytest.raises(CheckpointError, match="lora_B"):
        load_model_state(fresh, state)


def test_merged_export_bundle_rebuilds_the_same_scores(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from trainengine.export import create_export_bundle

    model = _build()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    model.eval()
    ids = torch.randint(0, VOCAB, (3, 10))
    positions = torch.tensor([[2, 9], [4, 5], [9, 0]])
    expected = model(ids, step_positions=positions)

    merged = model.merged()
    assert not merged.is_lora and not any("lora" in k for k in merged.state_dict())
    assert torch.allclose(merged.eval()(ids, step_positions=positions), expected, atol=1e-5)
    assert model.is_lora  # the original keeps its adapters

    bundle = create_export_bundle(model, task_spec=TaskSpec.reward("prm"), formats=["pytorch"], output_dir=tmp_path)
    config = json.loads((bundle / "model_config.json").read_text())
    assert config["spec"]["kwargs"]["lora"] is None and config["spec"]["kwargs"]["name_or_path"] is None
    rebuilt = rebuild_model(config["spec"])
    load_model_state(rebuilt, load_file(str(bundle / "model.safetensors")))
    assert torch.allclose(rebuilt.eval()(ids, step_positions=positions), expected, atol=1e-5)

    from trainengine.serve._torch import TorchPredictor

    served = TorchPredictor(bundle).forward(ids.numpy())  # per-token scores [B, T]
    assert served.shape == (3, 10)
    assert torch.allclose(torch.from_numpy(served).gather(1, positions), expected, atol=1e-5)
