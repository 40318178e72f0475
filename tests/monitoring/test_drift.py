"""Data profiles and Jensen–Shannon drift: counts, divergences, shifts, JSON round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon

from trainengine.data import InMemoryDataset, ListDataset, load_builtin
from trainengine.errors import DataError
from trainengine.monitoring import (
    AlertConfig,
    DatasetProfile,
    DriftReport,
    Histogram,
    MetricsEngine,
    compare_profiles,
    js_divergence,
    profile_dataset,
)
from trainengine.tasks import TaskSpec


@pytest.fixture(scope="module")
def digits():
    return load_builtin("digits", seed=0)


@pytest.fixture(scope="module")
def digits_ref(digits):
    return profile_dataset(digits.train, TaskSpec.classification("digits", 10))


# ----------------------------------------------------------------------------- divergence
def test_js_divergence_matches_scipy_squared_distance() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        p, q = rng.random(12), rng.random(12)
        q[rng.integers(0, 12)] = 0.0
        expected = jensenshannon(p, q, base=2) ** 2  # scipy returns the distance (sqrt)
        assert js_divergence(p, q) == pytest.approx(expected, abs=1e-12)
        assert js_divergence(p, q) == pytest.approx(js_divergence(q, p))


def test_js_divergence_bounds_and_edge_cases() -> None:
    assert js_divergence([3, 1, 0], [6, 2, 0]) == 0.0  # counts are normalised
    assert js_divergence([1, 0], [0, 1]) == 1.0  # disjoint: the base-2 maximum
    assert js_divergence([0, 0], [0, 0]) == 0.0 and js_divergence([0, 0], [1, 0]) == 1.0
    with pytest.raises(DataError, match="one length"):
        js_divergence([1, 2], [1, 2, 3])
    with pytest.raises(DataError, match="non-negative"):
        js_divergence([1, -1], [1, 1])


# ----------------------------------------------------------------------------- histograms
def test_histogram_counts_match_numpy_and_track_out_of_range_values() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(size=1000)
    edges = np.linspace(-1.0, 1.0, 9)
    hist = Histogram.from_values(np.concatenate([values, [np.nan, np.inf]]), edges)
    inside = values[(values >= -1.0) & (values <= 1.0)]
    assert hist.counts == np.histogram(inside, bins=edges)[0].tolist()
    assert hist.underflow == int((values < -1).sum()) and hist.overflow == int((values > 1).sum())
    assert hist.nonfinite == 2 and hist.total == 1002
    assert (hist.min, hist.max) == (values.min(), values.max())


def test_rebinning_preserves_mass_and_is_exact_on_equal_edges() -> None:
    rng = np.random.default_rng(2)
    values = rng.uniform(0, 10, size=5000)
    own = Histogram.from_values(values, Histogram.edges_for(values, 20))
    target = np.linspace(-2.0, 5.0, 8)
    moved = own.rebinned(target)
    assert moved.sum() == pytest.approx(own.total)
    exact = Histogram.from_values(values, target).vector()
    # Uniform data: spreading within bins is close to binning the raw values again.
    assert np.abs(moved - exact).max() < 0.02 * len(values)
    assert np.array_equal(own.rebinned(own.edges), own.vector())


def test_constant_feature_moves_as_a_point_mass() -> None:
    zeros = Histogram.from_values(np.zeros(50), Histogram.edges_for(np.zeros(50), 10))
    ref = Histogram.from_values(np.array([0.0, 0.25, 0.5, 1.0]), np.linspace(0, 1, 5))
    moved = zeros.rebinned(ref.edges)  # [nonfinite, underflow, 4 bins, overflow]
    assert moved.tolist() == [0, 0, 50, 0, 0, 0, 0]


# ----------------------------------------------------------------------------- profiles
def test_feature_profile_of_digits(digits, digits_ref) -> None:
    x, y = digits.train.columns
    assert digits_ref.kind == "features" and digits_ref.task_type == "classification"
    assert digits_ref.num_samples == digits_ref.dataset_size == len(y)
    assert len(digits_ref.features) == 64 and digits_ref.num_features_total == 64
    assert digits_ref.label_kind == "classes"
    expected = np.bincount(y.numpy(), minlength=10)
    assert digits_ref.label_counts == {str(c): int(n) for c, n in enumerate(expected)}
    f = digits_ref.features["feature_20"]
    assert f.edges[0] == pytest.approx(float(x[:, 20].min())) and f.edges[-1] == pytest.approx(float(x[:, 20].max()))
    assert len(f.edges) == 21 and sum(f.counts) == len(y)


def test_identical_data_has_zero_drift(digits, digits_ref) -> None:
    again = profile_dataset(digits.train, TaskSpec.classification("digits", 10))
    report = compare_profiles(digits_ref, again)
    assert report.overall == 0.0 and report.labels == 0.0
    assert not report.is_drift(0.2)


def test_train_and_val_of_one_split_do_not_drift(digits, digits_ref) -> None:
    spec = TaskSpec.classification("digits", 10)
    exact = compare_profiles(digits_ref, profile_dataset(digits.val, spec, reference=digits_ref))
    approx = compare_profiles(digits_ref, profile_dataset(digits.val, spec))  # own edges, re-binned
    assert exact.overall < 0.03 and approx.overall < 0.05 and exact.labels < 0.01


def test_shifted_features_drift_and_raise_an_alert(digits, digits_ref) -> None:
    spec = TaskSpec.classification("digits", 10)
    x, y = digits.val.columns
    shifted = profile_dataset(InMemoryDataset((x + 0.5, y)), spec, reference=digits_ref)
    report = compare_profiles(digits_ref, shifted)
    assert report.overall > 0.5 and report.is_drift(0.2)
    assert report.labels < 0.01  # only the features moved
    assert min(report.per_feature.values()) > 0.1  # every pixel moved
    engine = MetricsEngine(alert_config=AlertConfig(drift_threshold=0.2, actions=[]))
    record = engine.log_epoch(0, reference_profile=digits_ref, current_profile=shifted)
    assert record["drift/js_divergence"] == pytest.approx(report.overall)
    (alert,) = engine.get_alerts()
    assert (alert.kind, alert.metric, alert.severity) == ("drift", "drift/js_divergence", "critical")
    assert alert.value == pytest.approx(report.overall) and alert.threshold == 0.2
    assert engine.last_drift_report == report


def test_different_label_mix_drifts_in_the_labels(digits, digits_ref) -> None:
    spec = TaskSpec.classification("digits", 10)
    x, y = digits.train.columns
    keep = y < 2  # only zeros and ones
    current = profile_dataset(InMemoryDataset((x[keep], y[keep])), spec, reference=digits_ref)
    report = compare_profiles(digits_ref, current)
    # Two of ten classes: JS between uniform-ish over 10 and over 2 is about 0.6 bits.
    assert report.labels > 0.5 and report.is_drift(0.2, include_labels=True)
    engine = MetricsEngine(alert_config=AlertConfig(actions=[]))
    record = engine.log_epoch(0, reference_profile=digits_ref, current_profile=current)
    assert record["drift/labels_js"] == pytest.approx(report.labels)
    assert [a.metric for a in engine.get_alerts(kind="drift")] == ["drift/labels_js"]


def test_drift_alert_fires_once_while_drift_lasts(digits, digits_ref) -> None:
    x, y = digits.val.columns
    shifted = profile_dataset(InMemoryDataset((x + 0.5, y)), reference=digits_ref)
    engine = MetricsEngine(alert_config=AlertConfig(actions=[]))
    for epoch in range(3):
        engine.log_epoch(epoch, reference_profile=digits_ref, current_profile=shifted)
    assert [a.epoch for a in engine.get_alerts()] == [0]


def test_regression_labels_are_a_histogram() -> None:
    splits = load_builtin("diabetes")
    profile = profile_dataset(splits.train, TaskSpec.regression())
    assert profile.label_kind == "values" and profile.label_histogram is not None
    assert sum(profile.label_histogram.counts) == len(splits.train) and len(profile.features) == 10
    report = compare_profiles(profile, profile_dataset(splits.val, TaskSpec.regression(), reference=profile))
    assert report.labels is not None and report.labels < 0.2


def test_max_features_and_max_items_caps() -> None:
    x = torch.randn(300, 100)
    p = profile_dataset(InMemoryDataset((x,)), max_items=120, max_features=64, seed=3)
    assert len(p.features) == 64 and p.num_features_total == 100
    assert p.num_samples == 120 and p.dataset_size == 300 and p.label_kind == "none"
    assert sum(p.features["feature_0"].counts) == 120
    same = profile_dataset(InMemoryDataset((x,)), max_items=120, max_features=64, seed=3)
    assert same == p  # the subset is seeded


def test_images_are_flattened() -> None:
    splits = load_builtin("digits", image=True, max_train_samples=200)
    p = profile_dataset(splits.train, TaskSpec.vision_tiny())
    assert len(p.features) == 64 and p.label_kind == "classes"


# ----------------------------------------------------------------------------- tokens
def _padded_token_samples() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """LM samples of length 6 whose tails are padding (pad id 0, label -100)."""
    samples = []
    for n in (3, 4, 6, 6):
        ids = torch.zeros(6, dtype=torch.int64)
        ids[:n] = torch.arange(1, n + 1) + 10
        labels = torch.full((6,), -100, dtype=torch.int64)
        labels[:n] = ids[:n]
        samples.append((ids, labels))
    return samples


def test_token_profile_counts_only_non_padding_positions() -> None:
    profile = profile_dataset(ListDataset(_padded_token_samples()), TaskSpec.language_modeling())
    assert profile.kind == "tokens" and profile.label_kind == "none"
    # Tokens 11..16 over lengths 3, 4, 6, 6: 11-13 appear 4x, 14 3x, 15-16 2x; the pad id 0 never.
    assert profile.token_counts == {"11": 4, "12": 4, "13": 4, "14": 3, "15": 2, "16": 2}
    lengths = profile.sequence_length
    assert (lengths.min, lengths.max, sum(lengths.counts)) == (3.0, 6.0, 4)


def test_token_kind_is_detected_without_a_task_spec_and_from_dict_samples() -> None:
    samples = [
        {"input_ids": ids, "attention_mask": (labels != -100).long(), "labels": labels}
        for ids, labels in _padded_token_samples()
    ]
    profile = profile_dataset(ListDataset(samples))
    assert profile.kind == "tokens" and "0" not in profile.token_counts
    assert sorted(profile.token_counts) == ["11", "12", "13", "14", "15", "16"]


def test_token_drift_between_different_vocabularies() -> None:
    stream = torch.arange(2000) % 50
    ref = profile_dataset(
        load_builtin("pystdlib", max_corpus_bytes=40_000, max_length=32).train, TaskSpec.language_modeling()
    )
    from trainengine.data import TokenWindowDataset

    other = profile_dataset(
        TokenWindowDataset.from_stream(stream + 200, 32), TaskSpec.language_modeling(), reference=ref
    )
    same = profile_dataset(
        load_builtin("pystdlib", max_corpus_bytes=40_000, max_length=32).train,
        TaskSpec.language_modeling(),
        reference=ref,
    )
    assert compare_profiles(ref, same).overall == 0.0
    report = compare_profiles(ref, other)
    assert report.per_feature["token_ids"] > 0.9 and report.per_feature["sequence_length"] == 0.0


# ----------------------------------------------------------------------------- serialisation
def test_profile_round_trips_through_json(tmp_path, digits, digits_ref) -> None:
    text = json.dumps(digits_ref.to_dict())  # plain JSON, no custom encoder
    assert DatasetProfile.from_dict(json.loads(text)) == digits_ref
    path = digits_ref.save(tmp_path / "profiles" / "train.json")
    loaded = DatasetProfile.load(path)
    assert loaded == digits_ref
    current = profile_dataset(digits.val, TaskSpec.classification("digits", 10), reference=loaded)
    assert compare_profiles(loaded, current) == compare_profiles(digits_ref, current)
    tokens = profile_dataset(ListDataset(_padded_token_samples()), TaskSpec.language_modeling())
    assert DatasetProfile.from_dict(json.loads(json.dumps(tokens.to_dict()))) == tokens


def test_bad_profiles_and_data_raise_clear_errors(tmp_path, digits_ref) -> None:
    bad = digits_ref.to_dict() | {"version": 99}
    with pytest.raises(DataError, match="unsupported DatasetProfile version 99"):
        DatasetProfile.from_dict(bad)
    with pytest.raises(DataError, match="no dataset profile"):
        DatasetProfile.load(tmp_path / "missing.json")
    with pytest.raises(DataError, match="empty data set"):
        profile_dataset(ListDataset([]))
    tokens = profile_dataset(ListDataset(_padded_token_samples()), TaskSpec.language_modeling())
    with pytest.raises(DataError, match="cannot compare a 'features' profile with a 'tokens' profile"):
        compare_profiles(digits_ref, tokens)
    with pytest.raises(DataError, match="bins must be an integer >= 1"):
        profile_dataset(ListDataset([torch.zeros(3)]), bins=0)
    with pytest.raises(DataError, match="reference profile has 64"):
        profile_dataset(InMemoryDataset((torch.zeros(10, 8),)), reference=digits_ref)


def test_drift_report_helpers() -> None:
    report = DriftReport(overall=0.1, per_feature={"a": 0.05, "b": 0.15}, labels=0.3)
    assert not report.is_drift(0.2) and report.is_drift(0.2, include_labels=True)
    assert report.top_features(1) == [("b", 0.15)]
    assert report.to_dict() == {"overall": 0.1, "per_feature": {"a": 0.05, "b": 0.15}, "labels": 0.3}
