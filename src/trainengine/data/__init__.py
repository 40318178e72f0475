"""Data: offline built-in data sets, conversion of user data, reproducible loaders, lineage hashes.

Example:
    >>> from trainengine.data import load_builtin, build_dataloader
    >>> splits = load_builtin("digits", seed=0)
    >>> loader = build_dataloader(splits.train, batch_size=32, shuffle=True, seed=0)
    >>> x, y = next(iter(loader))
    >>> tuple(x.shape), y.dtype
    ((32, 64), torch.int64)
"""

from trainengine.data import _builtin  # noqa: F401  (registers digits, diabetes, pystdlib)
from trainengine.data._convert import to_dataset
from trainengine.data._datasets import (
    InMemoryDataset,
    ListDataset,
    PreCollatedBatch,
    TokenWindowDataset,
    collate_batch,
)
from trainengine.data._fingerprint import combine_fingerprints, count_nonfinite, fingerprint_dataset
from trainengine.data._loader import build_dataloader, seed_worker
from trainengine.data._overlap import check_overlap
from trainengine.data._registry import DatasetFactory, list_datasets, load_builtin, register_dataset
from trainengine.data._types import DataLeakageWarning, DatasetInfo, DatasetSplits, TaskType

__all__ = [
    "DatasetFactory",
    "DatasetInfo",
    "DatasetSplits",
    "DataLeakageWarning",
    "TaskType",
    "register_dataset",
    "list_datasets",
    "load_builtin",
    "to_dataset",
    "build_dataloader",
    "seed_worker",
    "collate_batch",
    "fingerprint_dataset",
    "combine_fingerprints",
    "count_nonfinite",
    "check_overlap",
    "InMemoryDataset",
    "TokenWindowDataset",
    "ListDataset",
    "PreCollatedBatch",
]
