"""Model-server latency and throughput: ONNX Runtime vs PyTorch, side by side, on loopback.

Exports an MLP trained on the bundled digits (64 -> 128 -> 128 -> 10) as a bundle, starts two
real servers with the CLI (``trainengine serve BUNDLE --runtime onnx`` and ``--runtime torch``,
one worker each, in their own processes), and sends each the same ``POST /predict`` requests at a
fixed concurrency, alternating between the two in rounds so that machine noise hits both alike.
Latency is measured by the client per request (send to full response); requests/s is requests
over the wall time of the rounds. Batch sizes 1 and 32 (examples per request). The same
predictions are also timed in-process (``predictor.predict``, no HTTP), which isolates the
runtimes from the HTTP stack and the load generator.

Run:  python benchmarks/serve.py                       (about a minute on 2 CPU cores)
      python benchmarks/serve.py --requests 2000 --concurrency 8 --rounds 4 --json out.json

Writes the raw numbers (every request's latency) to benchmarks/results/serve_<date>.json unless
--json says otherwise, and prints a markdown table. The load generator shares the machine with
the servers: on a 2-core box the numbers include that contention (the ratio is what compares).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import date
from pathlib import Path

import httpx
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from trainengine.data import load_builtin  # noqa: E402
from trainengine.models import build_model  # noqa: E402
from trainengine.tasks import TaskSpec  # noqa: E402

RUNTIMES = ("onnx", "torch")


def build_bundle(out: Path) -> tuple[Path, np.ndarray]:
    """Train the digits MLP briefly and export it (onnx + pytorch); returns the bundle and val inputs."""
    from trainengine.export import create_export_bundle

    torch.manual_seed(0)
    splits = load_builtin("digits")
    x = torch.stack([splits.train[i][0] for i in range(len(splits.train))])
    y = torch.stack([splits.train[i][1] for i in range(len(splits.train))])
    model = build_model("mlp", input_dim=64, output_dim=10, hidden_dims=(128, 128), dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        idx = torch.randint(0, len(x), (64,), generator=gen)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bundle = create_export_bundle(
            model,
            task_spec=TaskSpec.classification("digits", 10),
            formats=["onnx", "pytorch"],
            output_dir=out,
            name="digits",
            reference_data=splits.train,
        )
    xv = torch.stack([splits.val[i][0] for i in range(len(splits.val))]).numpy()
    return bundle, xv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(bundle: Path, runtime: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trainengine",
            "serve",
            str(bundle),
            "--runtime",
            runtime,
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{runtime} server exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{runtime} server did not start")


def measure_in_process(
    bundle: Path, xv: np.ndarray, batch_sizes: list[int], calls: int, rounds: int
) -> dict[str, dict[str, dict[str, float]]]:
    """Latency of ``predictor.predict`` without HTTP, both runtimes alternating in rounds."""
    from trainengine.serve import OnnxPredictor
    from trainengine.serve._torch import TorchPredictor

    predictors = {"onnx": OnnxPredictor(bundle), "torch": TorchPredictor(bundle)}
    rng = np.random.default_rng(1)
    out: dict[str, dict[str, dict[str, float]]] = {rt: {} for rt in RUNTIMES}
    for batch in batch_sizes:
        inputs = [xv[rng.integers(0, len(xv), batch)].tolist() for _ in range(max(1, calls // rounds))]
        times: dict[str, list[float]] = {rt: [] for rt in RUNTIMES}
        for rt in RUNTIMES:
            for x in inputs[:50]:
                predictors[rt].predict(x)  # warm-up
        for r in range(rounds):
            for rt in RUNTIMES if r % 2 == 0 else RUNTIMES[::-1]:
                for x in inputs:
                    t0 = time.perf_counter()
                    predictors[rt].predict(x)
                    times[rt].append(time.perf_counter() - t0)
        for rt in RUNTIMES:
            us = np.array(times[rt]) * 1e6
            out[rt][str(batch)] = {f"p{q}_us": float(np.percentile(us, q)) for q in (50, 95, 99)}
    return out


async def fire(url: str, bodies: list[bytes], concurrency: int) -> tuple[list[float], float]:
    """Send every body once with ``concurrency`` requests in flight; (latencies in s, wall s)."""
    latencies = [0.0] * len(bodies)
    next_index = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def worker() -> None:
            nonlocal next_index
            while next_index < len(bodies):
                i = next_index
                next_index += 1
                t0 = time.perf_counter()
                response = await client.post(
                    "/predict", content=bodies[i], headers={"content-type": "application/json"}
                )
                latencies[i] = time.perf_counter() - t0
                if response.status_code != 200:
                    raise RuntimeError(f"request failed: {response.status_code} {response.text[:200]}")

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return latencies, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--requests", type=int, default=2000, help="requests per runtime and batch size (split over the rounds)"
    )
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=8, help="alternating rounds (onnx, torch, torch, onnx, ...)")
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--json", default=None, help="output file (default benchmarks/results/serve_<date>.json)")
    args = parser.parse_args()
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    per_round = max(1, args.requests // args.rounds)
    rng = np.random.default_rng(0)

    with tempfile.TemporaryDirectory() as tmp:
        bundle, xv = build_bundle(Path(tmp))
        in_process = measure_in_process(bundle, xv, batch_sizes, args.requests, args.rounds)
        servers = {runtime: start_server(bundle, runtime) for runtime in RUNTIMES}
        try:
            results: dict[str, dict[str, dict]] = {
                rt: {str(b): {"latencies_s": [], "wall_s": 0.0, "requests": 0} for b in batch_sizes} for rt in RUNTIMES
            }
            for batch in batch_sizes:
                bodies = [
                    json.dumps({"inputs": xv[rng.integers(0, len(xv), batch)].tolist()}).encode()
                    for _ in range(per_round)
                ]
                for runtime in RUNTIMES:  # warm-up: imports, first sessions, connection setup
                    asyncio.run(fire(servers[runtime][1], bodies[: args.warmup], args.concurrency))
                for r in range(args.rounds):
                    order = RUNTIMES if r % 2 == 0 else RUNTIMES[::-1]
                    for runtime in order:
                        latencies, wall = asyncio.run(fire(servers[runtime][1], bodies, args.concurrency))
                        entry = results[runtime][str(batch)]
                        entry["latencies_s"] += latencies
                        entry["wall_s"] += wall
                        entry["requests"] += len(latencies)
                        entry.setdefault("round_rps", []).append(len(latencies) / wall)
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(timeout=30)

    rows = []
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for batch in batch_sizes:
        for runtime in RUNTIMES:
            entry = results[runtime][str(batch)]
            lat_ms = np.array(entry["latencies_s"]) * 1e3
            stats = {
                "p50_ms": float(np.percentile(lat_ms, 50)),
                "p95_ms": float(np.percentile(lat_ms, 95)),
                "p99_ms": float(np.percentile(lat_ms, 99)),
                "requests_per_s": entry["requests"] / entry["wall_s"],
                "examples_per_s": entry["requests"] * batch / entry["wall_s"],
                "requests": entry["requests"],
            }
            summary.setdefault(runtime, {})[str(batch)] = stats
            rows.append(
                f"| {runtime} | {batch} | {stats['p50_ms']:.2f} | {stats['p95_ms']:.2f} | {stats['p99_ms']:.2f} | "
                f"{stats['requests_per_s']:.0f} | {stats['examples_per_s']:.0f} |"
            )
    ratios = {}
    for batch in batch_sizes:
        o, t = results["onnx"][str(batch)]["round_rps"], results["torch"][str(batch)]["round_rps"]
        ratios[str(batch)] = float(np.median([tr / orr for tr, orr in zip(t, o)]))
    out = {
        "date": date.today().isoformat(),
        "torch_over_onnx_requests_per_s_median_of_rounds": ratios,
        "in_process_predict": in_process,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
        },
        "versions": {
            m: __import__(m).__version__ for m in ("torch", "numpy", "onnxruntime", "fastapi", "uvicorn", "httpx")
        },
        "config": {
            "model": "MLP 64-128-128-10 (digits)",
            "requests_per_case": per_round * args.rounds,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "batch_sizes": batch_sizes,
            "warmup": args.warmup,
            "workers_per_server": 1,
        },
        "summary": summary,
        "raw": {
            rt: {
                b: {
                    "wall_s": e["wall_s"],
                    "round_requests_per_s": e["round_rps"],
                    "latencies_ms": [round(v * 1e3, 4) for v in e["latencies_s"]],
                }
                for b, e in per_b.items()
            }
            for rt, per_b in results.items()
        },
    }
    target = Path(args.json) if args.json else REPO / "benchmarks" / "results" / f"serve_{date.today():%Y%m%d}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(out, indent=1) + "\n")
    print(
        f"\n{per_round * args.rounds} requests per case, concurrency {args.concurrency}, {args.rounds} alternating rounds; raw: {target}\n"
    )
    print("| runtime | batch | p50 ms | p95 ms | p99 ms | requests/s | examples/s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    for batch in batch_sizes:
        o, t = summary["onnx"][str(batch)], summary["torch"][str(batch)]
        print(
            f"\nbatch {batch}: torch/onnx p50 latency {t['p50_ms'] / o['p50_ms']:.2f}x, requests/s {ratios[str(batch)]:.2f}x (median of per-round ratios)"
        )
    print("\nIn-process predict() (parse excluded: validation + model + formatting), microseconds per call:\n")
    print("| runtime | batch | p50 µs | p95 µs | p99 µs |")
    print("| --- | --- | --- | --- | --- |")
    for batch in batch_sizes:
        for runtime in RUNTIMES:
            st = in_process[runtime][str(batch)]
            print(f"| {runtime} | {batch} | {st['p50_us']:.0f} | {st['p95_us']:.0f} | {st['p99_us']:.0f} |")


if __name__ == "__main__":
    main()
