"""``trainengine serve`` on the CPU vs ``--device cuda``, for a bundle where the model dominates.

A byte-level GPT bundle (d_model 512, 8 layers, context 512 by default; a couple of training
steps, the weights do not matter for speed) is served with ``--runtime torch`` in three
configurations, one server at a time:

* ``cpu``        — ``--device cpu``;
* ``cuda``       — ``--device cuda``;
* ``cuda+batch`` — ``--device cuda --batch-max-size 32 --batch-max-wait-ms 2`` (adaptive batching).

Each server is driven by an asyncio ``httpx`` load generator in a separate process (so the client
does not share the server's event loop): N workers, each sending ``POST /predict`` with
``{"inputs": ["<a 64-byte prompt>"], "max_new_tokens": 16}`` back to back, at concurrency 1 and 16
by default; a warm-up (3 s) comes first and is discarded, then D seconds (default 10) are
measured. Reported per config and concurrency: requests/s (requests completed in the measured
window / D), p50/p90/p99 latency in ms (nearest rank, over the requests completed in the window)
and errors (exceptions, timeouts and HTTP statuses >= 400); then the ratios cuda/cpu and
cuda+batch/cuda of requests/s at each concurrency.

Run on a GPU machine (no network; Python 3.12 with torch + CUDA; the serving stack from .whl):

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
    python3 benchmarks/serve_gpu.py                 # about 2-3 minutes; writes $OUT/serve_gpu.json

Without a GPU, to check the script end to end (tiny GPT, 2 s runs, ``--device cpu`` everywhere):

    python benchmarks/serve_gpu.py --dry-run

``--timeout-s`` (default 420) is the whole run's budget: a measurement that would not finish in
what is left is skipped and marked so. The raw numbers go to ``--json`` (default
``$OUT/serve_gpu.json`` when $OUT is set, else benchmarks/results/serve_gpu.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

MARKER = "SERVE_GPU_JSON "
PROMPT = "The server answers this prompt of sixty-four bytes, then it stops."  # len 64 after slicing
BATCH_ARGS = ["--batch-max-size", "32", "--batch-max-wait-ms", "2"]


# ---------------------------------------------------------------------------------------------
# load generator (runs in its own process: ``serve_gpu.py --loadgen SPEC``)


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values (nan when empty)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(p / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


async def _load(spec: dict[str, Any]) -> dict[str, Any]:
    import httpx

    url, body, conc = spec["url"], spec["body"].encode(), int(spec["concurrency"])
    warmup, duration = float(spec["warmup_s"]), float(spec["duration_s"])
    headers = {"Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    done: list[tuple[float, float, bool]] = []  # (start, end, ok)
    error_kinds: dict[str, int] = {}
    error_samples: dict[str, str] = {}
    t0 = time.perf_counter()
    m0, m1 = t0 + warmup, t0 + warmup + duration

    async with httpx.AsyncClient(limits=limits, timeout=float(spec["request_timeout_s"])) as client:

        async def worker() -> None:
            while time.perf_counter() < m1:
                start = time.perf_counter()
                ok = False
                try:
                    response = await client.post(url, content=body, headers=headers)
                    ok = response.status_code < 400
                    if not ok:
                        key = f"http {response.status_code}"
                        error_kinds[key] = error_kinds.get(key, 0) + 1
                        error_samples.setdefault(key, response.text[:300])
                except Exception as exc:  # noqa: BLE001 - every failure is counted, none stops the run
                    key = type(exc).__name__
                    error_kinds[key] = error_kinds.get(key, 0) + 1
                done.append((start, time.perf_counter(), ok))

        await asyncio.gather(*(worker() for _ in range(conc)))

    measured = [(s, e, ok) for s, e, ok in done if m0 <= e <= m1]
    latencies = sorted((e - s) * 1e3 for s, e, ok in measured if ok)
    errors = sum(1 for *_, ok in measured if not ok)
    return {
        "concurrency": conc,
        "requests": len(latencies),
        "errors": errors,
        "warmup_requests": sum(1 for _, e, _ in done if e < m0),
        "requests_per_s": len(latencies) / duration,
        "p50_ms": percentile(latencies, 50),
        "p90_ms": percentile(latencies, 90),
        "p99_ms": percentile(latencies, 99),
        "max_ms": latencies[-1] if latencies else float("nan"),
        "mean_ms": sum(latencies) / len(latencies) if latencies else float("nan"),
        "error_kinds": error_kinds,
        "error_samples": error_samples,
    }


def loadgen_main(spec_json: str) -> None:
    result = asyncio.run(_load(json.loads(spec_json)))
    print(MARKER + json.dumps(result), flush=True)


def run_load(url: str, body: str, concurrency: int, warmup_s: float, duration_s: float, request_timeout_s: float):
    """One load run in a fresh process; its summary."""
    spec = {
        "url": url,
        "body": body,
        "concurrency": concurrency,
        "warmup_s": warmup_s,
        "duration_s": duration_s,
        "request_timeout_s": request_timeout_s,
    }
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--loadgen", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=warmup_s + duration_s + request_timeout_s + 60,
    )
    for line in proc.stdout.splitlines():
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER) :])
    raise RuntimeError(f"load generator printed no summary (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


# ---------------------------------------------------------------------------------------------
# server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m trainengine serve BUNDLE`` in its own process on a free loopback port; stderr to a log."""

    def __init__(self, bundle: Path, extra_args: list[str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.cmd = [
            sys.executable,
            "-m",
            "trainengine",
            "serve",
            str(bundle),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--runtime",
            "torch",
            "--log-level",  # warning: no access log line per request
            "warning",
            *extra_args,
        ]
        pythonpath = os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        with open(log, "w") as err:
            self.proc = subprocess.Popen(
                self.cmd, env=dict(os.environ, PYTHONPATH=pythonpath), stdout=subprocess.DEVNULL, stderr=err
            )

    def wait_ready(self, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with status {self.proc.returncode}: {shlex.join(self.cmd)}\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                    if response.status == 200:
                        return json.loads(response.read())
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        raise RuntimeError(f"server did not answer /health within {timeout_s:.0f} s\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---------------------------------------------------------------------------------------------
# bundle


def _importable(*modules: str) -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in modules)


def build_gpt_bundle(work: Path, d_model: int, n_layers: int, context: int, steps: int) -> tuple[Path, list[str]]:
    """A byte-level GPT trained for ``steps`` steps on the repository's docs, exported; cached under ``work``.

    Formats: "pytorch" (the torch runtime's model.safetensors + model_config.json), plus "onnx"
    when onnx, onnxruntime and onnxscript (the dynamo exporter) are all importable.
    """
    formats = ["pytorch"] + (["onnx"] if _importable("onnx", "onnxruntime", "onnxscript") else [])
    folder = work / f"bytes_gpt_d{d_model}_l{n_layers}_ctx{context}_{'_'.join(sorted(formats))}"
    found = sorted(p.parent for p in folder.glob("*/manifest.json"))
    if found:
        return found[-1], formats
    import torch

    from trainengine.data import TokenWindowDataset
    from trainengine.export import create_export_bundle
    from trainengine.models import build_model
    from trainengine.tasks import TaskSpec

    torch.manual_seed(0)
    text = b"".join(p.read_bytes() for p in sorted((REPO / "docs").rglob("*.md")))
    text = (text or Path(__file__).read_bytes()) * 2
    stream = torch.tensor(list(text[: 64 * (context + 1)]), dtype=torch.uint8)
    windows = stream[: (len(stream) // (context + 1)) * (context + 1)].reshape(-1, context + 1)
    train = TokenWindowDataset(windows)
    model = build_model(
        "gpt", vocab_size=256, max_seq_len=context, d_model=d_model, n_heads=max(1, d_model // 64), n_layers=n_layers
    )
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(windows), (8,), generator=gen)
        rows = windows[idx].long()
        opt.zero_grad()
        logits = model(rows[:, :-1])
        torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), rows[:, 1:].reshape(-1)).backward()
        opt.step()
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bundle = create_export_bundle(
            model,
            task_spec=TaskSpec.language_modeling("bytes"),
            formats=formats,
            output_dir=folder,
            name="bytes-gpt",
            reference_data=train,
        )
    return Path(bundle), formats


# ---------------------------------------------------------------------------------------------
# report


def fmt(value: float) -> str:
    if value != value:  # nan
        return "—"
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}" if value < 1 else f"{value:.2f}"


def print_table(title: str, results: list[dict[str, Any]]) -> None:
    print(f"\n{title}\n")
    print("| config | concurrency | requests/s | p50 ms | p90 ms | p99 ms | requests | errors |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        if r.get("status") != "ok":
            print(f"| {r['config']} | {r['concurrency']} | {r['status']} | | | | | |")
            continue
        print(
            f"| {r['config']} | {r['concurrency']} | {fmt(r['requests_per_s'])} | {fmt(r['p50_ms'])} | "
            f"{fmt(r['p90_ms'])} | {fmt(r['p99_ms'])} | {r['requests']} | {r['errors']} |"
        )


def ratios(results: list[dict[str, Any]], concurrencies: list[int]) -> dict[str, float | None]:
    by = {(r["config"], r["concurrency"]): r for r in results if r.get("status") == "ok"}
    out: dict[str, float | None] = {}
    for c in concurrencies:
        for name, (num, den) in {"cuda/cpu": ("cuda", "cpu"), "cuda+batch/cuda": ("cuda+batch", "cuda")}.items():
            a, b = by.get((num, c)), by.get((den, c))
            ok = a is not None and b is not None and b["requests_per_s"] > 0
            out[f"{name} c{c}"] = a["requests_per_s"] / b["requests_per_s"] if ok else None
    return out


# ---------------------------------------------------------------------------------------------


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--loadgen":
        loadgen_main(sys.argv[2])
        return
    started = time.monotonic()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny GPT, 2 s runs, --device cpu for every config")
    parser.add_argument("--duration", type=float, default=None, help="measured seconds per run (default 10; dry 2)")
    parser.add_argument("--warmup", type=float, default=None, help="discarded seconds before each (default 3; dry 2)")
    parser.add_argument("--concurrency", default="1,16", help="comma-separated client concurrencies (default 1,16)")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--prompt-bytes", type=int, default=64, help="prompt length in bytes (default 64)")
    parser.add_argument("--prime", type=int, default=5, help="one-at-a-time requests after start-up (default 5)")
    parser.add_argument("--request-timeout", type=float, default=60.0, help="client timeout per request, seconds")
    parser.add_argument("--timeout-s", type=float, default=420.0, help="budget for the whole run (default 420)")
    parser.add_argument("--configs", default="cpu,cuda,cuda+batch", help="which configs, in order")
    parser.add_argument("--d-model", type=int, default=None, help="default 512 (dry run 32)")
    parser.add_argument("--layers", type=int, default=None, help="default 8 (dry run 1)")
    parser.add_argument("--context", type=int, default=None, help="default 512 (dry run 32)")
    parser.add_argument("--steps", type=int, default=2, help="training steps (speed does not depend on them)")
    parser.add_argument("--bundle", default=None, help="serve this bundle instead of building one")
    parser.add_argument("--work", default=None, help="bundle cache and logs (default <tmp>/trainengine-serve-gpu)")
    parser.add_argument("--json", default=None, help="output (default $OUT/serve_gpu.json or benchmarks/results/)")
    args = parser.parse_args()

    dry = args.dry_run
    duration = args.duration if args.duration is not None else (2.0 if dry else 10.0)
    warmup = args.warmup if args.warmup is not None else (2.0 if dry else 3.0)
    d_model = args.d_model or (32 if dry else 512)
    layers = args.layers or (1 if dry else 8)
    context = args.context or (32 if dry else 512)
    concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
    cuda = "cpu" if dry else "cuda"
    all_configs = {
        "cpu": ["--device", "cpu"],
        "cuda": ["--device", cuda],
        "cuda+batch": ["--device", cuda, *BATCH_ARGS],
    }
    configs = {name: all_configs[name] for name in args.configs.split(",") if name}
    work = Path(args.work) if args.work else Path(tempfile.gettempdir()) / "trainengine-serve-gpu"
    work.mkdir(parents=True, exist_ok=True)

    t_bundle = time.monotonic()
    if args.bundle:
        bundle, formats = Path(args.bundle), ["(given)"]
    else:
        bundle, formats = build_gpt_bundle(work, d_model, layers, context, args.steps)
    bundle_s = time.monotonic() - t_bundle
    # The prompt plus the new tokens must fit the context (the tiny dry-run model has 32).
    prompt_len = max(1, min(args.prompt_bytes, context - args.max_new_tokens))
    prompt = (PROMPT * (prompt_len // len(PROMPT) + 1))[:prompt_len]
    body = json.dumps({"inputs": [prompt], "max_new_tokens": args.max_new_tokens})
    print(f"bundle {bundle} (formats {formats}, {bundle_s:.1f} s); body {body}", file=sys.stderr)

    def left() -> float:
        return args.timeout_s - (time.monotonic() - started)

    per_run = warmup + duration + 5  # a run's wall time, roughly (process start, drain)
    results: list[dict[str, Any]] = []
    servers_info: dict[str, Any] = {}
    for name, extra in configs.items():
        rows = [{"config": name, "concurrency": c, "server_args": extra} for c in concurrencies]
        if left() < per_run + 15:
            for row in rows:
                row["status"] = "skipped (budget)"
            results += rows
            print(f"{name}: skipped, {left():.0f} s of the budget left", file=sys.stderr)
            continue
        server = Server(bundle, extra, work / f"server_{name.replace('+', '_')}.log")
        try:
            t0 = time.monotonic()
            try:
                health = server.wait_ready(timeout_s=max(5.0, min(180.0, left() - per_run)))
            except RuntimeError as exc:
                print(f"{name}: server failed: {exc}", file=sys.stderr)
                for row in rows:
                    row["status"] = "server failed"
                    row["error"] = str(exc)[-2000:]
                results += rows
                continue
            servers_info[name] = {"cmd": shlex.join(server.cmd), "startup_s": time.monotonic() - t0, "health": health}
            # A few one-at-a-time requests first: the first calls of a fresh process are slow.
            prime_ms = []
            for _ in range(args.prime):
                t1 = time.perf_counter()
                try:
                    request = urllib.request.Request(
                        server.url + "/predict", data=body.encode(), headers={"Content-Type": "application/json"}
                    )
                    with urllib.request.urlopen(request, timeout=args.request_timeout) as response:
                        response.read()
                except (urllib.error.URLError, OSError) as exc:
                    servers_info[name]["prime_error"] = repr(exc)
                    break
                prime_ms.append(round((time.perf_counter() - t1) * 1e3, 2))
            servers_info[name]["prime_ms"] = prime_ms
            print(
                f"{name}: up in {servers_info[name]['startup_s']:.1f} s; first requests {prime_ms} ms", file=sys.stderr
            )
            for row in rows:
                if left() < per_run:
                    row["status"] = "skipped (budget)"
                    print(f"{name} c{row['concurrency']}: skipped, {left():.0f} s left", file=sys.stderr)
                    continue
                try:
                    r = run_load(
                        server.url + "/predict", body, row["concurrency"], warmup, duration, args.request_timeout
                    )
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    row["status"] = "load failed"
                    row["error"] = str(exc)[-2000:]
                    print(f"{name} c{row['concurrency']}: load generator failed: {exc}", file=sys.stderr)
                    continue
                row.update(r, status="ok")
                print(
                    f"{name} c{row['concurrency']}: {r['requests_per_s']:.1f} req/s, p50 {r['p50_ms']:.2f} ms, "
                    f"p99 {r['p99_ms']:.2f} ms, errors {r['errors']} {r['error_kinds'] or ''}",
                    file=sys.stderr,
                )
        finally:
            server.stop()
            if server.proc.returncode not in (0, -15, None) and name in servers_info:
                servers_info[name]["exit"] = server.proc.returncode
            servers_info.setdefault(name, {})["log_tail"] = server.log_tail(1500)
        results += rows

    model_desc = f"byte-level GPT (d_model {d_model}, {layers} layer(s), context {context})"
    print_table(
        f"{model_desc}, `trainengine serve --runtime torch`, POST /predict {body}; httpx asyncio client in its own "
        f"process; {warmup:g} s warm-up + {duration:g} s measured per run"
        + f"; {args.prime} one-at-a-time priming requests per server"
        + ("; DRY RUN: every config on --device cpu" if dry else ""),
        results,
    )
    rat = ratios(results, concurrencies)
    print("\n| ratio of requests/s | value |\n| --- | ---: |")
    for key, value in rat.items():
        print(f"| {key} | {'—' if value is None else f'{value:.2f}x'} |")
    errors = sum(r.get("errors", 0) for r in results)
    if errors:
        print(f"\nwarning: {errors} failed requests (see the errors column); the figures are suspect")

    machine: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    versions: dict[str, str] = {}
    for module in ("torch", "numpy", "httpx", "uvicorn", "fastapi", "starlette", "uvloop", "onnxruntime"):
        try:
            versions[module] = __import__(module).__version__
        except Exception:  # noqa: BLE001 - absent or broken: recorded as such
            versions[module] = "absent"
    try:
        import torch

        machine["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            machine["gpu"] = torch.cuda.get_device_name(0)
            machine["torch_cuda"] = torch.version.cuda
    except Exception:  # noqa: BLE001
        pass
    out = {
        "date": date.today().isoformat(),
        "dry_run": dry,
        "model": model_desc,
        "bundle": str(bundle),
        "bundle_formats": formats,
        "bundle_build_s": bundle_s,
        "body": body,
        "config": {
            "duration_s": duration,
            "warmup_s": warmup,
            "concurrencies": concurrencies,
            "request_timeout_s": args.request_timeout,
            "prime_requests": args.prime,
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "timeout_s": args.timeout_s,
            "configs": configs,
            "client": "httpx.AsyncClient, one process, N workers back to back",
        },
        "results": results,
        "ratios_requests_per_s": rat,
        "servers": servers_info,
        "machine": machine,
        "versions": versions,
        "elapsed_s": time.monotonic() - started,
    }
    if args.json:
        target = Path(args.json)
    elif os.environ.get("OUT"):
        target = Path(os.environ["OUT"]) / "serve_gpu.json"
    else:
        target = REPO / "benchmarks" / "results" / "serve_gpu.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(out, indent=1) + "\n")
    print(f"\nraw: {target} ({out['elapsed_s']:.0f} s in all)")


if __name__ == "__main__":
    main()
