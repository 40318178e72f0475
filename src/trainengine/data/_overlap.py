"""Train/validation leakage check: validation inputs that also occur in the training data."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from trainengine.data._convert import to_dataset
from trainengine.data._datasets import InMemoryDataset, PreCollatedBatch, TokenWindowDataset
from trainengine.data._fingerprint import _encode, _tensor_header, _tensor_raw
from trainengine.data._types import DataLeakageWarning
from trainengine.errors import DataError

__all__ = ["check_overlap"]

# Dict samples: the first of these keys present is "the input"; otherwise every key that is not
# a label-like key is.
_INPUT_KEYS = ("input_ids", "x", "inputs", "input", "pixel_values", "features")
_LABEL_KEYS = frozenset({"labels", "label", "y", "target", "targets"})
_ROWS_PER_CHUNK = 4096


def _input_of(item: Any) -> Any:
    if isinstance(item, (tuple, list)):
        return item[0] if item else item
    if isinstance(item, Mapping):
        for k in _INPUT_KEYS:
            if k in item:
                return item[k]
        return {k: v for k, v in item.items() if k not in _LABEL_KEYS}
    return item


def _input_column(ds: InMemoryDataset) -> torch.Tensor | None:
    if isinstance(ds.columns, dict):
        for k in _INPUT_KEYS:
            if k in ds.columns:
                return ds.columns[k]
        return None  # several input columns: use the generic per-item path
    return ds.columns[0]


def _row_keys(rows: torch.Tensor) -> Iterator[bytes]:
    """Per-row keys equal to the generic path's blake2b(_encode(row)) digests. rows: (m, ...)."""
    header = _tensor_header(rows.dtype, tuple(rows.shape[1:]))
    m = int(rows.shape[0])
    raw = _tensor_raw(rows).tobytes()
    width = len(raw) // m if m else 0
    for i in range(m):
        yield hashlib.blake2b(header + raw[i * width : (i + 1) * width], digest_size=16).digest()


def _keys(ds: Any, max_items: int) -> list[bytes]:
    """Hash keys of the inputs of up to ``max_items`` samples (a fixed-seed sample if more)."""
    if isinstance(ds, IterableDataset):
        out = []
        for i, item in enumerate(ds):
            if i >= max_items:
                break
            h = hashlib.blake2b(digest_size=16)
            _encode(_input_of(item), h)
            out.append(h.digest())
        return out
    n = len(ds)
    if n > max_items:
        # Fixed seed: the same datasets always compare the same samples.
        idx = np.sort(np.random.default_rng(0).choice(n, size=max_items, replace=False))
    else:
        idx = np.arange(n)
    col = _input_column(ds) if isinstance(ds, InMemoryDataset) else None
    keys: list[bytes] = []
    if col is not None or isinstance(ds, TokenWindowDataset):
        for s in range(0, len(idx), _ROWS_PER_CHUNK):
            chunk = torch.from_numpy(idx[s : s + _ROWS_PER_CHUNK])
            if col is not None:
                rows = col[chunk]  # (m, ...)
            else:
                rows = ds.windows[chunk, :-1].to(torch.int64)  # (m, T): what __getitem__ yields
            keys.extend(_row_keys(rows))
        return keys
    getitems = getattr(ds, "__getitems__", None)
    if callable(getitems):
        # File-backed data sets fetch a whole chunk at once (one Arrow take, not 50,000 lookups).
        for s in range(0, len(idx), _ROWS_PER_CHUNK):
            batch = getitems(idx[s : s + _ROWS_PER_CHUNK].tolist())
            inputs = (
                batch.collated[0] if isinstance(batch, PreCollatedBatch) and isinstance(batch.collated, list) else None
            )
            if not isinstance(inputs, torch.Tensor):
                break  # not a batch of (inputs, labels) tensors: the per-item path below
            keys.extend(_row_keys(inputs))
        else:
            return keys
        keys = []
    for i in idx.tolist():
        h = hashlib.blake2b(digest_size=16)
        _encode(_input_of(ds[i]), h)
        keys.append(h.digest())
    return keys


def check_overlap(train: Any, val: Any, *, max_items: int = 50_000) -> int:
    """Count validation samples whose input also appears (byte-identical) in the training data.

    Only the input is compared (``x`` of ``(x, y)``, ``input_ids`` of a dict sample), so a leaked
    sample is found even when its label differs. Inputs are compared by a 128-bit blake2b hash of
    their dtype, shape and bytes. When a split has more than ``max_items`` samples a fixed-seed
    random subset of that size is compared, so the count is then a lower bound.

    Args:
        train: training data (anything :func:`to_dataset` accepts, or a DataLoader).
        val: validation data, same forms.
        max_items: most samples hashed per split.

    Returns:
        Number of (compared) validation samples whose input occurs in the training data.

    Warns:
        DataLeakageWarning: when the count is above zero, with the count and the fraction.

    Example:
        >>> import torch
        >>> x = torch.arange(12.0).reshape(6, 2)
        >>> check_overlap((x[:4], torch.zeros(4)), (x[4:], torch.zeros(2)))
        0
    """
    if max_items < 1:
        raise DataError(f"max_items must be >= 1; got {max_items}")
    tr = to_dataset(train.dataset if isinstance(train, DataLoader) else train, name="train")
    va = to_dataset(val.dataset if isinstance(val, DataLoader) else val, name="val")
    train_keys = set(_keys(tr, max_items))
    val_keys = _keys(va, max_items)
    count = sum(k in train_keys for k in val_keys)
    if count:
        frac = count / len(val_keys)
        warnings.warn(
            f"{count} of {len(val_keys)} validation samples ({frac:.1%}) have an input identical "
            f"to a training sample (compared against {len(train_keys)} distinct training inputs); "
            "validation metrics will be optimistic. Deduplicate the data or split by group/source.",
            DataLeakageWarning,
            stacklevel=2,
        )
    return count
