"""Tokenizers named by data.tokenizer: the byte-level one and real Hugging Face ones built by the test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer as HFLibTokenizer
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

from trainengine.data._tokenizers import ByteTokenizer, HFTokenizer, Tokenizer, load_tokenizer
from trainengine.errors import DataError

CORPUS = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog", "héllo wörld"]


def make_bpe(folder: Path) -> Path:
    """Train a tiny byte-level BPE with <|endoftext|> and save it as save_pretrained would (folder/tokenizer.json)."""
    tok = HFLibTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    return folder


def make_wordlevel_with_extras(path: Path) -> HFLibTokenizer:
    """A BERT-like word tokenizer whose file enables padding, truncation and a [CLS] $A [SEP] template."""
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "the": 4, "cat": 5, "sat": 6}
    tok = HFLibTokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok.enable_padding(length=10, pad_id=0, pad_token="[PAD]")
    tok.enable_truncation(max_length=2)
    tok.save(str(path))
    return tok


def test_hf_tokenizer_from_folder_round_trips_and_finds_eos(tmp_path):
    folder = make_bpe(tmp_path / "bpe")
    lib = HFLibTokenizer.from_file(str(folder / "tokenizer.json"))
    tok = load_tokenizer(str(folder))
    assert isinstance(tok, HFTokenizer) and isinstance(tok, Tokenizer)
    assert tok.vocab_size == lib.get_vocab_size() > 256
    assert tok.eos_id == lib.token_to_id("<|endoftext|>")
    ids = tok.encode_batch(["the cat sat", "héllo"])
    assert ids == [lib.encode("the cat sat").ids, lib.encode("héllo").ids]
    assert len(ids[0]) < len("the cat sat")  # merges were learned: fewer ids than bytes
    assert tok.decode(ids[1]) == "héllo"
    d = tok.to_dict()
    assert d["kind"] == "hf" and d["file"] == "tokenizer.json" and d["vocab_size"] == tok.vocab_size


def test_hf_tokenizer_ignores_padding_truncation_and_template(tmp_path):
    path = tmp_path / "wl.json"
    make_wordlevel_with_extras(path)
    tok = load_tokenizer(path)  # a tokenizer.json path works as well as its folder
    # Raw ids only: no [CLS]/[SEP] from the template, no [PAD] padding, no truncation to 2.
    assert tok.encode_batch(["the cat sat the"]) == [[4, 5, 6, 4]]
    assert tok.eos_id == 3  # no </s> / <|endoftext|>: [SEP] is the first candidate present


def test_save_and_reload_keep_the_content_hash(tmp_path):
    tok = load_tokenizer(make_bpe(tmp_path / "bpe"))
    saved = tok.save(tmp_path / "ckpt")
    assert saved == tmp_path / "ckpt" / "tokenizer.json"
    again = load_tokenizer(tmp_path / "ckpt")
    assert again.sha256 == tok.sha256
    assert again.encode_batch(CORPUS) == tok.encode_batch(CORPUS)
    make_wordlevel_with_extras(tmp_path / "x.json")
    other = load_tokenizer(tmp_path / "x.json")
    assert other.sha256 != tok.sha256


def test_byte_tokenizer_save_reload_and_ids(tmp_path):
    tok = load_tokenizer("BYTE")
    assert isinstance(tok, ByteTokenizer) and isinstance(tok, Tokenizer)
    assert tok.encode_batch(["é\x00"]) == [[0xC3, 0xA9, 0]]
    assert tok.decode([0xC3, 0xA9]) == "é"
    assert tok.decode([0xC3]) == "\ufffd"  # a cut character does not raise
    path = tok.save(tmp_path / "ckpt")
    assert json.loads(path.read_text())["kind"] == "byte"
    again = load_tokenizer(tmp_path / "ckpt")
    assert isinstance(again, ByteTokenizer) and again.sha256 == tok.sha256
    with pytest.raises(DataError, match=r"\[0, 256\).*300"):
        tok.decode([300])


def test_relative_path_is_resolved_against_base_dir(tmp_path):
    make_bpe(tmp_path / "configs" / "tok")
    tok = load_tokenizer("tok", base_dir=tmp_path / "configs")
    assert isinstance(tok, HFTokenizer) and tok.path == tmp_path / "configs" / "tok" / "tokenizer.json"


def test_missing_path_says_what_was_looked_for(tmp_path):
    with pytest.raises(DataError) as err:
        load_tokenizer(tmp_path / "nope")
    msg = str(err.value)
    assert str(tmp_path / "nope") in msg and "'byte'" in msg and "tokenizer.json" in msg


def test_folder_without_tokenizer_json_lists_its_files(tmp_path):
    folder = tmp_path / "slow"
    folder.mkdir()
    (folder / "vocab.txt").write_text("a\nb\n")
    (folder / "spiece.model").write_bytes(b"\x00")
    with pytest.raises(DataError) as err:
        load_tokenizer(folder)
    msg = str(err.value)
    assert "no tokenizer.json" in msg and "spiece.model, vocab.txt" in msg and "use_fast=True" in msg


def test_malformed_tokenizer_file_names_the_file(tmp_path):
    bad = tmp_path / "tok" / "tokenizer.json"
    bad.parent.mkdir()
    bad.write_text('{"not": "a tokenizer"}')
    with pytest.raises(DataError, match=r"tok/tokenizer\.json is not a Hugging Face tokenizer file"):
        load_tokenizer(bad.parent)
