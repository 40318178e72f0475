"""One checkpoint folder: its layout, metadata, verification and reading (never unpickling).

See the package docstring (``trainengine.checkpoint``) for the layout and the guarantees; the
writing side is in ``_write.py``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from trainengine.checkpoint._flatten import unflatten_state
from trainengine.checkpoint._fs import hash_file
from trainengine.errors import CheckpointError

__all__ = [
    "FORMAT_VERSION",
    "CheckpointMetadata",
    "LoadedCheckpoint",
    "checkpoint_name",
    "is_checkpoint_name",
    "CHECKPOINT_NAME_RE",
    "verify_checkpoint",
    "read_checkpoint",
    "read_metadata",
    "sniff_safetensors",
]

FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
STATE_FILE = "state.safetensors"
STATE_JSON = "state.json"
META_FILE = "meta.json"
MANIFEST_FILE = "manifest.json"
CKPT_PREFIX = "ckpt-"
TMP_PREFIX = ".tmp-ckpt-"
TRASH_PREFIX = ".trash-"
REPLACED_PREFIX = ".trash-replaced-"  # an old checkpoint moved aside while the same step is re-saved

PICKLE_REFUSED = "pickle and torch.save files are refused because unpickling one can run arbitrary code"


#: The Hugging Face / seed 001 folder style: ``checkpoint_step_1200``.
STEP_PREFIX = "checkpoint_step_"
#: A checkpoint folder's name in either style; group 1 is the step.
CHECKPOINT_NAME_RE = re.compile(rf"(?:{re.escape(CKPT_PREFIX)}|{re.escape(STEP_PREFIX)})(\d+)")


def checkpoint_name(step: int, style: str = "ckpt") -> str:
    """Folder name of the checkpoint at ``step``: ``ckpt-000001200``, or ``checkpoint_step_1200``
    with ``style="checkpoint_step"`` (``checkpointing.folder_name``).

    Example:
        >>> checkpoint_name(1200), checkpoint_name(1200, "checkpoint_step")
        ('ckpt-000001200', 'checkpoint_step_1200')
    """
    if style == "checkpoint_step":
        return f"{STEP_PREFIX}{step}"
    return f"{CKPT_PREFIX}{step:09d}"


def is_checkpoint_name(name: str) -> bool:
    """Whether a folder name is a checkpoint's (either style).

    Example:
        >>> is_checkpoint_name("ckpt-000000010"), is_checkpoint_name("checkpoint_step_10"), is_checkpoint_name("x")
        (True, True, False)
    """
    return CHECKPOINT_NAME_RE.fullmatch(name) is not None


@dataclass
class CheckpointMetadata:
    """What a checkpoint says about itself (``meta.json``).

    Attributes:
        step: Optimizer steps done when it was saved.
        epoch: Epoch it was saved in.
        metrics: Metrics given at save time (NaN and infinities preserved).
        timestamp: ISO-8601 UTC time of the save.
        tags: Labels such as ``"emergency"``.
        path: The checkpoint folder.
        extra: Everything else: the ``meta`` dict given at save time (``git_commit``, ``config``,
            ...) plus ``library_versions``.
    """

    step: int
    epoch: int
    metrics: dict[str, float]
    timestamp: str
    tags: list[str]
    path: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def git_commit(self) -> str | None:
        return self.extra.get("git_commit")

    @property
    def config(self) -> dict[str, Any] | None:
        return self.extra.get("config")


@dataclass
class LoadedCheckpoint:
    """A checkpoint read into memory.

    Attributes:
        model_state: ``{canonical_key: tensor}`` on ``map_location`` (tied names share one
            tensor). On CPU these are memory-mapped from the file: load them into a model (which
            copies) rather than keeping them for long.
        state: The ``state`` dict given at save time, rebuilt exactly; its tensors are on CPU
            (``optimizer.load_state_dict`` moves them next to the parameters; RNG states must
            stay on CPU).
        meta: The checkpoint's metadata.
        sharded: A sharded (FSDP2) checkpoint's table from ``state.json`` (``world_size``, the
            optimizer's skeleton); None for a checkpoint written by one process.
    """

    model_state: dict[str, torch.Tensor]
    state: dict[str, Any]
    meta: CheckpointMetadata
    sharded: dict[str, Any] | None = None


# ----------------------------------------------------------------------------- verifying


def verify_checkpoint(path: str | os.PathLike[str], *, hashes: Mapping[str, str] | None = None) -> list[str]:
    """Check a checkpoint folder against its manifest, and each file's format.

    This one check serves ``trainengine checkpoints verify``, resuming, and registering a
    checkpoint in the model registry: sizes and SHA-256 against ``manifest.json``, no missing or
    unlisted files, JSON files that parse, and ``.safetensors`` files that are safetensors (a
    pickle planted under that name with a re-hashed manifest is still refused).

    Args:
        path: The ``ckpt-*`` folder.
        hashes: ``{file name: sha256}`` already computed from these very bytes (e.g. while copying
            them); those files are not read again. Files not in it are hashed here.

    Returns:
        Problems, one line each, file name first; ``[]`` means the checkpoint is intact.

    Example:
        >>> verify_checkpoint("/nonexistent/ckpt-000000001")
        ['/nonexistent/ckpt-000000001: not a checkpoint folder (missing or not a folder)']
    """
    path = Path(path)
    if not path.is_dir():
        return [f"{path}: not a checkpoint folder (missing or not a folder)"]
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        return [f"{MANIFEST_FILE}: missing — the checkpoint is incomplete (its write never finished) or was damaged"]
    try:
        manifest = json.loads(manifest_path.read_bytes())
    except (OSError, ValueError) as exc:
        return [f"{MANIFEST_FILE}: unreadable JSON ({exc})"]
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        return [f"{MANIFEST_FILE}: malformed (no 'files' table)"]
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        return [
            f"{MANIFEST_FILE}: unsupported format_version {version!r} (this trainengine reads {FORMAT_VERSION}); "
            "use the trainengine version that wrote it"
        ]
    listed: dict[str, Any] = manifest["files"]
    problems = [
        f"{name}: not listed in {MANIFEST_FILE}" for name in (STATE_FILE, STATE_JSON, META_FILE) if name not in listed
    ]
    present = {p.relative_to(path).as_posix() for p in path.rglob("*") if not p.is_dir()} - {MANIFEST_FILE}
    problems += [f"{name}: unexpected file, not listed in {MANIFEST_FILE}" for name in sorted(present - set(listed))]
    for name, entry in listed.items():
        problems += _verify_file(path, name, entry, (hashes or {}).get(name))
    return problems


def _verify_file(folder: Path, name: str, entry: Any, known_sha256: str | None = None) -> list[str]:
    # A relative path: a file of the folder, or of one of its subfolders (a sharded checkpoint's shards/).
    parts = name.split("/") if isinstance(name, str) else [""]
    if (
        not isinstance(name, str)
        or "\\" in name
        or any(not p or p.startswith(".") for p in parts)
        or not isinstance(entry, dict)
    ):
        return [f"{MANIFEST_FILE}: malformed entry {name!r}"]
    file = folder / name
    if not file.is_file():
        return [f"{name}: missing"]
    problems = []
    size = file.stat().st_size
    if size != entry.get("size"):
        problems.append(f"{name}: {size} bytes, the manifest says {entry.get('size')} (truncated or overwritten)")
    else:
        digest = known_sha256 if known_sha256 is not None else hash_file(file)[1]
        if digest != entry.get("sha256"):
            problems.append(
                f"{name}: sha256 mismatch (manifest {str(entry.get('sha256'))[:12]}…, file {digest[:12]}…) "
                "— the file was modified or damaged"
            )
    if name.endswith(".safetensors"):
        reason = sniff_safetensors(file)
        if reason:
            problems.append(f"{name}: {reason}")
    elif name.endswith(".json") and not problems:
        try:
            json.loads(file.read_bytes())
        except ValueError as exc:
            problems.append(f"{name}: unreadable JSON ({exc})")
    return problems


def sniff_safetensors(path: Path) -> str | None:
    """``None`` if ``path`` starts like a safetensors file, else why not (pickles are named as such)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else 0
            length_ok = 2 <= n <= min(size - 8, 100_000_000)
            # The header first: its length's bytes may look like a pickle's opcode (a 896-byte
            # header starts the file with 0x80 0x03).
            header = _json_or_none(fh.read(n)) if length_ok else None
            if isinstance(header, dict):
                problem = _header_problem(header, size - 8 - n)
                if problem is None:
                    return None
                return f"not a valid safetensors file ({problem}); it was truncated or damaged"
            if head.startswith(b"PK\x03\x04"):
                kind = "it is a zip archive, which is what torch.save writes around a pickle"
            elif head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
                kind = f"it is a pickle (protocol {head[1]})"
            elif len(head) < 8:
                kind = f"only {size} bytes"
            else:
                kind = "its header is not JSON" if length_ok else "its header length is invalid"
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    return f"not a safetensors file ({kind}); {PICKLE_REFUSED}"


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _header_problem(header: dict[str, Any], data_size: int) -> str | None:
    """Why a parsed safetensors header does not describe the ``data_size`` bytes after it, or None.

    safetensors itself requires the tensors to tile the data exactly: the largest end offset is
    the data's size. Checking it here finds a truncated or padded file from its header alone.
    """
    end = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]
        ):
            return f"tensor {str(key)[:80]!r} has no valid data_offsets"
        end = max(end, offsets[1])
    if end != data_size:
        return f"its header describes {end} bytes of tensor data, the file holds {data_size}"
    return None


# ----------------------------------------------------------------------------- reading


def read_checkpoint(
    path: str | os.PathLike[str],
    *,
    map_location: str | torch.device = "cpu",
    verify: bool = True,
    shards: bool = True,
) -> LoadedCheckpoint:
    """Read a checkpoint folder: safetensors and JSON only, never pickle.

    Args:
        path: The ``ckpt-*`` folder.
        map_location: Device for the model weights (state tensors stay on CPU).
        verify: Check sizes and SHA-256 against the manifest first (reads every byte once more).
        shards: A sharded checkpoint: assemble the whole weights and optimizer state from every
            rank's shard (False: leave them out, for a caller that loads the slices itself).

    Returns:
        The model weights, the rebuilt ``state`` dict and the metadata.

    Raises:
        CheckpointError: The checkpoint fails verification or a file is not what it should
            be; the message names the file and the problem.
    """
    path = Path(path)
    if verify:
        problems = verify_checkpoint(path)
        if problems:
            lines = "\n".join(f"  - {p}" for p in problems)
            raise CheckpointError(
                f"checkpoint {path} is corrupt or incomplete:\n{lines}\n"
                "resume from an older checkpoint "
                "(CheckpointManager.get_latest_valid_checkpoint() finds the newest intact one)"
            )
    state_doc = _read_json(path / STATE_JSON)
    meta_doc = _read_json(path / META_FILE)
    for name, doc in ((STATE_JSON, state_doc), (META_FILE, meta_doc)):
        if doc.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"{path / name}: unsupported format_version {doc.get('format_version')!r} "
                f"(this trainengine reads {FORMAT_VERSION})"
            )
    model_info = state_doc.get("model") or {}
    model_state: dict[str, torch.Tensor] = {}
    if model_info.get("file"):
        device = map_location if isinstance(map_location, str) else str(map_location)
        model_state = _load_tensors(path / MODEL_FILE, device)
        for alias, target in (model_info.get("aliases") or {}).items():
            if target not in model_state:
                raise CheckpointError(
                    f"{path / STATE_JSON}: tied weight '{alias}' points at '{target}', which {MODEL_FILE} does not hold"
                )
            model_state[alias] = model_state[target]
    # Clone state tensors out of the file mapping: an optimizer keeps them for the rest of the
    # run, and a mapping would pin the file's disk space after the checkpoint is pruned.
    state_tensors = {k: v.clone() for k, v in _load_tensors(path / STATE_FILE, "cpu").items()}
    state = unflatten_state(state_doc.get("skeleton"), state_tensors)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path / STATE_JSON}: the stored state is a {type(state).__name__}, expected a dict")
    sharded = state_doc.get("sharded")
    if sharded is not None and not isinstance(sharded, dict):
        raise CheckpointError(f"{path / STATE_JSON}: malformed 'sharded' table")
    if sharded and shards:  # FSDP2: whole tensors assembled from every rank's shard
        model_state, state["optimizer"] = _read_sharded(path, sharded, map_location)
    meta = metadata_from_doc(meta_doc, path)
    return LoadedCheckpoint(model_state=model_state, state=state, meta=meta, sharded=sharded)


def _read_sharded(
    path: Path, sharded: dict[str, Any], map_location: str | torch.device
) -> tuple[dict[str, torch.Tensor], Any]:
    from trainengine.checkpoint._sharded import MODEL_PREFIX, OPTIM_PREFIX, optimizer_to_named, read_full_tensors

    full = read_full_tensors(path)
    device = map_location if isinstance(map_location, str) else str(map_location)
    model = {k[len(MODEL_PREFIX) :]: v.to(device) for k, v in full.items() if k.startswith(MODEL_PREFIX)}
    for alias, target in (sharded.get("aliases") or {}).items():  # tied weights, written once
        if target not in model:
            raise CheckpointError(
                f"{path / STATE_JSON}: tied weight '{alias}' points at '{target}', which no shard holds"
            )
        model[alias] = model[target]
    optim = {k[len(OPTIM_PREFIX) :]: v for k, v in full.items() if k.startswith(OPTIM_PREFIX)}
    skeleton = sharded.get("optimizer_skeleton")
    return model, optimizer_to_named(unflatten_state(skeleton, optim)) if skeleton is not None else None


def read_metadata(path: str | os.PathLike[str]) -> CheckpointMetadata:
    """Only ``meta.json`` of a checkpoint (no verification, no tensors)."""
    path = Path(path)
    return metadata_from_doc(_read_json(path / META_FILE), path)


def metadata_from_doc(doc: dict[str, Any], path: Path) -> CheckpointMetadata:
    try:
        metrics = {str(k): float(v) for k, v in (doc.get("metrics") or {}).items()}
        extra = dict(doc.get("meta") or {})
        extra["library_versions"] = doc.get("library_versions") or {}
        return CheckpointMetadata(
            step=int(doc["step"]),
            epoch=int(doc["epoch"]),
            metrics=metrics,
            timestamp=str(doc.get("timestamp", "")),
            tags=[str(t) for t in doc.get("tags") or []],
            path=path,
            extra=extra,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path / META_FILE}: malformed metadata ({exc!r})") from exc


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise CheckpointError(f"{path}: expected a JSON object, found {type(doc).__name__}")
    return doc


def _load_tensors(path: Path, device: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    reason = sniff_safetensors(path)
    if reason:
        raise CheckpointError(f"{path}: {reason}")
    try:
        return safetensors.torch.load_file(str(path), device=device)
    except Exception as exc:  # safetensors raises its own error types for malformed files
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc}); {PICKLE_REFUSED}") from exc
