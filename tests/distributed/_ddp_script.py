"""Run by the distributed tests under torchrun (and in one process): train and write the results.

python _ddp_script.py OUT_JSON OUTPUT_DIR BATCH_SIZE ACCUMULATION [RAISE_ON_RANK [SIGNAL_AT_STEP [RESUME]]]

RAISE_ON_RANK: that rank raises at step 3 (-1: none). SIGNAL_AT_STEP: rank 0 sends SIGTERM to the
launcher there (torchrun forwards it to every rank, as a scheduler's preemption would). RESUME:
``resume`` (``resume_from="auto"``) or a checkpoint folder.

Environment: STRATEGY (default ddp; fsdp2 shards each Linear), ASYNC_SAVE=1 (checkpointing.async_save),
CKPT_EVERY=N (a checkpoint every N steps, else one per epoch), LOG_EVERY=N (training.log_interval_steps),
KILL_AT_STEP=N (rank 1 kills itself with SIGKILL at step N on torchrun's first attempt: a worker that dies
without a word).
"""

from __future__ import annotations

import json
import os
import signal
import sys

import torch

from trainengine import TaskSpec, Trainer, TrainingConfigBuilder
from trainengine.models import build_model


def main() -> None:
    out, output_dir, batch, accumulation = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    raise_on = int(sys.argv[5]) if len(sys.argv) > 5 else -1
    signal_at = int(sys.argv[6]) if len(sys.argv) > 6 else 0
    resume = None if len(sys.argv) <= 7 else ("auto" if sys.argv[7] == "resume" else sys.argv[7])
    first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
    kill_at = int(os.environ.get("KILL_AT_STEP", "0")) if first_attempt else 0
    every = int(os.environ.get("CKPT_EVERY", "0")) or None
    strategy = os.environ.get("STRATEGY", "ddp")
    g = torch.Generator().manual_seed(0)
    centers = torch.eye(3, 8) * 2.0
    y = torch.randint(0, 3, (192,), generator=g)
    x = centers[y] + 0.5 * torch.randn(192, 8, generator=g)
    cfg = (
        TrainingConfigBuilder()
        .with_training(epochs=2, batch_size=batch, gradient_accumulation_steps=accumulation, learning_rate=0.05,
                       log_interval_steps=int(os.environ.get("LOG_EVERY", "1")), device="cpu", seed=0)
        .with_scheduler(name="constant")
        .with_checkpointing(enabled=True, save_every_n_epochs=None if every else 1, save_every_n_steps=every,
                            async_save=os.environ.get("ASYNC_SAVE") == "1")
        .with_tracking(output_dir=output_dir, progress="off", experiment_db=False, run_name="ddp")
        .with_distributed(timeout_s=30, strategy=strategy, fsdp_wrap_modules=["Linear"] if strategy == "fsdp2" else [])
        .build()
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model("mlp", input_dim=8, output_dim=3, hidden_dims=(16,), dropout=0.0)
    rank = int(os.environ.get("RANK", "0"))

    class Boom:
        def on_step_end(self, trainer, output):
            if trainer.state.step == 3 and rank == raise_on:
                raise RuntimeError(f"rank {raise_on} fails on purpose")
            if trainer.state.step == signal_at and rank == 0:
                os.kill(os.getppid(), signal.SIGTERM)  # the launcher forwards it to every rank
            if trainer.state.step == kill_at and rank == 1:
                os.kill(os.getpid(), signal.SIGKILL)

    trainer = Trainer(model, None, cfg, TaskSpec.classification("blobs", 3), callbacks=[Boom()])
    results = trainer.train((x[:160], y[:160]), (x[160:], y[160:]), resume_from=resume)
    # FSDP2: the model's parameters are shards; the trainer gathered the final weights whole on rank 0.
    full_weights = trainer.full_weights if trainer.full_weights is not None else trainer.model.state_dict()
    if rank == 0:
        losses = [r["loss"] for r in results["history"]["train"]]
        weights = {k: v.tolist() for k, v in full_weights.items()}
        val = results["history"]["val"][-1]
        with open(out, "w") as f:
            json.dump({"losses": losses, "weights": weights, "val": val, "run_dir": results["run_dir"],
                       "steps": results["steps"], "last_checkpoint": results["last_checkpoint"]}, f)  # fmt: skip


if __name__ == "__main__":
    main()
