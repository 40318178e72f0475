"""Checkpoint speed for a ~100M-parameter model state (weights + AdamW moments), on CPU.

Measures, in a temporary folder:

* synchronous save (write + fsync + SHA-256 of every file) and load (verify + read) time, MB/s;
* asynchronous save: the training-thread stall (copy of the state to CPU memory), cold (first
  save, buffers allocated) and warm (buffers reused), against the pure copy time of the same
  tensors (``tensor.clone()`` of every one); target: stall < copy time + 10 %;
* resume: read + verify + load into a fresh model and optimizer.

The model is a GPT (vocab 32768, context 1024, width 768, 12 heads) with as many layers as
``--params`` asks for (10 for the default 100e6); the optimizer state is AdamW's after one step,
so the checkpoint holds about 3x the parameters in tensors.

Run:  python benchmarks/checkpoint.py                  (about a minute on 2 CPU cores)
      python benchmarks/checkpoint.py --params 25e6 --json results.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from trainengine.checkpoint import CheckpointManager, flatten_state  # noqa: E402
from trainengine.models import GPT, GPTConfig, count_parameters  # noqa: E402

MB = 1e6


def build(params: float) -> tuple[GPT, torch.optim.Optimizer]:
    base = dict(vocab_size=32768, max_seq_len=1024, d_model=768, n_heads=12)
    embed = (base["vocab_size"] + base["max_seq_len"]) * base["d_model"]
    per_layer = 12 * base["d_model"] ** 2 + 13 * base["d_model"]
    n_layers = max(1, round((params - embed) / per_layer))
    torch.manual_seed(0)
    model = GPT(GPTConfig(**base, n_layers=n_layers))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for p in model.parameters():  # synthetic gradients: one real AdamW step without a forward pass
        p.grad = torch.full_like(p, 1e-3)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return model, opt


def state_of(opt: torch.optim.Optimizer) -> dict:
    return {"optimizer": opt.state_dict(), "rng": {"torch": torch.get_rng_state()}}


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=float, default=100e6, help="approximate parameter count (default 100e6)")
    parser.add_argument("--repeats", type=int, default=2, help="repeats of each measurement (median reported)")
    parser.add_argument("--dir", type=Path, default=None, help="folder for the checkpoints (default: a temp folder)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    reps = max(1, args.repeats)

    t_build, (model, opt) = timed(lambda: build(args.params))
    n_params = count_parameters(model)
    print(
        f"model: GPT, {n_params / 1e6:.1f}M parameters ({model.config.n_layers} layers), AdamW state after one step; "
        f"built in {t_build:.1f} s; torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs"
    )

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        manager = CheckpointManager(Path(tmp) / "ckpts", keep_best_k=0, keep_last_n=1)
        step = 0

        # --- synchronous save
        sync_times = []
        for _ in range(reps):
            step += 1
            dt, path = timed(lambda: manager.save(step=step, epoch=0, model=model, state=state_of(opt)))
            sync_times.append(dt)
        size = folder_bytes(path)
        tensor_bytes = sum(t.numel() * t.element_size() for t in flatten_state(state_of(opt))[0].values()) + sum(
            t.numel() * t.element_size() for t in {p.data_ptr(): p for p in model.state_dict().values()}.values()
        )

        # --- load
        read_times = [timed(lambda: manager.read(path))[0] for _ in range(reps)]
        read_nv_times = [timed(lambda: manager.read(path, verify=False))[0] for _ in range(reps)]
        verify_times = [timed(lambda: manager.verify(path))[0] for _ in range(reps)]

        # --- pure copy of the same tensors (what the training thread cannot avoid)
        def copy_all():
            tensors = flatten_state(state_of(opt))[0]
            tensors.update(flatten_state(dict(model.state_dict()))[0])
            return {k: v.clone() for k, v in tensors.items()}

        copy_times = []
        for _ in range(reps + 1):
            dt, copied = timed(copy_all)
            copy_times.append(dt)
            del copied

        # --- asynchronous save: first (cold buffers) then warm
        stalls, writes = [], []
        for _ in range(reps + 1):
            step += 1
            handle = manager.save_async(step=step, epoch=0, model=model, state=state_of(opt))
            handle.wait()
            stalls.append(handle.stall_seconds)
            writes.append(handle.write_seconds)
        manager.close()

        # --- resume into a fresh model and optimizer
        fresh, fresh_opt = build(args.params)
        resume_time, meta = timed(lambda: manager.load_checkpoint(manager.get_latest_checkpoint(), fresh, fresh_opt))
        assert meta.step == step
        assert torch.equal(fresh.lm_head.weight, model.lm_head.weight)
        assert torch.equal(fresh_opt.state_dict()["state"][0]["exp_avg_sq"], opt.state_dict()["state"][0]["exp_avg_sq"])

    med = statistics.median
    copy = med(copy_times)
    warm_stall = med(stalls[1:]) if len(stalls) > 1 else stalls[0]
    results = {
        "device": "cpu",
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "parameters": n_params,
        "checkpoint_bytes": size,
        "tensor_bytes": tensor_bytes,
        "sync_save_s": med(sync_times),
        "sync_save_MBps": size / MB / med(sync_times),
        "read_verified_s": med(read_times),
        "read_verified_MBps": size / MB / med(read_times),
        "read_unverified_s": med(read_nv_times),
        "verify_s": med(verify_times),
        "copy_s": copy,
        "async_stall_first_s": stalls[0],
        "async_stall_warm_s": warm_stall,
        "async_write_s": med(writes),
        "stall_over_copy_first": stalls[0] / copy,
        "stall_over_copy_warm": warm_stall / copy,
        "target_stall_over_copy": 1.10,
        "resume_s": resume_time,
    }
    rows = [
        ("checkpoint size", f"{size / MB:,.0f} MB", f"{tensor_bytes / MB:,.0f} MB of tensors"),
        ("sync save (write+fsync+sha256)", f"{results['sync_save_s']:.2f} s", f"{results['sync_save_MBps']:,.0f} MB/s"),
        ("load (verify + read)", f"{results['read_verified_s']:.2f} s", f"{results['read_verified_MBps']:,.0f} MB/s"),
        ("  of which verify (sha256)", f"{results['verify_s']:.2f} s", ""),
        ("  read without verify", f"{results['read_unverified_s']:.2f} s", ""),
        ("pure copy (clone every tensor)", f"{copy:.3f} s", f"{tensor_bytes / MB / copy:,.0f} MB/s"),
        ("async stall, first save", f"{stalls[0]:.3f} s", f"{results['stall_over_copy_first']:.2f}x copy"),
        ("async stall, later saves", f"{warm_stall:.3f} s", f"{results['stall_over_copy_warm']:.2f}x copy"),
        ("async background write", f"{results['async_write_s']:.2f} s", "off the training thread"),
        ("resume (read + load model/opt)", f"{resume_time:.2f} s", ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\n{'measure':<{width}}  {'time':>10}  note")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>10}  {note}")
    verdict = "meets" if warm_stall <= 1.10 * copy else "MISSES"
    print(
        f"\nasync stall target (< copy time + 10%): later saves {verdict} it ({results['stall_over_copy_warm']:.2f}x); "
        f"first save {results['stall_over_copy_first']:.2f}x (allocates its buffers)"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
