"""Plain-text corpora for language modeling: text files -> Arrow cache -> one memory-mapped token stream.

Three cached stages, each keyed by what it was made from (so an edit anywhere rebuilds only
what depends on it):

1. :func:`read_text` (format ``text``): each file is one document, stored as column ``text``
   (large files in pieces of about 8 MiB cut after a newline, with a ``document`` column saying
   which file a piece belongs to, so no file is ever held in memory whole). Key: the files'
   content hashes.
2. :func:`tokenize_to_cache`: the documents of a text column (of this table or of a JSONL /
   Parquet table) tokenized in groups of at most 16 MiB of text, joined into ONE stream with the
   tokenizer's ``eos_id`` between documents, stored as column ``ids`` in the smallest unsigned
   dtype that holds the vocabulary (uint8 for bytes, uint16 up to 65,536 ids, else uint32). The
   stream is written as a single record batch, so the column is one contiguous buffer of the
   memory-mapped file. Key: the text table's key, the column and the tokenizer's sha256.
3. :func:`token_stream` / :class:`TokenFileDataset`: a zero-copy numpy view of that buffer and
   next-token windows over it, identical to :meth:`TokenWindowDataset.from_stream`'s. A batch
   gathers only its ``B x (T + 1)`` tokens from the page cache; the corpus is never copied into
   process memory, and DataLoader workers reopen the memory map instead of receiving a copy.

Example:
    >>> import tempfile, pathlib
    >>> from trainengine.data._types import ReadOptions
    >>> from trainengine.data._tokenizers import ByteTokenizer
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "a.txt").write_text("hello world")
    >>> opts = ReadOptions(cache_dir=d / "cache")
    >>> tokens = tokenize_to_cache(read_text([d / "a.txt"], opts), "text", ByteTokenizer(), d / "cache")
    >>> ds = TokenFileDataset.from_cache(tokens, seq_len=4)
    >>> len(ds), bytes(ds[0][0].tolist()), bytes(ds[0][1].tolist())
    (2, b'hell', b'ello')
"""

from __future__ import annotations

import codecs
import hashlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from trainengine.data._cache import CachedTable, build_or_load, cache_key, cache_root, source_hashes
from trainengine.data._datasets import PreCollatedBatch
from trainengine.data._fingerprint import _MAGIC
from trainengine.data._tokenizers import Tokenizer
from trainengine.data._types import ReadOptions
from trainengine.errors import DataError

__all__ = ["read_text", "tokenize_to_cache", "token_stream", "TokenFileDataset", "ids_dtype"]

# Bytes read per block and the largest piece of one file kept in one row (cut after a newline).
_PIECE_BYTES = 8 * 1024 * 1024
# Text handed to the tokenizer (and rows written per record batch) at a time: bounds memory.
_GROUP_BYTES = 16 * 1024 * 1024
_GROUP_ROWS = 4096
_MAX_EXAMPLES = 20
_HASH_CHUNK = 32 * 1024 * 1024


class _Utf8Problem(Exception):
    def __init__(self, offset: int, line: int, message: str) -> None:
        super().__init__(message)
        self.offset, self.line, self.message = offset, line, message


def _pieces(path: Path) -> Iterator[str]:
    """The text of a UTF-8 file in pieces of about ``_PIECE_BYTES``, each cut after a newline when it has one.

    Raises:
        _Utf8Problem: the first invalid byte, with its byte offset in the file and its 1-based line.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    consumed = 0  # bytes of the file handed to the decoder before this block
    lines = 1  # line number at the start of the bytes the decoder still holds
    carry = ""  # text after the last newline, waiting for the rest of its line
    yielded = False
    with open(path, "rb") as fh:
        while True:
            block = fh.read(_PIECE_BYTES)
            final = not block
            pending = decoder.getstate()[0]  # bytes of a character cut by the previous block
            try:
                text = decoder.decode(block, final=final)
            except UnicodeDecodeError as exc:
                data = pending + block
                line = lines + data[: exc.start].count(b"\n")
                bad = data[exc.start : exc.start + 1]
                what = f"byte 0x{bad[0]:02x}" if bad else "end of file"
                raise _Utf8Problem(consumed - len(pending) + exc.start, line, f"{exc.reason} ({what})") from None
            consumed += len(block)
            lines += block.count(b"\n")
            text = carry + text
            if final:
                if text or not yielded:
                    yield text  # an empty file is still one (empty) document
                return
            cut = text.rfind("\n")
            if cut < 0:  # no newline in a whole block: cut anywhere rather than grow without bound
                piece, carry = text, ""
            else:
                piece, carry = text[: cut + 1], text[cut + 1 :]
            if piece:
                yielded = True
                yield piece


def _first_problem(path: Path) -> _Utf8Problem | None:
    try:
        for _ in _pieces(path):
            pass
    except _Utf8Problem as problem:
        return problem
    return None


def read_text(files: list[Path], options: ReadOptions) -> CachedTable:
    """Read UTF-8 text files (format ``text``) into the Arrow cache: one document per file.

    Columns: ``text`` (large_string) and ``document`` (int64, the document's index; a file larger
    than 8 MiB spans several rows, cut after newlines). Meta: ``format``, ``sources`` (``rows`` per
    file), ``documents``, ``bad_rows`` (files skipped) and ``bad_row_examples``.

    Args:
        files: the text files, in order (their order is the corpus order).
        options: ``cache_dir`` and ``bad_rows`` are used.

    Raises:
        DataError: a file is missing or a folder, or is not valid UTF-8 under ``bad_rows="error"``
            (the message gives the file, the byte offset and the line).

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "a.txt").write_text("one"), (d / "b.txt").write_text("two")
        >>> t = read_text([d / "a.txt", d / "b.txt"], ReadOptions(cache_dir=d / "c"))
        >>> t.table.column("text").to_pylist(), t.meta["documents"]
        (['one', 'two'], 2)
    """
    import pyarrow as pa

    paths = [Path(f) for f in files]
    for p in paths:
        if p.is_dir():
            raise DataError(
                f"the text format reads files but {p} is a folder; pass its files, e.g. a glob like {p}/*.txt"
            )
    sources = source_hashes(paths)
    key = cache_key("text", sources, {"bad_rows": options.bad_rows, "piece_bytes": _PIECE_BYTES})
    schema = pa.schema([("text", pa.large_string()), ("document", pa.int64())])

    def build(sink: Any) -> dict[str, Any]:
        texts: list[str] = []
        docs: list[int] = []
        size = 0
        documents = bad = 0
        examples: list[dict[str, Any]] = []
        out_sources = []

        def flush() -> None:
            nonlocal size
            if texts:
                sink.write(
                    pa.record_batch([pa.array(texts, pa.large_string()), pa.array(docs, pa.int64())], schema=schema)
                )
                texts.clear()
                docs.clear()
                size = 0

        for path, src in zip(paths, sources, strict=True):
            # A small file is read once; a large one is checked in a first pass (so a bad byte near
            # its end skips the whole file) and streams in a second.
            pieces: Iterator[str] | list[str] = []
            problem = _first_problem(path) if src["size"] > _PIECE_BYTES else None
            if problem is None:
                try:
                    pieces = list(_pieces(path)) if src["size"] <= _PIECE_BYTES else _pieces(path)
                except _Utf8Problem as exc:
                    problem = exc
            if problem is not None:
                if options.bad_rows == "error":
                    raise DataError(
                        f"{path}: not valid UTF-8 at byte offset {problem.offset} (line {problem.line}): "
                        f"{problem.message}; convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8), or set "
                        f"data.bad_rows: skip to leave such files out"
                    )
                bad += 1
                if len(examples) < _MAX_EXAMPLES:
                    examples.append(
                        {
                            "file": str(path),
                            "line": problem.line,
                            "problem": f"not valid UTF-8 at byte offset {problem.offset}: {problem.message}",
                        }
                    )
                out_sources.append({**src, "rows": 0})
                continue
            rows = 0
            for piece in pieces:
                texts.append(piece)
                docs.append(documents)
                rows += 1
                size += len(piece)
                if size >= _GROUP_BYTES or len(texts) >= _GROUP_ROWS:
                    flush()
            documents += 1
            out_sources.append({**src, "rows": rows})
        flush()
        return {
            "format": "text",
            "sources": out_sources,
            "documents": documents,
            "bad_rows": bad,
            "bad_row_examples": examples,
            "schema": schema,
        }

    names = ", ".join(p.name for p in paths[:3]) + (" ..." if len(paths) > 3 else "")
    return build_or_load(cache_root(options.cache_dir), key, build, describe=f"text: {names}")


def ids_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds ids ``[0, vocab_size)``.

    Example:
        >>> [str(ids_dtype(v)) for v in (256, 257, 65536, 65537)]
        ['uint8', 'uint16', 'uint16', 'uint32']
    """
    if vocab_size <= 1 << 8:
        return np.dtype(np.uint8)
    if vocab_size <= 1 << 16:
        return np.dtype(np.uint16)
    if vocab_size <= 1 << 32:
        return np.dtype(np.uint32)
    raise DataError(f"a vocabulary of {vocab_size} ids does not fit 32 bits")


def _encode(tokenizer: Tokenizer, texts: list[str]) -> list[np.ndarray]:
    fast = getattr(tokenizer, "encode_arrays", None)
    if fast is not None:
        return list(fast(texts))
    return [np.asarray(ids, dtype=np.int64) for ids in tokenizer.encode_batch(texts)]


def _text_groups(table: Any, column: str, by_document: bool) -> Iterator[tuple[list[str | None], np.ndarray]]:
    """``(texts, document ids)`` in groups of at most ``_GROUP_BYTES`` of text / ``_GROUP_ROWS`` rows."""
    import pyarrow.compute as pc

    row = 0
    for batch in table.select([column, "document"] if by_document else [column]).to_batches():
        col = batch.column(0)
        lengths = np.asarray(pc.fill_null(pc.binary_length(col), 0).to_numpy(zero_copy_only=False), dtype=np.int64)
        doc = batch.column(1).to_numpy(zero_copy_only=False) if by_document else None
        start = 0
        while start < len(batch):
            # Largest end with at most _GROUP_BYTES of text (at least one row, whatever its size).
            ends = np.cumsum(lengths[start : start + _GROUP_ROWS])
            end = start + max(1, int(np.searchsorted(ends, _GROUP_BYTES, side="right")))
            ids = doc[start:end] if doc is not None else np.arange(row + start, row + end)
            yield col.slice(start, end - start).to_pylist(), ids
            start = end
        row += len(batch)


def tokenize_to_cache(
    table: CachedTable,
    text_column: str,
    tokenizer: Tokenizer,
    cache_dir: str | os.PathLike[str] | None,
) -> CachedTable:
    """Tokenize a text column into one cached token stream (column ``ids``), documents separated by eos.

    Each row is a document (rows of a :func:`read_text` table that share a ``document`` id are one
    document); null texts count as empty; empty documents add nothing. With ``tokenizer.eos_id``
    None the documents are joined without a separator. Memory stays bounded by ``_GROUP_BYTES`` of
    text plus its ids: the ids are appended to a temporary file and written from its memory map.

    Args:
        table: a cached text table (``read_text``, or a JSONL / Parquet table with a text column).
        text_column: the column holding the text (``data.text_column``).
        tokenizer: see :func:`load_tokenizer`.
        cache_dir: the cache folder (None = the default, see ``cache_root``).

    Returns:
        The cached stream; meta has ``tokens``, ``documents``, ``dtype``, ``eos_id``, ``tokenizer``
        (its ``to_dict()``), ``text_key`` and ``null_rows``.

    Raises:
        DataError: the column does not exist or does not hold strings.

    Example:
        >>> import tempfile, pathlib, pyarrow as pa
        >>> from trainengine.data._tokenizers import ByteTokenizer
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> texts = CachedTable(pa.table({"body": ["ab", None, "c"]}), {"key": "demo"})
        >>> tokens = tokenize_to_cache(texts, "body", ByteTokenizer(), d)
        >>> token_stream(tokens).tolist(), tokens.meta["documents"]
        ([97, 98, 0, 99], 3)
    """
    import pyarrow as pa

    tbl = table.table
    if text_column not in tbl.column_names:
        raise DataError(
            f"text column {text_column!r} is not in the data (columns: {', '.join(tbl.column_names)}); "
            f"set data.text_column to one of them"
        )
    col_type = tbl.schema.field(text_column).type
    if not (pa.types.is_string(col_type) or pa.types.is_large_string(col_type)):
        raise DataError(
            f"text column {text_column!r} holds {col_type}, not text; set data.text_column to a column of strings"
        )
    text_key = table.meta.get("key")
    if not text_key:
        raise DataError("tokenize_to_cache needs a cached table (its meta has no 'key'); read it with a data reader")
    by_document = table.meta.get("format") == "text" and "document" in tbl.column_names
    dtype = ids_dtype(tokenizer.vocab_size)
    eos = tokenizer.eos_id
    root = cache_root(cache_dir)
    key = cache_key(
        "tokens", [{"sha256": text_key}], {"column": text_column, "tokenizer": tokenizer.sha256, "dtype": dtype.str}
    )
    schema = pa.schema([("ids", pa.from_numpy_dtype(dtype))])
    eos_part = np.asarray([eos if eos is not None else 0], dtype=dtype)

    def build(sink: Any) -> dict[str, Any]:
        tokens = documents = null_rows = 0
        prev_doc: int | None = None
        pending_sep = False  # a document ended since the last token: put eos before the next one
        with tempfile.NamedTemporaryFile(dir=root, prefix=".tokens-", suffix=".bin") as raw:
            for texts, doc_ids in _text_groups(tbl, text_column, by_document):
                null_rows += sum(t is None for t in texts)
                arrays = _encode(tokenizer, [t or "" for t in texts])
                parts: list[np.ndarray] = []
                for arr, doc in zip(arrays, doc_ids.tolist(), strict=True):
                    if doc != prev_doc:
                        documents += 1
                        pending_sep = pending_sep or (prev_doc is not None and tokens > 0)
                        prev_doc = doc
                    if arr.size:
                        if pending_sep and eos is not None:
                            parts.append(eos_part)
                            tokens += 1
                        pending_sep = False
                        parts.append(arr.astype(dtype, copy=False))
                        tokens += int(arr.size)
                if parts:
                    raw.write(np.concatenate(parts).tobytes())
            raw.flush()
            if tokens:
                mm = np.memmap(raw.name, dtype=dtype, mode="r", shape=(tokens,))
                try:
                    # One record batch: the column is one contiguous buffer when memory-mapped back.
                    ids = pa.Array.from_buffers(pa.from_numpy_dtype(dtype), tokens, [None, pa.py_buffer(mm)])
                    sink.write(pa.record_batch([ids], schema=schema))
                finally:
                    del mm
        return {
            "format": "tokens",
            "tokens": tokens,
            "documents": documents,
            "null_rows": null_rows,
            "dtype": dtype.name,
            "eos_id": eos,
            "tokenizer": tokenizer.to_dict(),
            "text_key": text_key,
            "text_column": text_column,
            "schema": schema,
        }

    return build_or_load(root, key, build, describe=f"tokens: {tokenizer.name} over {text_column}")


def token_stream(cached: CachedTable) -> np.ndarray:
    """The token ids of a :func:`tokenize_to_cache` entry as a read-only 1-D numpy view (no copy).

    Raises:
        DataError: the table has no ``ids`` column or is split over several buffers.

    Example:
        >>> import pyarrow as pa
        >>> token_stream(CachedTable(pa.table({"ids": pa.array([1, 2], pa.uint16())}))).dtype
        dtype('uint16')
    """
    tbl = cached.table
    if "ids" not in tbl.column_names:
        raise DataError(f"not a token cache entry (columns: {', '.join(tbl.column_names)}); use tokenize_to_cache")
    col = tbl.column("ids")
    if col.num_chunks == 0:
        return np.empty(0, dtype=col.type.to_pandas_dtype())
    if col.num_chunks != 1:
        raise DataError(
            f"the token stream {cached.path} is split into {col.num_chunks} buffers; rebuild it with tokenize_to_cache"
        )
    return col.chunk(0).to_numpy(zero_copy_only=True)


class TokenFileDataset(Dataset):
    """Next-token windows ``(input_ids[T], labels[T])`` over a (memory-mapped) 1-D token stream.

    The same samples as :meth:`TokenWindowDataset.from_stream` for the same stream: window ``i``
    is ``stream[i*T : i*T + T + 1]`` (stride ``T``), inputs are its first ``T`` tokens and labels
    its last ``T``, both fresh int64 tensors. Unlike it, the stream stays a numpy view of the
    cache file: fetching gathers only the requested windows (one fancy-index per batch).

    Args:
        stream: 1-D unsigned/signed integer array (a :func:`token_stream` view or any array).
        seq_len: T, tokens per sample.
        max_windows: keep only the first this many windows.
        tokenizer: the tokenizer the ids came from (kept as ``.tokenizer``; not used to fetch).

    Raises:
        DataError: not 1-D integers, ``seq_len < 1``, or a stream too short for one window.

    Example:
        >>> ds = TokenFileDataset(np.arange(9, dtype=np.uint8), seq_len=4)
        >>> len(ds), ds[1][0].tolist(), ds[1][1].tolist()
        (2, [4, 5, 6, 7], [5, 6, 7, 8])
    """

    def __init__(
        self,
        stream: np.ndarray,
        seq_len: int,
        *,
        max_windows: int | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> None:
        if not isinstance(stream, np.ndarray) or stream.ndim != 1 or stream.dtype.kind not in "iu":
            what = f"{stream.dtype} array of shape {stream.shape}" if isinstance(stream, np.ndarray) else type(stream)
            raise DataError(f"a token stream must be a 1-D integer numpy array; got {what}")
        if seq_len < 1:
            raise DataError(f"seq_len must be >= 1; got {seq_len}")
        n = (int(stream.size) - 1) // seq_len
        if max_windows is not None:
            n = min(n, max_windows)
        if n < 1:
            raise DataError(
                f"a token stream of {stream.size} tokens is too short for one sample of seq_len={seq_len} "
                f"(needs {seq_len + 1}); use more data or a smaller max_length"
            )
        self.seq_len = seq_len
        self.tokenizer = tokenizer
        self._source: dict[str, Any] | None = None  # set by from_cache: how workers reopen the map
        self._fingerprint: str | None = None
        self._set_stream(stream[: n * seq_len + 1], n)

    def _set_stream(self, stream: np.ndarray, n: int) -> None:
        self.stream = stream  # (n*T + 1,)
        t = self.seq_len
        # (n, T+1) read-only view: row i starts at token i*T (windows share their boundary token).
        self.windows = np.lib.stride_tricks.as_strided(
            stream, shape=(n, t + 1), strides=(t * stream.strides[0], stream.strides[0]), writeable=False
        )

    @classmethod
    def from_stream(
        cls,
        stream: np.ndarray,
        seq_len: int,
        *,
        max_windows: int | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> TokenFileDataset:
        """Same as the constructor (the name :meth:`TokenWindowDataset.from_stream` has)."""
        return cls(stream, seq_len, max_windows=max_windows, tokenizer=tokenizer)

    @classmethod
    def from_cache(
        cls,
        cached: CachedTable,
        seq_len: int,
        *,
        start: int = 0,
        stop: int | None = None,
        max_windows: int | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> TokenFileDataset:
        """Windows over tokens ``[start, stop)`` of a :func:`tokenize_to_cache` entry.

        ``start`` / ``stop`` hold out a validation part of one stream without copying it
        (``stop=cut`` for train, ``start=cut`` for val). The fingerprint is derived from the entry's
        key (content hashes of the files and the tokenizer) and the span, without reading the stream.
        """
        stream = token_stream(cached)
        total = int(stream.size)
        stop = total if stop is None else min(stop, total)
        if not 0 <= start <= stop:
            raise DataError(f"token span [{start}, {stop}) is not inside the stream of {total} tokens")
        ds = cls(stream[start:stop], seq_len, max_windows=max_windows, tokenizer=tokenizer)
        ds._source = {
            "path": str(cached.path) if cached.path else None,
            "key": cached.meta.get("key"),
            "start": start,
            "stop": stop,
        }
        return ds

    def __len__(self) -> int:
        return int(self.windows.shape[0])

    def _rows(self, indices: Sequence[int] | np.ndarray | Tensor) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            bad = int(idx[(idx < -n) | (idx >= n)][0])
            raise IndexError(f"window index {bad} is out of range for {n} windows")
        return idx

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        w = self.windows[self._rows([index])[0]].astype(np.int64)  # (T+1,) fresh copy
        return torch.from_numpy(w[:-1].copy()), torch.from_numpy(w[1:].copy())

    def __getitems__(self, indices: Sequence[int]) -> PreCollatedBatch:
        w = self.windows[self._rows(indices)]  # (B, T+1): gathers only these windows from the map
        x = np.ascontiguousarray(w[:, :-1], dtype=np.int64)  # (B, T)
        y = np.ascontiguousarray(w[:, 1:], dtype=np.int64)  # (B, T)
        return PreCollatedBatch([torch.from_numpy(x), torch.from_numpy(y)])

    @property
    def data_fingerprint(self) -> str:
        """sha256 hex of the samples.

        From a cache entry: over its key (files' content hashes + tokenizer hash), the token span,
        ``seq_len`` and the window count, without reading the stream. From a bare array: the digest
        ``fingerprint_dataset`` gives ``TokenWindowDataset.from_stream`` of the same tokens (the
        stream is hashed in 32 MiB chunks).
        """
        if self._fingerprint is None:
            n, t = len(self), self.seq_len
            src = self._source
            if src is not None and src.get("key"):
                text = f"trainengine.tokenfile.v1|{src['key']}|{src['start']}|{src['stop']}|{t}|{n}"
                self._fingerprint = hashlib.sha256(text.encode()).hexdigest()
            else:
                h = hashlib.sha256(_MAGIC)
                torch_dtype = torch.from_numpy(np.empty(0, dtype=self.stream.dtype)).dtype
                h.update(f"{n}|W{t}|{torch_dtype}|".encode())
                step = max(1, _HASH_CHUNK // self.stream.dtype.itemsize)
                for s in range(0, self.stream.size, step):
                    h.update(np.ascontiguousarray(self.stream[s : s + step]).tobytes())
                self._fingerprint = h.hexdigest()
        return self._fingerprint

    def __getstate__(self) -> dict[str, Any]:
        # Spawned DataLoader workers: send where the stream lives, not the (possibly huge) stream.
        state = dict(self.__dict__)
        if self._source is not None and self._source.get("path"):
            state["stream"] = None
            state["windows"] = None
            state["_n"] = len(self)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        n = state.pop("_n", None)
        self.__dict__.update(state)
        if n is not None:
            import pyarrow as pa

            src = self._source or {}
            table = pa.ipc.open_file(pa.memory_map(src["path"], "r")).read_all()
            stream = token_stream(CachedTable(table, path=Path(src["path"])))[src["start"] : src["stop"]]
            self._set_stream(stream[: n * self.seq_len + 1], n)

    def __repr__(self) -> str:
        return f"TokenFileDataset(n={len(self)}, seq_len={self.seq_len}, dtype={self.stream.dtype})"
