"""to_dataset: every accepted input form, and a clear DataError for the rest."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from trainengine.data import InMemoryDataset, ListDataset, TokenWindowDataset, to_dataset
from trainengine.errors import DataError


def test_dataset_is_returned_unchanged():
    ds = TensorDataset(torch.zeros(3, 2))
    assert to_dataset(ds) is ds


@pytest.mark.parametrize("container", [tuple, list])
def test_pair_of_tensors(container):
    x, y = torch.rand(5, 3), torch.arange(5)
    ds = to_dataset(container([x, y]))
    assert len(ds) == 5
    xi, yi = ds[2]
    assert torch.equal(xi, x[2]) and torch.equal(yi, y[2])


def test_pair_of_numpy_arrays_float64_becomes_float32():
    x = np.random.default_rng(0).normal(size=(4, 2))  # float64
    y = np.array([0, 1, 0, 1])
    ds = to_dataset((x, y))
    xi, yi = ds[1]
    assert xi.dtype == torch.float32 and yi.dtype == torch.int64
    assert torch.allclose(xi, torch.from_numpy(x[1]).float())


def test_float64_tensor_keeps_its_dtype():
    ds = to_dataset((torch.zeros(2, 2, dtype=torch.float64), torch.zeros(2)))
    assert ds[0][0].dtype == torch.float64


def test_pair_with_different_lengths_names_both():
    with pytest.raises(DataError, match=r"X has 5 samples but y has 4"):
        to_dataset((torch.zeros(5, 2), torch.zeros(4)))


def test_single_2d_integer_tensor_is_token_windows():
    rows = torch.arange(12).reshape(3, 4)
    ds = to_dataset(rows)
    assert isinstance(ds, TokenWindowDataset) and len(ds) == 3
    x, y = ds[1]
    assert x.tolist() == [4, 5, 6] and y.tolist() == [5, 6, 7]
    assert x.dtype == torch.int64


def test_single_numpy_int_array_is_token_windows():
    ds = to_dataset(np.arange(10, dtype=np.int32).reshape(2, 5))
    x, y = ds[0]
    assert x.tolist() == [0, 1, 2, 3] and y.tolist() == [1, 2, 3, 4]


@pytest.mark.parametrize("bad", [torch.rand(3, 4), torch.arange(5), torch.zeros(2, 3, 4, dtype=torch.long)])
def test_single_tensor_that_is_not_2d_integer_is_rejected(bad):
    with pytest.raises(DataError, match="2-D integer"):
        to_dataset(bad)


def test_list_of_tuples_is_stacked():
    items = [(torch.full((2,), float(i)), i) for i in range(4)]
    ds = to_dataset(items)
    assert isinstance(ds, InMemoryDataset)
    x, y = ds[3]
    assert x.tolist() == [3.0, 3.0] and int(y) == 3 and y.dtype == torch.int64


def test_ragged_list_of_tuples_stays_a_list():
    items = [(torch.zeros(2), 0), (torch.zeros(3), 1)]
    ds = to_dataset(items)
    assert isinstance(ds, ListDataset)
    assert ds[1][0].shape == (3,) and int(ds[1][1]) == 1


def test_list_of_dicts_yields_dicts_of_tensors():
    items = [{"input_ids": np.arange(3) + i, "labels": np.arange(3) + i + 1} for i in range(5)]
    ds = to_dataset(items)
    sample = ds[2]
    assert set(sample) == {"input_ids", "labels"}
    assert sample["input_ids"].tolist() == [2, 3, 4] and sample["labels"].tolist() == [3, 4, 5]


def test_list_of_dicts_with_different_keys_is_rejected():
    with pytest.raises(DataError, match="sample 1 has keys"):
        to_dataset([{"a": 1, "b": 2}, {"a": 1}])


def test_dict_of_columns():
    ds = to_dataset({"x": np.zeros((3, 2)), "labels": np.arange(3)})
    assert len(ds) == 3 and int(ds[2]["labels"]) == 2


def test_dataloader_is_not_converted():
    loader = DataLoader(TensorDataset(torch.zeros(2)))
    with pytest.raises(DataError, match="build_dataloader"):
        to_dataset(loader)


@pytest.mark.parametrize(
    ("bad", "type_name"),
    [("text", "str"), (42, "int"), ({1, 2}, "set"), ([1, 2, 3], "list"), (object(), "object")],
)
def test_unsupported_inputs_name_the_type_and_the_accepted_forms(bad, type_name):
    with pytest.raises(DataError) as ei:
        to_dataset(bad, name="train")
    msg = str(ei.value)
    assert msg.startswith("train:")
    assert type_name in msg
    assert "Accepted" in msg


def test_empty_inputs_are_rejected():
    for empty in ([], (), {}):
        with pytest.raises(DataError, match="empty"):
            to_dataset(empty)


def test_object_numpy_array_is_rejected():
    with pytest.raises(DataError, match="dtype object"):
        to_dataset((np.array([None, 1], dtype=object), np.zeros(2)))


def test_iterable_dataset_passes_through():
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield from range(3)

    s = Stream()
    assert to_dataset(s) is s
    assert isinstance(to_dataset(TensorDataset(torch.zeros(1))), Dataset)
