"""Reproducible DataLoader construction."""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable, Iterator, Sized
from typing import Any, cast

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, RandomSampler, Sampler

from trainengine.data._convert import to_dataset
from trainengine.data._datasets import collate_batch
from trainengine.errors import DataError

__all__ = ["build_dataloader", "seed_worker"]

_HAS_IN_ORDER = "in_order" in inspect.signature(DataLoader.__init__).parameters


def _accelerator_available() -> bool:
    acc = getattr(torch, "accelerator", None)  # torch >= 2.6
    return bool(acc.is_available()) if acc is not None else torch.cuda.is_available()


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` that seeds Python's and numpy's RNGs inside a DataLoader worker.

    torch already seeds each worker's torch RNG with ``base_seed + worker_id`` (``base_seed``
    drawn from the loader's generator); ``random`` and ``numpy`` are not, so augmentations using
    them would repeat across workers or differ between runs. This derives both from that seed.

    Args:
        worker_id: the worker index (unused: ``torch.initial_seed()`` already includes it).

    Example:
        >>> seed_worker(0)  # build_dataloader installs it when num_workers > 0
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DataError(f"{name} must be an integer >= {minimum}; got {value!r}")


class _ShuffledIndices(RandomSampler):
    """``RandomSampler`` with the same order from the same generator, without its whole-epoch list.

    ``RandomSampler`` yields from ``torch.randperm(n).tolist()``: a Python list of n ints, about
    36 bytes each (750 MB for a 20M-row file). This keeps the permutation as an int64 tensor
    (8 bytes per row) and converts 64k indices at a time.
    """

    _CHUNK = 65_536

    def __iter__(self) -> Iterator[int]:
        if self.replacement or self._num_samples is not None or self.generator is None:
            yield from super().__iter__()
            return
        n = len(self.data_source)
        order = torch.randperm(n, generator=self.generator)  # (n,) int64, as RandomSampler draws it
        for start in range(0, n, self._CHUNK):
            yield from order[start : start + self._CHUNK].tolist()
        # RandomSampler then draws one more permutation for the remainder (num_samples % n == 0
        # rows of it): drawing it too keeps the generator, so every later epoch, identical.
        torch.randperm(n, generator=self.generator)


class _RankShard(Sampler[int]):
    """Process ``rank``'s share of an order every process draws alike (``order[rank::world]``).

    ``pad``: the order is padded with its own first indices to a multiple of ``world`` (PyTorch's
    DistributedSampler rule), so every process gets as many samples — and steps — as the others;
    ``drop_last``: cut to a multiple instead. Neither: the last processes may get one sample fewer
    (evaluation, where no collective runs per batch). The order is streamed, never listed whole.
    """

    def __init__(self, base: Any, n: int, rank: int, world: int, *, pad: bool, drop_last: bool) -> None:
        self.base, self.n, self.rank, self.world = base, n, rank, world
        self.pad, self.drop_last = pad, drop_last

    def _total(self) -> int:
        if self.drop_last:
            return self.n - self.n % self.world
        return -(-self.n // self.world) * self.world if self.pad else self.n

    def __len__(self) -> int:
        total = self._total()
        return len(range(self.rank, total, self.world))

    def __iter__(self) -> Iterator[int]:
        total = self._total()
        head: list[int] = []
        need = max(0, total - self.n)  # padding: the first indices again
        i = 0
        for i, index in enumerate(self.base):
            if len(head) < need:
                head.append(index)
            if i >= total:
                continue  # drop_last: past the cut (the order is still drawn whole: the generator moves alike)
            if i % self.world == self.rank:
                yield index
        for j, index in enumerate(head, start=self.n):
            if j % self.world == self.rank:
                yield index


def build_dataloader(
    data: Any,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    drop_last: bool = False,
    num_workers: int = 0,
    pin_memory: bool = False,
    deterministic: bool = False,
    collate_fn: Callable[[Any], Any] | None = None,
    rank: int = 0,
    world_size: int = 1,
    pad_shards: bool = True,
) -> DataLoader:
    """Make a DataLoader whose sample order depends only on ``seed``.

    A ``DataLoader`` passed in is returned unchanged (the caller's loader wins). Anything else
    goes through :func:`to_dataset`, then into a DataLoader with:

    * a ``torch.Generator`` seeded with ``seed``: the shuffle order and the workers' base seeds
      are reproducible and independent of the global RNG;
    * :func:`collate_batch` as collate function (unless ``collate_fn`` is given, or the dataset has its
      own ``collate_fn`` attribute): the in-memory
      datasets hand over whole pre-gathered batches, everything else is ``default_collate``d;
    * with ``num_workers > 0``: :func:`seed_worker` as ``worker_init_fn`` and persistent workers
      (no re-fork each epoch).

    Args:
        data: a DataLoader, a Dataset or anything :func:`to_dataset` accepts.
        batch_size: samples per batch (>= 1).
        shuffle: reshuffle every epoch (map-style datasets only).
        seed: seed of the loader's generator.
        drop_last: drop the last incomplete batch.
        num_workers: worker processes (0 loads in the main process; best for in-memory data).
        pin_memory: pin batches for faster host-to-device copies; ignored (no warning) when no
            accelerator is available.
        deterministic: with ``num_workers >= 2`` and ``deterministic=False`` batches are yielded
            as soon as any worker has one (``in_order=False``), so a slow sample does not stall
            the others and batch order may vary between runs; ``True`` keeps sampler order.
            With 0 or 1 worker the order is always the sampler's.
        collate_fn: replaces :func:`collate_batch` (e.g. for padding).
        rank: this process's rank among ``world_size`` (torchrun): it loads ``order[rank::world]``
            of the order every process draws alike from ``seed``.
        world_size: processes sharing the data (1: all of it here).
        pad_shards: with ``world_size > 1`` and not ``drop_last``: pad the order to a multiple of
            ``world_size`` (every process runs as many steps); False leaves shards uneven (evaluation).

    Returns:
        The DataLoader.

    Raises:
        DataError: bad sizes, an empty dataset, ``drop_last`` with ``batch_size`` larger than
            the dataset (no batch would be produced), or ``shuffle`` on an IterableDataset.

    Example:
        >>> import torch
        >>> data = (torch.arange(10.0).unsqueeze(1), torch.arange(10))
        >>> a = [y.tolist() for _, y in build_dataloader(data, batch_size=5, shuffle=True, seed=1)]
        >>> b = [y.tolist() for _, y in build_dataloader(data, batch_size=5, shuffle=True, seed=1)]
        >>> a == b
        True
    """
    if isinstance(data, DataLoader):
        if world_size > 1 and not isinstance(data.sampler, DistributedSampler):
            raise DataError(
                f"a ready-made DataLoader cannot be split over {world_size} processes: every process would load all "
                "of it. Pass the Dataset itself (the engine shards it per rank), or give your DataLoader a "
                "torch.utils.data.DistributedSampler"
            )
        return data
    _check_int("batch_size", batch_size, 1)
    _check_int("num_workers", num_workers, 0)
    _check_int("seed", seed, -(2**63))
    dataset = to_dataset(data)

    if isinstance(dataset, IterableDataset) and shuffle:
        raise DataError(
            "shuffle=True is not possible for an IterableDataset (it has no indices to "
            "permute); shuffle inside the iterable or pass a map-style dataset"
        )
    try:
        n = len(cast(Sized, dataset))  # Dataset does not declare __len__; TypeError when it lacks one
    except TypeError:
        n = None  # an iterable of unknown length: nothing to check up front
    if n == 0:
        raise DataError("the dataset is empty (0 samples); nothing to load")
    if n is not None and drop_last and batch_size > n:
        raise DataError(
            f"batch_size={batch_size} is larger than the dataset ({n} samples) and drop_last=True, "
            f"so no batch would be produced; lower batch_size to at most {n} or set drop_last=False"
        )

    generator = torch.Generator()
    generator.manual_seed(seed)
    workers = num_workers > 0
    extra: dict[str, Any] = {}
    if _HAS_IN_ORDER:  # DataLoader(in_order=...) exists from torch 2.6
        extra["in_order"] = deterministic or num_workers < 2
    sampler: Any = _ShuffledIndices(cast(Sized, dataset), generator=generator) if shuffle and n is not None else None
    if world_size > 1:
        if n is None:
            raise DataError(
                f"an iterable dataset of unknown length cannot be split over {world_size} processes by the engine; "
                "shard it inside the iterable (torch.distributed.get_rank() / get_world_size()), or pass a "
                "map-style Dataset"
            )
        base = sampler if sampler is not None else range(n)
        sampler = _RankShard(base, n, rank, world_size, pad=pad_shards, drop_last=drop_last)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else None,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        collate_fn=collate_fn if collate_fn is not None else (getattr(dataset, "collate_fn", None) or collate_batch),
        pin_memory=pin_memory and _accelerator_available(),
        generator=generator,
        worker_init_fn=seed_worker if workers else None,
        persistent_workers=workers,
        **extra,
    )
