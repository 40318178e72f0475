"""fingerprint_dataset: deterministic, content-sensitive, fast paths agree with the item path."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, IterableDataset, TensorDataset

from trainengine.data import (
    InMemoryDataset,
    ListDataset,
    TokenWindowDataset,
    build_dataloader,
    combine_fingerprints,
    fingerprint_dataset,
    load_builtin,
)
from trainengine.errors import DataError


class _Items(Dataset):
    """Generic map-style dataset over a list (forces the item-by-item path)."""

    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_matches_a_hand_computed_digest():
    # Independent check of the documented v1 scheme for one tiny sample.
    x = torch.tensor([1.5, -2.0], dtype=torch.float32)
    y = torch.tensor(3)
    h = hashlib.sha256(b"trainengine.fingerprint.v1|1|")
    h.update(b"L2|")
    h.update(b"Ttorch.float32(2,)|" + np.array([1.5, -2.0], np.float32).tobytes())
    h.update(b"Ttorch.int64()|" + np.array(3, np.int64).tobytes())
    assert fingerprint_dataset(_Items([(x, y)])) == h.hexdigest()
    assert fingerprint_dataset(InMemoryDataset((x[None], y[None]))) == h.hexdigest()


def test_in_memory_fast_path_equals_item_by_item_path():
    g = torch.Generator().manual_seed(0)
    cols = (torch.rand(50, 2, 3, generator=g), torch.randint(0, 9, (50,), generator=g), torch.rand(50).bfloat16())
    ds = InMemoryDataset(cols)
    expected = fingerprint_dataset(_Items([ds[i] for i in range(50)]))
    assert fingerprint_dataset(ds) == expected
    assert fingerprint_dataset(TensorDataset(*cols)) == expected
    assert fingerprint_dataset(ds, max_items=7) == fingerprint_dataset(_Items([ds[i] for i in range(7)]))


def test_dict_columns_fast_path_equals_list_of_dicts():
    ids, labels = torch.arange(30).reshape(10, 3), torch.rand(10)
    ds = InMemoryDataset({"labels": labels, "input_ids": ids})
    items = [{"input_ids": ids[i], "labels": labels[i]} for i in range(10)]
    assert fingerprint_dataset(ds) == fingerprint_dataset(ListDataset(items))


def test_numpy_and_tensor_samples_hash_equal():
    a = _Items([(np.arange(3, dtype=np.float32), np.int64(1))])
    b = _Items([(torch.arange(3, dtype=torch.float32), torch.tensor(1))])
    assert fingerprint_dataset(a) == fingerprint_dataset(b)


def test_any_change_changes_the_fingerprint():
    x, y = torch.rand(20, 4), torch.arange(20)
    base = fingerprint_dataset((x, y))
    assert fingerprint_dataset((x.clone(), y.clone())) == base
    x2 = x.clone()
    x2[13, 2] += 1e-3
    assert fingerprint_dataset((x2, y)) != base
    assert fingerprint_dataset((x.flip(0), y.flip(0))) != base  # order matters
    same_bytes_other_dtype = x.view(torch.int32)
    assert fingerprint_dataset((same_bytes_other_dtype, y)) != base
    assert fingerprint_dataset((x.reshape(20, 2, 2), y)) != base  # shape matters


def test_token_windows_hash_stream_and_prefix():
    stream = torch.arange(200, dtype=torch.uint8)
    ds = TokenWindowDataset.from_stream(stream, seq_len=10)
    fp = fingerprint_dataset(ds)
    changed = stream.clone()
    changed[150] = 0
    assert fingerprint_dataset(TokenWindowDataset.from_stream(changed, seq_len=10)) != fp
    short = TokenWindowDataset.from_stream(stream, seq_len=10, max_windows=5)
    assert fingerprint_dataset(ds, max_items=5) == fingerprint_dataset(short)
    assert fingerprint_dataset(TokenWindowDataset.from_stream(stream, seq_len=11)) != fp


def test_dataloader_input_hashes_its_dataset():
    data = (torch.rand(6, 2), torch.arange(6))
    loader = build_dataloader(data, batch_size=2, shuffle=True, seed=0)
    assert fingerprint_dataset(loader) == fingerprint_dataset(data)


def test_iterable_dataset_needs_max_items_without_len():
    class Stream(IterableDataset):
        def __iter__(self):
            i = 0
            while True:
                yield torch.tensor(i)
                i += 1

    with pytest.raises(DataError, match="max_items"):
        fingerprint_dataset(Stream())
    assert fingerprint_dataset(Stream(), max_items=3) == fingerprint_dataset(
        _Items([torch.tensor(0), torch.tensor(1), torch.tensor(2)])
    )


def test_unsupported_sample_type_is_a_data_error():
    with pytest.raises(DataError, match="set"):
        fingerprint_dataset(_Items([{1, 2}]))


def test_builtin_fingerprint_combines_both_splits():
    s = load_builtin("digits", max_train_samples=50, max_val_samples=20)
    assert s.info.fingerprint == combine_fingerprints(fingerprint_dataset(s.train), fingerprint_dataset(s.val))
    assert combine_fingerprints("a", "b") != combine_fingerprints("b", "a")


def test_fingerprint_is_stable_across_processes():
    # A fresh interpreter with a different hash seed must give the same digest.
    code = "from trainengine.data import load_builtin;print(load_builtin('digits', seed=5).info.fingerprint)"
    env = dict(os.environ, PYTHONHASHSEED="123")
    src = os.path.join(os.path.dirname(__file__), "..", "..", "src")
    env["PYTHONPATH"] = os.pathsep.join([os.path.abspath(src), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == load_builtin("digits", seed=5).info.fingerprint
