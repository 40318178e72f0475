"""Text files -> Arrow cache -> memory-mapped token stream -> next-token windows."""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pytest
import torch
from tokenizers import Tokenizer as HFLibTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from trainengine.data import TokenWindowDataset, _text, build_dataloader, fingerprint_dataset
from trainengine.data._cache import build_or_load
from trainengine.data._text import TokenFileDataset, read_text, token_stream, tokenize_to_cache
from trainengine.data._tokenizers import ByteTokenizer, load_tokenizer
from trainengine.data._types import ReadOptions
from trainengine.errors import DataError

CORPUS = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog", "héllo wörld"]


def make_bpe(folder):
    """A tiny byte-level BPE with <|endoftext|> saved as folder/tokenizer.json (vocabulary > 256 ids)."""
    tok = HFLibTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok.train_from_iterator(
        CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=alphabet)
    )
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    return folder


def opts(tmp_path, **kw):
    return ReadOptions(cache_dir=tmp_path / "cache", **kw)


def write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_read_text_one_document_per_file_and_cache_reuse(tmp_path):
    a = write(tmp_path / "a.txt", "first\nfile é\n".encode())
    b = write(tmp_path / "b.txt", b"second")
    t = read_text([a, b], opts(tmp_path))
    assert t.table.column("text").to_pylist() == ["first\nfile é\n", "second"]
    assert t.table.column("document").to_pylist() == [0, 1]
    assert t.meta["format"] == "text" and t.meta["documents"] == 2 and t.meta["bad_rows"] == 0
    assert [s["rows"] for s in t.meta["sources"]] == [1, 1]
    assert read_text([a, b], opts(tmp_path)).meta["key"] == t.meta["key"]
    write(b, b"changed")
    assert read_text([a, b], opts(tmp_path)).meta["key"] != t.meta["key"]


def test_invalid_utf8_names_file_offset_and_line(tmp_path):
    bad = write(tmp_path / "latin.txt", b"ok\nline two\ncaf\xe9\n")
    with pytest.raises(DataError) as err:
        read_text([bad], opts(tmp_path))
    msg = str(err.value)
    offset = len(b"ok\nline two\ncaf")  # 0-based offset of the bad byte
    assert "latin.txt" in msg and f"byte offset {offset}" in msg and "(line 3)" in msg and "0xe9" in msg
    assert "data.bad_rows: skip" in msg


def test_invalid_utf8_skip_mode_drops_the_file_and_counts_it(tmp_path):
    good = write(tmp_path / "good.txt", b"fine")
    bad = write(tmp_path / "bad.txt", b"\xff\xfe")
    t = read_text([bad, good], opts(tmp_path, bad_rows="skip"))
    assert t.table.column("text").to_pylist() == ["fine"]
    assert t.meta["bad_rows"] == 1 and t.meta["documents"] == 1
    assert [s["rows"] for s in t.meta["sources"]] == [0, 1]
    assert t.meta["bad_row_examples"][0]["file"].endswith("bad.txt")


def test_large_files_stream_in_pieces_cut_after_newlines(tmp_path, monkeypatch):
    monkeypatch.setattr(_text, "_PIECE_BYTES", 16)  # stand-in for 8 MiB: several blocks per file
    text = "".join(f"line {i} é€\n" for i in range(20))  # multi-byte characters fall across block edges
    big = write(tmp_path / "big.txt", text.encode())
    small = write(tmp_path / "small.txt", b"tail")
    t = read_text([big, small], opts(tmp_path))
    pieces = t.table.column("text").to_pylist()
    docs = t.table.column("document").to_pylist()
    assert "".join(pieces[:-1]) == text and pieces[-1] == "tail"
    assert len(pieces) > 3 and all(p.endswith("\n") for p in pieces[:-1])
    assert docs == [0] * (len(pieces) - 1) + [1]
    # An error deep in a large file: exact byte offset and line, and nothing of the file is kept.
    raw = text.encode()
    broken = write(tmp_path / "broken.txt", raw + b"x\x80")
    with pytest.raises(DataError, match=rf"byte offset {len(raw) + 1} \(line 21\)"):
        read_text([broken], opts(tmp_path))
    skipped = read_text([broken, small], opts(tmp_path, bad_rows="skip"))
    assert skipped.table.column("text").to_pylist() == ["tail"]


def test_byte_tokens_are_the_utf8_bytes_with_eos_between_documents(tmp_path, monkeypatch):
    monkeypatch.setattr(_text, "_PIECE_BYTES", 8)
    docs = ["héllo\nworld\n" * 3, "", "second doc"]
    files = [write(tmp_path / f"{i}.txt", d.encode()) for i, d in enumerate(docs)]
    tokens = tokenize_to_cache(read_text(files, opts(tmp_path)), "text", ByteTokenizer(), tmp_path / "cache")
    stream = token_stream(tokens)
    expected = docs[0].encode() + b"\x00" + docs[2].encode()  # the empty file adds no second separator
    assert stream.dtype == np.uint8 and stream.tobytes() == expected
    assert tokens.meta["tokens"] == len(expected) and tokens.meta["documents"] == 3


def test_hf_tokens_match_the_library_and_use_uint16(tmp_path):
    tok_dir = make_bpe(tmp_path / "bpe")
    lib = HFLibTokenizer.from_file(str(tok_dir / "tokenizer.json"))
    files = [write(tmp_path / f"{i}.txt", d.encode()) for i, d in enumerate(CORPUS)]
    tokens = tokenize_to_cache(read_text(files, opts(tmp_path)), "text", load_tokenizer(tok_dir), tmp_path / "cache")
    eos = lib.token_to_id("<|endoftext|>")
    expected: list[int] = []
    for i, doc in enumerate(CORPUS):
        expected += ([eos] if i else []) + lib.encode(doc).ids
    stream = token_stream(tokens)
    assert stream.dtype == np.uint16 and stream.tolist() == expected
    assert tokens.meta["tokenizer"]["kind"] == "hf" and tokens.meta["eos_id"] == eos


def test_text_column_of_any_table_rows_are_documents_nulls_count(tmp_path):
    table = build_or_load(
        tmp_path / "cache", "jsonl-like", lambda sink: sink.write(pa.table({"body": ["ab", None, "c"], "n": [1, 2, 3]}))
    )
    tokens = tokenize_to_cache(table, "body", ByteTokenizer(), tmp_path / "cache")
    assert token_stream(tokens).tolist() == [97, 98, 0, 99] and tokens.meta["null_rows"] == 1
    with pytest.raises(DataError, match=r"'text' is not in the data \(columns: body, n\).*data.text_column"):
        tokenize_to_cache(table, "text", ByteTokenizer(), tmp_path / "cache")
    with pytest.raises(DataError, match=r"'n' holds int64, not text"):
        tokenize_to_cache(table, "n", ByteTokenizer(), tmp_path / "cache")


def test_token_stream_is_a_view_of_the_memory_mapped_file(tmp_path):
    f = write(tmp_path / "a.txt", b"abcdefgh" * 100)
    tokens = tokenize_to_cache(read_text([f], opts(tmp_path)), "text", ByteTokenizer(), tmp_path / "cache")
    stream = token_stream(tokens)
    assert not stream.flags.writeable and not stream.flags.owndata
    # Overwrite the first token's byte in the cache file: the array sees it, so it maps the file (no copy).
    raw = tokens.path.read_bytes()
    at = raw.find(b"abcdefgh" * 100)
    with open(tokens.path, "r+b") as fh:
        fh.seek(at)
        fh.write(b"Z")
    assert stream[0] == ord("Z")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_windows_equal_token_window_dataset(dtype):
    rng = np.random.default_rng(0)
    stream = rng.integers(0, np.iinfo(dtype).max, size=1003).astype(dtype)
    stream.flags.writeable = False  # as a memory-mapped view is
    for seq_len, cap in ((16, None), (7, 50), (1002, None)):
        ours = TokenFileDataset.from_stream(stream, seq_len, max_windows=cap)
        ref = TokenWindowDataset.from_stream(torch.from_numpy(stream.astype(np.int64)), seq_len, max_windows=cap)
        assert len(ours) == len(ref)
        for i in (0, len(ref) // 2, len(ref) - 1, -1):
            for a, b in zip(ours[i], ref[i], strict=True):
                assert a.dtype == b.dtype == torch.int64 and torch.equal(a, b)
        kw = {"batch_size": 8, "shuffle": True, "seed": 3}
        for (xa, ya), (xb, yb) in zip(build_dataloader(ours, **kw), build_dataloader(ref, **kw), strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb) and xa.is_contiguous() and ya.is_contiguous()
        # Same content, same fingerprint as the in-memory dataset of the same tokens and dtype.
        same = TokenWindowDataset.from_stream(torch.from_numpy(stream.copy()), seq_len, max_windows=cap)
        assert ours.data_fingerprint == fingerprint_dataset(same)
    with pytest.raises(IndexError, match="window index 62"):
        TokenFileDataset(stream, 16).__getitems__([0, 62])
    with pytest.raises(DataError, match="too short for one sample of seq_len=1003"):
        TokenFileDataset(stream, 1003)


def test_cached_dataset_spans_fingerprints_and_pickling(tmp_path):
    f = write(tmp_path / "a.txt", bytes(range(32, 127)) * 50)
    tokens = tokenize_to_cache(read_text([f], opts(tmp_path)), "text", ByteTokenizer(), tmp_path / "cache")
    full = token_stream(tokens)
    cut = int(len(full) * 0.9)
    train = TokenFileDataset.from_cache(tokens, 32, stop=cut, tokenizer=ByteTokenizer())
    val = TokenFileDataset.from_cache(tokens, 32, start=cut)
    assert np.array_equal(val.stream, full[cut : cut + len(val) * 32 + 1]) and np.shares_memory(val.stream, full)
    assert torch.equal(val[0][0], torch.from_numpy(full[cut : cut + 32].astype(np.int64)))
    assert train.data_fingerprint != val.data_fingerprint
    assert train.data_fingerprint == TokenFileDataset.from_cache(tokens, 32, stop=cut).data_fingerprint
    assert train.data_fingerprint != TokenFileDataset.from_cache(tokens, 16, stop=cut).data_fingerprint
    # Spawned workers get the file's location, not the tokens.
    blob = pickle.dumps(train)
    assert len(blob) < full.nbytes / 2
    back = pickle.loads(blob)
    assert len(back) == len(train) and isinstance(back.tokenizer, ByteTokenizer)
    xa, ya = back.__getitems__([0, len(train) - 1]).collated
    xb, yb = train.__getitems__([0, len(train) - 1]).collated
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
