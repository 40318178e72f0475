"""Result types shared by the data package: what a built-in data set loader hands back."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch.utils.data import Dataset

__all__ = ["TaskType", "DatasetInfo", "DatasetSplits", "DataLeakageWarning", "ReadOptions"]

TaskType = Literal["classification", "regression", "language_modeling", "reward"]


class DataLeakageWarning(UserWarning):
    """Validation samples also occur in the training data (see :func:`check_overlap`)."""


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a task need to know about a data set, plus its lineage hash.

    Example:
        >>> from trainengine.data import load_builtin
        >>> info = load_builtin("digits").info
        >>> (info.task_type, info.input_dim, info.num_classes, info.input_shape)
        ('classification', 64, 10, (64,))
    """

    name: str
    """Registry name of the data set (``"digits"``)."""
    task_type: TaskType
    """Which loss/metrics family fits: classification, regression or language_modeling."""
    input_dim: int | None
    """Number of input features of one flattened sample (MLP input width); None for token data."""
    num_classes: int | None
    """Number of classes for classification, else None."""
    vocab_size: int | None
    """Token vocabulary size for language modeling (256 for byte-level), else None."""
    seq_len: int | None
    """Tokens per sample for language modeling (input and labels both have this length)."""
    input_shape: tuple[int, ...]
    """Shape of one sample's input tensor, without the batch dimension: ``(64,)``, ``(1, 8, 8)``."""
    num_train: int
    """Number of training samples."""
    num_val: int
    """Number of validation samples."""
    target_mean: float | None = None
    """Regression only: the TRAIN target mean subtracted before training (un-scale: y*std+mean)."""
    target_std: float | None = None
    """Regression only: the TRAIN target standard deviation the targets were divided by."""
    fingerprint: str = ""
    """sha256 hex over both splits (train then val); identical data gives the identical hash."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Data-set specific details (class names, feature names, file lists, ...)."""


@dataclass(frozen=True)
class DatasetSplits:
    """A train split, a validation split and the :class:`DatasetInfo` that describes both.

    Example:
        >>> from trainengine.data import load_builtin
        >>> splits = load_builtin("diabetes", seed=0)
        >>> len(splits.train) == splits.info.num_train
        True
    """

    train: Dataset
    """Training samples (map-style dataset)."""
    val: Dataset
    """Validation samples, disjoint from ``train`` by construction."""
    info: DatasetInfo
    """Shapes, sizes, scaling and fingerprint."""
    test: Dataset | None = None
    """Held-out test samples (``data.test_file``), evaluated once after training; None without one."""


@dataclass(frozen=True)
class ReadOptions:
    """What a file reader (an entry of :data:`trainengine.registries.DATA_FORMATS`) needs besides the files.

    Every option that changes the parsed result is part of the reader's cache key.
    """

    cache_dir: Path
    """Folder of the memory-mapped Arrow cache (see ``trainengine.data._cache``)."""
    bad_rows: Literal["error", "skip"] = "error"
    """A malformed row (wrong column count, unparsable value, bad JSON, unreadable image): raise, or skip and count."""
    delimiter: str | None = None
    """CSV field delimiter; None = ``,`` (tab for ``.tsv`` files)."""
    image_size: int | None = None
    """Image folders: resize every image to this square size; None = all images must share one size."""
    image_mode: Literal["auto", "L", "RGB"] = "auto"
    """Image folders: L (grayscale) or RGB; auto = L when every image is grayscale."""
    split: str | None = None
    """Hugging Face ``DatasetDict`` folders: the split to read."""
