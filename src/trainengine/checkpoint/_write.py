"""Writing one checkpoint: prepare the payload, copy tensors, write a temp folder, rename it in."""

from __future__ import annotations

import functools
import json
import math
import os
import secrets
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

from trainengine.checkpoint._flatten import flatten_state
from trainengine.checkpoint._format import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    META_FILE,
    MODEL_FILE,
    REPLACED_PREFIX,
    STATE_FILE,
    STATE_JSON,
    TMP_PREFIX,
    checkpoint_name,
)
from trainengine.checkpoint._fs import fsync_and_hash, fsync_dir, remove_tree, write_bytes_durably
from trainengine.checkpoint._keys import checkpoint_weights, model_tensors
from trainengine.errors import CheckpointError

__all__ = ["Payload", "prepare", "materialize", "stage", "write_checkpoint"]


@dataclass
class Payload:
    """Everything one save writes, with tensors not yet copied (see :func:`stage`)."""

    step: int
    epoch: int
    model: dict[str, torch.Tensor] | None
    aliases: dict[str, str]
    state: dict[str, torch.Tensor]
    skeleton: Any
    meta: dict[str, Any]
    tags: list[str]
    metrics: dict[str, float]


def prepare(
    *,
    step: int,
    epoch: int,
    model: nn.Module | Mapping[str, torch.Tensor] | None,
    state: Mapping[str, Any] | None,
    metrics: Mapping[str, Any] | None,
    meta: Mapping[str, Any] | None,
    tags: Any,
) -> Payload:
    """Validate the arguments of a save and split the state; copies no tensor data."""
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"step must be a non-negative int, got {step!r}")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise CheckpointError(f"epoch must be a non-negative int, got {epoch!r}")
    if isinstance(tags, str):
        tags = [tags]
    tag_list = [str(t) for t in tags]
    for t in tag_list:
        if not t or any(c.isspace() for c in t):
            raise CheckpointError(f"invalid checkpoint tag {t!r}: use a non-empty word such as 'emergency'")
    clean_metrics: dict[str, float] = {}
    for key, value in (metrics or {}).items():
        try:
            clean_metrics[str(key)] = float(value)
        except (TypeError, ValueError):
            raise CheckpointError(f"metric '{key}' must be a number, got {type(value).__name__} {value!r}") from None
    if state is not None and not isinstance(state, Mapping):
        raise CheckpointError(f"state must be a dict, got {type(state).__name__}")
    # checkpoint_weights: a model's checkpoint_state_dict() subset (LoRA adapters + head) when it has one.
    weights, aliases = model_tensors(checkpoint_weights(model)) if model is not None else (None, {})
    tensors, skeleton = flatten_state(dict(state or {}))
    return Payload(step, epoch, weights, aliases, tensors, skeleton, dict(meta or {}), tag_list, clean_metrics)


def materialize(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tensors safetensors can write: on CPU, contiguous, no two sharing memory; copies only those that are not."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, t in tensors.items():
        if t.device.type != "cpu":
            t = t.cpu()
        elif not t.is_contiguous():
            t = t.contiguous()
        ptr = t.untyped_storage().data_ptr() if t.numel() else 0
        if ptr and ptr in seen:
            t = t.clone()  # shares memory with an earlier entry (a view, a tied slot): store its own copy
        elif ptr:
            seen.add(ptr)
        out[key] = t
    return out


def stage(tensors: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copy every tensor into a CPU buffer (reused from the previous save when shapes match).

    Reusing buffers keeps the copy a plain memcpy into warm pages: a fresh allocation would
    page-fault on first touch and can cost more than the copy itself. GPU tensors go through
    pinned memory with one synchronize at the end.
    """
    out: dict[str, torch.Tensor] = {}
    on_gpu = False
    for key, t in tensors.items():
        buf = buffers.get(key)
        pin = t.device.type == "cuda"
        if buf is None or buf.shape != t.shape or buf.dtype != t.dtype or (pin and not buf.is_pinned()):
            buf = torch.empty(t.shape, dtype=t.dtype, pin_memory=pin)
            buffers[key] = buf
        buf.copy_(t, non_blocking=pin)
        on_gpu |= pin
        out[key] = buf
    for stale in set(buffers) - set(tensors):
        del buffers[stale]
    if on_gpu:
        torch.cuda.synchronize()
    return out


def write_checkpoint(
    checkpoint_dir: Path,
    payload: Payload,
    *,
    publish_lock: AbstractContextManager[Any] | None = None,
    name: str | None = None,
    tmp: Path | None = None,
    written: Mapping[str, dict[str, Any]] | None = None,
    state_extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``payload`` as ``<checkpoint_dir>/ckpt-<step>`` (or ``name``) atomically; return the folder.

    The files go to a hidden ``.tmp-ckpt-*`` folder first (each fsynced, ``manifest.json``
    last), the folder is fsynced and renamed into place, then the parent is fsynced. An
    existing checkpoint of the same step is renamed aside first and removed only once the new
    one is in place.

    Args:
        checkpoint_dir: The folder of checkpoints.
        payload: What to write (tensors on CPU, contiguous, not sharing memory).
        publish_lock: Held only around the final renames, so readers listing the folder wait
            for a few milliseconds at most, never for the whole write.
        name: The folder's name (:func:`checkpoint_name` of another style); None = ``ckpt-<step>``.
        tmp: A temporary folder that already holds files of this checkpoint (a sharded save's
            shards, written by every rank); None = a new one.
        written: ``{relative path: {"size", "sha256"}}`` of those files, listed in the manifest.
        state_extra: Entries added to ``state.json`` (a sharded checkpoint's ``sharded`` table).

    Raises:
        CheckpointError: Anything failed (disk full, permissions, ...); the temporary folder
            is removed and earlier checkpoints are untouched.
    """
    final = checkpoint_dir / (name or checkpoint_name(payload.step))
    fresh = tmp is None
    if tmp is None:
        tmp = checkpoint_dir / f"{TMP_PREFIX}{payload.step:09d}-{secrets.token_hex(4)}"
    try:
        if fresh:
            tmp.mkdir()
        files: dict[str, dict[str, Any]] = dict(written or {})
        if payload.model is not None:
            files[MODEL_FILE] = _save_tensors(tmp / MODEL_FILE, payload.model)
        files[STATE_FILE] = _save_tensors(tmp / STATE_FILE, payload.state)
        state_doc = {
            "format_version": FORMAT_VERSION,
            "skeleton": payload.skeleton,
            "model": {"file": MODEL_FILE if payload.model is not None else None, "aliases": payload.aliases},
            **(state_extra or {}),
        }
        files[STATE_JSON] = _write_bytes(tmp / STATE_JSON, _dumps(state_doc))
        files[META_FILE] = _write_bytes(tmp / META_FILE, _dumps(_meta_doc(payload), indent=2))
        manifest = {"format_version": FORMAT_VERSION, "step": payload.step, "files": files}
        _write_bytes(tmp / MANIFEST_FILE, _dumps(manifest, indent=2))  # last: its presence marks completion
        fsync_dir(tmp)
        with publish_lock or nullcontext():
            _publish(tmp, final)
    except BaseException as exc:
        remove_tree(tmp)
        if isinstance(exc, CheckpointError) or not isinstance(exc, Exception):
            raise
        raise CheckpointError(_write_failure(final, exc)) from exc
    return final


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    safetensors.torch.save_file(tensors, str(path), metadata={"format": "pt"})
    size, digest = fsync_and_hash(path)
    return {"size": size, "sha256": digest}


def _write_bytes(path: Path, data: bytes) -> dict[str, Any]:
    size, digest = write_bytes_durably(path, data)
    return {"size": size, "sha256": digest}


def _publish(tmp: Path, final: Path) -> None:
    parent = final.parent
    if final.exists():
        aside = parent / f"{REPLACED_PREFIX}{final.name}-{secrets.token_hex(4)}"
        os.replace(final, aside)
        try:
            os.replace(tmp, final)
        except BaseException:
            os.replace(aside, final)  # put the old one back: the caller reports the failure
            raise
        fsync_dir(parent)
        remove_tree(aside)
    else:
        os.replace(tmp, final)
        fsync_dir(parent)


def _write_failure(final: Path, exc: BaseException) -> str:
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc)
    else:
        text = str(exc)
        reason = next(
            (
                r
                for r in (
                    "No space left on device",
                    "Permission denied",
                    "Read-only file system",
                    "Disk quota exceeded",
                )
                if r in text
            ),
            text,
        )
    return (
        f"cannot write checkpoint {final}: {reason} — previous checkpoints are intact "
        f"(free disk space or fix permissions in {final.parent}, or set checkpointing.checkpoint_dir to another folder)"
    )


@functools.lru_cache(maxsize=1)
def _library_versions() -> dict[str, str]:
    from trainengine.provenance import library_versions

    return {**library_versions(), "safetensors": safetensors.__version__}


def _meta_doc(payload: Payload) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "step": payload.step,
        "epoch": payload.epoch,
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "tags": payload.tags,
        "metrics": {k: _json_float(v) for k, v in payload.metrics.items()},
        "library_versions": _library_versions(),
        "meta": _jsonable(payload.meta),
    }


def _json_float(value: float) -> float | str:
    # JSON has no NaN/inf; strings that float() parses back keep them without breaking readers.
    return value if math.isfinite(value) else str(value)


def _jsonable(value: Any) -> Any:
    """Informational metadata: JSON types as they are, tuples as lists, anything else as its str."""
    if isinstance(value, float):
        return _json_float(value)
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


def _dumps(doc: Any, indent: int | None = None) -> bytes:
    separators = None if indent else (",", ":")
    return (json.dumps(doc, indent=indent, separators=separators, allow_nan=False, ensure_ascii=False) + "\n").encode(
        "utf-8"
    )
