"""LoRA adapters (PEFT) on a Hugging Face backbone, and trainable-parameter bookkeeping.

:func:`apply_lora` wraps a ``transformers`` model in a PEFT model whose only trainable weights are
the low-rank adapters (plus biases with ``bias: all | lora_only``); :func:`default_target_modules`
picks the usual attention projections per architecture from PEFT's own table, and
:func:`parameter_counts` gives the trainable / total split logged at build time.

``peft`` is imported inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from trainengine.errors import ConfigError

__all__ = ["lora_settings", "apply_lora", "default_target_modules", "linear_module_names", "parameter_counts"]


def lora_settings(section: Any) -> dict[str, Any]:
    """The ``lora:`` section as the plain JSON dict the model spec stores.

    Args:
        section: A ``LoraSection`` or a dict with its field names (``lora_r`` or ``r``,
            ``lora_alpha``, ``lora_dropout``, ``target_modules``, ``bias``).

    Returns:
        ``{"r", "lora_alpha", "lora_dropout", "target_modules", "bias"}`` (``target_modules``
        empty = the architecture's defaults).

    Example:
        >>> lora_settings({"lora_r": 4, "lora_alpha": 8})["r"]
        4
    """

    def get(name: str, default: Any) -> Any:
        if isinstance(section, dict):
            return section.get(name, default)
        return getattr(section, name, default)

    return {
        "r": int(get("lora_r", get("r", 16))),
        "lora_alpha": int(get("lora_alpha", 32)),
        "lora_dropout": float(get("lora_dropout", 0.1)),
        "target_modules": [str(m) for m in (get("target_modules", None) or [])],
        "bias": str(get("bias", "none")),
    }


def linear_module_names(model: nn.Module) -> list[str]:
    """The distinct last names of ``model``'s Linear-like submodules (what ``target_modules`` can name).

    GPT-2's ``Conv1D`` projections count as linear layers (PEFT adapts them too).

    Example:
        >>> from torch import nn
        >>> linear_module_names(nn.Sequential(nn.Linear(2, 2)))
        ['0']
    """
    names: set[str] = set()
    for full_name, module in model.named_modules():
        if not full_name:
            continue
        if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D":
            names.add(full_name.rsplit(".", 1)[-1])
    return sorted(names)


def default_target_modules(model: nn.Module) -> list[str]:
    """The modules LoRA adapts by default for ``model``'s architecture (PEFT's own table).

    Args:
        model: A ``transformers`` model (its ``config.model_type`` selects the entry).

    Returns:
        Module names such as ``["q_proj", "v_proj"]`` (Llama, Qwen2, Mistral) or ``["c_attn"]`` (GPT-2).

    Raises:
        ConfigError: The architecture is not in PEFT's table; the message lists the linear module
            names found in the model so ``lora.target_modules`` can be set.
    """
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as table

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    targets = table.get(model_type) if isinstance(model_type, str) else None
    if not targets:
        found = ", ".join(linear_module_names(model)) or "(none)"
        raise ConfigError(
            f"lora.target_modules is empty and there is no default for model_type {model_type!r}; "
            f"set lora.target_modules to some of the model's linear layers: {found} "
            "(usually the attention projections, e.g. [q_proj, v_proj])"
        )
    return list(targets)


def apply_lora(backbone: nn.Module, settings: Mapping[str, Any]) -> nn.Module:
    """Wrap ``backbone`` in a PEFT LoRA model: its weights frozen, only the adapters (and chosen biases) train.

    Args:
        backbone: A ``transformers`` model (e.g. from ``AutoModel``).
        settings: ``r``, ``lora_alpha``, ``lora_dropout``, ``target_modules``, ``bias``.

    Returns:
        The ``peft.PeftModel`` (call ``merge_and_unload()`` on it to fold the adapters back in).

    Raises:
        ConfigError: ``target_modules`` names no module of the backbone, or is empty for an
            architecture without a default (both messages list the module names there are).
    """
    from peft import LoraConfig, get_peft_model

    targets: Sequence[str] = settings.get("target_modules") or default_target_modules(backbone)
    present = {name.rsplit(".", 1)[-1] for name, _ in backbone.named_modules()}
    unknown = [t for t in targets if t not in present]
    if unknown:
        found = ", ".join(linear_module_names(backbone)) or "(none)"
        raise ConfigError(
            f"lora.target_modules names {', '.join(map(repr, unknown))}, which the backbone "
            f"({type(backbone).__name__}) does not have; its linear layers are: {found}"
        )
    lora_config = LoraConfig(
        r=int(settings["r"]),
        lora_alpha=int(settings["lora_alpha"]),
        lora_dropout=float(settings["lora_dropout"]),
        target_modules=list(targets),
        bias=settings.get("bias", "none"),
    )
    return get_peft_model(backbone, lora_config)


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Trainable and total parameters of ``model`` (each shared tensor once).

    Example:
        >>> from torch import nn
        >>> layer = nn.Linear(3, 2)
        >>> layer.bias.requires_grad_(False)  # doctest: +ELLIPSIS
        Parameter containing:...
        >>> parameter_counts(layer)
        {'trainable': 6, 'total': 8}
    """
    trainable = total = 0
    for p in model.parameters():  # parameters() yields a tied tensor once
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return {"trainable": trainable, "total": total}
