"""Promotion gates: the metric bounds a model must meet before it may hold an alias.

``{"production": {"val_loss": "<= 0.40", "accuracy": ">= 0.9"}}`` means: promoting to
``production`` needs ``val_loss <= 0.40`` and ``accuracy >= 0.9`` in the model's registered metrics.
A metric the model does not have fails its gate too. Parsing lives in
:mod:`trainengine.config._gates` (the config validates ``registry.gates``; config never imports
this package); evaluation is here.
"""

from __future__ import annotations

from collections.abc import Mapping

from trainengine.config._gates import Gate, gate_problems, parse_gate, parse_gates

__all__ = ["Gate", "parse_gate", "parse_gates", "gate_problems", "evaluate_gates", "find_metric"]


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
