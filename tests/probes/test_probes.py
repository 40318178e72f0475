"""trainengine.probes: measurements below the engine (gradient norms, throughput, memory, drift)."""

from __future__ import annotations

import math
import os

import torch

from trainengine.probes import collect_grads, gpu_memory_stats, grad_norms, mfu, peak_flops_for, rss_mib


def test_grad_norms_match_the_definition_and_clip_grad_norm() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1, bias=False))
    model(torch.randn(8, 5)).pow(2).sum().backward()
    names, grads = collect_grads(model.named_parameters())
    assert names == ["0.weight", "0.bias", "2.weight"]
    packed = grad_norms(grads)  # (P + 1,)
    assert packed.shape == (4,) and packed.dtype == torch.float32
    per_param = [float(g.double().pow(2).sum().sqrt()) for g in grads]
    assert all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(packed[:-1].tolist(), per_param, strict=True))
    total = float(torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf")))
    assert math.isclose(packed[-1].item(), total, rel_tol=1e-6)


def test_collect_grads_skips_missing_and_coalesces_sparse() -> None:
    emb = torch.nn.Embedding(10, 3, sparse=True)
    frozen = torch.nn.Linear(3, 1)
    emb(torch.tensor([1, 1, 2])).sum().backward()
    names, grads = collect_grads([("emb", emb.weight), ("frozen", frozen.weight)])
    assert names == ["emb"] and not grads[0].is_sparse
    # Index 1 twice and 2 once: the dense gradient's norm is sqrt(2^2 * 3 + 1 * 3).
    assert math.isclose(grad_norms(grads)[0].item(), math.sqrt(15.0), rel_tol=1e-6)


def test_rss_is_this_process_and_grows_with_an_allocation() -> None:
    before = rss_mib()
    with open("/proc/self/status") as fh:
        vmrss_kib = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS"))
    assert abs(before - vmrss_kib / 1024) < 64  # the same counter, read a moment apart
    block = bytearray(os.urandom(1)) * (256 << 20)  # 256 MiB, touched
    assert rss_mib() - before > 200
    del block


def test_throughput_helpers() -> None:
    assert gpu_memory_stats("cpu") == {}
    assert peak_flops_for(torch.device("cpu"), None) is None and peak_flops_for(torch.device("cpu"), 5.0) == 5.0
    # 1000 tok/s * 6e9 FLOP/tok on two devices of 1e13 FLOP/s: 6e12 / 2e13.
    assert math.isclose(mfu(1000.0, 6e9, 1e13, world_size=2), 0.3)
    assert mfu(0.0, 6e9, 1e13) is None and mfu(1.0, 6e9, None) is None


def test_engine_keeps_its_old_names() -> None:
    from trainengine.engine import _runtime
    from trainengine.monitoring import profile_dataset
    from trainengine.probes import profile_dataset as probe_profile

    assert _runtime.peak_flops_for is peak_flops_for and profile_dataset is probe_profile
