"""On CUDA, the per-step loss path and metric updates must not force a host-device sync.

``torch.cuda.set_sync_debug_mode("error")`` turns any synchronising call (``.item()``,
boolean-mask indexing, device-to-host copies) into an exception.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trainengine.tasks import TaskSpec

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    pytest.mark.filterwarnings("ignore:Synchronization debug mode is a prototype"),
]


def _batch(spec: TaskSpec, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator(device=device).manual_seed(0)
    if spec.task_type == "language_modeling":
        logits = torch.randn(4, 16, 50, device=device, generator=g, dtype=torch.bfloat16)
        labels = torch.randint(0, 50, (4, 16), device=device, generator=g)
        labels[:, 10:] = spec.ignore_index
    elif spec.task_type == "regression":
        logits = torch.randn(32, 1, device=device, generator=g)
        labels = torch.randn(32, device=device, generator=g)
    else:
        logits = torch.randn(32, 10, device=device, generator=g, dtype=torch.bfloat16)
        labels = torch.randint(0, 10, (32,), device=device, generator=g)
        labels[::5] = spec.ignore_index
    return logits, labels


@pytest.mark.parametrize(
    "spec",
    [
        TaskSpec.language_modeling(),
        TaskSpec.classification(label_smoothing=0.1),
        TaskSpec.regression(),
        TaskSpec.vision_tiny(),
    ],
    ids=lambda s: s.task_type,
)
def test_loss_and_metric_update_do_not_sync(spec: TaskSpec) -> None:
    device = torch.device("cuda")
    logits, labels = _batch(spec, device)
    logits.requires_grad_(True)
    strategy = spec.loss_strategy
    metrics = spec.create_metrics(device)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            total = strategy.loss_sum(logits, labels)
            count = strategy.num_targets(labels)
            loss = strategy(logits, labels)
            loss.backward()
            metrics.update(logits, labels, total, count)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    out = metrics.compute()
    assert out["loss"] == pytest.approx(float(loss.detach()), rel=1e-5)
    assert count.device.type == "cuda" and total.dtype == torch.float32


def test_cuda_loss_matches_cpu() -> None:
    spec = TaskSpec.language_modeling()
    logits, labels = _batch(spec, torch.device("cuda"))
    gpu = spec.loss_strategy(logits, labels)
    ref = F.cross_entropy(logits.float().cpu().reshape(-1, 50), labels.cpu().reshape(-1))
    assert float(gpu) == pytest.approx(float(ref), rel=1e-5)
