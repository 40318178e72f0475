"""``trainengine train --seeds 0,1,2`` and ``--cv K``: several runs as one result.

A group is a parent run and its children, on disk and in the ExperimentDB:

* **On disk**, the parent is ``<output_dir>/<experiment>/<group>/`` holding ``run.json`` (status,
  start/end, heartbeat, ``group: {kind, children, ...}`` and ``results`` with the mean of the
  monitored metric), ``config.yaml`` (the base config: re-run the whole group with
  ``trainengine train --config <group>/config.yaml --seeds ...``) and ``seeds_summary.json`` /
  ``cv_summary.json`` (:class:`trainengine.evaluation.GroupSummary`). The children are ordinary run
  directories *inside* it: ``<group>/seed-0/``, ``<group>/fold-3/`` (a child's config therefore says
  ``tracking.output_dir: <output_dir>/<experiment>`` and ``tracking.experiment_name: <group>``; its
  ExperimentDB row is moved to the parent's experiment). One folder holds the whole group;
  ``trainengine runs list`` shows the parent with its child count, and every run command takes a
  child as ``<experiment>/<group>/seed-0``.
* **In the ExperimentDB**, the parent is a row with ``group_kind`` ``seeds`` / ``cv`` and each
  child's row has ``parent_run_id`` (schema version 3): ``db.get_children(parent_id)``.

Seeds: child ``seed-S`` is exactly ``trainengine train ... --seed S``: the seed drives the model's
initialisation, the data order, dropout and, when the validation rows are held out of the training
data (no ``data.val_file``), which rows are held out. To measure training noise alone on one fixed
validation set, give ``data.val_file``.

Folds: the data are built once from the base config; the *training* split is cut into K folds
(scikit-learn ``StratifiedKFold`` for classification, ``KFold`` shuffled for regression, ``KFold``
in contiguous blocks for language-model windows, whose neighbours overlap in text); child
``fold-i`` trains on the other K-1 folds and validates on fold i. The configured validation split is
not used (a test split, ``data.test_file``, is evaluated by every child). Every fold starts from the
same initial weights (the base seed). Scaling fitted on the whole training split (file data's
standardisation, regression target scaling) is shared by all folds.

A failing child stops the group: the parent is marked failed (or interrupted) with the child's
error, and the error is raised as it would be for a single run. ``--resume`` is refused: a group's
children start fresh; resume one child on its own with ``trainengine train --config
CHILD/config.yaml --resume CHILD`` (CHILD: ``<output_dir>/<experiment>/<group>/<child>``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from trainengine.data._folds import make_folds
from trainengine.errors import ConfigError, TrainEngineError
from trainengine.tracking._parent import AdoptChild, ParentRun, experiment_db_location

if TYPE_CHECKING:
    from trainengine.config import TrainingConfig
    from trainengine.engine import BuiltRun
    from trainengine.evaluation._groups import GroupKind, GroupSummary
    from trainengine.tracking._db import RunStatus

__all__ = ["parse_seeds", "run_seed_group", "run_cv_group", "check_group_flags", "print_group_summary"]

_MAX_CHILDREN = 1000


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``; ``"0-4"`` is a range (both ends included).

    Raises:
        ConfigError: not a comma-separated list of non-negative integers, a repeated seed, or fewer
            than two seeds.

    Example:
        >>> parse_seeds("0,1,2"), parse_seeds("3-5"), parse_seeds("7, 1-2")
        ([0, 1, 2], [3, 4, 5], [7, 1, 2])
    """
    seeds: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        try:
            chunk = list(range(int(lo), int(hi) + 1)) if sep else [int(part)]
        except ValueError:
            raise ConfigError(
                f"--seeds {text!r}: {part!r} is not a non-negative integer or a range A-B; e.g. --seeds 0,1,2 or 0-4"
            ) from None
        if not chunk or min(chunk) < 0 or max(chunk) > 2**32 - 1:
            raise ConfigError(f"--seeds {text!r}: {part!r} must name seeds in 0..{2**32 - 1}; e.g. --seeds 0,1,2")
        seeds += chunk
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ConfigError(f"--seeds {text!r} repeats seed {', '.join(map(str, repeated))}; give each seed once")
    if len(seeds) < 2:
        raise ConfigError(f"--seeds {text!r} names one seed; a group needs at least two (e.g. --seeds 0,1,2)")
    if len(seeds) > _MAX_CHILDREN:
        raise ConfigError(f"--seeds {text!r} names {len(seeds)} seeds; at most {_MAX_CHILDREN}")
    return seeds


def check_group_flags(seeds: str | None, cv: int | None, resume: str | None) -> None:
    """Refuse flag combinations a group cannot honour (each with what to do instead).

    Raises:
        ConfigError: ``--seeds`` with ``--cv``, either with ``--resume``, or ``--cv`` below 2.
    """
    if seeds is not None and cv is not None:
        raise ConfigError(
            "--seeds and --cv together: a group varies one thing; run the folds once per seed "
            "(trainengine train --cv K --seed S) or the seeds without --cv"
        )
    flag = "--seeds" if seeds is not None else "--cv" if cv is not None else None
    if flag is not None and resume is not None:
        raise ConfigError(
            f"--resume cannot be combined with {flag}: a group's children always start fresh; resume one child "
            "on its own with trainengine train --config CHILD/config.yaml --resume CHILD, where CHILD is "
            "<output_dir>/<experiment>/<group>/<child>, or start the group again"
        )
    if cv is not None and cv < 2:
        raise ConfigError(f"--cv {cv}: k-fold cross-validation needs at least 2 folds (e.g. --cv 5)")


# ------------------------------------------------------------------------------------------- the group
def _child_metrics(results: dict[str, Any]) -> dict[str, float]:
    """Every final metric of a child (its last evaluation, the test split's if any) and, as
    ``best/<name>``, the best value of the monitored metric (the one checkpoint selection used)."""
    out: dict[str, float] = {}
    best, name = results.get("best_metric"), results.get("best_metric_name")
    if name and isinstance(best, (int, float)) and not isinstance(best, bool):
        out[f"best/{name}"] = float(best)
    for source in (results.get("final_metrics") or {}, results.get("test_metrics") or {}):
        for name, value in source.items():
            if name not in ("step", "epoch") and isinstance(value, (int, float)) and not isinstance(value, bool):
                out[name] = float(value)
    return out


class _Group:
    """The parent run of a group: its folder, run.json, lock, heartbeat and ExperimentDB row."""

    def __init__(self, config: TrainingConfig, kind: GroupKind, default_name: str) -> None:
        from trainengine._io import validate_name
        from trainengine.tracking import new_run_id

        self.config = config
        self.kind = kind
        tr = config.tracking
        self.experiment = validate_name(tr.experiment_name, "tracking.experiment_name")
        self.name = validate_name(tr.run_name, "tracking.run_name") if tr.run_name else f"{default_name}-{new_run_id()}"
        self.root = Path(tr.output_dir) / self.experiment
        self.path = self.root / self.name
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.path.mkdir()  # not exist_ok: two groups of one name must not share a folder
        except FileExistsError:
            raise TrainEngineError(
                f"run directory {self.path} already exists — choose another tracking.run_name (--run-name) or remove it"
            ) from None
        except OSError as exc:
            raise TrainEngineError(
                f"cannot create the group directory {self.path}: {exc.strerror} — choose a writable "
                "tracking.output_dir (--output-dir)"
            ) from None
        self.record = ParentRun(self.path, kind, config)
        self.children: list[dict[str, Any]] = []

    @property
    def facts(self) -> dict[str, Any]:
        return self.record.facts

    # -- lifetime ----------------------------------------------------------------------------------
    def start(self, details: dict[str, Any]) -> None:
        flag = (
            f"--seeds {','.join(str(s) for s in details['seeds'])}" if self.kind == "seeds" else f"--cv {details['k']}"
        )
        header = (
            f"# Base config of the {self.kind} group {self.experiment}/{self.name}. "
            f"Re-run: trainengine train --config {self.path / 'config.yaml'} {flag}\n"
        )
        self.record.start({"num_children": 0, "children": [], "summary": None, **details}, header)

    def child_config(self, name: str, **fields: Any) -> TrainingConfig:
        """The base config with the child's run directory inside the group's, and ``fields``
        (``{"training.seed": 3}``) changed."""
        from trainengine.config import TrainingConfig

        data = self.config.to_dict()
        data["tracking"].update(
            output_dir=str(self.root),
            experiment_name=self.name,
            run_name=name,
            # Same database as the parent: the default lives under output_dir, which changed.
            db_url=experiment_db_location(self.config),
            experiment_db=self.record.db_run_id is not None,
        )
        for dotted, value in fields.items():
            section, key = dotted.split(".", 1)
            data[section][key] = value
        return TrainingConfig.from_dict(data)

    def run_child(self, name: str, config: TrainingConfig, built: BuiltRun | None, **facts: Any) -> dict[str, Any]:
        """Train one child through the CLI's own ``run_training``; record it in the group."""
        from trainengine.cli import _train

        index = len(self.children) + 1
        typer.echo(f"[{self.kind} {index}/{self.facts['group']['planned']}] {self.experiment}/{self.name}/{name}")
        location, parent = experiment_db_location(self.config), self.record.db_run_id
        adopt = AdoptChild(location, parent) if location is not None and parent is not None else None
        child: dict[str, Any] = {"name": name, **facts, "status": "running", "run_dir": None, "db_run_id": None}
        self.children.append(child)
        self._record_children()
        try:
            results = _train.run_training(config, built=built, callbacks=[adopt] if adopt else None)
        except BaseException as exc:
            child["status"] = "interrupted" if _is_interrupt(exc) else "failed"
            child["db_run_id"] = adopt.child_id if adopt else None
            self._record_children()
            raise
        child.update(
            status="completed",
            run_dir=results.get("run_dir"),
            db_run_id=adopt.child_id if adopt else None,
            metrics=_child_metrics(results),
            best_metric_name=results.get("best_metric_name"),
            best_metric=results.get("best_metric"),
            steps=results.get("steps"),
        )
        self._record_children()
        return results

    def _record_children(self) -> None:
        children = [{k: c[k] for k in ("name", "status", "run_dir") if k in c} for c in self.children]
        self.record.update_group(children=children, num_children=len(self.children))

    def finish(self, status: RunStatus, summary: GroupSummary | None = None, error: str | None = None) -> None:
        results = metrics = None
        if summary is not None:
            path = summary.save(self.path)
            self.record.update_group(summary=path.name)
            monitor = next((c.get("best_metric_name") for c in self.children if c.get("best_metric_name")), None)
            stat = summary.metrics.get(f"best/{monitor}") if monitor else None
            results = {
                # runs list reads these: the group's headline is the mean of its children's best values.
                "best_metric_name": monitor,
                "best_metric": None if stat is None else stat.mean,
                "best_metric_std": None if stat is None else stat.std,
                "best_metric_ci": None if stat is None or stat.ci is None else list(stat.ci),
                "steps": None,
            }
            metrics = {f"{n}/mean": m.mean for n, m in summary.metrics.items() if m.mean is not None}
            metrics.update({f"{n}/std": m.std for n, m in summary.metrics.items() if m.std is not None})
        self.record.finish(status, results=results, metrics=metrics, error=error)


def _is_interrupt(exc: BaseException) -> bool:
    """Ctrl+C / SIGTERM, as ``run_training`` reports it (typer.Exit 130 / 143) or raw."""
    return isinstance(exc, KeyboardInterrupt) or (
        isinstance(exc, typer.Exit) and getattr(exc, "exit_code", 0) in (130, 143)
    )


@contextlib.contextmanager
def _running(group: _Group) -> Iterator[None]:
    try:
        yield
    except BaseException as exc:
        status: RunStatus = "interrupted" if _is_interrupt(exc) else "failed"
        child = next((c["name"] for c in reversed(group.children) if c["status"] != "completed"), None)
        reason = f"{type(exc).__name__}: {exc}"
        group.finish(status, error=f"child {child}: {reason}" if child else reason)
        raise


# ------------------------------------------------------------------------------------------- seeds
def run_seed_group(config: TrainingConfig, seeds: Sequence[int], *, confidence: float = 0.95) -> GroupSummary:
    """Train one child per seed and summarise every final metric (mean, std, t-interval).

    Args:
        config: the base config (its ``training.seed`` is replaced by each seed).
        seeds: two or more distinct seeds.
        confidence: the coverage of the intervals.

    Returns:
        The :class:`~trainengine.evaluation.GroupSummary`, also written as ``seeds_summary.json``
        in the group's folder.
    """
    from trainengine.evaluation._groups import GroupSummary

    seeds = list(seeds)
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise ConfigError(f"a seed group needs two or more distinct seeds, got {seeds}")
    group = _Group(config, "seeds", "seeds")
    with _running(group):
        group.start({"seeds": seeds, "planned": len(seeds)})
        for seed in seeds:
            name = f"seed-{seed}"
            group.run_child(name, group.child_config(name, **{"training.seed": seed}), None, seed=seed)
        summary = GroupSummary.from_children(
            "seeds", group.name, group.children, confidence=confidence, experiment=group.experiment
        )
    group.finish("completed", summary)
    return summary


# ------------------------------------------------------------------------------------------- folds
def _labels(dataset: Any) -> Any:
    """One class label per sample (for stratified folds): the label column of in-memory data,
    else each sample's last element / ``labels`` entry."""
    import numpy as np

    columns = getattr(dataset, "columns", None)
    if isinstance(columns, tuple) and columns:
        return columns[-1].numpy()
    if isinstance(columns, dict):
        for key in ("labels", "label"):
            if key in columns:
                return columns[key].numpy()
    labels = []
    for i in range(len(dataset)):
        item = dataset[i]
        label = item["labels"] if isinstance(item, dict) else item[-1]
        labels.append(int(label))
    return np.asarray(labels)


def run_cv_group(config: TrainingConfig, k: int, *, confidence: float = 0.95) -> GroupSummary:
    """K-fold cross-validation over the training split: one child per fold, every metric summarised.

    Args:
        config: the base config (built-in data set or files).
        k: the number of folds, 2 or more.
        confidence: the coverage of the intervals.

    Returns:
        The :class:`~trainengine.evaluation.GroupSummary`, also written as ``cv_summary.json``.
    """
    import torch
    from torch.utils.data import Subset

    from trainengine.data import DatasetSplits
    from trainengine.engine import BuiltRun, build_from_config
    from trainengine.engine._build import build_model_for
    from trainengine.evaluation._groups import GroupSummary

    if k < 2:
        raise ConfigError(f"--cv {k}: k-fold cross-validation needs at least 2 folds (e.g. --cv 5)")
    base = build_from_config(config)  # the data once; its model is discarded (each fold builds its own)
    train: Any = base.splits.train  # a map-style dataset: len() and indexing
    info, task = base.splits.info, base.task_spec
    labels = _labels(train) if task.task_type == "classification" else None
    folds, how = make_folds(len(train), k, task.task_type, config.training.seed, labels, option="--cv {k}")
    group = _Group(config, "cv", f"cv{k}")
    with _running(group):
        group.start({"k": k, "planned": k, **{key: how[key] for key in ("splitter", "shuffle")}})
        for i, (train_idx, val_idx) in enumerate(folds):
            name = f"fold-{i}"
            child_cfg = group.child_config(name)
            splits = DatasetSplits(
                train=Subset(train, train_idx.tolist()),
                val=Subset(train, val_idx.tolist()),
                info=dataclasses.replace(info, num_train=len(train_idx), num_val=len(val_idx)),
                test=base.splits.test,
            )
            torch.manual_seed(config.training.seed)  # every fold starts from the same weights
            model, model_config = build_model_for(child_cfg, task, splits)
            built = BuiltRun(model=model, model_config=model_config, task_spec=task, splits=splits)
            group.run_child(name, child_cfg, built, fold=i, num_train=len(train_idx), num_val=len(val_idx))
        summary = GroupSummary.from_children(
            "cv", group.name, group.children, confidence=confidence, experiment=group.experiment, details=how
        )
    group.finish("completed", summary)
    return summary


# ------------------------------------------------------------------------------------------- output
def print_group_summary(summary: GroupSummary, console: Console | None = None) -> None:
    """A table: each metric's mean ± std, its confidence interval and the value of every child."""
    table = Table(title=f"{summary.kind} group {summary.group}: {len(summary.children)} runs")
    table.add_column("metric")
    table.add_column("mean ± std")
    table.add_column(f"{summary.confidence:.0%} CI (t)")
    names = [str(c.get("name")) for c in summary.children]
    for name in names:
        table.add_column(name)

    def g(v: float | None) -> str:
        return "-" if v is None else f"{v:.4g}"

    for metric, stat in summary.metrics.items():
        spread = g(stat.mean) if stat.std is None else f"{g(stat.mean)} ± {g(stat.std)}"
        ci = "-" if stat.ci is None else f"[{g(stat.ci[0])}, {g(stat.ci[1])}]"
        table.add_row(metric, spread, ci, *(g(v) for v in stat.values))
    (console or Console(soft_wrap=True)).print(table)


def group_dir_of(summary: GroupSummary, config: TrainingConfig) -> Path:
    """The group's folder: ``<output_dir>/<experiment>/<group>``."""
    return Path(config.tracking.output_dir) / config.tracking.experiment_name / summary.group
