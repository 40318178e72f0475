"""Run records of scikit-learn runs: ordinary runs without a training loop.

A scikit-learn run is a parent run (:class:`trainengine.tracking.ParentRun`, ``group_kind``
``cv``) whose children are its cross-validation folds; a tuning study's trials are ordinary runs
too. :class:`RunRecord` is one such child: its folder's ``run.json`` (status, start/end, git
commit, versions, host, seed, results), ``config.yaml`` (the run's config, loadable with
``TrainingConfig.load``), ``logs.jsonl``, the run-directory lock and heartbeat, and an
ExperimentDB row that points at its parent (``parent_run_id``) — the same files and columns a
torch run has, so ``trainengine runs list / show / logs`` read them as they are.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainengine.errors import TrainEngineError

if TYPE_CHECKING:
    from trainengine.config import TrainingConfig
    from trainengine.tracking._db import RunStatus

__all__ = ["RunRecord", "RecordedConfig", "append_log", "make_run_dir", "config_text"]


class RecordedConfig:
    """A TrainingConfig as the ExperimentDB and trackers record it: its sections plus ``sklearn``
    (the estimator, its steps and its flattened parameters), so ``runs compare`` and a tracker's
    params show what the pipeline was. Everything else reads through to the config."""

    def __init__(self, config: TrainingConfig, sklearn: dict[str, Any]) -> None:
        self._config = config
        self._sklearn = sklearn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._config, name)

    def to_dict(self) -> dict[str, Any]:
        return {**self._config.to_dict(), "sklearn": self._sklearn}


def config_text(config: TrainingConfig, header: str) -> str:
    """``config.yaml``: a ``#`` header and the config (run name left out: a re-run gets its own)."""
    import yaml

    resolved = config.to_dict()
    resolved["tracking"]["run_name"] = None
    return header.rstrip("\n") + "\n" + yaml.safe_dump(resolved, sort_keys=False)


def make_run_dir(root: Path, name: str) -> Path:
    """Create ``root/name`` (a new folder: two runs of one name never share one).

    Raises:
        TrainEngineError: it exists, or cannot be made (the message says what to change).
    """
    path = root / name
    try:
        root.mkdir(parents=True, exist_ok=True)
        path.mkdir()
    except FileExistsError:
        raise TrainEngineError(
            f"run directory {path} already exists — choose another tracking.run_name or remove it"
        ) from None
    except OSError as exc:
        raise TrainEngineError(
            f"cannot create the run directory {path}: {exc.strerror} — choose a writable tracking.output_dir"
        ) from None
    return path


def append_log(path: Path, record: dict[str, Any]) -> None:
    """Append one record to ``logs.jsonl`` (with its time; non-finite numbers as null)."""
    from trainengine.tracking._parent import utc_now
    from trainengine.tracking._run_dir import _jsonable

    with open(path / "logs.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"time": utc_now(), **_jsonable(record)}) + "\n")


class RunRecord:
    """One ordinary run of a scikit-learn run or study (a fold, a trial): files, lock, heartbeat, DB row.

    Args:
        path: the run's folder (new; made by :func:`make_run_dir`).
        config: the run's config (written as config.yaml; its tags, notes and seed are recorded).
        db_location: the ExperimentDB (None: no database row).
        parent_db_run_id: the parent's row: this run's row is its child.
        db_config: the config as the database row stores it (default ``config``).
    """

    def __init__(
        self,
        path: Path,
        config: TrainingConfig,
        *,
        db_location: str | None = None,
        parent_db_run_id: int | None = None,
        db_config: Any = None,
    ) -> None:
        self.path = Path(path)
        self.config = config
        self.db_location = db_location
        self.parent_db_run_id = parent_db_run_id
        self.db_config = db_config if db_config is not None else config
        self.facts: dict[str, Any] = {}
        self.db: Any = None
        self.db_run_id: int | None = None
        self._lock: Any = None
        self._sink: Any = None

    def start(self, facts: dict[str, Any], header: str) -> None:
        """Take the folder, write config.yaml and run.json (running), make the database row, start the heartbeat."""
        from trainengine._io import atomic_write_text
        from trainengine._liveness import HEARTBEAT_INTERVAL_S, RunDirLock
        from trainengine.provenance import git_info, host_info, library_versions
        from trainengine.tracking._callbacks import BackgroundSink
        from trainengine.tracking._parent import utc_now

        tr = self.config.tracking
        self._lock = RunDirLock(self.path)
        self._lock.acquire()
        atomic_write_text(self.path / "config.yaml", config_text(self.config, header))
        self.facts = {
            "run_id": self.path.name,
            "experiment": self.path.parent.name,
            "status": "running",
            "start_time": utc_now(),
            "end_time": None,
            "git": git_info(),
            "versions": library_versions(),
            "host": host_info(),
            "seed": self.config.training.seed,
            **facts,
            "tags": list(tr.tags),
            "notes": tr.notes,
            "heartbeat_time": utc_now(),
            "heartbeat_interval_s": HEARTBEAT_INTERVAL_S,
        }
        self._write()
        append_log(self.path, {"type": "start", "run_id": self.path.name})
        if self.db_location is not None:
            from trainengine.tracking._db import ExperimentDB

            self.db = ExperimentDB(self.db_location)
            self.db_run_id = self.db.log_run(
                self.path.name,
                config=self.db_config.to_dict(),
                notes=tr.notes,
                tags=list(tr.tags),
                experiment=self.path.parent.name,
                run_dir=str(self.path),
                heartbeat_interval_s=HEARTBEAT_INTERVAL_S,
                parent_run_id=self.parent_db_run_id,
            )
        self._sink = BackgroundSink(
            "trainengine-sklearn-run", heartbeat=self._heartbeat, heartbeat_s=HEARTBEAT_INTERVAL_S
        )

    def _write(self) -> None:
        from trainengine._io import atomic_write_json
        from trainengine.tracking._run_dir import _jsonable

        atomic_write_json(self.path / "run.json", _jsonable(self.facts))

    def _heartbeat(self) -> None:
        from trainengine.tracking._parent import utc_now

        with contextlib.suppress(OSError, TrainEngineError):  # a missed heartbeat is not worth a failed run
            self.facts["heartbeat_time"] = utc_now()
            self._write()
            if self.db is not None and self.db_run_id is not None:
                self.db.heartbeat(self.db_run_id)

    def log(self, record: dict[str, Any]) -> None:
        """Append a record to logs.jsonl."""
        append_log(self.path, record)

    def finish(
        self,
        status: RunStatus,
        *,
        results: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        error: str | None = None,
    ) -> None:
        """End the run: the last log line, run.json's status and results, the database row's metrics and status."""
        from trainengine.tracking._parent import utc_now

        if self._sink is not None:
            with contextlib.suppress(Exception):  # the heartbeat thread's own failure must not hide the result
                self._sink.close()
            self._sink = None
        try:
            self.log({"type": "end", "status": status, **({"error": error} if error else {}), **(metrics or {})})
            self.facts.update(status=status, end_time=utc_now(), heartbeat_time=utc_now())
            if results is not None:
                self.facts["results"] = results
            if error is not None:
                self.facts["error"] = error
            self._write()
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
