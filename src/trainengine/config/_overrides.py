"""Dotted overrides from the command line: ``--set training.learning_rate=5e-4``."""

from __future__ import annotations

from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from trainengine.config._aliases import both_set_message, find_alias, planned_message
from trainengine.config._config import FLAT_FIELDS, TrainingConfig, merge_layer
from trainengine.config._errors import all_field_paths, clip_problem, short_repr, unknown_field_message
from trainengine.config._sections import SECTION_TYPES
from trainengine.config._yaml import load_yaml
from trainengine.errors import ConfigError

__all__ = ["parse_override", "apply_overrides"]


def parse_override(text: str) -> tuple[str, str, Any]:
    """Split ``section.key=value`` into (section, key, value); the value is parsed as YAML.

    ``training.max_steps=100`` gives an int, ``model.hidden_dims=[64,64]`` a list,
    ``training.max_steps=null`` None. Text and choice fields keep the text as typed
    (``optimizer.fused=off`` stays ``"off"``, not YAML's False). A bare key that belongs to one section only
    (``learning_rate=1e-3``) is accepted, and so are the seeds' spellings (``training.grad_clip=0.5``,
    ``grad_clip=0.5``, ``experiment.name=x``: config/_aliases.py), returned under the engine's name.

    Raises:
        ConfigError: no ``=``, an unknown field, or a value that is not valid YAML.
    """
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value (e.g. training.learning_rate=5e-4)")
    path, raw = text.split("=", 1)
    path = path.strip().replace("-", "_")
    row = find_alias(path)
    if row is not None:
        if row.canonical is None:
            raise ConfigError(planned_message(row, path))
        section, key, parsed = parse_override(f"{row.canonical}={raw}")
        return section, key, row.convert(parsed)
    if "." in path:
        section, key = path.split(".", 1)
    else:
        sections = FLAT_FIELDS.get(path)
        if not sections or len(sections) != 1:
            raise ConfigError(
                unknown_field_message(path, all_field_paths(TrainingConfig))
                if not sections
                else f"ambiguous field {path} — say " + " or ".join(f"{s}.{path}" for s in sections)
            )
        section, key = sections[0], path
    if section not in SECTION_TYPES or key not in SECTION_TYPES[section].model_fields:
        raise ConfigError(unknown_field_message(f"{section}.{key}", all_field_paths(TrainingConfig)))
    annotation = SECTION_TYPES[section].model_fields[key].annotation
    if _is_text(annotation):
        # Text and choice fields take the text as typed: YAML 1.1 would turn "off" (optimizer.fused),
        # "yes" or "123" (tracking.run_name) into a bool or a number that the field then rejects.
        stripped = raw.strip()
        if len(stripped) >= 2 and stripped[0] == stripped[-1] and stripped[0] in "'\"":
            stripped = stripped[1:-1]  # a quoted value: the quotes only protect it from the shell/YAML
        elif stripped in ("null", "~") and _allows_none(annotation):
            return section, key, None
        return section, key, stripped
    try:
        # YAML 1.1 reads "5e-4" as a string (it wants "5.0e-4"); try a float first.
        # The config files' strict loader: no duplicate keys, bounded aliases and depth.
        value: Any = float(raw) if _looks_like_float(raw) else load_yaml(raw)
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        # PyYAML's message spans several lines with a caret drawing; keep its one-line reason.
        reason = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise ConfigError(
            clip_problem(f"override {path}: value {short_repr(raw)} is not valid YAML ({reason})")
        ) from None
    return section, key, value


def _text_args(annotation: Any) -> list[Any]:
    args = get_args(annotation)
    return [a for a in args if a is not type(None)] if get_origin(annotation) in (Union, UnionType) else [annotation]


def _is_text(annotation: Any) -> bool:
    """True for ``str``, ``Literal["a", "b"]`` and their ``| None`` forms."""
    for arg in _text_args(annotation):
        if arg is str:
            continue
        if get_origin(arg) is Literal and all(isinstance(v, str) for v in get_args(arg)):
            continue
        return False
    return True


def _allows_none(annotation: Any) -> bool:
    return type(None) in get_args(annotation)


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
    layer: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    spelled: dict[str, str] = {}  # engine path -> how the first --set of it was written
    implied: dict[str, Any] = {}  # what a seed spelling implies (checkpoint_interval -> checkpointing.enabled)
    for text in overrides:
        try:
            section, key, value = parse_override(text)
        except ConfigError as exc:
            problems.extend(clip_problem(p) for p in exc.problems)
            continue
        name = text.split("=", 1)[0].strip().replace("-", "_")
        first = spelled.setdefault(f"{section}.{key}", name)
        row, first_row = find_alias(name), find_alias(first)
        if first != name and row is not first_row:
            # The same field under its name and a seed's name: which one was meant is unclear.
            problems.append(both_set_message(name, first, f"{section}.{key}"))
            continue
        layer.setdefault(section, {})[key] = value
        implied.update(dict(row.implies) if row is not None else {})
    if problems:
        raise ConfigError(problems, prefix="invalid --set override")
    for path, value in implied.items():
        section, _, key = path.partition(".")
        layer.setdefault(section, {}).setdefault(key, value)
    return merge_layer(data, layer)
