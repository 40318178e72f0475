"""Dynamic int8 quantization of the bundle's ONNX model, with its size and metric change measured."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from trainengine.errors import ExportError, MissingExtraError
from trainengine.export._formats import INPUT_NAME, ParityInputs
from trainengine.tasks import TaskSpec

__all__ = ["quantize_dynamic_int8"]

_MAX_EVAL = 2000
logger = logging.getLogger(__name__)


def quantize_dynamic_int8(
    folder: Path,
    onnx_entry: Mapping[str, Any],
    task: TaskSpec,
    eval_data: Any,
    parity: ParityInputs,
    manifest: Mapping[str, Any],
) -> dict[str, Any]:
    """Write ``model.int8.onnx`` (int8 weights, activations quantized on the fly) and measure it.

    The metric delta is measured on ``eval_data`` when given (accuracy for classification, MSE
    for regression, next-token accuracy for language modeling; at most 2,000 samples), else as
    the agreement of the two models on the example batch.
    """
    try:
        import onnx
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise MissingExtraError(exc.name or "onnxruntime", "export", "dynamic-int8 quantization") from None
    fp32 = folder / onnx_entry["file"]
    int8 = folder / "model.int8.onnx"
    # The dynamo exporter's value_info can disagree with ONNX shape inference after the
    # quantizer rewrites MatMuls; dropping it lets the quantizer re-infer shapes.
    graph = onnx.load(str(fp32))
    del graph.graph.value_info[:]
    stripped = folder / ".model.noinfo.onnx"
    onnx.save(graph, str(stripped))
    root = logging.getLogger()
    was_disabled, root.disabled = root.disabled, True  # the quantizer warns on the root logger
    try:
        quantize_dynamic(str(stripped), str(int8), weight_type=QuantType.QInt8)
    except Exception as exc:
        raise ExportError(f"dynamic-int8 quantization failed: {exc}") from exc
    finally:
        root.disabled = was_disabled
        stripped.unlink(missing_ok=True)

    sessions = {
        k: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for k, p in (("fp32", fp32), ("int8", int8))
    }
    dtype = np.int64 if parity.token_inputs else np.float32
    x = parity.batches[0].numpy().astype(dtype)
    out = {k: s.run(None, {INPUT_NAME: x})[0] for k, s in sessions.items()}
    result: dict[str, Any] = {
        "method": "dynamic-int8",
        "file": int8.name,
        "size_bytes": int8.stat().st_size,
        "fp32_size_bytes": fp32.stat().st_size,
        "size_ratio": int8.stat().st_size / fp32.stat().st_size,
        "max_abs_diff_on_examples": float(np.max(np.abs(out["fp32"].astype(np.float64) - out["int8"]))),
    }
    if eval_data is not None and len(eval_data) > 0:
        metrics = {k: _evaluate(s, eval_data, task, dtype, manifest) for k, s in sessions.items()}
        result["metric_delta"] = {m: metrics["int8"][m] - metrics["fp32"][m] for m in metrics["fp32"]}
        result["metrics"] = metrics
        result["evaluated_on"] = min(len(eval_data), _MAX_EVAL)
    else:
        same = np.argmax(out["fp32"], axis=-1) == np.argmax(out["int8"], axis=-1)
        result["metric_delta"] = {"prediction_agreement": float(np.mean(same))}
        result["evaluated_on"] = "example_input (pass eval_data= for a real metric delta)"
    return result


def _evaluate(session: Any, data: Any, task: TaskSpec, dtype: Any, manifest: Mapping[str, Any]) -> dict[str, float]:
    n = min(len(data), _MAX_EVAL)
    xs, ys = [], []
    for i in range(n):
        sample = data[i]
        if isinstance(sample, Mapping):
            x = next(sample[k] for k in ("input_ids", "x", "inputs", "input", "features") if k in sample)
            y = next(sample[k] for k in ("labels", "label", "y", "target") if k in sample)
        else:
            x, y = sample[0], sample[1]
        xs.append(np.asarray(x))
        ys.append(np.asarray(y))
    preds = []
    for start in range(0, n, 256):
        batch = np.stack(xs[start : start + 256]).astype(dtype)
        preds.append(session.run(None, {INPUT_NAME: batch})[0])
    logits = np.concatenate(preds).astype(np.float64)
    labels = np.stack(ys)
    if task.task_type == "language_modeling":
        mask = labels != task.ignore_index
        return {"next_token_accuracy": float(np.mean((np.argmax(logits, axis=-1) == labels)[mask]))}
    if task.task_type != "regression":  # classification, vision
        return {"accuracy": float(np.mean(np.argmax(logits, axis=-1) == labels.reshape(-1)))}
    scale = manifest.get("target_scaling") or {"std": 1.0}
    err = (logits.reshape(labels.shape) - labels) * float(scale["std"])
    return {"mse": float(np.mean(err**2))}
