"""Launching ``_ddp_script.py`` in one process or under torchrun (the ``script`` fixture)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("_ddp_script.py")
# The reference runs log every 4 steps while their checkpoints fall at the epoch ends (steps 3 and 6): a save
# flushes the log, a collective, so every rank must take part in it (rank 0 alone would wait forever).
LOG_EVERY_4 = {"LOG_EVERY": "4"}


def run_script(
    folder: Path, name: str, *args: str, procs: int, env: dict[str, str] | None = None, launch: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """``_ddp_script.py`` in one process, or under torchrun with ``procs`` ranks (``launch``: more torchrun flags).

    Writes ``folder/<name>.json`` (rank 0's results) and trains into ``folder/<name>/``.
    """
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}", *launch]
    command = [*(torchrun if procs > 1 else [sys.executable]), str(SCRIPT), str(folder / f"{name}.json"),
               str(folder / name), *args]  # fmt: skip
    return subprocess.run(
        command, capture_output=True, text=True, timeout=170, cwd=folder, env={**os.environ, **(env or {})}
    )


def result(folder: Path, name: str) -> dict:
    return json.loads((folder / f"{name}.json").read_text())


@pytest.fixture(scope="session")
def script() -> types.SimpleNamespace:
    return types.SimpleNamespace(run=run_script, result=result)


@pytest.fixture(scope="session")
def one_process(tmp_path_factory, script) -> Path:
    """One process, micro-batch 32, accumulation 2: the reference both DDP and FSDP2 (2 x 16) must follow.

    Its runs log every 4 steps (``LOG_EVERY``): pass the same to the runs compared with it.
    """
    folder = tmp_path_factory.mktemp("one")
    run = script.run(folder, "one", "32", "2", procs=1, env=LOG_EVERY_4)
    assert run.returncode == 0, run.stderr[-3000:]
    return folder
