"""GPT: shapes, causality, tying, init, FLOPs/param formulas, generation, config validation."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from trainengine.errors import ConfigError
from trainengine.models import GPT, GPTConfig

TINY = GPTConfig(vocab_size=61, max_seq_len=16, d_model=32, n_heads=4, n_layers=2)


def _tiny(**changes: object) -> GPT:
    torch.manual_seed(0)
    return GPT(dataclasses.replace(TINY, **changes)).eval()


def test_forward_shape_up_to_max_seq_len() -> None:
    model = _tiny()
    for T in (1, 7, TINY.max_seq_len):
        ids = torch.randint(0, TINY.vocab_size, (3, T))
        assert model(ids).shape == (3, T, TINY.vocab_size)


def test_changing_a_future_token_leaves_earlier_logits_unchanged() -> None:
    model = _tiny()
    ids = torch.randint(0, TINY.vocab_size, (2, 12))
    t = 7
    changed = ids.clone()
    changed[:, t] = (changed[:, t] + 1) % TINY.vocab_size
    a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :t], b[:, :t])
    # ... and the change is visible from position t on, so the check above is not vacuous.
    assert not torch.allclose(a[:, t:], b[:, t:])


def test_too_long_sequence_raises_value_error_naming_both_lengths() -> None:
    model = _tiny()
    ids = torch.zeros(1, TINY.max_seq_len + 1, dtype=torch.long)
    with pytest.raises(ValueError, match=r"sequence length 17 .*max_seq_len 16"):
        model(ids)


def test_non_2d_input_raises() -> None:
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        _tiny()(torch.zeros(5, dtype=torch.long))


def test_tied_weights_share_storage_and_stay_shared_through_training() -> None:
    model = _tiny()
    wte, head = model.transformer.wte.weight, model.lm_head.weight
    assert wte is head and wte.data_ptr() == head.data_ptr()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randint(0, TINY.vocab_size, (2, 8))).logsumexp(-1).mean().backward()
    opt.step()
    torch.testing.assert_close(model.transformer.wte.weight, model.lm_head.weight)


def test_untied_weights_are_separate_and_cost_one_extra_table() -> None:
    tied, untied = _tiny(), _tiny(tie_weights=False)
    assert untied.transformer.wte.weight.data_ptr() != untied.lm_head.weight.data_ptr()
    extra = TINY.vocab_size * TINY.d_model
    assert untied.num_parameters() - tied.num_parameters() == extra


def _expected_non_embedding_params(cfg: GPTConfig) -> int:
    # Written out from the architecture, not from the module: per block two LayerNorms,
    # fused qkv (d x 3d), output proj (d x d), MLP (d x f, f x d); then ln_f and the head.
    d, f = cfg.d_model, cfg.ff_dim
    ln = d * (2 if cfg.bias else 1)
    block = 2 * ln + 3 * d * d + d * d + d * f + f * d
    if cfg.bias:
        block += 3 * d + d + f + d
    return cfg.n_layers * block + ln + cfg.vocab_size * d


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("tie", [True, False])
def test_num_parameters_and_flops_match_the_formula(bias: bool, tie: bool) -> None:
    cfg = dataclasses.replace(TINY, bias=bias, tie_weights=tie, d_ff=48)
    model = GPT(cfg)
    n = _expected_non_embedding_params(cfg)
    assert model.num_parameters(exclude_embeddings=True) == n
    lookup_tables = cfg.max_seq_len * cfg.d_model + (0 if tie else cfg.vocab_size * cfg.d_model)
    assert model.num_parameters() == n + lookup_tables
    attn = 12 * cfg.n_layers * cfg.d_model * 10
    assert model.num_flops_per_token(seq_len=10) == 6 * n + attn
    assert model.num_flops_per_token() == 6 * n + 12 * cfg.n_layers * cfg.d_model * cfg.max_seq_len
    assert model.num_flops_per_token(seq_len=10, include_attention=False) == 6 * n
    assert isinstance(model.num_flops_per_token(), int)


def test_gpt2_small_has_the_published_124m_parameters() -> None:
    cfg = GPTConfig.gpt2_small(vocab_size=50257)
    assert (cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.ff_dim) == (12, 12, 768, 3072)
    with torch.device("meta"):  # no memory, no init cost: only shapes matter here
        model = GPT(cfg)
    # GPT-2 small (HF "gpt2"): 124,439,808 with position embeddings, head tied to wte.
    assert model.num_parameters() == 124_439_808
    assert model.num_parameters(exclude_embeddings=True) == 124_439_808 - 1024 * 768


def test_gpt2_small_preset_defaults_and_overrides() -> None:
    cfg = GPTConfig.gpt2_small()
    assert (cfg.vocab_size, cfg.max_seq_len, cfg.bias, cfg.tie_weights) == (50304, 1024, True, True)
    assert GPTConfig.gpt2_small(bias=False, dropout=0.1).bias is False


def test_init_follows_gpt2_with_scaled_residual_projections() -> None:
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=512, max_seq_len=64, d_model=256, n_heads=4, n_layers=8)
    model = GPT(cfg)
    residual_std = 0.02 / math.sqrt(2 * cfg.n_layers)  # = 0.005
    for i in range(cfg.n_layers):
        block = model.transformer.h[i]
        assert block.attn.c_attn.weight.std().item() == pytest.approx(0.02, rel=0.05)
        assert block.mlp.c_fc.weight.std().item() == pytest.approx(0.02, rel=0.05)
        assert block.attn.c_proj.weight.std().item() == pytest.approx(residual_std, rel=0.05)
        assert block.mlp.c_proj.weight.std().item() == pytest.approx(residual_std, rel=0.05)
    assert model.transformer.wpe.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_every_parameter_receives_a_gradient() -> None:
    model = _tiny(bias=True).train()
    ids = torch.randint(0, TINY.vocab_size, (4, 10))
    logits = model(ids[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_generate_appends_tokens_and_keeps_the_prompt() -> None:
    model = _tiny()
    prompt = torch.randint(0, TINY.vocab_size, (2, 5))
    out = model.generate(prompt, max_new_tokens=6)
    assert out.shape == (2, 11)
    assert torch.equal(out[:, :5], prompt)
    assert int(out.min()) >= 0 and int(out.max()) < TINY.vocab_size


def test_generate_with_top_k_1_is_deterministic_and_greedy() -> None:
    model = _tiny()
    prompt = torch.randint(0, TINY.vocab_size, (2, 4))
    torch.manual_seed(1)
    a = model.generate(prompt, max_new_tokens=8, top_k=1)
    torch.manual_seed(2)
    b = model.generate(prompt, max_new_tokens=8, top_k=1, temperature=1.5)
    assert torch.equal(a, b)
    # Greedy by hand: append the argmax of the last position one token at a time.
    idx = prompt
    for _ in range(8):
        idx = torch.cat([idx, model(idx)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(a, idx)
    assert torch.equal(model.generate(prompt, max_new_tokens=8, temperature=0.0), idx)


def test_generate_crops_context_beyond_max_seq_len_and_restores_train_mode() -> None:
    model = _tiny(dropout=0.5).train()
    prompt = torch.randint(0, TINY.vocab_size, (1, TINY.max_seq_len + 3))
    out = model.generate(prompt, max_new_tokens=4, top_k=1)
    assert out.shape == (1, TINY.max_seq_len + 7)
    assert model.training  # mode restored
    # Sampling ran in eval mode (no dropout): greedy output is reproducible.
    assert torch.equal(out, model.generate(prompt, max_new_tokens=4, top_k=1))


def test_sampling_is_reproducible_with_a_generator() -> None:
    model = _tiny()
    prompt = torch.zeros(3, 2, dtype=torch.long)
    a = model.generate(prompt, 10, generator=torch.Generator().manual_seed(5))
    b = model.generate(prompt, 10, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_d_ff_defaults_to_four_times_d_model_and_follows_replace() -> None:
    cfg = GPTConfig(d_model=64, n_heads=4)
    assert cfg.ff_dim == 256
    assert dataclasses.replace(cfg, d_model=96).ff_dim == 384
    assert GPTConfig(d_ff=100).ff_dim == 100
    model = GPT(GPTConfig(d_model=32, n_heads=2, d_ff=40))
    assert model.transformer.h[0].mlp.c_fc.out_features == 40


def test_config_reports_every_problem_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        GPTConfig(vocab_size=0, dropout=1.5, n_layers=-1)
    assert len(info.value.problems) == 3
    text = str(info.value)
    assert "vocab_size" in text and "dropout" in text and "n_layers" in text


def test_config_rejects_heads_not_dividing_width_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match=r"d_model: 100 is not divisible by n_heads=3.*=99"):
        GPTConfig(d_model=100, n_heads=3)
