"""Issue 10 item 9: bad user data ends in a DataError naming the sample and what was expected.

Before: ``IndexError: Target 7 is out of bounds``, ``RuntimeError: stack expects each tensor to be
equal size`` and ``TypeError: can't convert np.ndarray of type numpy.str_`` from inside torch.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from trainengine import TaskSpec
from trainengine.engine import Trainer
from trainengine.errors import DataError
from trainengine.models import MLP

CLS3 = TaskSpec.classification("blobs", 3)


def _train(make_config, train, val=None, model=None):
    cfg = make_config(epochs=1, batch_size=4).with_tracking(write_run_dir=False).build()
    return Trainer(model or MLP(4, 3), None, cfg, CLS3).train(train, val)


def _xy(n: int = 16, bad_at: int | None = None, bad: int = 7):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (n,), generator=g)
    if bad_at is not None:
        y[bad_at] = bad
    return torch.randn(n, 4, generator=g), y


@pytest.mark.parametrize(("bad", "expected"), [(7, r"labels in \[0, 3\)"), (-2, "class indices start at 0")])
def test_in_memory_labels_out_of_range_are_checked_whole(make_config, bad, expected):
    with pytest.raises(DataError, match=rf"train data: sample 13 has label {bad}, .*{expected}"):
        _train(make_config, _xy(bad_at=13, bad=bad))


def test_val_labels_are_checked_before_training(make_config):
    with pytest.raises(DataError, match="val data: sample 2 has label 7"):
        _train(make_config, _xy(), _xy(8, bad_at=2))


def test_ignore_index_labels_are_allowed(make_config):
    x, y = _xy()
    y[3] = -100
    assert _train(make_config, (x, y))["steps"] == 4


class _Lazy(Dataset):
    """Not in memory: labels are only seen batch by batch."""

    def __init__(self, x, y) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def test_other_datasets_are_checked_on_their_first_batch(make_config):
    x, y = _xy(bad_at=2)
    with pytest.raises(DataError, match="first training batch: sample 2 has label 7"):
        _train(make_config, DataLoader(_Lazy(x, y), batch_size=4))
    x, y = _xy(8, bad_at=1)
    with pytest.raises(DataError, match="val batch 0: sample 1 has label 7"):
        _train(make_config, _xy(), DataLoader(_Lazy(x, y), batch_size=4))
