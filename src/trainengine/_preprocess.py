"""Tabular preprocessing shared by training and serving (numpy + stdlib only).

One home for the transform from raw column values to the model's float input, so a model serves
exactly what it was trained on: ``trainengine.data`` encodes training rows with
:func:`encode_columns`, and the standalone serving runtime (a bundle's ``inference.py``) encodes
JSON records with :func:`encode_records`, which ends in the same :func:`encode_columns`. This
module imports nothing from trainengine because export copies it verbatim into every bundle
with preprocessing, beside ``inference.py``.

The spec (``preprocessing.json``, written by ``trainengine.data``'s ``fit_tabular`` from the
training rows only)::

    {
        "kind": "tabular",
        "version": 1,
        "feature_columns": ["age", "city"],  # raw input columns, in order
        "standardize": true,
        "missing_values": "fill",  # "fill" | "drop" | "error"
        "encoding": "onehot",  # "onehot" | "embedding"
        "columns": [
            {"name": "age", "type": "numeric", "mean": 41.2, "std": 12.1, "fill": 41.2},
            {"name": "city", "type": "categorical", "categories": ["NYC", "SF"]},
        ],
        "dense_width": 5,
        "codes": [],
        "output_width": 5,
        "label": {"column": "y", "type": "class", "classes": ["cat", "dog"]},
        "missing_counts": {"age": 3},
    }

Layout of an encoded row, feature columns in order:

* numeric: one value, ``(v - mean) / std`` with ``standardize`` (a ``std`` of 0 counts as 1),
  else ``v``; a missing value is replaced by ``fill`` first.
* categorical, ``encoding="onehot"``: ``len(categories) + 2`` values, one-hot over
  ``[missing, other, *categories]``; ``other`` is a value not among the categories (unseen in
  training, or beyond ``max_categories``).
* ``encoding="embedding"``: the numeric columns (``dense_width`` values) come first, then one
  code per categorical column: ``0`` missing, ``1`` other, ``2 + k`` ``categories[k]``, as a
  float (the model casts it to an index).

Category values are compared as strings, by one rule on both sides (:func:`normalize_category`):
a string is itself (``""`` included); ``True``/``False`` are ``"true"``/``"false"``; an integer
is its decimal digits; a float with an integral value is the integer's digits (``3.0`` ->
``"3"``, so an int column read as float still matches); another float is ``repr(v)``
(``"2.5"``); ``None`` and NaN are missing. Training casts its Arrow columns with the same rule.

Example:
    >>> spec = {
    ...     "kind": "tabular",
    ...     "version": 1,
    ...     "feature_columns": ["age", "city"],
    ...     "standardize": True,
    ...     "missing_values": "fill",
    ...     "encoding": "onehot",
    ...     "columns": [
    ...         {"name": "age", "type": "numeric", "mean": 40.0, "std": 10.0, "fill": 40.0},
    ...         {"name": "city", "type": "categorical", "categories": ["NYC", "SF"]},
    ...     ],
    ... }
    >>> encode_records(spec, [{"age": 50, "city": "SF"}, {"city": "Rome"}]).tolist()
    [[1.0, 0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0, 0.0]]
    >>> encode_records(spec, [{"age": "old"}])
    Traceback (most recent call last):
    ...
    trainengine._preprocess.PreprocessError: inputs[0].age: not a number, got str 'old'; send a number (or null ...
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "SPEC_KIND",
    "SPEC_VERSION",
    "PreprocessError",
    "normalize_category",
    "check_spec",
    "output_width",
    "encode_columns",
    "encode_records",
    "decode_rows",
]

SPEC_KIND = "tabular"
SPEC_VERSION = 1  # newest spec version this module reads
MISSING_CODE = 0  # category code of a missing value
OTHER_CODE = 1  # category code of a value not among the categories
OTHER_VALUE = "<other>"  # what decode_rows writes for the "other" slot (any unseen value encodes back to it)
_NUMBER_TYPES = (int, float)


class PreprocessError(ValueError):
    """A raw record does not fit the preprocessing spec; the message starts with the field path.

    Attributes:
        path: The offending field, e.g. ``"inputs[3].age"`` or ``"inputs[0][2]"``.
        problem: What is wrong and what to send instead.

    Example:
        >>> str(PreprocessError("inputs[3].age", "not a number, got str 'x'"))
        "inputs[3].age: not a number, got str 'x'"
    """

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def normalize_category(value: Any) -> str | None:
    """The string a category value is compared as (``None`` for missing); the rule of the module docstring.

    Example:
        >>> [normalize_category(v) for v in ("NYC", True, 7, 7.0, 2.5, float("nan"), None)]
        ['NYC', 'true', '7', '7', '2.5', None, None]
    """
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return None
        if math.isfinite(v) and v.is_integer():
            return str(int(v))
        return repr(v)
    return str(value)


def check_spec(spec: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` when ``spec`` is not a tabular spec this module can apply.

    Checks the kind and version, that every feature column has exactly one column entry of a
    known type with its statistics, and that ``output_width`` (when present) matches the layout.

    Example:
        >>> check_spec({"kind": "image"})
        Traceback (most recent call last):
        ...
        ValueError: preprocessing spec kind 'image' is not 'tabular'; this runtime applies tabular specs only
    """
    if not isinstance(spec, Mapping):
        raise ValueError(f"preprocessing spec must be a JSON object, got {type(spec).__name__}")
    if spec.get("kind") != SPEC_KIND:
        kind = spec.get("kind")
        raise ValueError(
            f"preprocessing spec kind {kind!r} is not {SPEC_KIND!r}; this runtime applies tabular specs only"
        )
    version = spec.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= SPEC_VERSION:
        raise ValueError(
            f"preprocessing spec version {version!r} is not supported (this runtime reads version {SPEC_VERSION}); "
            "update trainengine or re-export the bundle"
        )
    if spec.get("encoding", "onehot") not in ("onehot", "embedding"):
        raise ValueError(f"preprocessing spec encoding {spec.get('encoding')!r} is not 'onehot' or 'embedding'")
    columns = spec.get("columns")
    features = spec.get("feature_columns")
    if not isinstance(columns, list) or not isinstance(features, list):
        raise ValueError("preprocessing spec needs the lists 'feature_columns' and 'columns'")
    names = [c.get("name") if isinstance(c, Mapping) else None for c in columns]
    if names != features:
        raise ValueError(f"preprocessing spec columns {names} do not match feature_columns {features}")
    for column in columns:
        kind = column.get("type")
        if kind == "numeric":
            for key in ("mean", "std"):
                if not isinstance(column.get(key), _NUMBER_TYPES):
                    raise ValueError(f"preprocessing spec column {column['name']!r} has no number {key!r}")
        elif kind == "categorical":
            if not isinstance(column.get("categories"), list):
                raise ValueError(f"preprocessing spec column {column['name']!r} has no list 'categories'")
        else:
            raise ValueError(
                f"preprocessing spec column {column['name']!r} has type {kind!r}; expected 'numeric' or 'categorical'"
            )
    declared = spec.get("output_width")
    if declared is not None and declared != output_width(spec):
        raise ValueError(
            f"preprocessing spec output_width {declared} does not match its columns' layout ({output_width(spec)})"
        )


def _embedding(spec: Mapping[str, Any]) -> bool:
    return spec.get("encoding", "onehot") == "embedding"


def output_width(spec: Mapping[str, Any]) -> int:
    """Values per encoded row (the model's input width) of ``spec``'s layout.

    Example:
        >>> output_width(
        ...     {
        ...         "encoding": "onehot",
        ...         "columns": [{"type": "numeric"}, {"type": "categorical", "categories": ["a", "b", "c"]}],
        ...     }
        ... )
        6
    """
    width = 0
    for column in spec["columns"]:
        if column["type"] == "numeric" or _embedding(spec):
            width += 1
        else:
            width += len(column["categories"]) + 2
    return width


def _numeric(column: Mapping[str, Any], values: Any, standardize: bool) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)  # None in a list becomes NaN
    missing = np.isnan(v)
    if missing.any():
        fill = column.get("fill")
        v = np.where(missing, float(column["mean"] if fill is None else fill), v)
    if standardize:
        std = float(column["std"])
        v = (v - float(column["mean"])) / (std if std > 0 else 1.0)
    return v


def _codes(column: Mapping[str, Any], values: Any) -> np.ndarray:
    """Category codes (N,) int64: 0 missing, 1 other, 2 + k for categories[k]."""
    lookup = {c: OTHER_CODE + 1 + k for k, c in enumerate(column["categories"])}
    normalized = (v if type(v) is str else normalize_category(v) for v in values)
    return np.fromiter(
        (MISSING_CODE if v is None else lookup.get(v, OTHER_CODE) for v in normalized),
        dtype=np.int64,
        count=len(values),
    )


def encode_columns(spec: Mapping[str, Any], columns: Mapping[str, np.ndarray | Sequence[Any]]) -> np.ndarray:
    """Encode raw columns into the model's input rows (the layout of the module docstring).

    Args:
        spec: The tabular preprocessing spec.
        columns: ``{feature column: values}`` for every feature column, all of one length N.
            Numeric columns: float arrays (NaN or ``None`` for missing). Categorical columns:
            sequences / object arrays of category values (strings as :func:`normalize_category`
            gives them, ``None`` for missing; other values are normalised here).

    Returns:
        ``(N, output_width)`` float32.

    Raises:
        ValueError: A feature column is absent or the columns differ in length.

    Example:
        >>> spec = {
        ...     "standardize": False,
        ...     "encoding": "embedding",
        ...     "feature_columns": ["x", "c"],
        ...     "columns": [
        ...         {"name": "x", "type": "numeric", "mean": 0.0, "std": 1.0, "fill": 9.0},
        ...         {"name": "c", "type": "categorical", "categories": ["a", "b"]},
        ...     ],
        ... }
        >>> encode_columns(spec, {"x": np.array([1.0, np.nan]), "c": np.array(["b", None], dtype=object)}).tolist()
        [[1.0, 3.0], [9.0, 0.0]]
    """
    absent = [c["name"] for c in spec["columns"] if c["name"] not in columns]
    if absent:
        raise ValueError(f"encode_columns: no values for the feature column(s) {', '.join(map(repr, absent))}")
    lengths = {len(columns[c["name"]]) for c in spec["columns"]}
    if len(lengths) > 1:
        raise ValueError(f"encode_columns: the columns differ in length ({sorted(lengths)})")
    n = lengths.pop() if lengths else 0
    standardize = bool(spec.get("standardize", True))
    embedding = _embedding(spec)
    out = np.zeros((n, output_width(spec)), dtype=np.float32)  # (N, width)
    at = 0
    code_columns: list[np.ndarray] = []
    for column in spec["columns"]:
        values = columns[column["name"]]
        if column["type"] == "numeric":
            out[:, at] = _numeric(column, values, standardize)
            at += 1
        elif embedding:
            code_columns.append(_codes(column, values))
        else:
            codes = _codes(column, values)
            out[np.arange(n), at + codes] = 1.0  # one-hot over [missing, other, *categories]
            at += len(column["categories"]) + 2
    for codes in code_columns:  # embedding: the codes follow the dense part
        out[:, at] = codes
        at += 1
    return out


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return f"str {value if len(value) <= 20 else value[:17] + '...'!r}"
    if isinstance(value, bool):
        return f"bool {str(value).lower()}"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    return f"{type(value).__name__} {value!r}"


def encode_records(
    spec: Mapping[str, Any], records: Sequence[Mapping[str, Any] | Sequence[Any]], *, prefix: str = "inputs"
) -> np.ndarray:
    """Validate raw JSON records and encode them like the training rows (:func:`encode_columns`).

    A record is an object ``{column: raw value}`` (a missing key or ``null`` is a missing value;
    the label column is ignored, so a training row can be sent as it is) or a list of raw
    values in ``spec["feature_columns"]`` order. Numeric columns take JSON numbers; categorical
    columns take strings, numbers or booleans (compared by :func:`normalize_category`).

    Args:
        spec: The tabular preprocessing spec.
        records: The request's examples.
        prefix: Field path of ``records`` in error messages.

    Returns:
        ``(N, output_width)`` float32.

    Raises:
        PreprocessError: Naming the first offending field: a record that is not an object or a
            list, an unknown column, a list of the wrong length, a non-number in a numeric column,
            an infinite number, an object or list as a category, or a missing value when the
            model was trained with ``missing_values`` ``"drop"`` / ``"error"`` (serving cannot
            drop a row: it asks for the value).

    Example:
        >>> spec = {
        ...     "standardize": False,
        ...     "feature_columns": ["x"],
        ...     "missing_values": "error",
        ...     "columns": [{"name": "x", "type": "numeric", "mean": 0.0, "std": 1.0}],
        ... }
        >>> encode_records(spec, [[2]]).tolist()
        [[2.0]]
        >>> encode_records(spec, [{"y": 1}])
        Traceback (most recent call last):
        ...
        trainengine._preprocess.PreprocessError: inputs[0].y: unknown column; the model's columns are: x
    """
    features: list[str] = list(spec["feature_columns"])
    kinds = {c["name"]: c["type"] for c in spec["columns"]}
    label = (spec.get("label") or {}).get("column")
    policy = spec.get("missing_values", "fill")
    values: dict[str, list[Any]] = {name: [] for name in features}
    for i, record in enumerate(records):
        if isinstance(record, Mapping):
            for key in record:
                if key not in kinds and key != label:
                    raise PreprocessError(
                        f"{prefix}[{i}].{key}", f"unknown column; the model's columns are: {', '.join(features)}"
                    )
            row = [(f"{prefix}[{i}].{name}", record.get(name)) for name in features]
        elif isinstance(record, list):
            if len(record) != len(features):
                raise PreprocessError(
                    f"{prefix}[{i}]",
                    f"expected {len(features)} values in the order {', '.join(features)}, got {len(record)}; "
                    'or send an object {"column": value, ...}',
                )
            row = [(f"{prefix}[{i}][{j}]", v) for j, v in enumerate(record)]
        else:
            raise PreprocessError(
                f"{prefix}[{i}]",
                f'expected an object {{"column": value, ...}} or a list of {len(features)} values, '
                f"got {_describe(record)}",
            )
        for name, (path, value) in zip(features, row, strict=True):
            values[name].append(_checked(value, kinds[name], name, path, policy))
    return encode_columns(spec, values)


def _checked(value: Any, kind: str, name: str, path: str, policy: str) -> Any:
    """The raw value if it fits the column (numbers as float, missing as None), else PreprocessError."""
    if value is None or (type(value) is float and math.isnan(value)):
        if policy in ("drop", "error"):
            raise PreprocessError(
                path,
                f"missing value for column {name!r}; this model was trained with missing_values={policy!r} "
                "(rows with missing values were not used), so send a value",
            )
        return None
    if kind == "numeric":
        if type(value) not in _NUMBER_TYPES:
            raise PreprocessError(path, f"not a number, got {_describe(value)}; send a number (or null for missing)")
        v = float(value)
        if not math.isfinite(v):
            raise PreprocessError(path, f"not finite ({value}); send a finite number (or null for missing)")
        return v
    if isinstance(value, (dict, list)):
        raise PreprocessError(path, f"not a category value, got {_describe(value)}; send a string, number or boolean")
    return normalize_category(value)


def decode_rows(spec: Mapping[str, Any], x: np.ndarray, *, digits: int = 6) -> list[dict[str, Any]]:
    """Raw records that encode back to the rows ``x`` (for a bundle's examples): the inverse transform.

    Numeric values are un-standardised and rounded to ``digits`` significant digits; a category
    slot gives its category, the missing slot ``None`` and the other slot ``"<other>"`` (any value
    the model did not see encodes to it).

    Example:
        >>> spec = {
        ...     "standardize": True,
        ...     "encoding": "onehot",
        ...     "feature_columns": ["x", "c"],
        ...     "columns": [
        ...         {"name": "x", "type": "numeric", "mean": 10.0, "std": 2.0},
        ...         {"name": "c", "type": "categorical", "categories": ["a"]},
        ...     ],
        ... }
        >>> decode_rows(spec, encode_records(spec, [{"x": 12, "c": "a"}, {"x": 9, "c": "zz"}]))
        [{'x': 12.0, 'c': 'a'}, {'x': 9.0, 'c': '<other>'}]
    """
    arr = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    standardize = bool(spec.get("standardize", True))
    embedding = _embedding(spec)
    records: list[dict[str, Any]] = [{} for _ in range(len(arr))]
    dense = sum(1 for c in spec["columns"] if c["type"] == "numeric") if embedding else 0
    at, code_at = 0, dense
    for column in spec["columns"]:
        name = column["name"]
        if column["type"] == "numeric":
            v = arr[:, at]
            if standardize:
                std = float(column["std"])
                v = v * (std if std > 0 else 1.0) + float(column["mean"])
            for record, value in zip(records, v.tolist(), strict=True):
                record[name] = float(f"{value:.{digits}g}")
            at += 1
            continue
        if embedding:
            codes = np.rint(arr[:, code_at]).astype(np.int64)
            code_at += 1
        else:
            codes = arr[:, at : at + len(column["categories"]) + 2].argmax(axis=1)
            at += len(column["categories"]) + 2
        names = [None, OTHER_VALUE, *column["categories"]]
        for record, code in zip(records, codes.tolist(), strict=True):
            record[name] = names[code] if 0 <= code < len(names) else OTHER_VALUE
    return [{name: r[name] for name in spec["feature_columns"]} for r in records]
