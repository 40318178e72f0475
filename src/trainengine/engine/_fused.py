"""The fused language-model loss: final hidden states + the head's weight, never the full logits.

:func:`fused_lm_loss_for` looks at a model once and returns a :class:`FusedLMLoss` (or None when
the model cannot take the fused path); calling it on ``(inputs, labels)`` runs the model's body
and :func:`~trainengine.tasks._fused_ce.linear_cross_entropy` on its output, giving the same
``(loss_sum, num_targets)`` as ``LanguageModelingLoss`` on the model's logits.

Models that qualify:

- any module with a ``forward_hidden(input_ids)`` method and a plain ``nn.Linear`` ``lm_head``
  where ``forward(x) == lm_head(forward_hidden(x))`` (the built-in :class:`GPT`);
- Hugging Face causal LMs whose forward is exactly ``logits = lm_head(base_model(...)[0])``: the
  classes in :data:`HF_CAUSAL_LMS` (their forwards were read in transformers 5.x), with nothing
  in their config that rescales or soft-caps the logits (Gemma 2/3 ``final_logit_softcapping``,
  Cohere ``logit_scale``, Granite ``logits_scaling`` — those classes are not listed anyway),
  and also inside a PEFT LoRA wrapper (not prompt learning, no adapter on the head).

Everything else (a hooked or adapted head, forward hooks on the model, DDP, remote-code models,
``logits_to_keep`` in the inputs) gets None and the engine keeps the plain loss. Labels are the
data's, already next-token aligned: nothing is shifted here, and labels are never passed to a
Hugging Face model (which would shift them itself).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor, nn

from trainengine.tasks._fused_ce import linear_cross_entropy

__all__ = [
    "HF_CAUSAL_LMS",
    "FusedLMLoss",
    "fused_lm_loss_for",
    "fused_lm_loss",
    "supports_fused_loss",
    "fused_loss_unsupported_reason",
]

# transformers causal-LM classes whose forward computes logits = self.lm_head(base(...)[0]) and
# nothing after it (checked against the transformers 5.x sources; add a class only after reading
# its forward). Gemma2/3, Cohere, Granite, NanoChat, RecurrentGemma, ... rescale or soft-cap.
HF_CAUSAL_LMS = frozenset(
    {
        "BloomForCausalLM",
        "CodeGenForCausalLM",
        "DeepseekV3ForCausalLM",
        "FalconForCausalLM",
        "GemmaForCausalLM",
        "GlmForCausalLM",
        "Glm4ForCausalLM",
        "GPT2LMHeadModel",
        "GPTBigCodeForCausalLM",
        "GPTJForCausalLM",
        "GPTNeoForCausalLM",
        "GPTNeoXForCausalLM",
        "HeliumForCausalLM",
        "LlamaForCausalLM",
        "MistralForCausalLM",
        "MixtralForCausalLM",
        "MptForCausalLM",
        "OlmoForCausalLM",
        "Olmo2ForCausalLM",
        "OlmoeForCausalLM",
        "OPTForCausalLM",
        "PersimmonForCausalLM",
        "PhiForCausalLM",
        "Phi3ForCausalLM",
        "Qwen2ForCausalLM",
        "Qwen2MoeForCausalLM",
        "Qwen3ForCausalLM",
        "Qwen3MoeForCausalLM",
        "SmolLM3ForCausalLM",
        "StableLmForCausalLM",
        "Starcoder2ForCausalLM",
    }
)

# Config fields that change the logits after the head: any value other than these makes it unsafe.
_LOGIT_TRANSFORMS: dict[str, tuple[Any, ...]] = {
    "final_logit_softcapping": (None, 0, 0.0),
    "logit_scale": (None, 1, 1.0),
    "logits_scaling": (None, 1, 1.0),
    "output_logit_soft_cap": (None, 0, 0.0),
}
_WRAPPERS = {"DistributedDataParallel", "DataParallel", "FullyShardedDataParallel"}


class FusedLMLoss:
    """``(inputs, labels) -> (loss_sum, num_targets)`` for one model, resolved once.

    Args:
        body: ``inputs -> hidden [B, T, C]`` (everything before the head).
        head: The output ``nn.Linear`` (``weight [V, C]``, optional bias).
        ignore_index, label_smoothing, chunk_size: As in ``linear_cross_entropy``.
    """

    def __init__(
        self,
        body: Callable[[Any], Tensor],
        head: nn.Linear,
        *,
        ignore_index: int = -100,
        label_smoothing: float = 0.0,
        chunk_size: int | None = None,
    ) -> None:
        self.body = body
        self.head = head
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.chunk_size = chunk_size

    def __call__(self, inputs: Any, labels: Tensor) -> tuple[Tensor, Tensor]:
        hidden = self.body(inputs)  # (B, T, C), under the caller's autocast
        return linear_cross_entropy(
            hidden,
            self.head.weight,
            labels,
            bias=self.head.bias,
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
            chunk_size=self.chunk_size,
        )


def _has_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks or hasattr(module, "_hf_hook"))


def _plain_head(head: Any, owner: str) -> nn.Linear | str:
    if type(head) is not nn.Linear:  # a subclass (LoRA, quantised, ...) may compute something else
        kind = f"{type(head).__module__}.{type(head).__qualname__}"
        return f"{owner}'s output head is {kind}, not a plain torch.nn.Linear (an adapter or a quantised head)"
    if _has_hooks(head):
        return f"{owner}'s output head has forward hooks the fused loss would bypass"
    return head


def _resolve(model: nn.Module) -> tuple[Callable[[Any], Tensor], nn.Linear] | str:
    """``(body, head)`` for a model that can take the fused loss, else why it cannot."""
    # torch.compile's wrapper: the fused call goes to the module inside (compile the step around it).
    inner = getattr(model, "_orig_mod", None)
    while isinstance(inner, nn.Module):
        model, inner = inner, getattr(inner, "_orig_mod", None)
    name = type(model).__name__
    if name in _WRAPPERS:
        return f"{name} wraps the model: its forward drives the gradient reduction, which calling the body bypasses"
    if _has_hooks(model):
        return f"{name} has forward hooks the fused loss would bypass"
    forward_hidden = getattr(model, "forward_hidden", None)
    if callable(forward_hidden):
        head = _plain_head(getattr(model, "lm_head", None), name)
        if isinstance(head, str):
            return head
        return (lambda inputs: forward_hidden(_input_ids(inputs))), head
    module = type(model).__module__
    if name in {"PeftModel", "PeftModelForCausalLM"} and module.startswith("peft."):
        # LoRA and the like: the forward only calls the wrapped model (adapters live in its layers).
        config = getattr(model, "active_peft_config", None)
        if config is None or getattr(config, "is_prompt_learning", True):
            return "a PEFT prompt-learning model adds virtual tokens in its forward"
        inner = model.get_base_model()  # type: ignore[operator]  # PEFT's method
        if _has_hooks(inner):
            return f"{type(inner).__name__} has forward hooks the fused loss would bypass"
        model, name, module = inner, type(inner).__name__, type(inner).__module__
    if not module.startswith("transformers."):
        return f"{name} has no forward_hidden(input_ids) + lm_head and is not a Hugging Face causal LM"
    if name not in HF_CAUSAL_LMS:
        return (
            f"{name} is not a Hugging Face causal LM known to compute logits = lm_head(hidden) and nothing "
            "after it (soft-capping or scaled logits would change the loss)"
        )
    config = getattr(model, "config", None)
    for attr, neutral in _LOGIT_TRANSFORMS.items():
        value = getattr(config, attr, None)
        if value not in neutral:
            return f"{name}'s config sets {attr}={value!r}: the logits are transformed after the head"
    base = getattr(model, "base_model", None)
    if not isinstance(base, nn.Module) or base is model:
        return f"{name} has no separate base model to give the hidden states"
    get_head = getattr(model, "get_output_embeddings", None)
    head = _plain_head(get_head() if callable(get_head) else None, name)
    if isinstance(head, str):
        return head

    def hf_body(inputs: Any) -> Tensor:
        if isinstance(inputs, Tensor):
            out = base(inputs)
        elif isinstance(inputs, Mapping):
            out = base(**inputs)
        else:
            out = base(inputs)
        hidden = getattr(out, "last_hidden_state", None)
        return hidden if isinstance(hidden, Tensor) else out[0]

    return hf_body, head


def _input_ids(inputs: Any) -> Tensor:
    if isinstance(inputs, Tensor):
        return inputs
    if isinstance(inputs, Mapping) and set(inputs) == {"input_ids"}:
        return inputs["input_ids"]
    raise TypeError(f"forward_hidden takes the token ids alone; got inputs with keys {sorted(inputs)}")


def fused_loss_unsupported_reason(model: nn.Module) -> str | None:
    """Why ``model`` cannot take the fused loss, or None when it can.

    Example:
        >>> from torch import nn
        >>> fused_loss_unsupported_reason(nn.Linear(2, 2))
        'Linear has no forward_hidden(input_ids) + lm_head and is not a Hugging Face causal LM'
    """
    resolved = _resolve(model)
    return resolved if isinstance(resolved, str) else None


def supports_fused_loss(model: nn.Module) -> bool:
    """True when :func:`fused_lm_loss_for` gives a fused loss for ``model``.

    Example:
        >>> from trainengine.models import GPT, GPTConfig
        >>> supports_fused_loss(GPT(GPTConfig(vocab_size=32, d_model=16, n_heads=2, n_layers=1)))
        True
    """
    return fused_loss_unsupported_reason(model) is None


def fused_lm_loss_for(
    model: nn.Module, *, ignore_index: int = -100, label_smoothing: float = 0.0, chunk_size: int | None = None
) -> FusedLMLoss | None:
    """A :class:`FusedLMLoss` for ``model`` (resolve once, call every step), or None if unsupported.

    A ``torch.compile``d module is unwrapped: the body then runs uncompiled unless the caller
    compiles the function that makes this call (the engine's step does).
    """
    resolved = _resolve(model)
    if isinstance(resolved, str):
        return None
    body, head = resolved
    return FusedLMLoss(body, head, ignore_index=ignore_index, label_smoothing=label_smoothing, chunk_size=chunk_size)


def fused_lm_loss(
    model: nn.Module,
    inputs: Any,
    labels: Tensor,
    *,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor] | None:
    """``(loss_sum, num_targets)`` of ``model`` on ``(inputs, labels)`` without the full logits, or None.

    The same values as ``LanguageModelingLoss(...).loss_sum(model(inputs) logits, labels)`` and
    ``.num_targets(labels)``; None when the model does not qualify (see the module docstring),
    and also when ``inputs`` asks the model for something the fused path does not reproduce
    (``logits_to_keep``, PEFT's ``adapter_names``). Resolves the model on every call: hot loops keep the result of
    :func:`fused_lm_loss_for` instead.

    Example:
        >>> import torch
        >>> from trainengine.models import GPT, GPTConfig
        >>> model = GPT(GPTConfig(vocab_size=32, d_model=16, n_heads=2, n_layers=1))
        >>> ids = torch.randint(0, 32, (2, 8))
        >>> loss_sum, n = fused_lm_loss(model, ids, ids)
        >>> int(n)
        16
    """
    if isinstance(inputs, Mapping) and (
        {"logits_to_keep", "num_logits_to_keep", "labels", "adapter_names"} & set(inputs)
    ):
        return None
    loss = fused_lm_loss_for(model, ignore_index=ignore_index, label_smoothing=label_smoothing, chunk_size=chunk_size)
    return None if loss is None else loss(inputs, labels)
