"""Content hashes of datasets for run lineage (``run.json``'s data fingerprint).

Scheme (version 1): ``sha256(MAGIC + f"{n}|" + enc(item_0) + ... + enc(item_{n-1}))`` where
``enc`` is an unambiguous, length/shape-prefixed byte encoding:

* tensor  -> ``b"T" + f"{dtype}{shape}|" + raw bytes`` (C order; numpy arrays and numpy
  scalars are encoded as the tensor ``torch.as_tensor`` makes of them, so equal content hashes
  equal whatever the container);
* tuple/list -> ``b"L{len}|"`` + items; dict -> ``b"D{len}|"`` + (key, value) pairs in sorted key
  order; ``int``/``float``/``bool``/``str``/``bytes``/``None`` have their own tags.

:class:`InMemoryDataset` is hashed column-wise with numpy (no Python loop over samples) and gives
exactly the digest the item-by-item scheme would, so ``to_dataset((X, y))`` and
``torch.utils.data.TensorDataset(X, y)`` share a fingerprint. :class:`TokenWindowDataset` hashes
its flat token stream (or its window rows) directly with a different tag: 16x fewer bytes than
the int64 items it serves, at the price of not matching a generic dataset of the same windows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sized
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from trainengine.data._datasets import InMemoryDataset, TokenWindowDataset
from trainengine.errors import DataError

__all__ = ["fingerprint_dataset", "combine_fingerprints", "count_nonfinite"]

_MAGIC = b"trainengine.fingerprint.v1|"
# Rows hashed per numpy chunk in the column-wise path: bounds the temporary copy.
_CHUNK_BYTES = 32 * 1024 * 1024


def _tensor_header(dtype: torch.dtype, shape: tuple[int, ...]) -> bytes:
    return f"T{dtype}{tuple(shape)}|".encode()


def _tensor_raw(t: Tensor) -> np.ndarray:
    """Raw C-order bytes of a tensor of any dtype (bfloat16 too) as a uint8 numpy array."""
    t = t.detach().cpu().contiguous().reshape(-1)
    return t.view(torch.uint8).numpy() if t.numel() else np.empty(0, np.uint8)


def _sort_key(k: Any) -> tuple[str, str]:
    return (type(k).__name__, str(k))


def _encode(obj: Any, h: Any) -> None:
    """Feed the scheme-v1 encoding of one value into hasher ``h``."""
    if isinstance(obj, Tensor):
        if obj.is_sparse or obj.layout != torch.strided:
            obj = obj.to_dense()
        h.update(_tensor_header(obj.dtype, tuple(obj.shape)))
        h.update(_tensor_raw(obj).tobytes())
    elif isinstance(obj, (np.ndarray, np.generic)):
        arr = np.asarray(obj)  # (not ascontiguousarray: that turns 0-dim into shape (1,))
        if arr.dtype == object:
            raise DataError("cannot fingerprint a numpy array of dtype object; convert it to numbers")
        _encode(torch.from_numpy(np.ascontiguousarray(arr)) if arr.ndim else torch.as_tensor(arr), h)
    elif isinstance(obj, bool):
        h.update(b"B1|" if obj else b"B0|")
    elif isinstance(obj, int):
        h.update(f"I{obj}|".encode())
    elif isinstance(obj, float):
        h.update(f"F{obj.hex()}|".encode())
    elif isinstance(obj, str):
        raw = obj.encode("utf-8")
        h.update(f"S{len(raw)}|".encode() + raw)
    elif isinstance(obj, (bytes, bytearray)):
        h.update(f"Y{len(obj)}|".encode() + bytes(obj))
    elif obj is None:
        h.update(b"N|")
    elif isinstance(obj, (tuple, list)):
        h.update(f"L{len(obj)}|".encode())
        for v in obj:
            _encode(v, h)
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}|".encode())
        for k in sorted(obj, key=_sort_key):
            _encode(k, h)
            _encode(obj[k], h)
    else:
        raise DataError(
            f"cannot fingerprint a sample part of type {type(obj).__name__}; samples may contain "
            "tensors, numpy arrays, numbers, str/bytes, None, and tuples/lists/dicts of those"
        )


def _hash_in_memory(ds: InMemoryDataset, n: int, h: Any) -> None:
    """Column-wise equivalent of encoding items 0..n-1 one by one (same bytes, same order)."""
    if isinstance(ds.columns, dict):
        keys = sorted(ds.columns, key=_sort_key)
        cols = [ds.columns[k] for k in keys]
        head = f"D{len(cols)}|".encode()
        # Same bytes _encode(key) produces for a str key.
        prefixes = [f"S{len(k.encode())}|".encode() + k.encode() for k in keys]
    else:
        cols = list(ds.columns)
        head = f"L{len(cols)}|".encode()
        prefixes = [b""] * len(cols)
    # Constant per-sample bytes: item header, then per column its key (dicts) and tensor header.
    const = [head] + [p + _tensor_header(c.dtype, tuple(c.shape[1:])) for p, c in zip(prefixes, cols, strict=True)]
    row_bytes = sum(c[:1].numel() * c.element_size() for c in cols) + sum(map(len, const))
    step = max(1, _CHUNK_BYTES // max(1, row_bytes))
    for s in range(0, n, step):
        e = min(n, s + step)
        m = e - s
        parts = [np.broadcast_to(np.frombuffer(const[0], np.uint8), (m, len(const[0])))]
        for c, cb in zip(cols, const[1:], strict=True):
            parts.append(np.broadcast_to(np.frombuffer(cb, np.uint8), (m, len(cb))))
            parts.append(_tensor_raw(c[s:e]).reshape(m, -1))  # (m, bytes per sample)
        h.update(np.concatenate(parts, axis=1).tobytes())


def _hash_windows(ds: TokenWindowDataset, n: int, h: Any) -> None:
    if ds.stream is not None:
        # Window i is stream[i*T : i*T+T+1]; the first n windows cover stream[: n*T+1].
        t = ds.seq_len
        h.update(f"W{t}|{ds.stream.dtype}|".encode())
        h.update(_tensor_raw(ds.stream[: n * t + 1]).tobytes())
    else:
        h.update(b"R")
        _encode(ds.windows[:n], h)


def fingerprint_dataset(dataset: Any, *, max_items: int | None = None) -> str:
    """sha256 hex digest of a dataset's samples, stable across runs, processes and machines.

    Args:
        dataset: a Dataset, a DataLoader (its ``.dataset`` is hashed) or anything
            :func:`to_dataset` accepts.
        max_items: hash only the first this many samples (None: all). Required for an
            ``IterableDataset`` without ``__len__``.

    Returns:
        64 hex characters.

    Raises:
        DataError: a sample part of an unsupported type, or an unbounded iterable without
            ``max_items``.

    Example:
        >>> import torch
        >>> a = fingerprint_dataset((torch.ones(3, 2), torch.zeros(3)))
        >>> a == fingerprint_dataset(torch.utils.data.TensorDataset(torch.ones(3, 2), torch.zeros(3)))
        True
    """
    from trainengine.data._convert import to_dataset

    if isinstance(dataset, DataLoader):
        dataset = dataset.dataset
    own = getattr(dataset, "data_fingerprint", None)
    if isinstance(own, str) and own and max_items is None:
        # File-backed data sets hash their source files' content, the rows they use and their
        # preprocessing once, instead of re-reading every sample of a file bigger than memory.
        return hashlib.sha256(_MAGIC + b"file|" + own.encode()).hexdigest()
    ds = to_dataset(dataset, name="fingerprint_dataset input")
    if max_items is not None and max_items < 0:
        raise DataError(f"max_items must be >= 0 or None; got {max_items}")
    h = hashlib.sha256(_MAGIC)

    if isinstance(ds, IterableDataset):
        if max_items is None:
            try:
                len(cast(Sized, ds))  # a TypeError says it has no __len__
            except TypeError:
                raise DataError(
                    "cannot fingerprint an IterableDataset without __len__ completely; pass "
                    "max_items=N to hash its first N samples"
                ) from None
        items = []
        for i, item in enumerate(ds):
            if max_items is not None and i >= max_items:
                break
            items.append(item)
        h.update(f"{len(items)}|".encode())
        for item in items:
            _encode(item, h)
        return h.hexdigest()

    n = len(cast(Sized, ds))  # map-style data sets have __len__ (Dataset does not declare it)
    if max_items is not None:
        n = min(n, max_items)
    h.update(f"{n}|".encode())
    if isinstance(ds, InMemoryDataset):
        _hash_in_memory(ds, n, h)
    elif isinstance(ds, TokenWindowDataset):
        _hash_windows(ds, n, h)
    else:
        for i in range(n):
            _encode(ds[i], h)
    return h.hexdigest()


def combine_fingerprints(train: str, val: str) -> str:
    """One sha256 hex for a (train, val) pair of fingerprints; order matters.

    Example:
        >>> combine_fingerprints("a", "b") != combine_fingerprints("b", "a")
        True
    """
    return hashlib.sha256(f"trainengine.splits.v1|train|{train}|val|{val}".encode()).hexdigest()


def _tensor_columns(dataset: Any) -> list[Tensor] | None:
    """The column tensors of an in-memory dataset (ours or ``TensorDataset``), else None."""
    if isinstance(dataset, InMemoryDataset):
        cols = dataset.columns
        return list(cols.values()) if isinstance(cols, dict) else list(cols)
    tensors = getattr(dataset, "tensors", None)
    if isinstance(tensors, tuple) and tensors and all(isinstance(t, Tensor) for t in tensors):
        return list(tensors)
    return None


def _leaves(obj: Any) -> list[Tensor]:
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _leaves(v)]
    if isinstance(obj, (tuple, list)):
        return [t for v in obj for t in _leaves(v)]
    return []


def count_nonfinite(dataset: Any, *, max_items: int = 10_000) -> tuple[int, int | None, int]:
    """NaN/Inf values in the floating-point tensors of a dataset's first ``max_items`` samples.

    In-memory data (:class:`InMemoryDataset`, ``TensorDataset``) is checked with one vectorised
    pass per column; other map-style datasets sample by sample (at most 1,000 of them). Meant for
    diagnosis (why did every step come out non-finite?), not for a hot path.

    Returns:
        ``(number of non-finite values, index of the first sample holding one or None, samples checked)``;
        ``(0, None, 0)`` for a dataset that cannot be indexed (a stream is never consumed).

    Example:
        >>> import torch
        >>> x = torch.zeros(5, 3)
        >>> x[2, 1] = float("nan")
        >>> count_nonfinite(InMemoryDataset((x, torch.arange(5))))
        (1, 2, 5)
    """
    if dataset is None or isinstance(dataset, IterableDataset):
        return 0, None, 0
    columns = _tensor_columns(dataset)
    if columns is not None:
        n = min(int(columns[0].shape[0]), max_items)
        count, first = 0, None
        for col in columns:
            if not (col.is_floating_point() or col.is_complex()):
                continue
            bad = ~torch.isfinite(col[:n].detach()).reshape(n, -1)  # (n, values per sample)
            per_row = bad.sum(dim=1)
            count += int(per_row.sum())
            rows = per_row.nonzero()
            if rows.numel():
                first = int(rows[0]) if first is None else min(first, int(rows[0]))
        return count, first, n
    try:
        n = min(len(dataset), max_items, 1_000)
    except TypeError:
        return 0, None, 0
    count, first = 0, None
    for i in range(n):
        for t in _leaves(dataset[i]):
            if t.is_floating_point() or t.is_complex():
                num_bad = int((~torch.isfinite(t)).sum())
                if num_bad and first is None:
                    first = i
                count += num_bad
    return count, first, n
