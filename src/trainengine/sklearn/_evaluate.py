"""Evaluating a fitted scikit-learn estimator with ``trainengine.evaluation``: the same metrics, the
same bootstrap intervals, the same ``eval_metrics.json`` as a torch model.

The estimator's outputs become :class:`~trainengine.evaluation.Predictions` (classification: the
``predict_proba`` columns in the run's class order and each row's class index; regression: the
predictions and targets), and from there everything is ``trainengine.evaluation``'s own code:
metrics, bootstrap intervals, segments, the tuned threshold, the worst examples, the report.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trainengine.errors import DataError

__all__ = ["predictions_of", "fold_metrics", "evaluate_estimator", "evaluate_saved_pipeline", "class_indices"]


def class_indices(y: np.ndarray, classes: Sequence[Any]) -> np.ndarray:
    """Each label's position in ``classes``.

    Raises:
        DataError: a label that is not one of ``classes`` (the training data's).
    """
    keys = np.asarray([str(c) for c in classes])
    order = np.argsort(keys)
    labels = np.asarray(y).astype(str)
    pos = np.searchsorted(keys, labels, sorter=order)
    pos = np.clip(pos, 0, len(keys) - 1)
    found = keys[order][pos] == labels
    if not found.all():
        unknown = sorted(set(labels[~found].tolist()))[:5]
        raise DataError(
            f"the data has label(s) {', '.join(map(repr, unknown))} the model was not trained on (classes: "
            f"{', '.join(map(str, classes))})"
        )
    return order[pos].astype(np.int64)


def predictions_of(estimator: Any, X: Any, y: np.ndarray, task_type: str, classes: Sequence[Any] | None = None) -> Any:
    """The estimator's outputs on ``X`` as ``trainengine.evaluation.Predictions``.

    Args:
        estimator: a fitted estimator or Pipeline.
        X: features.
        y: the true targets.
        task_type: ``classification`` or ``regression``.
        classes: the run's classes, in order (default: ``estimator.classes_``). A fold's model
            that saw fewer classes gets zero probability for the others.

    Returns:
        ``Predictions``: probabilities ``(n, C)`` and class indices, or predictions and targets.
        An estimator without ``predict_proba`` gives probability 1 to its predicted class.
    """
    from trainengine.evaluation import Predictions

    if task_type == "classification":
        known = list(classes if classes is not None else estimator.classes_)
        targets = class_indices(y, known)
        columns = class_indices(np.asarray(estimator.classes_), known)
        probs = np.zeros((len(targets), len(known)), dtype=np.float64)
        if hasattr(estimator, "predict_proba"):
            probs[:, columns] = np.asarray(estimator.predict_proba(X), dtype=np.float64)
        else:
            probs[np.arange(len(targets)), class_indices(np.asarray(estimator.predict(X)), known)] = 1.0
        return Predictions("classification", probs, targets)
    outputs = np.asarray(estimator.predict(X), dtype=np.float64).reshape(len(y), -1)[:, 0]
    return Predictions("regression", outputs, np.asarray(y, dtype=np.float64))


def fold_metrics(predictions: Any, prefix: str = "val") -> dict[str, float]:
    """Every metric of ``trainengine.evaluation`` on these predictions, plus ``loss`` (log loss /
    MSE, what a torch run of the task calls its loss), as ``<prefix>/<metric>``."""
    from trainengine.evaluation import compute_metrics

    metrics = compute_metrics(predictions.task, *predictions.arrays)
    metrics["loss"] = metrics["log_loss"] if predictions.task == "classification" else metrics["mse"]
    ordered = {"loss": metrics.pop("loss"), **metrics}
    return {f"{prefix}/{name}": float(value) for name, value in ordered.items()}


def _segments_of(segment_key: Any, X: Any, n: int) -> np.ndarray | None:
    if segment_key is None:
        return None
    if isinstance(segment_key, str):
        if not hasattr(X, "columns") or segment_key not in X.columns:
            columns = ", ".join(map(str, getattr(X, "columns", []))) or "(an array has none)"
            raise DataError(f"segment_key={segment_key!r} is not a column of the evaluated data; columns: {columns}")
        return np.asarray([str(v) for v in X[segment_key]])
    ids = np.asarray(segment_key)
    if len(ids) != n:
        raise DataError(f"segment_key has {len(ids)} ids but the data has {n} rows; give one id per row")
    return ids


def evaluate_estimator(
    estimator: Any,
    X: Any,
    y: Any,
    task_type: str,
    *,
    classes: Sequence[Any] | None = None,
    segment_key: str | Sequence[Any] | np.ndarray | None = None,
    threshold_predictions: Any = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    worst_k: int = 20,
    output_dir: str | os.PathLike[str] | None = None,
    source: str | None = None,
    data_fingerprint: str | None = None,
) -> Any:
    """Evaluate a fitted estimator: ``trainengine.evaluation``'s report, for scikit-learn.

    Args:
        estimator: a fitted estimator or Pipeline.
        X: features (a DataFrame or an array).
        y: true targets.
        task_type: ``classification`` or ``regression``.
        classes: the class order (default ``estimator.classes_``).
        segment_key: per-segment metrics: a column of ``X`` or one id per row.
        threshold_predictions: binary classification: ``Predictions`` to tune the decision
            threshold on (a SklearnTrainer run uses the out-of-fold predictions of its
            cross-validation); default: the evaluated data.
        n_bootstrap, seed, confidence: the bootstrap intervals.
        worst_k: rows with the highest loss in ``worst.jsonl``.
        output_dir: write ``eval_metrics.json``, ``worst.jsonl`` and the plots there.
        source: what was evaluated (recorded as the report's ``checkpoint``: the ``.skops`` path).
        data_fingerprint: the evaluated data's fingerprint (default: computed).

    Returns:
        A :class:`trainengine.evaluation.EvaluationReport` (schema 1, as for torch models).

    Example:
        >>> from sklearn.datasets import load_breast_cancer
        >>> from sklearn.linear_model import LogisticRegression
        >>> from sklearn.pipeline import make_pipeline
        >>> from sklearn.preprocessing import StandardScaler
        >>> X, y = load_breast_cancer(return_X_y=True)
        >>> model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X[:400], y[:400])
        >>> report = evaluate_estimator(model, X[400:], y[400:], "classification", n_bootstrap=200)
        >>> report.n, report.overall["accuracy"] > 0.8, report.threshold["tuned_on"]
        (169, True, 'evaluation data')
    """
    # The report is evaluation's own (one home for the metric set, intervals, threshold and worst rows).
    from trainengine.evaluation import report_from_predictions
    from trainengine.sklearn._data import fingerprint_of

    targets = np.asarray(y.to_numpy() if hasattr(y, "to_numpy") else y)
    p = predictions_of(estimator, X, targets, task_type, classes)
    report = report_from_predictions(
        p, _segments_of(segment_key, X, len(p)), n_bootstrap=n_bootstrap, confidence=confidence, seed=seed,
        threshold_predictions=threshold_predictions, worst_k=worst_k, checkpoint=source,
        data_fingerprint=data_fingerprint or fingerprint_of(X, targets),
    )  # fmt: skip
    if output_dir is not None:
        report.save(Path(output_dir))
    return report


def evaluate_saved_pipeline(
    path: str | os.PathLike[str],
    data: Any = None,
    y: Any = None,
    *,
    target: str | None = None,
    segment_key: str | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    worst_k: int = 20,
    output_dir: str | os.PathLike[str] | None = None,
    trusted: Sequence[str] = (),
    config: Any = None,
) -> Any:
    """Evaluate a saved pipeline (a SklearnTrainer run, its ``model/`` folder or a registered copy).

    What ``trainengine evaluate --run RUN --data FILE`` (and ``--model NAME@ALIAS``) runs for a
    scikit-learn model. The pipeline is loaded through the trusted-types check; the task, class
    order, target and feature columns come from its ``sklearn_model.json``, the column mapping and
    reader options from the run's ``config.yaml`` when the folder sits in its run directory.

    Args:
        path: the run directory or the model folder.
        data: files, a DataFrame, ``(X, y)`` ...; default: the run config's ``data.val_file``,
            else ``data.test_file``.
        y: the targets when ``data`` holds features only.
        target: the target column (default: the one the pipeline was trained on).
        segment_key, n_bootstrap, seed, confidence, worst_k, output_dir: as for
            :func:`evaluate_estimator`.
        trusted: further type names the ``.skops`` file may hold.
        config: the run's config (a ``TrainingConfig`` or its dict; a registered model's
            ``record.config``) for the column mapping and reader options; default: the run
            directory's ``config.yaml``, else the defaults.

    Raises:
        DataError: no data given and none in the run's config; a missing column or target.
        UntrustedModelError: the folder does not match its manifest, or untrusted types.

    Example:
        >>> from sklearn.datasets import load_iris
        >>> from sklearn.linear_model import LogisticRegression
        >>> from trainengine import TrainingConfigBuilder
        >>> from trainengine.sklearn import SklearnTrainer
        >>> import tempfile
        >>> out = tempfile.mkdtemp()
        >>> config = (
        ...     TrainingConfigBuilder.quick_prototype()
        ...     .with_tracking(output_dir=out, progress="off")
        ...     .with_checkpointing(enabled=False)
        ...     .build()
        ... )
        >>> X, y = load_iris(return_X_y=True)
        >>> results = SklearnTrainer(
        ...     LogisticRegression(max_iter=500), config=config, cv=2, n_bootstrap=20, onnx=False
        ... ).train((X[::2], y[::2]))
        >>> report = evaluate_saved_pipeline(results["run_dir"], (X[1::2], y[1::2]), n_bootstrap=20)
        >>> report.n, report.overall["accuracy"] > 0.8
        (75, True)
    """
    import json

    from trainengine.config import TrainingConfig
    from trainengine.sklearn._data import SplitName, resolve_data
    from trainengine.sklearn._persist import load_pipeline
    from trainengine.sklearn._registry import model_folder
    from trainengine.sklearn._trainer import MODEL_INFO

    folder = model_folder(path)
    info = json.loads((folder / MODEL_INFO).read_text(encoding="utf-8"))
    pipeline = load_pipeline(folder, trusted=trusted)  # manifest, then trusted types, then skops
    config_file = folder.parent / "config.yaml"
    if config is None:
        config = TrainingConfig.load(config_file) if config_file.is_file() else TrainingConfig()
    elif not isinstance(config, TrainingConfig):
        config = TrainingConfig.from_dict(dict(config))
    section = config.data
    schema = info.get("input") or {}
    columns = [c["name"] for c in schema.get("columns", [])] if schema.get("kind") == "dataframe" else None
    target = target or info.get("target")
    resolved = None
    splits: tuple[SplitName, ...] = ("test",) if data is not None else ("val", "test")
    for split in splits:
        resolved = resolve_data(data, y, split=split, target=target, data_section=section, feature_columns=columns)
        if resolved is not None:
            break
    if resolved is None:
        raise DataError(
            f"nothing to evaluate {folder} on: its run config names no data.val_file or data.test_file; "
            "give the data (trainengine evaluate ... --data FILE)"
        )
    return evaluate_estimator(
        pipeline,
        resolved.X,
        resolved.y,
        str(info["task_type"]),
        classes=info.get("classes"),
        segment_key=segment_key,
        n_bootstrap=n_bootstrap,
        seed=seed,
        confidence=confidence,
        worst_k=worst_k,
        output_dir=output_dir,
        source=str(folder),
        data_fingerprint=resolved.fingerprint,
    )
