"""One job's own process: ``python -m trainengine.jobs._child SPEC.json`` (started by :class:`JobExecutor`).

The spec names the job, its type, config and attempt, the folder to work in and the file to write
the result to. The process never touches the job database: the worker that started it records
the outcome. It dies with its worker (``PR_SET_PDEATHSIG`` on Linux): a worker killed outright
leaves no orphan training next to the job's next attempt.

Exit codes: 0 done (result written), 130 / 143 interrupted by SIGINT / SIGTERM after the
training's emergency checkpoint, 1 failed (the traceback is in the log).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from pathlib import Path


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # not glibc: the lease still stops a second completion record
            return
    if os.getppid() != parent:  # the worker died before the line above took effect
        os._exit(1)


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[1]).read_text())
    _die_with_parent(int(spec["parent"]))
    from trainengine.jobs._types import JobContext
    from trainengine.registries import JOB_TYPES, load_plugins

    config = spec["config"]
    load_plugins(config.get("plugins") or [])
    context = JobContext(job_id=int(spec["job_id"]), attempt=int(spec["attempt"]), work_dir=Path(spec["work_dir"]))
    print(f"job {context.job_id} ({spec['job_type']}), attempt {context.attempt}", flush=True)
    try:
        runner = JOB_TYPES.get(spec["job_type"])
        result = runner(config, context)
    except BaseException as exc:  # noqa: BLE001 - the exit code tells the worker what happened
        from trainengine.engine import TrainingInterrupted

        if isinstance(exc, TrainingInterrupted):
            print(f"interrupted: {exc}", flush=True)
            return exc.exit_code
        if isinstance(exc, KeyboardInterrupt):
            return 130
        traceback.print_exc()
        return 1
    out = Path(spec["result_file"])
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result if isinstance(result, dict) else {"result": result}, default=str))
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
