"""The LM head's loss on one GPU: plain compiled cross-entropy vs chunked linear cross-entropy variants.

Times forward + backward of ``sum CE(h @ W.T, y)`` at GPT-2 124M shapes (h ``[16384, 768]`` bf16,
W ``[50304, 768]`` fp32 under bf16 autocast), each variant compiled with inductor, and its peak
memory above what the inputs hold. Used to choose the design of ``trainengine.tasks._fused_ce``.

    python3 benchmarks/fused_ce.py [--rows 16384] [--vocab 50304] [--iters 20] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from trainengine.tasks import _fused_ce  # noqa: E402


def plain(h: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = F.linear(h, w)
    return F.cross_entropy(logits.float(), y, reduction="sum")


def chunked(chunk_elements: int) -> Any:
    def fn(h: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # Compiled here: the chunk rows come from the rows of the logits at most ``chunk_elements``.
        rows = _fused_ce.default_chunk_size(h.shape[0], w.shape[0], chunk_elements)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return _fused_ce.linear_cross_entropy(h, w, y, chunk_size=rows)[0]

    return fn


def measure(name: str, fn: Any, h: torch.Tensor, w: torch.Tensor, y: torch.Tensor, iters: int) -> dict[str, Any]:
    compiled = torch.compile(fn)
    for _ in range(3):
        compiled(h, w, y).backward()
        h.grad = w.grad = None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        loss = compiled(h, w, y)
        loss.backward()
        h.grad = w.grad = None
    end.record()
    torch.cuda.synchronize()
    ms = start.elapsed_time(end) / iters
    peak = (torch.cuda.max_memory_allocated() - base) / 2**30
    # gradients against the plain path, once
    loss = compiled(h, w, y)
    loss.backward()
    gh, gw = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    row = {"variant": name, "ms": round(ms, 3), "peak_extra_gib": round(peak, 3), "loss": float(loss)}
    print(json.dumps(row), flush=True)
    return {**row, "_g": (gh, gw)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=16384)
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--vocab", type=int, default=50304)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--chunks", default="26,27,28", help="log2 of the chunk's logits elements to try")
    p.add_argument("--json")
    a = p.parse_args()
    torch.manual_seed(0)
    dev = torch.device("cuda")
    h = (torch.randn(a.rows, a.width, device=dev) * 0.5).to(torch.bfloat16).requires_grad_()
    w = (torch.randn(a.vocab, a.width, device=dev) * 0.02).requires_grad_()
    y = torch.randint(0, a.vocab, (a.rows,), device=dev)
    rows = [measure("plain compiled (bf16 logits, fp32 CE in the graph)", plain, h, w, y, a.iters)]
    for e in (int(x) for x in a.chunks.split(",")):
        rows.append(measure(f"linear_cross_entropy, 2**{e} logits per chunk", chunked(2**e), h, w, y, a.iters))
    ref_h, ref_w = rows[0]["_g"]
    for r in rows:
        gh, gw = r.pop("_g")
        r["grad_h_rel_err"] = float((gh.float() - ref_h.float()).norm() / ref_h.float().norm())
        r["grad_w_rel_err"] = float((gw - ref_w).norm() / ref_w.norm())
    meta = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, **vars(a)}
    print(json.dumps({"meta": meta, "rows": rows}, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
