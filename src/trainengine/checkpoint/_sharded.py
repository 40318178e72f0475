"""Sharded checkpoints (FSDP2): tensors through Distributed Checkpoint, everything else as JSON.

A sharded checkpoint is an ordinary checkpoint folder (``manifest.json`` last, atomic rename,
the same keep-best / keep-last policy and corruption fallback) in which the weights and the
optimizer's tensors are not one ``model.safetensors`` written by rank 0 but one file per rank,
written in parallel by ``torch.distributed.checkpoint`` (DCP) with its safetensors storage::

    ckpt-000000040/
        shards/shard-00001-model-00001-of-00001.safetensors   rank 0's slices ("model/…", "optim/…")
        shards/shard-00002-model-00001-of-00001.safetensors   rank 1's slices
        ranks/rank-00000.safetensors, rank-00000.json          each rank's RNG streams (flattened)
        state.safetensors, state.json                          the rest of the training state (rank 0)
        meta.json, manifest.json

DCP's own metadata file is a pickle; the safetensors storage keeps each slice's offsets in the
files' JSON headers instead, and only tensors are handed to DCP. The optimizer's non-tensor parts
(param groups), the schedule, the data position and the RNG go through the engine's JSON
skeleton (:mod:`trainengine.checkpoint._flatten`). Nothing here unpickles.

Reading needs no process group: :func:`read_full_tensors` assembles full tensors from every
shard (a different world size, one process, ``trainengine checkpoints consolidate``), while
:func:`load_shards` fills the slices of tensors that are already sharded (resume on N ranks).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from trainengine.checkpoint._flatten import flatten_state, unflatten_state
from trainengine.checkpoint._fs import fsync_and_hash, write_bytes_durably
from trainengine.errors import CheckpointError

__all__ = [
    "SHARDS_DIR",
    "RANKS_DIR",
    "MODEL_PREFIX",
    "OPTIM_PREFIX",
    "save_shards",
    "load_shards",
    "read_full_tensors",
    "shard_files_of_rank",
    "write_rank_state",
    "read_rank_state",
    "optimizer_to_named",
]

SHARDS_DIR = "shards"
RANKS_DIR = "ranks"
MODEL_PREFIX = "model/"
OPTIM_PREFIX = "optim/"


def save_shards(folder: Path, tensors: Mapping[str, torch.Tensor], *, process_group: Any = None) -> None:
    """Every rank writes its slices of ``tensors`` (DTensors or replicated tensors) to ``folder/shards``.

    A collective: every rank of the group calls it with the same keys. Replicated tensors are
    written once (DCP deduplicates them).
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageWriter

    writer = HuggingFaceStorageWriter(str(folder / SHARDS_DIR), save_distributed=True)
    dcp.save(dict(tensors), storage_writer=writer, process_group=process_group)


def shard_files_of_rank(folder: Path, rank: int) -> list[Path]:
    """The shard files ``rank`` wrote (DCP names them ``shard-<rank + 1>-…``)."""
    return sorted((folder / SHARDS_DIR).glob(f"shard-{rank + 1:05d}-*.safetensors"))


def _reader(folder: Path) -> Any:
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    from trainengine.checkpoint._format import PICKLE_REFUSED, sniff_safetensors

    shards = folder / SHARDS_DIR
    files = sorted(shards.glob("*.safetensors")) if shards.is_dir() else []
    if not files:
        raise CheckpointError(f"{folder}: no {SHARDS_DIR}/*.safetensors — not a sharded checkpoint, or it is damaged")
    for file in files:  # before DCP's reader opens them: a pickle under a .safetensors name is named as such
        reason = sniff_safetensors(file)
        if reason:
            raise CheckpointError(f"{file}: {reason}; {PICKLE_REFUSED}")
    return HuggingFaceStorageReader(str(shards))


def load_shards(
    folder: Path, targets: dict[str, torch.Tensor], *, process_group: Any = None, no_dist: bool = False
) -> None:
    """Fill ``targets`` in place from the shards: each target reads the slices it holds.

    The targets may be sharded differently from the saved tensors (another world size): DCP
    reads the overlapping parts of every file.

    Raises:
        CheckpointError: a target is not in the checkpoint, or its shape differs.
    """
    import torch.distributed.checkpoint as dcp

    reader = _reader(folder)
    saved = reader.read_metadata().state_dict_metadata
    missing = sorted(set(targets) - set(saved))
    if missing:
        raise CheckpointError(
            f"{folder}: the checkpoint has no {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''} — it was "
            "written for another model or optimizer"
        )
    for key, target in targets.items():
        size = tuple(getattr(saved[key], "size", ()))
        if tuple(target.shape) != size:
            raise CheckpointError(
                f"{folder}: {key} has shape {list(size)} in the checkpoint, {list(target.shape)} here"
            )
    dcp.load(targets, storage_reader=_reader(folder), process_group=process_group, no_dist=no_dist)  # a fresh reader


def read_full_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the shards, whole, on the CPU (one process; no process group needed)."""
    import torch.distributed.checkpoint as dcp

    metadata = _reader(folder).read_metadata().state_dict_metadata
    targets: dict[str, torch.Tensor] = {}
    for key, md in metadata.items():
        dtype = getattr(getattr(md, "properties", None), "dtype", None)
        if dtype is None:  # DCP's safetensors storage only ever holds tensors
            raise CheckpointError(f"{folder}: {key} is not a tensor in the shards' metadata")
        targets[key] = torch.empty(tuple(md.size), dtype=dtype)
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.filterwarnings("ignore", message=".*single process", category=UserWarning)
        dcp.load(targets, storage_reader=_reader(folder), no_dist=True)
    return targets


def write_rank_state(folder: Path, rank: int, state: Mapping[str, Any], extra: Mapping[str, Any]) -> None:
    """One rank's own state (its RNG streams) as ``ranks/rank-<r>.safetensors`` + ``.json``; fsynced.

    ``extra`` goes into the JSON as it is (the sizes and hashes of the shard files this rank wrote,
    so rank 0 lists them in the manifest without reading them again).
    """
    tensors, skeleton = flatten_state(dict(state), root=f"rank {rank} state")
    base = folder / RANKS_DIR
    base.mkdir(exist_ok=True)
    data = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    tensor_file = base / f"rank-{rank:05d}.safetensors"
    safetensors.torch.save_file(data, str(tensor_file), metadata={"format": "pt"})
    fsync_and_hash(tensor_file)
    doc = {"rank": rank, "skeleton": skeleton, **extra}
    write_bytes_durably(base / f"rank-{rank:05d}.json", json.dumps(doc, allow_nan=False).encode("utf-8"))


def read_rank_state(folder: Path, rank: int) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``(state, doc)`` that :func:`write_rank_state` wrote for ``rank``; None when that rank has none."""
    base = folder / RANKS_DIR
    doc_path, tensor_path = base / f"rank-{rank:05d}.json", base / f"rank-{rank:05d}.safetensors"
    if not doc_path.is_file():
        return None
    try:
        doc = json.loads(doc_path.read_bytes())
        tensors = safetensors.torch.load_file(str(tensor_path))
    except Exception as exc:
        raise CheckpointError(f"{doc_path}: unreadable ({exc})") from exc
    return unflatten_state(doc.get("skeleton"), tensors), doc


def optimizer_to_named(fqn_state: Mapping[str, Any]) -> dict[str, Any]:
    """A state dict keyed by parameter names (``get_optimizer_state_dict``) in the engine's named format.

    The engine's format is ``optimizer.state_dict()`` (integer ids) with each group's
    ``param_names``; :func:`~trainengine.checkpoint.load_optimizer_state` loads it into any
    grouping of the same parameters in one process.
    """
    state_by_name = dict(fqn_state.get("state") or {})
    groups, state, index = [], {}, 0
    for group in fqn_state.get("param_groups") or []:
        group = dict(group)
        names = [str(n) for n in group.get("params", [])]
        ids = []
        for name in names:
            if name in state_by_name:
                state[index] = state_by_name[name]
            ids.append(index)
            index += 1
        group["params"], group["param_names"] = ids, names
        groups.append(group)
    return {"state": state, "param_groups": groups}
