"""Process reward model (issue 15): learning on the CPU, LoRA vs full fine-tuning on one GPU.

Two modes, both through the public API (``TrainingConfig`` -> ``build_from_config`` ->
``trainengine.assembly.Trainer``, the same path as ``trainengine train``):

``cpu``  A synthetic data set in the published PRM800K JSON-lines format (``phase1_train.jsonl``,
         ``phase2_train.jsonl``) and the EQASC format, with a learnable signal: every step is a
         one-digit sum ``a + b = c``; a right sum is rated 1, a wrong one -1 (and ends the solution,
         as in PRM800K), a hedge ("maybe a + b is c") 0. By default (``--wrong far``) a wrong sum
         is out of range (20..99), so the result alone tells it; ``--wrong near`` draws it from
         0..18 (only doing the addition tells). A tiny random-initialised Llama backbone
         (hidden 64, 2 layers) with LoRA trains for a few hundred steps; validation at step 0 and
         at the end; then ``trainengine evaluate`` on the last checkpoint (per-data-set metrics).
         The test fixtures (``tests/fixtures/reward``) hold ~10 examples, too few to learn from,
         hence the generated set. Target: val/mse at the end >= 30% below step 0, all in <= 5 min.

``gpu``  A ~0.54B-parameter Llama-style backbone built from a config (random weights), bf16
         autocast, sequences of 1-2k tokens from synthetic PRM800K-format data; (a) LoRA r16 and
         (b) full fine-tuning on the same data, one after the other in one process: tokens/s
         (non-pad tokens of the timed steps / their wall time, synchronised), peak GPU memory
         (``torch.cuda.max_memory_allocated``, reset between runs) and the size on disk of one
         checkpoint folder; the LoRA / full checkpoint ratio (target <= 2%). ``--tiny`` shrinks
         everything for a CPU dry run.

Run:
    python benchmarks/prm_reward.py cpu --json benchmarks/results/prm_cpu.json
    python benchmarks/prm_reward.py gpu --out DIR            (on a CUDA machine)
    python benchmarks/prm_reward.py gpu --tiny --out /tmp/x  (CPU dry run of the GPU mode)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


# ----------------------------------------------------------------------------- synthetic data
#: How far a wrong sum is from the right one: "near" = any other value in 0..18 (only checking the
#: sum tells), "far" = 20..99 (out of range for two digits: the result alone tells).
WRONG = {"mode": "far"}


def _sum_step(rng: random.Random, kind: str) -> tuple[str, int]:
    """One step's text and its PRM800K rating: ``right`` (1), ``wrong`` (-1) or ``hedge`` (0)."""
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    c = a + b
    if kind == "wrong":
        pool = range(20, 100) if WRONG["mode"] == "far" else [v for v in range(19) if v != a + b]
        c = rng.choice(list(pool))
        return f"{a} + {b} = {c}", -1
    if kind == "hedge":
        return f"maybe {a} + {b} is {c}", 0
    return f"{a} + {b} = {c}", 1


def _prm800k_line(rng: random.Random, n_steps: int, pad_words: int = 0, p_wrong: float = 0.3) -> dict[str, Any]:
    """One PRM800K solution record: right / hedge steps, possibly ending at a wrong one."""
    steps: list[dict[str, Any]] = []
    finish = "solution"
    filler = " ".join(rng.choice(["we", "add", "the", "two", "digits", "next", "then"]) for _ in range(pad_words))
    for i in range(n_steps):
        kind = rng.choices(["right", "wrong", "hedge"], weights=[0.85 - p_wrong, p_wrong, 0.15])[0]
        text, rating = _sum_step(rng, kind)
        if filler:
            text = f"{filler} {text}"
        if rating == -1:
            # PRM800K: the labeller found an error; no chosen completion; the solution ends here.
            steps.append(
                {
                    "completions": [{"text": text, "rating": -1, "flagged": None}],
                    "human_completion": None,
                    "chosen_completion": None,
                }
            )
            finish = "found_error"
            break
        steps.append(
            {
                "completions": [{"text": text, "rating": rating, "flagged": None}],
                "human_completion": None,
                "chosen_completion": 0,
            }
        )
        if i == n_steps - 1:
            break
    problem = f"Problem {rng.randint(0, 10**9)}: check each sum."
    return {
        "labeler": "synthetic",
        "timestamp": "2026-01-01T00:00:00",
        "generation": None,
        "is_quality_control_question": False,
        "is_initial_screening_question": False,
        "question": {"problem": problem, "ground_truth_answer": "n/a"},
        "label": {"steps": steps, "total_time": 0, "finish_reason": finish},
    }


def _eqasc_line(rng: random.Random, qid: int) -> dict[str, Any]:
    """One EQASC question with labelled two-fact chains (valid = both sums right)."""
    chains = []
    for j in range(2):
        valid = rng.random() < 0.5
        f1, _ = _sum_step(rng, "right" if valid or rng.random() < 0.5 else "wrong")
        f2, _ = _sum_step(rng, "right" if valid else "wrong")
        chains.append(
            {
                "chain_id": f"q{qid}_{j}",
                "fact1": f1,
                "fact2": f2,
                "score": 0.5,
                "turk_label": {"label": "yes" if valid else "no"},
            }
        )
    return {
        "id": f"q{qid}",
        "answerKey": "A",
        "question": {
            "stem": f"Question {qid}: are these sums right?",
            "choices": [{"label": "A", "text": "yes", "chain_candidates": chains}],
        },
    }


def write_synthetic(
    folder: Path,
    n_solutions: int,
    *,
    seed: int = 0,
    min_steps: int = 2,
    max_steps: int = 6,
    pad_words: int = 0,
    p_wrong: float = 0.3,
    eqasc_questions: int = 0,
) -> dict[str, Any]:
    """Write ``prm800k/phase1_train.jsonl`` + ``phase2_train.jsonl`` (and ``eqasc.jsonl``) into ``folder``."""
    rng = random.Random(seed)
    prm = folder / "prm800k"
    prm.mkdir(parents=True, exist_ok=True)
    counts = {}
    for phase, n in ((1, n_solutions // 2), (2, n_solutions - n_solutions // 2)):
        with open(prm / f"phase{phase}_train.jsonl", "w") as fh:
            for _ in range(n):
                fh.write(json.dumps(_prm800k_line(rng, rng.randint(min_steps, max_steps), pad_words, p_wrong)) + "\n")
        counts[f"phase{phase}"] = n
    if eqasc_questions:
        with open(folder / "eqasc.jsonl", "w") as fh:
            for q in range(eqasc_questions):
                fh.write(json.dumps(_eqasc_line(rng, q)) + "\n")
        counts["eqasc_questions"] = eqasc_questions
    return counts


# ----------------------------------------------------------------------------- helpers
class EvalRecorder:
    """Keeps every evaluation's metrics by step."""

    def __init__(self) -> None:
        self.evals: list[dict[str, Any]] = []

    def on_eval_end(self, trainer: Any, metrics: dict[str, float]) -> None:
        self.evals.append({"step": int(trainer.state.step), **{k: float(v) for k, v in metrics.items()}})


def _du_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _machine() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }
    try:
        import peft
        import transformers

        info["transformers"] = transformers.__version__
        info["peft"] = peft.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# ----------------------------------------------------------------------------- CPU mode
def run_cpu(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    from trainengine.assembly import Trainer
    from trainengine.config import TrainingConfig
    from trainengine.engine import build_from_config

    torch.set_num_threads(args.threads or max(1, os.cpu_count() or 1))
    WRONG["mode"] = args.wrong
    t_start = time.perf_counter()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="prm_bench_"))
    if work.exists():
        shutil.rmtree(work)
    data_dir = work / "data"
    counts = write_synthetic(data_dir, args.solutions, seed=args.seed, eqasc_questions=args.eqasc_questions)
    cfg_dict = {
        "training": {
            "max_steps": args.steps,
            "batch_size": args.batch_size,
            "learning_rate": args.lr,
            "eval_interval_steps": args.eval_interval or args.steps,
            "eval_every_epoch": False,
            "eval_at_start": True,
            "max_grad_norm": 1.0,
            "seed": args.seed,
            "log_interval_steps": 50,
        },
        "optimizer": {"name": "adamw", "weight_decay": 0.01},
        "scheduler": {"name": "cosine", "warmup_steps": 20, "warmup_ratio": 0.0},
        "data": {
            "dataset": "prm",
            "prm800k_path": str(data_dir / "prm800k"),
            **(
                {"eqasc_path": str(data_dir / "eqasc.jsonl"), "eqasc_weight": 0.25, "prm800k_weight": 0.75}
                if args.eqasc_questions
                else {}
            ),
            "max_length": 256,
            "max_steps_per_example": 10,
            "val_fraction": 0.2,
        },
        "model": {
            "architecture": "reward_model",
            "mlp_hidden_dims": [128, 64],
            "mlp_dropout": 0.0,
            "backbone_config": {
                "model_type": "llama",
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 4,
                "max_position_embeddings": 512,
            },
        },
        "lora": {
            "enabled": True,
            "lora_r": 8,
            "lora_alpha": 16,
            "lora_dropout": 0.0,
            "target_modules": args.targets.split(",") if args.targets else [],
        },
        "checkpointing": {"enabled": True, "save_every_n_steps": args.steps, "folder_name": "checkpoint_step"},
        "tracking": {"output_dir": str(work / "outputs"), "experiment_name": "prm_cpu", "progress": "off"},
    }
    config = TrainingConfig.model_validate(cfg_dict)
    torch.manual_seed(config.training.seed)
    built = build_from_config(config)
    splits = built.splits
    val_labels = np.concatenate([splits.val[i]["labels"].numpy() for i in range(len(splits.val))])
    val_labels = val_labels[~np.isnan(val_labels)]
    train_labels = np.concatenate([splits.train[i]["labels"].numpy() for i in range(len(splits.train))])
    train_labels = train_labels[~np.isnan(train_labels)]
    const_mse = float(np.mean((val_labels - train_labels.mean()) ** 2))
    recorder = EvalRecorder()
    t_train = time.perf_counter()
    trainer = Trainer(built.model, built.model_config, config, built.task_spec, callbacks=[recorder])
    results = trainer.train(splits.train, splits.val)
    train_s = time.perf_counter() - t_train
    first, last = recorder.evals[0], recorder.evals[-1]
    drop = 1.0 - last["val/mse"] / first["val/mse"]
    ckpt = Path(str(results.get("last_checkpoint") or ""))
    if not ckpt.is_dir():
        found = sorted((work / "outputs").rglob("checkpoint_step_*"))
        ckpt = found[-1]
    eval_dir = work / "eval"
    cmd = [
        str(Path(sys.executable).parent / "trainengine"),
        "evaluate",
        "--checkpoint",
        str(ckpt),
        "--output_dir",
        str(eval_dir),
        "--n-bootstrap",
        "200",
    ]
    t_eval = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    eval_s = time.perf_counter() - t_eval
    if proc.returncode != 0:
        raise SystemExit(f"trainengine evaluate failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    metrics = json.loads((eval_dir / "eval_metrics.json").read_text())
    out = {
        "mode": "cpu",
        "date": date.today().isoformat(),
        "command": "python benchmarks/prm_reward.py cpu " + " ".join(sys.argv[2:]),
        "machine": _machine(),
        "data": {
            "synthetic_solutions": counts,
            "train_examples": len(splits.train),
            "val_examples": len(splits.val),
            "val_steps": int(val_labels.size),
            "train_target_mean": float(train_labels.mean()),
            "counts": splits.info.extra.get("counts"),
        },
        "model": {
            "parameters": sum(p.numel() for p in built.model.parameters()),
            "trainable": sum(p.numel() for p in built.model.parameters() if p.requires_grad),
        },
        "config": cfg_dict,
        "evals": recorder.evals,
        "val_mse_step0": first["val/mse"],
        "val_mse_final": last["val/mse"],
        "val_mse_constant_predictor": const_mse,
        "drop": drop,
        "target_drop": 0.30,
        "met": drop >= 0.30,
        "train_seconds": train_s,
        "evaluate_command": " ".join(cmd),
        "evaluate_seconds": eval_s,
        "eval_overall": metrics.get("overall"),
        "eval_per_dataset": metrics.get("per_dataset"),
        "eval_n": metrics.get("n"),
        "total_seconds": time.perf_counter() - t_start,
    }
    print(
        f"val/mse step 0 {first['val/mse']:.4f} -> step {last['step']} {last['val/mse']:.4f} "
        f"(drop {100 * drop:.1f}%; constant predictor {const_mse:.4f}); train {train_s:.1f}s, evaluate {eval_s:.1f}s"
    )
    print("per data set:", json.dumps(metrics.get("per_dataset"), indent=None))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return out


# ----------------------------------------------------------------------------- GPU mode
def backbone_config(tiny: bool) -> dict[str, Any]:
    if tiny:
        return {
            "model_type": "llama",
            "vocab_size": 512,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "max_position_embeddings": 2048,
        }
    # Llama-style ~0.54B: 24 x (4 d^2 attention + 3 d f MLP + 2 d norms) + V d embeddings + d.
    return {
        "model_type": "llama",
        "vocab_size": 32000,
        "hidden_size": 1024,
        "intermediate_size": 5504,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "num_key_value_heads": 16,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
    }


def count_backbone(c: dict[str, Any]) -> int:
    d, f, layers, v = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    kv = d * c["num_key_value_heads"] // c["num_attention_heads"]
    per_layer = d * d * 2 + d * kv * 2 + 3 * d * f + 2 * d
    return layers * per_layer + v * d + d


class StepClock:
    """Times optimizer steps ``warmup+1 .. warmup+timed`` and counts their non-pad tokens (on the device)."""

    def __init__(self, warmup: int, timed: int) -> None:
        self.warmup, self.timed = warmup, timed
        self.t0 = self.t1 = 0.0
        self.tokens: Any = None
        self.counting = False
        self.profiler: Any = None

    def _sync(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def attach(self, model: Any) -> None:
        def hook(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
            if self.counting and module.training:
                n = kwargs["attention_mask"].sum()
                self.tokens = n if self.tokens is None else self.tokens + n

        model.register_forward_pre_hook(hook, with_kwargs=True)

    def on_step_end(self, trainer: Any, output: Any) -> None:
        step = trainer.state.step
        if self.profiler is not None:
            self.profiler.step()
        if step == self.warmup:
            self._sync()
            self.t0 = time.perf_counter()
            self.counting = True
        elif step == self.warmup + self.timed:
            self._sync()
            self.t1 = time.perf_counter()
            self.counting = False


def run_one(kind: str, args: argparse.Namespace, data_dir: Path, ckpt_root: Path) -> dict[str, Any]:
    import gc

    import torch

    from trainengine.assembly import Trainer
    from trainengine.config import TrainingConfig
    from trainengine.engine import build_from_config

    cuda = torch.cuda.is_available()
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    total_steps = args.warmup + args.steps + 1  # the checkpoint is written after the timed window
    cfg_dict = {
        "training": {
            "max_steps": total_steps,
            "batch_size": args.batch_size,
            "learning_rate": 1e-4 if kind == "lora" else 2e-5,
            "eval_interval_steps": None,
            "eval_every_epoch": False,
            "eval_at_start": False,
            "max_grad_norm": 1.0,
            "precision": "bf16" if cuda else "fp32",
            "device": "cuda" if cuda else "cpu",
            "seed": 0,
            "log_interval_steps": 10,
        },
        "optimizer": {"name": "adamw", "weight_decay": 0.01},
        "scheduler": {"name": "cosine", "warmup_steps": 5, "warmup_ratio": 0.0},
        "data": {
            "dataset": "prm",
            "prm800k_path": str(data_dir / "prm800k"),
            "max_length": args.seq,
            "max_steps_per_example": 40,
            "val_fraction": 0.05,
        },
        "model": {
            "architecture": "reward_model",
            "mlp_hidden_dims": [1024, 256],
            "mlp_dropout": 0.1,
            "backbone_config": backbone_config(args.tiny),
        },
        "lora": {
            "enabled": kind.startswith("lora"),
            "lora_r": 16,
            "lora_alpha": 32,
            "lora_dropout": 0.0 if kind == "lora-nodrop" else 0.1,
        },
        "checkpointing": {
            "enabled": True,
            "save_every_n_steps": total_steps,
            "checkpoint_dir": str(ckpt_root / kind),
            "save_final_weights": False,
            "keep_best_k": 0,
            "keep_last_n": 1,
        },
        "tracking": {
            "output_dir": str(ckpt_root / "runs"),
            "experiment_name": f"prm_gpu_{kind}",
            "progress": "plain",
            "write_run_dir": False,
        },
    }
    config = TrainingConfig.model_validate(cfg_dict)
    torch.manual_seed(0)
    t_build = time.perf_counter()
    built = build_from_config(config)
    build_s = time.perf_counter() - t_build
    lengths = built.splits.train.lengths
    print(
        f"{kind}: {len(lengths)} training examples, tokens per example mean {lengths.mean():.0f}, "
        f"min {lengths.min()}, max {lengths.max()}",
        flush=True,
    )
    params = sum(p.numel() for p in built.model.parameters())
    trainable = sum(p.numel() for p in built.model.parameters() if p.requires_grad)
    clock = StepClock(args.warmup, args.steps)
    clock.attach(built.model)
    trainer = Trainer(built.model, built.model_config, config, built.task_spec, callbacks=[clock])
    profile = None
    if args.profile and cuda:
        from torch.profiler import ProfilerActivity, schedule
        from torch.profiler import profile as torch_profile

        # Three steps inside the timed window (the clock's on_step_end advances the schedule).
        profile = torch_profile(
            activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA],
            schedule=schedule(wait=args.warmup + 2, warmup=1, active=3, repeat=1),
        )
        clock.profiler = profile
        profile.__enter__()
    t_train = time.perf_counter()
    try:
        trainer.train(built.splits.train, None)
    finally:
        if profile is not None:
            profile.__exit__(None, None, None)
    train_s = time.perf_counter() - t_train
    if profile is not None:
        for key in ("self_cuda_time_total", "self_cpu_time_total"):
            table = profile.key_averages().table(sort_by=key, row_limit=14, max_name_column_width=60)
            print(f"--- {kind}: top ops by {key} (3 steps)\n{table}", flush=True)
            if args.out:
                with open(Path(args.out) / f"profile_{kind}.txt", "a") as fh:
                    fh.write(f"--- {key}\n{table}\n")
    seconds = clock.t1 - clock.t0
    tokens = int(clock.tokens.item()) if clock.tokens is not None else 0
    folders = sorted(p for p in (ckpt_root / kind).iterdir() if p.is_dir())
    ckpt = folders[-1]
    files = {p.name: p.stat().st_size for p in ckpt.iterdir() if p.is_file()}
    du = subprocess.run(["du", "-sb", str(ckpt)], capture_output=True, text=True).stdout.split()[0]
    out = {
        "kind": kind,
        "tokens_per_example_mean": float(lengths.mean()),
        "tokens_per_example_min": int(lengths.min()),
        "parameters": params,
        "trainable": trainable,
        "trainable_share": trainable / params,
        "build_seconds": build_s,
        "train_seconds_total": train_s,
        "timed_steps": args.steps,
        "timed_seconds": seconds,
        "timed_tokens": tokens,
        "tokens_per_s": tokens / seconds if seconds > 0 else None,
        "ms_per_step": 1000 * seconds / args.steps,
        "peak_memory_bytes": torch.cuda.max_memory_allocated() if cuda else None,
        "peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9 if cuda else None,
        "checkpoint_folder": ckpt.name,
        "checkpoint_bytes": int(du),
        "checkpoint_mb": int(du) / 1e6,
        "checkpoint_files": files,
    }
    print(json.dumps({k: v for k, v in out.items() if k != "checkpoint_files"}), flush=True)
    print("checkpoint files:", files, flush=True)
    del trainer, built, clock
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    shutil.rmtree(ckpt_root / kind, ignore_errors=True)
    return out


def run_gpu(args: argparse.Namespace) -> dict[str, Any]:
    if args.tiny:
        args.seq, args.batch_size, args.steps, args.warmup, args.solutions = 256, 2, 3, 2, 40
    work = Path(tempfile.mkdtemp(prefix="prm_gpu_"))
    # Long solutions (12-20 steps of ~seq/16 bytes, few wrong steps to end them early): most are
    # truncated (whole steps) to data.max_length, so batches are ~seq tokens per row.
    counts = write_synthetic(
        work / "data",
        args.solutions,
        seed=0,
        min_steps=12,
        max_steps=20,
        pad_words=max(1, args.seq // 80),
        p_wrong=0.02,
    )
    cfg = backbone_config(args.tiny)
    n_backbone = count_backbone(cfg)
    print(f"backbone {cfg} -> {n_backbone:,} parameters (computed)", flush=True)
    runs = [run_one(kind, args, work / "data", work / "ckpt") for kind in args.order.split(",")]
    by = {r["kind"]: r for r in runs}
    out: dict[str, Any] = {
        "mode": "gpu" + ("-tiny" if args.tiny else ""),
        "date": date.today().isoformat(),
        "command": "python benchmarks/prm_reward.py gpu " + " ".join(sys.argv[2:]),
        "machine": _machine(),
        "backbone_config": cfg,
        "backbone_parameters_computed": n_backbone,
        "seq_max_length": args.seq,
        "batch_size": args.batch_size,
        "warmup_steps": args.warmup,
        "synthetic_solutions": counts,
        "runs": runs,
    }
    for key in [k for k in by if k != "full" and "full" in by]:
        out[f"tokens_per_s_ratio_{key}_over_full"] = by[key]["tokens_per_s"] / by["full"]["tokens_per_s"]
    if "lora" in by and "full" in by:
        out["checkpoint_ratio_lora_over_full"] = by["lora"]["checkpoint_bytes"] / by["full"]["checkpoint_bytes"]
        out["model_file_ratio_lora_over_full"] = by["lora"]["checkpoint_files"].get("model.safetensors", 0) / max(
            1, by["full"]["checkpoint_files"].get("model.safetensors", 1)
        )
        out["tokens_per_s_ratio_lora_over_full"] = by["lora"]["tokens_per_s"] / by["full"]["tokens_per_s"]
        out["target_ratio"] = 0.02
        out["met"] = out["checkpoint_ratio_lora_over_full"] <= 0.02
        print(
            f"checkpoint LoRA/full {100 * out['checkpoint_ratio_lora_over_full']:.3f}% "
            f"(model file {100 * out['model_file_ratio_lora_over_full']:.3f}%), "
            f"tokens/s LoRA/full {out['tokens_per_s_ratio_lora_over_full']:.3f}",
            flush=True,
        )
    shutil.rmtree(work, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("cpu", help="learning on a synthetic PRM800K-format set + trainengine evaluate")
    c.add_argument("--steps", type=int, default=300)
    c.add_argument("--batch-size", type=int, default=16)
    c.add_argument("--lr", type=float, default=3e-3)
    c.add_argument("--solutions", type=int, default=400)
    c.add_argument("--eqasc-questions", type=int, default=100)
    c.add_argument("--eval-interval", type=int, default=50)
    c.add_argument("--targets", default="", help="lora.target_modules, comma-separated (empty = defaults)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--wrong", choices=["near", "far"], default="far", help="how wrong sums are drawn (see WRONG)")
    c.add_argument("--threads", type=int, default=0)
    c.add_argument("--workdir", default=None)
    c.add_argument("--keep", action="store_true", help="keep the work folder")
    c.add_argument("--json", default=None)
    g = sub.add_parser("gpu", help="LoRA vs full fine-tuning of a ~0.5B backbone")
    g.add_argument("--tiny", action="store_true", help="tiny sizes: a CPU dry run")
    g.add_argument("--seq", type=int, default=2048)
    g.add_argument("--batch-size", type=int, default=8)
    g.add_argument("--steps", type=int, default=30, help="timed steps")
    g.add_argument("--warmup", type=int, default=10)
    g.add_argument("--solutions", type=int, default=600)
    g.add_argument("--order", default="lora,full", help="runs in order: lora, lora-nodrop (lora_dropout 0), full")
    g.add_argument("--profile", action="store_true", help="print the top CUDA / CPU ops of 3 timed steps per run")
    g.add_argument("--out", default=None, help="folder for prm_gpu.json")
    g.add_argument("--json", default=None)
    args = parser.parse_args()
    result = run_cpu(args) if args.mode == "cpu" else run_gpu(args)
    path = args.json or (str(Path(args.out) / "prm_gpu.json") if getattr(args, "out", None) else None)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
