"""Saving and resuming sharded (FSDP2) checkpoints: every rank writes its slices, rank 0 completes the folder.

The storage format is :mod:`trainengine.checkpoint._sharded`. A save is a collective: every rank
calls :func:`save_sharded` at the same step. The steps:

1. rank 0 names and creates the temporary folder (its name is broadcast as text);
2. every rank writes its slices of the weights and the optimizer's tensors through DCP, then its
   own RNG streams and the sizes and hashes of its files (``ranks/rank-<r>.*``);
3. rank 0 writes the rest of the state (JSON skeleton + small tensors), the metadata and the
   manifest, and renames the folder into place under the checkpoint folder's lock;
4. rank 0's outcome is broadcast: every rank raises the same error when the save failed, so
   ``checkpointing.on_save_error`` acts the same way everywhere.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from trainengine.checkpoint import flatten_state, read_checkpoint, unflatten_state, verify_checkpoint
from trainengine.checkpoint._format import TMP_PREFIX
from trainengine.checkpoint._fs import hash_file, remove_tree
from trainengine.checkpoint._sharded import (
    MODEL_PREFIX,
    OPTIM_PREFIX,
    RANKS_DIR,
    SHARDS_DIR,
    load_shards,
    read_rank_state,
    save_shards,
    shard_files_of_rank,
    write_rank_state,
)
from trainengine.errors import CheckpointError

__all__ = ["save_sharded", "save_sharded_async", "load_sharded", "ShardedLoad", "ShardedAsyncSave"]

logger = logging.getLogger("trainengine")

# rank 0 completes the folder: (tmp folder, written files, the sharded table of state.json) -> final path
Publish = Callable[[Path, dict[str, dict[str, Any]], Any], Path]


def save_sharded(
    runtime: Any,
    *,
    directory: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    rank_state: Mapping[str, Any],
    publish: Publish | None,
) -> Path | None:
    """Write a sharded checkpoint of ``model`` and ``optimizer``; a collective (every rank calls it).

    Args:
        runtime: the FSDP2 runtime (rank, world size, device).
        directory: the checkpoint folder (the same on every rank).
        rank_state: this rank's own state (its RNG streams), stored in ``ranks/rank-<r>``.
        publish: rank 0: completes the temporary folder (state, metadata, manifest, rename) and
            returns the checkpoint's path; None on the other ranks.

    Returns:
        The checkpoint's folder on rank 0, None elsewhere.

    Raises:
        CheckpointError: the save failed on some rank (every rank raises).
    """
    comm = _Comm(runtime)
    tmp = _begin(comm, directory, step)
    tensors, doc = _tensors(model, optimizer)
    return _write_and_publish(comm, tmp, step, tensors, doc, rank_state, publish)


class ShardedAsyncSave:
    """An asynchronous sharded save in flight: :meth:`wait` returns its path or raises its error."""

    def __init__(self, step: int, path: Path) -> None:
        self.step = step
        self.path = path
        self.stall_seconds = 0.0  # what the training loop waited: the copy of this rank's slices to the CPU
        self.write_seconds = 0.0
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def wait(self) -> Path:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error if isinstance(error, CheckpointError) else CheckpointError(str(error))
        return self.path


def save_sharded_async(
    runtime: Any,
    *,
    group: Any,
    buffers: dict[str, torch.Tensor],
    directory: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    rank_state: Mapping[str, Any],
    publish: Publish | None,
    final: Path,
) -> ShardedAsyncSave:
    """Like :func:`save_sharded`, but the loop waits only for the copy of this rank's slices to the CPU.

    The copy goes into ``buffers`` (kept between saves, pinned on a GPU); a background thread writes
    them through DCP and completes the folder, communicating over ``group`` (a gloo process group
    of its own, so it never interleaves with the training's collectives). The caller waits for the
    previous save before starting the next one.
    """
    comm = _Comm(runtime)
    start = time.perf_counter()
    tmp = _begin(comm, directory, step)
    tensors, doc = _tensors(model, optimizer)
    staged = _stage(tensors, buffers)
    handle = ShardedAsyncSave(step, final)
    handle.stall_seconds = time.perf_counter() - start
    background = _Comm(runtime, group)

    def run() -> None:
        began = time.perf_counter()
        try:
            _write_and_publish(background, tmp, step, staged, doc, rank_state, publish)
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits
            handle._error = exc
        finally:
            handle.write_seconds = time.perf_counter() - began

    handle._thread = threading.Thread(target=run, name=f"trainengine-sharded-ckpt-{step}", daemon=True)
    handle._thread.start()
    return handle


class _Comm:
    """The collectives a save needs, on the default group (the loop's thread) or a gloo group of its own."""

    def __init__(self, runtime: Any, group: Any = None) -> None:
        self.rank, self.world_size = runtime.rank, runtime.world_size
        self.group = group
        self.device = torch.device("cpu") if group is not None else runtime.device

    def any(self, flag: bool) -> bool:
        t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group)
        return bool(t.item())

    def text(self, text: str | None) -> str:
        """Rank 0's ``text`` on every rank (UTF-8 bytes in tensors; "" for None)."""
        data = (text or "").encode("utf-8") if self.rank == 0 else b""
        size = torch.tensor([len(data)], dtype=torch.int64, device=self.device)
        dist.broadcast(size, src=0, group=self.group)
        n = int(size.item())
        if n == 0:
            return ""
        buffer = torch.zeros(n, dtype=torch.uint8, device=self.device)
        if self.rank == 0:
            buffer.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        dist.broadcast(buffer, src=0, group=self.group)
        return bytes(buffer.cpu().tolist()).decode("utf-8")


def _begin(comm: _Comm, directory: Path, step: int) -> Path:
    """Rank 0 creates the temporary folder; every rank learns its name (or rank 0's error)."""
    token = comm.text(secrets.token_hex(4) if comm.rank == 0 else None)
    tmp = directory / f"{TMP_PREFIX}{step:09d}-{token}"
    error = ""
    if comm.rank == 0:
        try:
            (tmp / SHARDS_DIR).mkdir(parents=True)
        except OSError as exc:
            error = f"cannot create {tmp}: {exc.strerror or exc}"
    _raise_if(comm.text(error))
    return tmp


def _tensors(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], dict[str, Any]]:
    """The weights and the optimizer's tensors (this rank's slices), and what ``state.json`` says of them.

    A tied weight (an embedding shared with the output layer) is one tensor under two names: it is
    written once, and the other name is recorded as an alias (``{"aliases": {alias: name}}``).
    """
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    owner: dict[int, str] = {}  # tied parameters are one Parameter object under several names (alike on every rank)
    aliases: dict[str, str] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in owner:
            aliases[name] = owner[id(param)]
        else:
            owner[id(param)] = name
    tensors: dict[str, Any] = {
        MODEL_PREFIX + key: value for key, value in get_model_state_dict(model).items() if key not in aliases
    }
    optim_tensors, optim_skeleton = flatten_state(get_optimizer_state_dict(model, optimizer), root="optimizer")
    tensors.update({OPTIM_PREFIX + k: v for k, v in optim_tensors.items()})
    return tensors, {"optimizer_skeleton": optim_skeleton, "aliases": aliases}


def _stage(tensors: Mapping[str, Any], buffers: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Copy this rank's slices into CPU ``buffers`` (reused between saves), keeping the DTensor layout."""
    from torch.distributed.tensor import DTensor

    out: dict[str, Any] = {}
    on_gpu = False
    for key, value in tensors.items():
        local = value.to_local() if isinstance(value, DTensor) else value
        pin = local.device.type == "cuda"
        buf = buffers.get(key)
        if buf is None or buf.shape != local.shape or buf.dtype != local.dtype or (pin and not buf.is_pinned()):
            buf = torch.empty(local.shape, dtype=local.dtype, pin_memory=pin)
            buffers[key] = buf
        buf.copy_(local.detach(), non_blocking=pin)
        on_gpu |= pin
        if isinstance(value, DTensor):
            buf = DTensor.from_local(
                buf, value.device_mesh, value.placements, run_check=False, shape=value.shape, stride=value.stride()
            )
        out[key] = buf
    if on_gpu:
        torch.cuda.synchronize()
    return out


def _write_and_publish(
    comm: _Comm,
    tmp: Path,
    step: int,
    tensors: Mapping[str, Any],
    doc: dict[str, Any],
    rank_state: Mapping[str, Any],
    publish: Publish | None,
) -> Path | None:
    """Every rank writes its files; when all succeeded, rank 0 completes the folder. Raises on every rank."""
    rank, error = comm.rank, ""
    try:
        save_shards(tmp, tensors, process_group=comm.group)
        files = {}
        for file in shard_files_of_rank(tmp, rank):
            size, digest = hash_file(file)
            files[file.relative_to(tmp).as_posix()] = {"size": size, "sha256": digest}
        write_rank_state(tmp, rank, rank_state, {"files": files})
    except Exception as exc:  # noqa: BLE001 - every rank learns that some rank failed
        error = f"sharded checkpoint of step {step} failed on rank {rank}: {exc}"
        logger.error("%s", error)
    if comm.any(bool(error)):  # also the barrier: every rank's files are on disk
        if rank == 0:
            remove_tree(tmp)
        raise CheckpointError(error or f"sharded checkpoint of step {step} failed on another rank (see its log)")
    path: Path | None = None
    if publish is not None:
        try:
            path = publish(tmp, _written(tmp, comm.world_size), doc)
        except Exception as exc:  # noqa: BLE001 - sent to every rank below
            error = f"sharded checkpoint of step {step}: {exc}"
            remove_tree(tmp)
    _raise_if(comm.text(error if rank == 0 else None))
    return path


def _written(tmp: Path, world_size: int) -> dict[str, dict[str, Any]]:
    """Sizes and hashes of every rank's files: the shards from each rank's own record, the rank files hashed here."""
    written: dict[str, dict[str, Any]] = {}
    for r in range(world_size):
        loaded = read_rank_state(tmp, r)
        if loaded is None:
            raise CheckpointError(f"rank {r} wrote no {RANKS_DIR}/rank-{r:05d}.json")
        written.update(loaded[1].get("files") or {})
        for suffix in (".json", ".safetensors"):
            name = f"{RANKS_DIR}/rank-{r:05d}{suffix}"
            size, digest = hash_file(tmp / name)
            written[name] = {"size": size, "sha256": digest}
    return written


def _raise_if(error: str | None) -> None:
    if error:
        raise CheckpointError(error)


class ShardedLoad:
    """What :func:`load_sharded` read besides the weights and the optimizer (loaded in place)."""

    def __init__(self, state: dict[str, Any], meta: Any, rank_state: dict[str, Any] | None, saved_world: int):
        self.state = state
        self.meta = meta
        self.rank_state = rank_state
        self.saved_world = saved_world


def load_sharded(runtime: Any, path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> ShardedLoad:
    """Load a checkpoint into an FSDP2 ``model`` and its ``optimizer`` on every rank (a collective).

    A sharded checkpoint of any world size is resharded by DCP; a one-process (or DDP)
    checkpoint is distributed from its full tensors. Rank 0 verifies the manifest once and every
    rank gets its verdict.

    Raises:
        CheckpointError: the checkpoint is corrupt, or written for another model or optimizer.
    """
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    comm = _Comm(runtime)
    problems = comm.text("; ".join(verify_checkpoint(path)) if runtime.rank == 0 else None)
    if problems:
        raise CheckpointError(f"checkpoint {path} is corrupt or incomplete: {problems}")
    loaded = read_checkpoint(path, verify=False, shards=False)
    doc = loaded.sharded
    state = dict(loaded.state)
    saved_optim = state.pop("optimizer", None)
    if doc is None:  # a full checkpoint (one process, DDP): every rank keeps its slices of it
        full = StateDictOptions(full_state_dict=True)
        set_model_state_dict(model, dict(loaded.model_state), options=full)
        if saved_optim is not None:
            set_optimizer_state_dict(model, optimizer, _named_to_fqn(saved_optim), options=full)
        return ShardedLoad(state, loaded.meta, None, int(loaded.meta.extra.get("world_size") or 1))
    template = get_optimizer_state_dict(model, optimizer)  # before the weights: it initialises empty states
    optim_targets, _ = flatten_state(template, root="optimizer")
    model_targets = get_model_state_dict(model)
    aliases = doc.get("aliases") or {}  # tied weights: loaded once, under the name that was written
    targets: dict[str, Any] = {MODEL_PREFIX + k: v for k, v in model_targets.items() if k not in aliases}
    targets.update({OPTIM_PREFIX + k: v for k, v in optim_targets.items()})
    load_shards(path, targets)
    set_model_state_dict(model, model_targets)
    set_optimizer_state_dict(model, optimizer, unflatten_state(doc.get("optimizer_skeleton"), optim_targets))
    saved_world = int(doc.get("world_size") or 1)
    own = read_rank_state(path, runtime.rank) if saved_world == runtime.world_size else None
    return ShardedLoad(state, loaded.meta, own[0] if own is not None else None, saved_world)


def _named_to_fqn(named: Mapping[str, Any]) -> dict[str, Any]:
    """The engine's named optimizer state (integer ids + ``param_names``) keyed by parameter names."""
    state = named.get("state") or {}
    groups, by_name = [], {}
    for group in named.get("param_groups") or []:
        group = dict(group)
        names = group.pop("param_names", None)
        if names is None:
            raise CheckpointError(
                "the checkpoint's optimizer state has no parameter names (written by an older version); "
                "resume it with distributed.strategy ddp or in one process"
            )
        for i, name in zip(group["params"], names, strict=True):
            if i in state:
                by_name[name] = state[i]
        group["params"] = list(names)
        groups.append(group)
    return {"state": by_name, "param_groups": groups}
