"""What an estimator is, as plain JSON: its class, its steps and its ``get_params()`` flattened.

scikit-learn's ``get_params(deep=True)`` already flattens nested estimators into
``step__param`` keys; what is left to do is making every value JSON-safe (an estimator becomes
its class name, a function its ``module:qualname``, a numpy scalar a Python number, NaN a
string) so the parameters can go into run.json, the ExperimentDB and the trackers as they are.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["estimator_params", "describe_estimator", "seed_estimator", "versions"]


def _class_path(obj: Any) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _json_value(value: Any) -> Any:
    """A JSON-safe form of one parameter value."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # JSON has no NaN: SimpleImputer's missing_values
    if hasattr(value, "get_params") and not isinstance(value, type):
        return type(value).__name__  # a nested estimator: its own parameters are flattened beside it
    if isinstance(value, type):
        return _class_path(value)  # dtype=np.float64
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "shape", None) == ():  # a numpy scalar
        return _json_value(item())
    if callable(value):
        return f"{getattr(value, '__module__', '?')}:{getattr(value, '__qualname__', repr(value))}"
    tolist = getattr(value, "tolist", None)
    if callable(tolist):  # a numpy array (OneHotEncoder(categories=[...]))
        return _json_value(tolist())
    return repr(value)


def estimator_params(estimator: Any) -> dict[str, Any]:
    """``estimator.get_params(deep=True)`` with JSON-safe values, sorted by key.

    Example:
        >>> from sklearn.pipeline import Pipeline
        >>> from sklearn.impute import SimpleImputer
        >>> from sklearn.linear_model import LogisticRegression
        >>> p = estimator_params(Pipeline([("imp", SimpleImputer()), ("clf", LogisticRegression(C=0.5))]))
        >>> p["clf__C"], p["imp__missing_values"], p["steps"]
        (0.5, 'nan', [['imp', 'SimpleImputer'], ['clf', 'LogisticRegression']])
    """
    return {str(k): _json_value(v) for k, v in sorted(estimator.get_params(deep=True).items())}


def describe_estimator(estimator: Any) -> dict[str, Any]:
    """The class and, for a Pipeline, its steps (``name -> class``), as run.json records them."""
    out: dict[str, Any] = {"class": type(estimator).__name__, "module": type(estimator).__module__}
    steps = getattr(estimator, "steps", None)
    if isinstance(steps, list):
        out["steps"] = {
            str(name): str(step) if step is None or isinstance(step, str) else _class_path(step) for name, step in steps
        }
    return out


def seed_estimator(estimator: Any, seed: int) -> list[str]:
    """Set every ``random_state`` parameter left at None to ``seed`` (in place); returns the keys set.

    A run is reproducible from its config: an estimator that draws random numbers (gradient
    boosting's subsampling, a forest's bootstrap) gets the run's ``training.seed`` unless its own
    ``random_state`` says otherwise.
    """
    keys = [k for k, v in estimator.get_params(deep=True).items() if k.split("__")[-1] == "random_state" and v is None]
    if keys:
        estimator.set_params(**dict.fromkeys(keys, seed))
    return sorted(keys)


def versions() -> dict[str, str]:
    """Versions of the libraries a fitted pipeline depends on (what loading it again needs)."""
    import importlib.metadata as md

    out: dict[str, str] = {}
    for dist in ("scikit-learn", "numpy", "scipy", "pandas", "skops", "skl2onnx", "onnx", "onnxruntime"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return out
