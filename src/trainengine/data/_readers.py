"""Readers of tabular files into the memory-mapped Arrow cache: CSV/TSV, JSONL, Parquet and
Hugging Face ``save_to_disk`` folders.

Each reader has the :data:`trainengine.registries.DATA_FORMATS` signature
``read_X(files, options) -> CachedTable``: it hashes the files, builds the cache entry once
(``data/_cache.py``) by streaming record batches into it, and returns the memory-mapped table. No
reader holds a whole file in memory: CSV goes through ``pyarrow.csv.open_csv`` (block by block),
JSONL through ``pyarrow.json.open_json``, Parquet through ``ParquetFile.iter_batches`` and a
``datasets`` folder through its own memory-mapped Arrow files.

Batches are re-grouped into record batches of about :data:`_BATCH_ROWS` rows before they are
cached: a dataset gathers a training batch with one ``take`` per record batch it touches (see
``data/_tabular.py``), so fewer, larger record batches make random access cheap.

The facts every reader stores in ``meta.json`` (the cache entry's ``meta``):
``format``; ``sources``: ``[{"path", "size", "sha256", "rows", "skipped"}]`` in table order (``rows``
this file contributed; ``skipped``: 0-based record numbers of the file's rows that were dropped,
for :func:`row_location`); ``bad_rows`` (rows skipped in all); ``bad_row_examples``: the first 20
``{"file", "line", "problem"}``.

Row numbers: a *record* is a data row (CSV: the header excluded; JSONL: blank lines excluded).
Line numbers in errors are physical lines, exact for CSV files without quoted line breaks.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from trainengine.data._cache import ArrowSink, CachedTable, build_or_load, cache_key, cache_root, source_hashes
from trainengine.data._types import ReadOptions
from trainengine.errors import DataError

__all__ = ["read_csv", "read_jsonl", "read_parquet", "read_hf_disk", "row_location"]

_READER_VERSION = 1  # bump when the parsed result of the same files changes: old cache entries are rebuilt
_BATCH_ROWS = 1 << 20  # rows per cached record batch (bounded by _BATCH_BYTES too)
_BATCH_BYTES = 64 << 20
_MAX_EXAMPLES = 20
_CSV_BLOCK = 4 << 20  # bytes per CSV block: types are inferred from the first block of each file
_MAX_SKIPPED = 100_000  # skipped record numbers kept per file for row_location
_SKIP_HINT = "or set data.bad_rows: skip to drop such rows (they are counted in the run record)"
_CSV_CONVERSION = re.compile(
    r"In CSV column #(\d+): (?:Row #\d+: )?CSV conversion error to (\S+): invalid value '(.*)'", re.S
)
_NUMBER = re.compile(r"^\s*[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|inf|nan)\s*$", re.I)


def row_location(meta: dict[str, Any], i: int) -> str:
    """Where row ``i`` of a cached table came from: ``"train.csv row 1234"`` (1-based record number).

    Rows that were skipped as bad are counted, so the number is the record's place in the file.

    Args:
        meta: the ``meta`` of a :class:`CachedTable` a reader of this module built.
        i: 0-based row index into the cached table.

    Example:
        >>> meta = {"sources": [{"path": "a/train.csv", "rows": 3}, {"path": "b.csv", "rows": 5, "skipped": [0]}]}
        >>> row_location(meta, 1), row_location(meta, 3)
        ('train.csv row 2', 'b.csv row 2')
    """
    rest = int(i)
    for src in meta.get("sources", []):
        n = int(src.get("rows", 0))
        if rest < n:
            record = rest
            for s in src.get("skipped", []):  # sorted: each skipped record before ours shifts it by one
                if s <= record:
                    record += 1
                else:
                    break
            note = " (after more skipped rows than recorded; approximate)" if src.get("skipped_truncated") else ""
            return f"{Path(src['path']).name} row {record + 1}{note}"
        rest -= n
    return f"row {int(i) + 1}"


class _Report:
    """Bad rows of one build: count, examples, skipped record numbers per file."""

    def __init__(self) -> None:
        self.count = 0
        self.examples: list[dict[str, Any]] = []
        self.skipped: dict[str, list[int]] = {}

    def add(self, path: Path, line: int | None, record: int | None, problem: str) -> None:
        self.count += 1
        if len(self.examples) < _MAX_EXAMPLES:
            self.examples.append({"file": str(path), "line": line, "problem": problem})
        if record is not None:
            self.skipped.setdefault(str(path), []).append(record)

    def sources(self, sources: list[dict[str, Any]], rows: list[int]) -> list[dict[str, Any]]:
        out = []
        for src, n in zip(sources, rows, strict=True):
            skipped = sorted(self.skipped.get(src["path"], []))
            entry = {**src, "rows": n, "skipped": skipped[:_MAX_SKIPPED]}
            if len(skipped) > _MAX_SKIPPED:
                entry["skipped_truncated"] = True
            out.append(entry)
        return out


class _Rebatcher:
    """Groups small record batches into ones of about ``_BATCH_ROWS`` rows before they reach the sink."""

    def __init__(self, sink: ArrowSink) -> None:
        self.sink = sink
        self.buf: list[Any] = []
        self.rows = 0
        self.bytes = 0

    def write(self, batch: Any) -> None:
        if batch.num_rows == 0:
            return
        self.buf.append(batch)
        self.rows += batch.num_rows
        self.bytes += batch.nbytes
        if self.rows >= _BATCH_ROWS or self.bytes >= _BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        if self.buf:
            for b in pa.Table.from_batches(self.buf).combine_chunks().to_batches():
                self.sink.write(b)
        self.buf, self.rows, self.bytes = [], 0, 0


class _Retry(Exception):
    """Internal: restart the build with changed reading instructions (a widened type, a file to validate)."""


def _unify_type(types: list[Any]) -> Any:
    """One type for a column across files: equal types stay, ints+floats -> float64, else string."""
    import pyarrow as pa

    real = [t for t in types if not pa.types.is_null(t)]
    if not real:
        return pa.string()
    if all(t == real[0] for t in real):
        return real[0]
    if all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in real):
        return pa.float64()
    return pa.string()


def _unify_schemas(paths: Sequence[Path], schemas: list[Any]) -> Any:
    """The common schema (the first file's column order); a file whose columns differ -> DataError."""
    import pyarrow as pa

    names = schemas[0].names
    for path, schema in zip(paths[1:], schemas[1:], strict=True):
        if set(schema.names) != set(names):
            missing = sorted(set(names) - set(schema.names))
            extra = sorted(set(schema.names) - set(names))
            raise DataError(
                f"{path} does not have the same columns as {paths[0]}: missing {missing}, extra {extra}; "
                "every file of a split needs the same columns (rename or drop them, or read the files as "
                "separate splits)"
            )
    return pa.schema([(n, _unify_type([s.field(n).type for s in schemas])) for n in names])


def _build(
    kind: str,
    files: Sequence[str | Path],
    options: ReadOptions,
    key_options: dict[str, Any],
    make_build: Callable[[list[Path], list[dict[str, Any]], dict[str, Any]], Callable[[ArrowSink], dict[str, Any]]],
) -> CachedTable:
    """Hash, key and build (retrying with the instructions a :class:`_Retry` added)."""
    paths = [Path(f) for f in files]
    if not paths:
        raise DataError(f"no {kind} files to read; name at least one file (data.train_file)")
    sources = source_hashes(paths)
    key = cache_key(kind, sources, {"reader": _READER_VERSION, "bad_rows": options.bad_rows, **key_options})
    state: dict[str, Any] = {}
    for _ in range(64):
        try:
            return build_or_load(
                cache_root(options.cache_dir), key, make_build(paths, sources, state), describe=f"{kind}: {paths[0]}"
            )
        except _Retry:
            continue
    raise DataError(f"could not settle the column types of {paths[0]}: too many type changes while reading it")


# --------------------------------------------------------------------------------------------- CSV


def _delimiter(path: Path, delimiter: str | None) -> str:
    if delimiter is not None:
        if len(delimiter) != 1:
            raise DataError(f"data.delimiter must be one character; got {delimiter!r}")
        return delimiter
    return "\t" if path.suffix.lower() in (".tsv", ".tab") else ","


def read_csv(files: Sequence[str | Path], options: ReadOptions) -> CachedTable:
    """Read CSV/TSV files (same columns) into the Arrow cache, streaming with ``pyarrow.csv.open_csv``.

    The first row is the header. Types are inferred from each file's first block and unified
    across files (an int column in one file and float in another becomes float; mixed kinds
    become strings). Empty fields, ``NA``, ``null``, ``NaN`` (pyarrow's null spellings) are
    missing values. A row with the wrong number of fields or a value that does not fit its
    column's type (``abc`` in a numeric column) is a bad row: an error naming file and line, or
    skipped and counted with ``options.bad_rows == "skip"`` (which parses single-threaded, to
    know exact line numbers). An integer column that later holds a decimal number becomes float.

    Args:
        files: the CSV files, read in order into one table.
        options: ``cache_dir``, ``bad_rows``, ``delimiter`` (None: ``,``, or tab for ``.tsv``).

    Raises:
        DataError: a bad row (in error mode), files whose columns differ, an unreadable file.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> if True:
        ...     _ = (d / "t.csv").write_text("x,y\\n1,a\\n,b\\n")
        >>> t = read_csv([d / "t.csv"], ReadOptions(cache_dir=d / "cache")).table
        >>> t.column("x").to_pylist(), t.column("y").to_pylist()
        ([1, None], ['a', 'b'])
    """
    delims = [_delimiter(Path(f), options.delimiter) for f in files]
    return _build(
        "csv", files, options, {"delimiters": delims}, lambda p, s, st: _csv_builder(p, s, st, delims, options)
    )


def _csv_options(delim: str, *, threads: bool, handler: Any, types: dict[str, Any] | None, names: list[str] | None):
    import pyarrow.csv as pcsv

    return {
        "read_options": pcsv.ReadOptions(use_threads=threads, block_size=_CSV_BLOCK),
        "parse_options": pcsv.ParseOptions(delimiter=delim, invalid_row_handler=handler),
        "convert_options": pcsv.ConvertOptions(
            column_types=types, include_columns=names, strings_can_be_null=True, quoted_strings_can_be_null=True
        ),
    }


def _skip_all(row: Any) -> str:
    """Invalid-row handler of the schema pass: bad rows are dealt with (and reported) by the reading pass."""
    return "skip"


def _open_csv(path: Path, **kwargs: Any) -> Any:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    try:
        return pcsv.open_csv(str(path), **kwargs)
    except pa.ArrowInvalid as exc:
        raise DataError(f"cannot read {path} as CSV: {exc}") from None


def _bad_positions(arr: Any, target: Any, offset: int = 0) -> list[int]:
    """Indices of ``arr`` (strings) whose value does not cast to ``target`` (bisection: a few casts per bad value)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        pc.cast(arr, target)
        return []
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        if len(arr) == 1:
            return [offset]
        mid = len(arr) // 2
        return _bad_positions(arr.slice(0, mid), target, offset) + _bad_positions(arr.slice(mid), target, offset + mid)


def _csv_builder(
    paths: list[Path], sources: list[dict[str, Any]], state: dict[str, Any], delims: list[str], options: ReadOptions
) -> Callable[[ArrowSink], dict[str, Any]]:
    import pyarrow as pa

    skip = options.bad_rows == "skip"
    overrides: dict[str, Any] = state.setdefault("overrides", {})  # column -> type widened to
    checked: dict[str, Any] = state.setdefault("checked", {})  # column -> type: read as string, bad values dropped

    def build(sink: ArrowSink) -> dict[str, Any]:
        file_schemas = [_open_csv(p, **_csv_options(d, threads=True, handler=_skip_all, types=None, names=None)).schema
                        for p, d in zip(paths, delims, strict=True)]  # fmt: skip
        schema = _unify_schemas(paths, file_schemas)
        schema = pa.schema([(f.name, overrides.get(f.name, f.type)) for f in schema])
        report, rows, out = _Report(), [], _Rebatcher(sink)
        for path, delim, file_schema in zip(paths, delims, file_schemas, strict=True):
            n = _read_one_csv(path, delim, file_schema, schema, checked, skip, report, out)
            rows.append(n)
        out.flush()
        return {
            "format": "csv",
            "sources": report.sources(sources, rows),
            "bad_rows": report.count,
            "bad_row_examples": report.examples,
            "schema": schema,
        }

    def _read_one_csv(
        path: Path,
        delim: str,
        file_schema: Any,
        schema: Any,
        checked: dict[str, Any],
        skip: bool,
        report: _Report,
        out: _Rebatcher,
    ) -> int:
        import numpy as np
        import pyarrow.compute as pc
        import pyarrow.csv as pcsv

        invalid: list[Any] = []

        def handler(row: Any) -> str:
            if not skip:
                invalid.append(row)
                return "error"
            line = row.number
            problem = f"expected {row.expected_columns} fields, found {row.actual_columns}"
            report.add(path, line, None if line is None else line - 2, problem)
            return "skip"

        types = {f.name: (pa.string() if f.name in checked else f.type) for f in schema}
        kwargs = _csv_options(delim, threads=not skip, handler=handler, types=types, names=schema.names)
        n = 0
        records = 0  # records read from this file so far (kept + skipped bad values), for line numbers
        try:
            for batch in pcsv.open_csv(str(path), **kwargs):  # opening reads the first block: may already fail
                n_in = len(batch)
                for name, target in checked.items():
                    col = batch.column(name)
                    bad = _bad_positions(col, target)
                    if bad and not skip:
                        _raise_conversion(path, name, target, col[bad[0]].as_py(), records + bad[0])
                    if bad:
                        for b in bad:
                            report.add(path, records + b + 2, records + b,
                                       f"column '{name}': {col[b].as_py()!r} is not a {target}")  # fmt: skip
                        mask = np.ones(len(batch), dtype=bool)
                        mask[bad] = False
                        batch = batch.filter(pa.array(mask))
                        col = batch.column(name)
                    batch = batch.set_column(batch.schema.get_field_index(name), name, pc.cast(col, target))
                records += n_in
                n += len(batch)
                out.write(batch.cast(schema) if batch.schema != schema else batch)
        except pa.ArrowInvalid as exc:
            if invalid:
                line = _first_invalid_line(path, delim)
                row = invalid[0]
                raise DataError(
                    f"{path} line {line if line is not None else '?'}: expected {row.expected_columns} fields, "
                    f"found {row.actual_columns} ({row.text[:80]!r}); fix the row (quote fields holding the "
                    f"delimiter {delim!r}), {_SKIP_HINT}"
                ) from None
            m = _CSV_CONVERSION.match(str(exc))
            if m is None:
                raise DataError(f"cannot read {path} as CSV: {exc}") from None
            name, value = file_schema.names[int(m.group(1))], m.group(3)
            target = schema.field(name).type
            if pa.types.is_integer(target) and _NUMBER.match(value):
                overrides[name] = pa.float64()  # an int column holding 2.5 further down is a float column
                raise _Retry from None
            if skip:
                checked[name] = target
                raise _Retry from None
            _locate_conversion(path, delim, schema, name, target)
            raise DataError(f"{path}: column '{name}': {value!r} is not a {target}; {_SKIP_HINT}") from None
        return n

    return build


def _raise_conversion(path: Path, name: str, target: Any, value: Any, record: int) -> None:
    raise DataError(
        f"{path} line {record + 2}: column '{name}' holds {value!r}, which is not a {target} like the values above "
        f"it; fix the value (or leave it empty for a missing value), {_SKIP_HINT}"
    )


def _locate_conversion(path: Path, delim: str, schema: Any, name: str, target: Any) -> None:
    """Find (and raise for) the first value of ``name`` that does not cast to ``target``: a second, error-only pass."""
    import pyarrow as pa

    types = {f.name: (pa.string() if f.name == name else f.type) for f in schema}
    # Only the one column is read: other columns cannot fail and parsing them costs time.
    reader = _open_csv(path, **_csv_options(delim, threads=True, handler=None, types=types, names=[name]))
    records = 0
    for batch in reader:
        col = batch.column(0)
        bad = _bad_positions(col, target)
        if bad:
            _raise_conversion(path, name, target, col[bad[0]].as_py(), records + bad[0])
        records += len(batch)


def _first_invalid_line(path: Path, delim: str) -> int | None:
    """Physical line of the first row with a wrong field count (single-threaded pass: the threaded one has no lines)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    found: list[int | None] = []

    def handler(row: Any) -> str:
        found.append(row.number)
        return "error"

    try:
        for _ in pcsv.open_csv(
            str(path), **_csv_options(delim, threads=False, handler=handler, types=None, names=None)
        ):
            pass
    except pa.ArrowInvalid:
        pass
    return found[0] if found else None


# ------------------------------------------------------------------------------------------- JSONL


class _GoodLines(io.RawIOBase):
    """A JSONL file as a byte stream without its bad lines: each line is checked with ``json.loads``
    (and, given a schema, against the column types) and bad ones are reported or raised.

    Only used when pyarrow's fast path failed on the file, to find exactly the bad lines.
    """

    def __init__(self, path: Path, schema: Any, report: _Report | None, state: dict[str, Any]) -> None:
        super().__init__()
        self.path, self.schema, self.report, self.state = path, schema, report, state
        self.fh = open(path, "rb")  # noqa: SIM115  (closed in close(): the stream outlives this call)
        self.lines = enumerate(self.fh, start=1)
        self.pending = b""
        self.records = 0

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.fh.close()
        super().close()

    def _problem(self, raw: bytes) -> str | None:
        try:
            obj = json.loads(raw.rstrip(b"\r\n"))  # without the newline: positions refer to this line
        except json.JSONDecodeError as exc:
            return f"not valid JSON ({exc.msg} at column {exc.colno})"
        except ValueError as exc:  # e.g. invalid UTF-8
            return f"not valid JSON ({exc})"
        if not isinstance(obj, dict):
            return f"a JSON {type(obj).__name__}, not an object"
        if self.schema is None:
            return None
        for k, v in obj.items():
            if k not in self.schema.names:
                return f"field {k!r} is not among the columns of the first rows {self.schema.names}"
            problem = _json_type_problem(k, v, self.schema.field(k).type, self.state)
            if problem:
                return problem
        return None

    def readinto(self, buffer: Any) -> int:
        while not self.pending:
            try:
                number, raw = next(self.lines)
            except StopIteration:
                return 0
            if not raw.strip():
                continue
            problem = self._problem(raw)
            if problem is None:
                self.pending = raw if raw.endswith(b"\n") else raw + b"\n"
                self.records += 1
                continue
            if self.report is None:
                raise DataError(f"{self.path} line {number}: {problem}; fix the line, {_SKIP_HINT}")
            self.report.add(self.path, number, self.records, problem)
            self.records += 1
        n = min(len(buffer), len(self.pending))
        buffer[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n


def _json_type_problem(name: str, value: Any, target: Any, state: dict[str, Any]) -> str | None:
    """Why ``value`` does not fit a column of type ``target`` (None when it fits); ints in an int
    column that meet a float widen the column (a retry)."""
    import pyarrow as pa

    if value is None:
        return None
    if pa.types.is_integer(target):
        if isinstance(value, float):
            state.setdefault("overrides", {})[name] = pa.float64()
            raise _Retry
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif pa.types.is_floating(target):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif pa.types.is_boolean(target):
        ok = isinstance(value, bool)
    elif pa.types.is_string(target) or pa.types.is_large_string(target):
        ok = isinstance(value, str)
    else:
        return None  # nested and other types: pyarrow's own check stands
    return None if ok else f"column '{name}': {value!r} is not a {target} like the values above it"


def read_jsonl(files: Sequence[str | Path], options: ReadOptions) -> CachedTable:
    """Read JSON Lines files (one object per line, same fields) into the Arrow cache with ``pyarrow.json``.

    Blank lines are ignored. A line that is not a JSON object, or whose value does not fit the
    column's type, is a bad row: an error naming the file and line, or skipped (exactly that
    line) and counted with ``options.bad_rows == "skip"``. An integer field that later holds a
    decimal number becomes float; types are unified across files as for CSV.

    Args:
        files: the ``.jsonl`` files, read in order into one table.
        options: ``cache_dir`` and ``bad_rows``.

    Raises:
        DataError: a bad line (in error mode), files whose fields differ, an unreadable file.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> if True:
        ...     _ = (d / "t.jsonl").write_text('{"x": 1}\\n{"x": 2.5}\\n')
        >>> read_jsonl([d / "t.jsonl"], ReadOptions(cache_dir=d / "cache")).table.column("x").to_pylist()
        [1.0, 2.5]
    """
    return _build("jsonl", files, options, {}, lambda p, s, st: _jsonl_builder(p, s, st, options))


def _open_json(source: Any, schema: Any) -> Any:
    import pyarrow.json as pjson

    parse = (
        pjson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error") if schema is not None else None
    )
    return pjson.open_json(source, read_options=pjson.ReadOptions(block_size=4 << 20), parse_options=parse)


def _jsonl_builder(
    paths: list[Path], sources: list[dict[str, Any]], state: dict[str, Any], options: ReadOptions
) -> Callable[[ArrowSink], dict[str, Any]]:
    import pyarrow as pa

    validate: set[str] = state.setdefault("validate", set())  # files read through _GoodLines
    overrides: dict[str, Any] = state.setdefault("overrides", {})

    def file_schema(path: Path) -> Any:
        try:
            return _open_json(str(path), None).schema
        except pa.ArrowInvalid:
            validate.add(str(path))  # the first block itself is bad: find out where, line by line
            stream = _GoodLines(path, None, _Report() if options.bad_rows == "skip" else None, state)
            try:
                return _open_json(stream, None).schema
            except pa.ArrowInvalid as exc:
                raise DataError(f"cannot read {path} as JSON lines: {exc}") from None
            finally:
                stream.close()

    def build(sink: ArrowSink) -> dict[str, Any]:
        schema = _unify_schemas(paths, [file_schema(p) for p in paths])
        schema = pa.schema([(f.name, overrides.get(f.name, f.type)) for f in schema])
        report, rows, out = _Report(), [], _Rebatcher(sink)
        for path in paths:
            slow = str(path) in validate
            stream = _GoodLines(path, schema, report if options.bad_rows == "skip" else None, state) if slow else None
            n = 0
            try:
                for batch in _open_json(stream if slow else str(path), schema):
                    n += len(batch)
                    out.write(batch)
            except pa.ArrowInvalid as exc:
                if slow:
                    raise DataError(f"cannot read {path} as JSON lines: {exc}") from None
                validate.add(str(path))  # read it again, checking each line, to name (or skip) the bad ones
                raise _Retry from None
            finally:
                if stream is not None:
                    stream.close()
            rows.append(n)
        out.flush()
        return {
            "format": "jsonl",
            "sources": report.sources(sources, rows),
            "bad_rows": report.count,
            "bad_row_examples": report.examples,
            "schema": schema,
        }

    return build


# ----------------------------------------------------------------------------------------- Parquet


def read_parquet(files: Sequence[str | Path], options: ReadOptions) -> CachedTable:
    """Read Parquet files (same columns) into the Arrow cache, batch by batch (``ParquetFile.iter_batches``).

    Types are unified across files as for CSV. Parquet has no bad rows: a damaged file is an error.

    Args:
        files: the ``.parquet`` files, read in order into one table.
        options: ``cache_dir``.

    Raises:
        DataError: a file that is not Parquet, files whose columns differ.

    Example:
        >>> import tempfile, pathlib, pyarrow as pa, pyarrow.parquet as pq
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> if True:
        ...     pq.write_table(pa.table({"x": [1, 2]}), d / "t.parquet")
        >>> read_parquet([d / "t.parquet"], ReadOptions(cache_dir=d / "cache")).table.num_rows
        2
    """
    return _build("parquet", files, options, {}, lambda p, s, st: _parquet_builder(p, s))


def _parquet_builder(paths: list[Path], sources: list[dict[str, Any]]) -> Callable[[ArrowSink], dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    def open_file(path: Path) -> Any:
        try:
            return pq.ParquetFile(str(path))
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"cannot read {path} as Parquet: {exc}") from None

    def build(sink: ArrowSink) -> dict[str, Any]:
        handles = [open_file(p) for p in paths]
        schema = _unify_schemas(paths, [h.schema_arrow for h in handles])
        rows, out = [], _Rebatcher(sink)
        for path, handle in zip(paths, handles, strict=True):
            n = 0
            try:
                for batch in handle.iter_batches(batch_size=64 * 1024, columns=schema.names):
                    n += len(batch)
                    out.write(batch.cast(schema) if batch.schema != schema else batch)
            except (pa.ArrowInvalid, OSError) as exc:
                raise DataError(f"cannot read {path} as Parquet (damaged?): {exc}") from None
            rows.append(n)
        out.flush()
        srcs = [{**s, "rows": n, "skipped": []} for s, n in zip(sources, rows, strict=True)]
        return {"format": "parquet", "sources": srcs, "bad_rows": 0, "bad_row_examples": [], "schema": schema}

    return build


# ------------------------------------------------------------------------------ Hugging Face datasets


def read_hf_disk(files: Sequence[str | Path], options: ReadOptions) -> CachedTable:
    """Read a folder written by ``datasets.Dataset.save_to_disk`` (or a ``DatasetDict``'s, picking
    ``options.split``) into the Arrow cache. ``ClassLabel`` columns become their label names.

    Args:
        files: the folder(s); several folders are concatenated (same columns).
        options: ``cache_dir`` and ``split`` (required for a ``DatasetDict`` folder).

    Raises:
        DataError: ``datasets`` is not installed (``pip install "trainengine[data]"``), the folder
            is not a saved dataset, or the split is missing (the message lists the splits there).

    Example:
        >>> import tempfile, pathlib, datasets
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> if True:
        ...     datasets.Dataset.from_dict({"x": [1, 2]}).save_to_disk(d / "ds")
        >>> read_hf_disk([d / "ds"], ReadOptions(cache_dir=d / "cache")).table.num_rows
        2
    """
    try:
        import datasets
    except ImportError:
        raise DataError(
            "reading a Hugging Face dataset folder needs the 'datasets' package, which is not installed; "
            'run: pip install "trainengine[data]"'
        ) from None

    folders = [Path(f) for f in files]
    loaded = []
    for folder in folders:
        try:
            ds = datasets.load_from_disk(str(folder))
        except (FileNotFoundError, ValueError, OSError) as exc:
            raise DataError(
                f"{folder} is not a dataset folder written by datasets' save_to_disk ({exc}); point data.train_file "
                "at such a folder, or use data.format csv / jsonl / parquet for plain files"
            ) from None
        if isinstance(ds, datasets.DatasetDict):
            if options.split is None or options.split not in ds:
                what = "names no split" if options.split is None else f"has no split {options.split!r}"
                raise DataError(
                    f"{folder} holds a DatasetDict with splits {sorted(ds)}; the read {what} — choose one of "
                    f"{sorted(ds)}"
                )
            sub: Path = folder / options.split
            ds = ds[options.split]
        else:
            sub = folder
        loaded.append((folder, sub, ds))
    # The folder's own files are the content: hash them all (arrow data, dataset_info, state).
    per_folder = [sorted(p for p in sub.rglob("*") if p.is_file()) for _, sub, _ in loaded]
    hashed = source_hashes([p for files_ in per_folder for p in files_])
    sources, k = [], 0
    for (_folder, sub, _), files_ in zip(loaded, per_folder, strict=True):
        part = hashed[k : k + len(files_)]
        k += len(files_)
        digest = hashlib.sha256("".join(h["sha256"] for h in part).encode()).hexdigest()
        sources.append({"path": str(sub), "size": sum(h["size"] for h in part), "sha256": digest})
    key = cache_key("hf_disk", sources, {"reader": _READER_VERSION, "split": options.split})

    def build(sink: ArrowSink) -> dict[str, Any]:
        schemas, batches_of = [], []
        for _, _, ds in loaded:
            schemas.append(_hf_schema(ds))
            batches_of.append(ds)
        schema = _unify_schemas([Path(s["path"]) for s in sources], schemas)
        rows, out = [], _Rebatcher(sink)
        for ds in batches_of:
            n = 0
            for batch in _hf_batches(ds):
                n += len(batch)
                out.write(batch.cast(schema) if batch.schema != schema else batch)
            rows.append(n)
        out.flush()
        srcs = [{**s, "rows": n, "skipped": []} for s, n in zip(sources, rows, strict=True)]
        return {"format": "hf_disk", "sources": srcs, "bad_rows": 0, "bad_row_examples": [], "schema": schema}

    return build_or_load(cache_root(options.cache_dir), key, build, describe=f"hf_disk: {folders[0]}")


def _class_labels(ds: Any) -> dict[str, list[str]]:
    import datasets

    return {k: list(v.names) for k, v in ds.features.items() if isinstance(v, datasets.ClassLabel)}


def _hf_schema(ds: Any) -> Any:
    import pyarrow as pa

    schema = ds.features.arrow_schema
    labels = _class_labels(ds)
    return pa.schema([(f.name, pa.string() if f.name in labels else f.type) for f in schema])


def _hf_batches(ds: Any) -> Iterator[Any]:
    """Record batches of a ``datasets.Dataset`` (its indices mapping applied), ClassLabel ints -> names."""
    import pyarrow as pa
    import pyarrow.compute as pc

    labels = _class_labels(ds)
    for table in ds.with_format("arrow").iter(batch_size=64 * 1024):
        for name, names in labels.items():
            codes = table.column(name)
            codes = pc.if_else(pc.less(codes, 0), pa.scalar(None, codes.type), codes)  # -1 = no label
            i = table.schema.get_field_index(name)
            table = table.set_column(i, name, pc.take(pa.array(names, pa.string()), codes))
        yield from table.to_batches()
