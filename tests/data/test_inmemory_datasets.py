"""InMemoryDataset / TokenWindowDataset construction rules and sample semantics."""

from __future__ import annotations

import pytest
import torch

from trainengine.data import InMemoryDataset, TokenWindowDataset
from trainengine.errors import DataError


def test_in_memory_dataset_validates_columns():
    with pytest.raises(DataError, match="at least one"):
        InMemoryDataset(())
    with pytest.raises(DataError, match="0-dim"):
        InMemoryDataset((torch.zeros(3), torch.tensor(1.0)))
    with pytest.raises(DataError, match=r"\[3, 4\]"):
        InMemoryDataset((torch.zeros(3), torch.zeros(4)))


def test_in_memory_dataset_items_and_batches():
    x, y = torch.rand(6, 2), torch.arange(6)
    ds = InMemoryDataset((x, y))
    assert len(ds) == 6
    xi, yi = ds[-1]
    assert torch.equal(xi, x[5]) and int(yi) == 5
    batch = ds.__getitems__([5, 0]).collated
    assert torch.equal(batch[0], x[[5, 0]]) and batch[1].tolist() == [5, 0]
    with pytest.raises(IndexError):
        ds.__getitems__([6])


def test_from_stream_window_layout():
    stream = torch.arange(23, dtype=torch.uint8)
    ds = TokenWindowDataset.from_stream(stream, seq_len=5)
    assert len(ds) == (23 - 1) // 5 == 4
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.tolist() == list(range(5 * i, 5 * i + 5))
        assert y.tolist() == list(range(5 * i + 1, 5 * i + 6))
    assert ds.windows.untyped_storage().data_ptr() == stream.untyped_storage().data_ptr()  # a view


def test_from_stream_too_short_is_a_data_error():
    with pytest.raises(DataError, match="too short"):
        TokenWindowDataset.from_stream(torch.zeros(5, dtype=torch.uint8), seq_len=5)


def test_window_inputs_and_labels_do_not_share_memory():
    ds = TokenWindowDataset(torch.arange(12).reshape(2, 6))
    x, y = ds[0]
    y[:] = -100  # masking labels in place must not touch inputs or the stored rows
    assert x.tolist() == [0, 1, 2, 3, 4]
    assert ds[0][1].tolist() == [1, 2, 3, 4, 5]
    bx, by = ds.__getitems__([1]).collated
    by.fill_(-1)
    assert bx.tolist() == [[6, 7, 8, 9, 10]]


@pytest.mark.parametrize("bad", [torch.rand(3, 4), torch.zeros(3, 1, dtype=torch.long), torch.zeros(4)])
def test_token_window_dataset_rejects_bad_windows(bad):
    with pytest.raises(DataError):
        TokenWindowDataset(bad)
