"""evaluate(): a model, checkpoint or run directory -> an EvaluationReport with intervals."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from trainengine.errors import TrainEngineError
from trainengine.evaluation._bootstrap import bootstrap_cis
from trainengine.evaluation._metrics import compute_metrics, confusion_matrix, metrics_for
from trainengine.evaluation._predict import Predictions, predict
from trainengine.evaluation._report import EvaluationReport
from trainengine.tasks import TaskSpec

__all__ = ["LoadedModel", "evaluate", "load_model_source", "report_from_predictions", "tune_threshold"]

SegmentKey = str | Sequence[Any] | np.ndarray | Callable[[int], Any]


@dataclass
class LoadedModel:
    """A model rebuilt from a checkpoint or a run directory, with what it was trained on.

    Attributes:
        model: the rebuilt model with its weights.
        task_spec: the stored task.
        config: the stored TrainingConfig (None when the source kept none).
        checkpoint: the checkpoint folder or weights file the weights came from.
    """

    model: nn.Module
    task_spec: TaskSpec
    config: Any
    checkpoint: str


def load_model_source(path: str | os.PathLike[str]) -> LoadedModel:
    """Rebuild the model of a ``ckpt-*`` folder, a checkpoints folder (newest valid) or a run directory.

    A run directory gives its newest valid checkpoint, else its final ``model.safetensors``.

    Raises:
        TrainEngineError: nothing there, or no model spec / task stored to rebuild from.
    """
    from trainengine.checkpoint import CheckpointManager, load_model_state, load_weights_file
    from trainengine.config import TrainingConfig
    from trainengine.engine import resolve_resume
    from trainengine.errors import CheckpointError
    from trainengine.models import rebuild_model

    src = Path(path)
    if not src.exists():
        raise TrainEngineError(
            f"cannot evaluate {src}: it does not exist (give a checkpoint, checkpoints folder or run)"
        )
    ckpt: Path | None
    run_dir: Path | None
    if (src / "run.json").is_file() and not (src / "checkpoints").is_dir():
        ckpt, run_dir = None, src
    else:
        try:
            ckpt, run_dir = resolve_resume(None, src)
        except CheckpointError as exc:
            if not ((src / "run.json").is_file() and (src / "model.safetensors").is_file()):
                raise TrainEngineError(str(exc).replace("cannot resume", "cannot evaluate")) from None
            ckpt, run_dir = None, src
    if ckpt is not None:
        loaded = CheckpointManager(ckpt.parent, read_only=True).read(ckpt)
        meta = loaded.meta.extra
        spec, config_dict, task_dict = meta.get("model_spec"), meta.get("config"), meta.get("task")
    else:
        assert run_dir is not None  # set on every path above without a checkpoint
        loaded = None
        run = json.loads((run_dir / "run.json").read_text())
        spec, task_dict = (run.get("model") or {}).get("spec"), run.get("task")
        config_path = run_dir / "config.yaml"
        config_dict = _read_yaml(config_path) if config_path.is_file() else None
    if not spec or not task_dict:
        missing = "model spec" if not spec else "task"
        raise TrainEngineError(
            f"{src} stores no {missing}, so the model cannot be rebuilt; "
            "load the model yourself and call evaluate(model, data, task_spec)"
        )
    config = TrainingConfig.from_dict(config_dict) if config_dict else None  # first: its plugins register models
    model = rebuild_model(spec)
    if loaded is not None:
        load_model_state(model, loaded.model_state)
        where = str(ckpt)
    else:
        assert run_dir is not None
        load_weights_file(model, run_dir / "model.safetensors")
        where = str(run_dir / "model.safetensors")
    return LoadedModel(model, TaskSpec.from_dict(task_dict), config, where)


def _read_yaml(path: Path) -> dict[str, Any] | None:
    from trainengine.config._yaml import load_yaml

    data = load_yaml(path.read_text())
    return data if isinstance(data, dict) else None


def tune_threshold(probs_positive: np.ndarray, labels: np.ndarray) -> dict[str, dict[str, float]]:
    """Binary decision thresholds: the best-F1 one (precision-recall curve) and Youden's J (ROC curve).

    Args:
        probs_positive: p(class 1) per example.
        labels: 0/1 labels.

    Returns:
        ``{"best_f1": {"threshold", "f1_tuned"}, "youden_j": {"threshold", "j_tuned"}}``.

    Example:
        >>> t = tune_threshold(np.array([0.1, 0.3, 0.35, 0.8]), np.array([0, 0, 1, 1]))
        >>> t["best_f1"]["threshold"], t["youden_j"]["threshold"]
        (0.35, 0.35)
    """
    from sklearn.metrics import precision_recall_curve, roc_curve

    precision, recall, pr_thresholds = precision_recall_curve(labels, probs_positive)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)[:-1]
    best = int(np.argmax(f1))
    fpr, tpr, roc_thresholds = roc_curve(labels, probs_positive)
    j = tpr - fpr
    best_j = int(np.argmax(j))
    return {
        "best_f1": {"threshold": float(pr_thresholds[best]), "f1_tuned": float(f1[best])},
        "youden_j": {"threshold": float(min(roc_thresholds[best_j], 1.0)), "j_tuned": float(j[best_j])},
    }


def _threshold_report(p: Predictions, tuning: Predictions | None) -> dict[str, Any] | None:
    from sklearn.metrics import f1_score, recall_score

    if p.task != "classification" or p.outputs.shape[1] != 2:
        return None
    source = tuning if tuning is not None else p
    if len(np.unique(source.targets)) < 2:
        return None
    tuned = tune_threshold(source.outputs[:, 1], source.targets)
    score, labels = p.outputs[:, 1], p.targets
    pred_f1 = (score >= tuned["best_f1"]["threshold"]).astype(int)
    pred_j = (score >= tuned["youden_j"]["threshold"]).astype(int)
    tuned["best_f1"]["f1"] = float(f1_score(labels, pred_f1, zero_division=0))
    # Youden's J = sensitivity + specificity - 1 = recall(1) + recall(0) - 1, from scikit-learn's recall.
    sens = recall_score(labels, pred_j, pos_label=1, zero_division=0)
    spec = recall_score(labels, pred_j, pos_label=0, zero_division=0)
    tuned["youden_j"]["j"] = float(sens + spec - 1)
    return {"tuned_on": "threshold_data" if tuning is not None else "evaluation data"} | tuned


def _segments(segment_key: SegmentKey | None, data: Any, n: int, files: Sequence[Path] | None) -> np.ndarray | None:
    if segment_key is None:
        return None
    if isinstance(segment_key, str):
        if not files:
            raise TrainEngineError(
                f"segment_key={segment_key!r} names a column, which needs file data (data='file.csv' / "
                "--data FILE); for a dataset pass an array of segment ids or a callable index -> id"
            )
        return _read_column(files, segment_key, n)
    if callable(segment_key):
        return np.asarray([segment_key(i) for i in range(n)])
    ids = np.asarray(segment_key)
    if len(ids) != n:
        raise TrainEngineError(f"segment_key has {len(ids)} ids but the data has {n} examples; give one id per example")
    return ids


def _read_column(files: Sequence[Path], column: str, n: int) -> np.ndarray:
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    values: list[Any] = []
    for f in files:
        suffix = f.suffix.lower()
        if suffix in (".jsonl", ".json"):
            table = pajson.read_json(f)
        elif suffix == ".parquet":
            table = pq.read_table(f)
        else:
            delimiter = "\t" if suffix == ".tsv" else ","
            table = pacsv.read_csv(f, parse_options=pacsv.ParseOptions(delimiter=delimiter))
        if column not in table.column_names:
            raise TrainEngineError(
                f"segment column {column!r} is not in {f} — columns: {', '.join(table.column_names)}"
            )
        values.extend(table.column(column).to_pylist())
    if len(values) != n:
        raise TrainEngineError(
            f"segment column {column!r}: {len(values)} rows in the files but {n} examples were evaluated "
            "(rows skipped as bad?); pass the segment ids as an array instead"
        )
    return np.asarray([str(v) for v in values])


def _worst(p: Predictions, k: int, segments: np.ndarray | None) -> list[dict[str, Any]]:
    losses = p.example_losses()
    order = np.argsort(-losses, kind="stable")[:k]
    rows = []
    for i in order:
        row: dict[str, Any] = {"index": int(i), "loss": float(losses[i])}
        if p.task == "classification":
            pred = int(p.outputs[i].argmax())
            row |= {"label": int(p.targets[i]), "prediction": pred, "probability": float(p.outputs[i, pred])}
        elif p.task == "regression":
            row |= {"label": float(p.targets[i]), "prediction": float(p.outputs[i])}
        else:
            row |= {"tokens": int(p.targets[i])}
        if segments is not None:
            row["segment"] = str(segments[i])
        rows.append(row)
    return rows


def _scored(p: Predictions, n_bootstrap: int, confidence: float, seed: int) -> tuple[dict[str, float], dict[str, Any]]:
    names = metrics_for(p.task, *p.arrays)
    overall = compute_metrics(p.task, *p.arrays, names=names)
    cis = bootstrap_cis(list(names), *p.arrays, n_bootstrap=n_bootstrap, confidence=confidence, seed=seed)
    return overall, {name: ci.to_list() for name, ci in cis.items()}


def _as_files(data: Any) -> list[Path] | None:
    if isinstance(data, (str, os.PathLike)):
        return [Path(data)]
    if isinstance(data, (list, tuple)) and data and all(isinstance(d, (str, os.PathLike)) for d in data):
        return [Path(d) for d in data]
    return None


def evaluate(
    source: nn.Module | str | os.PathLike[str] | LoadedModel,
    data: Any = None,
    task_spec: TaskSpec | None = None,
    *,
    segment_key: SegmentKey | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    worst_k: int = 20,
    output_dir: str | Path | None = None,
    threshold_data: Any = None,
    batch_size: int = 256,
    device: str = "cpu",
) -> EvaluationReport:
    """Evaluate a model with bootstrap confidence intervals, segments, calibration and error analysis.

    Args:
        source: an ``nn.Module`` (give ``data`` and ``task_spec``), a checkpoint folder, a
            checkpoints folder or a run directory (the model, task and config are read from it),
            or a :class:`LoadedModel` (what the CLI builds from a registry ``NAME@ALIAS``).
        data: a dataset / DataLoader, or data files (a path or a list of paths, read with the
            run's config as its validation data). None: the validation split of the run's own data.
        task_spec: the task; None takes the source's stored task.
        segment_key: per-segment breakdown: a column name of file data, an array of one segment id
            per example, or a callable ``index -> id``.
        n_bootstrap: bootstrap resamples for every interval.
        seed: resampling seed.
        confidence: interval coverage.
        worst_k: how many highest-loss examples go to ``worst.jsonl``.
        output_dir: when given, :meth:`EvaluationReport.save` writes there.
        threshold_data: binary classification: data to tune the decision threshold on (default:
            the run's validation split when ``data`` is other data, else the evaluated data).
        batch_size: examples per forward pass.
        device: where the model runs.

    Returns:
        An :class:`EvaluationReport`.

    Raises:
        TrainEngineError: nothing to evaluate on, or a source that cannot be rebuilt.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> from trainengine import MLP, TaskSpec
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> x = torch.randn(200, 4)
        >>> y = (x[:, 0] > 0).long()
        >>> model = MLP(input_dim=4, output_dim=2, hidden_dims=[8])
        >>> report = evaluate(model, TensorDataset(x, y), TaskSpec.classification("toy", 2), n_bootstrap=200)
        >>> report.n, sorted(report.ci) == sorted(report.overall), report.threshold["tuned_on"]
        (200, True, 'evaluation data')
    """
    loaded = source if isinstance(source, LoadedModel) else None
    if loaded is None and not isinstance(source, nn.Module):
        loaded = load_model_source(source)  # type: ignore[arg-type]  # the LoadedModel case was taken above
    model = loaded.model if loaded is not None else source
    assert isinstance(model, nn.Module)
    task = task_spec or (loaded.task_spec if loaded is not None else None)
    if task is None:
        raise TrainEngineError("evaluate(model, ...) needs task_spec= (e.g. TaskSpec.classification('x', 10))")
    config = loaded.config if loaded is not None else None
    files = _as_files(data)
    fingerprint: str | None = None
    target_mean = target_std = None
    extra_data: Any = None  # reward: the test split (REVEAL, PRM800K's test files) is evaluated too
    if data is None or files is not None:
        if config is None:
            raise TrainEngineError(
                "no evaluation data: pass data= (a dataset or files); the source stores no config to read the "
                "validation data from"
            )
        from trainengine.engine._build import load_data_for

        base = load_data_for(config, task)
        target_mean, target_std = base.info.target_mean, base.info.target_std
        if files is None:
            data, fingerprint = base.val, base.info.fingerprint
            if task.task_type == "reward" and base.test is not None:
                extra_data = base.test
        else:
            if threshold_data is None:
                threshold_data = base.val  # tune on validation, report on the files
            from trainengine.config import TrainingConfig

            # The files become the validation data of the run's own config: same reader, same
            # preprocessing fitted on the same training data, same tokenizer.
            cfg = config.to_dict()
            cfg["data"]["val_file"] = [str(f) for f in files] if len(files) > 1 else str(files[0])
            data = load_data_for(TrainingConfig.from_dict(cfg), task).val
    if fingerprint is None:
        from trainengine.data import fingerprint_dataset

        try:
            fingerprint = fingerprint_dataset(data)
        except (TypeError, ValueError, AttributeError, NotImplementedError):
            fingerprint = None  # an iterable the fingerprint cannot read; recorded as null
    kw = {"batch_size": batch_size, "device": device, "target_mean": target_mean, "target_std": target_std}
    p = predict(model, data, task, **kw)  # type: ignore[arg-type]  # kw's values match predict's keywords
    if extra_data is not None:
        p = p.concat(predict(model, extra_data, task, **kw))  # type: ignore[arg-type]  # as above
    tuning = predict(model, threshold_data, task, **kw) if threshold_data is not None else None  # type: ignore[arg-type]  # as above
    overall, ci = _scored(p, n_bootstrap, confidence, seed)
    segments = _segments(segment_key, data, len(p), files)
    if segments is None and p.groups is not None:
        # Reward data: one segment per data source (PRM800K, REVEAL, EQASC), "per data set".
        names = np.asarray(getattr(data, "sources", None) or [str(i) for i in range(int(p.groups.max()) + 1)])
        segments = names[p.groups]
    report = report_from_predictions(
        p, segments, n_bootstrap=n_bootstrap, confidence=confidence, seed=seed, scored=(overall, ci),
        threshold_predictions=tuning, worst_k=worst_k,
        checkpoint=loaded.checkpoint if loaded is not None else None, data_fingerprint=fingerprint,
    )  # fmt: skip
    if output_dir is not None:
        report.save(output_dir)
    return report


def report_from_predictions(
    p: Predictions,
    segments: np.ndarray | None,
    *,
    n_bootstrap: int,
    confidence: float,
    seed: int,
    threshold_predictions: Predictions | None = None,
    worst_k: int = 20,
    checkpoint: str | None = None,
    data_fingerprint: str | None = None,
    scored: tuple[dict[str, float], dict[str, list[float]]] | None = None,
) -> EvaluationReport:
    """The evaluation report of predictions already made (a torch model's, a scikit-learn pipeline's).

    Args:
        p: the predictions with their targets.
        segments: one segment name per example, or None.
        threshold_predictions: predictions on separate data to tune a binary threshold on.
        scored: the overall metrics and intervals when the caller already computed them.
    """
    overall, ci = scored if scored is not None else _scored(p, n_bootstrap, confidence, seed)
    per_segment: dict[str, dict[str, Any]] = {}
    if segments is not None:
        for seg in sorted({str(s) for s in segments}):
            index = np.flatnonzero(segments.astype(str) == seg)
            if len(index) < 2:
                per_segment[seg] = {"n": len(index), "metrics": {}, "ci": {}}
                continue
            seg_overall, seg_ci = _scored(p.subset(index), n_bootstrap, confidence, seed)
            per_segment[seg] = {"n": len(index), "metrics": seg_overall, "ci": seg_ci}
    return EvaluationReport(
        task=p.task,
        n=len(p),
        overall=overall,
        ci=ci,
        confidence=confidence,
        n_bootstrap=n_bootstrap,
        seed=seed,
        per_segment=per_segment,
        confusion_matrix=confusion_matrix(p.outputs, p.targets) if p.task == "classification" else None,
        threshold=_threshold_report(p, threshold_predictions),
        checkpoint=checkpoint,
        data_fingerprint=data_fingerprint,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        worst=_worst(p, worst_k, segments),
        predictions=p,
    )
