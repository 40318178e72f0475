"""check_overlap: counts leaked validation inputs and warns; silent when clean."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.utils.data import Dataset

from trainengine.data import DataLeakageWarning, TokenWindowDataset, check_overlap, to_dataset


class _Items(Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def _data(n, offset=0):
    x = torch.arange(offset, offset + n, dtype=torch.float32).unsqueeze(1).repeat(1, 3)  # unique rows
    return x, torch.zeros(n, dtype=torch.long)


def test_leaked_split_warns_with_count_and_fraction():
    tx, ty = _data(40)
    vx = torch.cat([tx[[3, 7, 11, 19, 25]], _data(10, offset=100)[0]])  # 5 leaked of 15
    vy = torch.ones(15, dtype=torch.long)  # labels differ: only the input counts
    with pytest.warns(DataLeakageWarning) as rec:
        count = check_overlap((tx, ty), (vx, vy))
    assert count == 5
    msg = str(rec[0].message)
    assert "5 of 15" in msg and "33.3%" in msg


def test_clean_split_is_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_overlap(_data(30), _data(10, offset=30)) == 0


def test_generic_and_fast_paths_agree():
    tx, ty = _data(20)
    vx = torch.cat([tx[:4], _data(6, offset=50)[0]])
    val_items = _Items([(vx[i], torch.tensor(0)) for i in range(10)])
    train_items = _Items([(tx[i], ty[i]) for i in range(20)])
    with pytest.warns(DataLeakageWarning):
        assert check_overlap((tx, ty), val_items) == 4  # fast train keys vs generic val keys
    with pytest.warns(DataLeakageWarning):
        assert check_overlap(train_items, (vx, torch.zeros(10))) == 4


def test_dict_samples_compare_input_ids_only():
    train = [{"input_ids": torch.tensor([i, i + 1]), "labels": torch.tensor([0, 0])} for i in range(10)]
    val = [
        {"input_ids": torch.tensor([2, 3]), "labels": torch.tensor([9, 9])},
        {"input_ids": torch.tensor([50, 51]), "labels": torch.tensor([0, 0])},
    ]
    with pytest.warns(DataLeakageWarning):
        assert check_overlap(to_dataset(train), _Items(val)) == 1


def test_token_windows_leak_detected():
    stream = torch.arange(250, dtype=torch.uint8)
    train = TokenWindowDataset.from_stream(stream[:201], seq_len=10)  # windows start at 0,10,..,190
    val = TokenWindowDataset(torch.stack([stream[20:31], stream[205:216], stream[5:16]]))
    with pytest.warns(DataLeakageWarning):
        assert check_overlap(train, val) == 1  # only the window at 20 is also a train window


def test_same_input_different_dtype_is_not_a_match():
    x = torch.arange(6).reshape(3, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_overlap((x, torch.zeros(3)), (x.float(), torch.zeros(3))) == 0


def test_max_items_bounds_the_work():
    x, y = _data(100)
    with pytest.warns(DataLeakageWarning) as rec:
        count = check_overlap((x, y), (x, y), max_items=10)
    # 10 val samples checked against 10 sampled train samples with the same fixed seed.
    assert count == 10
    assert "10 of 10" in str(rec[0].message)
