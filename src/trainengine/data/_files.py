"""Your own data files -> :class:`DatasetSplits`: the orchestration behind ``data.train_file``.

Each split's files are resolved (paths, globs, lists), their format picked (``data.format`` or the
extension), parsed once by the format's reader (:data:`trainengine.registries.DATA_FORMATS`) into
the memory-mapped Arrow cache, and turned into one of three kinds of data set:

* **tabular** (CSV, JSONL, Parquet, save_to_disk with a label column): preprocessing (numeric
  standardisation, categorical encoding, missing values) is fitted on the TRAINING rows only and
  travels with the run, its checkpoints and its export bundle;
* **language modeling** (text files, or a text column): tokenized into one memory-mapped token
  stream cut into ``data.max_length`` windows;
* **images** (a folder of class folders): decoded pixels, one class per folder.

Without a validation file, ``data.val_fraction`` of the training rows is held out with the run's
seed (for text: the last share of the token stream, as nanoGPT-style corpora are split).
"""

from __future__ import annotations

import functools
import glob
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from trainengine.data._cache import CachedTable, cache_root
from trainengine.data._types import DatasetInfo, DatasetSplits, ReadOptions
from trainengine.errors import DataError
from trainengine.registries import DATA_FORMATS

__all__ = ["resolve_files", "detect_format", "load_files", "FileDataOptions", "task_type_of"]

_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "text",
    ".text": "text",
    ".md": "text",
}
_IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})
_HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
_LABEL_NAMES = ("label", "labels", "target", "y", "class")
_VAL_SPLITS = ("validation", "valid", "val", "dev")
Kind = Literal["tabular", "language_modeling", "images"]


@dataclass(frozen=True)
class FileDataOptions:
    """The ``data`` section fields file data needs (a :class:`DataSection` works as is)."""

    train_file: str | list[str]
    val_file: str | list[str] | None = None
    test_file: str | list[str] | None = None
    format: str = "auto"
    task: str = "auto"
    val_fraction: float = 0.2
    max_length: int = 128
    max_train_samples: int | None = None
    max_val_samples: int | None = None
    feature_columns: list[str] | None = None
    label_column: str | None = None
    text_column: str | None = None
    categorical_columns: list[str] | None = None
    categorical_encoding: Literal["onehot", "embedding"] = "onehot"
    max_categories: int = 100
    standardize: bool = True
    missing_values: Literal["fill", "drop", "error"] = "fill"
    bad_rows: Literal["error", "skip"] = "error"
    delimiter: str | None = None
    tokenizer: str = "byte"
    image_size: int | None = None
    image_mode: Literal["auto", "L", "RGB"] = "auto"
    cache_dir: str | None = None

    @classmethod
    def from_section(cls, section: Any) -> FileDataOptions:
        """Copy the matching fields of a config's ``data`` section."""
        names = cls.__dataclass_fields__
        return cls(**{n: getattr(section, n) for n in names if hasattr(section, n)})


# ----------------------------------------------------------------------------- files and formats
def resolve_files(spec: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *, what: str) -> list[Path]:
    """The files a ``data.*_file`` value names: paths, globs (sorted) or a list of both, in order.

    Raises:
        DataError: a path that does not exist or a glob that matches nothing (the message names
            it, the working directory, and ``what`` — e.g. ``data.train_file``).

    Example:
        >>> resolve_files("/no/such/*.csv", what="data.train_file")
        Traceback (most recent call last):
        ...
        trainengine.errors.DataError: data.train_file: '/no/such/*.csv' matches no file (...)
    """
    items = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    out: list[Path] = []
    for item in items:
        text = os.path.expanduser(os.fspath(item))
        if glob.has_magic(text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise DataError(f"{what}: {text!r} matches no file (working directory {os.getcwd()})")
            out.extend(Path(m) for m in matches)
        else:
            path = Path(text)
            if not path.exists():
                raise DataError(
                    f"{what}: {text!r} does not exist (working directory {os.getcwd()}); check the path, or use a "
                    "glob such as data/*.csv"
                )
            out.append(path)
    seen: set[Path] = set()
    unique = [p for p in out if not (p.resolve() in seen or seen.add(p.resolve()))]  # type: ignore[func-returns-value]  # set.add returns None: the idiom keeps the first of each
    return unique


def _is_image_folder(path: Path) -> bool:
    for sub in sorted(path.iterdir()):
        if sub.is_dir() and any(f.suffix.lower() in _IMAGE_EXTENSIONS for f in sub.iterdir()):
            return True
    return False


def detect_format(files: Sequence[Path], *, what: str = "data.train_file") -> str:
    """The format of ``files`` from their extension, or what a folder holds.

    Raises:
        DataError: an unknown extension, files of different formats, or a folder that is neither
            an image folder nor a ``save_to_disk`` folder (the message says to set ``data.format``).

    Example:
        >>> detect_format([Path("a.csv"), Path("b.tsv")])
        'csv'
    """
    found: dict[str, Path] = {}
    for path in files:
        if path.is_dir():
            if any((path / m).is_file() for m in _HF_MARKERS):
                fmt = "hf_disk"
            elif _is_image_folder(path):
                fmt = "imagefolder"
            else:
                raise DataError(
                    f"{what}: the folder {path} is neither an image folder (class_name/image.png) nor a Hugging Face "
                    "save_to_disk folder (dataset_info.json); set data.format or name the files (a glob)"
                )
        else:
            ext = path.suffix.lower()
            if ext not in _EXTENSIONS:
                known = ", ".join(sorted(_EXTENSIONS))
                raise DataError(
                    f"{what}: cannot tell the format of {path.name} from its extension {ext or '(none)'!r} (known: "
                    f"{known}); set data.format to one of {', '.join(DATA_FORMATS.names())}"
                )
            fmt = _EXTENSIONS[ext]
        found.setdefault(fmt, path)
    if len(found) > 1:
        pairs = ", ".join(f"{p.name} ({f})" for f, p in found.items())
        raise DataError(f"{what}: the files have different formats: {pairs}; give one format per split")
    return next(iter(found))


def _read(files: list[Path], fmt: str, options: ReadOptions) -> CachedTable:
    reader = DATA_FORMATS.get(fmt)
    return reader(files, options)


# ----------------------------------------------------------------------------- splits
def _holdout(n: int, val_fraction: float, seed: int, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, val) row indices: a seeded ``val_fraction`` share of ``range(n)`` for validation.

    Stratified by ``labels`` when given and every class has two rows or more, so every class
    keeps its share. Sorted, so reading either split walks the memory-mapped file forwards.
    """
    if n < 2:
        raise DataError(f"the training data has {n} usable row(s); holding out a validation split needs at least 2")
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    if labels is not None:
        from sklearn.model_selection import train_test_split  # lazy: ~0.7 s to import

        _, counts = np.unique(labels, return_counts=True)
        if counts.min() >= 2 and len(counts) <= n_val:
            tr, va = train_test_split(np.arange(n), test_size=n_val, stratify=labels, random_state=seed)
            return np.sort(tr), np.sort(va)
    # int32 positions and a mask instead of sorting both halves of an int64 permutation: about a
    # third of the memory on a 26M-row file (measured in benchmarks/csv_stream.py).
    dtype = np.int32 if n < 2**31 else np.int64
    val = np.sort(np.random.default_rng(seed).permutation(np.arange(n, dtype=dtype))[:n_val]).astype(np.int64)
    keep = np.ones(n, dtype=bool)
    keep[val] = False
    return np.flatnonzero(keep), val


def _cap(rows: np.ndarray, cap: int | None) -> np.ndarray:
    return rows if cap is None else rows[:cap]


def _data_name(files: Sequence[Path]) -> str:
    name = files[0].name if len(files) == 1 else f"{files[0].name}+{len(files) - 1}"
    return name or "files"


def _sources(table: CachedTable) -> list[dict[str, Any]]:
    return [{k: s.get(k) for k in ("path", "size", "sha256", "rows")} for s in table.meta.get("sources", [])]


def _split_record(table: CachedTable, files: Sequence[Path], kept: int, extra: dict[str, Any] | None = None) -> dict:
    record = {
        "files": [str(f.resolve()) for f in files],
        "sources": _sources(table),
        "rows_read": table.table.num_rows,
        "bad_rows": int(table.meta.get("bad_rows", 0)),
        "bad_row_examples": table.meta.get("bad_row_examples", [])[:5],
        "samples": kept,
        "cache_key": table.meta.get("key"),
    }
    record.update(extra or {})
    return record


def _column_names(table: CachedTable) -> list[str]:
    return list(table.table.schema.names)


def _pick_column(table: CachedTable, wanted: str | None, defaults: Sequence[str], what: str) -> str | None:
    names = _column_names(table)
    if wanted is not None:
        if wanted not in names:
            raise DataError(f"{what} {wanted!r} is not a column of the data; the columns are: {', '.join(names)}")
        return wanted
    lowered = {n.lower(): n for n in names}
    return next((lowered[d] for d in defaults if d in lowered), None)


def task_type_of(table: CachedTable, label: str) -> Literal["classification", "regression"]:
    """``regression`` for a floating-point label column, else ``classification``."""
    import pyarrow as pa

    dtype = table.table.schema.field(label).type
    return "regression" if pa.types.is_floating(dtype) or pa.types.is_decimal(dtype) else "classification"


def _kind(fmt: str, train: CachedTable, opts: FileDataOptions) -> tuple[Kind, str | None]:
    """What the data is, and its text column (language modeling) or label column (tabular)."""
    if fmt == "imagefolder":
        return "images", None
    if fmt == "text":
        return "language_modeling", "text"
    label = _pick_column(train, opts.label_column, _LABEL_NAMES, "data.label_column")
    text = _pick_column(train, opts.text_column, ("text",), "data.text_column")
    if opts.task == "language_modeling" or (text is not None and (opts.text_column is not None or label is None)):
        if text is None:
            raise DataError(
                "language modeling on a table needs a text column: set data.text_column (columns: "
                f"{', '.join(_column_names(train))})"
            )
        return "language_modeling", text
    if label is None:
        raise DataError(
            "no label column: set data.label_column (or name the column label, target or y); the columns are: "
            f"{', '.join(_column_names(train))}"
        )
    return "tabular", label


# ----------------------------------------------------------------------------- the three kinds
def _locate(meta: dict[str, Any], row: Any) -> str:
    from trainengine.data._readers import row_location

    return row_location(meta, int(row))


def _tabular(
    splits: dict[str, tuple[CachedTable, np.ndarray | None, list[Path]]],
    label: str,
    opts: FileDataOptions,
    seed: int,
    name: str,
) -> tuple[dict[str, Any], DatasetInfo, dict[str, Any]]:
    from trainengine.data._tabular import TabularDataset, fit_tabular, select_rows

    train_ct, train_rows, _ = splits["train"]
    import pyarrow as pa

    natural = task_type_of(train_ct, label)
    task_type: Literal["classification", "regression"] = natural
    label_type = train_ct.table.schema.field(label).type
    if opts.task == "regression":
        if not (pa.types.is_integer(label_type) or pa.types.is_floating(label_type)):
            raise DataError(f"data.task regression needs a numeric label column; {label!r} holds {label_type} values")
        task_type = "regression"
    elif opts.task == "classification":
        task_type = "classification"  # float labels with few distinct values (0.0 / 1.0) are classes too
    elif opts.task in ("vision", "language_modeling"):
        raise DataError(
            f"data.task {opts.task} does not fit a table with label column {label!r}: set data.task auto, "
            "classification or regression"
        )
    spec = fit_tabular(
        train_ct.table,
        train_rows,
        feature_columns=opts.feature_columns,
        label_column=label,
        categorical_columns=opts.categorical_columns,
        encoding=opts.categorical_encoding,
        max_categories=opts.max_categories,
        standardize=opts.standardize,
        missing=opts.missing_values,
        task_type=task_type,
        describe_row=functools.partial(_locate, train_ct.meta),
    )
    datasets: dict[str, Any] = {}
    reports: dict[str, Any] = {}
    caps = {"train": opts.max_train_samples, "val": opts.max_val_samples, "test": None}
    for split, (ct, rows, _files) in splits.items():
        kept, report = select_rows(ct.table, rows, spec, describe_row=functools.partial(_locate, ct.meta))
        kept = _cap(kept, caps[split])
        datasets[split] = TabularDataset(ct, kept, spec)
        reports[split] = {**report, "samples": len(kept)}
    label_spec = spec["label"]
    classes = label_spec.get("classes")
    info = DatasetInfo(
        name=name,
        task_type=task_type,
        input_dim=int(spec["output_width"]),
        num_classes=len(classes) if classes else None,
        vocab_size=None,
        seq_len=None,
        input_shape=(int(spec["output_width"]),),
        num_train=len(datasets["train"]),
        num_val=len(datasets["val"]),
        target_mean=label_spec.get("mean"),
        target_std=label_spec.get("std"),
        extra={"class_names": list(classes)} if classes else {},
    )
    return datasets, info, {"preprocessing": spec, "splits": reports}


def _language_modeling(
    splits: dict[str, tuple[CachedTable, np.ndarray | None, list[Path]]],
    text_column: str,
    opts: FileDataOptions,
    name: str,
    cache: Path,
) -> tuple[dict[str, Any], DatasetInfo, dict[str, Any]]:
    from trainengine.data._text import TokenFileDataset, tokenize_to_cache
    from trainengine.data._tokenizers import load_tokenizer

    tokenizer = load_tokenizer(opts.tokenizer)
    caps = {"train": opts.max_train_samples, "val": opts.max_val_samples, "test": None}
    datasets: dict[str, Any] = {}
    spans: dict[str, tuple[int, int]] = {}
    for split, (ct, _rows, _files) in splits.items():
        tokens = tokenize_to_cache(ct, text_column, tokenizer, cache)
        total = int(tokens.meta["tokens"])
        if split == "train" and "val" not in splits:
            # One corpus, no validation file: its last val_fraction of tokens is the validation stream
            # (contiguous, so no window straddles both; the boundary token is shared, as between windows).
            cut = int(total * (1.0 - opts.val_fraction))
            spans["train"], spans["val"] = (0, cut + 1), (cut, total)
        else:
            spans[split] = (0, total)
        for part in ("train", "val") if split == "train" and "val" not in splits else (split,):
            lo, hi = spans[part]
            datasets[part] = TokenFileDataset.from_cache(
                tokens, opts.max_length, start=lo, stop=hi, max_windows=caps[part], tokenizer=tokenizer
            )
    info = DatasetInfo(
        name=name,
        task_type="language_modeling",
        input_dim=None,
        num_classes=None,
        vocab_size=tokenizer.vocab_size,
        seq_len=opts.max_length,
        input_shape=(opts.max_length,),
        num_train=len(datasets["train"]),
        num_val=len(datasets["val"]),
        extra={"tokenizer": tokenizer.to_dict()},
    )
    record = {
        "tokenizer": tokenizer.to_dict(),
        "text_column": text_column,
        "splits": {s: {"tokens": spans[s][1] - spans[s][0], "samples": len(d)} for s, d in datasets.items()},
    }
    return datasets, info, record


def _images(
    splits: dict[str, tuple[CachedTable, np.ndarray | None, list[Path]]],
    opts: FileDataOptions,
    name: str,
) -> tuple[dict[str, Any], DatasetInfo, dict[str, Any]]:
    from trainengine.data._images import ImageFolderDataset

    train_ct, _train_rows, _ = splits["train"]
    classes = list(train_ct.meta.get("classes") or [])
    shape = tuple(int(s) for s in train_ct.meta["image_shape"])
    caps = {"train": opts.max_train_samples, "val": opts.max_val_samples, "test": None}
    datasets: dict[str, Any] = {}
    for split, (ct, rows, _files) in splits.items():
        other = tuple(int(s) for s in ct.meta["image_shape"])
        if other != shape:
            raise DataError(
                f"the {split} images are {list(other)} but the training images are {list(shape)} [C, H, W]; set "
                "data.image_size and data.image_mode so every split is resized the same way"
            )
        all_rows = np.arange(ct.table.num_rows) if rows is None else rows
        datasets[split] = ImageFolderDataset(ct, _cap(all_rows, caps[split]), classes)
    info = DatasetInfo(
        name=name,
        task_type="classification",
        input_dim=int(np.prod(shape)),
        num_classes=len(classes),
        vocab_size=None,
        seq_len=None,
        input_shape=shape,
        num_train=len(datasets["train"]),
        num_val=len(datasets["val"]),
        extra={"class_names": classes, "image": True},
    )
    return datasets, info, {"image_shape": list(shape), "class_names": classes}


# ----------------------------------------------------------------------------- the entry point
def _split_files(opts: FileDataOptions) -> dict[str, list[Path]]:
    files = {"train": resolve_files(opts.train_file, what="data.train_file")}
    for split, spec in (("val", opts.val_file), ("test", opts.test_file)):
        if spec is not None:
            files[split] = resolve_files(spec, what=f"data.{split}_file")
    return files


def _hf_dict_splits(folder: Path) -> list[str] | None:
    """The split names of a ``DatasetDict.save_to_disk`` folder, else None."""
    import json

    marker = folder / "dataset_dict.json"
    if not marker.is_file():
        return None
    try:
        return list(json.loads(marker.read_text()).get("splits") or [])
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {marker}: {exc}") from None


def load_files(data: Any, *, seed: int = 0) -> DatasetSplits:
    """Train / validation (/ test) data sets from files named by a ``data`` config section.

    Args:
        data: ``config.data`` (or a :class:`FileDataOptions`) with ``train_file`` set.
        seed: the validation hold-out seed (the run's ``training.seed``).

    Returns:
        :class:`DatasetSplits` whose ``info.extra["source"]`` is the run record of the data: the
        files and their SHA-256, rows read, bad rows and missing values per split, and the
        preprocessing / tokenizer.

    Raises:
        DataError: a missing file, an unknown format, a bad row (with file and line), a missing
            column, or options that do not fit the data (each message says what to change).

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "d.csv").write_text("x,label\\n" + "".join(f"{i},{i % 2}\\n" for i in range(10)))
        >>> splits = load_files(FileDataOptions(train_file=str(folder / "d.csv"), cache_dir=str(folder / "c")))
        >>> splits.info.task_type, splits.info.num_classes, len(splits.train) + len(splits.val)
        ('classification', 2, 10)
    """
    opts = data if isinstance(data, FileDataOptions) else FileDataOptions.from_section(data)
    files = _split_files(opts)
    cache = cache_root(opts.cache_dir)
    fmt = opts.format if opts.format != "auto" else detect_format(files["train"])
    for split in ("val", "test"):
        if split in files and opts.format == "auto" and detect_format(files[split], what=f"data.{split}_file") != fmt:
            raise DataError(f"data.{split}_file is not {fmt} like data.train_file; give every split one format")
    base = ReadOptions(
        cache_dir=cache,
        bad_rows=opts.bad_rows,
        delimiter=opts.delimiter,
        image_size=opts.image_size,
        image_mode=opts.image_mode,
    )
    tables: dict[str, CachedTable] = {}
    split_paths = dict(files)
    dict_splits = _hf_dict_splits(files["train"][0]) if fmt == "hf_disk" and len(files["train"]) == 1 else None
    if dict_splits is not None:
        # A DatasetDict folder: its train split trains; its validation / test splits fill in
        # data.val_file / data.test_file when those are not set.
        wanted = {"train": "train"}
        if "val" not in files:
            wanted["val"] = next((s for s in _VAL_SPLITS if s in dict_splits), "")
        if "test" not in files and "test" in dict_splits:
            wanted["test"] = "test"
        for split, hf_split in wanted.items():
            if hf_split:
                tables[split] = _read(files["train"], fmt, _replace(base, split=hf_split))
                split_paths[split] = files["train"]
    for split, paths in files.items():
        if split not in tables:
            tables[split] = _read(paths, fmt, base)
    kind, column = _kind(fmt, tables["train"], opts)
    name = _data_name(files["train"])

    rows: dict[str, np.ndarray | None] = dict.fromkeys(tables)
    held_out = "val" not in tables
    if held_out and kind != "language_modeling":
        n = tables["train"].table.num_rows
        labels = None
        if kind == "images":
            labels = np.asarray(tables["train"].table.column("label").to_numpy(zero_copy_only=False))
        elif column is not None and task_type_of(tables["train"], column) == "classification" and n <= 5_000_000:
            labels = _label_keys(tables["train"], column)
        rows["train"], rows["val"] = _holdout(n, opts.val_fraction, seed, labels)
        tables["val"] = tables["train"]
        split_paths["val"] = split_paths["train"]
    elif kind != "language_modeling":
        for split, ct in tables.items():
            rows[split] = np.arange(ct.table.num_rows, dtype=np.int64)
    parts = {s: (tables[s], rows[s], split_paths[s]) for s in tables}

    if kind == "tabular":
        assert column is not None
        datasets, info, record = _tabular(parts, column, opts, seed, name)
    elif kind == "language_modeling":
        assert column is not None
        datasets, info, record = _language_modeling(parts, column, opts, name, cache)
    else:
        datasets, info, record = _images(parts, opts, name)

    for split in datasets:  # a held-out validation split reads the training files
        tables.setdefault(split, tables["train"])
        split_paths.setdefault(split, split_paths["train"])
    split_records = record.pop("splits", {})
    source = {
        "format": fmt,
        "kind": kind,
        "column": column,
        "val_held_out": held_out,
        "val_fraction": opts.val_fraction if held_out else None,
        "splits": {
            s: _split_record(tables[s], split_paths[s], len(datasets[s]), split_records.get(s)) for s in datasets
        },
        **record,
    }
    datasets["train"].data_record = source  # the engine records it in run.json (data.source)
    fingerprint = hashlib.sha256(
        "|".join(getattr(datasets[s], "data_fingerprint", "") for s in ("train", "val")).encode()
    ).hexdigest()
    extra = {**info.extra, "source": source}
    info = DatasetInfo(**{**info.__dict__, "extra": extra, "fingerprint": fingerprint})
    return DatasetSplits(train=datasets["train"], val=datasets["val"], info=info, test=datasets.get("test"))


def _replace(options: ReadOptions, **changes: Any) -> ReadOptions:
    import dataclasses

    return dataclasses.replace(options, **changes)


def _label_keys(table: CachedTable, column: str) -> np.ndarray | None:
    """The label column as strings (for stratifying the hold-out); None when it has missing values."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = table.table.column(column)
    if col.null_count:
        return None
    return np.asarray(pc.cast(col, pa.string()).to_numpy(zero_copy_only=False))
