"""Several runs as one result: mean, standard deviation and a confidence interval of child metrics.

A *group* is a parent run whose children differ in one thing: the seed (``trainengine train
--seeds 0,1,2``) or the fold (``trainengine train --cv 5``). This module is the arithmetic of the
summary, free of files and training: :func:`summarize_metric` for one metric's values across the
children, :func:`summarize_group` for every metric, and :class:`GroupSummary`, the object written
as ``seeds_summary.json`` / ``cv_summary.json``.

Why a t-interval and not the bootstrap: a group has few children (3 seeds, 5 folds). Resampling
three numbers gives an interval that is far too narrow (it can only ever contain values between
the smallest and the largest child); Student's t with ``n - 1`` degrees of freedom is the
interval for the mean of a handful of roughly normal values. (The per-example bootstrap of
:func:`trainengine.evaluation.bootstrap_ci` answers another question: the uncertainty from the
finite evaluation set of *one* model.) Fold results are not independent (folds share training
rows), so the CV interval is optimistic; it is reported all the same, as is common practice, and
the docs say so.

``seeds_summary.json`` / ``cv_summary.json`` (schema version 1)::

    {
      "schema_version": 1,
      "kind": "seeds" | "cv",
      "group": "seeds-20261130-163000-ab12",     # the parent run's folder name
      "experiment": "default",
      "created_at": "2026-11-30T16:31:02.123+00:00",
      "confidence": 0.95,
      "interval": "t",                            # Student's t over the children's values
      "num_children": 3,
      "children": [{"name": "seed-0", "seed": 0, "fold": null, "status": "completed",
                    "run_dir": "runs/default/seeds-.../seed-0", "db_run_id": 7,
                    "metrics": {"val/loss": 0.31, "val/accuracy": 0.91}}, ...],
      "metrics": {"val/loss": {"mean": 0.30, "std": 0.012, "ci": [0.27, 0.33], "n": 3,
                               "min": 0.29, "max": 0.31, "values": [0.31, 0.29, 0.30]}, ...},
      "details": {...}                            # cv: k, splitter, shuffle, seed, fold sizes
    }

``values`` keeps one entry per child in child order (``null`` where a child's value was NaN or
inf); ``n``, ``mean``, ``std`` and ``ci`` use the finite values only. ``std`` is the sample standard
deviation (``ddof=1``); ``std`` and ``ci`` are ``null`` with fewer than two finite values.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy import stats

from trainengine._io import atomic_write_json
from trainengine.errors import TrainEngineError

__all__ = ["GROUP_SUMMARY_SCHEMA_VERSION", "GroupKind", "MetricSummary", "GroupSummary", "summarize_metric"]

GROUP_SUMMARY_SCHEMA_VERSION = 1
GroupKind = Literal["seeds", "cv"]


@dataclass(frozen=True)
class MetricSummary:
    """One metric across the children of a group.

    Example:
        >>> s = summarize_metric([0.90, 0.92, 0.94])
        >>> round(s.mean, 4), round(s.std, 4), s.n
        (0.92, 0.02, 3)
        >>> s.format()
        '0.92 ± 0.02 [0.8703, 0.9697]'
    """

    mean: float | None
    """Mean of the finite values (None when there are none)."""
    std: float | None
    """Sample standard deviation (ddof=1) of the finite values; None with fewer than two."""
    ci: tuple[float, float] | None
    """Student's t interval for the mean at the summary's confidence; None with fewer than two values."""
    n: int
    """Number of finite values."""
    min: float | None
    max: float | None
    values: tuple[float | None, ...]
    """Every child's value in child order; None where it was NaN / inf."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": self.mean,
            "std": self.std,
            "ci": None if self.ci is None else list(self.ci),
            "n": self.n,
            "min": self.min,
            "max": self.max,
            "values": list(self.values),
        }

    def format(self, digits: int = 4) -> str:
        """``mean ± std [lo, hi]`` with ``digits`` significant digits (``-`` for what is unknown)."""

        def g(v: float | None) -> str:
            return "-" if v is None else f"{v:.{digits}g}"

        text = g(self.mean) if self.std is None else f"{g(self.mean)} ± {g(self.std)}"
        return text if self.ci is None else f"{text} [{g(self.ci[0])}, {g(self.ci[1])}]"


def summarize_metric(values: Sequence[float | None], confidence: float = 0.95) -> MetricSummary:
    """Mean, sample standard deviation and Student's t confidence interval of one metric's values.

    Args:
        values: one value per child; None, NaN and inf are kept in ``values`` and left out of the
            statistics.
        confidence: the interval's coverage, in (0, 1).

    Raises:
        TrainEngineError: ``confidence`` outside (0, 1).

    Example:
        >>> s = summarize_metric([1.0, float("nan"), 3.0])
        >>> s.n, s.mean, s.values
        (2, 2.0, (1.0, None, 3.0))
        >>> summarize_metric([0.5]).ci is None
        True
    """
    if not isinstance(confidence, (int, float)) or not 0.0 < confidence < 1.0:
        raise TrainEngineError(f"confidence must be a number in (0, 1), e.g. 0.95; got {confidence!r}")
    kept = tuple(_finite_or_none(v) for v in values)
    finite = np.array([v for v in kept if v is not None], dtype=np.float64)
    n = int(finite.size)
    if n == 0:
        return MetricSummary(None, None, None, 0, None, None, kept)
    mean = float(np.mean(finite))
    if n < 2:
        return MetricSummary(mean, None, None, n, float(finite.min()), float(finite.max()), kept)
    std = float(np.std(finite, ddof=1))
    sem = float(stats.sem(finite))
    if sem == 0.0:  # identical values: scipy's t.interval needs a positive scale
        ci = (mean, mean)
    else:
        lo, hi = stats.t.interval(confidence, df=n - 1, loc=mean, scale=sem)
        ci = (float(lo), float(hi))
    return MetricSummary(mean, std, ci, n, float(finite.min()), float(finite.max()), kept)


@dataclass
class GroupSummary:
    """The result of a group of runs: each child's metrics and every metric summarised.

    Build it with :meth:`from_children`; :meth:`save` writes ``seeds_summary.json`` or
    ``cv_summary.json`` (the schema is in this module's docstring).

    Example:
        >>> children = [
        ...     {"name": f"seed-{s}", "seed": s, "metrics": {"val/accuracy": acc}}
        ...     for s, acc in [(0, 0.90), (1, 0.92), (2, 0.94)]
        ... ]
        >>> summary = GroupSummary.from_children("seeds", "my-seeds", children)
        >>> summary.metrics["val/accuracy"].format(3)
        '0.92 ± 0.02 [0.87, 0.97]'
        >>> summary.to_dict()["num_children"]
        3
    """

    kind: GroupKind
    group: str
    children: list[dict[str, Any]]
    metrics: dict[str, MetricSummary]
    confidence: float = 0.95
    experiment: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))

    @property
    def filename(self) -> str:
        """``seeds_summary.json`` or ``cv_summary.json``."""
        return f"{self.kind}_summary.json"

    @classmethod
    def from_children(
        cls,
        kind: GroupKind,
        group: str,
        children: Sequence[Mapping[str, Any]],
        *,
        confidence: float = 0.95,
        experiment: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> GroupSummary:
        """Summarise every metric any child reported (a child without it counts as a missing value).

        Args:
            kind: ``"seeds"`` or ``"cv"``.
            group: the group's name (its parent run's folder).
            children: one mapping per child with at least ``metrics: {name: number}``; the other
                keys (name, seed, fold, status, run_dir, db_run_id) are kept as they are.
            confidence: the coverage of every interval.
            experiment: the experiment the group belongs to.
            details: kind-specific facts (cv: k, splitter, fold sizes).
        """
        if kind not in ("seeds", "cv"):
            raise TrainEngineError(f"unknown group kind {kind!r} — valid: seeds, cv")
        rows = [dict(c) for c in children]
        for row in rows:  # JSON has no NaN / inf: a non-finite value is recorded as null
            row["metrics"] = {str(k): _finite_or_none(v) for k, v in (row.get("metrics") or {}).items()}
        names = sorted({name for c in rows for name in (c.get("metrics") or {})})
        metrics = {
            name: summarize_metric([(c.get("metrics") or {}).get(name) for c in rows], confidence) for name in names
        }
        return cls(
            kind=kind,
            group=group,
            children=rows,
            metrics=metrics,
            confidence=confidence,
            experiment=experiment,
            details=dict(details or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": GROUP_SUMMARY_SCHEMA_VERSION,
            "kind": self.kind,
            "group": self.group,
            "experiment": self.experiment,
            "created_at": self.created_at,
            "confidence": self.confidence,
            "interval": "t",
            "num_children": len(self.children),
            "children": self.children,
            "metrics": {name: m.to_dict() for name, m in self.metrics.items()},
            "details": self.details,
        }

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``<folder>/<kind>_summary.json`` atomically; returns its path."""
        path = Path(folder) / self.filename
        atomic_write_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> GroupSummary:
        """Read a summary written by :meth:`save` (schema version 1).

        Raises:
            TrainEngineError: not a group summary, or a newer schema version.
        """
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise TrainEngineError(f"cannot read the group summary {path}: {exc}") from None
        version = data.get("schema_version") if isinstance(data, dict) else None
        if version != GROUP_SUMMARY_SCHEMA_VERSION:
            raise TrainEngineError(
                f"{path} is not a group summary of schema version {GROUP_SUMMARY_SCHEMA_VERSION} "
                f"(schema_version {version!r}); upgrade trainengine or check the file"
            )
        metrics = {
            name: MetricSummary(
                mean=m["mean"],
                std=m["std"],
                ci=None if m["ci"] is None else (m["ci"][0], m["ci"][1]),
                n=m["n"],
                min=m["min"],
                max=m["max"],
                values=tuple(m["values"]),
            )
            for name, m in data["metrics"].items()
        }
        return cls(
            kind=data["kind"],
            group=data["group"],
            children=data["children"],
            metrics=metrics,
            confidence=data["confidence"],
            experiment=data.get("experiment"),
            details=data.get("details") or {},
            created_at=data["created_at"],
        )


def _finite_or_none(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
