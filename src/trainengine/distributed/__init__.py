"""Multi-process training under ``torchrun``: the runtimes (DDP, FSDP2), sharded checkpoints, the launch.

See docs/distributed.md. :func:`make_runtime` is what :class:`trainengine.Trainer` uses to pick
its runtime: :class:`DistributedRuntime` when launched as several processes, else one process.
"""

from trainengine.distributed._checkpoint import load_sharded, save_sharded
from trainengine.distributed._runtime import (
    DistributedRuntime,
    FSDPRuntime,
    fsdp_units,
    make_runtime,
    peer_failure,
    world_size_from_env,
)

__all__ = [
    "DistributedRuntime",
    "FSDPRuntime",
    "fsdp_units",
    "make_runtime",
    "peer_failure",
    "world_size_from_env",
    "save_sharded",
    "load_sharded",
]
