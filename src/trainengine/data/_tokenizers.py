"""Text tokenizers for language modeling on files: the built-in byte-level one and Hugging Face ones.

A tokenizer is named in the config (``data.tokenizer``): ``byte`` (UTF-8 bytes, vocabulary 256, the
same ids the built-in ``pystdlib`` corpus uses) or the path of a local Hugging Face tokenizer folder
(as ``save_pretrained`` writes it) or of its ``tokenizer.json``, read with the ``tokenizers``
library (``pip install "trainengine[data]"``). Whatever it is, it is saved with checkpoints and
export bundles (:meth:`Tokenizer.save`) and reloaded with :func:`load_tokenizer` from that folder.

Example:
    >>> tok = load_tokenizer("byte")
    >>> tok.encode_batch(["hé"]), tok.decode([104, 195, 169]), tok.vocab_size, tok.eos_id
    ([[104, 195, 169]], 'hé', 256, 0)
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from trainengine._io import atomic_write_json
from trainengine.errors import DataError

__all__ = ["Tokenizer", "ByteTokenizer", "HFTokenizer", "load_tokenizer", "EOS_CANDIDATES"]

#: Special tokens taken as the end-of-document separator, in this order (first one in the vocabulary wins).
EOS_CANDIDATES = ("</s>", "<|endoftext|>", "[SEP]", "<eos>")
_HF_FILE = "tokenizer.json"
_BYTE_FILE = "tokenizer_config.json"
_INSTALL = 'pip install "trainengine[data]"'


@runtime_checkable
class Tokenizer(Protocol):
    """What the text pipeline needs from a tokenizer (:class:`ByteTokenizer`, :class:`HFTokenizer`)."""

    name: str
    """Short human name (``"byte"``, or the tokenizer's folder / file)."""
    vocab_size: int
    """Number of ids; every id is in ``[0, vocab_size)`` (the model's vocabulary must be at least this)."""
    eos_id: int | None
    """Id put between documents of a corpus; None when the tokenizer has none."""

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text (no special tokens added)."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of a sequence of ids."""
        ...

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write what :func:`load_tokenizer` needs into ``folder``; returns the file written."""
        ...

    @property
    def sha256(self) -> str:
        """Content hash (part of the token cache key: another tokenizer means other ids)."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """``{"kind", "name", "vocab_size", "eos_id", "file"}`` for run records and bundles."""
        ...


class ByteTokenizer:
    """UTF-8 bytes as tokens: vocabulary 256, no unknown tokens, ``eos_id`` 0 (the NUL byte).

    NUL as the separator matches the built-in ``pystdlib`` corpus; text that contains NUL bytes
    itself is therefore ambiguous at document boundaries (text files rarely do).

    Example:
        >>> tok = ByteTokenizer()
        >>> tok.encode_batch(["ab", ""])
        [[97, 98], []]
    """

    name = "byte"
    vocab_size = 256
    eos_id: int | None = 0

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """UTF-8 bytes of each text as a list of ints."""
        return [list(t.encode("utf-8")) for t in texts]

    def encode_arrays(self, texts: list[str]) -> list[np.ndarray]:
        """Like :meth:`encode_batch` as uint8 arrays: no Python int per byte (the tokenization hot path)."""
        return [np.frombuffer(t.encode("utf-8"), dtype=np.uint8) for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of byte ids; invalid UTF-8 (a cut multi-byte character) becomes U+FFFD.

        Raises:
            DataError: an id outside ``[0, 256)``.
        """
        values = list(ids)
        bad = [i for i in values if not 0 <= int(i) < 256]
        if bad:
            raise DataError(f"byte tokenizer ids must be in [0, 256); got {bad[0]}")
        return bytes(int(i) for i in values).decode("utf-8", errors="replace")

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``tokenizer_config.json`` (``{"kind": "byte"}``) into ``folder``."""
        path = Path(folder) / _BYTE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {"kind": "byte", "vocab_size": 256, "eos_id": 0})
        return path

    @property
    def sha256(self) -> str:
        """A constant: the byte tokenizer has no parameters."""
        return hashlib.sha256(b"trainengine.tokenizer.byte.v1").hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": "byte", "name": "byte", "vocab_size": 256, "eos_id": 0, "file": "tokenizer_config.json"}``."""
        return {"kind": "byte", "name": self.name, "vocab_size": 256, "eos_id": self.eos_id, "file": _BYTE_FILE}

    def __repr__(self) -> str:
        return "ByteTokenizer(vocab_size=256, eos_id=0)"


def _import_tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError:
        raise DataError(
            f"a Hugging Face tokenizer (data.tokenizer) needs the 'tokenizers' package, which is not "
            f"installed; run: {_INSTALL} (or use data.tokenizer: byte)"
        ) from None
    return tokenizers


class HFTokenizer:
    """A Hugging Face ``tokenizers`` tokenizer read from a ``tokenizer.json`` file.

    Padding and truncation stored in the file are switched off (a corpus is one long stream, not
    padded rows), and no special tokens are added when encoding; documents are separated by
    :attr:`eos_id`, the first of :data:`EOS_CANDIDATES` in the vocabulary.

    Args:
        path: the ``tokenizer.json`` file.

    Raises:
        DataError: ``tokenizers`` is not installed, or the file is not a tokenizer.

    Example:
        >>> tok = HFTokenizer("tokenizer.json")  # doctest: +SKIP
        >>> tok.decode(tok.encode_batch(["hello world"])[0])  # doctest: +SKIP
        'hello world'
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        tokenizers = _import_tokenizers()
        self.path = Path(path)
        try:
            # Kept in memory (a few MB at most): saving into checkpoints and bundles must not
            # depend on the original file still being there.
            self._raw = self.path.read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read the tokenizer file {self.path}: {exc.strerror or exc}") from None
        try:
            self._tok = tokenizers.Tokenizer.from_str(self._raw.decode("utf-8"))
        except Exception as exc:  # noqa: BLE001  (tokenizers raises a bare Exception for a malformed file)
            raise DataError(
                f"{self.path} is not a Hugging Face tokenizer file ({exc}); point data.tokenizer at a folder "
                f"holding the tokenizer.json that save_pretrained writes, or use data.tokenizer: byte"
            ) from None
        self._tok.no_padding()
        self._tok.no_truncation()
        self.name = self.path.parent.name if self.path.name == _HF_FILE else self.path.name
        self.vocab_size: int = int(self._tok.get_vocab_size(with_added_tokens=True))
        self.eos_id: int | None = None
        for token in EOS_CANDIDATES:
            tid = self._tok.token_to_id(token)
            if tid is not None:
                self.eos_id = int(tid)
                break
        self._sha256: str | None = None

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Ids of each text, without special tokens (a post-processor's ``[CLS] ... [SEP]`` is not added)."""
        return [list(e.ids) for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def encode_arrays(self, texts: list[str]) -> list[np.ndarray]:
        """Like :meth:`encode_batch` as int64 arrays."""
        return [np.asarray(e.ids, dtype=np.int64) for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` (special tokens are skipped, as Hugging Face's ``decode`` does by default)."""
        return str(self._tok.decode([int(i) for i in ids], skip_special_tokens=True))

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Copy the original ``tokenizer.json`` (byte for byte, so :attr:`sha256` stays) into ``folder``."""
        dest = Path(folder) / _HF_FILE
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp")
        tmp.write_bytes(self._raw)
        os.replace(tmp, dest)
        return dest

    def to_json(self) -> str:
        """The ``tokenizer.json`` text, as read (stored in checkpoint metadata for export)."""
        return self._raw.decode("utf-8")

    @property
    def sha256(self) -> str:
        """sha256 of the ``tokenizer.json`` bytes."""
        if self._sha256 is None:
            self._sha256 = hashlib.sha256(self._raw).hexdigest()
        return self._sha256

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": "hf", "name", "vocab_size", "eos_id", "file": "tokenizer.json", "sha256"}``."""
        return {
            "kind": "hf",
            "name": self.name,
            "vocab_size": self.vocab_size,
            "eos_id": self.eos_id,
            "file": _HF_FILE,
            "sha256": self.sha256,
        }

    def __repr__(self) -> str:
        return f"HFTokenizer({str(self.path)!r}, vocab_size={self.vocab_size}, eos_id={self.eos_id})"


def load_tokenizer(spec: str | os.PathLike[str], *, base_dir: str | os.PathLike[str] | None = None) -> Tokenizer:
    """The tokenizer ``data.tokenizer`` names: ``"byte"``, a folder or a ``tokenizer.json`` path.

    A folder may hold ``tokenizer.json`` (Hugging Face, as ``save_pretrained`` writes it) or
    ``tokenizer_config.json`` with ``{"kind": "byte"}`` (what :meth:`ByteTokenizer.save` writes), so
    a tokenizer saved with a checkpoint reloads from the checkpoint folder.

    Args:
        spec: ``"byte"`` or a path (``~`` expanded).
        base_dir: folder a relative path is resolved against (e.g. the config file's folder);
            None = the current directory.

    Raises:
        DataError: the path does not exist, the folder holds no tokenizer file (the message says
            what was looked for and what is there), or ``tokenizers`` is not installed.

    Example:
        >>> load_tokenizer("byte").vocab_size
        256
    """
    text = str(spec)
    if text.strip().lower() == "byte":
        return ByteTokenizer()
    path = Path(text).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if path.is_dir():
        hf, byte = path / _HF_FILE, path / _BYTE_FILE
        if hf.is_file():
            return HFTokenizer(hf)
        if byte.is_file() and _is_byte_config(byte):
            return ByteTokenizer()
        found = sorted(p.name for p in path.iterdir())[:10]
        raise DataError(
            f"tokenizer folder {path} holds no {_HF_FILE} (found: {', '.join(found) or 'nothing'}); a Hugging "
            f"Face tokenizer folder written by save_pretrained with a fast tokenizer has one (for a slow, "
            f"sentencepiece-only tokenizer save it with transformers' AutoTokenizer(..., use_fast=True) "
            f"first), or use data.tokenizer: byte"
        )
    if path.is_file():
        if path.name == _BYTE_FILE and _is_byte_config(path):
            return ByteTokenizer()
        return HFTokenizer(path)
    raise DataError(
        f"tokenizer {text!r}: no such file or folder (looked at {path.absolute()}); data.tokenizer takes 'byte' "
        f"or the path of a local folder holding {_HF_FILE} (hub names are not downloaded)"
    )


def _is_byte_config(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("kind") == "byte"
    except (OSError, ValueError, AttributeError):
        return False
