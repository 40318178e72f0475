"""In-memory map-style datasets with a batched fetch path, and the collate function that uses it.

Why a batched path: a plain ``TensorDataset`` makes the DataLoader call ``__getitem__`` B times per
batch and then ``default_collate`` stacks B small tensors again, which costs tens of microseconds
per sample in Python. Here ``__getitems__`` (which torch's map-style fetcher calls with the whole
index list, see ``torch/utils/data/_utils/fetch.py``) gathers the batch with ONE advanced-index op
per column and returns a :class:`PreCollatedBatch`.

:class:`PreCollatedBatch` keeps the fetcher's contract: it *is* a sequence of samples (items are
built lazily on access), so ``default_collate`` or any user ``collate_fn`` still gets exactly what
it would get from B ``__getitem__`` calls. :func:`collate_batch` (the collate function that
:func:`build_dataloader` installs) recognises it and returns the already gathered tensors, which
are identical in type, dtype, shape and values to ``default_collate``'s output. A hand-made
``DataLoader(ds)`` with the default collate is therefore correct, just not as fast.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, default_collate

from trainengine.errors import DataError

__all__ = [
    "InMemoryDataset",
    "TokenWindowDataset",
    "ListDataset",
    "PreCollatedBatch",
    "collate_batch",
]


class PreCollatedBatch(Sequence):
    """A batch already gathered into tensors that still behaves as a list of samples.

    Args:
        collated: what ``default_collate`` would return for the batch: a list of tensors
            (samples are tuples) or a dict of tensors (samples are dicts), each ``(B, ...)``.

    Example:
        >>> import torch
        >>> b = PreCollatedBatch([torch.zeros(3, 2), torch.arange(3)])
        >>> len(b), b[1][1].item()
        (3, 1)
    """

    __slots__ = ("_samples", "collated")

    def __init__(self, collated: list[Tensor] | dict[str, Tensor]) -> None:
        self.collated = collated
        self._samples: list[Any] | None = None

    def _materialize(self) -> list[Any]:
        # Only reached when someone other than collate_batch reads the samples: unbind each
        # column once (one C call, B views) instead of B index ops per column.
        if self._samples is None:
            c = self.collated
            if isinstance(c, dict):
                keys = list(c)
                # Every column holds the same B rows, as default_collate returns them.
                rows = zip(*(c[k].unbind(0) for k in keys), strict=True)
                self._samples = [dict(zip(keys, r, strict=True)) for r in rows]
            else:
                self._samples = list(zip(*(t.unbind(0) for t in c), strict=True))
        return self._samples

    def __len__(self) -> int:
        c = self.collated
        first = next(iter(c.values())) if isinstance(c, dict) else c[0]
        return int(first.shape[0])

    def __getitem__(self, j: Any) -> Any:
        return self._materialize()[j]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._materialize())


def collate_batch(batch: Any) -> Any:
    """Collate function: pass a :class:`PreCollatedBatch` through, ``default_collate`` anything else.

    Args:
        batch: what the DataLoader fetcher produced for one batch.

    Returns:
        The collated batch (same structure as ``torch.utils.data.default_collate``).

    Example:
        >>> import torch
        >>> ds = InMemoryDataset((torch.rand(5, 3), torch.arange(5)))
        >>> x, y = collate_batch(ds.__getitems__([4, 0]))
        >>> y.tolist()
        [4, 0]
    """
    if isinstance(batch, PreCollatedBatch):
        c = batch.collated
        # Fresh containers: the DataLoader may pin/move them; never hand out our internals.
        return dict(c) if isinstance(c, dict) else list(c)
    try:
        return default_collate(batch)
    except RuntimeError as exc:
        problem = _ragged_problem(batch)
        if problem is None:
            raise
        raise DataError(problem) from exc


def _shapes(sample: Any) -> dict[str, tuple[int, ...]]:
    """Tensor shapes of one sample by position/key: ``{"[0]": (4,), "[1]": ()}``."""
    if isinstance(sample, Tensor):
        return {"": tuple(sample.shape)}
    if isinstance(sample, Mapping):
        return {f"[{k!r}]{p}": s for k, v in sample.items() for p, s in _shapes(v).items()}
    if isinstance(sample, (tuple, list)):
        return {f"[{i}]{p}": s for i, v in enumerate(sample) for p, s in _shapes(v).items()}
    return {}


def _ragged_problem(batch: Sequence[Any]) -> str | None:
    """Why ``default_collate`` could not stack a batch: the first sample whose shapes differ, or None."""
    if not batch:
        return None
    indices = getattr(batch, "indices", None)  # dataset indices, when ListDataset fetched the batch

    def name(j: int) -> str:
        return f"sample {indices[j]}" if indices is not None else f"sample {j} of the batch"

    first = _shapes(batch[0])
    for j in range(1, len(batch)):
        for part, shape in _shapes(batch[j]).items():
            if part in first and first[part] != shape:
                where = f"element {part}" if part else "the tensor"
                return (
                    f"{name(j)} has {where} of shape {shape} but {name(0)} has {first[part]}: a batch stacks "
                    "its samples, so they need one shape — pad or cut them to one length, or pass a "
                    "DataLoader with a collate_fn that pads"
                )
    return None


class _FetchedSamples(list):
    """A list of samples that remembers their dataset indices (for :func:`collate_batch`'s errors)."""

    indices: list[int]


def _index_tensor(indices: Sequence[int] | Tensor) -> Tensor:
    return torch.as_tensor(indices, dtype=torch.long)


class InMemoryDataset(Dataset):
    """Columns of equal-length tensors; sample ``i`` is row ``i`` of every column.

    Like ``torch.utils.data.TensorDataset`` but with a batched ``__getitems__`` (one index op
    per column per batch) and optional named columns.

    Args:
        columns: a tuple/list of tensors (samples are tuples, e.g. ``(x, y)``) or a dict of
            tensors (samples are dicts, e.g. ``{"input_ids": ..., "labels": ...}``). Every
            tensor needs at least one dimension and the same first dimension.

    Raises:
        DataError: no columns, a 0-dim column, or first dimensions that differ.

    Example:
        >>> import torch
        >>> ds = InMemoryDataset((torch.rand(10, 4), torch.arange(10)))
        >>> x, y = ds[3]
        >>> tuple(x.shape), int(y)
        ((4,), 3)
    """

    def __init__(self, columns: Sequence[Tensor] | Mapping[str, Tensor]) -> None:
        if isinstance(columns, Mapping):
            named = {str(k): v for k, v in columns.items()}
            tensors = list(named.values())
            self.columns: tuple[Tensor, ...] | dict[str, Tensor] = named
        else:
            tensors = list(columns)
            self.columns = tuple(tensors)
        if not tensors:
            raise DataError("InMemoryDataset needs at least one column tensor; got none")
        for i, t in enumerate(tensors):
            if not isinstance(t, Tensor):
                raise DataError(f"InMemoryDataset column {i} is a {type(t).__name__}, not a tensor")
            if t.dim() == 0:
                raise DataError(
                    f"InMemoryDataset column {i} is a 0-dim tensor; each column needs a first (sample) dimension"
                )
        lengths = [int(t.shape[0]) for t in tensors]
        if len(set(lengths)) != 1:
            raise DataError(
                f"InMemoryDataset columns must have the same number of samples (first dimension); got {lengths}"
            )
        self._len = lengths[0]

    @property
    def is_mapping(self) -> bool:
        """True when samples are dicts (named columns)."""
        return isinstance(self.columns, dict)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> tuple[Tensor, ...] | dict[str, Tensor]:
        if isinstance(self.columns, dict):
            return {k: v[index] for k, v in self.columns.items()}
        return tuple(t[index] for t in self.columns)

    def __getitems__(self, indices: Sequence[int]) -> PreCollatedBatch:
        idx = _index_tensor(indices)  # (B,)
        if isinstance(self.columns, dict):
            return PreCollatedBatch({k: v[idx] for k, v in self.columns.items()})
        return PreCollatedBatch([t[idx] for t in self.columns])

    def __repr__(self) -> str:
        cols = self.columns.items() if isinstance(self.columns, dict) else enumerate(self.columns)
        desc = ", ".join(f"{k}: {tuple(v.shape[1:])} {v.dtype}" for k, v in cols)
        return f"InMemoryDataset(n={self._len}, {desc})"


class TokenWindowDataset(Dataset):
    """Next-token samples ``(input_ids[T], labels[T])`` cut from rows of ``T + 1`` tokens.

    ``labels`` is ``input_ids`` shifted by one. Rows are stored in their compact integer dtype
    (uint8 for bytes) and cast to int64 on fetch, so a byte corpus costs 1 byte per token.
    Both returned tensors are fresh memory (masking labels in place never touches inputs).

    Args:
        windows: integer tensor ``(N, T + 1)``; may be a strided view (see :meth:`from_stream`).

    Raises:
        DataError: not 2-D, not an integer dtype, or rows shorter than 2 tokens.

    Example:
        >>> import torch
        >>> ds = TokenWindowDataset.from_stream(torch.arange(9, dtype=torch.uint8), seq_len=4)
        >>> len(ds), ds[1][0].tolist(), ds[1][1].tolist()
        (2, [4, 5, 6, 7], [5, 6, 7, 8])
    """

    def __init__(self, windows: Tensor) -> None:
        if not isinstance(windows, Tensor) or windows.dim() != 2:
            shape = tuple(windows.shape) if isinstance(windows, Tensor) else type(windows).__name__
            raise DataError(f"token windows must be a 2-D tensor (N, T+1); got {shape}")
        if windows.dtype.is_floating_point or windows.dtype.is_complex or windows.dtype == torch.bool:
            raise DataError(f"token windows must have an integer dtype; got {windows.dtype}")
        if windows.shape[1] < 2:
            raise DataError(
                f"token windows need at least 2 tokens per row (input + next-token label); "
                f"got rows of {windows.shape[1]}"
            )
        self.windows = windows  # (N, T+1)
        self.seq_len = int(windows.shape[1]) - 1
        # Set by from_stream: the flat token stream the windows view, used for cheap hashing.
        self.stream: Tensor | None = None

    @classmethod
    def from_stream(cls, tokens: Tensor, seq_len: int, *, max_windows: int | None = None) -> TokenWindowDataset:
        """Cut a flat token stream into non-overlapping windows of ``seq_len + 1`` tokens.

        Window ``i`` is ``tokens[i*T : i*T + T + 1]``: stride ``T``, so consecutive windows share
        their boundary token and every token (but the first) is a label exactly once. No copy:
        the windows are an ``unfold`` view of the stream.

        Args:
            tokens: 1-D integer tensor.
            seq_len: T, tokens per sample.
            max_windows: keep only the first this many windows.

        Raises:
            DataError: ``tokens`` too short for one window, or bad ``seq_len``.
        """
        if tokens.dim() != 1:
            raise DataError(f"a token stream must be 1-D; got shape {tuple(tokens.shape)}")
        if seq_len < 1:
            raise DataError(f"seq_len must be >= 1; got {seq_len}")
        n = (int(tokens.numel()) - 1) // seq_len
        if max_windows is not None:
            n = min(n, max_windows)
        if n < 1:
            raise DataError(
                f"a token stream of {tokens.numel()} tokens is too short for one sample of "
                f"seq_len={seq_len} (needs {seq_len + 1}); use more data or a smaller max_length"
            )
        stream = tokens[: n * seq_len + 1]
        ds = cls(stream.unfold(0, seq_len + 1, seq_len))  # (n, T+1) view, no copy
        ds.stream = stream
        return ds

    def __len__(self) -> int:
        return int(self.windows.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        w = self.windows[index]  # (T+1,)
        return w[:-1].to(torch.int64, copy=True), w[1:].to(torch.int64, copy=True)

    def __getitems__(self, indices: Sequence[int]) -> PreCollatedBatch:
        w = self.windows[_index_tensor(indices)]  # (B, T+1), gathered copy
        fmt = torch.contiguous_format
        x = w[:, :-1].to(torch.int64, memory_format=fmt, copy=True)  # (B, T)
        y = w[:, 1:].to(torch.int64, memory_format=fmt, copy=True)  # (B, T)
        return PreCollatedBatch([x, y])

    def __repr__(self) -> str:
        return f"TokenWindowDataset(n={len(self)}, seq_len={self.seq_len}, dtype={self.windows.dtype})"


class ListDataset(Dataset):
    """A list of ready-made samples (for samples whose shapes differ, so they cannot be stacked).

    Example:
        >>> import torch
        >>> ds = ListDataset([(torch.zeros(2), torch.tensor(0)), (torch.zeros(3), torch.tensor(1))])
        >>> len(ds), tuple(ds[1][0].shape)
        (2, (3,))
    """

    def __init__(self, items: Sequence[Any]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        return self.items[index]

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        # Same samples as B __getitem__ calls; the indices let a collate error name the sample.
        batch = _FetchedSamples(self.items[i] for i in indices)
        batch.indices = list(indices)
        return batch

    def __repr__(self) -> str:
        return f"ListDataset(n={len(self.items)})"
