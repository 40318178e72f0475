"""``trainengine train --nproc-per-node N``: start the run under PyTorch's own launcher.

The engine does not spawn or supervise ranks itself: above one process it re-runs the same command
as ``python -m torch.distributed.run ... -m trainengine <the arguments, without the launch flags>``
(torchrun), which starts the workers, sets ``RANK`` / ``LOCAL_RANK`` / ``WORLD_SIZE`` and restarts
the group on failure (``--max-restarts``). A worker sees those variables and trains; it never
launches again. Everything here that decides is a pure function of the flags, the config and the
environment, so it is tested without starting a process; :func:`launch` is the one side effect.

Example:
    >>> argv = launcher_argv(LaunchOptions(nproc_per_node=2), ["train", "--config", "run.yaml"], python="python")
    >>> " ".join(argv)
    'python -m torch.distributed.run --nproc-per-node 2 --nnodes 1 --standalone -m trainengine train --config run.yaml'
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from trainengine.errors import ConfigError

__all__ = [
    "LAUNCH_FLAGS",
    "LaunchOptions",
    "is_torchrun_worker",
    "plan_launch",
    "strip_launch_flags",
    "launcher_argv",
    "launch",
]

# The `train` flags that describe the launch, not the run; each takes one value. They are removed
# from the arguments the workers get (torchrun's own flags of the same names mean the same thing).
LAUNCH_FLAGS = ("--nproc-per-node", "--nnodes", "--node-rank", "--rdzv-endpoint", "--max-restarts")

# Variables torchrun sets in every worker: either one means "I am a rank, train".
_WORKER_VARIABLES = ("LOCAL_RANK", "WORLD_SIZE")

# Signals a supervisor sends to the command it started (Ctrl+C, `kill`, a pre-empted SLURM job,
# Kubernetes stopping a pod): passed on to torchrun, which passes them to the workers.
_FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass(frozen=True)
class LaunchOptions:
    """How many processes to start and how the nodes meet.

    Attributes:
        nproc_per_node: processes (ranks) on this node.
        nnodes: nodes in the job; above 1, ``rdzv_endpoint`` is required.
        node_rank: this node's index (0 .. nnodes-1); given, the rendezvous is torchrun's
            ``static`` one with ``rdzv_endpoint`` as the master's address; left out, nodes join
            through ``c10d`` and get their rank from it.
        rdzv_endpoint: ``HOST:PORT`` of the rendezvous (usually the first node).
        max_restarts: restarts of the whole group after a worker fails (torchrun's default: 0).
    """

    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int | None = None
    rdzv_endpoint: str | None = None
    max_restarts: int | None = None

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes


def is_torchrun_worker(env: Mapping[str, str]) -> bool:
    """True inside a process that torchrun (or a compatible launcher) started."""
    return any(name in env for name in _WORKER_VARIABLES)


def plan_launch(
    distributed: Any,
    env: Mapping[str, str],
    *,
    nproc_per_node: int | None = None,
    nnodes: int | None = None,
    node_rank: int | None = None,
    rdzv_endpoint: str | None = None,
    max_restarts: int | None = None,
) -> LaunchOptions | None:
    """The launch to start, or None when this process should train itself.

    The flags win over the config's ``distributed.nproc_per_node`` / ``distributed.nnodes``, so a
    config file can ask for several processes and the command line can change that. Inside a
    torchrun worker the answer is always None: workers never launch again.

    Args:
        distributed: the config's ``distributed`` section.
        env: the environment (``os.environ``).
        nproc_per_node, nnodes, node_rank, rdzv_endpoint, max_restarts: the ``train`` flags
            (None = not given).

    Raises:
        ConfigError: the launch cannot work (several nodes without a rendezvous endpoint, a node
            rank outside the nodes, ``distributed.strategy: none`` with several processes, ...).
    """
    if is_torchrun_worker(env):
        return None
    options = LaunchOptions(
        nproc_per_node=nproc_per_node if nproc_per_node is not None else distributed.nproc_per_node,
        nnodes=nnodes if nnodes is not None else distributed.nnodes,
        node_rank=node_rank,
        rdzv_endpoint=rdzv_endpoint,
        max_restarts=max_restarts,
    )
    if options.world_size == 1:
        return None
    problems = []
    where = "--nproc-per-node / --nnodes (or distributed.nproc_per_node / nnodes)"
    if distributed.strategy == "none":
        problems.append(
            f"distributed.strategy: none trains in one process, but {where} ask for {options.world_size}; "
            "set distributed.strategy to ddp or auto, or launch one process"
        )
    if options.nnodes > 1 and not options.rdzv_endpoint:
        problems.append(
            f"--nnodes {options.nnodes} needs --rdzv-endpoint HOST:PORT (the first node's address and a free port), "
            "the same on every node"
        )
    if options.node_rank is not None and not 0 <= options.node_rank < options.nnodes:
        problems.append(
            f"--node-rank {options.node_rank} is outside 0..{options.nnodes - 1} (--nnodes {options.nnodes})"
        )
    if options.rdzv_endpoint is not None:
        host, _, port = options.rdzv_endpoint.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            problems.append(f"--rdzv-endpoint must be HOST:PORT, e.g. node001:29500 (got {options.rdzv_endpoint!r})")
    if problems:
        raise ConfigError(problems, prefix="cannot launch the run")
    return options


def strip_launch_flags(args: Sequence[str]) -> list[str]:
    """``args`` without the launch flags and their values (``--nnodes 2`` and ``--nnodes=2``).

    Example:
        >>> strip_launch_flags(["train", "--nproc-per-node", "2", "--epochs", "1", "--nnodes=1"])
        ['train', '--epochs', '1']
    """
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":  # everything after it is an argument, not an option
            out.extend(args[i:])
            break
        if arg in LAUNCH_FLAGS:
            i += 2  # the flag and its value
            continue
        if arg.split("=", 1)[0] in LAUNCH_FLAGS and "=" in arg:
            i += 1
            continue
        out.append(arg)
        i += 1
    return out


def launcher_argv(options: LaunchOptions, forwarded: Sequence[str], *, python: str | None = None) -> list[str]:
    """The torchrun command that runs ``trainengine <forwarded>`` in every worker.

    One node without an endpoint uses ``--standalone`` (a private rendezvous on a free local port,
    so two jobs on one machine do not collide); with ``rdzv_endpoint`` the nodes meet there:
    through torchrun's ``static`` rendezvous when ``node_rank`` is given, else through ``c10d``.

    Args:
        options: the launch (:func:`plan_launch`).
        forwarded: ``trainengine``'s own arguments for the workers, the launch flags removed
            (:func:`strip_launch_flags`), global options such as ``--debug`` included.
        python: the interpreter; default the current one (``sys.executable``), so the workers
            run in the same environment.
    """
    argv = [python or sys.executable, "-m", "torch.distributed.run"]
    argv += ["--nproc-per-node", str(options.nproc_per_node), "--nnodes", str(options.nnodes)]
    if options.rdzv_endpoint:
        if options.node_rank is not None:
            argv += ["--node-rank", str(options.node_rank)]
        else:
            argv += ["--rdzv-backend", "c10d"]
        argv += ["--rdzv-endpoint", options.rdzv_endpoint]
    else:
        argv += ["--standalone"]
    if options.max_restarts is not None:
        argv += ["--max-restarts", str(options.max_restarts)]
    return [*argv, "-m", "trainengine", *forwarded]


def launch(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """Run the launcher and return its exit code (128 + N when a signal N ended it).

    torchrun runs in its own process group, and this process passes on SIGINT / SIGTERM / SIGHUP
    exactly once: a Ctrl+C in the terminal, a ``kill`` of this process or a scheduler stopping the
    job reach the workers, which then save and stop as in one process.
    """
    process = subprocess.Popen(list(argv), env=dict(env), process_group=0)

    def _forward(signum: int, _frame: FrameType | None) -> None:
        if process.poll() is None:
            process.send_signal(signum)

    # Handlers can only be installed from the main thread (the CLI's); elsewhere torchrun gets the
    # signals a process group gets and nothing more.
    on_main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, _forward) for sig in _FORWARDED_SIGNALS} if on_main else {}
    try:
        code = process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code
