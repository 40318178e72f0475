"""Turn the data shapes users commonly hold (arrays, tensors, lists of samples) into a Dataset."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from trainengine.data._datasets import InMemoryDataset, ListDataset, TokenWindowDataset
from trainengine.errors import DataError

__all__ = ["to_dataset"]

_ACCEPTED = (
    "a torch Dataset; a tuple/list (X, y) of two tensors/numpy arrays with the same first "
    "dimension; a 2-D integer tensor of token windows (N, T+1); a list of (x, y) tuples; a list "
    "of dicts of tensors; or a dict of equal-length tensors/arrays"
)


def _is_array(obj: Any) -> bool:
    return isinstance(obj, (Tensor, np.ndarray))


def _as_tensor(value: Any, *, what: str) -> Tensor:
    """numpy/Python values -> tensor; float64 numpy becomes float32 (the training default)."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OUSMmV":  # object, str, bytes, datetime, timedelta, void: no tensor dtype
            example = f", e.g. {str(value.flat[0])!r} at index 0" if value.size else ""
            hint = (
                "; for class names use np.unique(y, return_inverse=True)[1] as integer labels"
                if value.dtype.kind in "OUS"
                else ""
            )
            raise DataError(
                f"{what} is a numpy array of dtype {value.dtype}{example}; expected numbers "
                f"(integers or floats) — convert it first{hint}"
            )
        try:
            t = torch.as_tensor(value)
        except (TypeError, RuntimeError) as exc:
            raise DataError(f"{what}: numpy dtype {value.dtype} cannot become a tensor ({exc})") from exc
        return t.float() if t.dtype == torch.float64 else t
    if isinstance(value, (bool, int, float, np.generic)):
        return _as_tensor(np.asarray(value), what=what)
    if isinstance(value, (list, tuple)):
        try:
            return _as_tensor(np.asarray(value), what=what)
        except (ValueError, TypeError) as exc:
            raise DataError(f"{what} is a ragged or non-numeric {type(value).__name__}: {exc}") from exc
    raise DataError(f"{what} is a {type(value).__name__}; expected a tensor, numpy array or number")


def _stack_or_none(values: list[Tensor]) -> Tensor | None:
    """Stack same-shape, same-dtype tensors; None when they differ (variable-length samples)."""
    first = values[0]
    if all(v.shape == first.shape and v.dtype == first.dtype for v in values):
        return torch.stack(values)
    return None


def _from_sample_list(items: list[Any], name: str) -> Dataset:
    first = items[0]
    if isinstance(first, Mapping):
        keys = list(first.keys())
        rows: list[dict[str, Tensor]] = []
        for i, item in enumerate(items):
            if not isinstance(item, Mapping) or set(item) != set(keys):
                got = sorted(item) if isinstance(item, Mapping) else type(item).__name__
                raise DataError(
                    f"{name}: sample {i} has keys {got} but sample 0 has {sorted(keys)}; every dict "
                    "sample needs the same keys"
                )
            rows.append({k: _as_tensor(item[k], what=f"{name}[{i}][{k!r}]") for k in keys})
        cols = {k: _stack_or_none([r[k] for r in rows]) for k in keys}
        stacked = {k: c for k, c in cols.items() if c is not None}
        if len(stacked) == len(cols):
            return InMemoryDataset(stacked)
        return ListDataset(rows)
    if isinstance(first, tuple):
        width = len(first)
        rows_t: list[tuple[Tensor, ...]] = []
        for i, item in enumerate(items):
            if not isinstance(item, tuple) or len(item) != width:
                got = f"a tuple of {len(item)}" if isinstance(item, tuple) else type(item).__name__
                raise DataError(
                    f"{name}: sample {i} is {got} but sample 0 is a tuple of {width}; every "
                    "sample needs the same structure"
                )
            rows_t.append(tuple(_as_tensor(v, what=f"{name}[{i}][{j}]") for j, v in enumerate(item)))
        cols_t = [_stack_or_none([r[j] for r in rows_t]) for j in range(width)]
        stacked_t = [c for c in cols_t if c is not None]
        if len(stacked_t) == len(cols_t):
            return InMemoryDataset(stacked_t)
        return ListDataset(rows_t)
    raise DataError(
        f"{name}: a list of samples must hold (x, y) tuples or dicts; sample 0 is a "
        f"{type(first).__name__}. Accepted: {_ACCEPTED}"
    )


def _from_pair(x: Any, y: Any, name: str) -> Dataset:
    xt, yt = _as_tensor(x, what=f"{name} X"), _as_tensor(y, what=f"{name} y")
    if xt.dim() == 0 or yt.dim() == 0:
        raise DataError(
            f"{name}: X and y need a first (sample) dimension; got shapes {tuple(xt.shape)} and {tuple(yt.shape)}"
        )
    if xt.shape[0] != yt.shape[0]:
        raise DataError(
            f"{name}: X has {xt.shape[0]} samples but y has {yt.shape[0]} (shapes "
            f"{tuple(xt.shape)} and {tuple(yt.shape)}); they must have the same first dimension"
        )
    return InMemoryDataset((xt, yt))


def to_dataset(obj: Any, *, name: str = "data") -> Dataset:
    """Convert common in-memory data forms into a map-style torch Dataset.

    Accepted inputs and what one sample looks like:

    * a ``torch.utils.data.Dataset`` (incl. ``IterableDataset``): returned unchanged;
    * a tuple/list ``(X, y)`` of two tensors or numpy arrays with the same first dimension:
      sample ``i`` is ``(X[i], y[i])``;
    * one 2-D **integer** tensor/array ``(N, T+1)`` of token windows: sample ``i`` is
      ``(row[:-1], row[1:])`` as int64 (next-token language modeling);
    * a list of ``(x, y, ...)`` tuples: same tuples back as tensors;
    * a list of dicts (``{"input_ids": ..., "labels": ...}``): dicts of tensors;
    * a dict of equal-length tensors/arrays (columns): sample ``i`` is ``{k: v[i]}``.

    numpy arrays become tensors via ``torch.as_tensor``; numpy float64 becomes float32 (tensors
    keep their dtype: that was the caller's choice). Lists of same-shape samples are stacked
    into one :class:`InMemoryDataset` (fast batched fetch); ragged ones stay a
    :class:`ListDataset`.

    Args:
        obj: the data.
        name: what to call it in error messages (``"train"``, ``"val"``).

    Returns:
        A Dataset.

    Raises:
        DataError: an unsupported type (a ``DataLoader`` included: pass that to
            :func:`build_dataloader` instead), mismatched lengths, empty input, or a single
            tensor that is not 2-D integer.

    Example:
        >>> import numpy as np
        >>> ds = to_dataset((np.zeros((4, 3)), np.arange(4)))
        >>> x, y = ds[2]
        >>> x.dtype, int(y)
        (torch.float32, 2)
    """
    if isinstance(obj, Dataset):
        return obj
    if isinstance(obj, DataLoader):
        raise DataError(
            f"{name}: got a DataLoader; to_dataset converts raw data only. Pass the DataLoader to "
            "build_dataloader (it is used as is) or pass loader.dataset here"
        )
    if _is_array(obj):
        t = _as_tensor(obj, what=name)
        if t.dim() == 2 and not (t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool):
            return TokenWindowDataset(t)
        raise DataError(
            f"{name}: a single tensor is only accepted as 2-D integer token windows (N, T+1) for "
            f"language modeling; got shape {tuple(t.shape)} dtype {t.dtype}. For features and "
            "targets pass a tuple (X, y)"
        )
    if isinstance(obj, Mapping):
        if not obj:
            raise DataError(f"{name}: got an empty dict; nothing to train on")
        cols = {str(k): _as_tensor(v, what=f"{name}[{k!r}]") for k, v in obj.items()}
        return InMemoryDataset(cols)
    if isinstance(obj, (tuple, list)):
        if len(obj) == 0:
            raise DataError(f"{name}: got an empty {type(obj).__name__}; nothing to train on")
        if len(obj) == 2 and _is_array(obj[0]) and _is_array(obj[1]):
            return _from_pair(obj[0], obj[1], name)
        if isinstance(obj[0], (tuple, Mapping)):
            return _from_sample_list(list(obj), name)
        raise DataError(
            f"{name}: a {type(obj).__name__} of {len(obj)} items starting with a "
            f"{type(obj[0]).__name__} is not a form I can read. Accepted: {_ACCEPTED}"
        )
    raise DataError(f"{name}: cannot make a dataset from a {type(obj).__name__}. Accepted: {_ACCEPTED}")
