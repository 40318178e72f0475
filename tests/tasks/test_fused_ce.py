"""The chunked linear + cross-entropy (tasks/_fused_ce.py) and the engine's fused LM loss (engine/_fused.py)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from trainengine.engine._fused import (
    fused_lm_loss,
    fused_lm_loss_for,
    fused_loss_unsupported_reason,
    supports_fused_loss,
)
from trainengine.errors import TaskError
from trainengine.models import GPT, GPTConfig
from trainengine.tasks import LanguageModelingLoss
from trainengine.tasks._fused_ce import default_chunk_size, linear_cross_entropy


def _problem(n: int, c: int, v: int, dtype: torch.dtype, *, ignore_every: int = 5, seed: int = 0) -> tuple[Any, ...]:
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, c, generator=g, dtype=dtype).requires_grad_()
    w = (torch.randn(v, c, generator=g, dtype=dtype) * 0.5).requires_grad_()
    b = torch.randn(v, generator=g, dtype=dtype).requires_grad_()
    y = torch.randint(0, v, (n,), generator=g)
    if ignore_every:
        y[::ignore_every] = -100
    return h, w, b, y


def _reference(h: Any, w: Any, b: Any, y: Any, smoothing: float, scale: float) -> tuple[torch.Tensor, ...]:
    """Loss and gradients of the plain fp64 cross-entropy, for a loss multiplied by ``scale``."""
    hd, wd, bd = (t.detach().double().requires_grad_() for t in (h, w, b))
    ref = F.cross_entropy(hd @ wd.T + bd, y, reduction="sum", ignore_index=-100, label_smoothing=smoothing)
    grads = torch.autograd.grad(ref * scale, (hd, wd, bd))
    return (ref.detach(), *grads)


@pytest.mark.parametrize("chunk", [1, 8, 37, 64])  # 8 does not divide 37; 64 > N
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_value_and_gradients_match_fp64_reference(chunk: int, smoothing: float) -> None:
    h, w, b, y = _problem(37, 8, 50, torch.float64)
    loss, n = linear_cross_entropy(h, w, y, bias=b, chunk_size=chunk, label_smoothing=smoothing)
    # A scale other than 1 checks that the backward multiplies by grad_output.
    got = (loss.detach(), *torch.autograd.grad(loss * 2.5, (h, w, b)))
    want = _reference(h, w, b, y, smoothing, 2.5)
    assert loss.dtype == torch.float64 and int(n) == int((y != -100).sum()) == 29
    for a, r in zip(got, want, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-6, atol=1e-6 * float(r.abs().max()))


def test_fp32_inputs_within_fp32_tolerance_and_leading_dims() -> None:
    h, w, b, y = _problem(48, 16, 64, torch.float32)
    h3 = h.detach().view(4, 12, 16).requires_grad_()  # [B, T, C] with labels [B, T]
    loss, n = linear_cross_entropy(h3, w, y.view(4, 12), bias=b, chunk_size=7)
    assert int(n) == int((y != -100).sum())
    got = (loss.detach(), *torch.autograd.grad(loss, (h3, w, b)))
    want = _reference(h, w, b, y, 0.0, 1.0)
    assert loss.dtype == torch.float32 and got[1].shape == (4, 12, 16)
    for a, r in zip(got, want, strict=True):
        torch.testing.assert_close(a.double().reshape(r.shape), r, rtol=2e-5, atol=2e-5 * float(r.abs().max()))


def test_without_bias_and_without_weight_grad() -> None:
    h, w, _, y = _problem(20, 8, 30, torch.float64)
    w = w.detach()  # a frozen head: only the hidden gets a gradient
    loss, _ = linear_cross_entropy(h, w, y, chunk_size=6)
    (gh,) = torch.autograd.grad(loss, (h,))
    hd = h.detach().requires_grad_()
    ref = F.cross_entropy(hd @ w.T, y, reduction="sum")
    ref.backward()
    torch.testing.assert_close(loss, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gh, hd.grad, rtol=1e-10, atol=1e-10)


def test_all_ignored_labels_give_zero_loss_and_zero_targets() -> None:
    h, w, b, _ = _problem(9, 4, 11, torch.float64)
    y = torch.full((9,), -100)
    loss, n = linear_cross_entropy(h, w, y, bias=b, chunk_size=4)
    assert float(loss) == 0.0 and int(n) == 0
    grads = torch.autograd.grad(loss, (h, w, b))
    assert all(float(g.abs().max()) == 0.0 for g in grads)


def test_custom_ignore_index_and_no_grad_path() -> None:
    h, w, b, y = _problem(16, 4, 10, torch.float64, ignore_every=0)
    y[3] = 7  # 7 is the ignored label here
    ref = F.cross_entropy(h @ w.T + b, y, reduction="sum", ignore_index=7)
    with torch.no_grad():  # evaluation: the loss without the gradient work
        loss, n = linear_cross_entropy(h, w, y, bias=b, ignore_index=7, chunk_size=5)
    assert not loss.requires_grad and int(n) == int((y != 7).sum())
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-10, atol=1e-10)


def test_bf16_autocast_runs_the_matmul_in_bf16_and_the_loss_in_fp32() -> None:
    h, w, b, y = _problem(32, 16, 40, torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = linear_cross_entropy(h, w, y, bias=b, chunk_size=10)
        plain = F.cross_entropy(F.linear(h, w, b).float(), y, reduction="sum")
    got = torch.autograd.grad(loss, (h, w, b))
    want = torch.autograd.grad(plain, (h, w, b))
    assert loss.dtype == torch.float32 and got[0].dtype == got[1].dtype == torch.float32
    # Both computed the same bf16 logits: the losses agree to fp32 rounding, the gradients to bf16's.
    torch.testing.assert_close(loss, plain, rtol=1e-5, atol=1e-4)
    for a, r in zip(got, want, strict=True):
        torch.testing.assert_close(a, r, rtol=2e-2, atol=2e-2 * float(r.abs().max()))
    fp64 = _reference(h, w, b, y, 0.0, 1.0)[0]
    assert abs(float(loss) - float(fp64)) / float(fp64) < 1e-2  # bf16 logits, not worse


class _LargestTensor(TorchDispatchMode):
    """Records the most elements of any tensor an op returns (views included)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_no_tensor_of_the_full_logits_size_is_created() -> None:
    n, c, v, chunk = 64, 8, 256, 16  # N*V = 16384; one chunk's logits 4096; weight 2048
    h, w, b, y = _problem(n, c, v, torch.float32)
    with _LargestTensor() as fused:
        loss, _ = linear_cross_entropy(h, w, y, bias=b, chunk_size=chunk)
        loss.backward()
    with _LargestTensor() as plain:  # the counter does see a materialised [N, V]
        F.cross_entropy(F.linear(h, w, b), y, reduction="sum").backward()
    assert plain.largest >= n * v
    assert fused.largest <= chunk * v, f"a tensor of {fused.largest} elements (the logits are {n * v})"


def test_default_chunk_and_bad_arguments() -> None:
    # 2**26 // 50304 = 1334 rows -> 13 chunks, spread evenly (1261) and rounded up to a 128-row tile.
    assert default_chunk_size(16384, 50304) == 1280 and default_chunk_size(3, 50304) == 3
    assert default_chunk_size(1400, 50304) == 768  # two chunks of 700 -> 768, not 1334 + 66
    h, w, _, y = _problem(6, 4, 10, torch.float32)
    with pytest.raises(TaskError, match="labels are torch.int32"):
        linear_cross_entropy(h, w, y.int())
    with pytest.raises(TaskError, match="weight is"):
        linear_cross_entropy(h, w.T, y)
    with pytest.raises(TaskError, match="chunk_size is 0"):
        linear_cross_entropy(h, w, y, chunk_size=0)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_compiles_with_aot_eager(smoothing: float) -> None:
    # Under compile the gradient is one functional expression (no in-place scatter): same values.
    h, w, b, y = _problem(24, 8, 32, torch.float32)

    def step(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return linear_cross_entropy(h, w, y, bias=b, chunk_size=10, label_smoothing=smoothing)[0]

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    got = (compiled(h, w, b, y),)
    got += torch.autograd.grad(got[0], (h, w, b))
    want = (step(h, w, b, y),)
    want += torch.autograd.grad(want[0], (h, w, b))
    for a, r in zip(got, want, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5)


# --- the engine's fused LM loss ----------------------------------------------------------


def _tiny_gpt(**kw: Any) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=48, max_seq_len=16, d_model=16, n_heads=2, n_layers=1, **kw))


def _lm_batch(vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (3, 10), generator=g)
    labels = torch.roll(ids, -1, dims=1)  # next-token aligned, as the data gives them
    labels[:, -1] = -100
    labels[0, :4] = -100  # a masked prompt
    return ids, labels


def _compare_with_plain(model: nn.Module, inputs: Any, labels: torch.Tensor, logits_of: Any) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    loss_fn = LanguageModelingLoss()
    plain = loss_fn.loss_sum(logits_of(model, inputs), labels)
    want = torch.autograd.grad(plain, params)
    out = fused_lm_loss(model, inputs, labels, chunk_size=7)
    assert out is not None
    loss, n = out
    got = torch.autograd.grad(loss, params)
    assert int(n) == int(loss_fn.num_targets(labels))
    torch.testing.assert_close(loss, plain, rtol=1e-5, atol=1e-5)
    for a, r in zip(got, want, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("tie", [True, False])
def test_builtin_gpt_fused_loss_equals_plain_loss(tie: bool) -> None:
    model = _tiny_gpt(tie_weights=tie, bias=True)
    ids, labels = _lm_batch(48)
    assert torch.equal(model.lm_head(model.forward_hidden(ids)), model(ids))
    assert supports_fused_loss(model) and supports_fused_loss(torch.compile(model))  # the compiled wrapper unwraps
    _compare_with_plain(model, ids, labels, lambda m, x: m(x))
    _compare_with_plain(model, {"input_ids": ids}, labels, lambda m, x: m(x["input_ids"]))


def test_unsupported_models_get_none_with_a_reason() -> None:
    assert fused_lm_loss_for(nn.Linear(2, 2)) is None
    model = _tiny_gpt()
    handle = model.lm_head.register_forward_hook(lambda *a: None)
    assert "hooks" in (fused_loss_unsupported_reason(model) or "")
    handle.remove()
    assert supports_fused_loss(model)
    ids, labels = _lm_batch(48)
    assert fused_lm_loss(model, {"input_ids": ids, "logits_to_keep": 1}, labels) is None


def _hf_logits(model: nn.Module, inputs: Any) -> torch.Tensor:
    return model(**inputs).logits


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_hf_causal_lm_fused_loss_equals_plain_loss(arch: str) -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if arch == "gpt2":
        config = transformers.GPT2Config(
            vocab_size=48,
            n_positions=16,
            n_embd=16,
            n_layer=1,
            n_head=2,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
        )
        model = transformers.GPT2LMHeadModel(config)
    else:
        config = transformers.LlamaConfig(
            vocab_size=48,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=16,
            tie_word_embeddings=False,
        )
        model = transformers.LlamaForCausalLM(config)
    ids, labels = _lm_batch(48)
    mask = torch.ones_like(ids)
    mask[2, 7:] = 0  # right padding
    labels[2, 7:] = -100
    assert supports_fused_loss(model), fused_loss_unsupported_reason(model)
    _compare_with_plain(model, {"input_ids": ids, "attention_mask": mask}, labels, _hf_logits)
    # Soft-capped logits (Gemma 2 style) would change the loss: refused.
    model.config.final_logit_softcapping = 30.0
    assert "final_logit_softcapping" in (fused_loss_unsupported_reason(model) or "")


def test_peft_lora_model_takes_the_fused_path_unless_the_head_is_adapted() -> None:
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=48, n_positions=16, n_embd=16, n_layer=1, n_head=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0
    )
    model = peft.get_peft_model(  # as models/_lora.py builds it: a plain PeftModel
        transformers.GPT2LMHeadModel(config), peft.LoraConfig(r=2, target_modules=["c_attn"], lora_dropout=0.0)
    )
    for name, p in model.named_parameters():
        if "lora_B" in name:
            nn.init.normal_(p)  # non-zero adapters, so their gradients are not trivially equal
    ids, labels = _lm_batch(48)
    _compare_with_plain(model, {"input_ids": ids}, labels, _hf_logits)
    adapted_head = peft.get_peft_model(
        transformers.GPT2LMHeadModel(config), peft.LoraConfig(r=2, target_modules=["c_attn", "lm_head"])
    )
    assert "not a plain torch.nn.Linear" in (fused_loss_unsupported_reason(adapted_head) or "")
