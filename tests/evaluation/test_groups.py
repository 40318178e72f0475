"""The summary arithmetic of a group of runs: mean, sample std, Student's t interval, JSON schema."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from trainengine.errors import TrainEngineError
from trainengine.evaluation._groups import GROUP_SUMMARY_SCHEMA_VERSION, GroupSummary, summarize_metric


def test_t_interval_matches_the_textbook_value():
    # 1..5: mean 3, s = sqrt(2.5) = 1.5811, sem = 0.7071; t(0.975, df=4) = 2.7764 from any t table.
    s = summarize_metric([1.0, 2.0, 3.0, 4.0, 5.0])
    assert s.mean == 3.0 and s.n == 5 and (s.min, s.max) == (1.0, 5.0)
    assert s.std == pytest.approx(math.sqrt(2.5))
    assert s.ci == pytest.approx((3.0 - 2.7764 * 0.70711, 3.0 + 2.7764 * 0.70711), abs=1e-3)
    # 90%: t(0.95, df=4) = 2.1318.
    assert summarize_metric([1, 2, 3, 4, 5], confidence=0.9).ci == pytest.approx((1.4926, 4.5074), abs=1e-3)


def test_t_interval_covers_the_true_mean_at_its_confidence():
    # Three seeds is the common case: the interval must hold its 95% with n = 3 (a normal-based or
    # bootstrap interval covers far less), over 1200 simulated groups.
    rng = np.random.default_rng(0)
    samples = rng.normal(0.8, 0.05, size=(1200, 3))
    hits = 0
    for row in samples:
        lo, hi = summarize_metric(list(row)).ci
        hits += lo <= 0.8 <= hi
    assert 0.93 <= hits / len(samples) <= 0.97


def test_nonfinite_and_too_few_values():
    s = summarize_metric([0.5, float("nan"), None, float("inf"), 0.7])
    assert (s.n, s.values) == (2, (0.5, None, None, None, 0.7))
    assert s.mean == pytest.approx(0.6) and s.std == pytest.approx(math.sqrt(0.02))
    one = summarize_metric([0.4, float("nan")])
    assert (one.mean, one.std, one.ci, one.n) == (0.4, None, None, 1)
    assert summarize_metric([float("nan")]).mean is None
    same = summarize_metric([0.25, 0.25, 0.25])
    assert (same.std, same.ci) == (0.0, (0.25, 0.25))
    assert one.format() == "0.4" and same.format(2) == "0.25 ± 0 [0.25, 0.25]"
    with pytest.raises(TrainEngineError, match=r"confidence must be a number in \(0, 1\).*got 95"):
        summarize_metric([1.0, 2.0], confidence=95)


def test_group_summary_is_valid_json_and_round_trips(tmp_path):
    children = [
        {"name": "fold-0", "fold": 0, "metrics": {"val/loss": 0.4, "val/accuracy": 0.9}},
        {"name": "fold-1", "fold": 1, "metrics": {"val/loss": float("nan"), "val/accuracy": 0.8}},
        {"name": "fold-2", "fold": 2, "metrics": {"val/loss": 0.6}},  # never reported accuracy
    ]
    summary = GroupSummary.from_children("cv", "cv3-x", children, experiment="exp", details={"k": 3})
    path = summary.save(tmp_path)
    assert path.name == "cv_summary.json"
    text = path.read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text  # strict JSON
    data = json.loads(text)
    assert data["schema_version"] == GROUP_SUMMARY_SCHEMA_VERSION == 1
    assert (data["kind"], data["group"], data["experiment"], data["num_children"]) == ("cv", "cv3-x", "exp", 3)
    assert data["metrics"]["val/loss"]["values"] == [0.4, None, 0.6]
    assert data["metrics"]["val/loss"]["mean"] == pytest.approx(0.5)
    assert data["metrics"]["val/accuracy"]["n"] == 2 and data["metrics"]["val/accuracy"]["values"] == [0.9, 0.8, None]
    assert data["children"][1]["metrics"]["val/loss"] is None
    again = GroupSummary.load(path)
    assert again.to_dict() == data
    bad = tmp_path / "other.json"
    bad.write_text('{"schema_version": 7}', encoding="utf-8")
    with pytest.raises(TrainEngineError, match="not a group summary of schema version 1"):
        GroupSummary.load(bad)
    with pytest.raises(TrainEngineError, match="unknown group kind 'tune'"):
        GroupSummary.from_children("tune", "t", children)  # type: ignore[arg-type]  # the wrong kind on purpose
