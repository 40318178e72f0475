"""Bootstrap intervals and the paired test: coverage, reproducibility, exactness per resample."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, mean_squared_error, roc_auc_score

from trainengine.errors import TrainEngineError
from trainengine.evaluation import (
    bootstrap_ci,
    bootstrap_cis,
    bootstrap_weights,
    from_unweighted,
    get_weighted_metric,
    paired_bootstrap,
)


def _probs(rng: np.random.Generator, labels: np.ndarray, classes: int, signal: float) -> np.ndarray:
    logits = rng.normal(size=(len(labels), classes)) + signal * np.eye(classes)[labels]
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def test_weights_are_resample_counts_and_reproducible() -> None:
    w = np.concatenate(list(bootstrap_weights(50, 300, seed=3)))
    assert w.shape == (300, 50)
    assert (w.sum(axis=1) == 50).all() and (w >= 0).all()
    assert np.array_equal(w, np.concatenate(list(bootstrap_weights(50, 300, seed=3))))
    assert not np.array_equal(w, np.concatenate(list(bootstrap_weights(50, 300, seed=4))))
    # Each example is drawn about once per resample on average.
    assert abs(w.mean() - 1.0) < 0.02


@pytest.mark.parametrize(
    ("name", "sk"),
    [
        ("accuracy", lambda p, y: accuracy_score(y, p.argmax(1))),
        ("f1_macro", lambda p, y: f1_score(y, p.argmax(1), average="macro")),
        ("roc_auc", lambda p, y: roc_auc_score(y, p[:, 1])),
    ],
)
def test_each_resample_equals_sklearn_on_the_resampled_data(name: str, sk) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    probs = np.round(_probs(rng, labels, 2, 1.0), 2)  # rounding makes score ties
    weights = next(iter(bootstrap_weights(200, 5, seed=1)))
    values = get_weighted_metric(name)(weights, probs, labels)
    for row, w in enumerate(weights):
        idx = np.repeat(np.arange(200), w.astype(int))
        assert values[row] == pytest.approx(sk(probs[idx], labels[idx]), abs=1e-12)


@pytest.mark.slow
def test_ci_coverage_of_accuracy_on_synthetic_data() -> None:
    # n = 500 examples, 400 repetitions, true accuracy 0.8: the 95% interval must contain it in
    # 92-98% of the repetitions (the coverage criterion).
    rng = np.random.default_rng(2026)
    start = time.process_time()  # CPU time: wall time on a loaded CI machine says little
    hits = 0
    for rep in range(400):
        labels = rng.integers(0, 2, 500)
        right = rng.random(500) < 0.8
        probs = np.eye(2)[np.where(right, labels, 1 - labels)]
        ci = bootstrap_ci("accuracy", probs, labels, n_bootstrap=1000, seed=rep)
        hits += ci.low <= 0.8 <= ci.high
    coverage = hits / 400
    assert 0.92 <= coverage <= 0.98, coverage
    assert time.process_time() - start < 10.0


@pytest.mark.slow
def test_ci_coverage_of_mse_on_synthetic_data() -> None:
    rng = np.random.default_rng(7)
    hits = 0
    for rep in range(200):
        targets = rng.normal(size=500)
        preds = targets + rng.normal(scale=0.5, size=500)  # true MSE = 0.25
        ci = bootstrap_ci("mse", preds, targets, n_bootstrap=1000, seed=rep)
        hits += ci.low <= 0.25 <= ci.high
    assert 0.91 <= hits / 200 <= 0.99, hits / 200  # 200 repetitions: a wider band, half the time


def test_ci_estimate_and_seed() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(size=300)
    p = y + rng.normal(scale=0.3, size=300)
    a = bootstrap_ci("mse", p, y, seed=5)
    assert a.estimate == pytest.approx(mean_squared_error(y, p))
    assert a.low < a.estimate < a.high
    assert a == bootstrap_ci("mse", p, y, seed=5)
    assert a != bootstrap_ci("mse", p, y, seed=6)
    # A wider confidence gives a wider interval on the same resamples.
    wide = bootstrap_ci("mse", p, y, seed=5, confidence=0.99)
    assert wide.low < a.low and wide.high > a.high
    # bootstrap_cis shares the resamples: the same intervals as one metric at a time.
    both = bootstrap_cis(["mse", "mae"], p, y, seed=5)
    assert both["mse"] == a and both["mae"] == bootstrap_ci("mae", p, y, seed=5)


def test_from_unweighted_matches_the_vectorised_form() -> None:
    rng = np.random.default_rng(3)
    y = rng.normal(size=100)
    p = y + rng.normal(size=100)
    slow = bootstrap_ci(from_unweighted(lambda a, b: mean_squared_error(b, a)), p, y, n_bootstrap=50, seed=2)
    fast = bootstrap_ci("mse", p, y, n_bootstrap=50, seed=2)
    assert (slow.low, slow.high) == pytest.approx((fast.low, fast.high))


def test_errors_name_the_problem() -> None:
    y = np.zeros(10)
    with pytest.raises(TrainEngineError, match="unknown metric 'acuracy' — available: accuracy"):
        bootstrap_ci("acuracy", y, y)
    with pytest.raises(TrainEngineError, match=r"share their first dimension.*\(10,\), \(9,\)"):
        bootstrap_ci("mse", y, y[:9])
    with pytest.raises(TrainEngineError, match="confidence must be between 0 and 1"):
        bootstrap_ci("mse", y, y, confidence=95)
    with pytest.raises(TrainEngineError, match="n_bootstrap must be a positive integer"):
        bootstrap_ci("mse", y, y, n_bootstrap=0)
    with pytest.raises(TrainEngineError, match="candidate has 10 examples, baseline 9"):
        paired_bootstrap("mse", (y, y), (y[:9], y[:9]))
    with pytest.raises(TrainEngineError, match="needs higher_is_better"):
        paired_bootstrap(get_weighted_metric("mse"), (y, y), (y, y))


def test_paired_bootstrap_accepts_a_clearly_better_candidate() -> None:
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 3, 600)
    good, weak = _probs(rng, labels, 3, 3.0), _probs(rng, labels, 3, 0.5)
    r = paired_bootstrap("accuracy", (good, labels), (weak, labels), seed=0)
    assert r.delta == pytest.approx(accuracy_score(labels, good.argmax(1)) - accuracy_score(labels, weak.argmax(1)))
    assert r.delta > 0.2 and r.ci[0] > 0
    assert r.p_value < 0.001 and r.is_significant(0.99)
    assert r.candidate.estimate - r.baseline.estimate == pytest.approx(r.delta)
    # Lower-is-better metrics flip the direction by themselves.
    loss = paired_bootstrap("log_loss", (good, labels), (weak, labels))
    assert loss.delta < 0 and loss.is_significant() and not loss.higher_is_better


def test_paired_bootstrap_refuses_the_same_or_a_worse_model() -> None:
    rng = np.random.default_rng(12)
    labels = rng.integers(0, 2, 400)
    probs = _probs(rng, labels, 2, 1.0)
    same = paired_bootstrap("f1_macro", (probs, labels), (probs.copy(), labels))
    assert same.delta == 0 and same.p_value == 1.0 and not same.is_significant()
    worse = paired_bootstrap("roc_auc", (_probs(rng, labels, 2, 0.2), labels), (probs, labels))
    assert worse.delta < 0 and worse.p_value > 0.95 and not worse.is_significant()


def test_paired_is_tighter_than_unpaired_for_correlated_models() -> None:
    # Two models that agree on most examples: pairing cancels the shared per-example noise, so the
    # delta interval is much narrower than the two separate intervals suggest.
    rng = np.random.default_rng(5)
    targets = rng.normal(size=500)
    base = targets + rng.normal(scale=1.0, size=500)
    cand = base - 0.05 * (base - targets)  # 5% closer everywhere
    r = paired_bootstrap("mse", (cand, targets), (base, targets))
    assert r.is_significant()
    assert r.candidate.high > r.baseline.low  # the separate intervals overlap ...
    assert r.ci[1] < 0  # ... yet the paired delta is clearly negative


def test_bootstrap_10k_examples_1000_resamples_is_fast() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 10_000)
    probs = _probs(rng, labels, 2, 1.0)
    start = time.perf_counter()
    cis = bootstrap_cis(["accuracy", "f1_macro", "log_loss", "brier"], probs, labels, n_bootstrap=1000)
    elapsed = time.perf_counter() - start
    assert all(c.low < c.estimate < c.high for c in cis.values())
    assert elapsed < 4.0, elapsed  # ~1 s on 2 cores; the benchmark records the number


def test_r2_of_a_resample_with_constant_targets_is_undefined_not_huge():
    """A resample drawing only equal targets has no variance: R² is NaN there (rounding used to
    leave ~1e-17 in the total sum of squares and an R² near 1e16 as the interval's upper bound)."""
    import numpy as np

    from trainengine.evaluation._metrics import _r2

    preds, targets = np.array([0.2, 0.9, 0.8, 0.7, 0.6]), np.array([0.0, 1.0, 1.0, 0.5, 0.5])
    weights = np.array([[1, 1, 1, 0, 0], [0, 0, 0, 3, 2], [1, 1, 1, 1, 1]], dtype=float)
    r2 = _r2(weights, preds, targets)
    assert r2[0] == pytest.approx(0.865) and np.isnan(r2[1]) and r2[2] == pytest.approx(0.8)
