"""Shared CLI plumbing: resolving a config from file, preset and flags, and user-error exits."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainengine.errors import ConfigError

if TYPE_CHECKING:
    from trainengine.config import TrainingConfig

__all__ = ["resolve_config", "STATE"]

# Global CLI flags (set by the app callback) and the command line as given (set by main(): a
# multi-process `train` re-runs it under torchrun).
STATE: dict[str, Any] = {"debug": False, "argv": None}


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
    # Imported here, not at the top: `trainengine --help` must not pay for pydantic and the config.
    from trainengine.config import TrainingConfig, apply_overrides, get_preset
    from trainengine.config._config import merge_layer, read_config_layer

    data: dict[str, Any] = get_preset(preset) if preset else {}
    if config_file is not None:
        data = merge_layer(data, read_config_layer(config_file))  # its errors name the file
    data = apply_overrides(data, list(overrides or []))
    given = {dotted: value for dotted, value in (flags or {}).items() if value is not None}
    if "data.train_file" in given and "data.dataset" not in given:
        # A file named on the command line replaces the built-in data set of a preset or config file.
        data = merge_layer(data, {"data": {"dataset": None}})
    for dotted, value in given.items():
        section, key = dotted.split(".", 1)
        data = merge_layer(data, {section: {key: value}})
    try:
        return TrainingConfig(**data)
    except ConfigError as exc:
        # Say where the values came from, so "fix the file" vs "fix the flag" is clear.
        sources = [f"preset {preset}"] if preset else []
        sources += [str(config_file)] if config_file is not None else []
        sources += ["--set"] if overrides else []
        sources += ["flags"] if given else []
        prefix = f"invalid configuration from {' + '.join(sources)}" if sources else "invalid configuration"
        raise ConfigError(exc.problems, prefix=prefix) from None
