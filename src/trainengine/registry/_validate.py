"""Checks of ``register_model`` arguments and small formatting helpers of the registry."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

from trainengine.registry._errors import RegistryValueError
from trainengine.registry._refs import check_name

__all__ = [
    "iso_time",
    "dumps_json",
    "check_metrics",
    "check_tags",
    "check_task_type",
    "check_source_task",
    "spec_from_model_config",
    "did_you_mean",
]


def iso_time(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    for attr in ("model_dump", "to_dict", "tolist"):
        if callable(getattr(obj, attr, None)):
            return getattr(obj, attr)()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return repr(obj)


def dumps_json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=_json_default)


def check_metrics(metrics: Any) -> dict[str, float] | None:
    if metrics is None:
        return None
    if not isinstance(metrics, Mapping):
        raise RegistryValueError(
            f"metrics must be a dict of name -> number, e.g. {{'val_loss': 0.38}}; got {type(metrics).__name__}"
        )
    out = {}
    for name, value in metrics.items():
        if not isinstance(name, str) or not name.strip():
            raise RegistryValueError(f"metric names must be non-empty strings, got {name!r}")
        number: float | None = None
        if not isinstance(value, (bool, str, bytes)) and value is not None:
            try:
                number = float(value)  # ints, floats, numpy scalars, one-element tensors
            except (TypeError, ValueError, RuntimeError):
                number = None
        if number is None or not math.isfinite(number):
            raise RegistryValueError(
                f"metric {name!r} must be a finite number, got {value!r}; registered metrics feed promotion gates"
            )
        out[name] = number
    return out


def check_tags(tags: Any) -> list[str]:
    if tags is None:
        return []
    if isinstance(tags, str) or not isinstance(tags, (list, tuple, set, frozenset)):
        raise RegistryValueError(f"tags must be a list of strings, e.g. tags=['baseline']; got {tags!r}")
    out: list[str] = []
    for tag in tags:
        check_name(tag, "tag")
        if tag not in out:
            out.append(tag)
    return out


def check_task_type(task_type: Any) -> str | None:
    valid = _task_types()
    if task_type is not None and task_type not in valid:
        raise RegistryValueError(f"unknown task_type {task_type!r} — valid: {', '.join(valid)}")
    return task_type


def spec_from_model_config(model_config: Any) -> dict[str, Any] | None:
    """A model spec from a :class:`GPTConfig` or ``{"architecture": ..., "kwargs": {...}}``."""
    if model_config is None:
        return None
    from trainengine.models import GPTConfig

    if isinstance(model_config, GPTConfig):
        return {"architecture": "gpt", "kwargs": json.loads(json.dumps(dataclasses.asdict(model_config)))}
    if (
        isinstance(model_config, Mapping)
        and isinstance(model_config.get("architecture"), str)
        and isinstance(model_config.get("kwargs", {}), Mapping)
    ):
        return {
            "architecture": model_config["architecture"],
            "kwargs": json.loads(json.dumps(dict(model_config.get("kwargs") or {}), default=_json_default)),
        }
    raise RegistryValueError(
        f"model_config must be a GPTConfig or a model spec {{'architecture': <registered name>, 'kwargs': {{...}}}}; "
        f"got {model_config!r}"
    )


def did_you_mean(value: str, options: list[str]) -> str:
    close = difflib.get_close_matches(value, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_source_task(task: Any) -> str | None:
    """The task type an artifact recorded, if it is a known one (else None: never trust it blindly)."""
    return task if isinstance(task, str) and task in _task_types() else None


def _task_types() -> tuple[str, ...]:
    from trainengine.tasks import TaskType

    return get_args(TaskType)
