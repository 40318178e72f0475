"""Shared CLI plumbing: resolving a config from file, preset and flags, and user-error exits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainengine.config import TrainingConfig, apply_overrides, deep_merge, get_preset, read_config_file
from trainengine.config._config import route_flat_keys

__all__ = ["resolve_config", "STATE"]

# Global CLI flags (set by the app callback).
STATE: dict[str, Any] = {"debug": False}


def resolve_config(
    config_file: Path | None = None,
    preset: str | None = None,
    overrides: list[str] | None = None,
    flags: dict[str, Any] | None = None,  # dotted path -> value; None = not given
) -> TrainingConfig:
    """Precedence, lowest to highest: defaults < preset < file < ``--set`` < dedicated flags.

    Raises:
        ConfigError: any problem in any layer, all listed at once.
    """
    data: dict[str, Any] = get_preset(preset) if preset else {}
    if config_file is not None:
        data = deep_merge(data, route_flat_keys(read_config_file(config_file)))
    data = apply_overrides(data, list(overrides or []))
    for dotted, value in (flags or {}).items():
        if value is not None:
            section, key = dotted.split(".", 1)
            data = deep_merge(data, {section: {key: value}})
    return TrainingConfig(**data)
