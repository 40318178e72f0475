"""GPT-2-small (124M) on one GPU: the Trainer against a raw compiled loop doing the same work.

Same model (GPT-2 small shapes: 12 layers, 12 heads, d_model 768, vocab 50304, seq 1024),
same synthetic token data, bf16 autocast, torch.compile, fused AdamW with the same parameter
groups, cosine schedule, clipping at 1.0. Reports tokens/s, MFU (against 989 TFLOP/s dense
bf16 unless --peak-flops is given) and peak memory for both, and their ratio.

Run (on a CUDA machine):  python benchmarks/gpu_gpt.py --batch-size 16 --steps 60 --warmup 20
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from trainengine import TaskSpec, Trainer, TrainingConfigBuilder  # noqa: E402
from trainengine.config import OptimizerSection  # noqa: E402
from trainengine.data import build_dataloader  # noqa: E402
from trainengine.engine import build_optimizer, build_scheduler  # noqa: E402
from trainengine.models import GPT, GPTConfig  # noqa: E402


def make_data(num_samples: int, seq: int, vocab: int):
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, vocab, (num_samples, seq + 1), generator=g)
    return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()


def gpt_config(seq: int) -> GPTConfig:
    return GPTConfig.gpt2_small(vocab_size=50304, max_seq_len=seq, bias=False)


class Clock:
    def __init__(self, warmup: int) -> None:
        self.warmup, self.t0, self.t1 = warmup, 0.0, 0.0

    def on_step_end(self, trainer, output) -> None:
        if trainer.state.step == self.warmup:
            torch.cuda.synchronize()
            self.t0 = time.perf_counter()
        elif trainer.state.step == trainer.total_steps:  # end-of-run work is not per-step cost
            torch.cuda.synchronize()
            self.t1 = time.perf_counter()


def run_trainer(data, args) -> dict:
    torch.manual_seed(0)
    torch.cuda.reset_peak_memory_stats()
    model = GPT(gpt_config(args.seq))
    cfg = (
        TrainingConfigBuilder()
        .with_training(
            max_steps=args.steps,
            batch_size=args.batch_size,
            learning_rate=6e-4,
            max_grad_norm=1.0,
            precision="bf16",
            compile=True,
            eval_every_epoch=False,
            log_interval_steps=args.log_interval,
        )
        .with_optimizer(weight_decay=0.1, beta2=0.95)
        .with_scheduler(name="cosine", warmup_steps=10)
        .with_data(check_overlap=False)
        .with_tracking(write_run_dir=False, progress="off")
        .build()
    )
    clock = Clock(args.warmup)
    Trainer(model, None, cfg, TaskSpec.language_modeling("synthetic"), callbacks=[clock]).train(data)
    seconds = clock.t1 - clock.t0
    return _summary("trainer", model, args, seconds)


def run_raw(data, args) -> dict:
    device = torch.device("cuda")
    torch.manual_seed(0)
    torch.cuda.reset_peak_memory_stats()
    model = GPT(gpt_config(args.seq)).to(device)
    opt = build_optimizer(model, OptimizerSection(weight_decay=0.1, beta2=0.95), 6e-4, device)
    sched = build_scheduler(opt, name="cosine", total_steps=args.steps, warmup_steps=10)
    compiled = torch.compile(model)
    loader = build_dataloader(data, batch_size=args.batch_size, shuffle=True, seed=42, pin_memory=True)
    step, t0 = 0, 0.0
    while step < args.steps:
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = compiled(x)
            loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
            step += 1
            if step % args.log_interval == 0:
                loss.item()  # a raw loop prints its loss now and then, too
            if step == args.warmup:
                torch.cuda.synchronize()
                t0 = time.perf_counter()
            if step >= args.steps:
                break
    torch.cuda.synchronize()
    return _summary("raw", model, args, time.perf_counter() - t0)


def _summary(name: str, model: GPT, args, seconds: float) -> dict:
    steps = args.steps - args.warmup
    tokens_per_second = steps * args.batch_size * args.seq / seconds
    flops = model.num_flops_per_token(args.seq)
    return {
        "loop": name,
        "ms_per_step": seconds / steps * 1e3,
        "tokens_per_second": tokens_per_second,
        "mfu": tokens_per_second * flops / args.peak_flops,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "flops_per_token": flops,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--log-interval", type=int, default=10)
    parser.add_argument("--peak-flops", type=float, default=989e12)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    data = make_data(args.batch_size * (args.steps + 5), args.seq, 50304)
    results = [run_raw(data, args), run_trainer(data, args), run_raw(data, args), run_trainer(data, args)]
    for r in results:
        print(
            f"{r['loop']:8s} {r['ms_per_step']:8.2f} ms/step  {r['tokens_per_second']:>10,.0f} tokens/s  "
            f"MFU {r['mfu']:.1%}  peak {r['peak_memory_gib']:.1f} GiB",
            flush=True,
        )
    raw = min(r["ms_per_step"] for r in results if r["loop"] == "raw")
    tr = min(r["ms_per_step"] for r in results if r["loop"] == "trainer")
    print(f"trainer/raw throughput ratio (best of 2 each): {raw / tr:.3f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
