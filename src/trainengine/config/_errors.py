"""Turn pydantic validation errors into one readable :class:`ConfigError`."""

from __future__ import annotations

import difflib
import reprlib
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from trainengine.errors import ConfigError

__all__ = [
    "all_field_paths",
    "describe_bounds",
    "suggest",
    "unknown_field_message",
    "to_config_error",
    "short_repr",
    "clip_problem",
    "MAX_ECHO_CHARS",
]

#: Longest echo of a user's value in an error message; longer ones are cut with "… (N chars)".
MAX_ECHO_CHARS = 200
# Longest problem line: a safety net for messages that echo text this module did not shorten.
_MAX_PROBLEM_CHARS = 1000

# Bounded repr: reprlib stops at these sizes, so a huge value is never turned into a huge string.
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxset = 3, 12, 12, 12, 12
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = MAX_ECHO_CHARS, MAX_ECHO_CHARS, MAX_ECHO_CHARS


def short_repr(value: Any, limit: int = MAX_ECHO_CHARS) -> str:
    """``repr(value)`` cut to about ``limit`` characters, saying how long the value was.

    Never builds the full repr of a huge value: strings are sliced first and containers go
    through a bounded ``reprlib``.

    Example:
        >>> short_repr("x" * 500, limit=10)
        "'xxxxxxxxxx'… (500 chars)"
        >>> short_repr(list(range(1000)), limit=30)
        '[0, 1, 2, 3, 4, 5, 6, 7, 8, 9… (1000 items)'
    """
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}… ({len(value)} chars)"
    if isinstance(value, int) and value.bit_length() > 3 * limit:
        # Python refuses to print ints of more than 4,300 digits; about 0.30103 digits per bit.
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    try:
        text = _REPR.repr(value)
    except ValueError:  # a huge int inside a container
        text = f"<{type(value).__name__}>"
    sized = isinstance(value, (list, tuple, dict, set, frozenset))
    size = f" ({len(value)} items)" if sized and len(value) > _REPR.maxlist else ""
    if len(text) <= limit:
        return text + size
    return f"{text[: limit - 1]}…{size or (f' ({len(value)} items)' if sized else '')}"


def clip_problem(problem: str) -> str:
    """A problem line cut to 1,000 characters (no error message may echo megabytes back)."""
    if len(problem) <= _MAX_PROBLEM_CHARS:
        return problem
    return f"{problem[: _MAX_PROBLEM_CHARS - 1]}… ({len(problem)} chars)"


def all_field_paths(model: type[BaseModel]) -> list[str]:
    """Dotted paths of every leaf field of a config model (``training.learning_rate``, ...)."""
    paths: list[str] = []
    for name, info in model.model_fields.items():
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            paths.extend(f"{name}.{p}" for p in all_field_paths(sub))
        else:
            paths.append(name)
    return paths


# Names users bring from other tools, mapped to ours.
_ALIASES = {
    "lr": "learning_rate",
    "grad_clip": "max_grad_norm",
    "clip_grad_norm": "max_grad_norm",
    "gradient_clip_val": "max_grad_norm",
    "num_epochs": "epochs",
    "num_train_epochs": "epochs",
    "max_epochs": "epochs",
    "per_device_train_batch_size": "batch_size",
    "train_batch_size": "batch_size",
    "accumulation_steps": "gradient_accumulation_steps",
    "accumulate_grad_batches": "gradient_accumulation_steps",
    "lr_scheduler_type": "scheduler.name",
    "scheduler_type": "scheduler.name",
    "optimizer_type": "optimizer.name",
    "warmup": "warmup_steps",
    "mixed_precision": "precision",
    "fp16": "precision",
    "bf16": "precision",
    "seq_len": "max_length",
}


def suggest(name: str, candidates: list[str]) -> str | None:
    """The closest candidate to ``name`` (a dotted path or a bare field), or None."""
    section, _, leaf = name.rpartition(".")
    pool = [c for c in candidates if section and c.startswith(section + ".")] or candidates
    by_leaf: dict[str, str] = {}
    for c in pool:
        by_leaf.setdefault(c.rsplit(".", 1)[-1], c)
    alias = _ALIASES.get(leaf)
    if alias and "." in alias:
        return alias if alias in candidates else None
    if alias and alias in by_leaf:
        return by_leaf[alias]
    if alias:
        for c in candidates:
            if c.endswith("." + alias):
                return c
    matches = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.75)
    return by_leaf[matches[0]] if matches else None


def unknown_field_message(path: str, candidates: list[str]) -> str:
    """``unknown field training.learnin_rate — did you mean training.learning_rate?``"""
    hint = suggest(path, candidates)
    if hint:
        return f"unknown field {path} — did you mean {hint}?"
    section = path.rsplit(".", 1)[0] if "." in path else ""
    same_section = [c for c in candidates if section and c.startswith(section + ".")]
    if same_section:
        names = ", ".join(c.rsplit(".", 1)[-1] for c in same_section)
        return f"unknown field {path} — {section} has: {names}"
    return f"unknown field {path} — run `trainengine config show --explain` for every field"


def describe_bounds(info: FieldInfo) -> str:
    """Human text for a field's numeric bounds, e.g. ``> 0 and <= 10``."""
    parts = []
    for meta in info.metadata:
        for attr, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(f"{sym} {value}")
        for attr, text in (("min_length", "length >= {}"), ("max_length", "length <= {}"), ("pattern", "matching {}")):
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(text.format(value))
    return " and ".join(parts)


def _field_info(root: type[BaseModel], loc: tuple[Any, ...]) -> FieldInfo | None:
    model: Any = root
    info = None
    for part in loc:
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return info if isinstance(part, int) else None
        info = model.model_fields[part]
        model = info.annotation
    return info


def to_config_error(
    exc: ValidationError, root: type[BaseModel], *, prefix: str = "invalid configuration"
) -> ConfigError:
    """Convert every pydantic error into one line with its dotted path and the allowed range."""
    candidates = all_field_paths(root)
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        path = ".".join(str(p) for p in loc) or "<root>"
        if err["type"] == "extra_forbidden":
            problems.append(unknown_field_message(path, candidates))
            continue
        if err["type"] == "value_error":
            cause = (err.get("ctx") or {}).get("error")
            if isinstance(cause, ConfigError):
                # A nested TrainingConfig.__init__ (pydantic calls it from model_validate):
                # keep its problems instead of its whole multi-line message.
                problems.extend(cause.problems)
                continue
            # Raised by our own validators: the message is complete; a field's gets its path.
            lines = str(err["msg"]).removeprefix("Value error, ").split("\n")
            problems.extend(f"{path}: {line}" if loc and not line.startswith(path) else line for line in lines)
            continue
        info = _field_info(root, loc)
        bounds = describe_bounds(info) if info is not None else ""
        allowed = f"; allowed: {bounds}" if bounds else ""
        got = err.get("input")
        got_text = f" (got {short_repr(got)})" if not isinstance(got, dict) else ""
        problems.append(f"{path}: {err['msg']}{got_text}{allowed}")
    return ConfigError([clip_problem(p) for p in problems], prefix=prefix)
