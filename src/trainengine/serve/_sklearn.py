"""The runtime of scikit-learn bundles (``trainengine.sklearn.export_pipeline_bundle``) in ``trainengine serve``.

A bundle whose ``manifest.json`` says ``"format": "sklearn"`` holds ``model.skops`` (and
``model.onnx`` when the pipeline converted and matched scikit-learn) plus ``sklearn_model.json``,
which names the columns the pipeline was trained on and their kinds. :class:`SklearnPredictor`
serves it behind the same app as torch bundles (API key, body and batch limits, timeouts,
metrics, alerts):

* **Runtime.** ``onnx``: onnxruntime on ``model.onnx`` (no scikit-learn needed at prediction
  time) when the bundle has one, else ``skops``: the pipeline loaded from ``model.skops`` after
  the trusted-types check (``trainengine._skops``: :func:`trainengine.sklearn.check_trusted`). Every file is verified
  against the manifest's SHA-256 first; a modified file is refused with :class:`BundleError`.
* **Inputs.** Records ``{"column": value, ...}`` (or lists of values in the columns' order),
  checked against ``sklearn_model.json["input"]``: an unknown or missing column, a wrong type or
  a non-finite number is an :class:`InputError` naming the field (the server answers 422).
  ``null`` is a missing value (the pipeline's imputers fill it). A pipeline trained on an array
  takes lists of ``num_features`` numbers.
* **Outputs.** As for torch bundles: classification ``{"class", "label", "probabilities"}``
  (``class`` the index into the bundle's classes, ``label`` the class as trained,
  ``probabilities`` in the classes' order; no ``probabilities`` for an estimator without
  ``predict_proba``), regression ``{"value"}`` or ``{"values"}``.

* **Drift.** A bundle exported from a run that recorded ``reference_profile.json`` (a
  :class:`~trainengine.monitoring.DatasetProfile` of the training data's number and boolean
  columns, ``feature_<k>`` being ``profile["columns"][k]``) is measured like a torch bundle:
  :meth:`SklearnPredictor.drift_features` turns a checked batch into those columns as floats
  (null as NaN), which the server's drift window compares with the profile.

This file is also copied into a scikit-learn bundle as ``sklearn_inference.py``: there it
imports the runtime from its sibling ``inference.py`` (no trainengine), serves ``model.onnx``
with numpy and onnxruntime only, and loads ``model.skops`` (scikit-learn, skops and pandas
installed) after the same trusted-types check, through the bundle's copy of ``trainengine._skops``.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

if __package__:  # trainengine.serve._sklearn
    from trainengine._skops import TrainEngineError, load_skops
    from trainengine.serve._runtime import BundleError, InputError, Predictor, Sampling, load_bundle, preprocess
else:  # a bundle's sklearn_inference.py: the runtime is the sibling inference.py, the skops check _skops.py
    sys.dont_write_bytecode = True  # no __pycache__ inside the bundle's folder
    from _skops import TrainEngineError, load_skops  # type: ignore[no-redef]  # the bundle's copy of trainengine._skops
    from inference import (  # type: ignore[no-redef]  # the bundle's copy of trainengine.serve._runtime
        BundleError,
        InputError,
        Predictor,
        Sampling,
        load_bundle,
        preprocess,
    )

__all__ = ["SklearnPredictor", "SKLEARN_FORMAT", "is_sklearn_bundle"]

SKLEARN_FORMAT = "sklearn"  # manifest["format"] of a scikit-learn bundle
_RUNTIMES = ("onnx", "skops")


def is_sklearn_bundle(bundle_dir: str | os.PathLike[str]) -> bool:
    """Whether ``bundle_dir/manifest.json`` says ``"format": "sklearn"`` (False when unreadable)."""
    try:
        with open(os.path.join(bundle_dir, "manifest.json"), encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == SKLEARN_FORMAT


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _check_value(value: Any, kind: str, path: str, onnx: bool) -> Any:
    """One record value of a column of this kind, as the pipeline takes it (None: missing)."""
    if value is None:
        if onnx and kind not in ("number", "bool"):
            raise InputError(
                path,
                "missing value (null); this model is served through ONNX, which takes no null for a text column — "
                "send a value",
            )
        return math.nan if kind == "number" else None
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(path, f"not a number, got {_describe(value)}; send a number (or null for missing)")
        v = float(value)
        if not math.isfinite(v):
            raise InputError(path, f"not finite ({value}); send a finite number (or null for missing)")
        return v
    if kind == "bool":
        if not isinstance(value, bool):
            raise InputError(path, f"not a boolean, got {_describe(value)}; send true or false (or null for missing)")
        return value
    if not isinstance(value, str):
        raise InputError(path, f"not a string, got {_describe(value)}; send a string (or null for missing)")
    return value


_is_none = np.frompyfunc(lambda v: v is None, 1, 1)


def _as_float(values: np.ndarray) -> np.ndarray:
    """Checked record values (numbers, booleans, None) as float64: None (a missing value) as NaN."""
    return np.where(_is_none(values).astype(bool), np.nan, values).astype(np.float64)


def _file_of(entry: Any) -> str | None:
    """A manifest's format entry: ``{"file": name}`` (a bundle) or the name itself (a run's ``model/`` folder)."""
    if isinstance(entry, dict):
        entry = entry.get("file")
    return str(entry) if entry else None


class SklearnPredictor(Predictor):
    """Predictions from a scikit-learn bundle: ONNX Runtime on ``model.onnx``, or the skops pipeline.

    Args:
        bundle_dir: The bundle's folder; every file is verified against the manifest first.
        runtime: ``"onnx"`` or ``"skops"``; default: the bundle's ``manifest["runtime"]`` (ONNX
            when the bundle has ``model.onnx``).
        num_threads: onnxruntime intra-op threads (default: onnxruntime's choice).
        trusted: Further type names the ``.skops`` file may hold (see ``check_trusted``).

    Raises:
        BundleError: The bundle fails verification, is not a scikit-learn bundle, has no such
            model file, or its ``.skops`` file holds untrusted types.

    Example:
        >>> predictor = SklearnPredictor("bundle/")  # doctest: +SKIP
        >>> predictor.predict([{"age": 41, "region": "north"}])[0]["label"]  # doctest: +SKIP
        1
    """

    runtime = "skops"

    def __init__(
        self,
        bundle_dir: str | os.PathLike[str],
        *,
        runtime: str | None = None,
        num_threads: int | None = None,
        trusted: Iterable[str] = (),
    ) -> None:
        bundle = load_bundle(bundle_dir)  # verifies every file's SHA-256 first
        super().__init__(bundle)
        if self.manifest.get("format") != SKLEARN_FORMAT:
            raise BundleError(
                f"{bundle.path} is not a scikit-learn bundle (manifest format {self.manifest.get('format')!r})"
            )
        info_file = bundle.path / str(self.manifest.get("model_info") or "sklearn_model.json")
        try:
            self.info: dict[str, Any] = json.loads(info_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BundleError(f"cannot read {info_file.name} of {bundle.path}: {exc}") from None
        self.schema: dict[str, Any] = self.info.get("input") or {}
        self.columns: list[dict[str, Any]] = list(self.schema.get("columns") or [])
        self.column_names = [str(c["name"]) for c in self.columns]
        self._column_index = {name: j for j, name in enumerate(self.column_names)}
        self._drift_index = self._drift_columns()
        classes = self.info.get("classes")
        self.classes: list[Any] | None = list(classes) if isinstance(classes, list) else None
        self._class_index = {str(c): i for i, c in enumerate(self.classes or [])}
        formats = self.manifest.get("formats") or {}
        onnx_file = _file_of(formats.get("onnx"))
        choice = runtime or str(self.manifest.get("runtime") or ("onnx" if onnx_file else "skops"))
        if choice not in _RUNTIMES:
            raise BundleError(f"unknown scikit-learn runtime {choice!r} — available: {', '.join(_RUNTIMES)}")
        self.runtime = choice
        self.session: Any = None
        self.pipeline: Any = None
        if choice == "onnx":
            self._load_onnx(onnx_file, num_threads)
        else:
            self._load_skops(_file_of(formats.get("skops")) or "model.skops", trusted)

    def _load_onnx(self, onnx_file: str | None, num_threads: int | None) -> None:
        if not onnx_file or onnx_file not in (self.manifest.get("files") or {}):
            raise BundleError(
                f"bundle {self.bundle.path} has no ONNX model (the pipeline did not convert); use runtime skops"
            )
        try:
            import onnxruntime as ort
        except ImportError:
            raise BundleError("serving a scikit-learn ONNX model needs onnxruntime: pip install onnxruntime") from None
        options = ort.SessionOptions()
        if num_threads is not None:
            options.intra_op_num_threads = num_threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(
                str(self.bundle.path / onnx_file), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise BundleError(f"onnxruntime cannot load {onnx_file} of {self.bundle.path}: {exc}") from exc
        self.onnx_inputs: list[dict[str, Any]] = list((self.info.get("onnx") or {}).get("inputs") or [])

    def _load_skops(self, skops_file: str, trusted: Iterable[str]) -> None:
        # trainengine._skops (a bundle: its verbatim copy): the allow-list check, then skops.io.load.
        try:
            self.pipeline = load_skops(self.bundle.path / skops_file, trusted=trusted)
        except (TrainEngineError, ImportError) as exc:  # UntrustedModelError, skops not installed
            raise BundleError(f"cannot load {skops_file} of {self.bundle.path}: {exc}") from exc

    def _drift_columns(self) -> list[int] | None:
        """Indices of the columns the reference profile describes, in its ``feature_<k>`` order.

        None: the inputs are an array (a pipeline trained on one), profiled feature by feature.

        Raises:
            BundleError: The profile names a column the model does not take.
        """
        profile = self.bundle.reference_profile
        if profile is None or not self.columns:
            return None
        names = profile.get("columns")
        if not isinstance(names, list):  # a profile of every number and boolean column, in order
            names = [c["name"] for c in self.columns if c.get("dtype") in ("number", "bool")]
        unknown = [str(n) for n in names if str(n) not in self._column_index]
        if unknown:
            raise BundleError(
                f"reference_profile.json of {self.bundle.path} profiles column(s) {', '.join(unknown)} that the model "
                "does not take; re-export the bundle"
            )
        return [self._column_index[str(n)] for n in names]

    def drift_features(self, batch: np.ndarray) -> np.ndarray:
        """The profiled columns of a :meth:`preprocess` batch as float64 ``(B, k)`` (null as NaN).

        What the server's drift window holds for a scikit-learn bundle: ``feature_<k>`` of the
        reference profile is column ``k`` here. Text and date columns are not profiled (a
        ``DatasetProfile`` has histograms of numbers only).
        """
        x = np.asarray(batch)
        if self._drift_index is None:
            return x.astype(np.float64).reshape(len(x), -1)
        return _as_float(x[:, self._drift_index])

    # ----------------------------------------------------------------------------- inputs
    def preprocess(
        self, inputs: Any, *, max_batch: int | None = None, max_request_tokens: int | None = None
    ) -> np.ndarray:
        """Check JSON records against the trained columns: an object array ``(B, columns)``.

        A pipeline trained on an array takes lists of numbers instead (a float array).

        Raises:
            InputError: Naming the first offending field (``inputs[2].age: not a number ...``).
        """
        if not self.columns:  # trained on an array: lists of num_features numbers
            width = int(self.schema.get("num_features") or 0)
            manifest = {"input": {"dtype": "float64", "shape": [None, width]}}
            return preprocess(inputs, manifest, self.task, max_batch=max_batch)
        if not isinstance(inputs, list):
            raise InputError("inputs", f"expected a list of records, got {_describe(inputs)}")
        if not inputs:
            raise InputError("inputs", "empty batch; send at least one record")
        if max_batch is not None and len(inputs) > max_batch:
            raise InputError(
                "inputs", f"{len(inputs)} examples exceed the batch limit of {max_batch}; split the request"
            )
        names = self.column_names
        known = set(names)
        onnx = self.runtime == "onnx"
        rows = np.empty((len(inputs), len(names)), dtype=object)
        for i, record in enumerate(inputs):
            if isinstance(record, dict):
                for key in record:
                    if key not in known:
                        raise InputError(
                            f"inputs[{i}].{key}", f"unknown column; the model's columns are: {', '.join(names)}"
                        )
                missing = [n for n in names if n not in record]
                if missing:
                    raise InputError(
                        f"inputs[{i}]",
                        f"missing column(s) {', '.join(missing)}; send every column the model was trained on "
                        f"({', '.join(names)}), null for a missing value",
                    )
                values = [record[n] for n in names]
            elif isinstance(record, list):
                if len(record) != len(names):
                    raise InputError(
                        f"inputs[{i}]",
                        f"expected {len(names)} values in the order {', '.join(names)}, got {len(record)}; "
                        'or send an object {"column": value, ...}',
                    )
                values = record
            else:
                raise InputError(
                    f"inputs[{i}]",
                    f'expected an object {{"column": value, ...}} or a list of {len(names)} values, '
                    f"got {_describe(record)}",
                )
            for j, (column, value) in enumerate(zip(self.columns, values, strict=True)):
                rows[i, j] = _check_value(value, str(column.get("dtype")), f"inputs[{i}].{names[j]}", onnx)
        return rows

    def _onnx_feeds(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """The onnxruntime inputs of a checked batch (numpy only): one ``(B, 1)`` input per column.

        As ``trainengine.sklearn._onnx.onnx_feeds`` feeds the model at export's parity check:
        numbers and booleans as float32 (null as NaN), anything else as strings; a pipeline
        trained on an array takes its one input ``(B, num_features)``.
        """
        if not self.columns:
            return {"input": np.asarray(x, dtype=np.float32)}
        datetimes = self._frame(x) if any(c.get("dtype") == "datetime" for c in self.columns) else None
        feeds = {}
        for spec in self.onnx_inputs:
            name = str(spec["name"])
            column = x[:, self._column_index[name]]
            if datetimes is not None and self.columns[self._column_index[name]].get("dtype") == "datetime":
                column = datetimes[name].to_numpy(dtype=object)  # as the training frame held them
            if spec["type"] == "float":
                feeds[name] = _as_float(column).astype(np.float32).reshape(-1, 1)
            else:
                feeds[name] = np.asarray([str(v) for v in column], dtype=object).reshape(-1, 1)
        return feeds

    def _frame(self, x: np.ndarray) -> Any:
        """The DataFrame the pipeline was trained on (columns in order, numbers as float64)."""
        import pandas as pd

        frame = pd.DataFrame(x, columns=self.column_names)
        for column in self.columns:
            name, kind = str(column["name"]), column.get("dtype")
            if kind == "number":
                frame[name] = frame[name].astype(np.float64)
            elif kind == "bool" and frame[name].notna().all():
                frame[name] = frame[name].astype(bool)
            elif kind == "datetime":
                try:
                    frame[name] = pd.to_datetime(frame[name])
                except (ValueError, TypeError) as exc:
                    raise InputError(f"inputs[].{name}", f"not a date/time: {exc}") from None
        return frame

    # ----------------------------------------------------------------------------- model
    def _outputs(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(predictions, probabilities or None) of the model on a preprocessed batch."""
        if self.session is not None:
            outs = self.session.run(None, self._onnx_feeds(x))
            probs = np.asarray(outs[1], dtype=np.float64) if len(outs) > 1 else None
            return np.asarray(outs[0]).reshape(len(x), -1), probs
        data = self._frame(x) if self.columns else x
        predictions = np.asarray(self.pipeline.predict(data))
        probs = None
        if self.bundle.task_type == "classification" and hasattr(self.pipeline, "predict_proba"):
            probs = np.asarray(self.pipeline.predict_proba(data), dtype=np.float64)
        return predictions.reshape(len(x), -1), probs

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Probabilities (classifiers with ``predict_proba``), else predictions, of a preprocessed batch."""
        predictions, probs = self._outputs(x)
        return probs if probs is not None else predictions

    def predict_array(
        self,
        x: np.ndarray,
        *,
        max_batch_tokens: int | None = None,
        check: Callable[[], None] | None = None,
        sampling: Sampling | None = None,
    ) -> list[dict[str, Any]]:
        """Predictions for a batch from :meth:`preprocess`, formatted as for torch bundles."""
        if check is not None:
            check()
        predictions, probs = self._outputs(x)
        if self.bundle.task_type != "classification":
            values = predictions.astype(np.float64)
            if not np.isfinite(values).all():
                row = int(np.argwhere(~np.isfinite(values))[0][0])
                raise InputError(f"inputs[{row}]", "the model's output is not finite; check the inputs' range")
            if values.shape[1] == 1:
                return [{"value": float(v)} for v in values[:, 0]]
            return [{"values": row.tolist()} for row in values]
        out = []
        for i, label in enumerate(predictions[:, 0].tolist()):
            index = self._class_index.get(str(label))
            if index is None:  # pragma: no cover - a label outside the recorded classes
                raise BundleError(f"the model predicted {label!r}, which is not one of its classes {self.classes}")
            assert self.classes is not None
            item: dict[str, Any] = {"class": index, "label": self.classes[index]}
            if probs is not None:
                item["probabilities"] = probs[i].tolist()
            out.append(item)
        return out
