"""The fast path on a GPU: the compiled step with the fused LM loss trains like the plain path.

Issue 16's numerics bar: with the fast path on (training.compile + training.fused_loss, bf16),
the mean |Δloss| against the plain path (eager, plain logits) over steps 150-200 is <= 1%.
"""

from __future__ import annotations

import pytest
import torch

from trainengine import TaskSpec, Trainer, TrainingConfigBuilder
from trainengine.models import GPT, GPTConfig

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _losses(fast: bool) -> list[float]:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    # A learnable stream: each next token is the previous one plus 1 (mod vocab), with noise.
    start = torch.randint(0, 512, (2048, 1), generator=g)
    tokens = (start + torch.arange(129)) % 512
    noise = torch.rand(tokens.shape, generator=g) < 0.1
    tokens = torch.where(noise, torch.randint(0, 512, tokens.shape, generator=g), tokens)
    data = (tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous())
    cfg = (
        TrainingConfigBuilder()
        .with_training(max_steps=200, batch_size=32, learning_rate=1e-3, precision="bf16", device="cuda",
                       compile=fast, fused_loss="on" if fast else "off", eval_every_epoch=False,
                       log_interval_steps=1)
        .with_tracking(write_run_dir=False, progress="off", experiment_db=False)
        .build()
    )  # fmt: skip
    losses: list[float] = []

    class Record:
        def on_log(self, trainer, record):
            if "train/loss" in record:
                losses.append(record["train/loss"])

    model = GPT(GPTConfig(vocab_size=512, max_seq_len=128, d_model=256, n_heads=4, n_layers=4))
    trainer = Trainer(model, None, cfg, TaskSpec.language_modeling("toy"), callbacks=[Record()])
    trainer.train(data)
    assert trainer.fused_loss_active is fast
    return losses


def test_the_fast_path_trains_like_the_plain_path():
    fast, plain = _losses(True), _losses(False)
    assert len(fast) == len(plain) == 200
    window = slice(149, 200)
    diff = [abs(a - b) / b for a, b in zip(fast[window], plain[window], strict=True)]
    assert sum(diff) / len(diff) <= 0.01, f"mean |Δloss| {sum(diff) / len(diff):.4f} over steps 150-200"
    assert plain[-1] < 0.5 * plain[0]  # both learned the stream
