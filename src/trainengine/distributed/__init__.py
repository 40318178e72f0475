"""Multi-process training under ``torchrun``: the distributed runtime (DDP) and its launch.

See docs/distributed.md. :func:`make_runtime` is what :class:`trainengine.Trainer` uses to pick
its runtime: :class:`DistributedRuntime` when launched as several processes, else one process.
"""

from trainengine.distributed._runtime import DistributedRuntime, make_runtime, peer_failure, world_size_from_env

__all__ = ["DistributedRuntime", "make_runtime", "peer_failure", "world_size_from_env"]
