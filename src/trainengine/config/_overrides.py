"""Dotted overrides from the command line: ``--set training.learning_rate=5e-4``."""

from __future__ import annotations

from typing import Any

import yaml

from trainengine.config._config import FLAT_FIELDS, TrainingConfig
from trainengine.config._errors import all_field_paths, unknown_field_message
from trainengine.config._sections import SECTION_TYPES
from trainengine.errors import ConfigError

__all__ = ["parse_override", "apply_overrides"]


def parse_override(text: str) -> tuple[str, str, Any]:
    """Split ``section.key=value`` into (section, key, value); the value is parsed as YAML.

    ``training.max_steps=100`` gives an int, ``model.hidden_dims=[64,64]`` a list,
    ``training.max_steps=null`` None. A bare key that belongs to one section only
    (``learning_rate=1e-3``) is accepted.

    Raises:
        ConfigError: no ``=``, an unknown field, or a value that is not valid YAML.
    """
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value (e.g. training.learning_rate=5e-4)")
    path, raw = text.split("=", 1)
    path = path.strip().replace("-", "_")
    if "." in path:
        section, key = path.split(".", 1)
    else:
        sections = FLAT_FIELDS.get(path)
        if not sections or len(sections) != 1:
            raise ConfigError(unknown_field_message(path, all_field_paths(TrainingConfig)) if not sections
                              else f"ambiguous field {path} — say " + " or ".join(f"{s}.{path}" for s in sections))
        section, key = sections[0], path
    if section not in SECTION_TYPES or key not in SECTION_TYPES[section].model_fields:
        raise ConfigError(unknown_field_message(f"{section}.{key}", all_field_paths(TrainingConfig)))
    try:
        # YAML 1.1 reads "5e-4" as a string (it wants "5.0e-4"); try a float first.
        value: Any = float(raw) if _looks_like_float(raw) else yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {path}: value {raw!r} is not valid YAML ({exc})") from None
    return section, key, value


def _looks_like_float(raw: str) -> bool:
    try:
        float(raw)
    except ValueError:
        return False
    # Keep ints ints (YAML does that) and words like "inf"/"nan" out of the fast path.
    return any(ch in raw.lower() for ch in ".e") and raw.strip().lower() not in ("inf", "nan", "-inf", "+inf")


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of the nested config dict ``data`` with every override applied.

    Raises:
        ConfigError: listing every bad override at once.
    """
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    problems = []
    for text in overrides:
        try:
            section, key, value = parse_override(text)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        out.setdefault(section, {})[key] = value
    if problems:
        raise ConfigError(problems, prefix="invalid --set override")
    return out
