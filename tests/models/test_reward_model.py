"""RewardModel: pooling at the step positions, LoRA / frozen / full training, defaults per architecture, errors."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

from trainengine.errors import ConfigError
from trainengine.models import build_model
from trainengine.models._lora import default_target_modules, parameter_counts
from trainengine.models._reward import reward_model_kwargs

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
GPT2 = {"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 64}
LORA = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": [], "bias": "none"}


def _build(backbone: dict[str, Any] = LLAMA, **kw: Any) -> torch.nn.Module:
    kw.setdefault("mlp_hidden_dims", [16])
    kw.setdefault("mlp_dropout", 0.0)
    return build_model("reward_model", backbone_config=backbone, vocab_size=VOCAB, **kw)


def _batch() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(1, VOCAB, (3, 10), generator=gen)
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "step_positions": torch.tensor([[2, 5, 9], [4, 9, 0], [1, 0, 0]]),
        "step_mask": torch.tensor([[True, True, True], [True, True, False], [True, False, False]]),
        "source_ids": torch.tensor([0, 1, 0]),
    }


def _one_step(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    scores = model(**_batch())
    ((scores - 0.9) ** 2).mean().backward()
    opt.step()
    return before, {n: p.detach().clone() for n, p in model.named_parameters()}


def test_scores_are_per_step_sigmoids_of_the_token_at_each_position() -> None:
    model = _build(mlp_hidden_dims=[16, 8], activation="silu").eval()
    batch = _batch()
    scores = model(**batch)
    assert scores.shape == (3, 3) and scores.dtype == torch.float32
    assert bool(((scores > 0) & (scores < 1)).all())
    per_token = model(batch["input_ids"], attention_mask=batch["attention_mask"])  # no positions: [B, T]
    assert per_token.shape == (3, 10)
    assert torch.allclose(per_token.gather(1, batch["step_positions"]), scores, atol=1e-6)
    with pytest.raises(Exception, match="step_positions must index tokens 0..9"):
        model(batch["input_ids"], step_positions=torch.tensor([[3], [10], [0]]))


def test_lora_trains_only_adapters_and_head(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="trainengine"):
        model = _build(lora=LORA)
    counts = parameter_counts(model)
    lora_and_head = sum(p.numel() for n, p in model.named_parameters() if ".lora_" in n or n.startswith("head."))
    assert counts["trainable"] == lora_and_head < counts["total"]
    assert f"reward_model: trainable {counts['trainable']:,} of {counts['total']:,} parameters" in caplog.text
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, _ in model.named_parameters() if ".lora_" in n}
    assert adapted == {"q_proj", "v_proj"}  # PEFT's default for llama
    before, after = _one_step(model)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all(".lora_" in n or n.startswith("head.") for n in changed)
    assert any("lora_B" in n for n in changed) and any(n.startswith("head.") for n in changed)


def test_frozen_backbone_trains_only_the_head_and_full_trains_everything() -> None:
    frozen = _build(freeze_backbone=True)
    before, after = _one_step(frozen)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed == {n for n in before if n.startswith("head.")}
    assert parameter_counts(frozen)["trainable"] == sum(p.numel() for p in frozen.head.parameters())

    full = _build()
    assert parameter_counts(full)["trainable"] == parameter_counts(full)["total"]
    before, after = _one_step(full)
    unchanged = {n for n in before if torch.equal(before[n], after[n])}
    # every weight that takes part in the forward pass moves (the unused embedding rows aside)
    assert not {n for n in unchanged if "embed" not in n}


def test_gpt2_gets_its_own_default_targets_and_overrides_work() -> None:
    gpt2 = _build(GPT2, lora=LORA)
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, _ in gpt2.named_parameters() if ".lora_" in n}
    assert adapted == {"c_attn"}
    assert gpt2(**_batch()).shape == (3, 3)
    custom = _build(lora={**LORA, "target_modules": ["o_proj", "down_proj"]})
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, _ in custom.named_parameters() if ".lora_" in n}
    assert adapted == {"o_proj", "down_proj"}
    with pytest.raises(ConfigError, match="does not have; its linear layers are: .*q_proj"):
        _build(lora={**LORA, "target_modules": ["query_key_value"]})


def test_unknown_architecture_without_targets_lists_the_modules() -> None:
    backbone = _build().backbone
    backbone.config.model_type = "mystery"
    with pytest.raises(ConfigError, match=r"no default for model_type 'mystery'.*k_proj.*q_proj"):
        default_target_modules(backbone)


def test_build_is_seed_deterministic_and_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = _build(lora=LORA, init_seed=5)
    assert torch.equal(torch.rand(3), expected)  # the build used a forked RNG
    b = _build(lora=LORA, init_seed=5)
    c = _build(lora=LORA, init_seed=6)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_backbone_errors_name_the_fields(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model.name_or_path.*model.backbone_config"):
        build_model("reward_model", vocab_size=VOCAB)
    with pytest.raises(ConfigError, match="both set"):
        build_model("reward_model", name_or_path=str(tmp_path), backbone_config=LLAMA)
    with pytest.raises(ConfigError, match=r"model.name_or_path .*missing.*no such folder"):
        build_model("reward_model", name_or_path=str(tmp_path / "missing"), vocab_size=VOCAB)
    with pytest.raises(ConfigError, match="needs model_type"):
        build_model("reward_model", backbone_config={"hidden_size": 32}, vocab_size=VOCAB)
    with pytest.raises(ConfigError, match="vocab_size is 10 but the tokenizer has 64"):
        build_model("reward_model", backbone_config={**LLAMA, "vocab_size": 10}, vocab_size=VOCAB)
    with pytest.raises(ConfigError, match="model.mlp_hidden_dims"):
        _build(mlp_hidden_dims=[0])


def test_loads_a_local_folder_and_resizes_to_the_tokenizer(tmp_path: Path) -> None:
    from transformers import AutoModel

    backbone = _build().backbone
    backbone.save_pretrained(tmp_path / "tiny")
    model = build_model("reward_model", name_or_path=str(tmp_path / "tiny"), vocab_size=VOCAB + 6, mlp_hidden_dims=[8])
    assert model.backbone.get_input_embeddings().weight.shape[0] == VOCAB + 6
    reference = AutoModel.from_pretrained(str(tmp_path / "tiny"))
    layer = "layers.0.self_attn.q_proj.weight"
    assert torch.equal(model.backbone.state_dict()[layer], reference.state_dict()[layer])


def test_kwargs_from_the_config_sections() -> None:
    from trainengine.config import TrainingConfig

    config = TrainingConfig.from_dict(
        {
            "model": {"architecture": "reward_model", "backbone_config": LLAMA, "mlp_hidden_dims": [8]},
            "lora": {"enabled": True, "lora_r": 2},
        }
    )
    kwargs = reward_model_kwargs(config.model, config.lora, vocab_size=VOCAB, init_seed=1)
    assert kwargs["lora"]["r"] == 2 and kwargs["mlp_hidden_dims"] == [8] and kwargs["vocab_size"] == VOCAB
    model = build_model("reward_model", **kwargs)
    assert model.is_lora
