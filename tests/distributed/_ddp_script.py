"""Run by the distributed tests under torchrun (and once in one process): train and write the results.

python _ddp_script.py OUT_JSON OUTPUT_DIR BATCH_SIZE ACCUMULATION [RAISE_ON_RANK [SIGNAL_AT_STEP [resume]]]

STRATEGY (environment, default ddp): the distributed.strategy (fsdp2 shards the MLP's layers).
ASYNC_SAVE=1: checkpointing.async_save.

RAISE_ON_RANK: that rank raises at step 3 (-1: none). SIGNAL_AT_STEP: rank 0 sends SIGTERM to the
launcher there (torchrun forwards it to every rank, as a scheduler's preemption would). ``resume``:
``resume_from="auto"``.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import torch

from trainengine import TaskSpec, Trainer, TrainingConfigBuilder
from trainengine.models import MLP


def main() -> None:
    out, output_dir, batch, accumulation = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    raise_on = int(sys.argv[5]) if len(sys.argv) > 5 else -1
    signal_at = int(sys.argv[6]) if len(sys.argv) > 6 else 0
    resume = "auto" if len(sys.argv) > 7 and sys.argv[7] == "resume" else None
    g = torch.Generator().manual_seed(0)
    centers = torch.eye(3, 8) * 2.0
    y = torch.randint(0, 3, (192,), generator=g)
    x = centers[y] + 0.5 * torch.randn(192, 8, generator=g)
    wrap = ["Linear"] if os.environ.get("STRATEGY") == "fsdp2" else []
    cfg = (
        TrainingConfigBuilder()
        .with_training(epochs=2, batch_size=batch, gradient_accumulation_steps=accumulation, learning_rate=0.05,
                       log_interval_steps=1, device="cpu", seed=0)
        .with_scheduler(name="constant")
        .with_checkpointing(enabled=True, save_every_n_epochs=1, async_save=os.environ.get("ASYNC_SAVE") == "1")
        .with_tracking(output_dir=output_dir, progress="off", experiment_db=False, run_name="ddp")
        .with_distributed(timeout_s=30, strategy=os.environ.get("STRATEGY", "ddp"), fsdp_wrap_modules=wrap)
        .build()
    )  # fmt: skip
    torch.manual_seed(0)
    model = MLP(8, 3, hidden_dims=(16,), dropout=0.0)

    class Boom:
        def on_step_end(self, trainer, output):
            rank = int(os.environ.get("RANK", "0"))
            if trainer.state.step == 3 and rank == raise_on:
                raise RuntimeError(f"rank {raise_on} fails on purpose")
            if trainer.state.step == signal_at and rank == 0:
                os.kill(os.getppid(), signal.SIGTERM)  # the launcher forwards it to every rank

    trainer = Trainer(model, None, cfg, TaskSpec.classification("blobs", 3), callbacks=[Boom()])
    results = trainer.train((x[:160], y[:160]), (x[160:], y[160:]), resume_from=resume)
    # FSDP2: the model's parameters are shards; the trainer gathered the final weights whole on rank 0.
    full_weights = trainer.full_weights if trainer.full_weights is not None else trainer.model.state_dict()
    if int(os.environ.get("RANK", "0")) == 0:
        losses = [r["loss"] for r in results["history"]["train"]]
        weights = {k: v.tolist() for k, v in full_weights.items()}
        val = results["history"]["val"][-1]
        with open(out, "w") as f:
            json.dump({"losses": losses, "weights": weights, "val": val, "run_dir": results["run_dir"],
                       "steps": results["steps"]}, f)  # fmt: skip


if __name__ == "__main__":
    main()
