"""Startup time of the ``trainengine`` commands that neither train nor export.

Each command runs ``--rounds`` times in a fresh process (the installed ``trainengine`` script),
alternating with ``--compare``'s tree when given; the median wall time is reported with the
heavy modules each command imported. The test that guards this is tests/test_import_graph.py
(the import graph, not the clock).

Usage:
    python benchmarks/startup.py                          # this checkout
    git archive HEAD~1 src | tar -x -C /tmp/old && \
    python benchmarks/startup.py --compare /tmp/old/src --json benchmarks/results/startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = [["--help"], ["config", "show"], ["runs", "list"], ["registry", "list"]]
HEAVY = ("torch", "torchmetrics", "sklearn", "matplotlib", "pandas", "scipy")


def _heavy_imports(exe: list[str], command: list[str], env: dict[str, str], cwd: str) -> list[str]:
    probe = subprocess.run(
        [*exe, *command], env={**env, "PYTHONPROFILEIMPORTTIME": "1"}, cwd=cwd, capture_output=True, text=True
    )
    names = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in probe.stderr.splitlines()
        if line.startswith("import time:")
    }
    return [m for m in HEAVY if m in names]


def _runner(src: str | None) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    script = shutil.which("trainengine", path=str(Path(sys.executable).parent))
    return ([script] if script else [sys.executable, "-m", "trainengine"]), env


def measure(command: list[str], rounds: int, sources: list[str | None]) -> list[dict[str, object]]:
    """Median wall time of ``command`` for each source tree, the trees alternating round by round."""
    runners = [_runner(src) for src in sources]
    times: list[list[float]] = [[] for _ in sources]
    with tempfile.TemporaryDirectory() as cwd:  # an empty runs/ and a throwaway models.db
        # `registry list` refuses a registry that does not exist (reading creates nothing): make
        # an empty one first, with the installed checkout.
        subprocess.run(
            [sys.executable, "-c", "from trainengine.registry import ModelRegistry as R; R('models.db').close()"],
            cwd=cwd,
            check=True,
        )
        for _ in range(rounds):
            for (exe, env), out in zip(runners, times, strict=True):
                start = time.perf_counter()
                proc = subprocess.run([*exe, *command], env=env, cwd=cwd, capture_output=True, text=True)
                out.append(time.perf_counter() - start)
                if proc.returncode != 0:
                    raise SystemExit(f"trainengine {' '.join(command)} failed: {proc.stderr[-500:]}")
        return [
            {
                "command": "trainengine " + " ".join(command),
                "src": src or "this checkout",
                "median_s": statistics.median(t),
                "times_s": t,
                "heavy_imports": _heavy_imports(exe, command, env, cwd),
            }
            for src, t, (exe, env) in zip(sources, times, runners, strict=True)
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--src", help="Measure this source folder instead of the installed checkout.")
    parser.add_argument(
        "--compare", help="Also measure this source folder (e.g. an older checkout's src/), alternating."
    )
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    args = parser.parse_args()
    sources = [args.src] + ([args.compare] if args.compare else [])
    rows = []
    for command in COMMANDS:
        results = measure(command, args.rounds, sources)
        rows += results
        for r in results:
            heavy = ", ".join(r["heavy_imports"]) or "none"
            print(f"{r['command']:<28} {r['src']:<20} median {r['median_s']:.2f} s   heavy imports: {heavy}")
        if args.compare:
            print(f"{'':<28} {'ratio':<20} {results[0]['median_s'] / results[1]['median_s']:.2f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rounds": args.rounds, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
