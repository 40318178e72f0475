"""Trainer overhead against a hand-written loop doing the same work.

Both loops train the same model (same initial weights), on the same data loader, with the same
fused AdamW, parameter groups, schedule, clipping and autocast setting. They alternate in one
process, so machine noise hits both; the figure that matters is the ratio of their median
ms/step. The Trainer additionally counts non-finite steps on the device and keeps its running
loss there (that is its job); evaluation, run directory and progress display are off, because a
raw loop has none of them.

Run:  python benchmarks/overhead.py                 (CPU: tiny MLP + small transformer)
      python benchmarks/overhead.py --device cuda   (GPU: MLP batch 64, the per-step overhead case)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from trainengine import TaskSpec, Trainer, TrainingConfigBuilder  # noqa: E402
from trainengine.config import OptimizerSection  # noqa: E402
from trainengine.data import build_dataloader  # noqa: E402
from trainengine.engine import Runtime, build_optimizer, build_scheduler  # noqa: E402
from trainengine.models import GPT, MLP, GPTConfig  # noqa: E402


def _case(name: str, device: str):
    g = torch.Generator().manual_seed(0)
    if name == "mlp":
        n, batch = 64 * 400, 64
        data = (torch.randn(n, 64, generator=g), torch.randint(0, 10, (n,), generator=g))
        make = lambda: MLP(64, 10, hidden_dims=(128, 128), dropout=0.0)  # noqa: E731
        return data, make, TaskSpec.classification("bench", 10), batch
    seq, batch = 64, 16
    n = batch * 400
    tokens = torch.randint(0, 256, (n, seq + 1), generator=g)
    data = (tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous())
    cfg = GPTConfig(vocab_size=256, max_seq_len=seq, d_model=128, n_heads=4, n_layers=2)
    return data, (lambda: GPT(cfg)), TaskSpec.language_modeling("bench"), batch


def _config(batch: int, steps: int, device: str, precision: str):
    return (
        TrainingConfigBuilder()
        .with_training(
            max_steps=steps,
            batch_size=batch,
            learning_rate=1e-3,
            max_grad_norm=1.0,
            device=device,
            precision=precision,
            eval_every_epoch=False,
            log_interval_steps=50,
        )
        .with_scheduler(name="cosine", warmup_steps=10)
        .with_data(check_overlap=False)
        .with_tracking(write_run_dir=False, progress="off")
        .build()
    )


class _Clock:
    """Times steps [warmup, steps) of a Trainer run, so set-up and warm-up are excluded."""

    def __init__(self, warmup: int, device: torch.device) -> None:
        self.warmup, self.device, self.t0, self.t1 = warmup, device, 0.0, 0.0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def on_step_end(self, trainer, output) -> None:
        # Stop at the last step, not at on_train_end: the end-of-run work (final evaluation,
        # writing weights) is not per-step overhead.
        if trainer.state.step == self.warmup:
            self._sync()
            self.t0 = time.perf_counter()
        elif trainer.state.step == trainer.total_steps:
            self._sync()
            self.t1 = time.perf_counter()


def run_trainer(data, make_model, task, cfg, warmup: int, steps: int) -> float:
    torch.manual_seed(0)
    model = make_model()
    clock = _Clock(warmup, torch.device(Runtime(cfg.training.device, cfg.training.precision).device))
    Trainer(model, None, cfg, task, callbacks=[clock]).train(data)
    return (clock.t1 - clock.t0) / (steps - warmup) * 1e3


def run_raw(data, make_model, task, cfg, warmup: int, steps: int) -> float:
    """The loop a careful user writes by hand, with the same components."""
    t = cfg.training
    rt = Runtime(t.device, t.precision)
    device = rt.device
    torch.manual_seed(t.seed)
    model = make_model()
    torch.manual_seed(0)
    model = make_model().to(device)
    opt = build_optimizer(model, OptimizerSection(), t.learning_rate, device)
    sched = build_scheduler(opt, name="cosine", total_steps=steps, warmup_steps=10)
    loader = build_dataloader(
        data, batch_size=t.batch_size, shuffle=True, seed=t.seed, pin_memory=device.type == "cuda"
    )
    lm = task.task_type == "language_modeling"
    step, t0 = 0, 0.0
    model.train()
    while step < steps:
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with rt.autocast():
                logits = model(x)
            loss = F.cross_entropy(logits.float().flatten(0, 1) if lm else logits.float(), y.flatten() if lm else y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.max_grad_norm, foreach=True)
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
            step += 1
            if step == warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t0 = time.perf_counter()
            if step >= steps:
                break
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / (steps - warmup) * 1e3


def measure(name: str, device: str, precision: str, rounds: int, steps: int, warmup: int) -> dict:
    data, make_model, task, batch = _case(name, device)
    cfg = _config(batch, steps, device, precision)
    trainer_ms, raw_ms = [], []
    for r in range(rounds):
        # Alternate which goes first, so neither always runs on a warmer machine.
        order = (run_trainer, run_raw) if r % 2 == 0 else (run_raw, run_trainer)
        for fn in order:
            ms = fn(data, make_model, task, cfg, warmup, steps)
            (trainer_ms if fn is run_trainer else raw_ms).append(ms)
    ratios = [a / b for a, b in zip(trainer_ms, raw_ms)]
    return {
        "case": name,
        "device": device,
        "precision": precision,
        "steps_timed": steps - warmup,
        "rounds": rounds,
        "trainer_ms_per_step": statistics.median(trainer_ms),
        "raw_ms_per_step": statistics.median(raw_ms),
        "ratio_of_medians": statistics.median(trainer_ms) / statistics.median(raw_ms),
        "median_ratio": statistics.median(ratios),
    }


def measure_tracking(
    name: str, device: str, rounds: int, steps: int, warmup: int, backends: list[str], out_dir: str
) -> dict:
    """The Trainer with its run directory, logs.jsonl and every local tracker on vs all off."""
    data, make_model, task, batch = _case(name, device)
    plain = _config(batch, steps, device, "fp32")
    plain.training.log_interval_steps = 10  # the default logging interval
    tracked = plain.model_copy(deep=True)
    tracked.tracking.write_run_dir = True
    tracked.tracking.output_dir = out_dir
    tracked.tracking.backends = backends
    off_ms, on_ms = [], []
    for r in range(rounds):
        order = (plain, tracked) if r % 2 == 0 else (tracked, plain)
        for cfg in order:
            ms = run_trainer(data, make_model, task, cfg, warmup, steps)
            (on_ms if cfg is tracked else off_ms).append(ms)
    return {
        "case": name,
        "backends": backends,
        "rounds": rounds,
        "steps_timed": steps - warmup,
        "tracking_off_ms_per_step": statistics.median(off_ms),
        "tracking_on_ms_per_step": statistics.median(on_ms),
        "ratio_of_medians": statistics.median(on_ms) / statistics.median(off_ms),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--cases", default="mlp,transformer")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--tracking",
        default=None,
        help="instead: Trainer with run dir + these trackers (e.g. jsonl,tensorboard) vs without",
    )
    args = parser.parse_args()
    if args.tracking:
        import tempfile

        results = []
        for name in args.cases.split(","):
            res = measure_tracking(
                name, args.device, args.rounds, args.steps, args.warmup, args.tracking.split(","), tempfile.mkdtemp()
            )
            results.append(res)
            print(
                f"{name:12s} tracking off {res['tracking_off_ms_per_step']:.3f} ms/step  on ({args.tracking}) "
                f"{res['tracking_on_ms_per_step']:.3f} ms/step  ratio {res['ratio_of_medians']:.3f}",
                flush=True,
            )
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        return
    results = []
    for name in args.cases.split(","):
        res = measure(name, args.device, args.precision, args.rounds, args.steps, args.warmup)
        results.append(res)
        print(
            f"{name:12s} {args.device:5s} trainer {res['trainer_ms_per_step']:.3f} ms/step  raw {res['raw_ms_per_step']:.3f} ms/step  "
            f"ratio {res['ratio_of_medians']:.3f} (median of per-round ratios {res['median_ratio']:.3f})",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
