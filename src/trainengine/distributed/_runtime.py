"""The runtime of one process among several under ``torchrun``: process group, DDP, collectives.

:class:`DistributedRuntime` is the :class:`~trainengine.engine.Runtime` the engine's seam was
built for. It reads its identity from torchrun's environment (``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``), initialises the default process group (NCCL on
CUDA, gloo on the CPU) with ``distributed.timeout_s`` bounding every collective, wraps the model
for training in :class:`torch.nn.parallel.DistributedDataParallel`, and provides the few
collectives the loop needs: the window's target count (sum), the stop decision (max) and the
logged values.

:func:`make_runtime` picks the runtime for a config: this one when launched as several processes
and ``distributed.strategy`` allows it, else the single-process runtime.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from trainengine.engine import Runtime
from trainengine.errors import ConfigError, TrainEngineError

__all__ = ["DistributedRuntime", "FSDPRuntime", "make_runtime", "peer_failure", "world_size_from_env"]

logger = logging.getLogger("trainengine")


def world_size_from_env() -> int:
    """``WORLD_SIZE`` set by torchrun (1 when absent or not a number)."""
    value = os.environ.get("WORLD_SIZE", "1")
    return int(value) if value.isdigit() else 1


_PEER_SIGNS = ("connection closed by peer", "connection reset by peer", "timed out", "timeout", "broken pipe")


def peer_failure(runtime: Any, exc: BaseException) -> TrainEngineError | None:
    """The clear error for a collective that failed because another process died or stalled, else None."""
    if not isinstance(runtime, DistributedRuntime):
        return None
    text = str(exc)
    if not (isinstance(exc, dist.DistError) or any(sign in text.lower() for sign in _PEER_SIGNS)):
        return None
    first = text.strip().splitlines()[0][:300] if text.strip() else type(exc).__name__
    return TrainEngineError(
        f"rank {runtime.rank}: another process of this run failed or stopped answering (within "
        f"distributed.timeout_s), so this one stops too; the failing rank's own log has the cause. "
        f"Resume with resume_from='auto' once it is fixed. ({first})"
    )


def make_runtime(device: str, precision: str, distributed: Any) -> Runtime:
    """The runtime for this process: distributed under torchrun (WORLD_SIZE > 1), else one process.

    Raises:
        ConfigError: several processes with ``distributed.strategy: none``, or a strategy not built.
    """
    world = world_size_from_env()
    strategy = getattr(distributed, "strategy", "auto")
    if world <= 1:
        if strategy in ("ddp", "fsdp2"):
            logger.info("distributed.strategy %s with one process: training in one process", strategy)
        return Runtime(device, precision)
    if strategy == "none":
        raise ConfigError(
            f"this process is one of WORLD_SIZE={world} processes (torchrun), but distributed.strategy is none: "
            "every rank would train alone. Set distributed.strategy to ddp (or auto), or run one process"
        )
    if strategy == "fsdp2":
        return FSDPRuntime(device, precision, distributed)
    return DistributedRuntime(device, precision, distributed)


def _attempt_store(world_size: int, timeout: datetime.timedelta) -> Any:
    """Under torchrun's agent store: the store with a prefix of this restart attempt, else None.

    torchrun (``--max-restarts``) keeps one agent-hosted store for all attempts of a run, and the
    workers' default process group writes its peers' addresses under the same keys every time:
    after a restart a rank can read an address of the previous attempt before its peer has
    overwritten it, and fail with "connectFullMesh failed ... Connection refused" (seen on torch
    2.13 with gloo). A prefix per attempt (``TORCHELASTIC_RESTART_COUNT``) keeps each attempt's
    keys apart.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() != "true":
        return None
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size, is_master=False, timeout=timeout
    )
    return dist.PrefixStore(f"trainengine/attempt_{attempt}", store)


class DistributedRuntime(Runtime):
    """One of ``WORLD_SIZE`` processes: DDP over NCCL (CUDA) or gloo (CPU).

    Args:
        device: ``auto`` / ``cuda`` (this process's ``cuda:LOCAL_RANK``) / ``cpu``.
        precision: as for :class:`~trainengine.engine.Runtime`.
        distributed: the config's ``distributed`` section (backend, timeout_s, DDP options).

    Raises:
        ConfigError: torchrun's environment is incomplete, or the backend does not fit the device.
    """

    def __init__(self, device: str, precision: str, distributed: Any) -> None:
        missing = [k for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise ConfigError(
                f"distributed training needs torchrun's environment ({', '.join(missing)} unset); launch with "
                "`trainengine train --nproc-per-node N ...` or `torchrun --nproc-per-node N ...`"
            )
        self.rank = int(os.environ["RANK"])
        self.local_rank = int(os.environ["LOCAL_RANK"])
        self.world_size = int(os.environ["WORLD_SIZE"])
        self.options = distributed
        cuda = (torch.cuda.is_available() and device in ("auto", "cuda")) or device.startswith("cuda")
        if cuda:
            if not torch.cuda.is_available():
                raise ConfigError(f"training.device is {device}, but CUDA is not available in rank {self.rank}")
            torch.cuda.set_device(self.local_rank)
            device = f"cuda:{self.local_rank}"
        elif device == "auto":
            device = "cpu"
        super().__init__(device, precision, _distributed=True)
        backend = getattr(distributed, "backend", "auto")
        if backend == "auto":
            backend = "nccl" if self.device.type == "cuda" else "gloo"
        if backend == "nccl" and self.device.type != "cuda":
            raise ConfigError("distributed.backend nccl needs CUDA devices; use gloo (or auto) on the CPU")
        self.backend = backend
        timeout = datetime.timedelta(seconds=float(getattr(distributed, "timeout_s", 600.0)))
        self.owns_group = not dist.is_initialized()
        if self.owns_group:
            kwargs: dict[str, Any] = {"backend": backend, "timeout": timeout}
            if self.device.type == "cuda":
                kwargs["device_id"] = self.device
            store = _attempt_store(self.world_size, timeout)
            if store is not None:
                kwargs.update(store=store, rank=self.rank, world_size=self.world_size)
            dist.init_process_group(**kwargs)
        self._flag = torch.zeros(1, device=self.device)
        self._stop_local = torch.zeros(2, dtype=torch.int64, device=self.device)  # [stop wanted, signalled]
        self._stop_seen: torch.Tensor | None = None

    # ------------------------------------------------------------------ the model
    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Move the model to this rank's device; BatchNorm becomes SyncBatchNorm (``sync_batchnorm``)."""
        if getattr(self.options, "sync_batchnorm", True) and any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()
        ):
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model.to(self.device)

    def wrap_for_training(self, model: nn.Module) -> nn.Module:
        """The model in DistributedDataParallel (the plain module stays the one checkpoints see)."""
        from torch.nn.parallel import DistributedDataParallel

        o = self.options
        return DistributedDataParallel(
            model,
            device_ids=[self.local_rank] if self.device.type == "cuda" else None,
            bucket_cap_mb=float(getattr(o, "bucket_cap_mb", 25.0)),
            find_unused_parameters=bool(getattr(o, "find_unused_parameters", False)),
            static_graph=bool(getattr(o, "static_graph", False)),
        )

    @contextlib.contextmanager
    def no_sync(self, model: nn.Module, sync: bool) -> Iterator[None]:
        """Skip DDP's gradient all-reduce for this backward unless ``sync`` (the window's last micro-batch)."""
        skip = getattr(model, "no_sync", None)
        if sync or not callable(skip):
            yield
            return
        with skip():
            yield

    # ------------------------------------------------------------------ collectives
    def any_rank(self, flag: bool) -> bool:
        """True when ``flag`` is set on any rank: every rank stops at the same step."""
        self._flag.fill_(1.0 if flag else 0.0)
        dist.all_reduce(self._flag, op=dist.ReduceOp.MAX)
        return bool(self._flag.item())

    def reduce_window_targets(self, total: Any) -> torch.Tensor:
        """The window's targets summed over ranks — with this rank's stop flag in the same all-reduce.

        The one collective of a step besides DDP's own: ``[targets, stop]`` as int64. The flag's sum
        stays on the device until :meth:`stop_agreed` reads it (at the log interval only).
        """
        packed = torch.cat([torch.as_tensor(total, device=self.device).to(torch.int64).reshape(1), self._stop_local])
        dist.all_reduce(packed, op=dist.ReduceOp.SUM)
        self._stop_seen = packed[1:]
        return packed[0]

    def note_stop(self, flag: bool, *, signal: bool = False) -> None:
        self._stop_local[0] = 1 if flag else 0
        self._stop_local[1] = 1 if signal else 0

    def stop_agreed(self) -> tuple[bool, bool]:
        if self._stop_seen is None:
            return False, False
        stop, signalled = self._stop_seen.tolist()  # the one read-back, at the log interval
        return stop > 0, signalled > 0

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum over ranks (a new tensor; the input is left as it was)."""
        out = tensor.detach().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    def all_reduce_max(self, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.detach().clone()
        dist.all_reduce(out, op=dist.ReduceOp.MAX)
        return out

    def broadcast_text(self, text: str | None) -> str | None:
        """Rank 0's ``text`` on every rank, as UTF-8 bytes in tensors (no pickling, unlike broadcast_object_list)."""
        data = b"" if text is None else text.encode("utf-8")
        size = torch.tensor([len(data) if text is not None else -1], dtype=torch.int64, device=self.device)
        dist.broadcast(size, src=0)
        n = int(size.item())
        if n <= 0:
            return None if n < 0 else ""
        buffer = torch.zeros(n, dtype=torch.uint8, device=self.device)
        if self.rank == 0:
            buffer.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        dist.broadcast(buffer, src=0)
        return bytes(buffer.cpu().tolist()).decode("utf-8")

    def barrier(self) -> None:
        dist.barrier()

    def close(self, *, clean: bool = True) -> None:
        """Destroy the process group this runtime created (at the end of training).

        After a clean end every rank first waits at a barrier: no rank tears its connections down
        while a peer still has a collective in flight (rank 0 writes the last checkpoint and the
        run record after the others are done). After an error the peers may be gone: no barrier.
        """
        if not (self.owns_group and dist.is_initialized()):
            return
        try:
            if clean:
                dist.barrier()
        finally:
            dist.destroy_process_group()
            self.owns_group = False

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(world_size=self.world_size, backend=self.backend, strategy="ddp")
        return info


class FSDPRuntime(DistributedRuntime):
    """One of ``WORLD_SIZE`` processes under FSDP2: parameters, gradients and optimizer state sharded.

    :meth:`prepare_model` applies ``fully_shard`` to each unit (``distributed.fsdp_wrap_modules``,
    by default every element of the model's ModuleLists: its transformer blocks) and then to the
    root, on a one-dimensional device mesh over all ranks. The module stays the same object (its
    parameters become DTensors), so the optimizer is built over the shards and the step calls it
    directly. Checkpoints are sharded: every rank writes its slices through DCP
    (:mod:`trainengine.distributed._checkpoint`).
    """

    def __init__(self, device: str, precision: str, distributed: Any) -> None:
        super().__init__(device, precision, distributed)
        self.units: list[str] = []
        self.checkpoint_io = ShardedCheckpointIO(self)
        if self.precision == "fp16":
            self.close(clean=False)
            raise ConfigError(
                "training.precision fp16 is not supported with distributed.strategy fsdp2 (its loss scaler is not "
                "shard-aware); use bf16, or fp32"
            )

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Shard ``model`` in place with ``fully_shard`` (each unit, then the root); returns it."""
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

        o = self.options
        if getattr(o, "sync_batchnorm", True) and any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()
        ):
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = model.to(self.device)
        mesh = init_device_mesh(self.device.type, (self.world_size,))
        reduce = torch.float32 if getattr(o, "fsdp_reduce_dtype", "float32") == "float32" else torch.bfloat16
        param_dtype = torch.bfloat16 if self.precision == "bf16" else None
        kwargs: dict[str, Any] = {
            "mesh": mesh,
            "mp_policy": MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce),
            "offload_policy": CPUOffloadPolicy() if getattr(o, "fsdp_cpu_offload", False) else OffloadPolicy(),
        }
        units = fsdp_units(model, list(getattr(o, "fsdp_wrap_modules", []) or []))
        reshard = bool(getattr(o, "fsdp_reshard_after_forward", True))
        for _, unit in units:
            fully_shard(unit, reshard_after_forward=reshard, **kwargs)
        fully_shard(model, reshard_after_forward=reshard if units else False, **kwargs)
        self.units = [name for name, _ in units]
        return model

    def wrap_for_training(self, model: nn.Module) -> nn.Module:
        """FSDP2 shards the module in place (:meth:`prepare_model`): the step calls it as it is."""
        return model

    @contextlib.contextmanager
    def no_sync(self, model: nn.Module, sync: bool) -> Iterator[None]:
        """Reduce-scatter the gradients on the window's last micro-batch only (accumulate unsharded before)."""
        setter = getattr(model, "set_requires_gradient_sync", None)
        if callable(setter):
            setter(sync)
        yield

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(strategy="fsdp2", fsdp_units=len(self.units))
        return info


class ShardedCheckpointIO:
    """The engine's way to sharded checkpoints: every rank calls :meth:`save` / :meth:`load` together."""

    def __init__(self, runtime: DistributedRuntime) -> None:
        self.runtime = runtime
        self._group: Any = None  # a gloo group of the asynchronous saves' own (created by the first one)
        self._buffers: dict[str, torch.Tensor] = {}  # the CPU copies, reused between asynchronous saves

    def save(self, **kwargs: Any) -> Any:
        from trainengine.distributed._checkpoint import save_sharded

        return save_sharded(self.runtime, **kwargs)

    def save_async(self, **kwargs: Any) -> Any:
        """Copy this rank's slices to the CPU and write them in a background thread (see save_sharded_async)."""
        from trainengine.distributed._checkpoint import save_sharded_async

        if self._group is None:  # a collective: every rank reaches its first asynchronous save together
            timeout = datetime.timedelta(seconds=float(getattr(self.runtime.options, "timeout_s", 600.0)))
            self._group = dist.new_group(backend="gloo", timeout=timeout)
        return save_sharded_async(self.runtime, group=self._group, buffers=self._buffers, **kwargs)

    def full_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The whole weights on rank 0's CPU ({} elsewhere); a collective (the run's final weights)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state: dict[str, Any] = dict(get_model_state_dict(model, options=options))
        return state

    def load(self, path: Any, model: nn.Module, optimizer: Any) -> Any:
        from trainengine.distributed._checkpoint import load_sharded

        return load_sharded(self.runtime, path, model, optimizer)


def fsdp_units(model: nn.Module, class_names: list[str]) -> list[tuple[str, nn.Module]]:
    """The modules FSDP2 shards as one unit each, outermost first (see ``distributed.fsdp_wrap_modules``).

    Raises:
        ConfigError: a class name that no module of the model has.
    """
    found: list[tuple[str, nn.Module]] = []
    inside: list[str] = []

    def nested(name: str) -> bool:
        return any(name.startswith(prefix + ".") for prefix in inside)

    if class_names:
        present = {type(m).__name__ for m in model.modules()}
        unknown = [c for c in class_names if c not in present]
        if unknown:
            raise ConfigError(
                f"distributed.fsdp_wrap_modules: the model has no module of class {', '.join(unknown)}; its classes "
                f"are {', '.join(sorted(present))}"
            )
        for name, module in model.named_modules():
            if name and type(module).__name__ in class_names and not nested(name):
                found.append((name, module))
                inside.append(name)
        return found
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and not nested(name):
            for i, child in enumerate(module):
                found.append((f"{name}.{i}", child))
            inside.append(name)
    return found
