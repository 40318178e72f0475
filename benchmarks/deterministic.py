"""What ``training.deterministic: true`` costs: the same run with and without it, side by side.

Seed 000 says 5-10%. Each round trains the same model on the same data twice through the public
Trainer — once with ``training.deterministic`` off, once on (the order alternates by round) —
and the script reports the median per-round ratio of the timed steps (warm-up excluded), so a
noisy shared machine moves both runs alike.

Cases: the small MLP on digits (CPU and GPU), and a GPT (on the GPU: GPT-2-small shapes, bf16,
seq 1024; on the CPU: a tiny one).

Run:  python benchmarks/deterministic.py [--rounds 5] [--json benchmarks/results/deterministic_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from trainengine import TaskSpec, Trainer, TrainingConfigBuilder
from trainengine.models import GPT, MLP, GPTConfig


class Clock:
    """Times optimizer steps warmup+1 .. the last one (synchronised on CUDA)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.t0, self.t1, self.steps = warmup, 0.0, 0.0, 0

    def _sync(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_step_end(self, trainer: Any, output: Any) -> None:
        step = trainer.state.step
        if step == self.warmup:
            self._sync()
            self.t0 = time.perf_counter()
        elif step == trainer.total_steps:
            self._sync()
            self.t1 = time.perf_counter()
            self.steps = step - self.warmup


def _data(case: str, device: str) -> tuple[Any, Any, Any, int]:
    g = torch.Generator().manual_seed(0)
    if case == "mlp":
        x, y = torch.randn(64 * 200, 64, generator=g), torch.randint(0, 10, (64 * 200,), generator=g)
        return (x, y), lambda: MLP(64, 10, hidden_dims=[256, 256]), TaskSpec.classification("toy", 10), 64
    big = device == "cuda"
    cfg = (
        GPTConfig.gpt2_small(vocab_size=50304, max_seq_len=1024, bias=False)
        if big
        else GPTConfig(vocab_size=256, max_seq_len=64, d_model=64, n_heads=4, n_layers=2)
    )
    seq, n = cfg.max_seq_len, (16 * 60 if big else 8 * 100)
    tokens = torch.randint(0, cfg.vocab_size, (n, seq + 1), generator=g)
    data = (tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous())
    return data, lambda: GPT(cfg), TaskSpec.language_modeling("toy"), 16 if big else 8


def run(case: str, deterministic: bool, steps: int, warmup: int, device: str) -> float:
    data, make_model, task, batch = _data(case, device)
    torch.manual_seed(0)
    cfg = (
        TrainingConfigBuilder()
        .with_training(
            max_steps=warmup + steps, batch_size=batch, learning_rate=1e-3, deterministic=deterministic,
            device=device, precision="bf16" if device == "cuda" else "fp32", eval_every_epoch=False,
            compile=False,
        )
        .with_tracking(write_run_dir=False, progress="off", experiment_db=False)
        .with_checkpointing(enabled=False)
        .build()
    )  # fmt: skip
    clock = Clock(warmup)
    Trainer(make_model(), None, cfg, task, callbacks=[clock]).train(data)
    return 1000 * (clock.t1 - clock.t0) / clock.steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out: dict[str, Any] = {
        "date": date.today().isoformat(),
        "command": "python benchmarks/deterministic.py " + " ".join(sys.argv[1:]),
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "cases": {},
    }
    for case in ("mlp", "gpt"):
        off_ms, on_ms, ratios = [], [], []
        for r in range(args.rounds):
            order = (False, True) if r % 2 == 0 else (True, False)
            times = {d: run(case, d, args.steps, args.warmup, device) for d in order}
            off_ms.append(times[False])
            on_ms.append(times[True])
            ratios.append(times[True] / times[False])
        out["cases"][case] = {
            "ms_per_step_off": statistics.median(off_ms),
            "ms_per_step_on": statistics.median(on_ms),
            "ratio_on_over_off_median": statistics.median(ratios),
            "ratios": ratios,
        }
        print(f"{case} on {device}: deterministic costs {100 * (statistics.median(ratios) - 1):+.1f}% "
              f"({statistics.median(off_ms):.2f} -> {statistics.median(on_ms):.2f} ms/step)", flush=True)  # fmt: skip
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
