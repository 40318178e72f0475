"""The data a scikit-learn run takes, in every form, as ``(X, y)`` with a record of where it came from.

Forms (for training, validation and test data alike):

* a pandas DataFrame with the target among its columns (``target=`` or the config's
  ``data.label_column``, else a column named ``label``, ``labels``, ``target``, ``y`` or ``class``,
  the same defaults as file data);
* ``(X, y)``: a DataFrame / array of features and the targets;
* a scikit-learn ``Bunch`` (``load_breast_cancer(as_frame=True)``): its ``data`` and ``target``;
* files: a path, a glob or a list (CSV, JSONL, Parquet, ``save_to_disk`` folders), read by the
  same readers and Arrow cache as ``data.train_file`` (``trainengine.data``), with the config's
  ``data.format``, ``data.delimiter``, ``data.bad_rows`` and ``data.cache_dir``; with no data at
  all, the config's ``data.train_file`` / ``val_file`` / ``test_file``.

The column mapping is the config's: ``data.feature_columns`` picks and orders the feature columns
(default: every column but the target), ``data.label_column`` names the target. Rows without a
target are dropped and counted. The pipeline does its own preprocessing, so the file-data
preprocessing options (``data.standardize``, ``data.categorical_*``, ``data.missing_values``) do
not apply: missing feature values reach the pipeline as NaN / None, for its imputers.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from trainengine.errors import DataError

__all__ = ["TabularData", "resolve_data"]

SplitName = Literal["train", "val", "test"]
_TABLE_FORMATS = ("csv", "jsonl", "parquet", "hf_disk")


@dataclass
class TabularData:
    """Features and targets of one split, and the facts run.json records about them.

    Attributes:
        X: a pandas DataFrame (column names kept: a ``ColumnTransformer`` selects by name) or a
            2-D numpy array.
        y: the targets, ``(n,)``.
        name: what the data is (``houses.csv``, ``DataFrame``, ``ndarray``).
        target: the target column's name, when the data had one.
        record: ``rows``, ``columns``, ``dropped_rows``, ``fingerprint`` and, for files, the files
            with their SHA-256.
    """

    X: Any
    y: np.ndarray
    name: str
    target: str | None = None
    record: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def is_frame(self) -> bool:
        return hasattr(self.X, "iloc")

    @property
    def columns(self) -> list[str] | None:
        return [str(c) for c in self.X.columns] if self.is_frame else None

    @property
    def fingerprint(self) -> str:
        return str(self.record["fingerprint"])

    def take(self, index: np.ndarray) -> tuple[Any, np.ndarray]:
        """``(X, y)`` of the rows at ``index`` (a fold)."""
        return (self.X.iloc[index] if self.is_frame else self.X[index]), self.y[index]

    def input_schema(self) -> dict[str, Any]:
        """What a served model must be given: the columns (name, dtype) or the number of features."""
        if self.is_frame:
            cols = [{"name": str(c), "dtype": _kind_of(self.X[c])} for c in self.X.columns]
            return {"kind": "dataframe", "columns": cols, "num_features": len(cols)}
        return {"kind": "array", "num_features": int(self.X.shape[1]), "dtype": str(self.X.dtype)}


def _kind_of(column: Any) -> str:
    """``number``, ``bool``, ``datetime`` or ``string`` (text and categories)."""
    kind = getattr(column.dtype, "kind", "O")
    if kind == "b":
        return "bool"
    if kind in "iuf":
        return "number"
    if kind == "M":
        return "datetime"
    return "string"


def fingerprint_of(X: Any, y: np.ndarray) -> str:
    """SHA-256 over the rows' content (pandas' row hashes for a DataFrame, the bytes of an array) and the targets."""
    h = hashlib.sha256()
    if hasattr(X, "iloc"):
        import pandas as pd

        h.update("\t".join(map(str, X.columns)).encode())
        h.update(pd.util.hash_pandas_object(X, index=False).to_numpy().tobytes())
    else:
        arr = np.ascontiguousarray(X)
        h.update(f"{arr.dtype}{arr.shape}".encode())
        h.update(arr.tobytes() if arr.dtype != object else repr(arr.tolist()).encode())
    target = np.asarray(y)
    h.update(target.astype(str).tobytes() if target.dtype == object else np.ascontiguousarray(target).tobytes())
    return h.hexdigest()


def _is_files(data: Any) -> bool:
    if isinstance(data, (str, os.PathLike)):
        return True
    return isinstance(data, (list, tuple)) and bool(data) and all(isinstance(d, (str, os.PathLike)) for d in data)


def _read_files(spec: Any, split: SplitName, data_section: Any) -> tuple[Any, dict[str, Any]]:
    """A DataFrame of the files (through ``trainengine.data``'s readers and cache) and their record."""
    from trainengine.data import ReadOptions, detect_format, resolve_files
    from trainengine.data._cache import cache_root
    from trainengine.registries import DATA_FORMATS

    what = f"data.{split}_file"
    files = resolve_files(spec, what=what)
    fmt = data_section.format if data_section.format != "auto" else detect_format(files, what=what)
    if fmt not in _TABLE_FORMATS:
        raise DataError(
            f"{what}: a scikit-learn run reads tables ({', '.join(_TABLE_FORMATS)}), not {fmt}; give a CSV, JSONL "
            "or Parquet file"
        )
    options = ReadOptions(
        cache_dir=cache_root(data_section.cache_dir), bad_rows=data_section.bad_rows, delimiter=data_section.delimiter
    )
    try:
        import pandas  # noqa: F401 - pyarrow's to_pandas needs it; say so before reading
    except ImportError:
        from trainengine.errors import MissingExtraError

        raise MissingExtraError("pandas", "sklearn", "reading files for a scikit-learn run") from None
    table = DATA_FORMATS.get(fmt)(files, options)
    frame = table.table.to_pandas()
    record = {
        "format": fmt,
        "files": [str(f.resolve()) for f in files],
        "sources": [{k: s.get(k) for k in ("path", "size", "sha256", "rows")} for s in table.meta.get("sources", [])],
        "rows_read": int(table.table.num_rows),
        "bad_rows": int(table.meta.get("bad_rows", 0)),
    }
    return frame, record


def _pick_target(frame: Any, target: str | None, data_section: Any, split: SplitName) -> str:
    from trainengine.data._files import _LABEL_NAMES

    names = [str(c) for c in frame.columns]
    wanted = target or (data_section.label_column if data_section is not None else None)
    if wanted is not None:
        if wanted not in names:
            raise DataError(
                f"{split} data: target column {wanted!r} is not a column of the data; the columns are: "
                f"{', '.join(names)}"
            )
        return wanted
    lowered = {n.lower(): n for n in names}
    found = next((lowered[d] for d in _LABEL_NAMES if d in lowered), None)
    if found is None:
        raise DataError(
            f"{split} data: no target column — pass target='column' (or set data.label_column, or name the column "
            f"label, target or y); the columns are: {', '.join(names)}"
        )
    return found


def _features(frame: Any, target: str | None, wanted: Sequence[str] | None, split: SplitName) -> Any:
    names = [str(c) for c in frame.columns]
    if wanted is None:
        return frame[[c for c in frame.columns if str(c) != target]]
    missing = [c for c in wanted if c not in names]
    if missing:
        raise DataError(
            f"{split} data: feature column(s) {', '.join(map(repr, missing))} (data.feature_columns) are not in the "
            f"data; the columns are: {', '.join(names)}"
        )
    if target is not None and target in wanted:
        raise DataError(f"{split} data: the target column {target!r} is also listed in data.feature_columns")
    return frame[list(wanted)]


def _as_targets(y: Any, split: SplitName) -> np.ndarray:
    arr = np.asarray(y.to_numpy() if hasattr(y, "to_numpy") else y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DataError(f"{split} data: the targets must be one value per row, got an array of shape {arr.shape}")
    return arr


def _missing(y: np.ndarray) -> np.ndarray:
    if y.dtype.kind == "f":
        return np.isnan(y)
    if y.dtype == object:
        return np.asarray([v is None or (isinstance(v, float) and v != v) for v in y], dtype=bool)
    return np.zeros(len(y), dtype=bool)


def resolve_data(
    data: Any,
    y: Any = None,
    *,
    split: SplitName,
    target: str | None = None,
    data_section: Any = None,
    feature_columns: Sequence[str] | None = None,
    max_rows: int | None = None,
) -> TabularData | None:
    """Turn any accepted form of data into :class:`TabularData` (None when there is none).

    Args:
        data: a DataFrame, ``(X, y)``, a ``Bunch``, features with ``y``, files, or None (the
            config's ``data.<split>_file``).
        y: the targets when ``data`` holds features only.
        split: ``train``, ``val`` or ``test`` (file keys and messages).
        target: the target column of a table; default ``data.label_column``, else the usual names.
        data_section: the config's ``data`` section (column mapping, files, reader options).
        feature_columns: the feature columns (default ``data.feature_columns``; validation and
            test data get the training data's).
        max_rows: keep the first N rows.

    Raises:
        DataError: a missing file or column, no target, mismatched lengths, no rows left.

    Example:
        >>> import numpy as np
        >>> d = resolve_data(np.zeros((4, 2)), [0, 1, 0, 1], split="train")
        >>> len(d), d.name, d.record["num_features"]
        (4, 'ndarray', 2)
    """
    file_record: dict[str, Any] = {}
    if data is None and y is None:
        spec = getattr(data_section, f"{split}_file", None) if data_section is not None else None
        if spec is None:
            return None
        data = spec
    if isinstance(data, tuple) and len(data) == 2 and y is None:
        data, y = data
    if y is None and hasattr(data, "data") and hasattr(data, "target") and not hasattr(data, "iloc"):
        data, y = data.data, data.target  # a scikit-learn Bunch
    name = type(data).__name__
    if _is_files(data):
        data, file_record = _read_files(data, split, data_section)
        name = os.path.basename(str(file_record["files"][0])) + (
            f"+{len(file_record['files']) - 1}" if len(file_record["files"]) > 1 else ""
        )
    wanted = feature_columns if feature_columns is not None else getattr(data_section, "feature_columns", None)
    target_name: str | None = None
    if hasattr(data, "iloc"):  # a DataFrame
        if y is None:
            target_name = _pick_target(data, target, data_section, split)
            y = data[target_name]
        X = _features(data, target_name, wanted, split)
    else:
        if y is None:
            raise DataError(
                f"{split} data: {name} holds no target; pass (X, y), features and y=, or a DataFrame with the target "
                "column"
            )
        X = np.asarray(data)
        if X.ndim == 1:
            X = X.reshape(-1, 1)
        if X.ndim != 2:
            raise DataError(f"{split} data: features must be a 2-D table (rows, features), got shape {X.shape}")
    targets = _as_targets(y, split)
    if len(targets) != len(X):
        raise DataError(f"{split} data: {len(X)} rows of features but {len(targets)} targets; give one target per row")
    dropped = _missing(targets)
    if dropped.any():
        keep = np.flatnonzero(~dropped)
        X = X.iloc[keep] if hasattr(X, "iloc") else X[keep]
        targets = targets[keep]
    if max_rows is not None:
        X, targets = (X.iloc[:max_rows] if hasattr(X, "iloc") else X[:max_rows]), targets[:max_rows]
    if len(targets) == 0:
        raise DataError(f"{split} data has no rows with a target")
    if hasattr(X, "reset_index"):
        X = X.reset_index(drop=True)  # positions and labels agree: folds index with iloc
    record = {
        "name": name,
        "rows": len(targets),
        "num_features": int(X.shape[1]),
        "columns": [str(c) for c in X.columns] if hasattr(X, "columns") else None,
        "target": target_name,
        "dropped_rows_without_target": int(dropped.sum()),
        "fingerprint": fingerprint_of(X, targets),
        **({"source": file_record} if file_record else {}),
    }
    return TabularData(X=X, y=targets, name=name, target=target_name, record=record)
