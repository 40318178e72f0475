"""training.activation_checkpointing: same numerics, same state_dict keys, fewer saved activations."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainengine import TaskSpec, Trainer, TrainingConfig
from trainengine.data import TokenWindowDataset
from trainengine.engine._activation_ckpt import apply_activation_checkpointing, remove_activation_checkpointing
from trainengine.errors import ConfigError
from trainengine.models import GPT, GPTConfig

VOCAB = 64


def _gpt(n_layers: int = 3, dropout: float = 0.2, **kw: Any) -> GPT:
    torch.manual_seed(0)
    return GPT(
        GPTConfig(vocab_size=VOCAB, max_seq_len=32, d_model=32, n_heads=2, n_layers=n_layers, dropout=dropout, **kw)
    )


def _ids(batch: int = 4, seq: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


def _train(model: nn.Module, steps: int = 3) -> tuple[list[float], list[dict[str, torch.Tensor]]]:
    """A few AdamW steps with a fixed dropout stream: (losses, gradients of every step)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    losses, grads = [], []
    for step in range(steps):
        ids = _ids(seed=step)
        torch.manual_seed(100 + step)  # the same dropout masks for both models
        loss = F.cross_entropy(model(ids)[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        opt.step()
        losses.append(loss.item())
    return losses, grads


def _saved_bytes(model: nn.Module, *args: Any, **kwargs: Any) -> int:
    """Bytes of the tensors autograd saves for the backward during one forward (a CPU memory measure)."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(*args, **kwargs)
    return total


def test_gpt_blocks_checkpointed_give_identical_losses_and_gradients_with_dropout() -> None:
    plain = _gpt()
    ckpt = copy.deepcopy(plain)
    keys = list(plain.state_dict())
    assert apply_activation_checkpointing(ckpt) == 3  # the three blocks of transformer.h
    assert apply_activation_checkpointing(ckpt) == 3  # a second call changes nothing
    assert list(ckpt.state_dict()) == keys
    assert [n for n, _ in ckpt.named_parameters()] == [n for n, _ in plain.named_parameters()]

    losses_plain, grads_plain = _train(plain)
    losses_ckpt, grads_ckpt = _train(ckpt)
    assert losses_ckpt == losses_plain  # bit for bit: dropout recomputes with the saved RNG state
    assert len(set(losses_plain)) == 3
    for gp, gc in zip(grads_plain, grads_ckpt, strict=True):
        assert gp.keys() == gc.keys()
        for name in gp:
            assert torch.equal(gp[name], gc[name]), name
    for (name, a), b in zip(plain.state_dict().items(), ckpt.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_blocks_recompute_in_the_backward_only_when_training_with_grad() -> None:
    model = _gpt(n_layers=2, dropout=0.0)
    apply_activation_checkpointing(model)
    calls = []  # a pre-hook: the recomputation may stop early, right after the last tensor it needs
    model.transformer.h[0].mlp.register_forward_pre_hook(lambda *_: calls.append(1))
    ids = _ids()
    model(ids).sum().backward()
    assert len(calls) == 2  # the forward, and its recomputation in the backward
    calls.clear()
    with torch.no_grad():
        model(ids)
    model.eval()
    model(ids).sum().backward()
    assert len(calls) == 2  # once under no_grad, once in eval mode: nothing recomputed
    # A copy keeps checkpointing, bound to its own blocks (not the original's).
    clone = copy.deepcopy(model).train()
    block = clone.transformer.h[0]
    assert block.forward.__self__ is block and block._trainengine_ckpt_forward.__self__ is block
    assert remove_activation_checkpointing(model) == 2 and "forward" not in model.transformer.h[0].__dict__
    calls.clear()
    model.train()
    model(ids).sum().backward()
    assert len(calls) == 1


def test_saved_activations_drop_with_checkpointing() -> None:
    plain = _gpt(n_layers=4, dropout=0.1)
    ckpt = copy.deepcopy(plain)
    apply_activation_checkpointing(ckpt)
    ids = _ids(batch=8)
    before, after = _saved_bytes(plain, ids), _saved_bytes(ckpt, ids)
    # Only each block's input stays (plus the embeddings and head): well under a third of the plain forward's.
    assert after < 0.3 * before, (before, after)


def test_trainer_resumes_a_plain_checkpoint_under_checkpointing_to_the_same_weights(tmp_path: Path) -> None:
    from trainengine.checkpoint import load_weights_file

    text = torch.tensor(list(b"def f(x):\n    return x * 2\nimport os\n" * 12), dtype=torch.uint8)
    data = TokenWindowDataset.from_stream(text, seq_len=16)
    shape = GPTConfig(vocab_size=256, max_seq_len=16, d_model=32, n_heads=2, n_layers=2, dropout=0.1)

    def run(name: str, checkpointing: bool, resume_from: Path | None = None) -> tuple[dict[str, Any], GPT]:
        config = TrainingConfig.from_dict(
            {
                "training": {"max_steps": 4, "batch_size": 8, "log_interval_steps": 1, "seed": 7}
                | {"activation_checkpointing": checkpointing, "eval_every_epoch": False},
                "checkpointing": {"enabled": True, "save_every_n_steps": 2, "save_every_n_epochs": None},
                "tracking": {"output_dir": str(tmp_path / name), "progress": "off", "experiment_db": False},
            }
        )
        torch.manual_seed(0)
        model = GPT(shape)
        trainer = Trainer(model, None, config, TaskSpec.language_modeling("bytes"))
        results = trainer.train(data, data, resume_from=resume_from)
        assert trainer.info.get("activation_checkpointing_blocks") == (2 if checkpointing else None)
        return results, model

    results_plain, plain = run("plain", False)
    # A plain run's step-2 checkpoint resumes under checkpointing to the plain run's final weights
    # and losses (same numerics, dropout included), and its weights file loads strictly into a plain model.
    (step2,) = Path(results_plain["run_dir"]).glob("**/ckpt-000000002")
    results_ckpt, ckpt = run("ckpt", True, resume_from=step2)
    assert "forward" in ckpt.transformer.h[0].__dict__ and "forward" not in plain.transformer.h[0].__dict__
    for name, value in plain.state_dict().items():
        assert torch.equal(ckpt.state_dict()[name], value), name
    losses = [(r["step"], r["loss"]) for r in results_plain["history"]["train"]]
    assert [(r["step"], r["loss"]) for r in results_ckpt["history"]["train"]][-2:] == losses[-2:]
    fresh = GPT(shape)
    load_weights_file(fresh, Path(results_ckpt["run_dir"]) / "model.safetensors", strict=True)
    assert all(torch.equal(fresh.state_dict()[n], v) for n, v in plain.state_dict().items())


def test_hugging_face_model_uses_its_own_non_reentrant_checkpointing() -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=32)
    plain = transformers.GPT2LMHeadModel(cfg)
    ckpt = copy.deepcopy(plain)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # the current API, not the deprecated alias
        assert apply_activation_checkpointing(ckpt) == 2
    flag = (
        "is_activation_checkpointing" if hasattr(ckpt, "is_activation_checkpointing") else "is_gradient_checkpointing"
    )
    assert getattr(ckpt, flag) and not getattr(plain, flag)
    assert list(ckpt.state_dict()) == list(plain.state_dict())

    def run(model: nn.Module) -> tuple[list[float], dict[str, torch.Tensor]]:
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        losses = []
        for step in range(2):
            torch.manual_seed(step)  # GPT-2's default dropout (0.1) draws the same masks
            loss = model(input_ids=_ids(2, 16), labels=_ids(2, 16)).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses, {n: p.detach() for n, p in model.named_parameters()}

    (losses_plain, weights_plain), (losses_ckpt, weights_ckpt) = run(plain), run(ckpt)
    assert losses_ckpt == losses_plain and losses_plain[1] < losses_plain[0]
    assert all(torch.equal(weights_plain[n], weights_ckpt[n]) for n in weights_plain)
    ids = _ids(2, 16)
    assert _saved_bytes(ckpt, input_ids=ids) < 0.3 * _saved_bytes(plain, input_ids=ids)


def test_lora_reward_model_backbone_gets_gradients_without_input_require_grads() -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    from trainengine.models import build_model

    gpt2 = {"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 32}
    lora = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": [], "bias": "none"}
    plain = build_model("reward_model", backbone_config=gpt2, vocab_size=VOCAB, mlp_hidden_dims=[16], lora=lora)
    with torch.no_grad():  # LoRA B starts at zero: give A a gradient to check as well
        for name, p in plain.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    ckpt = copy.deepcopy(plain)
    assert apply_activation_checkpointing(ckpt) == 2  # the backbone's two layers (PEFT-wrapped)
    # Non-reentrant checkpointing needs no input that requires grad: take away the hook transformers adds.
    ckpt.backbone.disable_input_require_grads()
    ids = _ids(2, 12)
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "step_positions": torch.tensor([[3, 11], [7, 0]]),
        "step_mask": torch.tensor([[True, True], [True, False]]),
    }

    def grads(model: nn.Module) -> dict[str, torch.Tensor]:
        model.train()
        torch.manual_seed(3)
        ((model(**batch) - 0.9) ** 2).mean().backward()
        return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}

    grads_plain, grads_ckpt = grads(plain), grads(ckpt)
    lora_names = [n for n in grads_plain if "lora_" in n]
    assert len(lora_names) == 4  # A and B of c_attn in both layers
    assert not ckpt.backbone.get_input_embeddings().weight.requires_grad
    for name in lora_names:
        assert grads_ckpt[name] is not None and grads_ckpt[name].abs().sum() > 0, name
    assert all(torch.equal(grads_plain[n], grads_ckpt[n]) for n in grads_plain)


def test_a_model_without_repeated_blocks_is_refused() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ConfigError, match=r"found no blocks to checkpoint in Sequential.*nn\.ModuleList of 2 or more"):
        apply_activation_checkpointing(model)


def test_older_hugging_face_api_gets_non_reentrant_kwargs() -> None:
    class OldStyle(nn.Module):  # transformers 4.x: gradient_checkpointing_enable, no activation_* methods
        supports_gradient_checkpointing = True

        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList(nn.Sequential(nn.Linear(2, 2)) for _ in range(3))
            self.calls: list[dict[str, Any]] = []

        def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict[str, Any]) -> None:
            self.calls.append(gradient_checkpointing_kwargs)

    wrapper = nn.Sequential(OldStyle())  # found inside another module, as a RewardModel's backbone is
    assert apply_activation_checkpointing(wrapper) == 3
    assert wrapper[0].calls == [{"use_reentrant": False}]
    assert "forward" not in wrapper[0].layers[0].__dict__  # its own mechanism, not our wrapper
