"""Load test of ``trainengine serve`` with wrk, a load generator outside the server's event loop.

Issue 17: the server's latency is measured on loopback with ``wrk`` (Debian package ``wrk``; one
wrk thread, so the generator takes one core at most) against ``trainengine serve`` of the digits
MLP bundle (64 -> 128 -> 128 -> 10, ONNX runtime, one worker), one example per request. Each
round runs ``GET /health`` and ``POST /predict`` at concurrency 16 and 1, alternating which goes
first; a warm-up run of each endpoint comes first and is discarded. Per-case figures are medians
over the rounds. Targets, from the same run:

* ``/predict`` at c16 reaches >= 0.8x the requests/s of ``/health`` at c16;
* ``/predict`` p99 at c16 <= 1.5x the p99 of ``/health`` at c16;
* ``/predict`` p50 at c1 <= 1 ms.

``--batching`` instead measures adaptive server-side batching where the model dominates: a
byte-level GPT bundle (d_model 256, 4 layers, context 256 by default; a few training steps, the
weights do not matter for speed), ``POST /predict`` with ``{"inputs": ["some text"],
"max_new_tokens": 8}`` at c16, against two servers alternating in rounds: one plain, one with
``--batching-args`` (default ``--batch-max-size 16 --batch-max-wait-ms 2``) added.

Run:  python benchmarks/serve_load.py                         (about 2.5 minutes)
      python benchmarks/serve_load.py --duration 5 --rounds 1 --json /tmp/serve_load.json
      python benchmarks/serve_load.py --server-args "--workers 2"
      python benchmarks/serve_load.py --batching

``--server-args`` is appended to every ``trainengine serve`` command line. Bundles are cached under
``--work`` (default: <tmp>/trainengine-serve-load) or taken from ``--bundle DIR``. Writes the raw
numbers to benchmarks/results/serve_load_<date>.json unless --json says otherwise, and prints a
markdown table. The generator shares the machine with the server: on a 2-core box both compete
for the cores, which is why only ratios measured side by side are targets. "errors" counts socket
errors (connect, read, write, timeout) and HTTP statuses >= 400, as wrk reports them. Latency
percentiles are the measured ones; wrk's own, which add synthetic samples for coordinated
omission (see LUA_DONE), are reported beside them ("wrk_p99_ms").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import socket
import statistics
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

MARKER = "SERVE_LOAD_JSON "
DEFAULT_BATCHING_ARGS = "--batch-max-size 16 --batch-max-wait-ms 2"

# wrk calls done() once at the end of a run; latencies are in microseconds. Before that, wrk
# (src/wrk.c, stats_correct) "corrects" its histogram for coordinated omission: every sample
# n >= 2x also adds samples at n - x, n - 2x, ... (all > x), where x = duration / (requests /
# connections) is the mean interval between one connection's requests. Those synthetic samples
# model a client that sends at a fixed rate; this closed-loop test does not, and at c1 a single
# 10 ms stall turns into hundreds of fake slow samples. So done() also undoes the correction and
# reports the measured percentiles ("p50_ms", ...) next to wrk's own ("wrk_p50_ms", ...).
LUA_DONE = """
local connections = __CONNECTIONS__

local function percentile(values, counts, total, p)
  local rank = math.floor(p / 100 * total + 1)  -- wrk's round(p / 100 * count + 0.5)
  local seen = 0
  for _, v in ipairs(values) do
    seen = seen + counts[v]
    if seen >= rank then return v end
  end
  return values[#values] or 0
end

done = function(summary, latency, requests)
  local e = summary.errors
  local seconds = summary.duration / 1e6
  local values, corrected, wrk_samples = {}, {}, 0
  for i = 1, #latency do
    local v, c = latency(i)
    values[#values + 1] = v
    corrected[v] = c
    wrk_samples = wrk_samples + c
  end
  local per_connection = math.floor(summary.requests / connections)
  local x = per_connection > 0 and math.floor(summary.duration / per_connection) or 0
  local lo, hi = latency.min, latency.max
  local measured, tail = {}, {}  -- tail[m] = sum of measured[m + k x], k >= 1
  for m = hi, lo, -1 do
    local up = m + x
    local t = 0
    if x > 0 and up <= hi then t = (measured[up] or 0) + (tail[up] or 0) end
    tail[m] = t
    local c = corrected[m]
    if c then
      if x > 0 and m > x then c = c - t end
      measured[m] = c
    end
  end
  local kept, total, sum = {}, 0, 0
  for _, v in ipairs(values) do
    if measured[v] > 0 then
      kept[#kept + 1] = v
      total = total + measured[v]
      sum = sum + v * measured[v]
    end
  end
  io.write(string.format(
    '__MARKER__{"requests": %d, "duration_s": %.6f, "requests_per_s": %.3f, '
    .. '"p50_ms": %.4f, "p90_ms": %.4f, "p99_ms": %.4f, "max_ms": %.4f, "mean_ms": %.4f, "samples": %d, '
    .. '"wrk_p50_ms": %.4f, "wrk_p90_ms": %.4f, "wrk_p99_ms": %.4f, "wrk_mean_ms": %.4f, "wrk_samples": %d, '
    .. '"correction_interval_ms": %.4f, "errors": %d, "errors_socket": %d, "errors_status": %d}\\n',
    summary.requests, seconds, summary.requests / seconds,
    percentile(kept, measured, total, 50) / 1e3, percentile(kept, measured, total, 90) / 1e3,
    percentile(kept, measured, total, 99) / 1e3, hi / 1e3, total > 0 and sum / total / 1e3 or 0, total,
    latency:percentile(50) / 1e3, latency:percentile(90) / 1e3, latency:percentile(99) / 1e3,
    latency.mean / 1e3, wrk_samples,
    x / 1e3, e.connect + e.read + e.write + e.timeout + e.status,
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def lua_script(body: str | None, connections: int) -> str:
    """A wrk script: POST ``body`` as JSON (GET when None); ``done`` prints one JSON summary line."""
    head = ""
    if body is not None:
        if "]==]" in body:
            raise ValueError("request body cannot be quoted as a Lua long string")
        head = f'wrk.method = "POST"\nwrk.body = [==[{body}]==]\nwrk.headers["Content-Type"] = "application/json"\n'
    return head + LUA_DONE.replace("__CONNECTIONS__", str(connections)).replace("__MARKER__", MARKER)


def run_wrk(
    url: str, body: str | None, connections: int, duration: float, timeout_s: float, work: Path
) -> dict[str, Any]:
    """One wrk run (one thread, ``connections`` in flight); the summary its Lua ``done`` printed."""
    script = work / f"wrk_{'get' if body is None else 'post'}_c{connections}.lua"
    script.write_text(lua_script(body, connections))
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        f"--timeout={max(1, round(timeout_s))}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + timeout_s + 120)
    for line in proc.stdout.splitlines():
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER) :])
    raise RuntimeError(f"wrk printed no summary (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``trainengine serve BUNDLE`` in its own process on a free loopback port; stderr to a log file."""

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
            "--log-level",  # warning: no access log (uvicorn logs each request at info)
            "warning",
            *extra_args,
        ]
        pythonpath = os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        with open(log, "w") as err:
            self.proc = subprocess.Popen(
                self.cmd, env=dict(os.environ, PYTHONPATH=pythonpath), stdout=subprocess.DEVNULL, stderr=err
            )

    def wait_ready(self, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with status {self.proc.returncode}: {shlex.join(self.cmd)}\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                    if response.status == 200:
                        return
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


def cached_bundle(folder: Path) -> Path | None:
    """The newest complete bundle under ``folder`` (export writes ``<name>_<timestamp>/``), if any."""
    found = sorted(p.parent for p in folder.glob("*/manifest.json"))
    return found[-1] if found else None


def build_digits_bundle(work: Path) -> Path:
    """The digits MLP (64 -> 128 -> 128 -> 10, 300 Adam steps) exported as onnx + pytorch; cached."""
    folder = work / "digits_mlp_128x128"
    if (bundle := cached_bundle(folder)) is not None:
        return bundle
    import torch

    from trainengine.data import load_builtin
    from trainengine.export import create_export_bundle
    from trainengine.models import build_model
    from trainengine.tasks import TaskSpec

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
        return create_export_bundle(
            model,
            task_spec=TaskSpec.classification("digits", 10),
            formats=["onnx", "pytorch"],
            output_dir=folder,
            name="digits",
            reference_data=splits.train,
        )


def digits_example() -> list[float]:
    """One validation example of digits (64 floats), as the request body carries it."""
    from trainengine.data import load_builtin

    return [round(float(v), 6) for v in load_builtin("digits").val[0][0].tolist()]


def build_gpt_bundle(work: Path, d_model: int, n_layers: int, context: int, steps: int) -> Path:
    """A byte-level GPT trained for ``steps`` steps on this repository's text, exported (onnx + pytorch); cached."""
    folder = work / f"bytes_gpt_d{d_model}_l{n_layers}_ctx{context}"
    if (bundle := cached_bundle(folder)) is not None:
        return bundle
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
        return create_export_bundle(
            model,
            task_spec=TaskSpec.language_modeling("bytes"),
            formats=["onnx", "pytorch"],
            output_dir=folder,
            name="bytes-gpt",
            reference_data=train,
        )


def median_stats(runs: list[dict[str, Any]]) -> dict[str, float]:
    keys = ("requests_per_s", "p50_ms", "p90_ms", "p99_ms", "max_ms", "wrk_p50_ms", "wrk_p99_ms")
    out = {k: float(statistics.median(r[k] for r in runs)) for k in keys}
    out["errors"] = float(sum(r["errors"] for r in runs))
    out["requests"] = float(sum(r["requests"] for r in runs))
    return out


def fmt(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}" if value < 1 else f"{value:.2f}"


def print_cases(title: str, cases: dict[str, dict[str, float]]) -> None:
    print(f"\n{title}\n")
    print("| case | requests/s | p50 ms | p90 ms | p99 ms | max ms | wrk's CO-corrected p99 ms | errors |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, s in cases.items():
        print(
            f"| {name} | {s['requests_per_s']:.0f} | {fmt(s['p50_ms'])} | {fmt(s['p90_ms'])} | "
            f"{fmt(s['p99_ms'])} | {fmt(s['max_ms'])} | {fmt(s['wrk_p99_ms'])} | {s['errors']:.0f} |"
        )


def run_mlp(args: argparse.Namespace, work: Path, server_args: list[str]) -> dict[str, Any]:
    bundle = Path(args.bundle) if args.bundle else build_digits_bundle(work)
    body = json.dumps({"inputs": [digits_example()]}, separators=(",", ":"))
    bodies = {"health": None, "predict": body}
    cases = [("health", 16), ("predict", 16), ("health", 1), ("predict", 1)]
    raw: dict[str, list[dict[str, Any]]] = {f"{ep} c{c}": [] for ep, c in cases}
    server = Server(bundle, server_args, work / "server_mlp.log")
    try:
        server.wait_ready()
        for ep in ("health", "predict"):  # warm-up, discarded
            run_wrk(f"{server.url}/{ep}", bodies[ep], 16, args.warmup, args.timeout, work)
        for r in range(args.rounds):
            for conns in (16, 1):
                order = ("health", "predict") if r % 2 == 0 else ("predict", "health")
                for ep in order:
                    result = run_wrk(f"{server.url}/{ep}", bodies[ep], conns, args.duration, args.timeout, work)
                    raw[f"{ep} c{conns}"].append(result)
                    print(
                        f"round {r + 1}/{args.rounds} {ep} c{conns}: {result['requests_per_s']:.0f} req/s, "
                        f"p50 {result['p50_ms']:.3f} ms, p99 {result['p99_ms']:.3f} ms, errors {result['errors']}",
                        file=sys.stderr,
                    )
    finally:
        server.stop()
    summary = {name: median_stats(runs) for name, runs in raw.items()}
    h16, p16, p1 = summary["health c16"], summary["predict c16"], summary["predict c1"]
    pairs = list(zip(raw["predict c16"], raw["health c16"], strict=True))

    def target(metric: str, value: float, per_round: list[float], goal: str, met: bool) -> dict[str, Any]:
        return {
            "metric": metric,
            "value": value,
            "median_of_rounds": statistics.median(per_round),
            "target": goal,
            "met": met,
        }

    rps = p16["requests_per_s"] / h16["requests_per_s"]
    p99 = p16["p99_ms"] / h16["p99_ms"]
    wrk_p99 = p16["wrk_p99_ms"] / h16["wrk_p99_ms"]
    targets = [
        target(
            "predict/health requests/s at c16",
            rps,
            [p["requests_per_s"] / h["requests_per_s"] for p, h in pairs],
            ">= 0.8",
            rps >= 0.8,
        ),
        target(
            "predict p99 / health p99 at c16", p99, [p["p99_ms"] / h["p99_ms"] for p, h in pairs], "<= 1.5", p99 <= 1.5
        ),
        target(
            "same, wrk's CO-corrected p99",
            wrk_p99,
            [p["wrk_p99_ms"] / h["wrk_p99_ms"] for p, h in pairs],
            "<= 1.5",
            wrk_p99 <= 1.5,
        ),
        target(
            "predict p50 at c1 (ms)",
            p1["p50_ms"],
            [r["p50_ms"] for r in raw["predict c1"]],
            "<= 1",
            p1["p50_ms"] <= 1.0,
        ),
    ]
    errors = sum(s["errors"] for s in summary.values())
    print_cases(
        f"digits MLP, `{shlex.join(['trainengine', 'serve', 'BUNDLE', *server_args])}`; wrk -t1, "
        f"{args.rounds} round(s) of {args.duration:g} s per case, medians over rounds",
        summary,
    )
    print("\n| target | value | median of per-round ratios | target | met |")
    print("| --- | --- | --- | --- | --- |")
    for t in targets:
        print(
            f"| {t['metric']} | **{t['value']:.3f}** | {t['median_of_rounds']:.3f} | {t['target']} | "
            f"{'yes' if t['met'] else 'no'} |"
        )
    if errors:
        print(f"\nwarning: {errors:.0f} failed requests (see the errors column); the figures are suspect")
    return {
        "mode": "mlp",
        "model": "MLP 64-128-128-10 (digits)",
        "bundle": str(bundle),
        "body": body,
        "summary": summary,
        "targets": targets,
        "raw": raw,
    }


def run_batching(args: argparse.Namespace, work: Path, server_args: list[str]) -> dict[str, Any]:
    bundle = (
        Path(args.bundle)
        if args.bundle
        else build_gpt_bundle(work, args.gpt_d_model, args.gpt_layers, args.gpt_context, args.gpt_steps)
    )
    body = json.dumps({"inputs": [args.prompt], "max_new_tokens": args.max_new_tokens})
    variants = {
        "plain": server_args,
        "batched": server_args + shlex.split(args.batching_args),
    }
    raw: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    servers: dict[str, Server] = {}
    try:
        for name, extra in variants.items():  # both up at once: the idle one costs no CPU
            servers[name] = Server(bundle, extra, work / f"server_gpt_{name}.log")
        for server in servers.values():
            server.wait_ready()
        for server in servers.values():  # warm-up, discarded
            run_wrk(f"{server.url}/predict", body, args.concurrency_batching, args.warmup, args.timeout, work)
        for r in range(args.rounds):
            order = list(variants) if r % 2 == 0 else list(variants)[::-1]
            for name in order:
                result = run_wrk(
                    f"{servers[name].url}/predict", body, args.concurrency_batching, args.duration, args.timeout, work
                )
                raw[name].append(result)
                print(
                    f"round {r + 1}/{args.rounds} {name}: {result['requests_per_s']:.1f} req/s, "
                    f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, errors {result['errors']}",
                    file=sys.stderr,
                )
    finally:
        for server in servers.values():
            server.stop()
    summary = {name: median_stats(runs) for name, runs in raw.items()}
    ratio = summary["batched"]["requests_per_s"] / summary["plain"]["requests_per_s"]
    per_round = [b["requests_per_s"] / p["requests_per_s"] for b, p in zip(raw["batched"], raw["plain"], strict=True)]
    c = args.concurrency_batching
    print_cases(
        f"byte-level GPT (d_model {args.gpt_d_model}, {args.gpt_layers} layers, context {args.gpt_context}), "
        f"POST /predict {body} at c{c}; batched = `{args.batching_args}`; wrk -t1, {args.rounds} round(s) of "
        f"{args.duration:g} s, medians over rounds",
        {f"{name} c{c}": s for name, s in summary.items()},
    )
    print(
        f"\nbatched/plain requests/s: **{ratio:.2f}x** (median of per-round ratios {statistics.median(per_round):.2f}x)"
    )
    errors = sum(s["errors"] for s in summary.values())
    if errors:
        print(f"\nwarning: {errors:.0f} failed requests (see the errors column); the figures are suspect")
    return {
        "mode": "batching",
        "model": f"byte-level GPT, d_model {args.gpt_d_model}, {args.gpt_layers} layers, context {args.gpt_context}",
        "bundle": str(bundle),
        "body": body,
        "batching_args": args.batching_args,
        "summary": summary,
        "batched_over_plain_requests_per_s": ratio,
        "batched_over_plain_median_of_rounds": statistics.median(per_round),
        "raw": raw,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians over them (default 3)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of discarded warm-up per endpoint")
    parser.add_argument("--timeout", type=float, default=30.0, help="wrk's per-request timeout in seconds")
    parser.add_argument(
        "--server-args", default="", help='appended to every `trainengine serve` line, e.g. "--workers 2"'
    )
    parser.add_argument("--bundle", default=None, help="serve this bundle instead of building one")
    parser.add_argument(
        "--work", default=None, help="bundle cache and wrk scripts (default <tmp>/trainengine-serve-load)"
    )
    parser.add_argument("--json", default=None, help="output file (default benchmarks/results/serve_load_<date>.json)")
    group = parser.add_argument_group("batching mode")
    group.add_argument("--batching", action="store_true", help="GPT bundle, c16, plain vs --batching-args")
    group.add_argument("--batching-args", default=DEFAULT_BATCHING_ARGS, help=f"default {DEFAULT_BATCHING_ARGS!r}")
    group.add_argument("--concurrency-batching", type=int, default=16)
    group.add_argument("--prompt", default="some text")
    group.add_argument("--max-new-tokens", type=int, default=8)
    group.add_argument("--gpt-d-model", type=int, default=256)
    group.add_argument("--gpt-layers", type=int, default=4)
    group.add_argument("--gpt-context", type=int, default=256)
    group.add_argument("--gpt-steps", type=int, default=5, help="training steps (speed does not depend on them)")
    args = parser.parse_args()

    wrk = shutil.which("wrk")
    if wrk is None:
        sys.exit(
            "serve_load: wrk (the HTTP load generator) is not installed; install it with "
            "`apt-get install wrk` (as root), or run `make system-deps`"
        )
    wrk_version = subprocess.run([wrk, "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    work = Path(args.work) if args.work else Path(tempfile.gettempdir()) / "trainengine-serve-load"
    work.mkdir(parents=True, exist_ok=True)
    server_args = shlex.split(args.server_args)

    result = run_batching(args, work, server_args) if args.batching else run_mlp(args, work, server_args)

    import numpy
    import onnxruntime
    import torch
    import uvicorn

    out = {
        "date": date.today().isoformat(),
        **result,
        "config": {
            "duration_s": args.duration,
            "rounds": args.rounds,
            "warmup_s": args.warmup,
            "server_args": args.server_args,
            "wrk": "wrk -t1 --latency (one thread)",
        },
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
        },
        "versions": {
            "wrk": wrk_version[0] if wrk_version else "?",
            **{m.__name__: m.__version__ for m in (torch, numpy, onnxruntime, uvicorn)},
        },
    }
    target = (
        Path(args.json) if args.json else REPO / "benchmarks" / "results" / f"serve_load_{date.today():%Y%m%d}.json"
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(out, indent=1) + "\n")
    print(f"\nraw: {target}")


if __name__ == "__main__":
    main()
