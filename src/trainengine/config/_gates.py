"""Promotion gate syntax: parsing and checking ``{alias: {metric: "<= 0.40"}}``.

It lives in the config layer because ``registry.gates`` is validated with the config (and
config never imports the registry package); :mod:`trainengine.registry._gates` evaluates the
gates against a model's metrics.

``{"production": {"val_loss": "<= 0.40", "accuracy": ">= 0.9"}}`` means: promoting to
``production`` needs ``val_loss <= 0.40`` and ``accuracy >= 0.9`` in the model's registered metrics.
A metric the model does not have fails its gate too.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from trainengine._io import validate_name

__all__ = ["Gate", "parse_gate", "parse_gates", "gate_problems"]

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "<": operator.lt,
    ">": operator.gt,
}
_CONDITION = re.compile(r"^\s*(<=|>=|==|<|>)\s*(\S+)\s*$")


@dataclass(frozen=True)
class Gate:
    """One bound: ``metric op bound`` (``val_loss <= 0.4``)."""

    metric: str
    op: str
    bound: float

    def passes(self, value: float) -> bool:
        return _OPERATORS[self.op](value, self.bound)

    def __str__(self) -> str:
        return f"{self.op} {self.bound!r}"


def parse_gate(metric: str, condition: Any) -> Gate:
    """Parse ``"<= 0.40"`` into a :class:`Gate`.

    Raises:
        ValueError: not an operator (``<=``, ``<``, ``>=``, ``>``, ``==``) followed by a finite number.

    Example:
        >>> parse_gate("val_loss", "<= 0.40")
        Gate(metric='val_loss', op='<=', bound=0.4)
    """
    if not isinstance(metric, str) or not metric.strip():
        raise ValueError(f"gate metric name must be a non-empty string, got {metric!r}")
    match = _CONDITION.match(condition) if isinstance(condition, str) else None
    bound = None
    if match is not None:
        try:
            bound = float(match.group(2))
        except ValueError:
            bound = None
    if match is None or bound is None or not math.isfinite(bound):
        raise ValueError(
            f"invalid gate {condition!r}: write an operator (<=, <, >=, >, ==) and a finite number, "
            "e.g. '<= 0.40' or '>= 0.9'"
        )
    return Gate(metric, match.group(1), bound)


def gate_problems(gates: Any, prefix: str = "gates") -> list[str]:
    """Every problem of a gates mapping, one line each, starting with its dotted path."""
    if not isinstance(gates, Mapping):
        return [
            f"{prefix}: must be a mapping {{alias: {{metric: condition}}}}, "
            f"e.g. {{'production': {{'val_loss': '<= 0.40'}}}}; got {type(gates).__name__}"
        ]
    problems = []
    for alias, conditions in gates.items():
        try:
            validate_name(alias, "alias")
        except ValueError as exc:
            problems.append(f"{prefix}.{alias}: {exc}")
            continue
        if not isinstance(conditions, Mapping):
            problems.append(
                f"{prefix}.{alias}: must be a mapping {{metric: condition}} such as {{'val_loss': '<= 0.40'}}; "
                f"got {conditions!r}"
            )
            continue
        for metric, condition in conditions.items():
            try:
                parse_gate(metric, condition)
            except ValueError as exc:
                problems.append(f"{prefix}.{alias}.{metric}: {exc}")
    return problems


def parse_gates(gates: Mapping[str, Mapping[str, str]] | None, prefix: str = "gates") -> dict[str, list[Gate]]:
    """``{alias: [Gate, ...]}`` from ``{alias: {metric: condition}}``.

    Raises:
        ValueError: listing every invalid alias, metric or condition with its dotted path.
    """
    if gates is None:
        return {}
    problems = gate_problems(gates, prefix)
    if problems:
        raise ValueError("invalid promotion gates: " + "; ".join(problems))
    return {alias: [parse_gate(m, c) for m, c in conditions.items()] for alias, conditions in gates.items()}
