"""Device placement, precision, seeding and (later) process groups — in one place.

The Trainer asks the runtime for the device, the autocast context and the gradient scaler,
and hands it batches and models to place. A distributed strategy (DDP / FSDP2 under
torchrun) arrives as a subclass that also wraps the model and reduces counts across ranks;
the loop does not change.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from trainengine.errors import ConfigError

# Re-exported: the lookup lives with the other probes (trainengine.probes), below the engine.
from trainengine.probes import peak_flops_for

__all__ = ["Runtime", "resolve_device", "resolve_precision", "seed_everything", "peak_flops_for"]

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(spec: str) -> torch.device:
    """``auto`` -> cuda if available, else mps, else cpu; otherwise the named device.

    Raises:
        ConfigError: the named device does not exist on this machine.
    """
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"training.device is {spec!r} but this machine has no CUDA device — use device auto or cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"training.device {spec!r} does not exist: {torch.cuda.device_count()} CUDA device(s) here"
            )
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("training.device is 'mps' but MPS is not available here — use device auto or cpu")
    return device


def resolve_precision(spec: str, device: torch.device) -> str:
    """``auto`` -> bf16 on CUDA devices that support it, else fp32.

    Raises:
        ConfigError: fp16 off CUDA, or bf16 on a GPU without bf16 support.
    """
    if spec == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return "bf16"
        return "fp32"
    if spec == "fp16" and device.type != "cuda":
        raise ConfigError(f"training.precision fp16 needs a CUDA device (training on {device.type}) — use bf16 or fp32")
    if spec == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("training.precision bf16 is not supported by this GPU — use fp16 or fp32")
    return spec


def seed_everything(seed: int, *, deterministic: bool) -> dict[str, Any]:
    """Seed python, numpy and torch; in deterministic mode also force deterministic kernels.

    Returns:
        The previous global settings, for :func:`restore_determinism`.
    """
    previous = {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
    }
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        # cuBLAS needs a fixed workspace to be deterministic; only effective before CUDA init.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return previous


def restore_determinism(previous: dict[str, Any]) -> None:
    torch.use_deterministic_algorithms(previous["deterministic_algorithms"])
    torch.backends.cudnn.deterministic = previous["cudnn_deterministic"]
    torch.backends.cudnn.benchmark = previous["cudnn_benchmark"]


def _refuse_multi_process() -> None:
    """Refuse to start a single-process runtime under a multi-process launcher.

    Under ``torchrun --nproc-per-node 2`` every rank would otherwise train the whole model on the
    whole data set on its own and write the same run directory, while the user believes DDP ran.
    The distributed runtime (``trainengine.distributed``) is the one for that case.

    Raises:
        ConfigError: ``WORLD_SIZE`` is above 1.
    """
    world = os.environ.get("WORLD_SIZE", "1")
    if world.isdigit() and int(world) > 1:
        raise ConfigError(
            f"this process was launched as one of WORLD_SIZE={world} processes (torchrun?), but this Trainer "
            "runs one process: every rank would train alone. Use trainengine.Trainer (or `trainengine train`), "
            "whose runtime follows distributed.strategy, or run one process"
        )


class Runtime:
    """Single-process runtime: one device, optional autocast and GradScaler.

    Attributes:
        device: where the model and batches live.
        precision: resolved precision, one of fp32 / bf16 / fp16.
        rank, world_size, is_rank_zero: process identity (0 / 1 / True here).
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    # Sharded checkpoints (FSDP2): an object with save(...) / load(...) that every rank calls
    # together (trainengine.distributed._checkpoint); None = rank 0 writes whole checkpoints.
    checkpoint_io: Any = None

    def __init__(self, device: str = "auto", precision: str = "auto", *, _distributed: bool = False) -> None:
        if not _distributed:
            _refuse_multi_process()
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.autocast_dtype = _DTYPES.get(self.precision)
        # One reusable context object: creating a torch.autocast per step costs time.
        self._autocast = (
            torch.autocast(self.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else contextlib.nullcontext()
        )
        self._non_blocking = self.device.type == "cuda"

    @property
    def is_rank_zero(self) -> bool:
        return self.rank == 0

    def any_rank(self, flag: bool) -> bool:
        """True when ``flag`` is set on any process (one process here: the flag itself).

        A distributed runtime reduces it across ranks, so every rank stops at the same step.
        """
        return flag

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return self._autocast

    def make_grad_scaler(self) -> torch.amp.GradScaler | None:
        return torch.amp.GradScaler("cuda") if self.precision == "fp16" else None

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device)

    # The seams a multi-process runtime fills in (trainengine.distributed.DistributedRuntime);
    # in one process they cost nothing.
    def wrap_for_training(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module the training step calls (DDP under several processes; here the model itself)."""
        return model

    def no_sync(self, model: torch.nn.Module, sync: bool) -> contextlib.AbstractContextManager[Any]:
        """Under DDP, skip the gradient all-reduce of a micro-batch that is not the window's last."""
        return contextlib.nullcontext()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of ``tensor`` over processes (one process: the tensor itself)."""
        return tensor

    def all_reduce_max(self, tensor: torch.Tensor) -> torch.Tensor:
        """The maximum of ``tensor`` over processes (one process: the tensor itself)."""
        return tensor

    def broadcast_text(self, text: str | None) -> str | None:
        """Rank 0's ``text`` on every process (one process: the text itself)."""
        return text

    def reduce_window_targets(self, total: Any) -> Any:
        """The window's target count over all processes (one process: ``total`` itself)."""
        return total

    def note_stop(self, flag: bool, *, signal: bool = False) -> None:
        """This process wants to stop (``signal``: because it was signalled); carried by the next reduction."""

    def stop_agreed(self) -> tuple[bool, bool]:
        """(any process wants to stop, any was signalled) as of the last reduction (one process: never asked)."""
        return False, False

    def close(self, *, clean: bool = True) -> None:
        """Release what the runtime holds (a process group); nothing in one process.

        ``clean``: training ended without an error, so every rank reaches this point (a
        distributed runtime waits for the others before it leaves the group).
        """

    def to_device(self, batch: Any) -> Any:
        """Move tensors (also inside tuples, lists and dicts) to the device without blocking."""
        if isinstance(batch, torch.Tensor):
            return batch.to(self.device, non_blocking=self._non_blocking)
        # Concrete types before the Mapping ABC: ABC isinstance checks are slow per step.
        if isinstance(batch, tuple):
            moved = [self.to_device(v) for v in batch]
            return type(batch)(*moved) if hasattr(batch, "_fields") else tuple(moved)  # namedtuples too
        if isinstance(batch, list):
            return [self.to_device(v) for v in batch]
        if isinstance(batch, (dict, Mapping)):  # dict first: its check is fast, the ABC's is not
            return {k: self.to_device(v) for k, v in batch.items()}
        return batch

    def pin_memory(self, setting: str) -> bool:
        return setting == "on" or (setting == "auto" and self.device.type == "cuda")

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"device": str(self.device), "precision": self.precision, "world_size": self.world_size}
        if self.device.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(self.device)
        return info
