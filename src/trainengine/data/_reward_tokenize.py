"""Tokenizers and step encoding for reasoning-step data (process reward models).

Which tokenizer (:func:`build_step_tokenizer`), first match wins:

1. ``data.tokenizer`` is a path: that Hugging Face tokenizer folder / ``tokenizer.json``.
2. ``model.name_or_path`` names a backbone whose tokenizer is available locally (a folder with
   tokenizer files, or a hub id already in the local Hugging Face cache): the backbone's own
   tokenizer, loaded with transformers' ``AutoTokenizer`` (``local_files_only=True``; nothing is
   downloaded). A pretrained backbone only makes sense with its own token ids, so this wins over
   ``byte`` / ``bpe``.
3. ``data.tokenizer: bpe`` (or ``bpe:<vocabulary size>``, default 8000): a byte-level BPE trained
   with the ``tokenizers`` library on the training split's texts (problems, steps, separator).
4. ``data.tokenizer: byte`` (the default): UTF-8 bytes, vocabulary 256; the NUL byte (id 0) pads.

The choice is recorded in ``DatasetInfo.extra["tokenizer"]`` (:meth:`StepTokenizer.to_dict`:
``kind``, ``name``, ``vocab_size``, ``source`` = file | backbone | bpe | byte, ``pad_id``,
``prefix_ids``).

Encoding of one example (:func:`assemble`): the tokenizer's prefix (a backbone's BOS), the problem,
the separator, then every step followed by the separator. A step is scored at its separator's last
token (``step_positions``).

Example:
    >>> tok = build_step_tokenizer("byte")
    >>> enc = encode_steps(tok, "Q", ["a", "bc"], separator="\\n", max_length=16, max_steps=10)
    >>> enc.input_ids.tolist(), enc.step_positions.tolist()
    ([81, 10, 97, 10, 98, 99, 10], [3, 6])
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainengine._io import atomic_write_json
from trainengine.data._tokenizers import ByteTokenizer, HFTokenizer, Tokenizer, load_tokenizer
from trainengine.errors import DataError

__all__ = [
    "StepTokenizer",
    "EncodedSteps",
    "build_step_tokenizer",
    "load_step_tokenizer",
    "train_bpe",
    "assemble",
    "encode_steps",
    "DEFAULT_BPE_VOCAB",
]

#: Vocabulary size of ``data.tokenizer: bpe`` without an explicit ``bpe:<N>``.
DEFAULT_BPE_VOCAB = 8000
_PAD_CANDIDATES = ("[PAD]", "<pad>", "<|pad|>")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json", "spiece.model")
_META_FILE = "reward_tokenizer.json"


class _AutoTokenizer:
    """A transformers tokenizer (``AutoTokenizer``) behind the :class:`Tokenizer` protocol."""

    def __init__(self, tok: Any, name: str) -> None:
        self._tok = tok
        self.name = name
        self.vocab_size: int = len(tok)
        eos = getattr(tok, "eos_token_id", None)
        self.eos_id: int | None = int(eos) if eos is not None else None
        self._sha256: str | None = None

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Ids of each text without special tokens."""
        if not texts:
            return []
        return [list(map(int, ids)) for ids in self._tok(texts, add_special_tokens=False)["input_ids"]]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` (special tokens skipped)."""
        return str(self._tok.decode([int(i) for i in ids], skip_special_tokens=True))

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """``save_pretrained`` into ``folder``; returns its ``tokenizer.json`` (or ``tokenizer_config.json``)."""
        Path(folder).mkdir(parents=True, exist_ok=True)
        self._tok.save_pretrained(str(folder))
        fast = Path(folder) / "tokenizer.json"
        return fast if fast.is_file() else Path(folder) / "tokenizer_config.json"

    def to_json(self) -> str | None:
        """The fast tokenizer's ``tokenizer.json`` text (what export and serving load), else None."""
        backend = getattr(self._tok, "backend_tokenizer", None)
        return str(backend.to_str()) if backend is not None else None

    @property
    def sha256(self) -> str:
        """sha256 of the ``tokenizer.json`` text (or of the name and vocabulary for a slow tokenizer)."""
        if self._sha256 is None:
            text = self.to_json()
            if text is None:
                text = json.dumps(sorted(self._tok.get_vocab().items()))
            self._sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return self._sha256

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": "hf", "name", "vocab_size", "eos_id", "file": "tokenizer.json", "sha256"}``."""
        return {
            "kind": "hf",
            "name": self.name,
            "vocab_size": self.vocab_size,
            "eos_id": self.eos_id,
            "file": "tokenizer.json",
            "sha256": self.sha256,
        }


class StepTokenizer:
    """A tokenizer plus what step encoding needs: the pad id and the prefix ids.

    Args:
        base: the tokenizer (:class:`ByteTokenizer`, :class:`HFTokenizer` or a backbone's).
        source: how it was chosen: ``"byte"``, ``"bpe"``, ``"file"`` or ``"backbone"``.
        pad_id: id used to pad batches (masked out by ``attention_mask``).
        prefix_ids: ids put before every example (a backbone's BOS), usually empty.

    Example:
        >>> tok = StepTokenizer(ByteTokenizer(), source="byte", pad_id=0)
        >>> [a.tolist() for a in tok.encode(["hi", ""])], tok.vocab_size
        ([[104, 105], []], 256)
    """

    def __init__(self, base: Tokenizer, *, source: str, pad_id: int, prefix_ids: Sequence[int] = ()) -> None:
        self.base = base
        self.source = source
        self.pad_id = int(pad_id)
        self.prefix_ids = tuple(int(i) for i in prefix_ids)
        self.name = base.name
        self.vocab_size = int(base.vocab_size)
        self.eos_id = base.eos_id

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        """Token ids of each text (no special tokens) as int32 arrays."""
        return [np.asarray(ids, dtype=np.int32) for ids in self.base.encode_batch(list(texts))]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``."""
        return self.base.decode(ids)

    @property
    def sha256(self) -> str:
        """The underlying tokenizer's content hash."""
        return self.base.sha256

    def to_dict(self) -> dict[str, Any]:
        """The run-record entry: the base tokenizer's dict plus ``source``, ``pad_id``, ``prefix_ids``."""
        return {
            **self.base.to_dict(),
            "source": self.source,
            "pad_id": self.pad_id,
            "prefix_ids": list(self.prefix_ids),
        }

    def to_json(self) -> str | None:
        """The ``tokenizer.json`` text of a Hugging Face / trained tokenizer; None for bytes."""
        to_json = getattr(self.base, "to_json", None)
        return to_json() if callable(to_json) else None

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write the tokenizer and ``reward_tokenizer.json`` (source, pad and prefix ids) into ``folder``.

        :func:`load_step_tokenizer` reads them back. Returns the tokenizer file written.
        """
        path = self.base.save(folder)
        atomic_write_json(Path(folder) / _META_FILE, self.to_dict())
        return path

    def __repr__(self) -> str:
        return (
            f"StepTokenizer({self.name!r}, source={self.source!r}, vocab_size={self.vocab_size}, pad_id={self.pad_id})"
        )


def _hf_pad_id(tok: HFTokenizer) -> int:
    raw = getattr(tok, "_tok", None)
    for name in _PAD_CANDIDATES:
        tid = raw.token_to_id(name) if raw is not None else None
        if tid is not None:
            return int(tid)
    return int(tok.eos_id) if tok.eos_id is not None else 0


def _parse_bpe(spec: str) -> int | None:
    text = spec.strip().lower()
    if text == "bpe":
        return DEFAULT_BPE_VOCAB
    if text.startswith("bpe:"):
        try:
            size = int(text[4:])
        except ValueError:
            size = -1
        if size < 300:
            raise DataError(f"data.tokenizer {spec!r}: write bpe:<vocabulary size> with a size of at least 300")
        return size
    return None


def train_bpe(texts: Iterable[str], vocab_size: int = DEFAULT_BPE_VOCAB) -> HFTokenizer:
    """Train a byte-level BPE tokenizer on ``texts`` with the ``tokenizers`` library (local, no download).

    Special tokens: ``[PAD]`` (id 0, the pad id) and ``</s>``. Every byte is in the initial
    alphabet, so no text has unknown tokens. Training is deterministic for the same texts.

    Args:
        texts: the training texts.
        vocab_size: largest vocabulary (smaller when the texts have fewer merges).

    Raises:
        DataError: ``tokenizers`` is not installed.

    Example:
        >>> tok = train_bpe(["the cat sat", "the cat ran"] * 5, vocab_size=300)
        >>> tok.decode(tok.encode_batch(["the cat"])[0])
        'the cat'
    """
    try:
        from tokenizers import Tokenizer as RawTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers
    except ImportError:
        raise DataError(
            "data.tokenizer: bpe needs the 'tokenizers' package; run: pip install \"trainengine[data]\" "
            "(or use data.tokenizer: byte)"
        ) from None
    raw = RawTokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=int(vocab_size),
        special_tokens=["[PAD]", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(texts, trainer=trainer)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bpe" / "tokenizer.json"
        path.parent.mkdir()
        path.write_text(raw.to_str(), encoding="utf-8")
        tok = HFTokenizer(path)  # keeps the file's bytes in memory: the folder may go
    tok.name = f"bpe-{tok.vocab_size}"
    return tok


def _has_tokenizer_files(folder: Path) -> bool:
    return any((folder / name).is_file() for name in _TOKENIZER_FILES)


def _prefix_ids(tok: Any) -> list[int]:
    """Special ids the tokenizer puts before a text (a BOS / CLS), found by encoding with and without them."""
    with_special = list(tok("x")["input_ids"])
    plain = list(tok("x", add_special_tokens=False)["input_ids"])
    for start in range(len(with_special) - len(plain) + 1):
        if with_special[start : start + len(plain)] == plain:
            return [int(i) for i in with_special[:start]]
    return []


def _backbone_tokenizer(name_or_path: str) -> StepTokenizer | None:
    """The backbone's tokenizer when it is available locally; None when it is not (a warning says why)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir() and not _has_tokenizer_files(path):
        return None  # a local backbone folder without tokenizer files: build one locally
    from transformers import AutoTokenizer  # heavy import: only when a backbone is named

    try:
        tok = AutoTokenizer.from_pretrained(str(path) if path.is_dir() else name_or_path, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - transformers raises OSError/ValueError/others for a missing or odd tokenizer
        warnings.warn(
            f"model.name_or_path {name_or_path!r}: no tokenizer available locally ({type(exc).__name__}: {exc}); "
            "using a tokenizer built locally from data.tokenizer instead. Save the backbone's tokenizer into its "
            "folder (tokenizer.save_pretrained) to train with the backbone's own token ids.",
            UserWarning,
            stacklevel=3,
        )
        return None
    base = _AutoTokenizer(tok, path.name if path.is_dir() else name_or_path)
    pad = getattr(tok, "pad_token_id", None)
    if pad is None:
        pad = base.eos_id if base.eos_id is not None else 0
    return StepTokenizer(base, source="backbone", pad_id=int(pad), prefix_ids=_prefix_ids(tok))


def build_step_tokenizer(
    spec: str = "byte",
    *,
    backbone: str | None = None,
    training_texts: Callable[[], Iterable[str]] | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> StepTokenizer:
    """The tokenizer for reasoning-step data (the order of precedence is in the module docstring).

    Args:
        spec: ``data.tokenizer``: ``"byte"``, ``"bpe"``, ``"bpe:<N>"`` or a tokenizer path.
        backbone: ``model.name_or_path`` (None when the backbone is built from a config).
        training_texts: called (once) for the texts a ``bpe`` tokenizer is trained on.
        base_dir: folder a relative tokenizer path is resolved against.

    Raises:
        DataError: a tokenizer path that does not exist or holds no tokenizer, ``bpe`` without
            training texts, or a missing ``tokenizers`` package.

    Example:
        >>> build_step_tokenizer("byte").to_dict()["source"]
        'byte'
    """
    text = str(spec).strip()
    bpe_size = _parse_bpe(text)
    if text.lower() != "byte" and bpe_size is None:
        loaded = load_tokenizer(text, base_dir=base_dir)
        if isinstance(loaded, HFTokenizer):
            return StepTokenizer(loaded, source="file", pad_id=_hf_pad_id(loaded))
        return StepTokenizer(loaded, source="file", pad_id=0)
    if backbone:
        found = _backbone_tokenizer(backbone)
        if found is not None:
            return found
    if bpe_size is not None:
        if training_texts is None:
            raise DataError("data.tokenizer: bpe needs training texts to learn from; none were given")
        return StepTokenizer(train_bpe(training_texts(), bpe_size), source="bpe", pad_id=0)
    return StepTokenizer(ByteTokenizer(), source="byte", pad_id=0)


def load_step_tokenizer(folder: str | os.PathLike[str]) -> StepTokenizer:
    """Reload what :meth:`StepTokenizer.save` wrote (for evaluation and serving).

    A backbone tokenizer is reloaded with ``AutoTokenizer`` from the folder; others with
    :func:`~trainengine.data.load_tokenizer`.

    Raises:
        DataError: the folder holds no saved tokenizer.
    """
    folder = Path(folder)
    meta_path = folder / _META_FILE
    meta: dict[str, Any] = {}
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read {meta_path}: {exc}") from None
    source = str(meta.get("source", "file"))
    if source == "backbone":
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        base: Tokenizer = _AutoTokenizer(tok, str(meta.get("name", folder.name)))
    else:
        base = load_tokenizer(folder)
        if isinstance(base, HFTokenizer) and meta.get("name"):
            base.name = str(meta["name"])
    pad = meta.get("pad_id")
    if pad is None:
        pad = _hf_pad_id(base) if isinstance(base, HFTokenizer) else 0
    return StepTokenizer(base, source=source, pad_id=int(pad), prefix_ids=meta.get("prefix_ids") or ())


@dataclass(frozen=True)
class EncodedSteps:
    """One encoded example.

    Attributes:
        input_ids: int64 ``[T]``.
        step_positions: int64 ``[S]``: index of each kept step's last token (its separator's last).
        num_steps: steps kept (``S``).
        problem_truncated: the problem was cut from the left to fit the first step.
    """

    input_ids: np.ndarray
    step_positions: np.ndarray
    num_steps: int
    problem_truncated: bool


def assemble(
    prefix: Sequence[int] | np.ndarray,
    problem: np.ndarray,
    steps: Sequence[np.ndarray],
    sep: np.ndarray,
    *,
    max_length: int,
    max_steps: int,
) -> EncodedSteps:
    """Join token pieces into one example, keeping whole steps within ``max_length``.

    Layout: ``prefix + problem + sep + step_1 + sep + ... + step_k + sep``. At most ``max_steps``
    steps; then trailing steps that do not fit in ``max_length`` tokens are dropped whole. When even
    the problem and the first step do not fit, the problem (with its separator) is cut from the
    LEFT, keeping its end (the part next to the reasoning) and the whole first step; when the first
    step alone does not fit, the problem is dropped and the first step is cut from the left too
    (its separator, the scored token, always stays).

    Args:
        prefix: ids before everything (a BOS), usually empty.
        problem: the problem's ids.
        steps: each step's ids, without separator.
        sep: the separator's ids (at least one).
        max_length: most tokens.
        max_steps: most steps.

    Returns:
        The :class:`EncodedSteps` (``num_steps`` is 0 only when ``steps`` is empty).

    Raises:
        DataError: ``max_length`` leaves no room for the prefix and one separator.

    Example:
        >>> a = lambda *x: np.asarray(x, dtype=np.int64)
        >>> e = assemble([], a(1, 2, 3), [a(4), a(5, 6)], a(9), max_length=6, max_steps=10)
        >>> e.input_ids.tolist(), e.step_positions.tolist()
        ([1, 2, 3, 9, 4, 9], [5])
    """
    pre = np.asarray(prefix, dtype=np.int64)
    sep = np.asarray(sep, dtype=np.int64)
    if len(pre) + len(sep) > max_length:
        raise DataError(
            f"max_length {max_length} leaves no room for one step: the prefix and step separator alone take "
            f"{len(pre) + len(sep)} tokens; raise data.max_length"
        )
    head = np.concatenate([np.asarray(problem, dtype=np.int64), sep])
    steps = list(steps)[:max_steps]
    total = len(pre) + len(head)
    kept = 0
    for s in steps:
        need = len(s) + len(sep)
        if total + need > max_length:
            break
        total += need
        kept += 1
    truncated = False
    pieces: list[np.ndarray]
    if kept == 0 and steps:
        first = np.concatenate([np.asarray(steps[0], dtype=np.int64), sep])
        room = max_length - len(pre) - len(first)
        truncated = True
        if room >= 0:
            head = head[len(head) - room :] if room else head[:0]
        else:
            first = first[len(first) - (max_length - len(pre)) :]
            head = head[:0]
        pieces = [pre, head, first]
        positions = [len(pre) + len(head) + len(first) - 1]
        kept = 1
    else:
        pieces = [pre, head]
        positions = []
        pos = len(pre) + len(head)
        for s in steps[:kept]:
            pieces += [np.asarray(s, dtype=np.int64), sep]
            pos += len(s) + len(sep)
            positions.append(pos - 1)
    ids = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
    return EncodedSteps(ids, np.asarray(positions, dtype=np.int64), kept, truncated)


def encode_steps(
    tokenizer: StepTokenizer,
    problem: str,
    steps: Sequence[str],
    *,
    separator: str,
    max_length: int,
    max_steps: int,
) -> EncodedSteps:
    """Encode one problem and its steps exactly as training does (for evaluation and serving).

    Raises:
        DataError: the separator has no tokens under this tokenizer, or ``max_length`` is too small.
    """
    pieces = tokenizer.encode([problem, separator, *steps])
    if len(pieces[1]) == 0:
        raise DataError(
            f"data.step_separator {separator!r} encodes to no tokens with the {tokenizer.name} tokenizer; "
            "choose a separator it keeps (e.g. '\\n')"
        )
    return assemble(tokenizer.prefix_ids, pieces[0], pieces[2:], pieces[1], max_length=max_length, max_steps=max_steps)
