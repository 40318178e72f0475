"""The run directory: ``runs/<experiment>/<run_id>/`` with config, run facts, logs and weights."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import queue
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import yaml

from trainengine._io import atomic_write_json, atomic_write_text, validate_name
from trainengine._liveness import HEARTBEAT_INTERVAL_S, RunDirLock
from trainengine.config import load_yaml
from trainengine.errors import TrainEngineError
from trainengine.models import model_spec
from trainengine.provenance import git_info, library_versions

__all__ = ["RunDirectory", "git_info", "library_versions", "new_run_id"]

_WEIGHTS = "model.safetensors"
logger = logging.getLogger("trainengine")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def new_run_id() -> str:
    """A sortable, unique run id: ``20261122-031502-a1b2``."""
    return datetime.now().strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


class JsonlWriter:
    """Appends JSON lines from a background thread, so the training thread never waits on disk.

    ``write`` only appends to an in-memory batch; a batch goes to the writer thread every
    ``flush_seconds`` or ``flush_records`` (one wake-up and one ``write`` per batch, not per
    line). ``close`` hands over the rest, drains the queue, flushes, fsyncs and joins.

    ``heartbeat`` (optional) is called by the writer thread every ``heartbeat_s`` seconds while
    the writer is open, whether or not lines arrive (a long evaluation logs nothing for
    minutes, and its process is alive all the same).
    """

    _STOP = object()

    def __init__(
        self,
        path: Path,
        flush_seconds: float = 1.0,
        flush_records: int = 256,
        *,
        heartbeat: Callable[[], None] | None = None,
        heartbeat_s: float = HEARTBEAT_INTERVAL_S,
    ) -> None:
        self._file: TextIO = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close(), from another thread
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._batch: list[dict[str, Any]] = []
        self._flush_seconds, self._flush_records = flush_seconds, flush_records
        self._last = time.monotonic()
        self._heartbeat, self._heartbeat_s = heartbeat, heartbeat_s
        self._thread = threading.Thread(target=self._run, name="trainengine-jsonl", daemon=True)
        self._thread.start()

    def write(self, record: dict[str, Any], *, urgent: bool = False) -> None:
        self._batch.append(record)
        now = time.monotonic()
        if urgent or len(self._batch) >= self._flush_records or now - self._last >= self._flush_seconds:
            self._handoff(now)

    def _handoff(self, now: float) -> None:
        if self._batch:
            self._queue.put(self._batch)
            self._batch = []
        self._last = now

    def _run(self) -> None:
        next_beat = time.monotonic() + self._heartbeat_s
        while True:
            try:
                wait = max(0.0, next_beat - time.monotonic()) if self._heartbeat is not None else None
                item = self._queue.get(timeout=wait)
            except queue.Empty:
                item = None
            if item is self._STOP:
                return
            if item is not None:
                self._file.write("".join(json.dumps(r) + "\n" for r in item))
                self._file.flush()  # readers (``tail -f``, trackers) see whole lines
            if self._heartbeat is not None and time.monotonic() >= next_beat:
                next_beat = time.monotonic() + self._heartbeat_s
                self._heartbeat()

    def close(self) -> None:
        self._handoff(time.monotonic())
        self._queue.put(self._STOP)
        self._thread.join()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


class RunDirectory:
    """Callback that records a run in ``<output_dir>/<experiment>/<run_id>/``.

    Files: ``config.yaml`` (the resolved config, re-runnable as is), ``run.json`` (status,
    start/end, git commit, versions, host, seed, data fingerprints, results), ``logs.jsonl``
    (one JSON object per logged step and evaluation) and ``model.safetensors`` (final weights).
    ``run.json`` is rewritten atomically at start and end, so it is always valid JSON.

    One live process owns the directory: an OS lock (:class:`~trainengine.tracking.RunDirLock`
    on ``.lock``) is taken before anything is written and held until the run ends, so a second
    ``train``/``resume`` of the same run fails with the holder's PID and host and touches nothing.
    While the run lives, a background thread refreshes ``heartbeat_time`` in ``run.json`` every
    ``heartbeat_interval_s`` seconds (``trainengine runs list`` shows a silent run as ``stale``).

    Args:
        heartbeat_interval_s: Seconds between two heartbeats.
    """

    rank_zero_only = True

    def __init__(self, heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S) -> None:
        self.heartbeat_interval_s = heartbeat_interval_s
        self.path: Path | None = None  # set once this process owns the directory
        self._lock: RunDirLock | None = None
        self._log: JsonlWriter | None = None
        self._facts: dict[str, Any] = {}
        self._heartbeat_failed = False

    # -- events ------------------------------------------------------------------------------
    def on_train_start(self, trainer: Any) -> None:
        if (
            getattr(trainer, "resume_run_dir", None) is not None
            and (Path(trainer.resume_run_dir) / "run.json").is_file()
        ):
            self._reopen(trainer, Path(trainer.resume_run_dir))
            return
        cfg = trainer.config
        tr = cfg.tracking
        experiment = validate_name(tr.experiment_name, "tracking.experiment_name")
        root = Path(tr.output_dir) / experiment
        if tr.run_name:
            run_id = validate_name(tr.run_name, "tracking.run_name")
        else:
            run_id = new_run_id()
            while (root / run_id).exists():
                run_id = new_run_id()
        path = root / run_id
        try:
            root.mkdir(parents=True, exist_ok=True)
            path.mkdir()  # not exist_ok: of two processes creating one run name, one wins
        except FileExistsError:
            raise TrainEngineError(
                f"run directory {path} already exists — choose another tracking.run_name (--run-name) or remove it"
            ) from None
        except OSError as exc:
            raise TrainEngineError(
                f"cannot create the run directory {path}: {exc.filename or path}: {exc.strerror} — "
                "choose a writable tracking.output_dir (--output-dir)"
            ) from None
        self._own(path)
        trainer.run_dir = path
        # Re-runnable as is: the run name is left out (it is this run's folder; a re-run gets its own).
        resolved = cfg.to_dict()
        resolved["tracking"]["run_name"] = None
        header = (
            f"# Resolved config of run {experiment}/{run_id}. "
            f"Re-run: trainengine train --config {path / 'config.yaml'}\n"
        )
        atomic_write_text(path / "config.yaml", header + yaml.safe_dump(resolved, sort_keys=False))
        model = trainer.model
        self._facts = {
            "run_id": run_id,
            "experiment": experiment,
            "status": "running",
            "start_time": _now(),
            "end_time": None,
            "git": git_info(),
            "versions": library_versions(),
            "host": {
                "hostname": socket.gethostname(),
                "platform": platform.platform(),
                "cpu_count": os.cpu_count(),
                "argv": sys.argv,
            },
            "seed": cfg.training.seed,
            "deterministic": cfg.training.deterministic,
            "runtime": trainer.runtime.describe(),
            "task": trainer.task_spec.to_dict(),
            "model": {
                "class": type(model).__name__,
                "num_parameters": trainer.num_parameters,
                "num_trainable_parameters": getattr(trainer, "num_trainable_parameters", trainer.num_parameters),
                "config": trainer.model_config_dict(),
                "spec": model_spec(model, trainer.model_config),
            },
            "data": {
                "dataset": cfg.data.dataset,
                "num_train_samples": trainer.info.get("num_train_samples"),
                "num_val_samples": trainer.info.get("num_val_samples"),
                "train_fingerprint": trainer.info.get("train_fingerprint"),
                "val_fingerprint": trainer.info.get("val_fingerprint"),
                "train_val_overlap": trainer.info.get("train_val_overlap"),
                **({"source": trainer.info["source"]} if trainer.info.get("source") else {}),
            },
            "tags": list(cfg.tracking.tags),
            "notes": cfg.tracking.notes,
            "heartbeat_time": _now(),
            "heartbeat_interval_s": self.heartbeat_interval_s,
        }
        speed = {
            # training.compile: graph breaks and recompilations; filled in place after the first step,
            # so heartbeats and the final write show it (its keys never change).
            "compile": getattr(trainer, "compile_report", None),
            "activation_checkpointing_blocks": trainer.info.get("activation_checkpointing_blocks"),
            "fused_loss": bool(getattr(trainer, "fused_loss_active", False)),
        }
        self._facts["speed"] = speed
        self._write_facts()
        # Lines are written by a background thread: no disk I/O on the training thread.
        self._open_log()
        if cfg.monitoring.profile_data:
            self._save_profile(trainer)
        self._save_data_artifacts(trainer)
        self._write({"type": "start", "run_id": run_id})

    def _save_data_artifacts(self, trainer: Any) -> None:
        """File data: the fitted preprocessing (preprocessing.json) and the tokenizer (tokenizer/), which
        serving needs to see inputs exactly as training did."""
        folder = Path(str(self.path))
        if trainer.info.get("preprocessing"):
            atomic_write_json(folder / "preprocessing.json", trainer.info["preprocessing"])
        tokenizer = getattr(getattr(trainer.train_loader, "dataset", None), "tokenizer", None)
        if tokenizer is not None and hasattr(tokenizer, "save"):
            tokenizer.save(folder / "tokenizer")

    def _save_profile(self, trainer: Any) -> None:
        """Profile the training data for later drift comparisons (streams are skipped)."""
        from torch.utils.data import IterableDataset

        from trainengine.probes import profile_dataset

        dataset = getattr(trainer.train_loader, "dataset", None)
        if dataset is None or isinstance(dataset, IterableDataset):
            return
        try:
            profile_dataset(dataset, trainer.task_spec, max_items=2000).save(Path(str(self.path)) / "data_profile.json")
        except Exception as exc:  # noqa: BLE001 - a profile is a convenience, never a reason to fail a run
            logger.warning("could not profile the training data: %s", exc)

    def _reopen(self, trainer: Any, path: Path) -> None:
        """Continue a resumed run in its own directory: same run.json, appended logs."""
        self._own(path)  # first: a run another process is training is not touched at all
        trainer.run_dir = path
        self._facts = json.loads((path / "run.json").read_text(encoding="utf-8"))
        resumes = self._facts.setdefault("resumes", [])
        resumes.append({"time": _now(), "checkpoint": str(trainer.resume_from), "step": trainer.state.step})
        self._facts.update(
            status="running", end_time=None, heartbeat_time=_now(), heartbeat_interval_s=self.heartbeat_interval_s
        )
        self._facts.pop("error", None)
        resolved = trainer.config.to_dict()
        resolved["tracking"]["run_name"] = None
        config_path = path / "config.yaml"
        text = (
            f"# Resolved config of run {self._facts.get('experiment')}/{self._facts.get('run_id')} (resumed). "
            f"Re-run: trainengine train --config {config_path}\n" + yaml.safe_dump(resolved, sort_keys=False)
        )
        if config_path.is_file() and load_yaml(config_path.read_text(encoding="utf-8")) != resolved:
            # The resumed run changed the config: keep what ran before, next to what runs now.
            os.replace(config_path, path / f"config.before-resume-{len(resumes)}.yaml")
        atomic_write_text(config_path, text)
        self._write_facts()
        self._open_log()
        self._write({"type": "resume", "checkpoint": str(trainer.resume_from), "step": trainer.state.step})

    def on_log(self, trainer: Any, record: dict[str, Any]) -> None:
        self._write(record)

    def on_train_end(self, trainer: Any, results: dict[str, Any]) -> None:
        if self.path is None:
            return
        if trainer.config.checkpointing.save_final_weights:
            save_weights(
                getattr(trainer, "full_weights", None) or trainer.model,  # FSDP2: gathered whole
                self.path / _WEIGHTS,
                metadata={"run_id": self._facts["run_id"], "step": str(trainer.state.step)},
            )
        summary = {k: v for k, v in results.items() if k != "history"}
        summary["run_dir"] = str(self.path)
        summary.update(checkpoint_paths(trainer))
        status = "pruned" if results.get("stop_reason") == "pruned" else "completed"  # a tuning trial's pruner
        self._write({"type": "end", "status": status, **_jsonable(summary)})
        self._finish(status, results=summary)

    def on_exception(self, trainer: Any, exc: BaseException) -> None:
        if self.path is None:
            return  # the directory was never ours (not created, or owned by another process)
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        reason = f"{type(exc).__name__}: {exc}"
        try:
            self._write({"type": "end", "status": status, "error": reason, "step": trainer.state.step})
            self._finish(status, error=reason, step=trainer.state.step)
        except OSError as err:
            # The disk that failed the run may fail its record too: one line, not a second traceback.
            logger.warning("could not record the %s run in %s: %s", status, self.path, err)
        finally:
            self._release()

    # -- helpers -------------------------------------------------------------------------------
    def _own(self, path: Path) -> None:
        """Take the run directory's lock; only then is the directory this callback's to write."""
        lock = RunDirLock(path)
        lock.acquire()
        self._lock, self.path = lock, path

    def _release(self) -> None:
        if self._log is not None:
            log, self._log = self._log, None
            with contextlib.suppress(OSError):  # on_exception: the run's own error is the one to report
                log.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _open_log(self) -> None:
        assert self.path is not None
        self._log = JsonlWriter(
            self.path / "logs.jsonl", heartbeat=self._heartbeat, heartbeat_s=self.heartbeat_interval_s
        )

    def _write_facts(self, facts: dict[str, Any] | None = None) -> None:
        assert self.path is not None
        atomic_write_json(self.path / "run.json", self._facts if facts is None else facts)

    def _heartbeat(self) -> None:
        """Runs on the log writer's thread: refresh ``heartbeat_time`` in run.json."""
        facts = dict(self._facts, heartbeat_time=_now())
        try:
            self._write_facts(facts)
        except OSError as exc:
            if not self._heartbeat_failed:  # once: a full disk must not flood the log
                self._heartbeat_failed = True
                logger.warning("could not write the heartbeat of %s: %s", self.path, exc)

    def _write(self, record: dict[str, Any]) -> None:
        if self._log is not None:
            # Evaluations and lifecycle records go out at once; step records ride in batches.
            self._log.write(
                {"time": _now(), **_jsonable(record)}, urgent=record.get("type") not in ("train", "gradient")
            )

    def _finish(self, status: str, **fields: Any) -> None:
        # The writer thread (and its heartbeat) stops first, so the final run.json is the last word.
        if self._log is not None:
            log, self._log = self._log, None
            log.close()
        self._facts.update(status=status, end_time=_now(), heartbeat_time=_now(), **_jsonable(fields))
        self._write_facts()
        self._release()


def checkpoint_paths(trainer: Any) -> dict[str, str | None]:
    """``last_checkpoint`` / ``best_checkpoint`` from the trainer's checkpointer (None without one).

    Read from the component that wrote them, not from a results dict another callback fills in.
    """
    ckpt = getattr(trainer, "checkpointer", None)
    last = ckpt.last_path if ckpt is not None else None
    best = ckpt.best_path if ckpt is not None else None
    return {"last_checkpoint": str(last) if last else None, "best_checkpoint": str(best) if best else None}


def save_weights(model: Any, path: Path, metadata: dict[str, str] | None = None) -> Path:
    """Save a model's weights (or a state dict of whole tensors) as safetensors, handling tied weights
    and compiled wrappers."""
    from safetensors.torch import save_file, save_model

    tmp = path.with_name(f".{path.name}.tmp")
    if isinstance(model, dict):
        save_file({k: v.contiguous() for k, v in model.items()}, str(tmp), metadata=metadata)
    else:
        module = getattr(model, "_orig_mod", model)  # torch.compile wrapper
        module = getattr(module, "module", module)  # DDP wrapper
        save_model(module, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    return path


def _jsonable(value: Any) -> Any:
    """Floats stay floats (NaN/inf as strings would break readers: JSON allows neither, so use null)."""
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return str(value)
