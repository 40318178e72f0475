"""trainengine against a raw PyTorch loop, Lightning and the Hugging Face Trainer on one GPU.

Three workloads, each trained by several runners, every runner in a fresh process (a subprocess
of this script that prints one JSON line back), synchronised after every optimizer step, with W
warm-up steps (compilation included) and N timed steps:

  hf_gpt2  GPT-2 124M from transformers' ``GPT2Config`` (random init, SDPA attention, the
           dropout 0 unless --hf-dropout), seq 1024, micro-batch 16, bf16 autocast,
           fused AdamW, clipping at 1.0, synthetic tokens.
  gpt      trainengine's built-in ``GPT`` at GPT-2-small shapes (vocab 50304, d_model 768, 12 heads,
           12 layers, seq 1024, no biases), same training set-up; MFU = (6N + attention FLOPs,
           ``GPT.num_flops_per_token``) x tokens/s over --peak-flops (989e12: H100/H200 bf16 dense).
  mlp      the small-MLP per-step overhead case of benchmarks/overhead.py (64->128->128->10,
           batch 64, fp32 unless --mlp-precision).

Runners (not every one on every workload by default; --plan picks):
  raw_eager / raw_compiled   a hand-written loop; compiled = ``torch.compile`` of a module whose
                             forward returns the loss (the HF model computes its own loss; for the
                             built-in GPT and the MLP the cross-entropy is inside the graph too)
  te_eager / te_compiled     ``trainengine.assembly.Trainer`` with ``training.compile`` false/true,
                             tracking at its defaults (run directory + experiment DB, written under
                             a temporary folder); --te-set adds config overrides to both
  te_eager_bare              te_eager with the run directory and experiment DB off
  lightning_eager / lightning_compiled   Lightning Trainer (``torch.compile`` of the LightningModule)
  hf_eager / hf_compiled     Hugging Face Trainer (``torch_compile=True``)

Lightning and transformers are imported only here, inside the runners that use them; they are
never dependencies of the package.

Run (on a CUDA machine; writes gpu_peers.json under --out, default $OUT or benchmarks/results):
  python benchmarks/gpu_peers.py                 # the full table (about 8-9 minutes on an H200)
  python benchmarks/gpu_peers.py --quick         # raw compiled, trainengine compiled, Lightning
  python benchmarks/gpu_peers.py --dry-run       # CPU, tiny shapes, 3 steps: checks every runner
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

T_PROCESS_START = time.perf_counter()
REPO = Path(__file__).resolve().parents[1]
MARKER = "GPU_PEERS_RESULT "

ALL_RUNNERS = (
    "raw_eager",
    "raw_compiled",
    "te_eager",
    "te_compiled",
    "te_eager_bare",
    "lightning_eager",
    "lightning_compiled",
    "hf_eager",
    "hf_compiled",
)
WORKLOADS = ("hf_gpt2", "gpt", "mlp")

# Ordered (workload, runner) pairs: what the targets need first, so a run cut short by --budget-s
# still has them.
FULL_PLAN = [
    ("mlp", "raw_eager"),  # ~25 s each, mostly imports
    ("mlp", "te_eager"),
    ("mlp", "te_eager_bare"),
    ("mlp", "lightning_eager"),
    ("hf_gpt2", "raw_compiled"),  # ~60-70 s each, compile included
    ("hf_gpt2", "te_compiled"),
    ("hf_gpt2", "lightning_compiled"),
    ("hf_gpt2", "hf_compiled"),
    ("gpt", "raw_compiled"),
    ("gpt", "te_compiled"),
    # below: usually past the default --budget-s of a 10-minute device call; run with --plan
    ("hf_gpt2", "raw_eager"),
    ("hf_gpt2", "te_eager"),
    ("gpt", "raw_eager"),
    ("gpt", "te_eager"),
]
QUICK_PLAN = [  # the cheap MLP pair first: a quick run cut short by its budget loses a peer, not them
    ("mlp", "raw_eager"),
    ("mlp", "te_eager"),
    ("hf_gpt2", "raw_compiled"),
    ("hf_gpt2", "te_compiled"),
    ("hf_gpt2", "lightning_compiled"),
]
# Every runner once on the HF model, the rest where their code differs per workload.
DRY_PLAN = [("hf_gpt2", r) for r in ALL_RUNNERS] + [
    ("gpt", "raw_compiled"),
    ("gpt", "te_compiled"),
    ("gpt", "hf_eager"),
    ("mlp", "raw_eager"),
    ("mlp", "te_eager"),
    ("mlp", "lightning_eager"),
    ("mlp", "hf_eager"),
]

RUNNER_LABELS = {
    "raw_eager": "raw loop, eager",
    "raw_compiled": "raw loop, torch.compile (loss inside the graph)",
    "te_eager": "trainengine, eager (defaults)",
    "te_compiled": "trainengine, training.compile: true",
    "te_eager_bare": "trainengine, eager, run dir + experiment DB off",
    "lightning_eager": "Lightning Trainer",
    "lightning_compiled": "Lightning Trainer + torch.compile",
    "hf_eager": "HF Trainer",
    "hf_compiled": "HF Trainer, torch_compile=True",
}


# --------------------------------------------------------------------------------------------
# Worker side: one runner on one workload, in this (fresh) process.
# --------------------------------------------------------------------------------------------


class StepTimer:
    """Marks the end of optimizer steps; synchronises the device after each (or only at the ends)."""

    def __init__(self, warmup: int, steps: int, device: Any, sync_every_step: bool) -> None:
        self.warmup, self.steps, self.device, self.sync_every = warmup, steps, device, sync_every_step
        self.marks: list[float] = []
        self.first_step_s = math.nan
        self.last_step = 0

    def tick(self, step: int) -> None:
        """Call after optimizer step ``step`` (1-based) finished on the host."""
        import torch

        if step <= self.last_step:  # a framework calling twice for one step
            return
        self.last_step = step
        if self.device.type == "cuda" and (self.sync_every or step in (1, self.warmup, self.steps)):
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        if step == 1:
            self.first_step_s = now - T_PROCESS_START
        if self.warmup <= step <= self.steps:
            self.marks.append(now)

    def summary(self) -> dict[str, float]:
        timed = len(self.marks) - 1
        if timed < 1:
            raise RuntimeError(f"only {self.last_step} steps ran; expected {self.steps} (warm-up {self.warmup})")
        diffs = [(b - a) * 1e3 for a, b in zip(self.marks, self.marks[1:], strict=False)]
        median = statistics.median(diffs)
        # The slow tail: which timed steps (1-based optimizer step) took > 1.3x the median.
        slow = [(self.warmup + i + 1, round(d, 2)) for i, d in enumerate(diffs) if d > 1.3 * median]
        return {
            "timed_steps": timed,
            "ms_per_step": (self.marks[-1] - self.marks[0]) / timed * 1e3,
            "ms_per_step_median": median,
            "ms_per_step_max": max(diffs),
            "slow_steps": slow[:20],
            "first_step_s": self.first_step_s,
        }


def _patch_compile_for_dry_run() -> None:
    """On the CPU, compile with aot_eager (seconds) instead of inductor (minutes): logic only."""
    import torch

    original = torch.compile

    def compile_aot_eager(model: Any = None, **kwargs: Any) -> Any:
        kwargs["backend"] = "aot_eager"
        kwargs.pop("mode", None)
        kwargs.pop("options", None)
        if model is None:
            return lambda m: original(m, **kwargs)
        return original(model, **kwargs)

    torch.compile = compile_aot_eager  # type: ignore[assignment]  # dry run only


def _shapes(spec: dict[str, Any]) -> dict[str, Any]:
    """Batch, sequence and model sizes of a workload (tiny ones for --dry-run)."""
    tiny = spec["dry_run"]
    w = spec["workload"]
    if w == "mlp":
        return {"batch": 64, "seq": 1, "precision": spec["mlp_precision"]}
    if tiny:
        return {"batch": 4, "seq": 64, "precision": "bf16", "layers": 2, "heads": 2, "d": 64, "vocab": 512}
    return {
        "batch": spec["batch_size"],
        "seq": spec["seq"],
        "precision": "bf16",
        "layers": 12,
        "heads": 12,
        "d": 768,
        "vocab": 50257 if w == "hf_gpt2" else 50304,
    }


def _build(spec: dict[str, Any], shapes: dict[str, Any], num_samples: int) -> dict[str, Any]:
    """Model, data and the loss module of a workload.

    Returns a dict with ``model`` (what trainengine trains), ``loss_module`` (forward(x, y) ->
    scalar loss, for the raw loop and Lightning), ``hf_model`` + ``hf_dataset`` (for the HF
    Trainer), ``data`` ((x, y) CPU tensors), ``task`` (trainengine TaskSpec), ``flops_per_token``.
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    from trainengine.tasks import TaskSpec

    w = spec["workload"]
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if w == "mlp":
        from trainengine.models import MLP

        x = torch.randn(num_samples, 64, generator=g)
        y = torch.randint(0, 10, (num_samples,), generator=g)
        model = MLP(64, 10, hidden_dims=(128, 128), dropout=0.0)

        class MLPLoss(nn.Module):
            def __init__(self, inner: nn.Module) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
                return F.cross_entropy(self.inner(inputs).float(), labels)

        class MLPForHF(MLPLoss):
            def forward(self, inputs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]  # HF wants a dict
                return {"loss": super().forward(inputs, labels)}

        return {
            "model": model,
            "loss_module": MLPLoss(model),
            "hf_model": MLPForHF(model),
            "hf_dataset": _DictDataset(inputs=x, labels=y),
            "data": (x, y),
            "task": TaskSpec.classification("bench", 10),
            "flops_per_token": None,
            "num_parameters": sum(p.numel() for p in model.parameters()),
        }

    seq, vocab = shapes["seq"], shapes["vocab"]
    tokens = torch.randint(0, vocab, (num_samples, seq + 1), generator=g)
    x, y = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
    task = TaskSpec.language_modeling("synthetic")
    if w == "hf_gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        kw: dict[str, Any] = {}
        if spec["hf_dropout"] is not None:
            kw = dict.fromkeys(("resid_pdrop", "embd_pdrop", "attn_pdrop"), spec["hf_dropout"])
        cfg = GPT2Config(
            vocab_size=vocab,
            n_positions=seq,
            n_embd=shapes["d"],
            n_layer=shapes["layers"],
            n_head=shapes["heads"],
            bos_token_id=vocab - 1,  # GPT-2's 50256 at full size; inside the vocabulary when tiny
            eos_token_id=vocab - 1,
            **kw,
        )
        cfg._attn_implementation = "sdpa"
        model = GPT2LMHeadModel(cfg)
        if model.config._attn_implementation != "sdpa":
            raise RuntimeError(f"GPT-2 attention is {model.config._attn_implementation!r}, expected sdpa")

        class HFLoss(nn.Module):
            """The model computes its own loss (HF shifts the labels itself)."""

            def __init__(self, inner: nn.Module) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
                return self.inner(input_ids=input_ids, labels=input_ids).loss

        unique = {id(p): p for p in model.parameters()}
        n_matmul = sum(p.numel() for p in unique.values()) - model.transformer.wpe.weight.numel()
        return {
            "model": model,
            "loss_module": HFLoss(model),
            "hf_model": model,
            "hf_dataset": _DictDataset(input_ids=x, labels=x),
            "data": (x, y),
            "task": task,
            "flops_per_token": 6 * n_matmul + 12 * shapes["layers"] * shapes["d"] * seq,
            "num_parameters": sum(p.numel() for p in unique.values()),
        }

    from trainengine.models import GPT, GPTConfig

    if spec["dry_run"]:
        gcfg = GPTConfig(
            vocab_size=vocab, max_seq_len=seq, d_model=shapes["d"], n_heads=shapes["heads"], n_layers=shapes["layers"]
        )
    else:
        gcfg = GPTConfig.gpt2_small(vocab_size=vocab, max_seq_len=seq, bias=False)
    model = GPT(gcfg)

    class GPTLoss(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            logits = self.inner(input_ids)
            return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten())

    class GPTForHF(GPTLoss):
        def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]  # HF wants a dict
            return {"loss": super().forward(input_ids, labels)}

    return {
        "model": model,
        "loss_module": GPTLoss(model),
        "hf_model": GPTForHF(model),
        "hf_dataset": _DictDataset(input_ids=x, labels=y),
        "data": (x, y),
        "task": task,
        "flops_per_token": model.num_flops_per_token(seq),
        "num_parameters": model.num_parameters(),
    }


class _DictDataset:
    """A map-style dataset of dicts (what the HF Trainer's default collator stacks)."""

    def __init__(self, **columns: Any) -> None:
        self.columns = columns
        self.n = len(next(iter(columns.values())))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {k: v[i] for k, v in self.columns.items()}


def _adamw(module: Any, lr: float, fused: bool) -> Any:
    """Fused AdamW, weight decay 0.1 on matrices only, betas (0.9, 0.95) — what every runner uses."""
    import torch

    params = [p for p in module.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), fused=fused)


def _sched_warmup(steps: int) -> int:
    """Learning-rate warm-up steps: 10, fewer when a dry run trains only a few steps."""
    return min(10, steps - 1)


def _cosine(opt: Any, total: int, warmup: int) -> Any:
    import torch

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _loader(data: tuple[Any, Any], batch: int, pin: bool) -> Any:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    return DataLoader(
        TensorDataset(*data),
        batch_size=batch,
        shuffle=True,
        drop_last=True,
        pin_memory=pin,
        generator=torch.Generator().manual_seed(42),
    )


def _autocast(device: Any, precision: str) -> Any:
    import torch

    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def run_raw(spec: dict[str, Any], built: dict[str, Any], shapes: dict[str, Any], device: Any, timer: StepTimer) -> None:
    import torch

    loss_module = built["loss_module"].to(device)
    opt = _adamw(loss_module, spec["lr"], fused=True)
    sched = _cosine(opt, spec["steps"], _sched_warmup(spec["steps"]))
    step_fn = torch.compile(loss_module) if spec["runner"] == "raw_compiled" else loss_module
    loader = _loader(built["data"], shapes["batch"], device.type == "cuda")
    params = [p for p in loss_module.parameters() if p.requires_grad]
    loss_module.train()
    step = 0
    while step < spec["steps"]:
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with _autocast(device, shapes["precision"]):
                loss = step_fn(x, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
            step += 1
            if step % 10 == 0:
                loss.item()  # a raw loop prints its loss now and then, like everyone's logging
            timer.tick(step)
            if step >= spec["steps"]:
                break


def _te_config(spec: dict[str, Any], shapes: dict[str, Any], workdir: str) -> Any:
    import yaml

    from trainengine.config import TrainingConfigBuilder

    runner = spec["runner"]
    tracking: dict[str, Any] = {"output_dir": os.path.join(workdir, "runs")}
    if runner == "te_eager_bare":
        tracking.update(write_run_dir=False, experiment_db=False)
    builder = (
        TrainingConfigBuilder()
        .with_training(
            max_steps=spec["steps"],
            batch_size=shapes["batch"],
            learning_rate=spec["lr"],
            max_grad_norm=1.0,
            precision=shapes["precision"],
            compile=runner == "te_compiled",
            eval_every_epoch=False,
        )
        .with_optimizer(weight_decay=0.1, beta2=0.95)
        .with_scheduler(name="cosine", warmup_steps=_sched_warmup(spec["steps"]))
        .with_data(check_overlap=False)
        .with_tracking(**tracking)
    )
    overrides = {}
    for item in spec["te_set"]:
        key, _, value = item.partition("=")
        overrides[key.strip()] = yaml.safe_load(value)
    if overrides:
        builder = builder.with_overrides(overrides)
    return builder.build()


def run_trainengine(
    spec: dict[str, Any], built: dict[str, Any], shapes: dict[str, Any], device: Any, timer: StepTimer
) -> None:
    from trainengine.assembly import Trainer

    class Clock:
        def on_step_end(self, trainer: Any, output: Any) -> None:
            timer.tick(trainer.state.step)

    cfg = _te_config(spec, shapes, spec["workdir"])
    Trainer(built["model"], None, cfg, built["task"], callbacks=[Clock()]).train(built["data"])


def run_lightning(
    spec: dict[str, Any], built: dict[str, Any], shapes: dict[str, Any], device: Any, timer: StepTimer
) -> None:
    import torch

    try:
        import lightning.pytorch as pl
    except ImportError:
        import pytorch_lightning as pl  # the older package name

    lr, steps = spec["lr"], spec["steps"]

    class LitModule(pl.LightningModule):
        def __init__(self, loss_module: torch.nn.Module) -> None:
            super().__init__()
            self.loss_module = loss_module

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            return self.loss_module(x, y)

        def configure_optimizers(self) -> Any:
            opt = _adamw(self.loss_module, lr, fused=True)
            return {
                "optimizer": opt,
                "lr_scheduler": {"scheduler": _cosine(opt, steps, _sched_warmup(steps)), "interval": "step"},
            }

        def configure_gradient_clipping(self, optimizer: Any, *args: Any, **kwargs: Any) -> None:
            # Lightning's mixed-precision plugin refuses gradient_clip_val with a fused optimizer
            # (it assumes the optimizer unscales fp16 gradients itself), so clip here: what a
            # Lightning user with fused AdamW writes. Lightning calls this after the backward,
            # before the optimizer step, on every step.
            torch.nn.utils.clip_grad_norm_(self.parameters(), 1.0, foreach=True)

    class Clock(pl.Callback):
        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            timer.tick(trainer.global_step)

    lit: Any = LitModule(built["loss_module"])
    if spec["runner"] == "lightning_compiled":
        lit = torch.compile(lit)
    trainer = pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        precision="bf16-mixed" if shapes["precision"] == "bf16" else "32-true",
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=spec["workdir"],
        callbacks=[Clock()],
    )
    trainer.fit(lit, _loader(built["data"], shapes["batch"], device.type == "cuda"))


def run_hf(spec: dict[str, Any], built: dict[str, Any], shapes: dict[str, Any], device: Any, timer: StepTimer) -> None:
    from transformers import Trainer as HFTrainer
    from transformers import TrainerCallback, TrainingArguments

    class Clock(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            timer.tick(state.global_step)

    cuda = device.type == "cuda"
    args = TrainingArguments(
        output_dir=os.path.join(spec["workdir"], "hf"),
        max_steps=spec["steps"],
        per_device_train_batch_size=shapes["batch"],
        learning_rate=spec["lr"],
        weight_decay=0.1,
        adam_beta2=0.95,
        max_grad_norm=1.0,
        bf16=shapes["precision"] == "bf16",
        optim="adamw_torch_fused" if cuda else "adamw_torch",
        lr_scheduler_type="cosine",
        warmup_steps=_sched_warmup(spec["steps"]),
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        torch_compile=spec["runner"] == "hf_compiled",
        dataloader_pin_memory=cuda,
        use_cpu=not cuda,
        seed=0,
    )
    HFTrainer(model=built["hf_model"], args=args, train_dataset=built["hf_dataset"], callbacks=[Clock()]).train()


RUNNERS = {
    "raw": run_raw,
    "te": run_trainengine,
    "lightning": run_lightning,
    "hf": run_hf,
}


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one (workload, runner) in this process and return its measurements."""
    import torch

    sys.path.insert(0, spec["src"])
    if spec["dry_run"]:
        _patch_compile_for_dry_run()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    device = torch.device("cuda" if torch.cuda.is_available() and not spec["dry_run"] else "cpu")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    shapes = _shapes(spec)
    built = _build(spec, shapes, shapes["batch"] * (spec["steps"] + 2))
    timer = StepTimer(spec["warmup"], spec["steps"], device, spec["sync_every_step"])
    t0 = time.perf_counter()
    RUNNERS[spec["runner"].split("_")[0]](spec, built, shapes, device, timer)
    total = time.perf_counter() - t0
    out: dict[str, Any] = {"workload": spec["workload"], "runner": spec["runner"], **timer.summary()}
    items = shapes["batch"] * shapes["seq"]
    out["items_per_step"] = items
    out["tokens_per_second"] = items / out["ms_per_step"] * 1e3
    out["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    fpt = built["flops_per_token"]
    out["flops_per_token"] = fpt
    out["mfu"] = out["tokens_per_second"] * fpt / spec["peak_flops"] if fpt else None
    out["num_parameters"] = built["num_parameters"]
    import trainengine

    out["trainengine_from"] = str(Path(trainengine.__file__).parent)
    out["run_s"] = total
    out["process_s"] = time.perf_counter() - T_PROCESS_START
    out["batch"], out["seq"], out["precision"] = shapes["batch"], shapes["seq"], shapes["precision"]
    return out


# --------------------------------------------------------------------------------------------
# Parent side: the plan, fresh processes, the table and the ratios.
# --------------------------------------------------------------------------------------------


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _available(runner: str) -> bool:
    if runner.startswith("lightning"):
        return (
            importlib.util.find_spec("lightning") is not None
            or importlib.util.find_spec("pytorch_lightning") is not None
        )
    if runner.startswith("hf"):
        return (
            importlib.util.find_spec("transformers") is not None and importlib.util.find_spec("accelerate") is not None
        )
    return True


def _parse_plan(text: str) -> list[tuple[str, str]]:
    """``hf_gpt2=raw_compiled,te_compiled;mlp=raw_eager`` -> ordered (workload, runner) pairs."""
    plan = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        workload, _, runners = part.partition("=")
        workload = workload.strip()
        if workload not in WORKLOADS:
            raise SystemExit(f"--plan: unknown workload {workload!r}; choose from {', '.join(WORKLOADS)}")
        for r in filter(None, (r.strip() for r in runners.split(","))):
            if r not in ALL_RUNNERS:
                raise SystemExit(f"--plan: unknown runner {r!r}; choose from {', '.join(ALL_RUNNERS)}")
            plan.append((workload, r))
    if not plan:
        raise SystemExit("--plan is empty; e.g. --plan 'hf_gpt2=raw_compiled,te_compiled;mlp=raw_eager,te_eager'")
    return plan


def _is_compiled(runner: str) -> bool:
    return runner.endswith("_compiled")


def _run_one(spec: dict[str, Any], timeout: float, log: Any) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gpu_peers_") as workdir:
        spec = {**spec, "workdir": workdir}
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=workdir,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        except subprocess.TimeoutExpired as exc:
            err = (exc.stderr or b"").decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
            log.write(f"=== {spec['workload']} {spec['runner']}: timed out after {timeout:.0f} s\n{err}\n")
            return {"error": f"timed out after {timeout:.0f} s", "wall_s": time.perf_counter() - t0}
        wall = time.perf_counter() - t0
        log.write(f"=== {spec['workload']} {spec['runner']} rc={proc.returncode} {wall:.1f} s\n")
        log.write(proc.stdout[-20000:])
        log.write(proc.stderr[-20000:])
        log.flush()
        for line in reversed(proc.stdout.splitlines()):
            if line.startswith(MARKER):
                return {**json.loads(line[len(MARKER) :]), "wall_s": wall}
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-25:])
        return {"error": f"exit code {proc.returncode}:\n{tail}", "wall_s": wall}


def _combine(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (workload, runner): the median over rounds (the MLP case runs several)."""
    out = []
    keys = sorted(
        {(r["workload"], r["runner"]) for r in rows}, key=lambda k: (WORKLOADS.index(k[0]), ALL_RUNNERS.index(k[1]))
    )
    for w, r in keys:
        mine = [x for x in rows if (x["workload"], x["runner"]) == (w, r)]
        ok = [x for x in mine if "error" not in x and "skipped" not in x]
        if not ok:
            out.append({**mine[-1], "rounds": len(mine)})
            continue
        ms = statistics.median(x["ms_per_step"] for x in ok)
        best = min(ok, key=lambda x: abs(x["ms_per_step"] - ms))
        row = {**best, "rounds": len(ok), "ms_per_step": ms, "ms_per_step_rounds": [x["ms_per_step"] for x in ok]}
        row["tokens_per_second"] = row["items_per_step"] / ms * 1e3
        if row.get("flops_per_token"):
            row["mfu"] = row["tokens_per_second"] * row["flops_per_token"] / best["peak_flops"]
        out.append(row)
    return out


def _get(rows: list[dict[str, Any]], workload: str, runner: str) -> dict[str, Any] | None:
    for r in rows:
        if r["workload"] == workload and r["runner"] == runner and "ms_per_step" in r:
            return r
    return None


def _ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The figures the issue's Targets name, with the target and whether it is met."""
    out: list[dict[str, Any]] = []

    def add(name: str, value: float | None, op: str | None = None, bound: float | None = None, note: str = "") -> None:
        item: dict[str, Any] = {"name": name, "value": value}
        if op is not None and bound is not None:
            item["target"] = f"{op} {bound:g}" + (f" ({note})" if note else "")
            item["met"] = None if value is None else (value >= bound if op == ">=" else value <= bound)
        elif note:
            item["target"] = note
        out.append(item)

    def ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str) -> float | None:
        if a is None or b is None or a.get(key) is None or not b.get(key):
            return None
        return a[key] / b[key]

    te = _get(rows, "hf_gpt2", "te_compiled")
    raw = _get(rows, "hf_gpt2", "raw_compiled")
    peers = [p for p in (_get(rows, "hf_gpt2", "lightning_compiled"), _get(rows, "hf_gpt2", "hf_compiled")) if p]
    best_peer = max(peers, key=lambda p: p["tokens_per_second"]) if peers else None
    add("hf_gpt2: trainengine compiled / raw compiled, tokens/s", ratio(te, raw, "tokens_per_second"), ">=", 1.0)
    add(
        "hf_gpt2: trainengine compiled / faster of Lightning and HF Trainer compiled, tokens/s"
        + (f" (faster measured: {best_peer['runner']})" if best_peer else ""),
        ratio(te, best_peer, "tokens_per_second"),
        ">=",
        1.10,
        "aim",
    )
    add("hf_gpt2: trainengine compiled / raw compiled, peak memory", ratio(te, raw, "peak_memory_gib"), "<=", 1.0)
    gte, graw = _get(rows, "gpt", "te_compiled"), _get(rows, "gpt", "raw_compiled")
    add("gpt: trainengine compiled MFU", gte.get("mfu") if gte else None, ">=", 0.40, "bar; aim 0.45")
    add("gpt: raw compiled MFU", graw.get("mfu") if graw else None)
    add("gpt: trainengine compiled / raw compiled, tokens/s", ratio(gte, graw, "tokens_per_second"))
    add("gpt: trainengine compiled / raw compiled, peak memory", ratio(gte, graw, "peak_memory_gib"))
    mraw = _get(rows, "mlp", "raw_eager")
    add(
        "mlp: trainengine (defaults) / raw eager, ms/step",
        ratio(_get(rows, "mlp", "te_eager"), mraw, "ms_per_step"),
        "<=",
        1.10,
    )
    add(
        "mlp: trainengine (run dir + DB off) / raw eager, ms/step",
        ratio(_get(rows, "mlp", "te_eager_bare"), mraw, "ms_per_step"),
    )
    add("mlp: Lightning / raw eager, ms/step", ratio(_get(rows, "mlp", "lightning_eager"), mraw, "ms_per_step"))
    add("mlp: HF Trainer / raw eager, ms/step", ratio(_get(rows, "mlp", "hf_eager"), mraw, "ms_per_step"))
    return [o for o in out if o["value"] is not None or "met" in o]


def _fmt(v: Any, spec: str) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def markdown(rows: list[dict[str, Any]], ratios: list[dict[str, Any]]) -> str:
    lines = [
        "| workload | runner | ms/step | tokens/s (mlp: samples/s) | peak GiB | MFU | first step s | rounds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        label = RUNNER_LABELS[r["runner"]]
        if "ms_per_step" not in r:
            why = r.get("error") or r.get("skipped") or "?"
            lines.append(f"| {r['workload']} | {label} | {why.splitlines()[0][:80]} | | | | | |")
            continue
        tps = r["tokens_per_second"]
        tps_s = f"{tps / 1e3:,.1f}k" if tps >= 1e4 else f"{tps:,.0f}"
        lines.append(
            f"| {r['workload']} | {label} | {r['ms_per_step']:.2f} | {tps_s} | "
            f"{_fmt(r.get('peak_memory_gib'), '.2f')} | "
            f"{_fmt(r.get('mfu'), '.1%')} | {_fmt(r.get('first_step_s'), '.1f')} | {r['rounds']} |"
        )
    lines += ["", "| figure | value | target | met |", "| --- | --- | --- | --- |"]
    for q in ratios:
        met = q.get("met")
        lines.append(
            f"| {q['name']} | {_fmt(q['value'], '.3f')} | {q.get('target', '')} | "
            f"{'' if met is None else ('yes' if met else '**no**')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick", action="store_true", help="raw compiled, trainengine compiled, Lightning; fewer steps"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="CPU, tiny shapes, 3 steps, aot_eager: check every runner"
    )
    parser.add_argument(
        "--plan", default=None, help="'hf_gpt2=raw_compiled,te_compiled;mlp=raw_eager,te_eager' (ordered)"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="total steps per transformer run (default 65; quick 28)"
    )
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 15; quick 8)")
    parser.add_argument("--mlp-steps", type=int, default=None, help="total MLP steps (default 1100; quick 600)")
    parser.add_argument("--mlp-warmup", type=int, default=None, help="untimed MLP steps (default 100)")
    parser.add_argument("--mlp-rounds", type=int, default=None, help="MLP rounds, alternating order (default 1)")
    parser.add_argument("--mlp-precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=6e-4)
    parser.add_argument(
        "--hf-dropout", type=float, default=0.0, help="GPT-2's three dropouts (GPT2Config's own default is 0.1)"
    )
    parser.add_argument("--peak-flops", type=float, default=989e12, help="bf16 dense peak for MFU (H100/H200: 989e12)")
    parser.add_argument("--no-step-sync", action="store_true", help="synchronise only at the ends of the timed window")
    parser.add_argument(
        "--te-set",
        action="append",
        default=[],
        help="trainengine config override, e.g. training.compile_mode=max-autotune",
    )
    parser.add_argument(
        "--src",
        type=Path,
        default=REPO / "src",
        help="the trainengine source tree to measure (default: this repo's src)",
    )
    parser.add_argument("--budget-s", type=float, default=None, help="skip runners once this much time is spent")
    parser.add_argument(
        "--out", type=Path, default=None, help="folder for the JSON + log (default $OUT or benchmarks/results)"
    )
    parser.add_argument("--name", default=None, help="JSON file name (default gpu_peers[_quick|_dry].json)")
    parser.add_argument("--label", default="", help="free text stored in the JSON (e.g. 'before the engine changes')")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker is not None:
        result = worker(json.loads(args.worker))
        print(MARKER + json.dumps(result), flush=True)
        return

    mode = "dry" if args.dry_run else "quick" if args.quick else "full"
    steps = args.steps or {"dry": 3, "quick": 28, "full": 65}[mode]
    warmup = args.warmup or {"dry": 1, "quick": 8, "full": 15}[mode]
    mlp_steps = args.mlp_steps or {"dry": 3, "quick": 600, "full": 1100}[mode]
    mlp_warmup = args.mlp_warmup or {"dry": 1, "quick": 100, "full": 100}[mode]
    mlp_rounds = args.mlp_rounds or 1
    budget = args.budget_s if args.budget_s is not None else {"dry": 3600.0, "quick": 250.0, "full": 470.0}[mode]
    plan = _parse_plan(args.plan) if args.plan else {"dry": DRY_PLAN, "quick": QUICK_PLAN, "full": FULL_PLAN}[mode]
    if mlp_rounds > 1:  # later rounds of the MLP runners, in reverse order, after the first
        mlp = [p for p in plan if p[0] == "mlp"]
        extra = [p for i in range(1, mlp_rounds) for p in (mlp[::-1] if i % 2 else mlp)]
        last = max(i for i, p in enumerate(plan) if p[0] == "mlp")
        plan = plan[: last + 1] + extra + plan[last + 1 :]

    src = args.src.resolve()
    if not (src / "trainengine" / "__init__.py").is_file():
        raise SystemExit(f"--src {args.src}: no trainengine package there; give the folder that holds trainengine/")
    out_dir = args.out or Path(os.environ.get("OUT") or REPO / "benchmarks" / "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    name = args.name or {"dry": "gpu_peers_dry.json", "quick": "gpu_peers_quick.json", "full": "gpu_peers.json"}[mode]
    json_path = out_dir / name
    log_path = out_dir / (json_path.stem + "_log.txt")

    import torch

    meta = {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "mode": mode,
        "label": args.label,
        "device": torch.cuda.get_device_name(0)
        if torch.cuda.is_available() and mode != "dry"
        else platform.processor() or "cpu",
        "python": platform.python_version(),
        "versions": {
            k: _version(k) for k in ("torch", "transformers", "accelerate", "lightning", "pytorch-lightning", "triton")
        },
        "steps": steps,
        "warmup": warmup,
        "mlp_steps": mlp_steps,
        "mlp_warmup": mlp_warmup,
        "mlp_precision": args.mlp_precision,
        "batch_size": args.batch_size,
        "seq": args.seq,
        "hf_dropout": args.hf_dropout,
        "sync_every_step": not args.no_step_sync,
        "peak_flops": args.peak_flops,
        "te_set": args.te_set,
        "src": str(src),
        "budget_s": budget,
    }
    rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    with log_path.open("w") as log:
        for workload, runner in plan:
            elapsed = time.perf_counter() - t_start
            spec = {
                "workload": workload,
                "runner": runner,
                "dry_run": args.dry_run,
                "steps": mlp_steps if workload == "mlp" else steps,
                "warmup": mlp_warmup if workload == "mlp" else warmup,
                "batch_size": args.batch_size,
                "seq": args.seq,
                "lr": args.lr,
                "hf_dropout": args.hf_dropout,
                "mlp_precision": args.mlp_precision,
                "peak_flops": args.peak_flops,
                "sync_every_step": not args.no_step_sync,
                "te_set": args.te_set,
                "src": str(src),
            }
            need = 75.0 if _is_compiled(runner) and not args.dry_run else 20.0
            if not _available(runner):
                row: dict[str, Any] = {"skipped": "not installed"}
            elif budget - elapsed < need:
                row = {"skipped": f"--budget-s {budget:.0f} s: {elapsed:.0f} s spent"}
            else:
                row = _run_one(spec, timeout=max(need, budget - elapsed + 60), log=log)
            row = {"workload": workload, "runner": runner, "peak_flops": args.peak_flops, **row}
            rows.append(row)
            status = row.get("error") or row.get("skipped")
            if status:
                print(f"{workload:8s} {runner:20s} {status.splitlines()[0]}", file=sys.stderr, flush=True)
                if "error" in row:
                    print(status, file=sys.stderr, flush=True)
            else:
                print(
                    f"{workload:8s} {runner:20s} {row['ms_per_step']:9.3f} ms/step  "
                    f"{row['tokens_per_second']:>12,.0f}/s  "
                    f"peak {_fmt(row.get('peak_memory_gib'), '.2f')} GiB  MFU {_fmt(row.get('mfu'), '.1%')}  "
                    f"first step {row['first_step_s']:.1f} s  process {row['wall_s']:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
            combined = _combine(rows)
            ratios = _ratios(combined)
            meta["elapsed_s"] = time.perf_counter() - t_start
            json_path.write_text(json.dumps({"meta": meta, "rows": combined, "ratios": ratios, "runs": rows}, indent=2))
    print(f"\n{meta['command']}  ({meta['device']}, torch {meta['versions']['torch']}, {meta['elapsed_s']:.0f} s)")
    print(markdown(combined, ratios))
    print(f"\nwrote {json_path} and {log_path}")
    if any("error" in r for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
