"""A fitted pipeline as ONNX (skl2onnx), checked against scikit-learn before it is kept.

Inputs: a pipeline trained on a DataFrame gets **one ONNX input per column** (shape ``[None, 1]``:
``float`` for numeric and boolean columns, ``string`` for the rest), named like the column, which
is what a ``ColumnTransformer`` needs; a pipeline trained on an array gets one ``float`` input
``input`` of shape ``[None, num_features]``. Outputs: classifiers give ``label`` and
``probabilities`` (columns in ``classes_`` order; no ZipMap), regressors ``variable``.

Not every pipeline converts (skl2onnx has no converter for some estimators and options, e.g.
``SimpleImputer`` on a string column whose missing values are NaN): the reason is returned and
recorded, and the pipeline is kept as ``.skops`` only. A converted model is kept only when
onnxruntime's outputs match scikit-learn's on the data (max absolute difference of the
probabilities <= 1e-4 and the same labels; for regression <= 1e-4 relative), so a served ONNX model
never silently disagrees with the trained one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["OnnxExport", "convert_to_onnx", "onnx_feeds", "run_onnx", "ONNX_FILE"]

ONNX_FILE = "model.onnx"
_PROB_ATOL = 1e-4
_REG_RTOL = 1e-4


@dataclass
class OnnxExport:
    """The outcome of a conversion.

    Attributes:
        model: the serialized ONNX model, or None when it did not convert or failed the check.
        reason: why there is no model (``"skl2onnx: ..."``, ``"parity: ..."``), else None.
        inputs: ``[{"name", "type": "float" | "string", "shape"}]`` in order.
        outputs: the output names.
        parity: ``{"rows", "max_abs_diff", "label_agreement", "ok"}`` when checked.
        seconds: time spent converting and checking.
    """

    model: bytes | None
    reason: str | None = None
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    parity: dict[str, Any] | None = None
    seconds: float = 0.0

    def record(self, file: str | None) -> dict[str, Any]:
        """What ``sklearn_model.json`` says about the ONNX model."""
        return {
            "file": file,
            "reason": self.reason,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "parity": self.parity,
        }


def _final_step(estimator: Any) -> Any:
    steps = getattr(estimator, "steps", None)
    return steps[-1][1] if isinstance(steps, list) and steps else estimator


def _input_spec(X: Any) -> list[dict[str, Any]]:
    if hasattr(X, "iloc"):
        out = []
        for c in X.columns:
            kind = getattr(X[c].dtype, "kind", "O")
            out.append({"name": str(c), "type": "float" if kind in "biuf" else "string", "shape": [None, 1]})
        return out
    return [{"name": "input", "type": "float", "shape": [None, int(np.asarray(X).shape[1])]}]


def onnx_feeds(X: Any, inputs: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The onnxruntime feed of ``X`` for a model with these ``inputs`` (float32 numbers, strings)."""
    if len(inputs) == 1 and inputs[0]["name"] == "input" and not hasattr(X, "iloc"):
        return {"input": np.asarray(X, dtype=np.float32)}
    feeds = {}
    for spec in inputs:
        col = X[spec["name"]]
        if spec["type"] == "float":
            feeds[spec["name"]] = col.to_numpy(dtype=np.float32, na_value=np.nan).reshape(-1, 1)
        else:
            feeds[spec["name"]] = np.asarray([str(v) for v in col], dtype=object).reshape(-1, 1)
    return feeds


def run_onnx(model: bytes | str, X: Any, inputs: list[dict[str, Any]]) -> list[np.ndarray]:
    """The ONNX model's outputs on ``X`` (onnxruntime, CPU)."""
    import onnxruntime as ort

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return list(session.run(None, onnx_feeds(X, inputs)))


def _parity(estimator: Any, outputs: list[np.ndarray], X: Any, task_type: str) -> dict[str, Any]:
    rows = len(X)
    if task_type == "classification":
        labels = np.asarray(outputs[0]).reshape(-1)
        expected = np.asarray(estimator.predict(X))
        agreement = float(np.mean(labels.astype(str) == expected.astype(str)))
        diff = 0.0
        if hasattr(estimator, "predict_proba") and len(outputs) > 1:
            diff = float(np.max(np.abs(np.asarray(outputs[1], dtype=np.float64) - estimator.predict_proba(X))))
        ok = agreement == 1.0 and diff <= _PROB_ATOL
        return {"rows": rows, "max_abs_diff": diff, "label_agreement": agreement, "ok": ok}
    pred = np.asarray(outputs[0], dtype=np.float64).reshape(-1)
    expected = np.asarray(estimator.predict(X), dtype=np.float64).reshape(-1)
    diff = float(np.max(np.abs(pred - expected)))
    scale = max(1.0, float(np.max(np.abs(expected))))
    return {"rows": rows, "max_abs_diff": diff, "label_agreement": None, "ok": diff <= _REG_RTOL * scale}


def convert_to_onnx(estimator: Any, X: Any, task_type: str, *, check_rows: int = 256) -> OnnxExport:
    """Convert a fitted estimator with skl2onnx and check it on the first ``check_rows`` rows of ``X``.

    Never raises for a pipeline that does not convert: the reason is in :attr:`OnnxExport.reason`.

    Example:
        >>> from sklearn.datasets import load_diabetes
        >>> from sklearn.linear_model import Ridge
        >>> X, y = load_diabetes(return_X_y=True)
        >>> out = convert_to_onnx(Ridge().fit(X, y), X, "regression")
        >>> out.reason, out.parity["ok"], [i["name"] for i in out.inputs]
        (None, True, ['input'])
    """
    start = time.perf_counter()
    inputs = _input_spec(X)
    try:
        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    except ImportError:
        return OnnxExport(None, 'skl2onnx is not installed (pip install "trainengine[sklearn]")', inputs)
    try:
        import onnxruntime  # noqa: F401 - a model is only kept once onnxruntime has checked it
    except ImportError:
        reason = 'onnxruntime is not installed to check the model (pip install "trainengine[export]")'
        return OnnxExport(None, reason, inputs)
    types = [
        (s["name"], FloatTensorType(s["shape"]) if s["type"] == "float" else StringTensorType(s["shape"]))
        for s in inputs
    ]
    final = _final_step(estimator)
    # Probabilities as one (n, C) tensor, not ZipMap's list of dicts; a classifier without
    # predict_proba (LinearSVC) has no ZipMap to turn off.
    options = (
        {id(final): {"zipmap": False}} if task_type == "classification" and hasattr(final, "predict_proba") else None
    )
    try:
        onx = to_onnx(estimator, initial_types=types, options=options)
        model = onx.SerializeToString()
    except Exception as exc:  # noqa: BLE001 - skl2onnx raises many kinds; not converting is an outcome, not a failure
        return OnnxExport(None, f"skl2onnx: {type(exc).__name__}: {exc}", inputs, seconds=time.perf_counter() - start)
    outputs = [o.name for o in onx.graph.output]
    sample = X.iloc[:check_rows] if hasattr(X, "iloc") else np.asarray(X)[:check_rows]
    try:
        got = run_onnx(model, sample, inputs)
    except Exception as exc:  # noqa: BLE001 - onnxruntime refusing the converted graph is recorded the same way
        reason = f"onnxruntime: {type(exc).__name__}: {exc}"
        return OnnxExport(None, reason, inputs, outputs, seconds=time.perf_counter() - start)
    parity = _parity(estimator, got, sample, task_type)
    elapsed = time.perf_counter() - start
    if not parity["ok"]:
        reason = (
            f"parity: onnxruntime and scikit-learn disagree on {parity['rows']} rows (max abs diff "
            f"{parity['max_abs_diff']:.3g}, label agreement {parity['label_agreement']})"
        )
        return OnnxExport(None, reason, inputs, outputs, parity, elapsed)
    return OnnxExport(model, None, inputs, outputs, parity, elapsed)
