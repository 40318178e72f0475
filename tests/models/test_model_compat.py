"""Every built-in model under bf16 autocast, torch.compile, and state_dict round trips."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import torch
from torch import nn

from trainengine.models import GPT, MLP, GPTConfig, SmallCNN

TINY_GPT = GPTConfig(vocab_size=64, max_seq_len=16, d_model=32, n_heads=4, n_layers=2)

# name -> (builder, example input)
CASES: dict[str, tuple[Callable[[], nn.Module], Callable[[], torch.Tensor]]] = {
    "mlp": (lambda: MLP(64, 10, norm=True), lambda: torch.randn(4, 1, 8, 8)),
    "cnn": (lambda: SmallCNN(), lambda: torch.randn(4, 1, 8, 8)),
    "gpt": (lambda: GPT(TINY_GPT), lambda: torch.randint(0, 64, (4, 12))),
    # The other switches: dropout active in training, biases, untied head.
    "gpt_variant": (
        lambda: GPT(dataclasses.replace(TINY_GPT, dropout=0.1, bias=True, tie_weights=False)),
        lambda: torch.randint(0, 64, (4, 12)),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bf16_autocast_forward_and_backward_on_cpu(name: str) -> None:
    build, make_input = CASES[name]
    torch.manual_seed(0)
    model, x = build(), make_input()
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.bfloat16
    assert torch.isfinite(out).all()
    out.float().square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    # bf16 keeps about 3 significant digits: the result must still track the fp32 one.
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(x).float()
    with torch.no_grad():
        full = model(x)
    torch.testing.assert_close(low, full, atol=0.1, rtol=0.1)


@pytest.mark.parametrize("name", list(CASES))
def test_state_dict_keys_are_stable_and_round_trip(name: str) -> None:
    build, make_input = CASES[name]
    torch.manual_seed(0)
    a = build().eval()
    torch.manual_seed(1)
    b = build().eval()
    assert list(a.state_dict()) == list(b.state_dict())
    x = make_input()
    assert not torch.allclose(a(x), b(x))  # different seeds, different weights
    b.load_state_dict(a.state_dict(), strict=True)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def test_gpt_state_dict_uses_gpt2_names() -> None:
    keys = set(GPT(TINY_GPT).state_dict())
    expected = {
        "transformer.wte.weight",
        "transformer.wpe.weight",
        "transformer.h.1.ln_1.weight",
        "transformer.h.1.attn.c_attn.weight",
        "transformer.h.1.attn.c_proj.weight",
        "transformer.h.1.mlp.c_fc.weight",
        "transformer.h.1.mlp.c_proj.weight",
        "transformer.ln_f.weight",
        "lm_head.weight",
    }
    assert expected <= keys
    assert not any(k.endswith(".bias") for k in keys)  # bias=False by default
    assert not any("mask" in k for k in keys)  # causal mask lives inside SDPA, not a buffer


@pytest.mark.parametrize("name", list(CASES))
def test_forward_traces_as_one_graph(name: str) -> None:
    # fullgraph=True turns any graph break (.item(), data-dependent branch) into an error;
    # the "eager" backend checks tracing without paying for code generation.
    build, make_input = CASES[name]
    torch._dynamo.reset()
    model, x = build().train(), make_input()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    compiled(x).sum().backward()


@pytest.mark.slow
def test_gpt_inductor_compile_matches_eager() -> None:
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = GPT(TINY_GPT).eval()
    x = torch.randint(0, 64, (2, 16))
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), atol=1e-4, rtol=1e-4)
