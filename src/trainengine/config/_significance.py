"""Significance rules: which aliases need a real improvement over their holder before a promotion.

``{"production": {"metric": "accuracy", "confidence": 0.95}}`` means: promoting a version to
``production`` needs a paired bootstrap, on the same data, saying it beats the current holder on
``accuracy`` at 95% confidence (one-sided). It lives in the config layer because
``registry.require_significant`` is validated with the config (config never imports the registry);
the registry enforces the rule and :mod:`trainengine.evaluation` runs the test.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trainengine._io import validate_name

__all__ = ["SignificanceRule", "significance_problems", "parse_significance_rules"]

_KEYS = ("metric", "confidence", "n_bootstrap")
_MIN_BOOTSTRAP = 100


@dataclass(frozen=True)
class SignificanceRule:
    """How sure a promotion must be that the candidate beats the alias's current holder.

    Attributes:
        metric: The metric compared; None = the task's headline metric (accuracy for
            classification, mse for regression, loss for language modeling).
        confidence: One-sided confidence: promote only when the share of paired resamples in which
            the candidate is not better stays below ``1 - confidence``.
        n_bootstrap: Paired resamples of the evaluation data.

    Example:
        >>> SignificanceRule(confidence=0.99).alpha
        0.01...
    """

    metric: str | None = None
    confidence: float = 0.95
    n_bootstrap: int = 1000

    def __post_init__(self) -> None:
        problems = _rule_problems(
            {"metric": self.metric, "confidence": self.confidence, "n_bootstrap": self.n_bootstrap}
        )
        if problems:
            raise ValueError("invalid significance rule: " + "; ".join(problems))

    @property
    def alpha(self) -> float:
        """``1 - confidence``: the largest p-value that still counts as an improvement."""
        return 1.0 - self.confidence


def _rule_problems(rule: Mapping[str, Any], prefix: str = "") -> list[str]:
    dot = f"{prefix}." if prefix else ""
    problems = [f"{dot}{key}: unknown key — valid keys: {', '.join(_KEYS)}" for key in rule if key not in _KEYS]
    metric = rule.get("metric")
    if metric is not None and (not isinstance(metric, str) or not metric.strip()):
        problems.append(f"{dot}metric: must be a metric name such as 'accuracy' or 'mse', got {metric!r}")
    confidence = rule.get("confidence", 0.95)
    if (
        isinstance(confidence, bool)
        or not isinstance(confidence, (int, float))
        or not math.isfinite(confidence)
        or not 0.5 <= confidence < 1.0
    ):
        problems.append(f"{dot}confidence: must be a number in [0.5, 1), e.g. 0.95; got {confidence!r}")
    n_bootstrap = rule.get("n_bootstrap", 1000)
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int) or n_bootstrap < _MIN_BOOTSTRAP:
        problems.append(
            f"{dot}n_bootstrap: must be a whole number >= {_MIN_BOOTSTRAP} (1000 is usual); got {n_bootstrap!r}"
        )
    return problems


def significance_problems(rules: Any, prefix: str = "require_significant") -> list[str]:
    """Every problem of a ``{alias: {metric, confidence, n_bootstrap}}`` mapping, one line each with its dotted path.

    Example:
        >>> significance_problems({"production": {"confidence": 1.5}})
        ['require_significant.production.confidence: must be a number in [0.5, 1), e.g. 0.95; got 1.5']
    """
    if not isinstance(rules, Mapping):
        return [
            f"{prefix}: must be a mapping {{alias: {{metric: ..., confidence: ...}}}}, e.g. "
            f"{{'production': {{'metric': 'accuracy', 'confidence': 0.95}}}}; got {type(rules).__name__}"
        ]
    problems = []
    for alias, rule in rules.items():
        try:
            validate_name(alias, "alias")
        except ValueError as exc:
            problems.append(f"{prefix}.{alias}: {exc}")
            continue
        if not isinstance(rule, Mapping):
            problems.append(
                f"{prefix}.{alias}: must be a mapping such as {{'metric': 'accuracy', 'confidence': 0.95}} "
                f"({{}} = the task's headline metric at 0.95); got {rule!r}"
            )
            continue
        problems.extend(_rule_problems(rule, f"{prefix}.{alias}"))
    return problems


def parse_significance_rules(
    rules: Mapping[str, Mapping[str, Any]] | None, prefix: str = "require_significant"
) -> dict[str, SignificanceRule]:
    """``{alias: SignificanceRule}`` from ``{alias: {metric, confidence, n_bootstrap}}``.

    Raises:
        ValueError: listing every invalid alias, key or value with its dotted path.

    Example:
        >>> parse_significance_rules({"production": {"metric": "f1_macro"}})
        {'production': SignificanceRule(metric='f1_macro', confidence=0.95, n_bootstrap=1000)}
    """
    if rules is None:
        return {}
    problems = significance_problems(rules, prefix)
    if problems:
        raise ValueError("invalid significance rules: " + "; ".join(problems))
    return {
        alias: SignificanceRule(
            metric=rule.get("metric"),
            confidence=float(rule.get("confidence", 0.95)),
            n_bootstrap=int(rule.get("n_bootstrap", 1000)),
        )
        for alias, rule in rules.items()
    }
