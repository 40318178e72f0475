"""Promotion gates: the metric bounds a model must meet before it may hold an alias.

``{"production": {"val_loss": "<= 0.40", "accuracy": ">= 0.9"}}`` means: promoting to
``production`` needs ``val_loss <= 0.40`` and ``accuracy >= 0.9`` in the model's registered metrics.
A metric the model does not have fails its gate too. Parsing lives in
:mod:`trainengine.config._gates` (the config validates ``registry.gates``; config never imports
this package); evaluation is here.

Significance rules (``{"production": {"metric": "accuracy", "confidence": 0.95}}``) ask for more
than a bound: the candidate must beat the alias's current holder on the same data. Running that
test needs models and data, which the registry does not load; the caller hands
:meth:`~trainengine.registry.ModelRegistry.promote_model` a :class:`SignificanceTest` (the
evaluation package builds one: ``trainengine.evaluation.SignificanceCheck``) and the registry
decides with its verdict.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from trainengine.config._gates import Gate, gate_problems, parse_gate, parse_gates
from trainengine.config._significance import SignificanceRule, parse_significance_rules

if TYPE_CHECKING:
    from trainengine.registry._record import ModelRecord

__all__ = [
    "Gate",
    "parse_gate",
    "parse_gates",
    "gate_problems",
    "evaluate_gates",
    "find_metric",
    "SignificanceRule",
    "SignificanceVerdict",
    "SignificanceTest",
    "parse_significance_rules",
]


def find_metric(metrics: Mapping[str, float], name: str) -> tuple[str, float] | None:
    """The metric called ``name``; ``val_loss`` also finds ``val/loss`` when that is the only match."""
    if name in metrics:
        return name, metrics[name]
    flat = name.replace("/", "_")
    matches = [k for k in metrics if k.replace("/", "_") == flat]
    return (matches[0], metrics[matches[0]]) if len(matches) == 1 else None


def evaluate_gates(gates: list[Gate], metrics: Mapping[str, float]) -> list[str]:
    """One line per failed gate (``[]`` = all pass), each with the value and the bound.

    Example:
        >>> evaluate_gates([parse_gate("val_loss", "<= 0.4"), parse_gate("accuracy", ">= 0.9")], {"val_loss": 0.52})
        ['val_loss = 0.52 fails the gate <= 0.4', 'accuracy is missing (gate >= 0.9)']
    """
    failures = []
    for gate in gates:
        found = find_metric(metrics, gate.metric)
        if found is None:
            failures.append(f"{gate.metric} is missing (gate {gate})")
        elif not gate.passes(found[1]):
            label = gate.metric if found[0] == gate.metric else f"{gate.metric} ({found[0]})"
            failures.append(f"{label} = {float(found[1])!r} fails the gate {gate}")
    return failures


class SignificanceVerdict(Protocol):
    """What a :class:`SignificanceTest` returns: whether the candidate is better, and why."""

    @property
    def significant(self) -> bool:
        """True when the candidate beats the holder at the rule's confidence."""
        ...

    def explain(self) -> str:
        """One line: the metric, both values with their CIs, the paired difference and the p-value."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record of the test, kept in the alias history."""
        ...


class SignificanceTest(Protocol):
    """Compares a promotion candidate with the alias's current holder on the same data.

    Called by :meth:`~trainengine.registry.ModelRegistry.promote_model` outside any database
    transaction (it may take seconds), with the alias's :class:`SignificanceRule` (its defaults
    when the alias has none configured).
    """

    def __call__(self, candidate: ModelRecord, holder: ModelRecord, rule: SignificanceRule) -> SignificanceVerdict: ...
