"""Does the device-side ``found_inf`` skip (engine/_step.py) matter? Measure it on a GPU.

``StepRunner.clip_and_step`` skips a non-finite step without reading anything back: it hands the
fused optimizer a device flag as ``optimizer.found_inf`` (the attribute ``GradScaler`` uses, a
torch internal). The alternative is ``if not bool(flag): optimizer.step()``, one host-device sync
per step. This times both (and an unchecked step as the floor) for a small and a medium model::

    python benchmarks/found_inf_skip.py            # needs CUDA; prints ms/step per variant

Standalone: torch only.
"""

from __future__ import annotations

import json
import time

import torch
from torch import nn


def _model(width: int, depth: int) -> nn.Module:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.GELU()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def _run(variant: str, width: int, depth: int, batch: int, steps: int = 300, warmup: int = 30) -> float:
    torch.manual_seed(0)
    device = torch.device("cuda")
    model = _model(width, depth).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    params = list(model.parameters())
    x = torch.randn(batch, width, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        loss = loss_fn(model(x), y)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        flag = torch.nan_to_num((norm + loss.detach()).mul_(0.0), nan=1.0).float()
        if variant == "found_inf":
            opt.found_inf = flag  # type: ignore[attr-defined]
            opt.step()
        elif variant == "host_sync":
            if not bool(flag):
                opt.step()
        else:  # unchecked: the floor (a NaN step would corrupt the weights)
            opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps * 1e3


def main() -> None:
    results = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(), "ms_per_step": {}}
    # From launch-bound (the GPU waits for Python) to GPU-bound; a per-step sync costs most where
    # the two take about as long, since it stops the CPU from queueing the next step early.
    shapes = {
        f"{depth}x{width}, batch {batch}": (width, depth, batch)
        for width, depth, batch in ((256, 4, 64), (1024, 8, 512), (1024, 8, 2048), (2048, 8, 2048), (2048, 8, 8192))
    }
    for name, (width, depth, batch) in shapes.items():
        best: dict[str, float] = {}
        for _ in range(5):  # interleaved repeats, best of 5: clocks and caches treat each variant alike
            for variant in ("unchecked", "found_inf", "host_sync"):
                ms = _run(variant, width, depth, batch, steps=100, warmup=10)
                best[variant] = min(best.get(variant, float("inf")), ms)
        row = {k: round(v, 4) for k, v in best.items()}
        row["host_sync / found_inf"] = round(best["host_sync"] / best["found_inf"], 3)
        results["ms_per_step"][name] = row
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
