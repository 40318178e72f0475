"""CheckpointManager: when to save, atomic saves (sync or async), best-k / last-n pruning, discovery.

Why one module of this length: the CheckpointManager is one public class of the seed API (save /
save_async / pruning / discovery / list / verify / read / load_checkpoint); the format itself lives
in _format/_write/_load.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from trainengine._io import atomic_write_text
from trainengine.checkpoint._async import AsyncSave
from trainengine.checkpoint._format import (
    CHECKPOINT_NAME_RE,
    MANIFEST_FILE,
    META_FILE,
    REPLACED_PREFIX,
    TMP_PREFIX,
    TRASH_PREFIX,
    CheckpointMetadata,
    LoadedCheckpoint,
    checkpoint_name,
    read_checkpoint,
    verify_checkpoint,
)
from trainengine.checkpoint._fs import fsync_dir, remove_tree, writer_lock
from trainengine.checkpoint._load import load_checkpoint
from trainengine.checkpoint._optim_state import named_optimizer_state
from trainengine.checkpoint._write import Payload, materialize, prepare, stage, write_checkpoint
from trainengine.errors import CheckpointError, ConfigError

__all__ = ["CheckpointManager", "CheckpointInfo", "EMERGENCY_TAG"]

logger = logging.getLogger("trainengine")

EMERGENCY_TAG = "emergency"
INDEX_FILE = "index.json"
_CKPT_RE = CHECKPOINT_NAME_RE
_SPLITS = ("train", "val", "test")


@dataclass
class CheckpointInfo:
    """One checkpoint folder as the manager sees it.

    Attributes:
        path: The ``ckpt-*`` folder.
        name: Its folder name.
        step: Optimizer step (from the folder name).
        epoch: Epoch from ``meta.json`` (None when unreadable).
        metrics: Metrics saved with it.
        metric: The monitored metric (None when absent or not finite: never counts as best).
        size_bytes: Total size of its files.
        tags: Labels such as ``"emergency"``.
        is_best: It holds the best monitored metric.
        is_latest: It is the newest complete checkpoint.
        complete: ``manifest.json`` and ``meta.json`` are present and readable (a cheap
            check; :meth:`CheckpointManager.verify` checks every byte).
        timestamp: When it was saved.
    """

    path: Path
    name: str
    step: int
    epoch: int | None
    metrics: dict[str, float]
    metric: float | None
    size_bytes: int
    tags: list[str] = field(default_factory=list)
    is_best: bool = False
    is_latest: bool = False
    complete: bool = True
    timestamp: str | None = None


class CheckpointManager:
    """Saves, prunes, finds and loads checkpoints in one folder.

    One process writes to a folder at a time (rank zero); readers may be many. Each save is a
    ``ckpt-<step:09d>/`` folder written atomically (see :mod:`trainengine.checkpoint`). After
    every save the folder is pruned to the union of the ``keep_best_k`` best checkpoints by
    ``monitor`` and the ``keep_last_n`` newest; the best and the newest are never deleted, and an
    ``"emergency"`` checkpoint stays until a newer normal one exists. A manager opened on an
    existing folder discovers what is there (the folders are the truth; ``index.json`` is a cache
    for people and tools) and removes leftovers of interrupted writes.

    Args:
        checkpoint_dir: Folder holding the checkpoints (created if missing).
        keep_best_k: How many best checkpoints to keep (0: none kept for their metric).
        keep_last_n: How many newest checkpoints to keep (the newest is always kept).
        save_interval_epochs: :meth:`should_save` is true after every N-th epoch.
        save_interval_steps: :meth:`should_save` is true every N optimizer steps.
        monitor: Metric that ranks checkpoints; ``"val_loss"`` and ``"val/loss"`` mean the same.
        mode: ``"min"`` when lower is better, ``"max"`` when higher is better.
        read_only: Only list, verify and read (``trainengine checkpoints list|verify``): the
            folder must exist, and nothing in it is created, cleaned up or rewritten (no
            ``index.json``, no lock file); saving and pruning are refused.

    Raises:
        ConfigError: An argument is out of range.
        CheckpointError: The folder cannot be created.

    Example:
        >>> import tempfile, torch
        >>> manager = CheckpointManager(tempfile.mkdtemp(), keep_best_k=1, keep_last_n=1)
        >>> model = torch.nn.Linear(2, 1)
        >>> for step, loss in [(10, 0.5), (20, 0.7), (30, 0.9)]:
        ...     _ = manager.save(step=step, epoch=0, model=model, metrics={"val/loss": loss})
        >>> [c.step for c in manager.list_checkpoints()]  # the best (10) and the newest (30)
        [10, 30]
        >>> manager.load_checkpoint(manager.get_best_checkpoint(), model).metrics
        {'val/loss': 0.5}
    """

    def __init__(
        self,
        checkpoint_dir: str | os.PathLike[str],
        keep_best_k: int = 3,
        keep_last_n: int = 5,
        save_interval_epochs: int | None = None,
        save_interval_steps: int | None = None,
        monitor: str = "val_loss",
        mode: Literal["min", "max"] = "min",
        *,
        read_only: bool = False,
        folder_name: Literal["ckpt", "checkpoint_step"] = "ckpt",
    ) -> None:
        problems = []
        for name, value, low in (("keep_best_k", keep_best_k, 0), ("keep_last_n", keep_last_n, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                problems.append(f"{name}: must be an int >= {low}, got {value!r}")
        for name, interval in (
            ("save_interval_epochs", save_interval_epochs),
            ("save_interval_steps", save_interval_steps),
        ):
            if interval is not None and (isinstance(interval, bool) or not isinstance(interval, int) or interval < 1):
                problems.append(f"{name}: must be None or an int >= 1, got {interval!r}")
        if mode not in ("min", "max"):
            problems.append(f"mode: must be 'min' or 'max', got {mode!r}")
        if folder_name not in ("ckpt", "checkpoint_step"):
            problems.append(f"folder_name: must be 'ckpt' or 'checkpoint_step', got {folder_name!r}")
        if not isinstance(monitor, str) or not monitor:
            problems.append(f"monitor: must be a metric name such as 'val/loss', got {monitor!r}")
        if problems:
            raise ConfigError(problems, prefix="invalid CheckpointManager arguments")
        self.checkpoint_dir = Path(checkpoint_dir)
        self.folder_name = folder_name
        self.keep_best_k = keep_best_k
        self.keep_last_n = keep_last_n
        self.save_interval_epochs = save_interval_epochs
        self.save_interval_steps = save_interval_steps
        self.monitor, self._monitor_spellings = _canonical_monitor(monitor)
        self.mode: Literal["min", "max"] = mode
        self._lock = threading.RLock()
        self._pending: AsyncSave | None = None
        self._thread: threading.Thread | None = None
        self._buffers: dict[str, dict[str, torch.Tensor]] = {"model": {}, "state": {}}
        self.read_only = read_only
        if read_only:
            if not self.checkpoint_dir.is_dir():
                raise CheckpointError(f"checkpoint folder {self.checkpoint_dir} does not exist (or is not a folder)")
            return
        try:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointError(
                f"cannot create checkpoint folder {self.checkpoint_dir}: {exc.strerror or exc}"
            ) from exc
        try:
            self._clean_leftovers()
        except OSError as exc:  # e.g. a read-only folder opened only to read checkpoints
            logger.warning("could not clean up leftovers in %s: %s", self.checkpoint_dir, exc)
        self._sync_index(only_if_stale=True)

    # ------------------------------------------------------------------ saving

    def should_save(self, *, step: int | None = None, epoch_end: int | None = None) -> bool:
        """Whether the configured intervals ask for a save now.

        Args:
            step: Optimizer steps done (true when a positive multiple of ``save_interval_steps``).
            epoch_end: The 0-based epoch that just ended (true after every
                ``save_interval_epochs``-th epoch).
        """
        if step is not None and self.save_interval_steps and step > 0 and step % self.save_interval_steps == 0:
            return True
        return bool(
            epoch_end is not None and self.save_interval_epochs and (epoch_end + 1) % self.save_interval_epochs == 0
        )

    def save(
        self,
        *,
        step: int,
        epoch: int,
        model: nn.Module | Mapping[str, torch.Tensor] | None = None,
        state: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        meta: Mapping[str, Any] | None = None,
        tags: list[str] | tuple[str, ...] = (),
    ) -> Path:
        """Write a checkpoint now (atomically), then prune; returns its folder.

        Args:
            step: Optimizer steps done; names the folder (re-saving a step replaces it safely).
            epoch: Current epoch.
            model: The model (its ``state_dict`` under canonical keys) or a state dict.
            state: Everything else to restore, e.g. ``{"optimizer": opt, "scheduler": ...,
                "scaler": ..., "rng": ...}``; see :func:`flatten_state` for what it may hold.
                An optimizer object (with ``model`` a module) is saved as
                :func:`~trainengine.checkpoint.named_optimizer_state`, which lets
                :meth:`load_checkpoint` match its state by parameter name into any group
                layout; a plain ``opt.state_dict()`` loads only into the same layout.
                :meth:`load_checkpoint` restores the ``optimizer``, ``scheduler`` and
                ``scaler`` entries.
            metrics: Metrics at this point (the monitored one ranks the checkpoint).
            meta: JSON-able facts to keep (``git_commit``, ``config``, ...).
            tags: Labels; ``"emergency"`` protects it until a newer normal checkpoint exists.

        Raises:
            CheckpointError: The write failed (disk full, permissions, unsupported state);
                earlier checkpoints are intact. Also raised for an earlier asynchronous save
                whose failure nobody has seen yet.
        """
        self._refuse_if_read_only("save a checkpoint")
        self._finish_pending()
        payload = prepare(
            step=step, epoch=epoch, model=model, state=_named(state, model), metrics=metrics, meta=meta, tags=tags
        )
        if payload.model is not None:
            payload.model = materialize(payload.model)
        payload.state = materialize(payload.state)
        return self._write(payload)

    def save_async(
        self,
        *,
        step: int,
        epoch: int,
        model: nn.Module | Mapping[str, torch.Tensor] | None = None,
        state: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        meta: Mapping[str, Any] | None = None,
        tags: list[str] | tuple[str, ...] = (),
    ) -> AsyncSave:
        """Like :meth:`save`, but only the copy to CPU memory happens on the calling thread.

        The previous asynchronous save is waited for first (one write in flight). The copy
        goes into CPU buffers kept from the previous save, so after the first save it is a
        plain memcpy; the handle's ``stall_seconds`` is its duration. Training may change the
        model and optimizer as soon as this returns.

        Returns:
            A handle: ``wait()`` returns the path or raises the write's error.

        Raises:
            CheckpointError: The state cannot be stored, or the previous asynchronous save
                failed and nobody called its ``wait()``.
        """
        self._refuse_if_read_only("save a checkpoint")
        t0 = time.perf_counter()
        self._finish_pending()
        t1 = time.perf_counter()
        payload = prepare(
            step=step, epoch=epoch, model=model, state=_named(state, model), metrics=metrics, meta=meta, tags=tags
        )
        if payload.model is not None:
            payload.model = stage(payload.model, self._buffers["model"])
        payload.state = stage(payload.state, self._buffers["state"])
        handle = AsyncSave(step, self.checkpoint_dir / checkpoint_name(step, self.folder_name))
        handle.blocked_seconds = t1 - t0
        handle.stall_seconds = time.perf_counter() - t1

        def run() -> None:
            start = time.perf_counter()
            try:
                self._write(payload)
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits
                handle._error = (
                    exc
                    if isinstance(exc, CheckpointError)
                    else CheckpointError(f"asynchronous save of step {step} failed: {exc!r}")
                )
                if not isinstance(exc, CheckpointError):
                    handle._error.__cause__ = exc
            finally:
                handle.write_seconds = time.perf_counter() - start
                handle._done.set()

        self._pending = handle
        self._thread = threading.Thread(target=run, name=f"trainengine-ckpt-{step}", daemon=True)
        self._thread.start()
        return handle

    def wait(self) -> Path | None:
        """Wait for the asynchronous save in flight, if any; return its path.

        Raises:
            CheckpointError: That save failed.
        """
        handle = self._pending
        if handle is None:
            return None
        self._join()
        return handle.wait()

    def close(self) -> None:
        """Wait for every write and free the copy buffers.

        Raises:
            CheckpointError: An asynchronous save failed and nobody has seen its error.
        """
        try:
            self._finish_pending()
        finally:
            self._buffers = {"model": {}, "state": {}}

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _join(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _finish_pending(self) -> None:
        handle = self._pending
        if handle is None:
            return
        self._join()
        self._pending = None
        if handle._error is not None and not handle._observed:
            handle._observed = True
            raise CheckpointError(
                f"the previous asynchronous save (step {handle.step}) failed: {handle._error}"
            ) from handle._error

    def _refuse_if_read_only(self, what: str) -> None:
        if self.read_only:
            raise CheckpointError(
                f"cannot {what} in {self.checkpoint_dir}: this CheckpointManager was opened with read_only=True"
            )

    def complete(
        self,
        tmp: Path,
        *,
        written: Mapping[str, dict[str, Any]],
        state_extra: Mapping[str, Any],
        step: int,
        epoch: int,
        state: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        meta: Mapping[str, Any] | None = None,
        tags: list[str] | tuple[str, ...] = (),
    ) -> Path:
        """Finish a checkpoint whose large files other processes already wrote into ``tmp``, then prune.

        A sharded (FSDP2) save: every rank wrote its shards into the temporary folder ``tmp``;
        this writes the rest of the state, the metadata and the manifest (listing ``written``
        with their sizes and hashes), and renames the folder into place like :meth:`save`.

        Raises:
            CheckpointError: The write failed; ``tmp`` is removed, earlier checkpoints are intact.
        """
        self._refuse_if_read_only("save a checkpoint")
        self._finish_pending()
        payload = prepare(step=step, epoch=epoch, model=None, state=state, metrics=metrics, meta=meta, tags=tags)
        payload.state = materialize(payload.state)
        return self._write(payload, tmp=tmp, written=written, state_extra=state_extra)

    def _write(self, payload: Payload, **sharded: Any) -> Path:
        with writer_lock(self.checkpoint_dir, blocking=True):
            name = checkpoint_name(payload.step, self.folder_name)
            path = write_checkpoint(self.checkpoint_dir, payload, publish_lock=self._lock, name=name, **sharded)
            with self._lock:
                try:
                    self.prune()
                except OSError as exc:  # the checkpoint is safe; failing to tidy up must not lose it
                    logger.warning("checkpoint %s written, but pruning old checkpoints failed: %s", path, exc)
            return path

    # ------------------------------------------------------------------ pruning

    def prune(self) -> list[Path]:
        """Delete checkpoints outside best-k ∪ last-n (never the best or the newest); return them.

        Folders without a readable manifest are left alone: they are damaged, not ours to
        judge, and :meth:`verify` reports them.
        """
        self._refuse_if_read_only("prune checkpoints")
        with self._lock:
            infos = self.list_checkpoints(include_invalid=True)
            keep = self._keep(infos)
            deleted = []
            for info in infos:
                if info.name in keep or not info.complete:
                    continue
                # Rename first: a crash during rmtree leaves a .trash-* folder (removed on the
                # next start), never a half-deleted folder with a checkpoint's name.
                trash = self.checkpoint_dir / f"{TRASH_PREFIX}{info.name}-{secrets.token_hex(4)}"
                try:
                    os.replace(info.path, trash)
                except FileNotFoundError:
                    continue
                fsync_dir(self.checkpoint_dir)
                remove_tree(trash)
                deleted.append(info.path)
            self._write_index()
            return deleted

    def _keep(self, infos: list[CheckpointInfo]) -> set[str]:
        complete = [i for i in infos if i.complete]
        keep: set[str] = set()
        if self.keep_last_n:
            keep |= {i.name for i in complete[-self.keep_last_n :]}
        if complete:
            keep.add(complete[-1].name)  # the newest, whatever keep_last_n says
        ranked = self._ranked(complete)
        keep |= {i.name for i in ranked[: self.keep_best_k]}
        if ranked:
            keep.add(ranked[0].name)  # the best, whatever keep_best_k says
        newest_normal = max((i.step for i in complete if EMERGENCY_TAG not in i.tags), default=-1)
        keep |= {i.name for i in complete if EMERGENCY_TAG in i.tags and i.step > newest_normal}
        return keep

    def _ranked(self, infos: list[CheckpointInfo]) -> list[CheckpointInfo]:
        scored = [(i.metric, i) for i in infos if i.metric is not None]
        sign = 1.0 if self.mode == "min" else -1.0
        # On a tie the earlier checkpoint ranks first: it reached the value first.
        return [i for _, i in sorted(scored, key=lambda s: (sign * s[0], s[1].step))]

    # ------------------------------------------------------------------ discovery

    def list_checkpoints(self, *, include_invalid: bool = False) -> list[CheckpointInfo]:
        """Checkpoint folders on disk, sorted by step, with best / latest flags.

        Args:
            include_invalid: Also list ``ckpt-*`` folders without a readable manifest and
                ``meta.json`` (damaged; ``complete`` is False). Only a cheap check: a complete
                folder can still fail :meth:`verify`.
        """
        with self._lock:
            infos = [self._info(p, int(m.group(1))) for p in self._folders() if (m := _CKPT_RE.fullmatch(p.name))]
        if not include_invalid:
            infos = [i for i in infos if i.complete]
        infos.sort(key=lambda i: i.step)
        complete = [i for i in infos if i.complete]
        if complete:
            complete[-1].is_latest = True
        ranked = self._ranked(complete)
        if ranked:
            ranked[0].is_best = True
        return infos

    def get_latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint (cheap check; see :meth:`get_latest_valid_checkpoint`)."""
        return next((i.path for i in self.list_checkpoints() if i.is_latest), None)

    def get_best_checkpoint(self) -> Path | None:
        """The checkpoint with the best monitored metric; None when none has that metric."""
        return next((i.path for i in self.list_checkpoints() if i.is_best), None)

    def get_latest_valid_checkpoint(self) -> tuple[Path | None, list[tuple[Path, str]]]:
        """The newest checkpoint that passes :meth:`verify`, and the newer ones that did not.

        Waits for an asynchronous write in flight first (its error stays for ``wait()``), and
        reads every byte of each checkpoint it checks.

        Returns:
            ``(path or None, [(skipped_path, "problem; problem"), ...])`` newest first.
        """
        self.wait_quietly()
        skipped: list[tuple[Path, str]] = []
        for info in reversed(self.list_checkpoints(include_invalid=True)):
            problems = verify_checkpoint(info.path)
            if not problems:
                return info.path, skipped
            skipped.append((info.path, "; ".join(problems)))
        return None, skipped

    def wait_quietly(self) -> None:
        """Wait for a write in flight without raising its error (it stays for ``wait()``/``close()``)."""
        self._join()

    def _folders(self) -> list[Path]:
        try:
            return [p for p in self.checkpoint_dir.iterdir() if p.is_dir()]
        except FileNotFoundError:
            return []

    def _info(self, path: Path, step: int) -> CheckpointInfo:
        files = [f for f in path.iterdir() if f.is_file()] if path.is_dir() else []
        size = sum(f.stat().st_size for f in files)
        try:
            doc = json.loads((path / META_FILE).read_bytes())
            epoch, tags, timestamp = int(doc["epoch"]), [str(t) for t in doc.get("tags") or []], doc.get("timestamp")
            metrics = {str(k): float(v) for k, v in (doc.get("metrics") or {}).items()}
            readable = True
        except (OSError, ValueError, KeyError, TypeError):
            epoch, tags, timestamp, metrics, readable = None, [], None, {}, False
        return CheckpointInfo(
            path=path,
            name=path.name,
            step=step,
            epoch=epoch,
            metrics=metrics,
            metric=self._monitored(metrics),
            size_bytes=size,
            tags=tags,
            complete=readable and (path / MANIFEST_FILE).is_file(),
            timestamp=timestamp,
        )

    def _monitored(self, metrics: Mapping[str, float]) -> float | None:
        for key in self._monitor_spellings:
            if key in metrics:
                value = float(metrics[key])
                return value if math.isfinite(value) else None
        return None

    def _clean_leftovers(self) -> None:
        """Remove what interrupted writes and deletions left behind (not while a writer is active)."""
        with writer_lock(self.checkpoint_dir, blocking=False) as alone:
            if alone:
                self._clean_leftovers_locked()
            else:
                logger.info(
                    "a checkpoint write is in progress in %s: leaving its temporary folder alone", self.checkpoint_dir
                )

    def _clean_leftovers_locked(self) -> None:
        for p in list(self.checkpoint_dir.iterdir()):
            name = p.name
            if name.startswith(REPLACED_PREFIX):
                # A re-save of the same step moved the old checkpoint aside and crashed before
                # the new one took its name: put the old one back.
                original = self.checkpoint_dir / name[len(REPLACED_PREFIX) :].rsplit("-", 1)[0]
                if not original.exists() and (p / MANIFEST_FILE).is_file():
                    os.replace(p, original)
                    logger.warning("restored checkpoint %s after an interrupted re-save", original)
                    continue
            if name.startswith((TMP_PREFIX, TRASH_PREFIX)):
                logger.info("removing leftover of an interrupted checkpoint write: %s", p)
                remove_tree(p)
            elif name.startswith(f".{INDEX_FILE}.") and name.endswith(".tmp"):
                p.unlink(missing_ok=True)
        fsync_dir(self.checkpoint_dir)

    # ------------------------------------------------------------------ index.json

    def _index_entries(self, infos: list[CheckpointInfo]) -> list[dict[str, Any]]:
        return [
            {
                "name": i.name,
                "step": i.step,
                "epoch": i.epoch,
                "metric": i.metric,
                "metrics": {k: _json_float(v) for k, v in i.metrics.items()},
                "tags": i.tags,
                "size_bytes": i.size_bytes,
                "complete": i.complete,
                "is_best": i.is_best,
                "is_latest": i.is_latest,
            }
            for i in infos
        ]

    def _write_index(self) -> None:
        infos = self.list_checkpoints(include_invalid=True)
        doc = {
            "format_version": 1,
            "monitor": self.monitor,
            "mode": self.mode,
            "checkpoints": self._index_entries(infos),
        }
        try:
            atomic_write_text(self.checkpoint_dir / INDEX_FILE, json.dumps(doc, indent=2, allow_nan=False) + "\n")
        except OSError as exc:  # a cache: the folders stay the truth
            logger.warning("could not update %s: %s", self.checkpoint_dir / INDEX_FILE, exc)

    def _sync_index(self, *, only_if_stale: bool) -> None:
        """Rewrite index.json when it is missing or disagrees with the folders on disk."""
        if only_if_stale:
            try:
                doc = json.loads((self.checkpoint_dir / INDEX_FILE).read_bytes())
                cached = [
                    (e["name"], e["step"], e["size_bytes"], e["complete"], e["epoch"]) for e in doc["checkpoints"]
                ]
            except (OSError, ValueError, KeyError, TypeError):
                cached = None
            disk = [
                (i.name, i.step, i.size_bytes, i.complete, i.epoch) for i in self.list_checkpoints(include_invalid=True)
            ]
            if cached == disk:
                return
            if cached is not None or disk:
                logger.info("rebuilding %s from the checkpoint folders", self.checkpoint_dir / INDEX_FILE)
            if cached is None and not disk:
                return  # empty folder, nothing to index yet
        self._write_index()

    # ------------------------------------------------------------------ reading

    def _resolve(self, path: str | os.PathLike[str]) -> Path:
        p = Path(path)
        if not p.exists() and not p.is_absolute() and (self.checkpoint_dir / p).exists():
            return self.checkpoint_dir / p
        return p

    def verify(self, path: str | os.PathLike[str]) -> list[str]:
        """Problems of a checkpoint (``[]`` = intact): missing manifest, missing or extra files,
        size or SHA-256 mismatches, unreadable JSON, an unsupported format_version, a file that
        is not safetensors (e.g. a planted pickle)."""
        return verify_checkpoint(self._resolve(path))

    def read(
        self, path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu", verify: bool = True
    ) -> LoadedCheckpoint:
        """Verify and read a checkpoint (safetensors and JSON only; pickles are refused).

        Raises:
            CheckpointError: It is corrupt or incomplete; the message names the file and problem.
        """
        return read_checkpoint(self._resolve(path), map_location=map_location, verify=verify)

    def load_checkpoint(
        self,
        path: str | os.PathLike[str],
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        scaler: Any = None,
        *,
        strict: bool = True,
        map_location: str | torch.device = "cpu",
    ) -> CheckpointMetadata:
        """Load a checkpoint into a model (plain, compiled or DDP) and, if given, optimizer,
        scheduler and grad scaler; returns its metadata (``.step``, ``.epoch``, ``.metrics``).

        The optimizer may group the parameters differently from the run that saved it (its
        state is matched by parameter name; its own group hyperparameters then stand); see
        :func:`~trainengine.checkpoint.load_checkpoint`.

        Raises:
            CheckpointError: Corrupt checkpoint, an optimizer over other parameters, a
                scheduler of another kind, or weights that do not fit the model.
        """
        return load_checkpoint(
            self._resolve(path), model, optimizer, scheduler, scaler, strict=strict, map_location=map_location
        )


def _named(state: Mapping[str, Any] | None, model: Any) -> Mapping[str, Any] | None:
    """Save an optimizer object as its state with parameter names (see named_optimizer_state)."""
    if state is None or not isinstance(state, Mapping) or not isinstance(state.get("optimizer"), torch.optim.Optimizer):
        return state
    if not isinstance(model, nn.Module):
        raise CheckpointError(
            "state['optimizer'] is an optimizer object: pass model= (the module) too, or save optimizer.state_dict()"
        )
    return {**state, "optimizer": named_optimizer_state(state["optimizer"], model)}


def _canonical_monitor(monitor: str) -> tuple[str, tuple[str, ...]]:
    """``"val_loss"`` -> ``("val/loss", ("val/loss", "val_loss"))``: both spellings match metrics."""
    if "/" in monitor:
        canonical = monitor
    else:
        split, _, rest = monitor.partition("_")
        canonical = f"{split}/{rest}" if split in _SPLITS and rest else monitor
    underscored = canonical.replace("/", "_", 1)
    return canonical, tuple(dict.fromkeys((canonical, underscored, monitor)))


def _json_float(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)
