"""Tabular preprocessing fitted on the training rows of a cached Arrow table, and the dataset that
serves encoded rows from it.

:func:`fit_tabular` streams over the training rows in chunks of :data:`_CHUNK` (so a table bigger
than memory is never materialised) and returns the preprocessing spec of
``trainengine._preprocess`` (the one format training and serving share). :func:`select_rows`
applies the missing-value policy to a split. :class:`TabularDataset` gathers a batch with one
Arrow ``take`` per cached record batch it touches and encodes it with
``trainengine._preprocess.encode_columns``, the function the serving runtime ends in too.

Why not ``table.take(indices)``: Arrow's take on a *chunked* column concatenates the whole column
first (a copy of the memory-mapped column per batch: ~10 ms for 5M rows); grouping the indices by
record batch and taking from each costs ~0.2 ms for a batch of 256.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from trainengine._preprocess import encode_columns, normalize_category
from trainengine.data._cache import CachedTable
from trainengine.data._datasets import PreCollatedBatch
from trainengine.data._readers import row_location
from trainengine.errors import DataError

__all__ = ["fit_tabular", "select_rows", "TabularDataset", "category_strings"]

_CHUNK = 64 * 1024  # rows gathered per step while fitting / selecting
_MAX_DISTINCT = 1_000_000  # distinct values a categorical counter keeps while fitting (then pruned to the top half)


def _unpack(table: Any) -> tuple[Any, str, dict[str, Any], Path | None]:
    """(pyarrow table, cache key, meta, path) of a :class:`CachedTable` or a bare ``pyarrow.Table``."""
    if isinstance(table, CachedTable):
        return table.table, str(table.meta.get("key", "")), table.meta, table.path
    return table, "", {}, None


class _Gather:
    """Rows of a table by index: one ``take`` per record batch touched, results in the asked order."""

    def __init__(self, table: Any) -> None:
        self.batches = table.to_batches()  # zero-copy views of the memory-mapped record batches
        self.offsets = np.cumsum([0] + [b.num_rows for b in self.batches])  # (n_batches + 1,)

    def take(self, indices: np.ndarray, columns: Sequence[str]) -> Any:
        import pyarrow as pa

        idx = np.asarray(indices, dtype=np.int64)
        order = np.argsort(idx, kind="stable")
        s = idx[order]
        which = np.searchsorted(self.offsets, s, side="right") - 1  # record batch of each index
        cuts = np.flatnonzero(np.diff(which)) + 1
        parts = []
        for group in np.split(np.arange(len(s)), cuts):
            if len(group):
                b = int(which[group[0]])
                parts.append(self.batches[b].select(list(columns)).take(pa.array(s[group] - self.offsets[b])))
        if not parts:
            return self.batches[0].select(list(columns)).slice(0, 0) if self.batches else None
        got = pa.Table.from_batches(parts).combine_chunks()  # (B rows), in sorted order
        if np.all(order[:-1] < order[1:]):
            return got
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        return got.take(pa.array(inverse))


def _array(column: Any) -> Any:
    """A (small) ChunkedArray as one Array."""
    import pyarrow as pa

    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def category_strings(column: Any) -> Any:
    """An Arrow column as category strings by ``normalize_category``'s rule (null = missing).

    Strings pass as they are; other types map each *distinct* value through
    :func:`trainengine._preprocess.normalize_category` (so ``3.0`` -> ``"3"``, ``True`` -> ``"true"``).

    Example:
        >>> import pyarrow as pa
        >>> category_strings(pa.array([1.0, 2.5, None, float("nan")])).to_pylist()
        ['1', '2.5', None, None]
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = _array(column)
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        return arr.cast(pa.string())
    encoded = pc.dictionary_encode(arr)
    values = [normalize_category(v) for v in encoded.dictionary.to_pylist()]
    return pc.take(pa.array(values, pa.string()), encoded.indices)


def _numbers(column: Any) -> np.ndarray:
    """An Arrow numeric (or bool) column as float64 with NaN for missing."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return np.asarray(pc.cast(_array(column), pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def _is_categorical_type(t: Any) -> bool:
    import pyarrow as pa

    return bool(
        pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_boolean(t) or pa.types.is_dictionary(t)
    )


def _is_numeric_type(t: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_boolean(t))


class _Moments:
    """Streaming mean / variance (Chan et al.'s pairwise merge of chunk moments: stable for big tables)."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, x: np.ndarray) -> None:
        if x.size == 0:
            return
        n_b, mean_b = int(x.size), float(x.mean())
        m2_b = float(((x - mean_b) ** 2).sum())
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * self.n * n_b / n
        self.n = n

    @property
    def std(self) -> float:
        std = math.sqrt(self.m2 / self.n) if self.n else 1.0  # population std, like the built-in diabetes
        return std if std > 1e-12 else 1.0


def _class_order(classes: list[str]) -> list[str]:
    """Classes sorted numerically when every one is a number ("2" before "10"), else as strings."""
    try:
        return sorted(classes, key=lambda c: (float(c), c))
    except ValueError:
        return sorted(classes)


def fit_tabular(
    table: CachedTable | Any,
    rows: np.ndarray | None,
    *,
    feature_columns: list[str] | None,
    label_column: str | None,
    categorical_columns: list[str] | None = None,
    encoding: Literal["onehot", "embedding"] = "onehot",
    max_categories: int = 50,
    standardize: bool = True,
    missing: Literal["fill", "drop", "error"] = "fill",
    task_type: Literal["classification", "regression"] = "classification",
    describe_row: Callable[[int], str] | None = None,
) -> dict[str, Any]:
    """Fit the preprocessing spec (``trainengine._preprocess``'s format) on the TRAIN rows only.

    Streams over ``rows`` in chunks: numeric columns get a mean and (population) std, the fill
    value (the mean), categorical columns their ``max_categories`` most frequent values, the
    label its classes (classification, sorted) or mean/std (regression). Missing values are
    counted per column (``missing_counts``); a missing label is never filled (those rows are
    left out of the statistics and dropped by :func:`select_rows`). Under ``missing="drop"`` the
    statistics come from the complete rows only.

    Args:
        table: the cached table (a :class:`CachedTable`, or a ``pyarrow.Table``).
        rows: the training row indices (None = every row).
        feature_columns: input columns in order; None = every column but the label.
        label_column: the target column; None = the column named ``label``.
        categorical_columns: None = the string, bool and dictionary columns among the features.
        encoding: ``onehot`` (one-hot blocks in the input) or ``embedding`` (codes for
            :class:`~trainengine.models.TabularMLP`'s embeddings).
        max_categories: categories kept per column (the rest map to "other").
        standardize: scale numeric columns to mean 0, std 1 (statistics of the train rows).
        missing: ``fill`` (mean / a "missing" category), ``drop`` (rows with a missing value),
            ``error`` (raise naming the column, its count and the first row).
        task_type: ``classification`` or ``regression``.
        describe_row: ``i -> "train.csv row 12"`` for messages; default: the reader's row_location.

    Returns:
        The spec dict (JSON-serialisable).

    Raises:
        DataError: unknown columns, a non-numeric column not declared categorical, no usable
            training rows, missing values under ``missing="error"``.

    Example:
        >>> import pyarrow as pa
        >>> t = pa.table({"age": [20.0, 40.0, None], "city": ["NYC", "SF", "NYC"], "y": ["a", "b", "a"]})
        >>> spec = fit_tabular(t, None, feature_columns=None, label_column="y")
        >>> spec["columns"][0]["mean"], spec["columns"][1]["categories"], spec["output_width"]
        (30.0, ['NYC', 'SF'], 5)
    """
    t, _, meta, _ = _unpack(table)
    describe = describe_row or (lambda i: row_location(meta, i) if meta.get("sources") else f"row {i + 1}")
    names = list(t.schema.names)
    label = label_column if label_column is not None else "label"
    problems = []
    if label not in names:
        problems.append(f"label column {label!r} is not in the data (columns: {names}); set data.label_column")
    features = list(feature_columns) if feature_columns is not None else [n for n in names if n != label]
    unknown = [c for c in features if c not in names]
    if unknown:
        problems.append(f"feature columns {unknown} are not in the data (columns: {names}); fix data.feature_columns")
    if label in features:
        problems.append(f"the label column {label!r} cannot also be a feature column; remove it from feature_columns")
    if not features:
        problems.append("no feature columns: the data has only the label column")
    if categorical_columns is None:
        categorical = [c for c in features if c in names and _is_categorical_type(t.schema.field(c).type)]
    else:
        categorical = list(categorical_columns)
        stray = [c for c in categorical if c not in features]
        if stray:
            problems.append(f"categorical columns {stray} are not feature columns ({features})")
    for c in features:
        if c in names and c not in categorical and not _is_numeric_type(t.schema.field(c).type):
            problems.append(
                f"feature column {c!r} has type {t.schema.field(c).type}, which is not numeric; list it in "
                "data.categorical_columns, or leave it out of data.feature_columns"
            )
    if task_type == "regression" and label in names and not _is_numeric_type(t.schema.field(label).type):
        problems.append(
            f"regression needs a numeric label; column {label!r} has type {t.schema.field(label).type} (use "
            "classification for named classes)"
        )
    if max_categories < 1:
        problems.append(f"max_categories must be >= 1; got {max_categories}")
    if problems:
        raise DataError("cannot fit tabular preprocessing: " + "; ".join(problems))

    numeric = [c for c in features if c not in categorical]
    rows_ = np.arange(t.num_rows, dtype=np.int64) if rows is None else np.sort(np.asarray(rows, dtype=np.int64))
    gather = _Gather(t)
    moments = {c: _Moments() for c in numeric}
    counters: dict[str, Counter[str]] = {c: Counter() for c in categorical}
    label_counts: Counter[str] = Counter()
    label_moments = _Moments()
    missing_counts: Counter[str] = Counter()
    first_missing: dict[str, int] = {}
    used = 0
    for start in range(0, len(rows_), _CHUNK):
        chunk = rows_[start : start + _CHUNK]
        sub = gather.take(chunk, [*features, label])
        values: dict[str, Any] = {}
        absent: dict[str, np.ndarray] = {}
        for c in numeric:
            values[c] = _numbers(sub.column(c))
            absent[c] = np.isnan(values[c])
        for c in categorical:
            values[c] = category_strings(sub.column(c))
            absent[c] = values[c].is_null().to_numpy(zero_copy_only=False)
        if task_type == "classification":
            y = category_strings(sub.column(label))
            y_absent = y.is_null().to_numpy(zero_copy_only=False)
        else:
            y = _numbers(sub.column(label))
            y_absent = np.isnan(y)
        for c, mask in [*absent.items(), (label, y_absent)]:
            k = int(mask.sum())
            if k:
                missing_counts[c] += k
                first_missing.setdefault(c, int(chunk[int(np.argmax(mask))]))
        keep = ~y_absent
        if missing == "drop":
            for mask in absent.values():
                keep &= ~mask
        used += int(keep.sum())
        for c in numeric:
            moments[c].add(values[c][keep & ~absent[c]])
        for c in categorical:
            _count(counters[c], values[c], keep & ~absent[c])
        if task_type == "classification":
            _count(label_counts, y, keep)
        else:
            label_moments.add(y[keep])

    if missing == "error" and missing_counts:
        c = next(iter(missing_counts))
        raise DataError(
            f"column {c!r} has {missing_counts[c]} missing value(s) in the training rows (first at "
            f"{describe(first_missing[c])}) and data.missing_values is 'error'; fill them in the data, or set "
            "data.missing_values: fill (numeric: the train mean; categorical: a 'missing' category) or drop"
        )
    if used == 0:
        raise DataError(
            f"no training rows left to fit the preprocessing on ({len(rows_)} rows, all with a missing label"
            f"{' or feature' if missing == 'drop' else ''}); check data.label_column / data.missing_values"
        )

    columns: list[dict[str, Any]] = []
    for c in features:
        if c in numeric:
            m = moments[c]
            mean = m.mean if m.n else 0.0
            columns.append({"name": c, "type": "numeric", "mean": mean, "std": m.std, "fill": mean})
        else:
            top = sorted(counters[c].items(), key=lambda kv: (-kv[1], kv[0]))[:max_categories]
            columns.append({"name": c, "type": "categorical", "categories": [k for k, _ in top]})
    if task_type == "classification":
        label_spec: dict[str, Any] = {"column": label, "type": "class", "classes": _class_order(list(label_counts))}
    else:
        label_spec = {"column": label, "type": "numeric", "mean": label_moments.mean, "std": label_moments.std}
    width_cat = [len(col["categories"]) + 2 for col in columns if col["type"] == "categorical"]
    if encoding == "embedding":
        dense = len(numeric)
        codes = [
            {"name": c, "cardinality": w}
            for c, w in zip(_categorical_in(features, categorical), width_cat, strict=True)
        ]
    else:
        dense = len(numeric) + sum(width_cat)
        codes = []
    return {
        "kind": "tabular",
        "version": 1,
        "feature_columns": features,
        "standardize": bool(standardize),
        "missing_values": missing,
        "encoding": encoding,
        "columns": columns,
        "dense_width": dense,
        "codes": codes,
        "output_width": dense + len(codes),
        "label": label_spec,
        "missing_counts": {c: int(missing_counts[c]) for c in [*features, label] if missing_counts[c]},
    }


def _categorical_in(features: list[str], categorical: list[str]) -> list[str]:
    """The categorical columns in feature order (the order of their codes / one-hot blocks)."""
    return [c for c in features if c in categorical]


def _count(counter: Counter[str], values: Any, keep: np.ndarray) -> None:
    """Add the value counts of ``values[keep]`` (Arrow strings) to ``counter``, pruning huge counters."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not keep.any():
        return
    counts = pc.value_counts(values.filter(pa.array(keep)))
    for v, n in zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True):
        counter[v] += n
    if len(counter) > _MAX_DISTINCT:  # an ID-like column: keep the frequent half (approximate counts beyond)
        for k, _ in counter.most_common()[_MAX_DISTINCT // 2 :]:
            del counter[k]


def _missing_masks(sub: Any, spec: dict[str, Any]) -> tuple[dict[str, np.ndarray], np.ndarray, Any]:
    """Per feature column: missing mask; the label's missing mask; the label values (strings or floats)."""
    masks = {}
    for col in spec["columns"]:
        if col["type"] == "numeric":
            masks[col["name"]] = np.isnan(_numbers(sub.column(col["name"])))
        else:
            masks[col["name"]] = category_strings(sub.column(col["name"])).is_null().to_numpy(zero_copy_only=False)
    lab = spec["label"]
    if lab["type"] == "class":
        y = category_strings(sub.column(lab["column"]))
        return masks, y.is_null().to_numpy(zero_copy_only=False), y
    y = _numbers(sub.column(lab["column"]))
    return masks, np.isnan(y), y


def select_rows(
    table: CachedTable | Any,
    rows: np.ndarray | None,
    spec: dict[str, Any],
    *,
    describe_row: Callable[[int], str] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Apply the spec's missing-value policy to a split's rows.

    ``drop`` removes rows with a missing feature or label; ``fill`` removes only rows with a
    missing label (features are filled when encoded); ``error`` raises on any missing value.
    Classification labels not among the training classes raise.

    Args:
        table: the cached table.
        rows: the split's row indices (None = every row).
        spec: from :func:`fit_tabular`.
        describe_row: ``i -> "val.csv row 3"`` for messages; default: the reader's row_location.

    Returns:
        ``(kept_rows, report)``: kept indices in the given order, and
        ``{"rows", "kept", "dropped_missing", "missing_counts": {column: n}}``.

    Raises:
        DataError: a label value unseen in training, or a missing value under ``error``.

    Example:
        >>> import pyarrow as pa
        >>> t = pa.table({"x": [1.0, None, 3.0], "y": ["a", "b", None]})
        >>> spec = fit_tabular(t, None, feature_columns=["x"], label_column="y")
        >>> kept, report = select_rows(t, None, spec)
        >>> kept.tolist(), report["dropped_missing"]
        ([0, 1], 1)
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    t, _, meta, _ = _unpack(table)
    describe = describe_row or (lambda i: row_location(meta, i) if meta.get("sources") else f"row {i + 1}")
    rows_ = np.arange(t.num_rows, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    gather = _Gather(t)
    policy = spec["missing_values"]
    lab = spec["label"]
    classes = pa.array(lab.get("classes", []), pa.string())
    needed = [*spec["feature_columns"], lab["column"]]
    keep_all = np.ones(len(rows_), dtype=bool)
    missing_counts: Counter[str] = Counter()
    for start in range(0, len(rows_), _CHUNK):
        chunk = rows_[start : start + _CHUNK]
        masks, y_absent, y = _missing_masks(gather.take(chunk, needed), spec)
        keep = ~y_absent
        for c, mask in [*masks.items(), (lab["column"], y_absent)]:
            k = int(mask.sum())
            if k:
                missing_counts[c] += k
                if policy == "error":
                    raise DataError(
                        f"column {c!r} has a missing value at {describe(int(chunk[int(np.argmax(mask))]))} and "
                        "data.missing_values is 'error'; fill it in the data, or set data.missing_values: fill or drop"
                    )
        if policy == "drop":
            for mask in masks.values():
                keep &= ~mask
        if lab["type"] == "class":
            unseen = pc.and_(pc.invert(pc.is_in(y, value_set=classes)), pc.is_valid(y))
            bad = np.flatnonzero(unseen.to_numpy(zero_copy_only=False) & keep)
            if len(bad):
                j = int(bad[0])
                raise DataError(
                    f"label {y[j].as_py()!r} at {describe(int(chunk[j]))} is not among the classes of the training "
                    f"rows ({lab['classes'][:20]}); a model cannot learn a class it never saw — add such rows to the "
                    "training data, or remove them from this split"
                )
        keep_all[start : start + len(chunk)] = keep
    kept = rows_[keep_all]
    report = {
        "rows": len(rows_),
        "kept": len(kept),
        "dropped_missing": len(rows_) - len(kept),
        "missing_counts": dict(missing_counts),
    }
    return kept, report


class TabularDataset(Dataset):
    """Encoded rows of a cached table: ``(x float32 (width,), y)`` per sample.

    ``y`` is the class index (int64) for classification, the standardised target
    ``(y - mean) / std`` (float32, 0-dim) for regression. ``__getitems__`` gathers a whole batch
    with one Arrow take per record batch touched and encodes it with
    ``trainengine._preprocess.encode_columns`` (what serving runs too) into a
    :class:`PreCollatedBatch` ``[x (B, width), y (B,)]``. Pickles by its file path (DataLoader
    workers re-open the memory map instead of copying the table).

    Args:
        table: the cached table (rows = its row indices).
        rows: the split's row indices (after :func:`select_rows`).
        spec: from :func:`fit_tabular`.

    Example:
        >>> import pyarrow as pa
        >>> t = pa.table({"x": [1.0, 3.0], "c": ["u", "v"], "y": ["a", "b"]})
        >>> spec = fit_tabular(t, None, feature_columns=None, label_column="y")
        >>> x, y = TabularDataset(t, np.arange(2), spec)[1]
        >>> x.tolist(), int(y)
        ([1.0, 0.0, 0.0, 0.0, 1.0], 1)
    """

    def __init__(self, table: CachedTable | Any, rows: np.ndarray, spec: dict[str, Any]) -> None:
        t, key, _, path = _unpack(table)
        self.table = t
        self.table_key = key
        self.table_path = path
        self.rows = np.asarray(rows, dtype=np.int64)
        self.preprocessing = spec
        self._columns = [*spec["feature_columns"], spec["label"]["column"]]
        self._gather = _Gather(t)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.__getitems__([index]).collated  # a list [x (1, width), y (1,)]
        return x[0], y[0]  # type: ignore[return-value]  # collated is a list of tensors here, not a dict

    def __getitems__(self, indices: Sequence[int]) -> PreCollatedBatch:
        sub = self._gather.take(self.rows[np.asarray(indices, dtype=np.int64)], self._columns)
        raw: dict[str, Any] = {}
        for col in self.preprocessing["columns"]:
            if col["type"] == "numeric":
                raw[col["name"]] = _numbers(sub.column(col["name"]))  # (B,) float64, NaN = missing
            else:
                raw[col["name"]] = category_strings(sub.column(col["name"])).to_numpy(zero_copy_only=False)  # object
        x = torch.from_numpy(np.ascontiguousarray(encode_columns(self.preprocessing, raw), dtype=np.float32))
        return PreCollatedBatch([x, self._labels(sub)])  # x (B, width), y (B,)

    def _labels(self, sub: Any) -> torch.Tensor:
        import pyarrow as pa
        import pyarrow.compute as pc

        lab = self.preprocessing["label"]
        if lab["type"] == "class":
            idx = pc.index_in(
                category_strings(sub.column(lab["column"])), value_set=pa.array(lab["classes"], pa.string())
            )
            if idx.null_count:
                raise DataError(
                    f"a row of this split has a missing or unseen label in column {lab['column']!r}; build the split "
                    "with select_rows so such rows are dropped or reported"
                )
            return torch.from_numpy(idx.to_numpy(zero_copy_only=False).astype(np.int64))  # (B,)
        y = (_numbers(sub.column(lab["column"])) - lab["mean"]) / lab["std"]
        return torch.from_numpy(y.astype(np.float32))  # (B,)

    @property
    def data_fingerprint(self) -> str:
        """sha256 hex over the cache key (the files' content and read options), the rows and the spec."""
        h = hashlib.sha256(b"trainengine.tabular.v1|")
        h.update(self.table_key.encode() + b"|")
        h.update(self.rows.astype("<i8").tobytes())
        h.update(json.dumps(self.preprocessing, sort_keys=True).encode())
        return h.hexdigest()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.table_path is not None:  # re-open the memory map in the worker: no copy of the table
            state["table"] = None
            state["_gather"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.table is None:
            import pyarrow as pa

            self.table = pa.ipc.open_file(pa.memory_map(str(self.table_path), "r")).read_all()
            self._gather = _Gather(self.table)

    def __repr__(self) -> str:
        return f"TabularDataset(n={len(self)}, width={self.preprocessing['output_width']}, key={self.table_key!r})"
