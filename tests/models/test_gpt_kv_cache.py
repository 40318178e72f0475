"""GPT.generate's KV cache gives the uncached path's logits and tokens; sampling filters (top-k, top-p)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from trainengine.models import GPT, GPTConfig
from trainengine.models._gpt import check_sampling, sample_next_token

CFG = GPTConfig(vocab_size=61, max_seq_len=12, d_model=32, n_heads=4, n_layers=2)


def _model() -> GPT:
    torch.manual_seed(0)
    return GPT(CFG).eval()


def test_cached_logits_equal_the_full_forward_position_by_position() -> None:
    model = _model()
    ids = torch.randint(0, CFG.vocab_size, (2, CFG.max_seq_len))
    full = model(ids)  # (B, T, V)
    caches: list[list[torch.Tensor]] = [[] for _ in range(CFG.n_layers)]
    # A 5-token prefill, a 3-token chunk (the masked case: cached keys + causal new ones), then one at a time.
    pieces = [model._forward_cached(ids[:, :5], caches), model._forward_cached(ids[:, 5:8], caches)]
    pieces += [model._forward_cached(ids[:, t : t + 1], caches) for t in range(8, CFG.max_seq_len)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)
    assert caches[0][0].shape == (2, CFG.n_heads, CFG.max_seq_len, CFG.d_model // CFG.n_heads)


@pytest.mark.parametrize("prompt_len", [1, 5, CFG.max_seq_len + 3])
def test_greedy_tokens_with_and_without_cache_are_identical(prompt_len: int) -> None:
    # 20 new tokens from a 5-token prompt cross max_seq_len (12): the window slides and the cache restarts.
    model = _model()
    prompt = torch.randint(0, CFG.vocab_size, (3, prompt_len))
    cached = model.generate(prompt, 20, temperature=0)
    uncached = model.generate(prompt, 20, temperature=0, use_cache=False)
    assert torch.equal(cached, uncached)
    # Independent reference: greedy by hand over the cropped context.
    idx = prompt
    for _ in range(20):
        idx = torch.cat([idx, model(idx[:, -CFG.max_seq_len :])[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(cached, idx)


def test_seeded_sampling_with_and_without_cache_draws_the_same_tokens() -> None:
    model = _model()
    prompt = torch.randint(0, CFG.vocab_size, (2, 3))
    kwargs: dict[str, Any] = {"temperature": 0.9, "top_k": 20, "top_p": 0.95}
    a = model.generate(prompt, 15, generator=torch.Generator().manual_seed(7), **kwargs)
    b = model.generate(prompt, 15, generator=torch.Generator().manual_seed(7), use_cache=False, **kwargs)
    c = model.generate(prompt, 15, generator=torch.Generator().manual_seed(8), **kwargs)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)  # the seed matters: the draws are random, not greedy


def test_cache_runs_each_position_once_until_the_window_is_full() -> None:
    model = _model()
    seen: list[int] = []
    hook = model.transformer.h[0].attn.c_attn.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[1]))
    try:
        model.generate(torch.zeros(1, 4, dtype=torch.long), 6, temperature=0)
        cached = list(seen)
        seen.clear()
        model.generate(torch.zeros(1, 4, dtype=torch.long), 6, temperature=0, use_cache=False)
    finally:
        hook.remove()
    assert cached == [4, 1, 1, 1, 1, 1]  # the prompt once, then one new position per token
    assert seen == [4, 5, 6, 7, 8, 9]  # without a cache the whole context every time


def test_top_p_keeps_the_smallest_set_reaching_p_and_top_k_the_k_best() -> None:
    logits = torch.log(torch.tensor([[0.05, 0.5, 0.15, 0.3]])).repeat(400, 1)  # (400, V)
    gen = torch.Generator().manual_seed(0)
    # Sorted: 0.5, 0.3 (sum 0.8 >= 0.7), so 0.15 and 0.05 are cut.
    assert set(sample_next_token(logits, 1.0, None, 0.7, gen).flatten().tolist()) == {1, 3}
    assert set(sample_next_token(logits, 1.0, None, 0.85, gen).flatten().tolist()) == {1, 2, 3}
    assert set(sample_next_token(logits, 1.0, 1, None, gen).flatten().tolist()) == {1}
    assert set(sample_next_token(logits, 1.0, None, 1e-6, gen).flatten().tolist()) == {1}  # the best always stays
    # Without filters every token appears.
    assert set(sample_next_token(logits, 1.0, None, None, gen).flatten().tolist()) == {0, 1, 2, 3}


def test_out_of_range_sampling_options_are_refused_together() -> None:
    with pytest.raises(ValueError) as info:
        check_sampling(-1.0, top_k=0, top_p=1.5)
    message = str(info.value)
    assert "temperature must be a finite number >= 0" in message and "-1.0" in message
    assert "top_k must be an integer >= 1" in message and "top_p must be in (0, 1]" in message
    with pytest.raises(ValueError, match="temperature"):
        check_sampling(math.nan)
    with pytest.raises(ValueError, match=r"top_p .* got 0"):
        _model().generate(torch.zeros(1, 2, dtype=torch.long), 3, top_p=0)
