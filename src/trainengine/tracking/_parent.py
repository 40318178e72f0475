"""Parent runs: a run made of other runs (a seed group, k-fold cross-validation, a tuning study).

A parent run has no training loop of its own. On disk it is a folder holding ``run.json`` (status,
start/end, a heartbeat and ``group: {kind, children, ...}``) and ``config.yaml`` (the base config
with a header saying how to run it again); in the ExperimentDB it is a row with ``group_kind``,
and each child's row points at it (``parent_run_id``). :class:`ParentRun` keeps both; the
children are ordinary runs whose rows :class:`AdoptChild` links to the parent.
"""

from __future__ import annotations

import contextlib
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainengine.errors import TrainEngineError

if TYPE_CHECKING:
    from trainengine.config import TrainingConfig
    from trainengine.tracking._db import RunStatus

__all__ = ["AdoptChild", "ParentRun", "experiment_db_location", "utc_now"]


def utc_now() -> str:
    """The current UTC time as run.json records it (ISO 8601, milliseconds)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def experiment_db_location(config: TrainingConfig) -> str | None:
    """The ExperimentDB a run of ``config`` records to: ``tracking.db_url``, else
    ``<output_dir>/experiments.db``; None when ``tracking.experiment_db`` or
    ``tracking.write_run_dir`` is off (a run without a run directory has no row)."""
    tr = config.tracking
    if not (tr.experiment_db and tr.write_run_dir):
        return None
    return tr.db_url or str(Path(tr.output_dir) / "experiments.db")


class AdoptChild:
    """A Trainer callback: links the child run's ExperimentDB row (made by the run's own
    ExperimentDB callback, which runs first) to the parent's row as soon as the child starts.

    It opens its own short connection, so it works in a worker process as well.

    Args:
        location: the ExperimentDB's path or URL.
        parent_id: the parent's row id.
    """

    rank_zero_only = True

    def __init__(self, location: str, parent_id: int) -> None:
        self.location = location
        self.parent_id = parent_id
        self.child_id: int | None = None

    def on_train_start(self, trainer: Any) -> None:
        child = trainer.state.extra.get("experiment_db_run_id")
        if child is None:
            return
        from trainengine.tracking._db import ExperimentDB

        db = ExperimentDB(self.location)
        try:
            db.set_parent(int(child), self.parent_id)
        finally:
            db.close()
        self.child_id = int(child)


class ParentRun:
    """The record of a parent run: its folder's run.json, config.yaml, lock, heartbeat and
    ExperimentDB row.

    Args:
        path: the run's folder (made if missing; an existing one with a run.json is continued).
        kind: the group kind (``seeds``, ``cv``, ``tune``), stored in ``group.kind`` and as the
            database row's ``group_kind``.
        config: the base config (its tags, notes, seed and ExperimentDB settings).
    """

    def __init__(self, path: Path, kind: str, config: TrainingConfig) -> None:
        self.path = Path(path)
        self.kind = kind
        self.config = config
        self.facts: dict[str, Any] = {}
        self.db: Any = None
        self.db_run_id: int | None = None
        self._lock: Any = None
        self._sink: Any = None
        self._facts_lock = threading.Lock()  # the heartbeat thread and the main thread both write run.json

    def start(self, group: dict[str, Any], config_header: str) -> int | None:
        """Take the folder, write (or continue) run.json and config.yaml, make (or reopen) the
        database row and start the heartbeat; returns the row id (None without a database).

        Args:
            group: the ``group`` facts (merged over a continued run's).
            config_header: a comment line (``# ...``) put above the base config in config.yaml.
        """
        import json

        import yaml

        from trainengine._io import atomic_write_text
        from trainengine._liveness import HEARTBEAT_INTERVAL_S, RunDirLock
        from trainengine.provenance import git_info, library_versions
        from trainengine.tracking._callbacks import BackgroundSink

        tr = self.config.tracking
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = RunDirLock(self.path)
        self._lock.acquire()  # one writer per parent folder
        previous = self.path / "run.json"
        if previous.is_file():
            self.facts = json.loads(previous.read_text(encoding="utf-8"))
            self.facts.setdefault("resumes", []).append({"time": utc_now()})
            self.facts.update(status="running", end_time=None, heartbeat_time=utc_now())
            self.facts.pop("error", None)
        else:
            self.facts = {
                "run_id": self.path.name,
                "experiment": self.path.parent.name,
                "status": "running",
                "start_time": utc_now(),
                "end_time": None,
                "git": git_info(),
                "versions": library_versions(),
                "seed": self.config.training.seed,
                "tags": list(tr.tags),
                "notes": tr.notes,
                "heartbeat_time": utc_now(),
                "heartbeat_interval_s": HEARTBEAT_INTERVAL_S,
            }
        self.facts["group"] = {**self.facts.get("group", {}), "kind": self.kind, **group}
        resolved = self.config.to_dict()
        resolved["tracking"]["run_name"] = None
        config_text = config_header.rstrip("\n") + "\n" + yaml.safe_dump(resolved, sort_keys=False)
        atomic_write_text(self.path / "config.yaml", config_text)
        self.write()
        location = experiment_db_location(self.config)
        if location is not None:
            from trainengine.tracking._db import ExperimentDB, UnknownRunError

            self.db = ExperimentDB(location)
            known = self.facts["group"].get("db_run_id")
            if known is not None:
                with contextlib.suppress(UnknownRunError):  # a new database: the row is made again below
                    self.db.update_run_status(int(known), "running")
                    self.db_run_id = int(known)
            if self.db_run_id is None:
                self.db_run_id = self.db.log_run(
                    self.path.name,
                    config=self.config.to_dict(),
                    notes=tr.notes,
                    tags=list(tr.tags),
                    experiment=self.path.parent.name,
                    run_dir=str(self.path),
                    heartbeat_interval_s=HEARTBEAT_INTERVAL_S,
                    group_kind=self.kind,
                )
            self.update_group(db_run_id=self.db_run_id)
        # No training loop of its own: a thread keeps the record alive (run.json and the database)
        # while the children train, so a killed parent shows as stale, not running forever.
        self._sink = BackgroundSink(
            f"trainengine-{self.kind}", heartbeat=self._heartbeat, heartbeat_s=HEARTBEAT_INTERVAL_S
        )
        return self.db_run_id

    def _heartbeat(self) -> None:
        with contextlib.suppress(OSError, TrainEngineError):  # a missed heartbeat is not worth a failed run
            self.write(heartbeat_time=utc_now())
            if self.db is not None and self.db_run_id is not None:
                self.db.heartbeat(self.db_run_id)

    def write(self, **changes: Any) -> None:
        """Update run.json's top-level facts (atomically)."""
        from trainengine._io import atomic_write_json

        with self._facts_lock:
            self.facts.update(changes)
            atomic_write_json(self.path / "run.json", self.facts)

    def update_group(self, **changes: Any) -> None:
        """Update run.json's ``group`` facts (the children, a summary file, ...)."""
        self.write(group={**self.facts.get("group", {}), **changes})

    def finish(
        self,
        status: RunStatus,
        *,
        results: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        error: str | None = None,
    ) -> None:
        """End the run: stop the heartbeat, write the status (and ``results``, ``error``), log
        ``metrics`` to the database row, and let go of the folder."""
        if self._sink is not None:
            with contextlib.suppress(Exception):  # the heartbeat thread's own failure must not hide the result
                self._sink.close()
            self._sink = None
        changes: dict[str, Any] = {"status": status, "end_time": utc_now(), "heartbeat_time": utc_now()}
        if results is not None:
            changes["results"] = results
        if error is not None:
            changes["error"] = error
        try:
            if self.facts:
                self.write(**changes)
            if self.db is not None and self.db_run_id is not None:
                if metrics:
                    self.db.log_metrics(self.db_run_id, metrics)
                self.db.update_run_status(self.db_run_id, status, error=error)
        finally:
            if self.db is not None:
                self.db.close()
                self.db = None
            if self._lock is not None:
                self._lock.release()
                self._lock = None
