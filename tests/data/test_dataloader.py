"""build_dataloader: reproducible order, passthrough, errors, batched fetch correctness, workers."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset, TensorDataset, default_collate

from trainengine.data import (
    InMemoryDataset,
    PreCollatedBatch,
    TokenWindowDataset,
    build_dataloader,
    collate_batch,
    load_builtin,
    seed_worker,
    to_dataset,
)
from trainengine.errors import DataError


def _ids(n: int = 40):
    # x encodes the sample id so batches reveal the order and the x/y pairing.
    return (torch.arange(n, dtype=torch.float32).unsqueeze(1), torch.arange(n))


def _order(loader, epochs=2):
    return [y.tolist() for _ in range(epochs) for _, y in loader]


def test_same_seed_same_order_different_seed_different_order():
    a = _order(build_dataloader(_ids(), batch_size=8, shuffle=True, seed=11))
    b = _order(build_dataloader(_ids(), batch_size=8, shuffle=True, seed=11))
    c = _order(build_dataloader(_ids(), batch_size=8, shuffle=True, seed=12))
    assert a == b
    assert a != c
    assert a[:5] != a[5:]  # reshuffled between epochs
    assert sorted(i for batch in a[:5] for i in batch) == list(range(40))  # each epoch is a permutation


def test_order_does_not_depend_on_the_global_rng():
    torch.manual_seed(1)
    a = _order(build_dataloader(_ids(), batch_size=8, shuffle=True, seed=3))
    torch.manual_seed(999)
    b = _order(build_dataloader(_ids(), batch_size=8, shuffle=True, seed=3))
    assert a == b


def test_no_shuffle_is_sequential_and_pairs_x_with_y():
    loader = build_dataloader(_ids(10), batch_size=4, shuffle=False, seed=0)
    batches = list(loader)
    assert [y.tolist() for _, y in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    for x, y in build_dataloader(_ids(), batch_size=7, shuffle=True, seed=5):
        assert torch.equal(x[:, 0].long(), y)
        assert x.shape[1:] == (1,) and x.dtype == torch.float32


def test_drop_last_drops_the_partial_batch():
    loader = build_dataloader(_ids(10), batch_size=4, shuffle=False, seed=0, drop_last=True)
    assert [len(y) for _, y in loader] == [4, 4]


def test_dataloader_passthrough():
    loader = DataLoader(TensorDataset(torch.zeros(3)), batch_size=2)
    assert build_dataloader(loader, batch_size=64, shuffle=True, seed=0) is loader


def test_empty_dataset_is_rejected():
    with pytest.raises(DataError, match="empty"):
        build_dataloader((torch.zeros(0, 2), torch.zeros(0)), batch_size=2, shuffle=False, seed=0)


def test_batch_larger_than_dataset_with_drop_last_is_rejected():
    with pytest.raises(DataError, match="no batch would be produced"):
        build_dataloader(_ids(5), batch_size=8, shuffle=True, seed=0, drop_last=True)
    # Without drop_last the one short batch is fine.
    assert len(build_dataloader(_ids(5), batch_size=8, shuffle=True, seed=0)) == 1


@pytest.mark.parametrize(("field", "value"), [("batch_size", 0), ("batch_size", 2.5), ("num_workers", -1)])
def test_bad_sizes_are_rejected(field, value):
    kwargs = {"batch_size": 2, "shuffle": False, "seed": 0, field: value}
    with pytest.raises(DataError, match=field):
        build_dataloader(_ids(), **kwargs)


def test_shuffle_on_iterable_dataset_is_rejected():
    class Stream(IterableDataset):
        def __iter__(self):
            yield from (torch.tensor(i) for i in range(4))

    with pytest.raises(DataError, match="IterableDataset"):
        build_dataloader(Stream(), batch_size=2, shuffle=True, seed=0)
    batches = list(build_dataloader(Stream(), batch_size=2, shuffle=False, seed=0))
    assert [b.tolist() for b in batches] == [[0, 1], [2, 3]]


def test_pin_memory_without_accelerator_is_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loader = build_dataloader(_ids(), batch_size=4, shuffle=False, seed=0, pin_memory=True)
        next(iter(loader))


# ----------------------------------------------------------------------------- batched fetch


def _same_batch(a, b):
    assert type(a) is type(b)
    items_a = a.items() if isinstance(a, dict) else enumerate(a)
    for k, v in items_a:
        assert v.dtype == b[k].dtype and v.shape == b[k].shape and torch.equal(v, b[k])


@pytest.mark.parametrize(
    "ds",
    [
        InMemoryDataset((torch.rand(9, 2, 3), torch.arange(9), torch.rand(9))),
        InMemoryDataset({"input_ids": torch.arange(27).reshape(9, 3), "labels": torch.rand(9)}),
        TokenWindowDataset.from_stream(torch.arange(100, dtype=torch.uint8), seq_len=8),
    ],
    ids=["tuple", "dict", "windows"],
)
def test_batched_fetch_matches_default_collate_of_items(ds):
    idx = [7, 0, 3, 3, 8]
    expected = default_collate([ds[i] for i in idx])
    fast = collate_batch(ds.__getitems__(idx))
    _same_batch(fast, expected)
    # The pre-collated batch is still a valid list of samples for any other collate function.
    _same_batch(default_collate(ds.__getitems__(idx)), expected)


def test_loader_batches_equal_item_by_item_batches():
    s = load_builtin("pystdlib", max_length=16, max_corpus_bytes=20_000)
    fast = list(build_dataloader(s.train, batch_size=8, shuffle=True, seed=4))
    plain_loader = DataLoader(
        _PlainWrapper(s.train), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(4)
    )
    plain = list(plain_loader)
    assert len(fast) == len(plain)
    for a, b in zip(fast, plain, strict=True):
        _same_batch(a, b)
        x, y = a
        assert x.shape == (len(x), 16) and x.dtype == torch.int64
        assert torch.equal(x[:, 1:], y[:, :-1])
        assert x.is_contiguous() and y.is_contiguous()


class _PlainWrapper(Dataset):
    """Item-by-item access only (no __getitems__)."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        return self.ds[i]


def test_subset_of_in_memory_dataset_works_with_default_and_fast_collate():
    ds = to_dataset(_ids(10))
    sub = Subset(ds, [9, 2, 5])
    batch = next(iter(DataLoader(sub, batch_size=3)))
    assert batch[1].tolist() == [9, 2, 5]
    fast = next(iter(build_dataloader(sub, batch_size=3, shuffle=False, seed=0)))
    _same_batch(fast, batch)


def test_precollated_batch_behaves_as_a_sequence():
    b = PreCollatedBatch({"a": torch.arange(3), "b": torch.arange(3) * 2})
    assert len(b) == 3
    assert int(b[2]["b"]) == 4
    assert [int(s["a"]) for s in b] == [0, 1, 2]
    assert len(b[1:]) == 2


def test_custom_collate_fn_receives_samples():
    seen = []

    def collate(batch):
        seen.append([int(y) for _, y in batch])
        return len(batch)

    loader = build_dataloader(_ids(6), batch_size=3, shuffle=False, seed=0, collate_fn=collate)
    assert list(loader) == [3, 3]
    assert seen == [[0, 1, 2], [3, 4, 5]]


# ----------------------------------------------------------------------------- workers


class _RandomDraws(Dataset):
    """Each sample is (numpy draw, python draw, torch draw): exposes per-worker RNG seeding."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return torch.tensor([np.random.rand(), random.random(), torch.rand(()).item()])


def test_workers_are_seeded_reproducibly_and_distinctly():
    def draws(seed):
        loader = build_dataloader(
            _RandomDraws(), batch_size=2, shuffle=False, seed=seed, num_workers=2, deterministic=True
        )
        assert loader.persistent_workers and loader.worker_init_fn is seed_worker
        return torch.cat(list(loader))  # (8, 3)

    a, b, c = draws(0), draws(0), draws(1)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # Worker 0 takes batches 0 and 2, worker 1 batches 1 and 3; their numpy streams must differ.
    assert not torch.equal(a[0:2, 0], a[2:4, 0])
    assert len(set(a[:, 0].tolist())) == 8


def test_workers_give_the_same_batches_as_the_main_process():
    s = load_builtin("digits", max_train_samples=200)
    main = list(build_dataloader(s.train, batch_size=32, shuffle=True, seed=9))
    worker = list(build_dataloader(s.train, batch_size=32, shuffle=True, seed=9, num_workers=2, deterministic=True))
    assert len(main) == len(worker)
    for a, b in zip(main, worker, strict=True):
        _same_batch(a, b)


def test_shuffled_order_is_torchs_random_sampler_order_epoch_after_epoch():
    from torch.utils.data import DataLoader, TensorDataset

    ds = TensorDataset(torch.arange(5000.0).unsqueeze(1), torch.arange(5000))
    gen = torch.Generator()
    gen.manual_seed(5)
    reference = DataLoader(ds, batch_size=100, shuffle=True, generator=gen)
    ours = build_dataloader(ds, batch_size=100, shuffle=True, seed=5)
    for _ in range(3):  # the generator advances identically, so later epochs agree too
        assert torch.equal(torch.cat([y for _, y in reference]), torch.cat([y for _, y in ours]))


def test_shuffling_a_large_dataset_does_not_build_a_python_list_of_every_index():
    import tracemalloc

    class Rows(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 2_000_000

        def __getitem__(self, i: int) -> int:
            return i

    sampler = build_dataloader(Rows(), batch_size=10, shuffle=True, seed=0).sampler
    tracemalloc.start()
    first = next(iter(sampler))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert 0 <= first < 2_000_000
    assert peak < 16 * 2**20, f"{peak / 2**20:.0f} MiB of Python objects for one index"  # a full list: ~70 MiB
