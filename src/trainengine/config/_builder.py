"""Presets and the fluent :class:`TrainingConfigBuilder`.

Presets are named functions returning a nested dict of the fields they change; each derives
from the defaults (or from another preset) by changing a few things, so the differences are
visible at a glance.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from typing import Any

from trainengine.config._aliases import find_alias, planned_message
from trainengine.config._config import TrainingConfig, deep_merge, merge_layer, read_config_layer, route_flat_keys
from trainengine.config._errors import unknown_field_message
from trainengine.config._sections import SECTION_TYPES
from trainengine.errors import ConfigError

__all__ = ["TrainingConfigBuilder", "PRESETS", "get_preset"]


def quick_prototype() -> dict[str, Any]:
    """Minutes, not hours: 3 epochs, small batches, expensive features off.

    Run it: ``trainengine train --preset quick_prototype --set data.dataset=digits``
    """
    return {
        "training": {"epochs": 3, "batch_size": 16, "compile": False, "eval_every_epoch": True},
        "scheduler": {"name": "cosine", "warmup_ratio": 0.0},
        "checkpointing": {"enabled": False},
        "export": {"enabled": False},
        "monitoring": {"gradient_monitor": False},
        "data": {"max_val_samples": 2000},
    }


def baseline() -> dict[str, Any]:
    """Standard experiments: 10 epochs, warmup + cosine, clipping, checkpoints every epoch.

    Run it: ``trainengine train --preset baseline --set data.dataset=digits``
    """
    return {
        "training": {"epochs": 10, "batch_size": 32, "learning_rate": 1e-3, "max_grad_norm": 1.0},
        "optimizer": {"name": "adamw", "weight_decay": 0.01},
        "scheduler": {"name": "cosine", "warmup_ratio": 0.05, "min_lr_ratio": 0.1},
        "checkpointing": {"enabled": True, "save_every_n_epochs": 1, "keep_best_k": 3, "keep_last_n": 5},
        "monitoring": {"gradient_monitor": True},
    }


def production() -> dict[str, Any]:
    """Release runs: baseline with 20 epochs, full validation, early stopping and export on.

    Add ``.with_training(deterministic=True)`` for bit-exact reproducibility.
    Run it: ``trainengine train --preset production --set data.dataset=digits``
    """
    return deep_merge(
        baseline(),
        {
            "training": {"epochs": 20, "eval_every_epoch": True, "early_stopping_patience": 5},
            "data": {"max_val_samples": None},
            "export": {"enabled": True, "formats": ["pytorch", "onnx", "torchscript"], "verify": True},
        },
    )


def low_memory() -> dict[str, Any]:
    """Small devices: micro-batches of 2 with 8x accumulation (effective 16), shorter sequences.

    Run it: ``trainengine train --preset low_memory --config configs/lm_tiny.yaml``
    """
    return deep_merge(
        baseline(),
        {
            "training": {"batch_size": 2, "gradient_accumulation_steps": 8},
            "data": {"max_length": 64},
            "checkpointing": {"keep_best_k": 1, "keep_last_n": 2},
        },
    )


def prm_lora() -> dict[str, Any]:
    """Seed 001's process reward model: LoRA (r 16, alpha 32, dropout 0.1) on a language-model
    backbone with an MLP head ``[1024, 256]``; lr 1e-4, cosine with 500 warmup steps, weight decay
    0.01, clipping 1.0, evaluation every 100 steps, effective batch 16 (4 x 4), ``max_length``
    2048, at most 10 steps per example, checkpoints every 500 steps.

    The backbone is left to you: set ``model.name_or_path`` (a local folder or hub id) or
    ``model.backbone_config``, and the data files (``data.prm800k_path``, ...).
    Run it: ``trainengine train-lora --config my_prm.yaml``
    """
    return {
        "training": {
            "max_steps": 10000,
            "batch_size": 4,
            "gradient_accumulation_steps": 4,
            "learning_rate": 1e-4,
            "max_grad_norm": 1.0,
            "eval_interval_steps": 100,
            "eval_every_epoch": False,
        },
        "optimizer": {"name": "adamw", "weight_decay": 0.01},
        "scheduler": {"name": "cosine", "warmup_steps": 500, "warmup_ratio": 0.0},
        "checkpointing": {"enabled": True, "save_every_n_steps": 500, "keep_best_k": 3, "keep_last_n": 5},
        "tracking": {"experiment_name": "prm_lora", "output_dir": "outputs"},
        "data": {"dataset": "prm", "max_length": 2048, "max_steps_per_example": 10},
        "model": {"architecture": "reward_model", "mlp_hidden_dims": [1024, 256], "mlp_dropout": 0.1},
        "lora": {"enabled": True, "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.1},
    }


PRESETS: dict[str, Callable[[], dict[str, Any]]] = {
    "quick_prototype": quick_prototype,
    "baseline": baseline,
    "production": production,
    "low_memory": low_memory,
    "prm_lora": prm_lora,
}


def get_preset(name: str) -> dict[str, Any]:
    """The nested overrides of a named preset.

    Raises:
        ConfigError: unknown preset; the message lists the available ones.
    """
    key = name.replace("-", "_")
    if key not in PRESETS:
        raise ConfigError(f"unknown preset '{name}' — available: {', '.join(PRESETS)}")
    return PRESETS[key]()


# Seed 000 passes ``gradient_accumulation_steps`` to ``with_optimizer``; it lives in the
# training section because it shapes the loop, not the optimizer. These routes are explicit so
# every other misplaced key is still an "unknown field" error.
# Builder conveniences that are not seed spellings (those come from the one alias table).
_CROSS_SECTION = {"optimizer": {"max_grad_norm": "training", "learning_rate": "training"}}


class TrainingConfigBuilder:
    """Build a :class:`TrainingConfig` from a preset with fluent overrides.

    Example:
        >>> cfg = TrainingConfigBuilder.baseline().with_training(learning_rate=1e-4, batch_size=8, epochs=20).build()
        >>> cfg.epochs, cfg.checkpointing.enabled
        (20, True)
    """

    def __init__(self, base: dict[str, Any] | None = None, *, preset: str | None = None) -> None:
        self._data: dict[str, Any] = copy.deepcopy(base) if base else {}
        self.preset = preset

    # -- presets -------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str) -> TrainingConfigBuilder:
        return cls(get_preset(name), preset=name.replace("-", "_"))

    @classmethod
    def quick_prototype(cls) -> TrainingConfigBuilder:
        """3 epochs, small batch, expensive features off."""
        return cls.from_preset("quick_prototype")

    @classmethod
    def baseline(cls) -> TrainingConfigBuilder:
        """10 epochs, balanced settings, checkpointing enabled."""
        return cls.from_preset("baseline")

    @classmethod
    def production(cls) -> TrainingConfigBuilder:
        """20 epochs, full validation, early stopping, export enabled."""
        return cls.from_preset("production")

    @classmethod
    def low_memory(cls) -> TrainingConfigBuilder:
        """Batch 2 x accumulation 8, shorter sequences."""
        return cls.from_preset("low_memory")

    @classmethod
    def prm_lora(cls) -> TrainingConfigBuilder:
        """Seed 001's LoRA process reward model (set the backbone and the data paths)."""
        return cls.from_preset("prm_lora")

    @classmethod
    def from_config(cls, config: TrainingConfig) -> TrainingConfigBuilder:
        return cls(config.to_dict())

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> TrainingConfigBuilder:
        return cls(read_config_layer(path))

    # -- fluent setters --------------------------------------------------------------------
    def with_section(self, section: str, **fields: Any) -> TrainingConfigBuilder:
        """Set fields of one section; unknown names fail at once with a suggestion."""
        if section not in SECTION_TYPES:
            raise ConfigError(f"unknown section '{section}' — available: {', '.join(SECTION_TYPES)}")
        known = SECTION_TYPES[section].model_fields
        candidates = [f"{section}.{n}" for n in known]
        problems = []
        layer: dict[str, dict[str, Any]] = {}
        for key, value in fields.items():
            target = section if key in known else _CROSS_SECTION.get(section, {}).get(key)
            row = find_alias(f"{section}.{key}") if target is None else None
            if row is not None and row.canonical is not None:
                # A seed spelling (with_training(grad_clip=1.0)): the alias table says where it goes.
                target, _, key = row.canonical.partition(".")
                value = row.convert(value)
                for dotted, implied in row.implies:
                    sec, _, name = dotted.partition(".")
                    layer.setdefault(sec, {}).setdefault(name, implied)
            elif row is not None:
                problems.append(planned_message(row, f"{section}.{key}"))
                continue
            if target is None:
                problems.append(unknown_field_message(f"{section}.{key}", candidates))
                continue
            layer.setdefault(target, {})[key] = value
        if problems:
            raise ConfigError(problems)
        self._data = merge_layer(self._data, layer)
        return self

    def with_training(self, **fields: Any) -> TrainingConfigBuilder:
        return self.with_section("training", **fields)

    def with_optimizer(self, **fields: Any) -> TrainingConfigBuilder:
        return self.with_section("optimizer", **fields)

    def with_scheduler(self, **fields: Any) -> TrainingConfigBuilder:
        # Warmup is given one way: setting steps clears a preset's ratio and vice versa (merge_layer).
        return self.with_section("scheduler", **fields)

    def with_checkpointing(self, **fields: Any) -> TrainingConfigBuilder:
        # Asking for a checkpoint location or cadence means you want checkpoints.
        fields.setdefault("enabled", True)
        return self.with_section("checkpointing", **fields)

    def with_tracking(self, **fields: Any) -> TrainingConfigBuilder:
        return self.with_section("tracking", **fields)

    def with_data(self, **fields: Any) -> TrainingConfigBuilder:
        return self.with_section("data", **fields)

    def with_model(self, **fields: Any) -> TrainingConfigBuilder:
        return self.with_section("model", **fields)

    def with_lora(self, **fields: Any) -> TrainingConfigBuilder:
        return self.with_section("lora", **fields)

    def with_distributed(self, **fields: Any) -> TrainingConfigBuilder:
        return self.with_section("distributed", **fields)

    def with_export(self, **fields: Any) -> TrainingConfigBuilder:
        return self.with_section("export", **fields)

    def with_monitoring(self, **fields: Any) -> TrainingConfigBuilder:
        return self.with_section("monitoring", **fields)

    def with_registry(self, **fields: Any) -> TrainingConfigBuilder:
        return self.with_section("registry", **fields)

    def with_overrides(self, overrides: dict[str, Any]) -> TrainingConfigBuilder:
        """Merge a nested (or flat) dict of overrides, e.g. from a file or the CLI."""
        self._data = merge_layer(self._data, route_flat_keys(overrides))
        return self

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._data)

    def build(self) -> TrainingConfig:
        """Validate and return the config.

        Raises:
            ConfigError: listing every problem.
        """
        return TrainingConfig(**copy.deepcopy(self._data))
