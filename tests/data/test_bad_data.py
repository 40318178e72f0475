"""Issue 10 item 9: ragged samples and non-numeric arrays give a DataError naming the sample and the fix.

Before: ``RuntimeError: stack expects each tensor to be equal size`` and ``TypeError: can't
convert np.ndarray of type numpy.str_`` from inside torch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from trainengine.data import build_dataloader, collate_batch, to_dataset
from trainengine.errors import DataError


class _Lazy(Dataset):
    def __init__(self, x, y) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def test_ragged_samples_name_the_sample_and_the_shapes():
    samples = [(torch.zeros(5 if i == 6 else 4), torch.tensor(1)) for i in range(8)]
    loader = build_dataloader(samples, batch_size=8, shuffle=False, seed=0)
    with pytest.raises(DataError, match=r"sample 6 has element \[0\] of shape \(5,\) but sample 0 has \(4,\)"):
        next(iter(loader))


def test_ragged_samples_of_any_dataset_name_the_batch_position():
    x = [torch.zeros(4), torch.zeros(4), torch.zeros(3)]
    loader = DataLoader(_Lazy(x, torch.zeros(3)), batch_size=3, collate_fn=collate_batch)
    with pytest.raises(
        DataError, match=r"sample 2 of the batch has element \[0\] of shape \(3,\) but sample 0 of the batch has \(4,\)"
    ):
        next(iter(loader))


def test_numpy_strings_are_a_data_error_with_a_fix():
    with pytest.raises(DataError, match=r"data y is a numpy array of dtype <U3, e.g. 'cat' at index 0.*np.unique"):
        to_dataset((np.zeros((2, 3)), np.array(["cat", "dog"])))
    with pytest.raises(DataError, match="datetime64"):
        to_dataset((np.array(["2020-01-01", "2020-01-02"], dtype="datetime64[D]"), np.zeros(2)))
