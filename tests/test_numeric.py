"""trainengine._numeric: the drift arithmetic shared by monitoring and the bundle's runtime."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from trainengine import _numeric
from trainengine._numeric import bin_counts, bin_vector, categorical_js, histogram_vector, js_divergence


def test_js_divergence_is_scipys_squared_distance_and_defines_the_empty_cases() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        p, q = rng.random(7), rng.random(7) * (rng.random(7) > 0.3)
        assert js_divergence(p, q) == pytest.approx(jensenshannon(p, q, base=2) ** 2, abs=1e-12)
    assert js_divergence([0, 0], [0, 0]) == 0.0 and js_divergence([0, 0], [1, 0]) == 1.0
    with pytest.raises(ValueError, match="one length"):
        js_divergence([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="non-negative"):
        js_divergence([1, -1], [1, 1])


def test_binning_agrees_with_numpy_histogram_inside_the_range_and_counts_the_rest() -> None:
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.normal(size=500), [np.nan, np.inf, -np.inf, -10.0, 10.0, 1.0]])
    edges = np.linspace(-1.0, 1.0, 9)
    counts, under, over, nonfinite = bin_counts(values, edges)
    finite = values[np.isfinite(values)]
    expected, _ = np.histogram(finite, edges)  # numpy: last bin closed, like ours
    assert counts.tolist() == expected.tolist()
    assert (under, over, nonfinite) == (int((finite < -1).sum()), int((finite > 1).sum()), 3)
    vector = bin_vector(values, edges)
    assert vector.tolist() == [nonfinite, under, *expected.tolist(), over] and vector.sum() == values.size


def test_histogram_vector_and_categorical_js() -> None:
    assert histogram_vector({"counts": [1, 2], "overflow": 3}).tolist() == [0.0, 0.0, 1.0, 2.0, 3.0]
    assert categorical_js({"a": 2, "b": 2}, {"b": 1, "a": 1}) == 0.0
    assert categorical_js({"a": 1}, {"b": 1}) == 1.0


def test_monitoring_and_the_serving_runtime_share_these_functions() -> None:
    from trainengine.monitoring import js_divergence as monitoring_js
    from trainengine.serve import _runtime

    assert _runtime.js_divergence is js_divergence and _runtime.bin_vector is bin_vector
    assert monitoring_js([3, 1], [1, 3]) == js_divergence([3, 1], [1, 3])


def test_module_imports_only_numpy_and_the_standard_library() -> None:
    tree = ast.parse(Path(_numeric.__file__).read_text())
    modules = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert modules <= set(sys.stdlib_module_names) | {"__future__", "numpy"}, modules
