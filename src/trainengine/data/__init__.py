"""Data: offline built-in data sets, your own files (CSV, JSONL, Parquet, text, image folders),
conversion of user data, reproducible loaders, lineage hashes.

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
from trainengine.data._curriculum import CurriculumBatchSampler, curriculum_active, score_by_loss
from trainengine.data._datasets import (
    InMemoryDataset,
    ListDataset,
    PreCollatedBatch,
    TokenWindowDataset,
    collate_batch,
)
from trainengine.data._files import FileDataOptions, detect_format, load_files, resolve_files
from trainengine.data._fingerprint import combine_fingerprints, count_nonfinite, fingerprint_dataset
from trainengine.data._images import ImageFolderDataset, read_imagefolder
from trainengine.data._loader import build_dataloader, seed_worker
from trainengine.data._overlap import check_overlap
from trainengine.data._readers import read_csv, read_hf_disk, read_jsonl, read_parquet, row_location
from trainengine.data._registry import DatasetFactory, list_datasets, load_builtin, register_dataset
from trainengine.data._reward import LABEL_PAD, RewardCollator, RewardDataset, load_prm, split_reward_examples
from trainengine.data._reward_readers import (
    DEFAULT_FIELDS,
    ReadReport,
    RewardExample,
    read_eqasc,
    read_prm800k,
    read_reveal,
)
from trainengine.data._reward_tokenize import (
    StepTokenizer,
    build_step_tokenizer,
    encode_steps,
    load_step_tokenizer,
    train_bpe,
)
from trainengine.data._tabular import TabularDataset, fit_tabular, select_rows
from trainengine.data._text import TokenFileDataset, read_text, token_stream, tokenize_to_cache
from trainengine.data._tokenizers import ByteTokenizer, HFTokenizer, Tokenizer, load_tokenizer
from trainengine.data._types import DataLeakageWarning, DatasetInfo, DatasetSplits, ReadOptions, TaskType

__all__ = [
    "DatasetFactory",
    "DatasetInfo",
    "DatasetSplits",
    "DataLeakageWarning",
    "TaskType",
    "register_dataset",
    "list_datasets",
    "load_builtin",
    "load_files",
    "FileDataOptions",
    "ReadOptions",
    "resolve_files",
    "detect_format",
    "read_csv",
    "read_jsonl",
    "read_parquet",
    "read_hf_disk",
    "read_text",
    "read_imagefolder",
    "row_location",
    "fit_tabular",
    "select_rows",
    "TabularDataset",
    "TokenFileDataset",
    "ImageFolderDataset",
    "tokenize_to_cache",
    "token_stream",
    "Tokenizer",
    "ByteTokenizer",
    "HFTokenizer",
    "load_tokenizer",
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
    "CurriculumBatchSampler",
    "curriculum_active",
    "score_by_loss",
    "LABEL_PAD",
    "RewardCollator",
    "RewardDataset",
    "load_prm",
    "split_reward_examples",
    "DEFAULT_FIELDS",
    "ReadReport",
    "RewardExample",
    "read_eqasc",
    "read_prm800k",
    "read_reveal",
    "StepTokenizer",
    "build_step_tokenizer",
    "encode_steps",
    "load_step_tokenizer",
    "train_bpe",
]
