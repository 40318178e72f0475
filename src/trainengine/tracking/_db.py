"""ExperimentDB: every run, its config and its metrics in one SQL database, queryable months later.

SQLite by default (a file path), or any SQLAlchemy URL (``postgresql://user@host/db``). Several
processes may write to the same SQLite file at once: the file runs in WAL mode, every write takes
the write lock up front (``BEGIN IMMEDIATE``) and waits for it (busy timeout), and a write that still
finds the database locked is retried with exponential backoff, so nothing is lost (the plumbing is
shared with the model registry: ``trainengine._sql``).

Tables (schema version 3, recorded in ``schema_version``; an older database is migrated forward
when it is opened for writing):

* ``runs``: run_id, run_name, experiment, config_json, notes, status, error, start_time, end_time
  (Unix seconds), run_dir, heartbeat_time and heartbeat_interval_s (version 2: a live run refreshes
  its heartbeat; :meth:`ExperimentDB.list_runs` marks a "running" run whose heartbeat stopped as
  ``stale``: see :func:`trainengine.tracking.liveness`), parent_run_id and group_kind (version 3:
  several runs as one result. A *group* is a parent run whose ``group_kind`` says what it groups
  (``seeds``, ``cv``; tuning trials later) and whose children point at it with ``parent_run_id``;
  a child belongs to its parent's experiment).
* ``run_tags``: (run_id, tag, position).
* ``metrics``: one row per logged value: run_id, name (may contain ``/``: ``val/loss``), value,
  nonfinite, step, epoch, time. NaN and +/-inf are stored as ``value = NULL`` with
  ``nonfinite = 'nan' | 'inf' | '-inf'`` (portable: MySQL has no NaN, SQLite turns NaN into NULL)
  and read back as the float they were. Best-value queries skip non-finite values.

Why one module of this length: ExperimentDB is one public class (runs, params, metrics, heartbeats,
queries, comparison) over one schema; the SQL plumbing is SqlStore's.
"""

from __future__ import annotations

import json
import math
import operator
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

from sqlalchemy import (
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    exists,
    func,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection

from trainengine._liveness import liveness
from trainengine._sql import SqlStore, init_versioned_schema, inserted_id, resolve_database
from trainengine.errors import TrainEngineError

__all__ = ["ExperimentDB", "ExperimentDBError", "ExperimentDBValueError", "UnknownRunError", "RunStatus"]

RunStatus = Literal["running", "completed", "failed", "interrupted", "pruned"]
_STATUSES: tuple[str, ...] = get_args(RunStatus)
_TERMINAL = frozenset({"completed", "failed", "interrupted", "pruned"})
SCHEMA_VERSION = 3
_MAX_NAME = 255
# Metric names whose best value is the largest (matched against the words of the last path part,
# so "val/accuracy", "top1_acc" and "test/r2" are maximised; everything else, losses, is minimised).
_HIGHER_IS_BETTER = frozenset(
    [
        "acc",
        "accuracy",
        "top1",
        "top5",
        "r2",
        "f1",
        "precision",
        "recall",
        "auc",
        "auroc",
        "ap",
        "map",
        "bleu",
        "rouge",
        "rouge1",
        "rouge2",
        "rougel",
        "iou",
        "miou",
        "dice",
        "score",
        "reward",
        "throughput",
    ]
)
_PLAIN_FILTERS = ("experiment", "status", "tag", "run_name", "parent_run_id", "group_kind")
# Listed in messages; the group filters come last (older messages, and tests, name the first five in this order).
_FILTER_KEYS = (*_PLAIN_FILTERS[:4], "config.<dotted.key>", *_PLAIN_FILTERS[4:])
_MAX_GROUP_KIND = 32

T = TypeVar("T")


class ExperimentDBError(TrainEngineError):
    """The experiment database cannot be opened, read or written."""


class ExperimentDBValueError(ExperimentDBError, ValueError):
    """An argument given to :class:`ExperimentDB` is invalid (bad status, name, value, filter...)."""


class UnknownRunError(ExperimentDBError, KeyError):
    """No run with the given run_id exists in the database."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


# ---------------------------------------------------------------------------------------- schema
_metadata = MetaData()
_schema_version = Table("schema_version", _metadata, Column("version", Integer, nullable=False))
_runs = Table(
    "runs",
    _metadata,
    Column("run_id", Integer, primary_key=True, autoincrement=True),
    Column("run_name", String(_MAX_NAME), nullable=False),
    Column("experiment", String(_MAX_NAME), nullable=False, index=True),
    Column("config_json", Text, nullable=False),
    Column("notes", Text, nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("error", Text),
    Column("start_time", Double, nullable=False),
    Column("end_time", Double),
    Column("run_dir", Text),
    Column("heartbeat_time", Double),  # Unix seconds of the last heartbeat of a live run (version 2)
    Column("heartbeat_interval_s", Double),  # seconds between two heartbeats (sets the stale threshold)
    # Version 3: a child run points at its group's parent run; a parent says what it groups.
    Column("parent_run_id", Integer, ForeignKey("runs.run_id", ondelete="SET NULL"), index=True),
    Column("group_kind", String(_MAX_GROUP_KIND)),
)
_tags = Table(
    "run_tags",
    _metadata,
    Column("run_id", Integer, ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True),
    Column("tag", String(_MAX_NAME), primary_key=True),
    Column("position", Integer, nullable=False),
    Index("ix_run_tags_tag", "tag"),
)
_metrics = Table(
    "metrics",
    _metadata,
    Column("metric_id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("runs.run_id", ondelete="CASCADE"), nullable=False),
    Column("name", String(_MAX_NAME), nullable=False),
    Column("value", Double),
    Column("nonfinite", String(4)),
    Column("step", Integer),
    Column("epoch", Integer),
    Column("time", Double, nullable=False),
    Index("ix_metrics_run_name", "run_id", "name"),
    Index("ix_metrics_name_value", "name", "value"),
)


def _add_heartbeat_columns(conn: Connection) -> None:
    """Version 2: the heartbeat columns (NULL for runs recorded before; never shown as stale)."""
    kind = Double().compile(dialect=conn.dialect)
    for name in ("heartbeat_time", "heartbeat_interval_s"):
        conn.execute(text(f"ALTER TABLE runs ADD COLUMN {name} {kind}"))


def _add_group_columns(conn: Connection) -> None:
    """Version 3: parent/child runs (NULL for every run recorded before: no run was a group)."""
    integer, string = Integer().compile(dialect=conn.dialect), String(_MAX_GROUP_KIND).compile(dialect=conn.dialect)
    # SQLite cannot add a FOREIGN KEY constraint by ALTER TABLE with a name; the inline REFERENCES
    # form works on SQLite and PostgreSQL alike.
    conn.execute(
        text(f"ALTER TABLE runs ADD COLUMN parent_run_id {integer} REFERENCES runs(run_id) ON DELETE SET NULL")
    )
    conn.execute(text(f"ALTER TABLE runs ADD COLUMN group_kind {string}"))
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_runs_parent_run_id ON runs (parent_run_id)"))


# version -> function(conn) that upgrades a database from version-1 to version.
_MIGRATIONS: dict[int, Callable[[Connection], None]] = {2: _add_heartbeat_columns, 3: _add_group_columns}


# --------------------------------------------------------------------------------------- helpers
def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


def _infer_mode(name: str) -> Literal["min", "max"]:
    words = re.split(r"[^a-z0-9]+", name.rsplit("/", 1)[-1].lower())
    return "max" if any(w in _HIGHER_IS_BETTER for w in words) else "min"


def _check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ExperimentDBValueError(f"{what} must be a non-empty string, got {type(value).__name__} {value!r}")
    if len(value) > _MAX_NAME:
        raise ExperimentDBValueError(
            f"{what} is {len(value)} characters long; the limit is {_MAX_NAME}: {value[:40]!r}..."
        )
    return value


def _check_run_id(run_id: Any) -> int:
    if isinstance(run_id, bool):
        raise ExperimentDBValueError(f"run_id must be an integer returned by log_run, got bool {run_id!r}")
    try:
        return operator.index(run_id)
    except TypeError:
        raise ExperimentDBValueError(
            f"run_id must be an integer returned by log_run, got {type(run_id).__name__} {run_id!r}"
        ) from None


def _check_count(value: Any, what: str) -> int | None:
    if value is None:
        return None
    try:
        if isinstance(value, bool):
            raise TypeError
        out = operator.index(value)
    except TypeError:
        raise ExperimentDBValueError(
            f"{what} must be a non-negative integer or None, got {type(value).__name__} {value!r}"
        ) from None
    if out < 0:
        raise ExperimentDBValueError(f"{what} must be a non-negative integer or None, got {out}")
    return out


def _check_status(status: Any) -> str:
    if status not in _STATUSES:
        raise ExperimentDBValueError(f"unknown run status {status!r} — valid: {', '.join(_STATUSES)}")
    return status


_GROUP_KIND = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def _check_group_kind(kind: Any) -> str | None:
    if kind is None:
        return None
    if not isinstance(kind, str) or len(kind) > _MAX_GROUP_KIND or not _GROUP_KIND.fullmatch(kind):
        raise ExperimentDBValueError(
            f"group_kind must be a short name (letters, digits, '_' or '-', at most {_MAX_GROUP_KIND} characters) "
            f"such as 'seeds' or 'cv', got {kind!r}"
        )
    return kind


def _check_mode(mode: Any, what: str = "mode") -> Literal["min", "max"]:
    if mode not in ("min", "max"):
        raise ExperimentDBValueError(f"{what} must be 'min' or 'max', got {mode!r}")
    return mode


def _to_float(name: str, value: Any) -> tuple[float | None, str | None]:
    """``(value, None)`` for finite numbers, ``(None, 'nan'|'inf'|'-inf')`` otherwise."""
    if value is None or isinstance(value, (str, bytes)):
        raise ExperimentDBValueError(f"metric {name!r}: value must be a number, got {type(value).__name__} {value!r}")
    try:
        number = float(value)  # plain floats, ints, numpy scalars, 0-d / one-element tensors
    except (TypeError, ValueError, RuntimeError):
        raise ExperimentDBValueError(
            f"metric {name!r}: value must be a number, got {type(value).__name__} {value!r}; "
            "pass a float (e.g. tensor.item())"
        ) from None
    if math.isfinite(number):
        return number, None
    return None, "nan" if math.isnan(number) else ("inf" if number > 0 else "-inf")


def _from_row(value: float | None, nonfinite: str | None) -> float | None:
    return float(nonfinite) if nonfinite is not None else value


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    for attr in ("model_dump", "to_dict"):  # pydantic models, TrainingConfig
        if callable(getattr(obj, attr, None)):
            return getattr(obj, attr)()
    if callable(getattr(obj, "tolist", None)):  # numpy arrays/scalars, tensors
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return repr(obj)  # never fail to record a run because one config value is exotic


def _config_json(config: Any) -> str:
    if config is None:
        config = {}
    elif not isinstance(config, Mapping):
        for attr in ("model_dump", "to_dict"):
            if callable(getattr(config, attr, None)):
                config = getattr(config, attr)()
                break
        else:
            raise ExperimentDBValueError(f"config must be a dict (or have .to_dict()), got {type(config).__name__}")
    return json.dumps(dict(config), default=_json_default, sort_keys=False)


def _check_tags(tags: Any) -> list[str]:
    if tags is None:
        return []
    if isinstance(tags, str) or not isinstance(tags, Iterable):
        raise ExperimentDBValueError(
            f"tags must be a list of strings, got {type(tags).__name__} {tags!r}; e.g. tags=['baseline']"
        )
    out: list[str] = []
    for tag in tags:
        _check_name(tag, "each tag")
        if tag not in out:
            out.append(tag)
    return out


def _dig(config: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


# ------------------------------------------------------------------------------------ the class
class ExperimentDB(SqlStore):
    """A SQL record of runs: config, notes, tags, status and every logged metric.

    Args:
        path_or_url: a file path (SQLite; parent folders are created) or any SQLAlchemy URL with
            ``://`` (``postgresql://user@host/db``, ``sqlite:///abs/path.db``). ``":memory:"``
            gives a private in-memory database.
        busy_timeout_s: how long one SQLite write waits for another process's lock before the
            retry loop takes over.
        max_retries: retries of a write that still found the database locked (exponential
            backoff from 20 ms to 1 s with jitter); then :class:`ExperimentDBError`.

    Raises:
        ExperimentDBError: the database cannot be opened, or its schema is newer than this version.

    Example:
        >>> import tempfile, os
        >>> db = ExperimentDB(os.path.join(tempfile.mkdtemp(), "experiments.db"))
        >>> run_id = db.log_run("lr-1e-3", config={"lr": 1e-3}, tags=["sweep"])
        >>> db.log_metric(run_id, "val/loss", 0.42, step=100)
        >>> db.update_run_status(run_id, "completed")
        >>> best = db.get_best_run("val/loss", mode="min")
        >>> best["run_name"], best["best_value"], best["config"]
        ('lr-1e-3', 0.42, {'lr': 0.001})
        >>> db.close()
    """

    _kind = "experiment database"
    _error = ExperimentDBError

    def __init__(
        self,
        path_or_url: str | os.PathLike[str] = "runs/experiments.db",
        *,
        busy_timeout_s: float = 30.0,
        max_retries: int = 10,
    ) -> None:
        self._known_runs: set[int] = set()  # run_ids seen to exist; runs are never deleted
        self._lock = threading.Lock()
        database = resolve_database(
            path_or_url,
            kind=self._kind,
            example="runs/experiments.db",
            error=ExperimentDBError,
            value_error=ExperimentDBValueError,
        )
        self._connect(database, busy_timeout_s=busy_timeout_s, max_retries=max_retries)

    # -- setup -----------------------------------------------------------------------------------
    def _init_schema(self, conn: Connection) -> None:
        init_versioned_schema(
            conn,
            _metadata,
            _schema_version,
            SCHEMA_VERSION,
            kind=self._kind,
            error=ExperimentDBError,
            migrations=_MIGRATIONS,
        )

    def _require_runs(self, conn: Connection, run_ids: Iterable[int]) -> None:
        missing = [r for r in dict.fromkeys(run_ids) if r not in self._known_runs]
        if not missing:
            return
        found = set(conn.execute(select(_runs.c.run_id).where(_runs.c.run_id.in_(missing))).scalars())
        absent = [r for r in missing if r not in found]
        if absent:
            raise UnknownRunError(
                f"no run with run_id {', '.join(map(str, absent))} in experiment database {self._label!r}; "
                "use the run_id returned by log_run (list_runs() shows the existing ones)"
            )
        with self._lock:
            self._known_runs.update(found)

    # -- writing -----------------------------------------------------------------------------------
    def log_run(
        self,
        run_name: str,
        config: Mapping[str, Any] | None = None,
        notes: str = "",
        tags: list[str] | None = None,
        *,
        experiment: str = "default",
        run_dir: str | os.PathLike[str] | None = None,
        status: RunStatus = "running",
        heartbeat_interval_s: float | None = None,
        parent_run_id: int | None = None,
        group_kind: str | None = None,
    ) -> int:
        """Record a new run and return its ``run_id``.

        Args:
            run_name: a human name; need not be unique (each call makes a new run).
            config: the run's configuration, stored as JSON (objects with ``to_dict()`` or
                ``model_dump()`` are converted; un-serialisable leaves are stored as their repr).
            notes: free text: hypothesis, expectation, decision.
            tags: labels to filter on (``list_runs(tag="sweep")``); duplicates are dropped.
            experiment: group name for runs that belong together.
            run_dir: the run's directory on disk, if any.
            status: initial status, normally ``"running"``.
            heartbeat_interval_s: the seconds between two :meth:`heartbeat` calls the run promises
                (None: the default threshold, :func:`trainengine.tracking.stale_after_s`).
            parent_run_id: make this run a child of that group (its parent run); the child gets
                the parent's experiment whatever ``experiment`` says.
            group_kind: make this run the parent of a group of this kind (``"seeds"``, ``"cv"``, ...:
                letters, digits, ``_`` or ``-``, at most 32 characters).

        Returns:
            The new run's integer id.

        Raises:
            UnknownRunError: ``parent_run_id`` names no run.
            ExperimentDBValueError: a bad name, status, tag, ``parent_run_id`` or ``group_kind``.

        Example:
            >>> db = ExperimentDB(":memory:")
            >>> db.log_run("baseline", {"lr": 0.1}, notes="first try", tags=["mlp"])
            1
            >>> group = db.log_run("seeds", group_kind="seeds")
            >>> child = db.log_run("seed-0", parent_run_id=group)
            >>> db.get_run(child)["parent_run_id"] == group, db.get_run(group)["num_children"]
            (True, 1)
        """
        _check_name(run_name, "run_name")
        _check_name(experiment, "experiment")
        parent = None if parent_run_id is None else _check_run_id(parent_run_id)
        kind = _check_group_kind(group_kind)
        if not isinstance(notes, str):
            raise ExperimentDBValueError(f"notes must be a string, got {type(notes).__name__} {notes!r}")
        _check_status(status)
        tag_list = _check_tags(tags)
        config_json = _config_json(config)
        now = time.time()
        row = {
            "run_name": run_name,
            "experiment": experiment,
            "config_json": config_json,
            "notes": notes,
            "status": status,
            "error": None,
            "start_time": now,
            "end_time": now if status in _TERMINAL else None,
            "run_dir": None if run_dir is None else os.fspath(run_dir),
            "heartbeat_time": now,
            "heartbeat_interval_s": heartbeat_interval_s,
            "parent_run_id": parent,
            "group_kind": kind,
        }

        def insert(conn: Connection) -> int:
            if parent is not None:
                self._require_runs(conn, [parent])
                # A child belongs to its parent's experiment: list_runs(experiment=...) finds both.
                row["experiment"] = conn.execute(
                    select(_runs.c.experiment).where(_runs.c.run_id == parent)
                ).scalar_one()
            run_id = int(inserted_id(conn.execute(_runs.insert().values(**row))))
            if tag_list:
                conn.execute(
                    _tags.insert(), [{"run_id": run_id, "tag": t, "position": i} for i, t in enumerate(tag_list)]
                )
            return run_id

        run_id = self._write(insert)
        with self._lock:
            self._known_runs.add(run_id)
        return run_id

    def log_metric(
        self, run_id: int, name: str, value: float, step: int | None = None, epoch: int | None = None
    ) -> None:
        """Append one value of metric ``name`` to run ``run_id``.

        Args:
            run_id: from :meth:`log_run`.
            name: metric name; ``/`` namespaces are fine (``"val/loss"``).
            value: a number (float, int, numpy scalar, one-element tensor). NaN and inf are kept
                (stored as NULL plus a flag) and ignored by best-value queries.
            step: optimizer step, if known.
            epoch: epoch, if known.

        Raises:
            UnknownRunError: no such run.
            ExperimentDBValueError: the name, value, step or epoch is invalid.

        Example:
            >>> db = ExperimentDB(":memory:")
            >>> rid = db.log_run("r")
            >>> db.log_metric(rid, "val/loss", 0.5, step=10, epoch=1)
        """
        self.log_metrics(run_id, {name: value}, step=step, epoch=epoch)

    def log_metrics(
        self, run_id: int, metrics: Mapping[str, float], step: int | None = None, epoch: int | None = None
    ) -> None:
        """Append several metrics at the same step in one transaction (all or none are stored).

        Example:
            >>> db = ExperimentDB(":memory:")
            >>> rid = db.log_run("r")
            >>> db.log_metrics(rid, {"train/loss": 0.9, "lr": 1e-3}, step=100)
            >>> sorted(db.get_run(rid)["metrics"])
            ['lr', 'train/loss']
        """
        self.log_metrics_batch(run_id, [(metrics, step, epoch)])

    def log_metrics_batch(self, run_id: int, batch: list[tuple[Mapping[str, float], int | None, int | None]]) -> None:
        """Append many ``(metrics, step, epoch)`` records in one transaction (the Trainer's path:
        one commit per batch instead of one per logging step)."""
        run_id = _check_run_id(run_id)
        now = time.time()
        rows = []
        for metrics, step, epoch in batch:
            if not isinstance(metrics, Mapping):
                raise ExperimentDBValueError(f"metrics must be a dict of name -> number, got {type(metrics).__name__}")
            step, epoch = _check_count(step, "step"), _check_count(epoch, "epoch")
            for name, value in metrics.items():
                _check_name(name, "metric name")
                number, nonfinite = _to_float(name, value)
                rows.append(
                    {
                        "run_id": run_id,
                        "name": name,
                        "value": number,
                        "nonfinite": nonfinite,
                        "step": step,
                        "epoch": epoch,
                        "time": now,
                    }
                )
        if not rows:
            return

        def insert(conn: Connection) -> None:
            self._require_runs(conn, [run_id])
            conn.execute(_metrics.insert(), rows)

        self._write(insert)

    def update_run_status(self, run_id: int, status: RunStatus, error: str | None = None) -> None:
        """Set a run's status; terminal states (completed, failed, interrupted) also set its end time.

        Setting ``"running"`` again (a resumed run) clears the end time and the error.

        Args:
            run_id: from :meth:`log_run`.
            status: one of ``running``, ``completed``, ``failed``, ``interrupted``.
            error: the failure reason (e.g. the exception text) for ``failed`` / ``interrupted``.

        Raises:
            ExperimentDBValueError: unknown status (the message lists the valid ones).
            UnknownRunError: no such run.

        Example:
            >>> db = ExperimentDB(":memory:")
            >>> rid = db.log_run("r")
            >>> db.update_run_status(rid, "failed", error="CUDA out of memory")
            >>> db.get_run(rid)["status"], db.get_run(rid)["error"]
            ('failed', 'CUDA out of memory')
        """
        run_id = _check_run_id(run_id)
        _check_status(status)
        if error is not None and not isinstance(error, str):
            error = repr(error)  # an exception object: keep its type and message
        now = time.time()
        values = {
            "status": status,
            "error": error,
            "end_time": now if status in _TERMINAL else None,
            "heartbeat_time": now,
        }

        def set_status(conn: Connection) -> None:
            self._require_runs(conn, [run_id])
            conn.execute(update(_runs).where(_runs.c.run_id == run_id).values(**values))

        self._write(set_status)

    def heartbeat(self, run_id: int, interval_s: float | None = None) -> None:
        """Record that run ``run_id`` is alive now (the Trainer calls it every few seconds).

        Args:
            run_id: from :meth:`log_run`.
            interval_s: the seconds until the next heartbeat; a running run silent for more than
                ``max(3 * interval_s, 60)`` seconds is listed with ``stale=True``.

        Example:
            >>> db = ExperimentDB(":memory:")
            >>> rid = db.log_run("r")
            >>> db.heartbeat(rid, 15.0)
            >>> db.get_run(rid)["stale"]
            False
        """
        run_id = _check_run_id(run_id)
        values: dict[str, Any] = {"heartbeat_time": time.time()}
        if interval_s is not None:
            values["heartbeat_interval_s"] = float(interval_s)

        def beat(conn: Connection) -> None:
            self._require_runs(conn, [run_id])
            conn.execute(update(_runs).where(_runs.c.run_id == run_id).values(**values))

        self._write(beat)

    def set_parent(self, run_id: int, parent_run_id: int | None) -> None:
        """Make run ``run_id`` a child of the group ``parent_run_id`` (None: detach it).

        The way a group adopts a run something else created (the Trainer's ExperimentDB callback
        records each child of ``trainengine train --seeds``; the group links it). The child moves
        to its parent's experiment.

        Raises:
            UnknownRunError: either run does not exist.
            ExperimentDBValueError: a run cannot be its own parent, nor the parent of its parent.

        Example:
            >>> db = ExperimentDB(":memory:")
            >>> group, child = db.log_run("cv5", group_kind="cv", experiment="mnist"), db.log_run("fold-0")
            >>> db.set_parent(child, group)
            >>> [r["run_name"] for r in db.get_children(group)], db.get_run(child)["experiment"]
            (['fold-0'], 'mnist')
        """
        run_id = _check_run_id(run_id)
        parent = None if parent_run_id is None else _check_run_id(parent_run_id)
        if parent == run_id:
            raise ExperimentDBValueError(f"run {run_id} cannot be its own parent; give the group's parent run_id")

        def link(conn: Connection) -> None:
            self._require_runs(conn, [run_id] if parent is None else [run_id, parent])
            values: dict[str, Any] = {"parent_run_id": parent}
            if parent is not None:
                grand = conn.execute(
                    select(_runs.c.parent_run_id, _runs.c.experiment).where(_runs.c.run_id == parent)
                ).one()
                if grand.parent_run_id == run_id:
                    raise ExperimentDBValueError(
                        f"run {parent} is a child of run {run_id}; a run cannot be the parent of its own parent"
                    )
                values["experiment"] = grand.experiment
            conn.execute(update(_runs).where(_runs.c.run_id == run_id).values(**values))

        self._write(link)

    # -- reading -----------------------------------------------------------------------------------
    @staticmethod
    def _run_dicts(conn: Connection, rows: Sequence[Any]) -> list[dict[str, Any]]:
        ids = [r.run_id for r in rows]
        tags: dict[int, list[str]] = {i: [] for i in ids}
        if ids:
            for t in conn.execute(
                select(_tags.c.run_id, _tags.c.tag)
                .where(_tags.c.run_id.in_(ids))
                .order_by(_tags.c.run_id, _tags.c.position)
            ):
                tags[t.run_id].append(t.tag)
        children: dict[int, int] = {}
        if ids:
            # One grouped count for the whole page of runs, not one query per run.
            counts = conn.execute(
                select(_runs.c.parent_run_id, func.count())
                .where(_runs.c.parent_run_id.in_(ids))
                .group_by(_runs.c.parent_run_id)
            )
            children = {int(row[0]): int(row[1]) for row in counts}  # dict(result) would read it as a mapping
        return [
            {
                "run_id": r.run_id,
                "run_name": r.run_name,
                "experiment": r.experiment,
                "config": json.loads(r.config_json),
                "notes": r.notes,
                "tags": tags[r.run_id],
                "status": r.status,
                "error": r.error,
                "start_time": _iso(r.start_time),
                "end_time": _iso(r.end_time),
                "duration_s": None if r.end_time is None else r.end_time - r.start_time,
                "run_dir": r.run_dir,
                "heartbeat_time": _iso(r.heartbeat_time),
                "heartbeat_interval_s": r.heartbeat_interval_s,
                # A "running" run whose process died without a word (SIGKILL, power loss).
                "stale": liveness(r.status, r.heartbeat_time, r.heartbeat_interval_s) == "stale",
                "parent_run_id": r.parent_run_id,
                "group_kind": r.group_kind,
                "num_children": children.get(r.run_id, 0),
            }
            for r in rows
        ]

    @staticmethod
    def _metric_series(
        conn: Connection, run_ids: list[int], names: list[str] | None = None
    ) -> dict[int, dict[str, list[dict[str, Any]]]]:
        out: dict[int, dict[str, list[dict[str, Any]]]] = {r: {} for r in run_ids}
        q = select(_metrics).where(_metrics.c.run_id.in_(run_ids))
        if names is not None:
            q = q.where(_metrics.c.name.in_(names))
        for m in conn.execute(q.order_by(_metrics.c.metric_id)):  # logging order
            out[m.run_id].setdefault(m.name, []).append(
                {"value": _from_row(m.value, m.nonfinite), "step": m.step, "epoch": m.epoch, "time": _iso(m.time)}
            )
        return out

    def get_run(self, run_id: int) -> dict[str, Any]:
        """Everything about one run.

        Returns:
            ``run_id, run_name, experiment, config (dict), notes, tags, status, error, start_time,
            end_time`` (ISO 8601 UTC, ``end_time`` None while running), ``duration_s, run_dir``,
            ``heartbeat_time, heartbeat_interval_s, stale``, ``parent_run_id`` (None unless the run is
            a child of a group), ``group_kind`` (None unless it is a group's parent), ``num_children`` and
            ``metrics``: ``{name: [{"value", "step", "epoch", "time"}, ...]}`` in logging order.

        Raises:
            UnknownRunError: no such run.

        Example:
            >>> db = ExperimentDB(":memory:")
            >>> rid = db.log_run("r", {"lr": 0.1})
            >>> db.log_metric(rid, "loss", 1.5, step=1)
            >>> run = db.get_run(rid)
            >>> run["config"], [p["value"] for p in run["metrics"]["loss"]]
            ({'lr': 0.1}, [1.5])
        """
        run_id = _check_run_id(run_id)

        def fetch(conn: Connection) -> dict[str, Any]:
            rows = conn.execute(select(_runs).where(_runs.c.run_id == run_id)).all()
            if not rows:
                self._known_runs.discard(run_id)
                self._require_runs(conn, [run_id])
            run = self._run_dicts(conn, rows)[0]
            run["metrics"] = self._metric_series(conn, [run_id])[run_id]
            return run

        return self._read(fetch)

    def list_runs(
        self,
        filters: Mapping[str, Any] | None = None,
        *,
        experiment: str | None = None,
        status: RunStatus | list[str] | None = None,
        tag: str | list[str] | None = None,
        limit: int | None = None,
        include_metrics: bool = False,
    ) -> list[dict[str, Any]]:
        """Runs matching all filters, newest first (same dicts as :meth:`get_run`, without metrics).

        Args:
            filters: ``{"experiment": str, "status": str | list, "tag": str | list (runs having all),
                "run_name": str (``*`` and ``?`` are wildcards), "parent_run_id": int (the children of
                that group) or None (only runs that are no group's child: the top level),
                "group_kind": str (only group parents of that kind), "config.<dotted.key>": value}``;
                e.g. ``{"config.training.batch_size": 8}``.
            experiment, status, tag: the same filters as keywords.
            limit: at most this many runs.
            include_metrics: add each run's ``metrics`` series as in :meth:`get_run`.

        Raises:
            ExperimentDBValueError: an unknown filter key (the message lists the valid ones), a
                filter given twice with different values, or a bad limit.

        Example:
            >>> db = ExperimentDB(":memory:")
            >>> _ = db.log_run("a", {"lr": 0.1}, tags=["sweep"])
            >>> _ = db.log_run("b", {"lr": 0.2})
            >>> [r["run_name"] for r in db.list_runs({"config.lr": 0.1})], [r["run_name"] for r in db.list_runs()]
            (['a'], ['b', 'a'])
            >>> group = db.log_run("seeds", group_kind="seeds")
            >>> _ = db.log_run("seed-0", parent_run_id=group)
            >>> [r["run_name"] for r in db.list_runs({"parent_run_id": None})]
            ['seeds', 'b', 'a']
        """
        merged: dict[str, Any] = {}
        if filters is not None:
            if not isinstance(filters, Mapping):
                raise ExperimentDBValueError(f"filters must be a dict, got {type(filters).__name__}")
            merged.update(filters)
        for key, value in (("experiment", experiment), ("status", status), ("tag", tag)):
            if value is None:
                continue
            if key in merged and merged[key] != value:
                raise ExperimentDBValueError(
                    f"filter {key!r} given twice with different values: {merged[key]!r} and {value!r}"
                )
            merged[key] = value
        unknown = [
            k
            for k in merged
            if k not in _PLAIN_FILTERS and not (isinstance(k, str) and k.startswith("config.") and len(k) > 7)
        ]
        if unknown:
            raise ExperimentDBValueError(
                f"unknown list_runs filter {', '.join(map(repr, unknown))} — valid: {', '.join(_FILTER_KEYS)}"
            )
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ExperimentDBValueError(f"limit must be a positive integer or None, got {limit!r}")

        q = select(_runs)
        if "experiment" in merged:
            q = q.where(_runs.c.experiment == merged["experiment"])
        if "status" in merged:
            wanted = [merged["status"]] if isinstance(merged["status"], str) else list(merged["status"])
            for s in wanted:
                _check_status(s)
            q = q.where(_runs.c.status.in_(wanted))
        if "tag" in merged:
            for t in [merged["tag"]] if isinstance(merged["tag"], str) else list(merged["tag"]):
                q = q.where(exists().where(_tags.c.run_id == _runs.c.run_id, _tags.c.tag == t))
        if "parent_run_id" in merged:
            if merged["parent_run_id"] is None:
                q = q.where(_runs.c.parent_run_id.is_(None))
            else:
                q = q.where(_runs.c.parent_run_id == _check_run_id(merged["parent_run_id"]))
        if "group_kind" in merged:
            q = q.where(_runs.c.group_kind == _check_name(merged["group_kind"], "group_kind filter"))
        if "run_name" in merged:
            pattern = _check_name(merged["run_name"], "run_name filter")
            if "*" in pattern or "?" in pattern:
                like = re.sub(r"([\\%_])", r"\\\1", pattern).replace("*", "%").replace("?", "_")
                q = q.where(_runs.c.run_name.like(like, escape="\\"))
            else:
                q = q.where(_runs.c.run_name == pattern)
        config_filters = {k[len("config.") :]: v for k, v in merged.items() if k.startswith("config.")}
        q = q.order_by(_runs.c.run_id.desc())  # ids grow with creation time: newest first
        if limit is not None and not config_filters:
            q = q.limit(limit)

        def fetch(conn: Connection) -> list[dict[str, Any]]:
            runs = self._run_dicts(conn, conn.execute(q).all())
            if config_filters:
                runs = [r for r in runs if all(_dig(r["config"], k) == (True, v) for k, v in config_filters.items())]
                runs = runs[:limit] if limit is not None else runs
            if include_metrics and runs:
                series = self._metric_series(conn, [r["run_id"] for r in runs])
                for r in runs:
                    r["metrics"] = series[r["run_id"]]
            return runs

        return self._read(fetch)

    def get_children(self, parent_run_id: int, *, include_metrics: bool = False) -> list[dict[str, Any]]:
        """The child runs of a group, oldest first (the order the group ran them).

        Raises:
            UnknownRunError: no run ``parent_run_id``.

        Example:
            >>> db = ExperimentDB(":memory:")
            >>> group = db.log_run("seeds", group_kind="seeds")
            >>> for seed in (0, 1):
            ...     db.log_metric(db.log_run(f"seed-{seed}", parent_run_id=group), "val/loss", 0.5 + seed)
            >>> [
            ...     (r["run_name"], r["metrics"]["val/loss"][0]["value"])
            ...     for r in db.get_children(group, include_metrics=True)
            ... ]
            [('seed-0', 0.5), ('seed-1', 1.5)]
        """
        parent = _check_run_id(parent_run_id)

        def fetch(conn: Connection) -> list[dict[str, Any]]:
            self._known_runs.discard(parent)
            self._require_runs(conn, [parent])
            rows = conn.execute(
                select(_runs).where(_runs.c.parent_run_id == parent).order_by(_runs.c.run_id.asc())
            ).all()
            runs = self._run_dicts(conn, rows)
            if include_metrics and runs:
                series = self._metric_series(conn, [r["run_id"] for r in runs])
                for r in runs:
                    r["metrics"] = series[r["run_id"]]
            return runs

        return self._read(fetch)

    def get_best_run(
        self,
        metric: str,
        mode: Literal["min", "max"] = "min",
        *,
        experiment: str | None = None,
        status: RunStatus | None = None,
    ) -> dict[str, Any] | None:
        """The run holding the best single value of ``metric`` (over all its logged values).

        Args:
            metric: metric name, e.g. ``"val_loss"``.
            mode: ``"min"`` (losses) or ``"max"`` (accuracy).
            experiment: only runs of this experiment.
            status: only runs in this status (e.g. ``"completed"``).

        Returns:
            The run as in :meth:`list_runs` plus ``metric``, ``mode``, ``best_value`` and the
            ``step``, ``epoch`` and ``time`` at which it was logged; ``None`` if no run has a finite
            value of ``metric`` (:meth:`metric_names` shows what exists). Ties go to the earliest logged.

        Example:
            >>> db = ExperimentDB(":memory:")
            >>> for lr, loss in [(0.1, 0.5), (0.01, 0.3)]:
            ...     db.log_metric(db.log_run(f"lr={lr}", {"lr": lr}), "val_loss", loss)
            >>> best = db.get_best_run("val_loss", mode="min")
            >>> best["run_name"], best["best_value"], best["config"]
            ('lr=0.01', 0.3, {'lr': 0.01})
        """
        _check_name(metric, "metric")
        _check_mode(mode)
        if status is not None:
            _check_status(status)
        order = _metrics.c.value.asc() if mode == "min" else _metrics.c.value.desc()
        q = (
            select(_metrics.c.run_id, _metrics.c.value, _metrics.c.step, _metrics.c.epoch, _metrics.c.time)
            .join(_runs, _runs.c.run_id == _metrics.c.run_id)
            .where(_metrics.c.name == metric, _metrics.c.value.is_not(None))
        )
        if experiment is not None:
            q = q.where(_runs.c.experiment == experiment)
        if status is not None:
            q = q.where(_runs.c.status == status)
        q = q.order_by(order, _metrics.c.metric_id.asc()).limit(1)

        def fetch(conn: Connection) -> dict[str, Any] | None:
            hit = conn.execute(q).first()
            if hit is None:
                return None
            run = self._run_dicts(conn, conn.execute(select(_runs).where(_runs.c.run_id == hit.run_id)).all())[0]
            run.update(
                metric=metric, mode=mode, best_value=hit.value, step=hit.step, epoch=hit.epoch, time=_iso(hit.time)
            )
            return run

        return self._read(fetch)

    def compare_runs(
        self,
        run_ids: list[int],
        metrics: list[str] | None = None,
        modes: Mapping[str, Literal["min", "max"]] | None = None,
    ) -> list[dict[str, Any]]:
        """Side-by-side summary of runs: best and last value of each metric.

        Args:
            run_ids: runs to compare, in the order wanted.
            metrics: metric names; default every metric any of the runs logged.
            modes: ``{name: "min" | "max"}`` overriding the default, which maximises names whose
                last part has a word like acc/accuracy/f1/r2/auc/precision/recall/iou/bleu and
                minimises everything else (losses, errors).

        Returns:
            One dict per run: ``run_id, run_name, experiment, status, config`` and ``metrics``:
            ``{name: {"mode", "best", "best_step", "last", "last_step", "count"}}``; a metric the run
            never logged has ``count`` 0 and None values. ``best`` skips NaN/inf; ``last`` is the
            most recently logged value as is.

        Raises:
            UnknownRunError: a run_id does not exist (all missing ids are named).

        Example:
            >>> db = ExperimentDB(":memory:")
            >>> a, b = db.log_run("a"), db.log_run("b")
            >>> for rid, losses in [(a, [0.9, 0.5, 0.6]), (b, [0.8, 0.7])]:
            ...     for step, loss in enumerate(losses):
            ...         db.log_metric(rid, "val/loss", loss, step=step)
            >>> [
            ...     (r["run_name"], r["metrics"]["val/loss"]["best"], r["metrics"]["val/loss"]["last"])
            ...     for r in db.compare_runs([a, b])
            ... ]
            [('a', 0.5, 0.6), ('b', 0.7, 0.7)]
        """
        if isinstance(run_ids, (str, bytes)) or not isinstance(run_ids, Iterable):
            raise ExperimentDBValueError(f"run_ids must be a list of run ids, got {type(run_ids).__name__} {run_ids!r}")
        ids = [_check_run_id(r) for r in run_ids]
        if not ids:
            raise ExperimentDBValueError("run_ids is empty; give at least one run id (list_runs() shows them)")
        names: list[str] | None = None
        if metrics is not None:
            if isinstance(metrics, str):
                raise ExperimentDBValueError(
                    f"metrics must be a list of names, got str {metrics!r}; e.g. metrics=[{metrics!r}]"
                )
            names = [_check_name(m, "metric name") for m in metrics]
        mode_map = dict(modes or {})
        for key, value in mode_map.items():
            _check_mode(value, f"mode of metric {key!r}")

        unique = list(dict.fromkeys(ids))

        def fetch(conn: Connection) -> tuple[list[dict[str, Any]], dict[int, dict[str, list[dict[str, Any]]]]]:
            self._known_runs.difference_update(unique)  # always re-check: the caller asked about these ids
            self._require_runs(conn, unique)
            by_id = {
                r["run_id"]: r
                for r in self._run_dicts(conn, conn.execute(select(_runs).where(_runs.c.run_id.in_(unique))).all())
            }
            return [by_id[i] for i in unique], self._metric_series(conn, unique, names)

        runs, series = self._read(fetch)
        wanted = names if names is not None else sorted({n for s in series.values() for n in s})
        out = []
        for run in runs:
            summary: dict[str, Any] = {}
            for name in wanted:
                mode = mode_map.get(name) or _infer_mode(name)
                points = series[run["run_id"]].get(name, [])
                finite = [p for p in points if p["value"] is not None and math.isfinite(p["value"])]
                best = (min if mode == "min" else max)(finite, key=lambda p: p["value"]) if finite else None
                last = points[-1] if points else None
                summary[name] = {
                    "mode": mode,
                    "best": best and best["value"],
                    "best_step": best and best["step"],
                    "last": last and last["value"],
                    "last_step": last and last["step"],
                    "count": len(points),
                }
            out.append(
                {k: run[k] for k in ("run_id", "run_name", "experiment", "status", "config")} | {"metrics": summary}
            )
        return out

    def metric_names(self, run_id: int | None = None, *, experiment: str | None = None) -> list[str]:
        """Sorted names of the metrics logged (by one run, one experiment, or anywhere).

        Example:
            >>> db = ExperimentDB(":memory:")
            >>> db.log_metrics(db.log_run("r"), {"val/loss": 1.0, "lr": 0.1})
            >>> db.metric_names()
            ['lr', 'val/loss']
        """
        q = select(_metrics.c.name).distinct()
        if run_id is not None:
            q = q.where(_metrics.c.run_id == _check_run_id(run_id))
        if experiment is not None:
            q = q.join(_runs, _runs.c.run_id == _metrics.c.run_id).where(_runs.c.experiment == experiment)
        return sorted(self._read(lambda conn: list(conn.execute(q).scalars())))
