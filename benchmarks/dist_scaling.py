"""Multi-GPU training through trainengine's own Trainer under torchrun: DDP scaling, FSDP2 memory, checkpoint stalls.

Every measured run is a fresh ``python -m torch.distributed.run --standalone --nproc-per-node N`` of this
same file (``--worker``), started by this script one after the other. Each rank writes a JSON file of its
measurements into the run's temporary folder; this process reads them back, prints a table and writes
everything to ``--out`` (after every launch, so a run cut short keeps what it measured), the launches' output
to the same name with ``.log``.

The model and data are those of ``benchmarks/gpu_peers.py`` (its ``_build``: trainengine's built-in ``GPT``,
no biases, tied head, synthetic tokens) and the Trainer set-up is its ``te_compiled`` runner's (``_te_config``:
fused AdamW with weight decay 0.1 and beta2 0.95, warm-up + cosine, clipping at 1.0, no evaluation), with the
run directory in a temporary folder, the progress display and the experiment database off, no checkpoints
(except in ``--mode ckpt``) and no final weights written.

Throughput is timed by a callback on ``on_step_end`` (gpu_peers' ``StepTimer``): the device is synchronised
at the end of warm-up step W and of the last step N only (every step in ``--mode ckpt``), and the global
tokens/s is ``world_size x batch x seq x (N - W)`` over the slowest rank's wall time for those steps. The
Trainer's own ``results["tokens_per_second"]`` is stored beside it but not used: it counts the warm-up and
compilation, and under several processes it is this rank's tokens only.

Modes:

  scaling  GPT-2 124M (d 768, 12 layers, 12 heads, vocab 50304, seq 1024), bf16, training.compile, strategy
           ddp, micro-batch 16 x 1024 tokens per GPU, 60 steps of which the first 10 are warm-up; once on 1
           process and once on 2. Prints tokens/s, ms/step, MFU and peak memory per rank, and the ratio
           "2-GPU tokens/s / 1-GPU tokens/s" (ideal 2.0).
  fsdp     a 1.01B-parameter GPT (d 2048, 18 layers, 16 heads, vocab 50304, seq 1024), random weights, bf16,
           compile on (--no-compile: off), micro-batch 8 x 1024 per GPU, 40 steps (10 warm-up), 2 processes;
           once with distributed.strategy ddp and once with fsdp2. Prints peak memory per GPU and tokens/s
           of each; an out-of-memory failure is recorded as that run's result ("OOM").
  ckpt     the same model under fsdp2 (--ckpt-strategy), 30 steps, a checkpoint every 10 (at 10, 20 and 30;
           the first two inside the timed window), once with checkpointing.async_save false and once true.
           Per save: the seconds the training thread spent in ``trainer.checkpointer.save`` (the device
           synchronised before and after: "blocked"), the excess of the step that contains the save over the
           median step (a background write competing with training shows here), the stall the engine itself
           recorded (``trainer.checkpointer.stalls``: async saves only) and the background write time. If the
           engine ignores async_save for a strategy, both rows block alike and it records no stalls (printed).

On the 2-GPU machine (torch 2.11, CUDA), from the repository root (times are estimates, not measured):

  python benchmarks/dist_scaling.py --mode scaling --out $OUT/scaling.json   # ~3 min: two compiled GPT-2 runs
  python benchmarks/dist_scaling.py --mode fsdp --out $OUT/fsdp.json         # ~4-5 min: ddp then fsdp2, 1B
  python benchmarks/dist_scaling.py --mode ckpt --out $OUT/ckpt.json         # ~5-6 min: sync then async saves

Seen on the CPU with the working tree of 2026-12-01 (engine problems, not this script's): a synchronous
sharded (fsdp2) save of a model with tied weights fails in DCP's safetensors writer ("Some tensors share
memory": transformer.wte.weight / lm_head.weight), so the ckpt mode's async_save false row errors unless
``--tie-weights no`` (an untied head: 1.11B parameters instead of 1.01B); and under ddp a save at a step that
is not a multiple of training.log_interval_steps deadlocks (rank 0 alone all-reduces the log window), so keep
``--ckpt-every`` a multiple of ``--log-interval``.

(``--workdir DIR`` puts the temporary run folders, checkpoints included, on another disk; a 1B checkpoint with
its AdamW state is ~12 GB and only the newest one is kept. ``--set KEY=VALUE`` adds a config override to every
run, e.g. ``--set distributed.fsdp_reshard_after_forward=false``.)

On a CPU (gloo, a tiny GPT, a few steps, torch.compile with the aot_eager backend): a smoke test of the logic.

  python benchmarks/dist_scaling.py --mode scaling --device cpu --tiny --out /tmp/ds_scaling.json
  python benchmarks/dist_scaling.py --mode fsdp --device cpu --tiny --out /tmp/ds_fsdp.json
  python benchmarks/dist_scaling.py --mode ckpt --device cpu --tiny --out /tmp/ds_ckpt.json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import itertools
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))  # this tree's trainengine, as the other benchmarks do

from gpu_peers import StepTimer, _build, _fmt, _sched_warmup, _te_config, _version  # noqa: E402

MODES = ("scaling", "fsdp", "ckpt")
GIB = 2**30

# Model shapes. "gpt2" is gpu_peers' GPT-2 small; "1b" reaches ~1.01B parameters (12 * 18 * 2048^2 in the
# blocks + 103M tied embedding); "tiny" is for CPU smoke tests.
SHAPES = {
    "gpt2": {"layers": 12, "heads": 12, "d": 768, "vocab": 50304, "seq": 1024},
    "1b": {"layers": 18, "heads": 16, "d": 2048, "vocab": 50304, "seq": 1024},
    "tiny": {"layers": 2, "heads": 2, "d": 64, "vocab": 512, "seq": 64},
}
# Per-mode defaults: (batch per process, steps, warm-up steps); --tiny: (4, 12, 4).
DEFAULTS = {"scaling": (16, 60, 10), "fsdp": (8, 40, 10), "ckpt": (8, 30, 10)}
TINY_DEFAULTS = (4, 12, 4)


# --------------------------------------------------------------------------------------------
# Worker side: one rank of one torchrun launch.
# --------------------------------------------------------------------------------------------


def _is_oom(exc: BaseException | None) -> bool:
    """An out-of-memory error anywhere in the exception's chain."""
    import torch

    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower():
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def _error_text(exc: BaseException) -> str:
    """The error's type and message, its start and end kept when long (DCP errors embed whole tracebacks)."""
    text = f"{type(exc).__name__}: {str(exc).strip()}"
    return text if len(text) <= 3000 else text[:1500] + "\n[...]\n" + text[-1500:]


def _first_line(text: Any, limit: int = 160) -> str:
    lines = [line.strip() for line in str(text or "").splitlines() if line.strip()]
    return lines[0][:limit] if lines else ""


def _peak_rss_gib() -> float:
    """This process's peak resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class _SaveTimer:
    """Times every ``trainer.checkpointer.save`` call on this rank (the training thread is blocked for it)."""

    def __init__(self, device: Any) -> None:
        self.device = device
        self.saves: list[dict[str, Any]] = []
        self._handles: list[Any] = []
        self.checkpointer: Any = None

    def _sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def install(self, trainer: Any) -> None:
        ck = trainer.checkpointer
        if ck is None:  # DDP ranks other than 0 do not checkpoint
            return
        self.checkpointer = ck
        original = ck.save

        def timed_save(trainer_: Any, tags: tuple[str, ...] = (), *, force_sync: bool = False) -> Any:
            before = getattr(ck, "_handle", None)
            self._sync()  # the step's queued work is not the save's
            t0 = time.perf_counter()
            path = original(trainer_, tags, force_sync=force_sync)
            t1 = time.perf_counter()
            self._sync()  # copies the save queued on the device, if any, block the next step too
            t2 = time.perf_counter()
            handle = getattr(ck, "_handle", None)
            new = handle is not None and handle is not before
            self.saves.append(
                {
                    "step": trainer_.state.step,
                    "call_s": t1 - t0,
                    "blocked_s": t2 - t0,
                    "engine_stall_s": getattr(handle, "stall_seconds", None) if new else None,
                    "engine_wait_previous_s": getattr(handle, "blocked_seconds", None) if new else None,
                }
            )
            self._handles.append(handle if new else None)
            return path

        ck.save = timed_save  # an instance attribute: the checkpointer's own step_end calls it

    def finish(self) -> None:
        """After training: the background write times of async saves (every write is done by now)."""
        for record, handle in zip(self.saves, self._handles, strict=True):
            record["background_write_s"] = getattr(handle, "write_seconds", None) if handle is not None else None


def worker(spec: dict[str, Any]) -> None:
    """Train once on this rank and write ``ranks/rank-<r>.json`` into the run folder."""
    import torch
    import yaml

    from trainengine import TrainingConfigBuilder
    from trainengine.assembly import Trainer

    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = spec["device"] == "cuda"
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
        torch.cuda.reset_peak_memory_stats(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    workdir = Path(spec["workdir"])
    out_path = workdir / "ranks" / f"rank-{rank:05d}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"rank": rank, "world_size": world, "device": str(device)}
    record["device_name"] = torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu"

    def write(extra: dict[str, Any]) -> None:
        record.update(extra)
        record["peak_rss_gib"] = _peak_rss_gib()
        if cuda:
            record["peak_allocated_gib"] = torch.cuda.max_memory_allocated(device) / GIB
            record["peak_reserved_gib"] = torch.cuda.max_memory_reserved(device) / GIB
        out_path.write_text(json.dumps(record))

    shapes = {**spec["shape"], "batch": spec["batch"], "precision": spec["precision"]}
    steps, warmup = spec["steps"], spec["warmup"]
    # Every rank builds the same weights and data (seed 0); the Trainer's sampler gives each rank its slice.
    # _build's "dry_run" branch is the one that takes the GPT's shape from ``shapes`` (at GPT-2-small shapes
    # it is the same GPTConfig as its gpt2_small(bias=False) branch).
    built = _build({"workload": "gpt", "dry_run": True}, shapes, spec["batch"] * world * (steps + 2))
    if not spec["tie_weights"]:  # a separate head weight (_build's GPT ties it to the token embedding)
        import dataclasses

        from trainengine.models import GPT

        torch.manual_seed(0)
        built["model"] = GPT(dataclasses.replace(built["model"].config, tie_weights=False))
        built["num_parameters"] = built["model"].num_parameters()
        built["flops_per_token"] = built["model"].num_flops_per_token(shapes["seq"])
    record["num_parameters"] = built["num_parameters"]
    record["flops_per_token"] = built["flops_per_token"]
    record["tie_weights"] = spec["tie_weights"]

    peers_spec = {
        "runner": "te_compiled" if spec["compile"] else "te_eager",
        "steps": steps,
        "lr": spec["lr"],
        "te_set": [],
    }
    builder = TrainingConfigBuilder.from_config(_te_config(peers_spec, shapes, str(workdir)))
    builder = (
        builder.with_training(device=spec["device"], seed=0, log_interval_steps=spec["log_interval"])
        .with_tracking(progress="off", experiment_db=False, write_run_dir=True, run_name="bench")
        .with_distributed(strategy=spec["strategy"], timeout_s=spec["collective_timeout_s"])
    )
    ck = spec.get("ckpt")
    if ck:
        builder = builder.with_checkpointing(
            enabled=True,
            checkpoint_dir=str(workdir / "checkpoints"),
            save_every_n_steps=ck["every"],
            save_every_n_epochs=None,
            async_save=ck["async"],
            keep_last_n=1,
            keep_best_k=0,
            save_final_weights=False,
            save_on_interrupt=False,
        )
    else:
        builder = builder.with_section("checkpointing", enabled=False, save_final_weights=False)
    overrides: dict[str, Any] = {}
    for item in spec["set"]:
        key, _, value = item.partition("=")
        overrides[key.strip()] = yaml.safe_load(value)
    if overrides:
        builder = builder.with_overrides(overrides)
    config = builder.build()

    timer = StepTimer(warmup, steps, device, spec["sync_every_step"])
    saves = _SaveTimer(device)

    class Probe:
        def on_train_start(self, trainer: Any) -> None:
            if ck:
                saves.install(trainer)

        def on_step_end(self, trainer: Any, output: Any) -> None:
            timer.tick(trainer.state.step)

        def on_exception(self, trainer: Any, exc: BaseException) -> None:
            # Record the failure before the engine tears the process group down: under NCCL a rank whose
            # peer is stuck in a collective may wait there, so a failed rank leaves at once instead.
            traceback.print_exception(exc)
            write({"error": _error_text(exc), "oom": _is_oom(exc)})
            if world > 1:
                sys.stderr.flush()
                os._exit(3)

    t0 = time.perf_counter()
    try:
        results = Trainer(built["model"], None, config, built["task"], callbacks=[Probe()]).train(built["data"])
    except BaseException as exc:
        if not out_path.exists():  # failed before the loop (set-up, sharding, moving the model)
            traceback.print_exc()
            write({"error": _error_text(exc), "oom": _is_oom(exc)})
        raise
    saves.finish()
    summary = timer.summary()
    ck_obj = saves.checkpointer
    write(
        {
            **summary,
            "marks": timer.marks,  # perf_counter at the end of steps warmup..steps
            "window_s": timer.marks[-1] - timer.marks[0],
            "wall_s": time.perf_counter() - t0,
            "steps": results["steps"],
            "final_loss": (results["history"]["train"] or [{}])[-1].get("loss"),
            "engine_tokens_per_second": results.get("tokens_per_second"),
            "engine_mfu": results.get("mfu"),
            "engine_train_time_s": results.get("train_time_s"),
            "saves": saves.saves,
            "engine_stalls_s": list(ck_obj.stalls) if ck_obj is not None else None,
        }
    )


# --------------------------------------------------------------------------------------------
# Parent side: launch, collect, tabulate.
# --------------------------------------------------------------------------------------------


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (read from /proc), the ones found last first."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out[::-1]


def _launch(spec: dict[str, Any], nproc: int, args: argparse.Namespace, log: Any, label: str) -> dict[str, Any]:
    """One torchrun launch of this file's worker; returns the per-rank records and the outcome."""
    workdir = Path(tempfile.mkdtemp(prefix=f"dist_scaling_{label}_", dir=args.workdir))
    spec = {**spec, "workdir": str(workdir)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(nproc),
        str(Path(__file__).resolve()),
        "--worker",
        json.dumps(spec),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if spec["device"] == "cpu":
        # inductor on the CPU needs a C++ toolchain and minutes per graph; aot_eager checks the same logic
        env.setdefault("TRAINENGINE_COMPILE_BACKEND", "aot_eager")
    log.write(f"=== {label}: {nproc} process(es)\n$ {' '.join(cmd[:-1])} '<spec>'\n{json.dumps(spec)}\n")
    log.flush()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    timed_out = False
    try:
        rc = proc.wait(timeout=args.run_timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        # The workers are torchrun's children in sessions of their own, and the engine turns SIGTERM into a
        # graceful stop that a rank stuck in a collective never reaches: kill this launch's processes by id.
        for pid in [*_descendants(proc.pid), proc.pid]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        rc = proc.wait()
    wall = time.perf_counter() - t0
    log.write(f"=== {label}: exit code {rc}, {wall:.1f} s{' (timed out)' if timed_out else ''}\n")
    log.flush()
    ranks = []
    for path in sorted((workdir / "ranks").glob("rank-*.json")):
        with contextlib.suppress(ValueError):  # a rank killed while writing
            ranks.append(json.loads(path.read_text()))
    ckpt_bytes = None
    if (workdir / "checkpoints").is_dir():
        ckpt_bytes = sum(p.stat().st_size for p in (workdir / "checkpoints").rglob("*") if p.is_file())
    if not args.keep_workdirs:
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "exit_code": rc,
        "timed_out": timed_out,
        "launch_wall_s": wall,
        "ranks": ranks,
        "checkpoint_bytes_on_disk": ckpt_bytes,
        "workdir": str(workdir) if args.keep_workdirs else None,
    }


def _summarise(run: dict[str, Any], spec: dict[str, Any], nproc: int, peak_flops: float | None) -> dict[str, Any]:
    """Global tokens/s (slowest rank's window), memory per rank, the outcome."""
    ranks = run["ranks"]
    errors = [r for r in ranks if "error" in r]
    out: dict[str, Any] = {"nproc": nproc, "strategy": spec["strategy"]}
    if errors or run["exit_code"] != 0 or len(ranks) < nproc or any("window_s" not in r for r in ranks):
        oom = any(r.get("oom") for r in errors)
        if oom:
            status = "OOM"
        elif run["timed_out"]:
            status = "timed out"
        elif errors:
            status = "error"
        else:
            status = f"exit code {run['exit_code']}"
        out["status"] = status
        out["error"] = errors[0]["error"] if errors else f"exit code {run['exit_code']}; see the log"
    else:
        out["status"] = "ok"
        timed = ranks[0]["timed_steps"]
        window = max(r["window_s"] for r in ranks)
        tokens = nproc * spec["batch"] * spec["shape"]["seq"] * timed
        out["tokens_per_second"] = tokens / window
        out["tokens_per_second_per_process"] = out["tokens_per_second"] / nproc
        out["ms_per_step"] = window / timed * 1e3
        out["ms_per_step_median_rank0"] = ranks[0]["ms_per_step_median"]
        fpt = ranks[0].get("flops_per_token")
        if peak_flops and fpt:
            out["mfu"] = out["tokens_per_second"] * fpt / (peak_flops * nproc)
        out["final_loss"] = ranks[0].get("final_loss")
        out["engine_tokens_per_second_rank0"] = ranks[0].get("engine_tokens_per_second")
        out["engine_mfu_rank0"] = ranks[0].get("engine_mfu")
    key = "peak_allocated_gib" if spec["device"] == "cuda" else "peak_rss_gib"
    out["memory_kind"] = key
    out["peak_memory_gib_per_rank"] = [r.get(key) for r in sorted(ranks, key=lambda r: r["rank"])]
    out["peak_reserved_gib_per_rank"] = [r.get("peak_reserved_gib") for r in sorted(ranks, key=lambda r: r["rank"])]
    out["num_parameters"] = ranks[0].get("num_parameters") if ranks else None
    out["launch_wall_s"] = run["launch_wall_s"]
    return out


def _mem(row: dict[str, Any]) -> str:
    values = [v for v in row.get("peak_memory_gib_per_rank") or [] if v is not None]
    return " / ".join(f"{v:.2f}" for v in values) or "—"


def _tps(row: dict[str, Any]) -> str:
    return _fmt(row.get("tokens_per_second"), ",.0f")


def _ckpt_saves(run: dict[str, Any]) -> list[dict[str, Any]]:
    """Per save: rank 0's timings, the slowest rank's blocked time, and the excess of the step containing it."""
    ranks = sorted(run["ranks"], key=lambda r: r["rank"])
    if not ranks or not ranks[0].get("saves"):
        return []
    r0 = ranks[0]
    marks = r0.get("marks") or []
    first = r0["steps"] - r0["timed_steps"]  # the step whose end marks[0] is (the last warm-up step)
    gaps = {first + i + 1: b - a for i, (a, b) in enumerate(itertools.pairwise(marks))}  # step -> its time
    save_steps = {s["step"] for s in r0["saves"]}
    plain = [g for step, g in gaps.items() if step - 1 not in save_steps]
    median = statistics.median(plain) if plain else None
    rows = []
    for i, save in enumerate(r0["saves"]):
        per_rank = [r["saves"][i]["blocked_s"] for r in ranks if len(r.get("saves") or []) > i]
        gap = gaps.get(save["step"] + 1)
        rows.append(
            {
                **save,
                "blocked_s_max_rank": max(per_rank) if per_rank else None,
                "next_step_excess_s": gap - median if gap is not None and median is not None else None,
                "median_step_s": median,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=MODES, required=False)
    parser.add_argument("--out", type=Path, default=None, help="JSON file for all results (default dist_<mode>.json)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda when available")
    parser.add_argument("--tiny", action="store_true", help="a tiny GPT, batch 4 x 64 tokens, 12 steps (smoke test)")
    parser.add_argument("--nprocs", default="1,2", help="scaling: process counts, in order (default 1,2)")
    parser.add_argument("--strategies", default="ddp,fsdp2", help="fsdp: strategies on 2 processes (default ddp,fsdp2)")
    parser.add_argument("--nproc", type=int, default=2, help="fsdp / ckpt: processes (default 2)")
    parser.add_argument("--batch-size", type=int, default=None, help="micro-batch per process (scaling 16, else 8)")
    parser.add_argument("--seq", type=int, default=None, help="tokens per sequence (default 1024; tiny 64)")
    parser.add_argument(
        "--steps", type=int, default=None, help="optimizer steps per run (scaling 60, fsdp 40, ckpt 30)"
    )
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first, compilation included (10)")
    parser.add_argument("--layers", type=int, default=None, help="override the model's layers")
    parser.add_argument("--d-model", type=int, default=None, help="override the model's width")
    parser.add_argument("--heads", type=int, default=None, help="override the model's heads")
    parser.add_argument("--vocab", type=int, default=None, help="override the vocabulary size")
    parser.add_argument(
        "--tie-weights",
        choices=["yes", "no"],
        default="yes",
        help="share the head's weight with the token embedding (the built-in GPT's default; yes)",
    )
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--no-compile", action="store_true", help="training.compile false (default true)")
    parser.add_argument("--lr", type=float, default=6e-4)
    parser.add_argument("--ckpt-every", type=int, default=None, help="ckpt: save every N steps (default 10; tiny 4)")
    parser.add_argument("--ckpt-strategy", default="fsdp2", choices=["fsdp2", "ddp", "none"], help="ckpt: strategy")
    parser.add_argument("--ckpt-async", default="false,true", help="ckpt: async_save values, in order")
    parser.add_argument(
        "--log-interval",
        type=int,
        default=None,
        help="training.log_interval_steps (default 10; tiny 4). Under ddp keep --ckpt-every a multiple of it",
    )
    parser.add_argument("--sync-every-step", action="store_true", help="synchronise after every step (ckpt: always)")
    parser.add_argument(
        "--set", action="append", default=[], help="config override for every run, e.g. distributed.bucket_cap_mb=50"
    )
    parser.add_argument("--peak-flops", type=float, default=989e12, help="per-GPU bf16 dense peak for MFU (H200)")
    parser.add_argument("--collective-timeout-s", type=float, default=600.0, help="distributed.timeout_s")
    parser.add_argument("--run-timeout-s", type=float, default=540.0, help="kill a launch after this many seconds")
    parser.add_argument("--workdir", default=None, help="folder for the temporary run folders (default: system temp)")
    parser.add_argument("--keep-workdirs", action="store_true", help="keep the temporary run folders")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker is not None:
        worker(json.loads(args.worker))
        return
    if args.mode is None:
        parser.error("--mode is required")

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available (use --device cpu --tiny for a smoke test)")
    mode = args.mode
    batch, steps, warmup = TINY_DEFAULTS if args.tiny else DEFAULTS[mode]
    batch, steps, warmup = args.batch_size or batch, args.steps or steps, args.warmup or warmup
    if not 1 <= warmup < steps:
        parser.error(f"--warmup {warmup} must be at least 1 and below --steps {steps}")
    shape = dict(SHAPES["tiny" if args.tiny else "gpt2" if mode == "scaling" else "1b"])
    for key, value in (
        ("layers", args.layers),
        ("d", args.d_model),
        ("heads", args.heads),
        ("vocab", args.vocab),
        ("seq", args.seq),
    ):
        if value is not None:
            shape[key] = value
    ckpt_every = args.ckpt_every or (4 if args.tiny else 10)
    base = {
        "device": device,
        "shape": shape,
        "batch": batch,
        "steps": steps,
        "warmup": warmup,
        "precision": args.precision,
        "tie_weights": args.tie_weights == "yes",
        "compile": not args.no_compile,
        "lr": args.lr,
        "sync_every_step": args.sync_every_step or mode == "ckpt",
        "log_interval": args.log_interval or (4 if args.tiny else 10),
        "collective_timeout_s": args.collective_timeout_s,
        "set": args.set,
    }
    peak_flops = args.peak_flops if device == "cuda" else None
    gpus = torch.cuda.device_count() if device == "cuda" else None

    plan: list[tuple[str, int, dict[str, Any]]] = []  # (label, processes, spec)
    if mode == "scaling":
        for n in (int(x) for x in args.nprocs.split(",") if x.strip()):
            plan.append((f"ddp_{n}proc", n, {**base, "strategy": "ddp"}))
    elif mode == "fsdp":
        for strategy in (s.strip() for s in args.strategies.split(",") if s.strip()):
            plan.append((f"{strategy}_{args.nproc}proc", args.nproc, {**base, "strategy": strategy}))
    else:
        for value in (v.strip().lower() in ("1", "true", "yes", "on") for v in args.ckpt_async.split(",")):
            spec = {**base, "strategy": args.ckpt_strategy, "ckpt": {"every": ckpt_every, "async": value}}
            plan.append((f"{args.ckpt_strategy}_async_{str(value).lower()}", args.nproc, spec))

    out_path = args.out or Path(f"dist_{mode}.json")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    log_path = out_path.with_suffix(".log")
    meta = {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "mode": mode,
        "device_name": None,  # what the workers report (this process does not touch the GPUs)
        "gpus": gpus,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "versions": {k: _version(k) for k in ("torch", "triton", "trainengine")},
        "compile_backend": os.environ.get("TRAINENGINE_COMPILE_BACKEND")
        or ("aot_eager" if device == "cpu" else "inductor"),
        "scheduler_warmup_steps": _sched_warmup(steps),
        "peak_flops": peak_flops,
        **{k: v for k, v in base.items() if k != "set"},
        "set": args.set,
    }
    rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()

    def dump() -> None:
        meta["elapsed_s"] = time.perf_counter() - t_start
        out_path.write_text(json.dumps({"meta": meta, "rows": rows, "summary": summary(rows)}, indent=2))

    def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
        ok = {r["label"]: r for r in rows if r.get("status") == "ok"}
        s: dict[str, Any] = {}
        if mode == "scaling":
            one = next((r for r in ok.values() if r["nproc"] == 1), None)
            two = next((r for r in ok.values() if r["nproc"] == 2), None)
            if one and two:
                s["ratio_2_over_1_tokens_per_second"] = two["tokens_per_second"] / one["tokens_per_second"]
                s["scaling_efficiency"] = s["ratio_2_over_1_tokens_per_second"] / 2
        elif mode == "fsdp":
            ddp = next((r for r in rows if r["strategy"] == "ddp"), None)
            fsdp = next((r for r in rows if r["strategy"] == "fsdp2"), None)
            if ddp and fsdp:
                s["ddp_status"], s["fsdp2_status"] = ddp["status"], fsdp["status"]
                md = max((v for v in ddp.get("peak_memory_gib_per_rank") or [] if v is not None), default=None)
                mf = max((v for v in fsdp.get("peak_memory_gib_per_rank") or [] if v is not None), default=None)
                if md and mf and ddp["status"] == "ok":
                    s["fsdp2_over_ddp_peak_memory"] = mf / md
                if ddp.get("tokens_per_second") and fsdp.get("tokens_per_second"):
                    s["fsdp2_over_ddp_tokens_per_second"] = fsdp["tokens_per_second"] / ddp["tokens_per_second"]
        else:
            for r in rows:
                blocked = [x["blocked_s_max_rank"] for x in r.get("saves") or [] if x.get("blocked_s_max_rank")]
                if blocked:
                    s[r["label"]] = {
                        "mean_blocked_s_per_save": statistics.mean(blocked),
                        "mean_blocked_s_per_save_after_first": statistics.mean(blocked[1:]) if blocked[1:] else None,
                        "engine_recorded_async_stalls": bool(r.get("engine_stalls_s")),
                    }
        return s

    visible = f" ({gpus} GPUs visible)" if gpus is not None else ""
    print(f"{meta['command']}\n{device}{visible}, torch {meta['versions']['torch']}; log: {log_path}")
    with log_path.open("w") as log:
        for label, nproc, spec in plan:
            if device == "cuda" and gpus is not None and gpus < nproc:
                row: dict[str, Any] = {"label": label, "nproc": nproc, "strategy": spec["strategy"]}
                row.update(status=f"skipped: needs {nproc} GPUs, {gpus} visible")
                rows.append(row)
                print(f"{label:24s} {row['status']}", flush=True)
                continue
            run = _launch(spec, nproc, args, log, label)
            row = {"label": label, **_summarise(run, spec, nproc, peak_flops)}
            if "ckpt" in spec:
                row["async_save"] = spec["ckpt"]["async"]
                row["save_every_n_steps"] = spec["ckpt"]["every"]
                row["saves"] = _ckpt_saves(run)
                r0 = next((r for r in run["ranks"] if r["rank"] == 0), {})
                row["engine_stalls_s"] = r0.get("engine_stalls_s")
                row["checkpoint_bytes_on_disk"] = run["checkpoint_bytes_on_disk"]
            row["ranks"] = run["ranks"]
            meta["device_name"] = meta["device_name"] or next(
                (r["device_name"] for r in run["ranks"] if r.get("device_name")), None
            )
            rows.append(row)
            if row["status"] == "ok":
                print(
                    f"{label:24s} {_tps(row):>12s} tokens/s  {row['ms_per_step']:9.2f} ms/step  "
                    f"peak {_mem(row)} GiB ({row['memory_kind']})  launch {row['launch_wall_s']:.0f} s",
                    flush=True,
                )
            else:
                lines = [x.strip() for x in str(row.get("error") or "").splitlines() if x.strip()]
                shown = lines[:1] + (["..."] if len(lines) > 5 else []) + lines[max(1, len(lines) - 4) :]
                print(f"{label:24s} {row['status']}: " + "\n    ".join(shown), flush=True)
            dump()
    dump()

    # ---- the table
    print()
    if mode in ("scaling", "fsdp"):
        print(
            "| run | processes | strategy | status | tokens/s (global) | tokens/s per process | ms/step | MFU | "
            f"peak memory per rank, GiB ({'max_memory_allocated' if device == 'cuda' else 'peak RSS'}) |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in rows:
            print(
                f"| {r['label']} | {r['nproc']} | {r['strategy']} | {r['status']} | {_tps(r)} | "
                f"{_fmt(r.get('tokens_per_second_per_process'), ',.0f')} | {_fmt(r.get('ms_per_step'), '.2f')} | "
                f"{_fmt(r.get('mfu'), '.1%')} | {_mem(r)} |"
            )
    else:
        print(
            "| run | save at step | blocked s (slowest rank) | save call s (rank 0) | engine stall s | "
            "next step excess s | background write s |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for r in rows:
            if not r.get("saves"):
                print(f"| {r['label']} | — | {r['status']}: {_first_line(r.get('error'))} | | | | |")
            for x in r.get("saves") or []:
                print(
                    f"| {r['label']} | {x['step']} | {_fmt(x.get('blocked_s_max_rank'), '.3f')} | "
                    f"{_fmt(x.get('call_s'), '.3f')} | {_fmt(x.get('engine_stall_s'), '.3f')} | "
                    f"{_fmt(x.get('next_step_excess_s'), '.3f')} | {_fmt(x.get('background_write_s'), '.3f')} |"
                )
        for r in rows:
            size = r.get("checkpoint_bytes_on_disk")
            if r.get("status") == "ok":
                print(
                    f"{r['label']}: {_tps(r)} tokens/s over the timed steps (saves included), median step "
                    f"{_fmt((r['saves'] or [{}])[0].get('median_step_s'), '.3f')} s; one checkpoint "
                    f"{_fmt(size / 1e6 if size else None, ',.1f')} MB on disk; engine-recorded async stalls: "
                    f"{r.get('engine_stalls_s') or 'none'}"
                )
    s = summary(rows)
    print()
    if mode == "scaling":
        ratio = s.get("ratio_2_over_1_tokens_per_second")
        print(
            f"2-GPU tokens/s / 1-GPU tokens/s = {_fmt(ratio, '.3f')} (scaling efficiency "
            f"{_fmt(s.get('scaling_efficiency'), '.1%')}; ideal 2.000)"
        )
    elif mode == "fsdp":
        print(
            f"fsdp2 / ddp: peak memory {_fmt(s.get('fsdp2_over_ddp_peak_memory'), '.3f')}, tokens/s "
            f"{_fmt(s.get('fsdp2_over_ddp_tokens_per_second'), '.3f')} (ddp: {s.get('ddp_status')}, "
            f"fsdp2: {s.get('fsdp2_status')})"
        )
    else:
        for label, v in s.items():
            print(
                f"{label}: {v['mean_blocked_s_per_save']:.3f} s blocked per save (after the first: "
                f"{_fmt(v['mean_blocked_s_per_save_after_first'], '.3f')} s); engine recorded async stalls: "
                f"{'yes' if v['engine_recorded_async_stalls'] else 'no'}"
            )
    print(f"\n{meta['device_name']}; wrote {out_path} and {log_path} ({meta['elapsed_s']:.0f} s)")
    if any(r.get("status") not in ("ok", "OOM") and not str(r.get("status")).startswith("skipped") for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
