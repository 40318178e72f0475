"""Cross-entropy of a linear layer's output without materialising the full logits.

:func:`linear_cross_entropy` computes ``sum_i CE(hidden_i @ weight.T + bias, labels_i)`` over
rows of ``hidden`` ``[N, C]`` against a head ``weight`` ``[V, C]``, one chunk of rows at a time,
so no ``[N, V]`` tensor ever exists — neither the logits nor their fp32 copy nor their gradient.

Design: gradients in the forward
--------------------------------
While a chunk's logits are in memory the forward also turns them into the gradient of the
summed loss (``softmax - one_hot``) and applies it at once: ``grad_hidden[chunk] = g @ W`` and
``grad_weight += g.T @ h_chunk`` (the trick of Liger Kernel and Apple's cut-cross-entropy).
The backward only multiplies the stored gradients by the incoming scalar ``grad_output``.

Memory, for ``N`` rows, width ``C``, vocabulary ``V``, chunk ``n`` rows (GPT-2 124M,
micro-batch 16 x 1024: ``N = 16384``, ``C = 768``, ``V = 50304``, bf16 autocast):

- plain ``F.cross_entropy(logits.float())``: bf16 logits ``2NV`` + fp32 copy ``4NV`` + its
  gradient ``4NV`` (+ bf16 gradient ``2NV``): 1.6 + 3.3 + 3.3 + 1.6 GB live at the loss's backward.
- gradients in the forward (chosen): per chunk ``~ 2nV + 4nV + 2nV`` bytes of temporaries
  (bf16 logits, fp32 softmax, bf16 gradient; freed after each chunk), plus what lives until the
  backward: ``grad_hidden`` ``N*C`` in the hidden's dtype (25-50 MB) and ``grad_weight``
  ``V*C`` in fp32 (155 MB). Eager, with the default chunk (``2**26 // V`` logits rows, spread
  evenly and rounded to 128: 1280 rows) that is about 0.7 GB transient + 0.2 GB kept instead of
  ~8 GB. Under ``torch.compile`` the chunk's softmax, one-hot and mask are one pointwise
  expression (no in-place scatter), which the compiler fuses into a single kernel from the bf16
  logits to the bf16 gradient: no fp32 temporary, so chunks are 4x bigger (``2**28`` logits,
  fewer ``grad_weight`` accumulations) — about 1 GB transient; on an H200 at these shapes its
  forward + backward then takes 7.31 ms against 7.45 ms for the plain compiled loss
  (``benchmarks/fused_ce.py``).
- recomputing in the backward would keep only ``hidden`` (``N*C``, already alive as the final
  norm's output) and save the 0.2 GB, but costs a fourth ``2NCV`` matmul (the logits again):
  +33% of the head's FLOPs, about 2.5 ms per step on an H200 at these shapes, for 0.2 GB of a
  17 GB step. The forward-gradient design does 3 matmuls (logits, ``g @ W``, ``g.T @ h``),
  exactly what the plain path does, so it costs no extra FLOPs at all.

The price of the design: the forward does the backward's work, so a forward whose loss is never
backpropagated (evaluation) must not take this path — :func:`linear_cross_entropy` skips the
gradient work when grad mode is off or no input requires a gradient.

Numerics: each chunk's matmuls run in the autocast dtype when autocast is on (bf16 on a GPU, as
the plain ``lm_head`` would), else in the inputs' dtype; the log-sum-exp, target logit, softmax
and loss sum run in float32 (float64 for float64 inputs). ``grad_weight`` and ``grad_bias`` are
accumulated over chunks in float32 and returned in the parameters' dtype.

The function uses plain torch ops inside a :class:`torch.autograd.Function`, which
``torch.compile`` traces (forward and backward) into the step's graph; the chunk loop unrolls.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from trainengine.errors import TaskError

__all__ = ["linear_cross_entropy", "default_chunk_size", "CHUNK_ELEMENTS"]

# Elements of one chunk's [rows, V] logits, eager: 2**26 = 128 MiB of bf16 / 256 MiB of fp32 temporaries.
CHUNK_ELEMENTS = 2**26
# Under torch.compile the chunk's softmax and gradient fuse into one kernel (no fp32 temporary):
# bigger chunks pay. Measured on an H200 at GPT-2 shapes (benchmarks/fused_ce.py): 2**26 8.08 ms,
# 2**27 7.70, 2**28 7.31, 2**29 7.16 per forward + backward; the plain compiled loss 7.45.
COMPILED_CHUNK_ELEMENTS = 2**28
_ROW_ALIGN = 128  # chunk rows are a multiple of this (a matmul tile)


def default_chunk_size(num_rows: int, vocab_size: int, elements: int | None = None) -> int:
    """Rows per chunk so that one chunk's logits hold about ``elements`` (:data:`CHUNK_ELEMENTS`) values.

    The rows are spread evenly over the chunks and rounded up to a multiple of 128 (a matmul
    tile), so no chunk is a thin remainder.

    Example:
        >>> default_chunk_size(16384, 50304)
        1280
        >>> default_chunk_size(10, 50304)
        10
    """
    per_chunk = CHUNK_ELEMENTS if elements is None else elements
    target = max(1, min(num_rows, per_chunk // max(1, vocab_size)))
    chunks = -(-num_rows // target)
    rows = -(-num_rows // chunks)
    if rows > _ROW_ALIGN:
        rows = -(-rows // _ROW_ALIGN) * _ROW_ALIGN
    return min(rows, num_rows)


def _matmul_dtype(hidden: Tensor, weight: Tensor) -> torch.dtype:
    """The dtype ``F.linear(hidden, weight)`` would compute in: autocast's, else the promoted one."""
    device_type = hidden.device.type
    promoted = torch.promote_types(hidden.dtype, weight.dtype)
    # Autocast casts float16/bfloat16/float32 operands of a matmul, never float64.
    if promoted != torch.float64 and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return promoted


def _chunk_pass(
    h: Tensor,
    w: Tensor,
    b: Tensor | None,
    y: Tensor,
    ignore_index: int,
    label_smoothing: float,
    chunk_size: int,
    mm_dtype: torch.dtype,
    need: tuple[bool, bool, bool],
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """Loss sum and (where ``need``) the gradients of it w.r.t. hidden, weight, bias.

    ``h`` ``[N, C]``, ``w`` ``[V, C]``, ``b`` ``[V]`` or None, ``y`` ``[N]`` int64.
    """
    n_rows, vocab = h.shape[0], w.shape[0]
    acc = torch.promote_types(mm_dtype, torch.float32)  # softmax / loss arithmetic
    need_h, need_w, need_b = need
    wm = w.to(mm_dtype)  # one cast per call (what autocast does for lm_head), not per chunk
    hm = h.to(mm_dtype)
    bm = b.to(mm_dtype) if b is not None else None
    loss = torch.zeros((), dtype=acc, device=h.device)
    grad_h = torch.empty_like(h) if need_h else None
    grad_w = torch.zeros(w.shape, dtype=acc, device=w.device) if need_w else None
    grad_b = torch.zeros(vocab, dtype=acc, device=w.device) if need_b and b is not None else None
    keep = 1.0 - label_smoothing
    compiling = torch.compiler.is_compiling()
    for start in range(0, n_rows, chunk_size):
        hc = hm[start : start + chunk_size]  # (n, C)
        yc = y[start : start + chunk_size]  # (n,)
        valid = yc != ignore_index  # (n,)
        target = torch.where(valid, yc, torch.zeros_like(yc)).unsqueeze(1)  # (n, 1): ignored -> class 0
        logits = torch.addmm(bm, hc, wm.t()) if bm is not None else hc @ wm.t()  # (n, V), matmul dtype
        z = logits.to(acc)  # (n, V); the same tensor when the matmul already ran in acc
        lse = torch.logsumexp(z, dim=1)  # (n,)
        row = lse - keep * z.gather(1, target).squeeze(1)  # (n,)
        if label_smoothing:
            row = row - (label_smoothing / vocab) * z.sum(dim=1)
        loss = loss + torch.where(valid, row, torch.zeros_like(row)).sum()
        if grad_h is None and grad_w is None and grad_b is None:
            continue
        # d row / d z = softmax(z) - keep * one_hot(target) - label_smoothing / V; ignored rows: 0.
        if compiling:
            # One pointwise expression the compiler fuses into a single kernel: logits in, g out.
            hit = torch.arange(vocab, device=z.device).unsqueeze(0) == target  # (n, V)
            p = torch.exp(z - lse.unsqueeze(1)) - keep * hit.to(acc)
            if label_smoothing:
                p = p - label_smoothing / vocab
            p = p * valid.unsqueeze(1).to(acc)
        else:  # eager: in place on this chunk's own temporary, no (n, V) mask
            p = z.sub_(lse.unsqueeze(1)).exp_()  # (n, V)
            p.scatter_add_(1, target, torch.full_like(target, -keep, dtype=acc))
            if label_smoothing:
                p.sub_(label_smoothing / vocab)
            p.mul_(valid.unsqueeze(1).to(acc))
        g = p.to(mm_dtype)  # (n, V): the matmuls of the gradient run where the logits' did
        if grad_h is not None:
            grad_h[start : start + chunk_size] = g @ wm  # (n, C)
        if grad_w is not None:
            grad_w += (g.t() @ hc).to(acc)  # (V, C), summed over chunks in fp32
        if grad_b is not None:
            grad_b += p.sum(dim=0)  # (V,)
    return (
        loss,
        grad_h,
        grad_w.to(w.dtype) if grad_w is not None else None,
        grad_b.to(b.dtype) if grad_b is not None and b is not None else None,
    )


class _LinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of ``h @ w.T + b``; gradients computed in the forward, scaled in the backward."""

    @staticmethod
    def forward(
        ctx: Any,
        h: Tensor,
        w: Tensor,
        b: Tensor | None,
        y: Tensor,
        ignore_index: int,
        label_smoothing: float,
        chunk_size: int,
        mm_dtype: torch.dtype,
    ) -> Tensor:
        need = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], b is not None and ctx.needs_input_grad[2])
        with torch.autocast(h.device.type, enabled=False):  # the dtypes are chosen explicitly above
            loss, grad_h, grad_w, grad_b = _chunk_pass(
                h, w, b, y, ignore_index, label_smoothing, chunk_size, mm_dtype, need
            )
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        return loss

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor) -> tuple[Tensor | None, ...]:
        grad_h, grad_w, grad_b = ctx.saved_tensors
        # No check for grad_loss == 1 (a host sync): scaling N*C + V*C values is cheap.
        return (
            grad_h * grad_loss.to(grad_h.dtype) if grad_h is not None else None,
            grad_w * grad_loss.to(grad_w.dtype) if grad_w is not None else None,
            grad_b * grad_loss.to(grad_b.dtype) if grad_b is not None else None,
            None,
            None,
            None,
            None,
            None,
        )


def linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    *,
    bias: Tensor | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Summed cross-entropy of ``hidden @ weight.T (+ bias)`` against ``labels``, chunk by chunk.

    Equal to ``F.cross_entropy(F.linear(hidden, weight, bias).float().flatten(0, -2),
    labels.flatten(), ignore_index=..., label_smoothing=..., reduction="sum")`` and to its
    gradients, without ever holding the ``[N, V]`` logits (see the module docstring).

    Args:
        hidden: ``[..., C]`` final hidden states, any float dtype (under autocast the matmuls
            run in the autocast dtype, like ``F.linear``).
        weight: ``[V, C]`` output head (``lm_head.weight``).
        labels: ``[...]`` int64 targets, the leading shape of ``hidden``, already aligned
            with the positions (no shifting here).
        bias: Optional ``[V]`` head bias.
        ignore_index: Label of positions that count neither in the loss nor as targets.
        label_smoothing: As in ``F.cross_entropy``: mass in ``[0, 1)`` spread over all classes.
        chunk_size: Rows per chunk; None = :func:`default_chunk_size`: about 2**26 logits per chunk
            eager, 2**28 under ``torch.compile`` (where the chunk's fp32 arithmetic is fused away).

    Returns:
        ``(loss_sum, num_targets)``: 0-dim float32 (float64 for float64 inputs) summed loss over
        non-ignored rows, and their 0-dim int64 count. All rows ignored: ``(0.0, 0)``.

    Raises:
        TaskError: Shapes or dtypes that do not fit, with what was expected.

    Example:
        >>> import torch
        >>> h, w = torch.randn(6, 4), torch.randn(10, 4)
        >>> y = torch.tensor([1, 2, -100, 3, 4, 5])
        >>> loss, n = linear_cross_entropy(h, w, y, chunk_size=4)
        >>> ref = torch.nn.functional.cross_entropy(h @ w.T, y, reduction="sum")
        >>> bool(torch.allclose(loss, ref)), int(n)
        (True, 5)
    """
    _check(hidden, weight, labels, bias, label_smoothing, chunk_size)
    h = hidden.reshape(-1, hidden.shape[-1])  # (N, C)
    y = labels.reshape(-1)  # (N,)
    num_targets = (y != ignore_index).sum()
    n_rows, vocab = h.shape[0], weight.shape[0]
    if chunk_size is None:
        elements = COMPILED_CHUNK_ELEMENTS if torch.compiler.is_compiling() else CHUNK_ELEMENTS
        chunk = default_chunk_size(n_rows, vocab, elements)
    else:
        chunk = chunk_size
    mm_dtype = _matmul_dtype(hidden, weight)
    if n_rows == 0:
        return torch.zeros((), dtype=torch.promote_types(mm_dtype, torch.float32), device=h.device), num_targets
    inputs = (h, weight) if bias is None else (h, weight, bias)
    if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
        loss = _LinearCrossEntropy.apply(h, weight, bias, y, ignore_index, float(label_smoothing), chunk, mm_dtype)
    else:  # evaluation: the loss only, no gradient work in the forward
        with torch.autocast(h.device.type, enabled=False):
            loss = _chunk_pass(
                h, weight, bias, y, ignore_index, float(label_smoothing), chunk, mm_dtype, (False, False, False)
            )[0]
    return loss, num_targets


def _check(
    hidden: Tensor, weight: Tensor, labels: Tensor, bias: Tensor | None, label_smoothing: float, chunk: int | None
) -> None:
    """Shapes and dtypes are host metadata: checking them costs no device sync."""
    expects = "linear_cross_entropy expects hidden [..., C] (float), weight [V, C], labels [...] (int64), bias [V]"
    problems = []
    if not hidden.is_floating_point() or hidden.ndim < 1:
        problems.append(f"hidden is {hidden.dtype} {tuple(hidden.shape)}")
    if weight.ndim != 2 or not weight.is_floating_point() or (hidden.ndim >= 1 and weight.shape[1] != hidden.shape[-1]):
        problems.append(f"weight is {weight.dtype} {tuple(weight.shape)} for hidden {tuple(hidden.shape)}")
    if labels.dtype != torch.int64 or tuple(labels.shape) != tuple(hidden.shape[:-1]):
        problems.append(f"labels are {labels.dtype} {tuple(labels.shape)} for hidden {tuple(hidden.shape)}")
    if bias is not None and (bias.ndim != 1 or (weight.ndim == 2 and bias.shape[0] != weight.shape[0])):
        problems.append(f"bias is {tuple(bias.shape)} for weight {tuple(weight.shape)}")
    if not 0.0 <= label_smoothing < 1.0:
        problems.append(f"label_smoothing is {label_smoothing!r}, not in [0, 1)")
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        problems.append(f"chunk_size is {chunk!r}, not a positive int (or None for the default)")
    if problems:
        raise TaskError(f"{expects}; got: " + "; ".join(problems))
