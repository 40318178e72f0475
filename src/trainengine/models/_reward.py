"""A process reward model: a Hugging Face backbone, per-step pooling and an MLP head with a sigmoid.

:func:`build_reward_model` is the ``"reward_model"`` entry of the model registry
(``model.architecture: reward_model``). The backbone is loaded from ``name_or_path`` (a local
folder, or a hub id where the network allows) or built from ``backbone_config`` with random
weights; with ``lora`` set only the LoRA adapters and the head train, with ``freeze_backbone``
only the head, otherwise everything (full fine-tuning).

The whole build runs under a forked RNG seeded with ``init_seed``: the same arguments give the
same weights, bit for bit, and the caller's RNG stream is left untouched. That is what lets a
checkpoint of a LoRA or frozen-backbone run hold only the weights that train
(:meth:`RewardModel.checkpoint_state_dict`): rebuilding from the model spec recreates the frozen
base exactly (a randomly initialised one from the seed, a loaded one from its folder).

``transformers`` and ``peft`` are imported inside the functions (the registry imports this module
lazily anyway).
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainengine.errors import ConfigError, DataError
from trainengine.models._common import ACTIVATIONS, check_choice, check_dropout, check_positive_int, make_activation
from trainengine.models._lora import apply_lora, lora_settings, parameter_counts
from trainengine.models._spec import attach_spec

__all__ = ["RewardModel", "build_reward_model", "reward_model_kwargs"]

logger = logging.getLogger("trainengine")

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class RewardModel(nn.Module):
    """Scores every reasoning step: backbone hidden state at each step's last token -> MLP -> sigmoid.

    Args:
        backbone: A ``transformers`` base model (``AutoModel``, no LM head) or a PEFT model
            wrapping one; called as ``backbone(input_ids=..., attention_mask=...)`` and read
            through ``.last_hidden_state``.
        hidden_size: Width of the backbone's hidden states.
        mlp_hidden_dims: Hidden widths of the head; ``()`` gives a linear head.
        mlp_dropout: Dropout after each hidden activation of the head, in [0, 1).
        activation: ``gelu``, ``relu``, ``silu`` or ``tanh``.

    Raises:
        ConfigError: An argument is out of range (all problems in one message).

    Example:
        >>> from transformers import LlamaConfig, LlamaModel
        >>> cfg = LlamaConfig(
        ...     vocab_size=50,
        ...     hidden_size=16,
        ...     intermediate_size=32,
        ...     num_hidden_layers=1,
        ...     num_attention_heads=2,
        ...     num_key_value_heads=2,
        ... )
        >>> model = RewardModel(LlamaModel(cfg), 16, mlp_hidden_dims=(8,))
        >>> ids = torch.randint(0, 50, (2, 6))
        >>> model(ids, step_positions=torch.tensor([[2, 5], [3, 0]])).shape
        torch.Size([2, 2])
    """

    def __init__(
        self,
        backbone: nn.Module,
        hidden_size: int,
        mlp_hidden_dims: Sequence[int] = (1024, 256),
        mlp_dropout: float = 0.1,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        problems: list[str] = []
        check_positive_int(problems, "hidden_size", hidden_size)
        if isinstance(mlp_hidden_dims, (int, str)) or not isinstance(mlp_hidden_dims, Sequence):
            problems.append(
                f"model.mlp_hidden_dims: must be a list of widths like [1024, 256], got {mlp_hidden_dims!r}"
            )
            mlp_hidden_dims = ()
        for i, width in enumerate(mlp_hidden_dims):
            check_positive_int(problems, f"model.mlp_hidden_dims[{i}]", width)
        check_dropout(problems, "model.mlp_dropout", mlp_dropout)
        check_choice(problems, "model.activation", activation, tuple(ACTIVATIONS))
        if problems:
            raise ConfigError(problems, prefix="invalid reward model arguments")
        self.backbone = backbone
        layers: list[nn.Module] = []
        width_in = hidden_size
        for width in mlp_hidden_dims:
            layers += [nn.Linear(width_in, width), make_activation(activation), nn.Dropout(mlp_dropout)]
            width_in = width
        layers.append(nn.Linear(width_in, 1))
        self.head = nn.Sequential(*layers)  # float32 even on a bf16 backbone (see forward)
        self.hidden_size = hidden_size
        # Parameters that ever trained: the adapter-only checkpoint keeps them (see checkpoint_state_dict).
        self._ever_trainable: set[str] = set()

    @property
    def is_lora(self) -> bool:
        """True when the backbone carries PEFT LoRA adapters."""
        return hasattr(self.backbone, "merge_and_unload")

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        step_positions: torch.Tensor | None = None,
        step_mask: torch.Tensor | None = None,
        source_ids: torch.Tensor | None = None,
        **_: Any,
    ) -> torch.Tensor:
        """Score each step: ``[B, S]`` in (0, 1) (any value at padding steps).

        Args:
            input_ids: int64 ``[B, T]`` token ids.
            attention_mask: ``[B, T]``, 1 for real tokens (None = all real).
            step_positions: int64 ``[B, S]``, the token index of each step's last token (0 for
                padding steps). None scores every token: ``[B, T]`` (what an exported bundle
                serves: read the scores at your steps' last tokens).
            step_mask: bool ``[B, S]`` (unused: the loss masks padding steps by their labels).
            source_ids: int64 ``[B]`` (unused; per-data-set metrics read it from the batch).

        Raises:
            DataError: ``input_ids`` is not ``[B, T]``, or a step position lies outside the sequence.
        """
        if input_ids.dim() != 2:
            raise DataError(f"reward model expects input_ids of shape [B, T], got {tuple(input_ids.shape)}")
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # [B, T, H]
        if step_positions is not None:
            if step_positions.shape[0] != input_ids.shape[0] or step_positions.dim() != 2:
                raise DataError(
                    f"step_positions must be [B, S] with B={input_ids.shape[0]}, got {tuple(step_positions.shape)}"
                )
            length = input_ids.shape[1]
            # Checked where it is free (a CPU tensor): on an accelerator the check would stall
            # every step on a device-to-host copy; there the positions come from the data set's
            # own encoding (or the server's validated requests).
            on_host = step_positions.device.type == "cpu"
            if (
                on_host
                and step_positions.numel()
                and (int(step_positions.max()) >= length or int(step_positions.min()) < 0)
            ):
                raise DataError(
                    f"step_positions must index tokens 0..{length - 1} of each sequence, got values "
                    f"{int(step_positions.min())}..{int(step_positions.max())}; truncate whole steps to max_length "
                    "before computing the positions"
                )
            index = step_positions.long().unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
            hidden = hidden.gather(1, index)  # [B, S, H]
        head_dtype = self.head[-1].weight.dtype
        return torch.sigmoid(self.head(hidden.to(head_dtype))).squeeze(-1)

    # -- checkpoints ------------------------------------------------------------------------------
    def checkpoint_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights a checkpoint must hold: every parameter that trains (or trained), and buffers.

        A LoRA or frozen-backbone model leaves out its frozen base weights: the model spec
        rebuilds them exactly (from ``init_seed`` or the ``name_or_path`` folder), so the
        checkpoint holds the adapters and the head only. Full fine-tuning keeps everything.
        :func:`trainengine.checkpoint.load_model_state` requires exactly these keys and accepts
        any others the model has (so a full state dict loads too).
        """
        self._ever_trainable.update(name for name, p in self.named_parameters() if p.requires_grad)
        frozen = {name for name, p in self.named_parameters() if name not in self._ever_trainable}
        return {k: v for k, v in self.state_dict().items() if k not in frozen}

    # -- export -------------------------------------------------------------------------------------
    def merged(self) -> RewardModel:
        """A plain (non-PEFT) copy with the LoRA adapters folded into the weights (``merge_and_unload``).

        The copy carries a self-contained spec (``backbone_config`` = the backbone's full config,
        no ``name_or_path``, no ``lora``): ``rebuild_model(spec)`` plus its ``state_dict`` gives
        the same scores without the original backbone folder. This model is left unchanged.

        Returns:
            A new :class:`RewardModel` (also for a model without LoRA, as a self-contained copy).
        """
        work = copy.deepcopy(self)
        peft_model: Any = work.backbone
        backbone = peft_model.merge_and_unload() if work.is_lora else work.backbone
        out = RewardModel.__new__(RewardModel)
        nn.Module.__init__(out)
        out.backbone = backbone
        out.head = work.head
        out.hidden_size = self.hidden_size
        out._ever_trainable = set()
        for p in out.parameters():
            p.requires_grad_(True)
        out.train(self.training)
        spec = getattr(self, "_trainengine_model_spec", None)
        if spec is not None:
            kwargs = dict(spec["kwargs"])
            kwargs.update(
                name_or_path=None,
                backbone_config=_config_dict(backbone.config),
                lora=None,
                freeze_backbone=False,
            )
            attach_spec(out, spec["architecture"], kwargs)
        return out

    def for_export(self) -> RewardModel:
        """What an export bundle holds: :meth:`merged` (a plain module rebuildable from its spec)."""
        return self.merged()


def _config_dict(config: Any) -> dict[str, Any]:
    """A backbone config as the JSON dict ``AutoConfig.for_model(**d)`` rebuilds it from."""
    import json

    data = config.to_dict()
    for key in ("transformers_version", "architectures", "_name_or_path", "dtype", "torch_dtype"):
        data.pop(key, None)
    return json.loads(json.dumps(data, default=str))


def reward_model_kwargs(
    model_section: Any,
    lora_section: Any = None,
    *,
    vocab_size: int | None = None,
    pad_token_id: int | None = None,
    init_seed: int = 0,
) -> dict[str, Any]:
    """The keyword arguments of :func:`build_reward_model` from a config's ``model:`` and ``lora:`` sections.

    They are plain JSON, so ``build_model("reward_model", **kwargs)`` stores them as the model spec
    and checkpoints, export and serving rebuild the same model from it.

    Args:
        model_section: ``config.model`` (``name_or_path``, ``backbone_config``, ``mlp_hidden_dims``,
            ``mlp_dropout``, ``activation``, ``freeze_backbone``).
        lora_section: ``config.lora`` (used when ``enabled``), or None.
        vocab_size: The tokenizer's vocabulary size.
        pad_token_id: The tokenizer's padding id, or None.
        init_seed: Seed of the build (random backbone, head and adapter initialisation).

    Example:
        >>> reward_model_kwargs({"backbone_config": {"model_type": "llama"}}, vocab_size=300)["vocab_size"]
        300
    """

    def get(section: Any, name: str, default: Any = None) -> Any:
        if isinstance(section, Mapping):
            return section.get(name, default)
        return getattr(section, name, default)

    lora_on = lora_section is not None and bool(get(lora_section, "enabled", False))
    backbone_config = get(model_section, "backbone_config")
    return {
        "name_or_path": get(model_section, "name_or_path"),
        "backbone_config": dict(backbone_config) if backbone_config else None,
        "mlp_hidden_dims": [int(w) for w in get(model_section, "mlp_hidden_dims", [1024, 256])],
        "mlp_dropout": float(get(model_section, "mlp_dropout", 0.1)),
        "activation": str(get(model_section, "activation", "gelu")),
        "freeze_backbone": bool(get(model_section, "freeze_backbone", False)),
        "lora": lora_settings(lora_section) if lora_on else None,
        "vocab_size": vocab_size,
        "pad_token_id": pad_token_id,
        "init_seed": int(init_seed),
    }


def build_reward_model(
    *,
    name_or_path: str | None = None,
    backbone_config: Mapping[str, Any] | None = None,
    mlp_hidden_dims: Sequence[int] = (1024, 256),
    mlp_dropout: float = 0.1,
    activation: str = "gelu",
    freeze_backbone: bool = False,
    lora: Mapping[str, Any] | None = None,
    vocab_size: int | None = None,
    pad_token_id: int | None = None,
    init_seed: int = 0,
    dtype: str = "float32",
) -> RewardModel:
    """Build a :class:`RewardModel` (the ``"reward_model"`` registry entry); deterministic in ``init_seed``.

    Args:
        name_or_path: ``model.name_or_path``: a local folder with ``config.json`` and weights (loaded
            with ``local_files_only``), or a hub id (needs the network).
        backbone_config: ``model.backbone_config``: ``model_type`` plus config fields; a randomly
            initialised backbone (``vocab_size`` defaults to the tokenizer's).
        mlp_hidden_dims, mlp_dropout, activation: The head (``model.mlp_hidden_dims``, ...).
        freeze_backbone: Only the head trains (with ``lora`` the adapters train too).
        lora: ``{"r", "lora_alpha", "lora_dropout", "target_modules", "bias"}``
            (:func:`~trainengine.models._lora.lora_settings`), or None for no adapters.
        vocab_size: The tokenizer's vocabulary size; a loaded backbone with fewer embeddings is
            resized to it (the new rows are initialised from ``init_seed``).
        pad_token_id: The tokenizer's padding id (set on the backbone config).
        init_seed: Seed of everything random in the build; the caller's RNG is not advanced.
        dtype: Backbone weights: ``float32`` (default), ``bfloat16`` or ``float16``; the head stays float32.

    Returns:
        The model; one log line gives its trainable / total parameter counts.

    Raises:
        ConfigError: Neither or both of ``name_or_path`` / ``backbone_config``, a folder or hub
            id that cannot be loaded, a bad ``backbone_config``, bad LoRA target modules, or a
            head argument out of range.

    Example:
        >>> model = build_reward_model(
        ...     backbone_config={
        ...         "model_type": "llama",
        ...         "hidden_size": 16,
        ...         "intermediate_size": 32,
        ...         "num_hidden_layers": 1,
        ...         "num_attention_heads": 2,
        ...         "num_key_value_heads": 2,
        ...     },
        ...     vocab_size=64,
        ...     mlp_hidden_dims=[8],
        ...     lora={"r": 2, "lora_alpha": 4, "lora_dropout": 0.0},
        ... )
        >>> sorted({n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad})
        ['backbone', 'head']
    """
    if name_or_path and backbone_config:
        raise ConfigError(
            "model.name_or_path and model.backbone_config are both set; keep one: name_or_path loads a "
            "pretrained backbone, backbone_config builds a randomly initialised one"
        )
    if not name_or_path and not backbone_config:
        raise ConfigError(
            "model.architecture reward_model needs a backbone: set model.name_or_path to a Hugging Face model "
            "folder (or hub id), or model.backbone_config to build one, e.g. {model_type: llama, hidden_size: 64, "
            "intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4}"
        )
    if dtype not in _DTYPES:
        raise ConfigError(f"reward model dtype {dtype!r} is not supported — choose one of {', '.join(_DTYPES)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        if name_or_path:
            backbone = _load_backbone(str(name_or_path), vocab_size, pad_token_id, _DTYPES[dtype])
        else:
            backbone = _backbone_from_config(dict(backbone_config or {}), vocab_size, pad_token_id, _DTYPES[dtype])
        hidden_size = _hidden_size(backbone)
        if lora is not None:
            backbone = apply_lora(backbone, lora_settings(dict(lora)))
        elif freeze_backbone:
            backbone.requires_grad_(False)
        model = RewardModel(backbone, hidden_size, list(mlp_hidden_dims), mlp_dropout, activation)
    model.head.float()
    model._ever_trainable.update(name for name, p in model.named_parameters() if p.requires_grad)
    counts = parameter_counts(model)
    share = 100.0 * counts["trainable"] / max(counts["total"], 1)
    logger.info(
        "reward_model: trainable %s of %s parameters (%.2f%%)",
        f"{counts['trainable']:,}",
        f"{counts['total']:,}",
        share,
    )
    return model


def _looks_like_path(name: str) -> bool:
    # Hub ids are "name" or "owner/name"; anything else is meant as a folder.
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep in name.replace("/", "") or "\\" in name


def _load_backbone(name: str, vocab_size: int | None, pad_token_id: int | None, dtype: torch.dtype) -> nn.Module:
    from transformers import AutoModel

    folder = Path(name).expanduser()
    fix = (
        "set model.name_or_path to a folder holding config.json and the weights (save one with "
        "model.save_pretrained(folder)), or use model.backbone_config to build a randomly initialised backbone"
    )
    if folder.is_dir():
        try:
            backbone = AutoModel.from_pretrained(str(folder), local_files_only=True, dtype=dtype)
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(
                f"model.name_or_path {name!r}: cannot load a backbone from this folder: {exc}; {fix}"
            ) from exc
    elif folder.exists() or _looks_like_path(name):
        raise ConfigError(f"model.name_or_path {name!r}: no such folder; {fix}")
    else:
        try:
            backbone = AutoModel.from_pretrained(name, dtype=dtype)
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(
                f"model.name_or_path {name!r} is not a local folder and could not be loaded from the Hugging Face "
                f"hub ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); {fix}"
            ) from exc
    if pad_token_id is not None:
        backbone.config.pad_token_id = pad_token_id
    embeddings = backbone.get_input_embeddings()
    rows = int(embeddings.weight.shape[0]) if embeddings is not None else None
    if vocab_size is not None and rows is not None and vocab_size > rows:
        logger.warning(
            "reward_model: the tokenizer has %d tokens but %s has %d embeddings; resizing them (new rows are "
            "randomly initialised)",
            vocab_size,
            name,
            rows,
        )
        backbone.resize_token_embeddings(vocab_size)
    return backbone


def _backbone_from_config(
    fields: dict[str, Any], vocab_size: int | None, pad_token_id: int | None, dtype: torch.dtype
) -> nn.Module:
    from transformers import AutoConfig, AutoModel

    model_type = fields.pop("model_type", None)
    if not isinstance(model_type, str) or not model_type:
        raise ConfigError(
            "model.backbone_config needs model_type (e.g. llama, gpt2, qwen2) to pick the architecture, "
            f"got {model_type!r}"
        )
    given_vocab = fields.get("vocab_size")
    if given_vocab is None and vocab_size is not None:
        fields["vocab_size"] = int(vocab_size)
    elif given_vocab is not None and vocab_size is not None and int(given_vocab) < vocab_size:
        raise ConfigError(
            f"model.backbone_config.vocab_size is {given_vocab} but the tokenizer has {vocab_size} tokens; "
            f"remove vocab_size from backbone_config (it then follows the tokenizer) or set it to at least {vocab_size}"
        )
    if pad_token_id is not None and "pad_token_id" not in fields:
        fields["pad_token_id"] = int(pad_token_id)
    try:
        config = AutoConfig.for_model(model_type, **fields)
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"model.backbone_config (model_type {model_type!r}) is not a valid config: {exc}") from exc
    try:
        backbone = AutoModel.from_config(config, dtype=dtype)
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"model.backbone_config (model_type {model_type!r}) cannot build a model: {exc}") from exc
    return backbone


def _hidden_size(backbone: nn.Module) -> int:
    config = getattr(backbone, "config", None)
    for name in ("hidden_size", "n_embd", "d_model", "dim"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    getter: Any = getattr(backbone, "get_input_embeddings", None)
    embeddings = getter() if callable(getter) else None
    if embeddings is not None:
        return int(embeddings.weight.shape[1])
    raise ConfigError(
        f"cannot tell the hidden size of backbone {type(backbone).__name__}; set hidden_size in its config"
    )
