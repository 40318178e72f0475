"""Standalone inference runtime for a trainengine export bundle: numpy and onnxruntime only.

This file is copied verbatim into every export bundle as ``inference.py``, so it imports nothing
from ``trainengine`` there: only the standard library, numpy, onnxruntime (lazily) and the
modules export copies beside it, ``_hashing.py`` (file hashes, bundle verification),
``_numeric.py`` (the drift arithmetic) and, in a bundle with a ``preprocessing.json``,
``_preprocess.py`` (the tabular encoding), verbatim copies of ``trainengine._hashing``,
``trainengine._numeric`` and ``trainengine._preprocess``; inside the package it imports those from
trainengine. A bundle with a ``tokenizer.json`` also needs the ``tokenizers`` package. It is also the
runtime that ``trainengine serve`` and the bundle's ``server.py`` use, so a bundle answers the
same way wherever it runs.

As a script, from the bundle's folder::

    python inference.py --input examples.json            # {"inputs": [...]} or a bare list
    python inference.py --input x.json --model model.int8.onnx --bundle /path/to/bundle
    python inference.py --input prompts.json   # {"inputs": ["def "], "temperature": 0.8, "seed": 1}

prints ``{"predictions": [...], "model": name, "version": version}`` as JSON; a bad input or a
damaged bundle prints one line on standard error and exits with code 2.

What it does:

* **Verifies the bundle.** Every file listed in ``manifest.json["files"]`` is hashed (SHA-256)
  and compared before anything is loaded; a missing, modified or unlisted file raises
  :class:`BundleError` (the one contract of ``trainengine._hashing.verify_bundle``).
* **Validates inputs.** :func:`preprocess` turns JSON examples into the model's input array and
  raises :class:`InputError` naming the offending field (``inputs[3]: expected shape [64], got
  [63]``) for a wrong shape or type, a non-finite number or an empty batch. A bundle with a
  ``preprocessing.json`` takes raw records (``{"age": 41, "city": "SF"}``) and encodes them as
  in training (``_preprocess.encode_records``); one with a ``tokenizer.json`` tokenizes text
  with the training tokenizer.
* **Formats predictions** as the export contract says (:func:`postprocess`): classification
  ``{"class", "probabilities"}`` (plus ``"label"``, the class name, when the bundle has class
  names), regression ``{"value"}`` / ``{"values"}``, language modeling ``{"next_token",
  "next_token_probability", "completion"}`` (greedy, 16 new tokens, unless the request asks
  for sampling: :class:`Sampling`, :func:`sampling_options`), reward models ``{"scores": [one
  per step], "num_steps", "steps_scored", "truncated", "problem_truncated"}`` for examples
  ``{"problem": str, "steps": [str, ...]}`` encoded as in training (:class:`StepEncoding`,
  :func:`encode_step_requests`, :func:`score_steps`).
* **Measures drift** of recent inputs against the bundle's ``reference_profile.json`` with the
  same Jensen–Shannon divergence as ``trainengine.monitoring.compare_profiles`` (both use
  ``_numeric.py``)
  (:func:`drift_score`, :class:`DriftWindow`).

Example:
    >>> import numpy as np
    >>> task = {"task_type": "classification", "num_classes": 3}
    >>> postprocess(np.array([[0.0, 0.0, 1.0]]), task)[0]["class"]
    2
    >>> manifest = {"input": {"name": "input", "dtype": "float32", "shape": [None, 2]}}
    >>> preprocess([[1, 2.5]], manifest, task).dtype
    dtype('float32')
    >>> preprocess([[1, "a"]], manifest, task)
    Traceback (most recent call last):
    ...
    InputError: inputs[0][1]: not a number, got str 'a'

Why one module of this length: this file is copied verbatim into every bundle as inference.py and
must run without trainengine, so verification, input checks, pre/post-processing, predictors and the
drift window live in one standalone file.
"""

from __future__ import annotations

import abc
import argparse
import json
import math
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

if __package__:  # trainengine.serve._runtime
    from trainengine._hashing import content_sha256, verify_bundle
    from trainengine._numeric import bin_vector, categorical_js, histogram_vector, js_divergence
else:  # a bundle's inference.py: the export copied these two modules beside it
    sys.dont_write_bytecode = True  # no __pycache__ inside the bundle's folder
    from _hashing import content_sha256, verify_bundle  # type: ignore[no-redef]  # the bundle's copy
    from _numeric import bin_vector, categorical_js, histogram_vector, js_divergence  # type: ignore[no-redef]  # copy


def _preprocess_module() -> Any:
    """``_preprocess`` (tabular encoding), imported only by bundles that have a preprocessing.json."""
    if __package__:
        from trainengine import _preprocess
    else:  # a bundle's inference.py: export copied _preprocess.py beside it
        import _preprocess  # type: ignore[no-redef]  # the bundle's copy; mypy sees both branches
    return _preprocess


__all__ = [
    "BundleError",
    "InputError",
    "LimitError",
    "Bundle",
    "load_bundle",
    "verify_bundle",
    "bundle_content_sha256",
    "preprocess",
    "postprocess",
    "model_input",
    "Sampling",
    "sampling_options",
    "load_tokenizer",
    "StepEncoding",
    "StepBatch",
    "assemble_steps",
    "reward_inputs",
    "encode_step_requests",
    "score_steps",
    "Predictor",
    "OnnxPredictor",
    "drift_divergences",
    "drift_score",
    "DriftWindow",
    "main",
]

FORMAT_VERSION = 1  # newest manifest format this runtime reads
MAX_NEW_TOKENS = 16  # greedy completion length of language-model predictions (the contract's)
SAMPLING_FIELDS = ("max_new_tokens", "temperature", "top_k", "top_p", "seed")  # request options of language models
MAX_TEMPERATURE = 10.0  # above this the next-token distribution is flat noise for any model
MAX_NEW_TOKENS_LIMIT = 256  # default bound of a request's max_new_tokens (server option / monitoring.json)
PAD = -1  # token padding in preprocessed batches; never a valid id, replaced by 0 for the model
_MAX_PADDED_TOKENS = 4_000_000  # B * T bound of a padded token batch (32 MB of int64)
_SHRINK_ARENA_AFTER = 4_096  # input elements of an onnxruntime call after which its arena is shrunk
_NUMBER_TYPES = frozenset({int, float})  # bool is a subclass of int but not a number here


# ----------------------------------------------------------------------------- errors
class BundleError(Exception):
    """The bundle cannot be used: a file is missing, damaged or modified, or the manifest is bad."""


class InputError(ValueError):
    """A request's inputs do not fit the model; the message starts with the offending field.

    Attributes:
        field: The field path, e.g. ``"inputs[3]"`` or ``"inputs[0][2]"``.

    Example:
        >>> str(InputError("inputs[3]", "expected shape [64], got [63]"))
        'inputs[3]: expected shape [64], got [63]'
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class LimitError(InputError):
    """A request asks for more work than a limit allows (the server answers 413); names the limit.

    Attributes:
        limit: The limit's name, e.g. ``"max_request_tokens"``.

    Example:
        >>> exc = LimitError("inputs", "5000 tokens exceed the limit of 4096", "max_request_tokens")
        >>> isinstance(exc, InputError), exc.limit
        (True, 'max_request_tokens')
    """

    def __init__(self, field: str, problem: str, limit: str) -> None:
        super().__init__(field, problem)
        self.limit = limit


# ----------------------------------------------------------------------------- bundle
def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{what} not found at {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{what} at {path} is not valid JSON: {exc}") from None


def bundle_content_sha256(manifest: Mapping[str, Any]) -> str:
    """The bundle's content hash: SHA-256 of the sorted lines ``"<relpath>\\t<sha256>\\n"``.

    Computed from ``manifest["files"]`` (every file but manifest.json), which
    :func:`verify_bundle` has checked against the disk; this is what the model registry stores
    as a bundle's ``artifact_sha256``.

    Example:
        >>> len(bundle_content_sha256({"files": {"model.onnx": "ab" * 32}}))
        64
    """
    return content_sha256(manifest.get("files") or {})


@dataclass
class Bundle:
    """A loaded (and verified) export bundle.

    Attributes:
        path: The bundle's folder.
        manifest: ``manifest.json``.
        task: ``task_spec.json`` (a ``TaskSpec.to_dict()``).
        name: The model's name (``manifest["name"]``).
        version: ``manifest["version"]``, or ``"unversioned"``.
        content_sha256: :func:`bundle_content_sha256` of the manifest.
        reference_profile: ``reference_profile.json`` when the bundle has one, else ``None``.
        monitoring: ``monitoring.json`` (thresholds), or ``{}``.
        preprocessing: ``preprocessing.json`` (the tabular spec raw records are encoded with), or
            ``None``: the inputs are the model's arrays.
    """

    path: Path
    manifest: dict[str, Any]
    task: dict[str, Any]
    name: str
    version: str
    content_sha256: str
    reference_profile: dict[str, Any] | None = None
    monitoring: dict[str, Any] = field(default_factory=dict)
    preprocessing: dict[str, Any] | None = None

    @property
    def task_type(self) -> str:
        """``task_spec.json["task_type"]`` (``manifest["task_type"]`` as a fallback)."""
        return str(self.task.get("task_type") or self.manifest.get("task_type") or "classification")

    @property
    def max_seq_len(self) -> int | None:
        """Context length of a token model (from the model spec), else ``None``."""
        return _max_seq_len(self.manifest)

    @property
    def class_names(self) -> list[str] | None:
        """Names of the classes (``manifest["class_names"]``), index = class, else ``None``."""
        names = self.manifest.get("class_names")
        return [str(n) for n in names] if isinstance(names, list) and names else None


def load_bundle(bundle_dir: str | os.PathLike[str], *, verify: bool = True) -> Bundle:
    """Read a bundle's manifest, task spec, reference profile and thresholds.

    Args:
        bundle_dir: The bundle's folder (the one holding ``manifest.json``).
        verify: Check every file's SHA-256 against the manifest first (:func:`verify_bundle`).

    Raises:
        BundleError: No bundle there, a newer format, or a file that fails verification.

    Example:
        >>> load_bundle("/nonexistent")
        Traceback (most recent call last):
        ...
        BundleError: no export bundle at /nonexistent: manifest.json not found ...
    """
    root = Path(bundle_dir)
    if not (root / "manifest.json").is_file():
        hint = "it is still being written or the export failed" if root.is_dir() else "the folder does not exist"
        raise BundleError(
            f"no export bundle at {root}: manifest.json not found ({hint}); pass the folder that "
            "`trainengine export` created"
        )
    manifest = _read_json(root / "manifest.json", "manifest.json")
    if not isinstance(manifest, dict):
        raise BundleError(f"manifest.json of {root} is not a JSON object")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1 or version > FORMAT_VERSION:
        raise BundleError(
            f"bundle {root} has format_version {version!r}; this runtime reads format_version "
            f"{FORMAT_VERSION} — update trainengine or re-export the bundle"
        )
    if verify:
        problems = verify_bundle(root, manifest)
        if problems:
            raise BundleError(
                f"bundle {root} failed verification: {'; '.join(problems)}; the files were modified or "
                "damaged after export — re-export the bundle or restore the original files"
            )
    listed = set(manifest.get("files") or {})
    task = _read_json(root / "task_spec.json", "task_spec.json") if "task_spec.json" in listed else {}
    if not isinstance(task, dict):
        raise BundleError(f"task_spec.json of {root} is not a JSON object")
    if not task and manifest.get("task_type"):
        task = {"task_type": manifest["task_type"]}
    reference = None
    if "reference_profile.json" in listed:
        reference = _read_json(root / "reference_profile.json", "reference_profile.json")
    monitoring = _read_json(root / "monitoring.json", "monitoring.json") if "monitoring.json" in listed else {}
    preprocessing = None
    if "preprocessing.json" in listed:
        preprocessing = _read_json(root / "preprocessing.json", "preprocessing.json")
        _check_preprocessing(root, preprocessing, manifest)
    return Bundle(
        path=root,
        manifest=manifest,
        task=task,
        name=str(manifest.get("name") or root.name),
        version=str(manifest.get("version") or "unversioned"),
        content_sha256=bundle_content_sha256(manifest),
        reference_profile=reference if isinstance(reference, dict) else None,
        monitoring=monitoring if isinstance(monitoring, dict) else {},
        preprocessing=preprocessing,
    )


def _check_preprocessing(root: Path, spec: Any, manifest: Mapping[str, Any]) -> None:
    """A preprocessing.json this runtime applies, whose encoded width is the model's input width."""
    try:
        _preprocess_module().check_spec(spec)
    except ImportError as exc:
        raise BundleError(
            f"bundle {root} has a preprocessing.json but its _preprocess.py cannot be imported ({exc}); "
            "re-export the bundle"
        ) from None
    except ValueError as exc:
        raise BundleError(f"preprocessing.json of {root}: {exc}") from None
    width = _preprocess_module().output_width(spec)
    shape = (manifest.get("input") or {}).get("shape") or []
    if len(shape) != 2 or shape[1] != width:
        raise BundleError(
            f"preprocessing.json of {root} encodes {width} values per example but the model takes input shape "
            f"{shape}; the bundle's files do not belong together — re-export it"
        )


def _model_kwargs(manifest: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = manifest.get("model_spec")
    if isinstance(spec, Mapping) and isinstance(spec.get("kwargs"), Mapping):
        return spec["kwargs"]
    return {}


def _max_seq_len(manifest: Mapping[str, Any]) -> int | None:
    for value in ((manifest.get("input") or {}).get("max_sequence_length"), _model_kwargs(manifest).get("max_seq_len")):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _vocab_size(manifest: Mapping[str, Any], task: Mapping[str, Any]) -> int | None:
    shape = (manifest.get("output") or {}).get("shape") or []
    candidates = (task.get("num_classes"), shape[-1] if shape else None, _model_kwargs(manifest).get("vocab_size"))
    for value in candidates:
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


# ----------------------------------------------------------------------------- inputs
def _describe(value: Any) -> str:
    if isinstance(value, list):
        return f"shape {_shape_of(value)}"
    if isinstance(value, str):
        shown = value if len(value) <= 20 else value[:17] + "..."
        return f"str {shown!r}"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"bool {str(value).lower()}"
    if isinstance(value, dict):
        return "an object"
    return f"{type(value).__name__} {value!r}"


def _shape_of(value: Any) -> list[int]:
    shape: list[int] = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _check_numbers(value: Any, shape: Sequence[int], path: str, integer: bool) -> None:
    """Raise InputError at the first place ``value`` is not nested lists of numbers of ``shape``."""
    if not shape:
        if integer:
            if type(value) is not int:
                raise InputError(path, f"not an integer, got {_describe(value)}")
        elif type(value) not in _NUMBER_TYPES:
            raise InputError(path, f"not a number, got {_describe(value)}")
        return
    if not isinstance(value, list) or len(value) != shape[0]:
        got = _describe(value) if not isinstance(value, list) else f"{_shape_of(value)}"
        raise InputError(path, f"expected shape {list(shape)}, got {got}")
    if len(shape) == 1:
        allowed = {int} if integer else _NUMBER_TYPES
        # Fast path: one set of the row's types (a few µs for 64 values) instead of a check per value.
        if set(map(type, value)) <= allowed:
            return
    for j, item in enumerate(value):
        _check_numbers(item, shape[1:], f"{path}[{j}]", integer)


def _index_path(index: Sequence[int]) -> str:
    return "inputs" + "".join(f"[{int(i)}]" for i in index)


def _preprocess_features(inputs: list[Any], manifest: Mapping[str, Any], dtype: np.dtype) -> np.ndarray:
    declared = (manifest.get("input") or {}).get("shape") or [None]
    shape = list(declared[1:])
    if any(d is None for d in shape):
        # A dynamic non-batch axis: every example must share the first example's shape.
        first = _shape_of(inputs[0])
        if len(first) != len(shape):
            raise InputError("inputs[0]", f"expected {len(shape)} dimension(s) {shape}, got shape {first}")
        shape = [f if d is None else d for d, f in zip(shape, first, strict=True)]
    integer = dtype.kind in "iu"
    for i, example in enumerate(inputs):
        _check_numbers(example, shape, f"inputs[{i}]", integer)
    try:
        wide = np.asarray(inputs, dtype=np.int64 if integer else np.float64)
    except OverflowError:
        for i, example in enumerate(inputs):
            try:
                np.asarray(example, dtype=np.int64 if integer else np.float64)
            except OverflowError:
                raise InputError(f"inputs[{i}]", f"a number is out of range for {dtype.name}") from None
        raise  # pragma: no cover - the loop above finds the example
    if integer:
        info = np.iinfo(dtype)
        bad = (wide < info.min) | (wide > info.max)
        if bad.any():
            idx = np.argwhere(bad)[0]
            raise InputError(_index_path(idx), f"{int(wide[tuple(idx)])} is out of range for {dtype.name}")
        return wide.astype(dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        arr = wide.astype(dtype)
    finite = np.isfinite(arr)
    if not finite.all():
        idx = tuple(np.argwhere(~finite)[0])
        original = float(wide[idx])
        problem = (
            f"not finite ({original})"
            if not math.isfinite(original)
            else f"{original!r} is out of range for {dtype.name}"
        )
        raise InputError(_index_path(idx), problem)
    return arr


def _preprocess_tokens(
    inputs: list[Any],
    manifest: Mapping[str, Any],
    task: Mapping[str, Any],
    dtype: np.dtype,
    max_request_tokens: int | None = None,
    tokenizer: Any = None,
) -> np.ndarray:
    vocab = _vocab_size(manifest, task)
    max_len = _max_seq_len(manifest)
    rows: list[np.ndarray] = []
    total = 0
    for i, example in enumerate(inputs):
        path = f"inputs[{i}]"
        if isinstance(example, str) and tokenizer is not None:
            # The training tokenizer, without special tokens: training joins documents with eos itself.
            ids = np.asarray(tokenizer.encode(example, add_special_tokens=False).ids, dtype=np.int64)
            if ids.size == 0:
                raise InputError(path, "the text has no tokens; send at least one character the tokenizer knows")
            if vocab is not None and int(ids.max()) >= vocab:
                raise InputError(
                    path, f"the tokenizer gives token id {int(ids.max())}, outside the model's vocabulary of {vocab}"
                )
        elif isinstance(example, str):
            ids = np.frombuffer(example.encode("utf-8"), dtype=np.uint8).astype(np.int64)
            if ids.size == 0:
                raise InputError(path, "empty text; send at least one character")
            if vocab is not None and ids.size and int(ids.max()) >= vocab:
                raise InputError(
                    path, f"the text's UTF-8 bytes go up to {int(ids.max())}, outside the vocabulary of {vocab} tokens"
                )
        elif isinstance(example, list):
            if not example:
                raise InputError(path, "empty token list; send at least one token id")
            if not set(map(type, example)) <= {int}:
                j = next(j for j, t in enumerate(example) if type(t) is not int)
                raise InputError(f"{path}[{j}]", f"not a token id (an integer), got {_describe(example[j])}")
            try:
                ids = np.asarray(example, dtype=np.int64)
            except OverflowError:
                j = next(j for j, t in enumerate(example) if not -(2**63) <= t < 2**63)
                raise InputError(f"{path}[{j}]", f"token id {example[j]} is out of range") from None
            bad = (ids < 0) | (ids >= vocab) if vocab is not None else ids < 0
            if bad.any():
                j = int(np.argmax(bad))
                limit = f"[0, {vocab})" if vocab is not None else ">= 0"
                raise InputError(f"{path}[{j}]", f"token id {int(ids[j])} is out of range {limit}")
        else:
            raise InputError(path, f"expected a string or a list of token ids, got {_describe(example)}")
        # The model only ever sees its last max_seq_len tokens (as GPT.generate crops).
        rows.append(ids[-max_len:] if max_len is not None else ids)
        total += rows[-1].size
        if max_request_tokens is not None and total > max_request_tokens:
            # Counted as the examples are read: a request far over the limit stops at the first excess.
            raise LimitError(
                "inputs",
                f"the first {i + 1} of {len(inputs)} examples already hold {total} tokens, more than the limit of "
                f"{max_request_tokens} tokens per request (max_request_tokens); send fewer or shorter texts",
                "max_request_tokens",
            )
    width = max(r.size for r in rows)
    if width * len(rows) > _MAX_PADDED_TOKENS:
        raise InputError(
            "inputs", f"{len(rows)} sequences padded to {width} tokens is too large; send shorter or fewer sequences"
        )
    batch = np.full((len(rows), width), PAD, dtype=np.int64)
    for i, r in enumerate(rows):
        batch[i, : r.size] = r  # right padding: causal attention never looks at later positions
    return batch.astype(dtype, copy=False)


def preprocess(
    inputs: Any,
    manifest: Mapping[str, Any],
    task: Mapping[str, Any],
    *,
    max_batch: int | None = None,
    max_request_tokens: int | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    tokenizer: Any = None,
) -> np.ndarray:
    """Validate JSON examples and stack them into the model's input array.

    Feature/image inputs become ``(B, *shape)`` of the manifest's dtype. With ``preprocessing``
    (a bundle's ``preprocessing.json``) the examples are raw records, objects ``{column:
    value}`` or lists of values in the spec's ``feature_columns`` order, encoded exactly as in
    training into ``(B, width)`` float32. Token inputs (``language_modeling``) may be strings
    (tokenized by ``tokenizer``; without one, UTF-8 bytes are the token ids) or lists of token
    ids; they become ``(B, T)`` int64, right-padded with ``PAD`` (-1) and cropped to the
    model's last ``max_seq_len`` tokens.

    Args:
        inputs: The request's ``"inputs"``: a non-empty list of examples.
        manifest: The bundle's manifest (``input.dtype`` and ``input.shape``).
        task: The bundle's task spec dict (``task_type``).
        max_batch: Refuse more examples than this.
        max_request_tokens: Token inputs: refuse more tokens in all (after cropping to the
            model's context) than this, with a :class:`LimitError`.
        preprocessing: The tabular spec raw records are encoded with (``Bundle.preprocessing``).
        tokenizer: A ``tokenizers.Tokenizer`` that turns text into token ids (the bundle's
            ``tokenizer.json``, see :func:`load_tokenizer`).

    Returns:
        The batch as a numpy array.

    Raises:
        InputError: Naming the first offending field: not a list, an empty batch, too many
            examples, a wrong shape, a non-number, NaN/Inf or out-of-range value; for raw
            records an unknown column, a wrong number of values or a missing value the model
            cannot fill (``inputs[3].age: ...``).

    Example:
        >>> m = {"input": {"dtype": "float32", "shape": [None, 3]}}
        >>> preprocess([[1, 2]], m, {"task_type": "regression"})
        Traceback (most recent call last):
        ...
        InputError: inputs[0]: expected shape [3], got [2]
    """
    if not isinstance(inputs, list):
        raise InputError("inputs", f"expected a list of examples, got {_describe(inputs)}")
    if not inputs:
        raise InputError("inputs", "empty batch; send at least one example")
    if max_batch is not None and len(inputs) > max_batch:
        raise InputError("inputs", f"{len(inputs)} examples exceed the batch limit of {max_batch}; split the request")
    spec = manifest.get("input") or {}
    try:
        dtype = np.dtype(spec.get("dtype") or "float32")
    except TypeError as exc:
        raise BundleError(f"manifest input dtype {spec.get('dtype')!r} is not a numpy dtype") from exc
    task_type = task.get("task_type") or manifest.get("task_type")
    if task_type == "language_modeling":
        return _preprocess_tokens(inputs, manifest, task, dtype, max_request_tokens, tokenizer)
    if preprocessing is not None:
        encoding = _preprocess_module()
        try:
            return encoding.encode_records(preprocessing, inputs).astype(dtype, copy=False)
        except encoding.PreprocessError as exc:
            raise InputError(exc.path, exc.problem) from None
    return _preprocess_features(inputs, manifest, dtype)


# ----------------------------------------------------------------------------- outputs
def _softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis in float64, shifted by the max so exp never overflows."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _check_finite_rows(values: np.ndarray) -> None:
    finite = np.isfinite(values.reshape(values.shape[0], -1)).all(axis=1)
    if not finite.all():
        i = int(np.argmin(finite))
        raise InputError(
            f"inputs[{i}]",
            "the model's output is not finite for this example; its values are probably far "
            "outside the range the model was trained on",
        )


def _decode(ids: Sequence[int]) -> str:
    # Byte-level vocabulary: ids 0..255 are bytes; any larger id has no byte and shows as U+FFFD.
    out, chunk = [], bytearray()
    for t in ids:
        if 0 <= t < 256:
            chunk.append(t)
        else:
            out.append(chunk.decode("utf-8", errors="replace") + "\ufffd")
            chunk = bytearray()
    out.append(chunk.decode("utf-8", errors="replace"))
    return "".join(out)


def model_input(tokens: np.ndarray) -> np.ndarray:
    """A ``PAD``-padded token batch as the model takes it: padding becomes token 0.

    Padding sits after each row's tokens and attention is causal, so no real position ever
    attends to it: the logits of real positions are those of the unpadded row.
    """
    return np.where(tokens == PAD, 0, tokens) if tokens.dtype.kind in "iu" else tokens


def _pad(rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    batch = np.full((len(rows), int(lengths.max())), PAD, dtype=np.int64)
    for i, r in enumerate(rows):
        batch[i, : len(r)] = r
    return batch, lengths


@dataclass(frozen=True)
class Sampling:
    """How a language-model completion is decoded: greedy (``temperature`` 0, the default) or sampled.

    The same filters, in the same order, as ``trainengine generate`` (``GPT.generate``):
    temperature, then top-k, then top-p (the smallest set of most likely tokens whose
    probabilities reach ``top_p``). With a ``seed``, example ``i`` of a request draws from its own
    generator seeded ``(seed, i)``: its completion does not depend on the other examples or on how
    the server batches them.

    Example:
        >>> Sampling().temperature, Sampling(temperature=0.8, seed=1).seed
        (0.0, 1)
    """

    max_new_tokens: int = MAX_NEW_TOKENS
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None

    def generators(self, n: int) -> list[Any]:
        """One numpy generator per example (``None`` for greedy decoding, which draws nothing)."""
        if self.temperature == 0:
            return [None] * n
        if self.seed is None:
            root = np.random.SeedSequence()  # fresh entropy: another answer every request
            return [np.random.default_rng(child) for child in root.spawn(n)]
        return [np.random.default_rng([self.seed, i]) for i in range(n)]


def _is_number(value: Any) -> bool:
    return type(value) in _NUMBER_TYPES and math.isfinite(value)


def sampling_options(
    payload: Mapping[str, Any],
    *,
    max_new_tokens_limit: int,
    default_max_new_tokens: int = MAX_NEW_TOKENS,
    vocab_size: int | None = None,
) -> Sampling:
    """The :class:`Sampling` a request asks for (``max_new_tokens``, ``temperature``, ``top_k``, ``top_p``, ``seed``).

    Absent or ``null`` fields keep the defaults (greedy, ``default_max_new_tokens`` tokens).

    Args:
        payload: The request body (other keys are ignored).
        max_new_tokens_limit: The most new tokens a request may ask for (the server's limit).
        default_max_new_tokens: Completion length when the request does not say.
        vocab_size: The model's vocabulary; ``top_k`` above it keeps every token and is allowed.

    Raises:
        InputError: The first out-of-range or mistyped field, by name.

    Example:
        >>> sampling_options({"temperature": 0.7, "top_k": 40}, max_new_tokens_limit=64)
        Sampling(max_new_tokens=16, temperature=0.7, top_k=40, top_p=None, seed=None)
        >>> sampling_options({"max_new_tokens": 500}, max_new_tokens_limit=64)
        Traceback (most recent call last):
        ...
        InputError: max_new_tokens: 500 is more than this server's limit of 64 new tokens; ask for at most 64
    """
    get = {name: payload.get(name) for name in SAMPLING_FIELDS}
    n = get["max_new_tokens"]
    if n is None:
        n = min(default_max_new_tokens, max_new_tokens_limit)
    elif type(n) is not int or n < 1:
        raise InputError("max_new_tokens", f"expected an integer >= 1, got {_describe(n)}")
    elif n > max_new_tokens_limit:
        raise InputError(
            "max_new_tokens",
            f"{n} is more than this server's limit of {max_new_tokens_limit} new tokens; "
            f"ask for at most {max_new_tokens_limit}",
        )
    temperature = get["temperature"]
    if temperature is None:
        temperature = 0.0
    elif not _is_number(temperature) or not 0 <= temperature <= MAX_TEMPERATURE:
        raise InputError(
            "temperature", f"expected a number in [0, {MAX_TEMPERATURE:g}] (0 = greedy), got {_describe(temperature)}"
        )
    top_k = get["top_k"]
    if top_k is not None and (type(top_k) is not int or top_k < 1):
        raise InputError("top_k", f"expected an integer >= 1 (1 = greedy), got {_describe(top_k)}")
    top_p = get["top_p"]
    if top_p is not None and (not _is_number(top_p) or not 0 < top_p <= 1):
        raise InputError("top_p", f"expected a number in (0, 1] (1 keeps every token), got {_describe(top_p)}")
    seed = get["seed"]
    if seed is not None and (type(seed) is not int or not 0 <= seed < 2**63):
        raise InputError("seed", f"expected an integer in [0, 2**63), got {_describe(seed)}")
    return Sampling(int(n), float(temperature), top_k, None if top_p is None else float(top_p), seed)


def _next_token(logits: np.ndarray, sampling: Sampling, rng: Any) -> int:
    """One token from a row of next-token logits ``(V,)``: argmax, or a draw after temperature, top-k and top-p."""
    if sampling.temperature == 0 or rng is None:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / sampling.temperature  # (V,)
    if sampling.top_k is not None and sampling.top_k < z.size:
        kth = np.partition(z, -sampling.top_k)[-sampling.top_k]  # the k-th highest score
        z = np.where(z < kth, -np.inf, z)
    p = _softmax(z[None])[0]  # (V,); filtered tokens get probability 0
    if sampling.top_p is not None and sampling.top_p < 1:
        order = np.argsort(-p, kind="stable")  # most likely first
        ranked = p[order]
        # A token goes when the tokens ranked above it already reach top_p (the first always stays).
        p[order[(np.cumsum(ranked) - ranked) >= sampling.top_p]] = 0.0
    cdf = np.cumsum(p)
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), p.size - 1))


def _complete(
    tokens: np.ndarray,
    logits: np.ndarray,
    forward: Callable[[np.ndarray], np.ndarray],
    max_new_tokens: int,
    max_seq_len: int | None,
    decode: Callable[[list[int]], str] = _decode,
    sampling: Sampling | None = None,
    generators: Sequence[Any] | None = None,
) -> list[dict[str, Any]]:
    sampling = sampling or Sampling(max_new_tokens=max_new_tokens)
    prompts = [row[row != PAD].tolist() for row in tokens]
    lengths = np.array([len(p) for p in prompts])
    rows = np.arange(len(prompts))
    rngs = list(generators) if generators is not None else sampling.generators(len(prompts))
    last = logits[rows, lengths - 1]  # (B, V): the logits after each prompt's last real token
    _check_finite_rows(last)
    probs = _softmax(last)
    first = [_next_token(last[i], sampling, rngs[i]) for i in rows]  # (B,)
    generated = [[int(t)] if max_new_tokens > 0 else [] for t in first]
    for _ in range(max_new_tokens - 1):
        contexts = [(p + g)[-max_seq_len:] if max_seq_len else p + g for p, g in zip(prompts, generated, strict=True)]
        batch, lens = _pad(contexts)
        out = forward(model_input(batch))  # (B, T, V)
        step = out[rows, lens - 1]  # (B, V)
        _check_finite_rows(step)
        for i, g in enumerate(generated):
            g.append(_next_token(step[i], sampling, rngs[i]))
    return [
        {
            "next_token": int(first[i]),
            "next_token_probability": float(probs[i, first[i]]),
            "completion": decode(generated[i]),
        }
        for i in range(len(prompts))
    ]


def postprocess(
    logits: np.ndarray,
    task: Mapping[str, Any],
    *,
    tokens: np.ndarray | None = None,
    forward: Callable[[np.ndarray], np.ndarray] | None = None,
    max_new_tokens: int = MAX_NEW_TOKENS,
    max_seq_len: int | None = None,
    target_scaling: Mapping[str, float] | None = None,
    class_names: Sequence[str] | None = None,
    decode: Callable[[list[int]], str] | None = None,
    sampling: Sampling | None = None,
    generators: Sequence[Any] | None = None,
) -> list[dict[str, Any]]:
    """Turn model outputs into the contract's predictions, one dict per example.

    Args:
        logits: Model output: ``(B, C)`` for classification, ``(B,)``/``(B, K)`` for
            regression, ``(B, T, V)`` for language modeling.
        task: The task spec dict (``task_type``).
        tokens: Language modeling: the preprocessed ``(B, T)`` prompts (``PAD``-padded).
        forward: Language modeling: runs the model on a ``(B, T)`` batch of token ids (padding
            already replaced, see :func:`model_input`), for the greedy completion of
            ``max_new_tokens`` tokens.
        max_new_tokens: Completion length.
        max_seq_len: Crop each context to its last this many tokens (the model's context).
        target_scaling: Regression: ``{"mean", "std"}`` the targets were standardised with in
            training (the manifest's ``target_scaling``); predictions are ``output * std + mean``.
        class_names: Classification: the name of each class; adds ``"label"`` to each prediction.
        decode: Language modeling: token ids -> text for the completion (the bundle's
            tokenizer); default: byte-level (ids 0..255 are UTF-8 bytes).
        sampling: Language modeling: how tokens are picked (default: greedy); its
            ``max_new_tokens`` is ignored here in favour of the argument.
        generators: Language modeling: one numpy generator per example (default: from
            ``sampling``); the predictor passes each example's own, whatever the batching.

    Returns:
        classification/vision ``{"class", "probabilities"}`` (+ ``"label"`` with
        ``class_names``); regression ``{"value"}`` (one output) or ``{"values"}``; language
        modeling ``{"next_token", "next_token_probability", "completion"}``.

    Raises:
        InputError: The model's output for an example is not finite (inputs far out of range).

    Example:
        >>> postprocess(np.array([[1.5], [-2.0]]), {"task_type": "regression"})
        [{'value': 1.5}, {'value': -2.0}]
    """
    out = np.asarray(logits)
    task_type = task.get("task_type", "classification")
    if task_type == "language_modeling":
        if tokens is None or forward is None:
            raise ValueError("language-model postprocessing needs the prompt tokens and a forward function")
        return _complete(tokens, out, forward, max_new_tokens, max_seq_len, decode or _decode, sampling, generators)
    _check_finite_rows(out)
    if task_type == "regression":
        flat = out.reshape(out.shape[0], -1).astype(np.float64)
        if target_scaling:
            flat = flat * float(target_scaling["std"]) + float(target_scaling["mean"])
        if flat.shape[1] == 1:
            return [{"value": float(v)} for v in flat[:, 0]]
        return [{"values": row.tolist()} for row in flat]
    probs = _softmax(out.reshape(out.shape[0], -1))  # (B, C)
    classes = probs.argmax(axis=-1)
    if class_names:
        if len(class_names) != probs.shape[1]:
            raise ValueError(f"{len(class_names)} class names for a model with {probs.shape[1]} classes")
        return [
            {"class": int(c), "label": class_names[c], "probabilities": p.tolist()}
            for c, p in zip(classes, probs, strict=True)
        ]
    return [{"class": int(c), "probabilities": p.tolist()} for c, p in zip(classes, probs, strict=True)]


# ----------------------------------------------------------------------------- reward models
REWARD_TASK = "reward"  # task_type of a process reward model: one score per reasoning step
_TEXT_STEP_KEYS = ("problem", "steps")
_TOKEN_STEP_KEYS = ("input_ids", "step_positions")
_STEP_REQUEST = (
    '{"problem": str, "steps": [str, ...]} (or, tokenized by the client, {"input_ids": [int, ...], '
    '"step_positions": [int, ...]})'
)


@dataclass(frozen=True)
class StepEncoding:
    """How a reward bundle encodes a problem and its steps: exactly as in training.

    The layout is ``prefix + problem + sep + step_1 + sep + ... + step_k + sep`` (each piece
    tokenized on its own, without special tokens); step ``i`` is scored at the last token of
    the separator after it. At most ``max_steps`` steps are kept, then trailing steps that do
    not fit in ``max_length`` tokens are dropped whole (the answer says how many were scored).

    A bundle exported without the training tokenizer and step settings has ``None`` for them
    (:attr:`takes_text` is false): it serves requests tokenized by the client only.

    Attributes:
        separator: ``data.step_separator`` of the training run (None: unknown).
        max_length: ``data.max_length``: most tokens per example (None: unknown).
        max_steps: ``data.max_steps_per_example``: most steps scored per example (None: unknown).
        prefix_ids: Ids put before every example (a backbone tokenizer's BOS), usually none.

    Example:
        >>> enc = StepEncoding.from_manifest(
        ...     {"reward": {"step_separator": "\\n", "max_length": 64, "max_steps_per_example": 4}}
        ... )
        >>> enc.separator, enc.max_length, enc.max_steps, enc.prefix_ids
        ('\\n', 64, 4, ())
    """

    separator: str | None
    max_length: int | None
    max_steps: int | None
    prefix_ids: tuple[int, ...] = ()
    text: bool = True  # the bundle has the training tokenizer (or trained on UTF-8 bytes)

    @property
    def takes_text(self) -> bool:
        """Problem/steps text can be encoded (the separator, limits and tokenizer are known)."""
        return self.text and self.separator is not None and self.max_length is not None and self.max_steps is not None

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> StepEncoding:
        """Read ``manifest["reward"]`` (written by the export).

        Without one (an export from before reward serving) the bundle takes token ids only.

        Raises:
            BundleError: The ``reward`` section holds a value of the wrong type (an edited manifest).
        """
        info = manifest.get("reward")
        fix = "re-export the bundle"
        if not isinstance(info, Mapping):
            return cls(None, None, None, text=False)
        sep, length, steps = info.get("step_separator"), info.get("max_length"), info.get("max_steps_per_example")
        prefix = info.get("prefix_ids") or []
        problems = []
        if sep is not None and (not isinstance(sep, str) or not sep):
            problems.append(f"step_separator must be a non-empty string, got {sep!r}")
        for name, value in (("max_length", length), ("max_steps_per_example", steps)):
            if value is not None and (type(value) is not int or value < 1):
                problems.append(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(prefix, list) or not all(type(i) is int and i >= 0 for i in prefix):
            problems.append(f"prefix_ids must be a list of token ids, got {prefix!r}")
        if problems:
            raise BundleError(f'manifest "reward": {"; ".join(problems)}; {fix}')
        return cls(sep, length, steps, tuple(int(i) for i in prefix), text=info.get("text_inputs", True) is not False)


@dataclass
class StepBatch:
    """Reward requests encoded for the model (:func:`encode_step_requests`).

    Attributes:
        tokens: int64 ``(B, T)``: each example's ids, right-padded with ``PAD``.
        lengths: int64 ``(B,)``: real tokens per example.
        positions: Per example, int64 ``(S,)``: the token index each scored step is read at.
        num_steps: Steps each example sent.
        problem_truncated: The problem was cut from the left to fit the first step.
    """

    tokens: np.ndarray
    lengths: np.ndarray
    positions: list[np.ndarray]
    num_steps: list[int]
    problem_truncated: list[bool]


def assemble_steps(
    prefix: Sequence[int] | np.ndarray,
    problem: np.ndarray,
    steps: Sequence[np.ndarray],
    sep: np.ndarray,
    *,
    max_length: int,
    max_steps: int,
) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """Join token pieces into one example, keeping whole steps within ``max_length`` (as training does).

    The same rules as ``trainengine.data`` 's ``assemble`` (a test holds them equal): at most
    ``max_steps`` steps; trailing steps that do not fit are dropped whole; when even the first
    step does not fit after the problem, the problem is cut from the left, and when the first
    step alone does not fit, it is cut from the left too (its separator always stays).

    Returns:
        ``(input_ids, step_positions, steps_kept, problem_truncated)``.

    Raises:
        InputError: ``max_length`` leaves no room for the prefix and one separator.

    Example:
        >>> a = lambda *x: np.asarray(x, dtype=np.int64)
        >>> ids, pos, kept, _ = assemble_steps([], a(1, 2, 3), [a(4), a(5, 6)], a(9), max_length=6, max_steps=10)
        >>> ids.tolist(), pos.tolist(), kept
        ([1, 2, 3, 9, 4, 9], [5], 1)
    """
    pre = np.asarray(prefix, dtype=np.int64)
    sep = np.asarray(sep, dtype=np.int64)
    if len(pre) + len(sep) > max_length:
        raise InputError(
            "inputs",
            f"max_length {max_length} leaves no room for one step: the prefix and step separator take "
            f"{len(pre) + len(sep)} tokens",
        )
    head = np.concatenate([np.asarray(problem, dtype=np.int64), sep])
    steps = list(steps)[:max_steps]
    total, kept = len(pre) + len(head), 0
    for s in steps:
        need = len(s) + len(sep)
        if total + need > max_length:
            break
        total += need
        kept += 1
    truncated = False
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
        pieces, positions = [pre, head], []
        pos = len(pre) + len(head)
        for s in steps[:kept]:
            pieces += [np.asarray(s, dtype=np.int64), sep]
            pos += len(s) + len(sep)
            positions.append(pos - 1)
    return np.concatenate(pieces), np.asarray(positions, dtype=np.int64), kept, truncated


def reward_inputs(payload: Any) -> Any:
    """The examples of a reward request: ``{"inputs": [...]}``, a list of examples, or one example.

    Example:
        >>> reward_inputs({"problem": "1+1?", "steps": ["2"]})
        [{'problem': '1+1?', 'steps': ['2']}]
        >>> reward_inputs({"inputs": [{"problem": "p", "steps": ["s"]}]})[0]["steps"]
        ['s']
    """
    if isinstance(payload, dict):
        if "inputs" in payload:
            return payload["inputs"]
        if any(key in payload for key in (*_TEXT_STEP_KEYS, *_TOKEN_STEP_KEYS)):
            return [payload]
        raise InputError(
            "inputs",
            f'missing; send {_STEP_REQUEST}, a list of them, or {{"inputs": [...]}}, got an object '
            f"with keys {sorted(payload)[:5]}",
        )
    if isinstance(payload, list):
        return payload
    raise InputError("inputs", f"expected {_STEP_REQUEST} or a list of them, got {_describe(payload)}")


def _text_ids(texts: list[str], tokenizer: Any, path: str) -> list[np.ndarray]:
    """Token ids of each text without special tokens: the bundle's tokenizer, else UTF-8 bytes."""
    try:
        if tokenizer is None:
            return [np.frombuffer(t.encode("utf-8"), dtype=np.uint8).astype(np.int64) for t in texts]
        return [np.asarray(e.ids, dtype=np.int64) for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    except UnicodeEncodeError as exc:
        raise InputError(path, f"the text is not valid Unicode ({exc.reason}); send UTF-8 text") from None


def _int_list(value: Any, path: str, what: str) -> np.ndarray:
    if not isinstance(value, list) or not value:
        raise InputError(path, f"expected a non-empty list of {what} (integers), got {_describe(value)}")
    if not set(map(type, value)) <= {int}:
        j = next(j for j, t in enumerate(value) if type(t) is not int)
        raise InputError(f"{path}[{j}]", f"not an integer, got {_describe(value[j])}")
    try:
        return np.asarray(value, dtype=np.int64)
    except OverflowError:
        j = next(j for j, t in enumerate(value) if not -(2**63) <= t < 2**63)
        raise InputError(f"{path}[{j}]", f"{value[j]} is out of range") from None


def _encode_step_item(
    item: Any, path: str, encoding: StepEncoding, sep: np.ndarray | None, tokenizer: Any, vocab: int | None
) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """(ids, step positions, steps sent, problem truncated) of one reward example."""
    if not isinstance(item, dict):
        raise InputError(path, f"expected {_STEP_REQUEST}, got {_describe(item)}")
    tokenized = any(key in item for key in _TOKEN_STEP_KEYS)
    allowed = _TOKEN_STEP_KEYS if tokenized else _TEXT_STEP_KEYS
    unknown = sorted(set(item) - set(allowed))
    if unknown:
        raise InputError(f"{path}.{unknown[0]}", f"unknown field; an example has exactly {', '.join(allowed)}")
    missing = [key for key in allowed if key not in item]
    if missing:
        raise InputError(f"{path}.{missing[0]}", f"missing; send {_STEP_REQUEST}")
    if tokenized:
        ids = _int_list(item["input_ids"], f"{path}.input_ids", "token ids")
        bad = (ids < 0) | (ids >= vocab) if vocab is not None else ids < 0
        if bad.any():
            j = int(np.argmax(bad))
            limit = f"[0, {vocab})" if vocab is not None else ">= 0"
            raise InputError(f"{path}.input_ids[{j}]", f"token id {int(ids[j])} is out of range {limit}")
        if encoding.max_length is not None and ids.size > encoding.max_length:
            raise InputError(
                f"{path}.input_ids",
                f"{ids.size} tokens, more than the max_length of {encoding.max_length} the model was trained with; "
                "drop trailing steps (or send text and let the server truncate whole steps)",
            )
        positions = _int_list(item["step_positions"], f"{path}.step_positions", "token indices")
        bad = (positions < 0) | (positions >= ids.size)
        if bad.any():
            j = int(np.argmax(bad))
            raise InputError(
                f"{path}.step_positions[{j}]",
                f"{int(positions[j])} is not a token index of input_ids (0..{ids.size - 1}); "
                "give the index of each step's last token",
            )
        return ids, positions, int(positions.size), False
    if sep is None or encoding.max_length is None or encoding.max_steps is None:
        raise InputError(
            path,
            'this bundle takes token ids only ({"input_ids": [...], "step_positions": [...]}): it was exported '
            "without the training tokenizer and step settings; re-export it with tokenizer_dir= and "
            "training_config= (or step_encoding=) to send problem/steps text",
        )
    problem, steps = item["problem"], item["steps"]
    if not isinstance(problem, str):
        raise InputError(f"{path}.problem", f"expected the problem's text (a string), got {_describe(problem)}")
    if not isinstance(steps, list) or not steps:
        raise InputError(f"{path}.steps", f"expected a non-empty list of step texts, got {_describe(steps)}")
    for j, step in enumerate(steps):
        if not isinstance(step, str):
            raise InputError(f"{path}.steps[{j}]", f"expected the step's text (a string), got {_describe(step)}")
        if not step:
            raise InputError(f"{path}.steps[{j}]", "empty step; send its text (or leave the step out)")
    pieces = _text_ids([problem, *steps[: encoding.max_steps]], tokenizer, path)
    if vocab is not None:
        for j, piece in enumerate(pieces):
            if piece.size and int(piece.max()) >= vocab:
                where = f"{path}.problem" if j == 0 else f"{path}.steps[{j - 1}]"
                raise InputError(where, f"gives token id {int(piece.max())}, outside the model's vocabulary of {vocab}")
    ids, positions, _kept, truncated = assemble_steps(
        encoding.prefix_ids,
        pieces[0],
        pieces[1:],
        sep,
        max_length=encoding.max_length,
        max_steps=encoding.max_steps,
    )
    return ids, positions, len(steps), truncated


def encode_step_requests(
    inputs: Any,
    encoding: StepEncoding,
    *,
    tokenizer: Any = None,
    vocab_size: int | None = None,
    max_batch: int | None = None,
    max_request_tokens: int | None = None,
) -> StepBatch:
    """Validate reward examples and encode each exactly as training did (:class:`StepEncoding`).

    Args:
        inputs: A non-empty list of examples, each ``{"problem": str, "steps": [str, ...]}``
            (non-empty steps) or ``{"input_ids": [...], "step_positions": [...]}`` (tokenized by
            the client: at most ``max_length`` ids, each position a token index).
        encoding: The bundle's step encoding.
        tokenizer: The bundle's ``tokenizers.Tokenizer``; ``None``: UTF-8 bytes are the ids.
        vocab_size: The model's vocabulary (ids at or above it are refused).
        max_batch: Refuse more examples than this.
        max_request_tokens: Refuse more tokens in all than this (:class:`LimitError`).

    Raises:
        InputError: Naming the first offending field (``inputs[1].steps: ...``).
        LimitError: Too many tokens in the request.

    Example:
        >>> enc = StepEncoding("\\n", max_length=64, max_steps=2)
        >>> batch = encode_step_requests([{"problem": "1+1?", "steps": ["2", "so 2", "done"]}], enc)
        >>> batch.positions[0].tolist(), batch.num_steps
        ([6, 11], [3])
        >>> encode_step_requests([{"problem": "p", "steps": []}], enc)
        Traceback (most recent call last):
        ...
        InputError: inputs[0].steps: expected a non-empty list of step texts, got shape [0]
    """
    if not isinstance(inputs, list):
        raise InputError("inputs", f"expected a list of examples, got {_describe(inputs)}")
    if not inputs:
        raise InputError("inputs", "empty batch; send at least one example")
    if max_batch is not None and len(inputs) > max_batch:
        raise InputError("inputs", f"{len(inputs)} examples exceed the batch limit of {max_batch}; split the request")
    sep = (
        _text_ids([encoding.separator], tokenizer, "inputs")[0] if encoding.takes_text and encoding.separator else None
    )
    if sep is not None and sep.size == 0:
        raise BundleError(f"the step separator {encoding.separator!r} has no tokens under the bundle's tokenizer")
    rows, positions, num_steps, truncated = [], [], [], []
    total = 0
    for i, item in enumerate(inputs):
        ids, pos, n, cut = _encode_step_item(item, f"inputs[{i}]", encoding, sep, tokenizer, vocab_size)
        rows.append(ids)
        positions.append(pos)
        num_steps.append(n)
        truncated.append(cut)
        total += ids.size
        if max_request_tokens is not None and total > max_request_tokens:
            raise LimitError(
                "inputs",
                f"the first {i + 1} of {len(inputs)} examples already hold {total} tokens, more than the limit of "
                f"{max_request_tokens} tokens per request (max_request_tokens); send fewer or shorter examples",
                "max_request_tokens",
            )
    lengths = np.array([r.size for r in rows], dtype=np.int64)
    tokens = np.full((len(rows), int(lengths.max())), PAD, dtype=np.int64)
    for i, r in enumerate(rows):
        tokens[i, : r.size] = r
    return StepBatch(tokens, lengths, positions, num_steps, truncated)


def score_steps(
    batch: StepBatch,
    forward: Callable[[np.ndarray], np.ndarray],
    *,
    max_batch_tokens: int | None = None,
    check: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """Per-step scores of encoded reward examples: ``{"scores", "num_steps", "steps_scored", "truncated", ...}``.

    The model (``forward``: token ids ``(b, T)`` -> per-token scores ``(b, T)``) runs on examples of
    one length at a time, unpadded, so every example is scored exactly as alone (whatever the
    backbone's attention); each step's score is read at its position.

    Args:
        batch: From :func:`encode_step_requests`.
        forward: Runs the model.
        max_batch_tokens: Run on chunks of at most this many tokens (rows x length).
        check: Called before every model call (a deadline; raising abandons the work).

    Returns:
        One dict per example: ``scores`` (one float in (0, 1) per scored step), ``num_steps``
        (steps sent), ``steps_scored``, ``truncated`` (steps were left unscored: beyond
        ``max_steps_per_example`` or ``max_length``) and ``problem_truncated``.

    Raises:
        LimitError: One example alone has more than ``max_batch_tokens`` tokens.
        InputError: A score is not finite.
        BundleError: The model does not return per-token scores ``(b, T)``.
    """
    out: list[dict[str, Any]] = [{}] * len(batch.lengths)
    for length in np.unique(batch.lengths).tolist():
        rows = np.flatnonzero(batch.lengths == length)
        if max_batch_tokens is not None and length > max_batch_tokens:
            raise LimitError(
                f"inputs[{int(rows[0])}]",
                f"{length} tokens, more than the limit of {max_batch_tokens} tokens per batch (max_batch_tokens)",
                "max_batch_tokens",
            )
        per = max(1, max_batch_tokens // length) if max_batch_tokens is not None else len(rows)
        for start in range(0, len(rows), per):
            chunk = rows[start : start + per]
            if check is not None:
                check()
            scores = np.asarray(forward(np.ascontiguousarray(batch.tokens[chunk, :length])))
            if scores.shape != (len(chunk), length):
                raise BundleError(
                    f"the reward model returned shape {list(scores.shape)} for {len(chunk)} sequences of {length} "
                    "tokens; it must return one score per token [B, T] (RewardModel without step_positions)"
                )
            for j, i in enumerate(chunk.tolist()):
                values = scores[j, batch.positions[i]].astype(np.float64)
                if not np.isfinite(values).all():
                    raise InputError(f"inputs[{i}]", "the model's score is not finite for this example")
                kept = int(values.size)
                out[i] = {
                    "scores": values.tolist(),
                    "num_steps": batch.num_steps[i],
                    "steps_scored": kept,
                    "truncated": kept < batch.num_steps[i],
                    "problem_truncated": batch.problem_truncated[i],
                }
    return out


# ----------------------------------------------------------------------------- predictors
def load_tokenizer(bundle: Bundle) -> Any:
    """The bundle's training tokenizer (``manifest["tokenizer"]["file"]``, a ``tokenizer.json``), or ``None``.

    ``None`` means byte-level text (UTF-8 bytes are the token ids), as for bundles without a
    tokenizer file.

    Raises:
        BundleError: The file is not part of the bundle or cannot be read, the ``tokenizers``
            package is missing (the message says what to install), or the tokenizer has more
            tokens than the model's vocabulary.
    """
    info = bundle.manifest.get("tokenizer")
    file = info.get("file") if isinstance(info, Mapping) else None
    if not file:
        return None
    if file not in (bundle.manifest.get("files") or {}):
        raise BundleError(f"bundle {bundle.path}: the manifest names tokenizer {file!r}, which is not a bundle file")
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise BundleError(
            f"bundle {bundle.path} tokenizes text with its {file}, which needs the tokenizers package: "
            "pip install tokenizers (the version is pinned in the bundle's requirements.txt)"
        ) from None
    try:
        tokenizer = Tokenizer.from_file(str(bundle.path / file))
    except Exception as exc:  # noqa: BLE001 - tokenizers raises a plain Exception for a bad file
        raise BundleError(f"cannot load the tokenizer {file} of {bundle.path}: {exc}") from None
    vocab = _vocab_size(bundle.manifest, bundle.task)
    if vocab is not None and tokenizer.get_vocab_size() > vocab:
        raise BundleError(
            f"the tokenizer {file} of {bundle.path} has {tokenizer.get_vocab_size()} tokens but the model's vocabulary "
            f"has {vocab}: the model was not trained with this tokenizer — re-export the bundle"
        )
    return tokenizer


class Predictor(abc.ABC):
    """Preprocess -> model -> postprocess for one bundle; subclasses supply :meth:`forward`.

    :class:`OnnxPredictor` runs ``model.onnx`` with onnxruntime; ``trainengine`` adds a torch
    predictor. Both share this class's input checks and output formatting, so they answer alike.

    Args:
        bundle: A loaded bundle (:func:`load_bundle`).
        max_new_tokens: Completion length of language-model predictions.
    """

    runtime = "base"

    def __init__(self, bundle: Bundle, *, max_new_tokens: int = MAX_NEW_TOKENS) -> None:
        self.bundle = bundle
        self.max_new_tokens = max_new_tokens
        self._tokens = bundle.task_type == "language_modeling"
        self._reward = bundle.task_type == REWARD_TASK
        # None: byte-level text (UTF-8 bytes are the token ids)
        self.tokenizer = load_tokenizer(bundle) if self._tokens or self._reward else None
        self._decode = self.tokenizer.decode if self.tokenizer is not None else None
        #: Reward bundles: how a problem and its steps are encoded (as in training); else None.
        self.step_encoding = StepEncoding.from_manifest(bundle.manifest) if self._reward else None

    @property
    def manifest(self) -> dict[str, Any]:
        return self.bundle.manifest

    @property
    def task(self) -> dict[str, Any]:
        return self.bundle.task

    @abc.abstractmethod
    def forward(self, x: np.ndarray) -> np.ndarray:
        """Run the model on a model-ready batch (token padding already replaced)."""

    def preprocess(
        self, inputs: Any, *, max_batch: int | None = None, max_request_tokens: int | None = None
    ) -> np.ndarray:
        """:func:`preprocess` with this bundle's manifest, task, preprocessing and tokenizer."""
        return preprocess(
            inputs,
            self.manifest,
            self.task,
            max_batch=max_batch,
            max_request_tokens=max_request_tokens,
            preprocessing=self.bundle.preprocessing,
            tokenizer=self.tokenizer,
        )

    def encode_steps(
        self, inputs: Any, *, max_batch: int | None = None, max_request_tokens: int | None = None
    ) -> StepBatch:
        """Reward bundles: :func:`encode_step_requests` with this bundle's encoding, tokenizer and vocabulary.

        Raises:
            InputError: An example does not fit (the message names the field); or the bundle is
                not a reward model.
        """
        if self.step_encoding is None:
            raise InputError(
                "inputs", f"problem/steps examples are for reward bundles; this one is {self.bundle.task_type}"
            )
        return encode_step_requests(
            inputs,
            self.step_encoding,
            tokenizer=self.tokenizer,
            vocab_size=_vocab_size(self.manifest, self.task),
            max_batch=max_batch,
            max_request_tokens=max_request_tokens,
        )

    def predict_steps(
        self, batch: StepBatch, *, max_batch_tokens: int | None = None, check: Callable[[], None] | None = None
    ) -> list[dict[str, Any]]:
        """Reward bundles: :func:`score_steps` of an encoded batch with this predictor's model."""
        return score_steps(batch, self.forward, max_batch_tokens=max_batch_tokens, check=check)

    def context_width(self, prompt_tokens: int, max_new_tokens: int | None = None) -> int:
        """The widest context a prompt of this many tokens reaches while its completion is generated."""
        new = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        grown = prompt_tokens + max(new - 1, 0)
        max_len = self.bundle.max_seq_len
        return min(grown, max(max_len, prompt_tokens)) if max_len is not None else grown

    def predict_array(
        self,
        x: np.ndarray,
        *,
        max_batch_tokens: int | None = None,
        check: Callable[[], None] | None = None,
        sampling: Sampling | None = None,
    ) -> list[dict[str, Any]]:
        """Predictions for a preprocessed batch.

        Args:
            x: A batch from :meth:`preprocess`.
            max_batch_tokens: Token inputs: run the model on chunks of examples of at most this
                many tokens each (rows x the widest context of the chunk, completion included),
                grouped by length so that little padding is computed; answers keep the request's
                order. ``None``: the whole batch at once.
            check: Called before every model call; raising there abandons the work (a deadline
                passed, the client left). A running model call cannot be interrupted, so this is
                how a server bounds the work of one request.
            sampling: Language models: completion length and decoding of this request
                (:func:`sampling_options`); default: greedy, ``max_new_tokens`` tokens.

        Raises:
            LimitError: One example alone needs more than ``max_batch_tokens``.
        """
        if not self._tokens:
            if check is not None:
                check()
            return postprocess(
                self.forward(x),
                self.task,
                target_scaling=self.manifest.get("target_scaling"),
                class_names=self.bundle.class_names,
            )
        forward: Callable[[np.ndarray], np.ndarray] = self.forward
        if check is not None:

            def checked(batch: np.ndarray) -> np.ndarray:
                check()
                return self.forward(batch)

            forward = checked

        sampling = sampling or Sampling(max_new_tokens=self.max_new_tokens)
        generators = sampling.generators(len(x))  # per example, before chunking: batching changes no draw
        lengths = (x != PAD).sum(axis=1)  # (B,) right padding: the real tokens come first
        if max_batch_tokens is None:
            chunks = [np.arange(len(x))]
        else:
            chunks = self._token_chunks(lengths, max_batch_tokens, sampling.max_new_tokens)
        out: list[dict[str, Any]] = [{}] * len(x)
        for rows in chunks:
            tokens = x[rows, : int(lengths[rows].max())]  # (b, widest prompt of the chunk)
            predictions = postprocess(
                forward(model_input(tokens)),
                self.task,
                tokens=tokens,
                forward=forward,
                max_new_tokens=sampling.max_new_tokens,
                max_seq_len=self.bundle.max_seq_len,
                decode=self._decode,
                sampling=sampling,
                generators=[generators[i] for i in rows.tolist()],
            )
            for i, prediction in zip(rows.tolist(), predictions, strict=True):
                out[i] = prediction
        return out

    def _token_chunks(self, lengths: np.ndarray, max_batch_tokens: int, max_new_tokens: int) -> list[np.ndarray]:
        """Row indices per chunk: shortest prompts first, each chunk within ``max_batch_tokens``."""
        chunks: list[np.ndarray] = []
        current: list[int] = []
        for i in np.argsort(lengths, kind="stable").tolist():
            width = self.context_width(int(lengths[i]), max_new_tokens)  # the widest row so far: lengths ascend
            if width > max_batch_tokens:
                raise LimitError(
                    f"inputs[{i}]",
                    f"{int(lengths[i])} tokens grow to {width} with the {max_new_tokens}-token completion, more "
                    f"than the limit of {max_batch_tokens} tokens per batch (max_batch_tokens); send a shorter text",
                    "max_batch_tokens",
                )
            if current and (len(current) + 1) * width > max_batch_tokens:
                chunks.append(np.asarray(current))
                current = []
            current.append(i)
        chunks.append(np.asarray(current))
        return chunks

    def predict(self, inputs: Any, sampling: Sampling | None = None) -> list[dict[str, Any]]:
        """Predictions for a list of JSON examples (``sampling``: language models, see :func:`sampling_options`).

        Reward bundles take ``{"problem": str, "steps": [str, ...]}`` examples (:meth:`encode_steps`)
        and answer per-step scores (:func:`score_steps`).

        Raises:
            InputError: An example does not fit the model (the message names the field).
        """
        if self._reward:
            return self.predict_steps(self.encode_steps(inputs))
        return self.predict_array(self.preprocess(inputs), sampling=sampling)


class OnnxPredictor(Predictor):
    """Predictions from a bundle's ONNX model with onnxruntime (CPU).

    Args:
        bundle_dir: The bundle's folder; every file is verified against the manifest first.
        model_file: ``model.onnx`` (default: the manifest's ``formats.onnx.file``) or
            ``model.int8.onnx``; must be a file of the bundle.
        num_threads: onnxruntime intra-op threads (default: onnxruntime's choice).
        max_new_tokens: Completion length of language-model predictions.
        device: ``cpu``, or ``cuda`` / ``cuda:N`` for onnxruntime's CUDA execution provider
            (``onnxruntime-gpu``; operators it lacks fall back to the CPU).

    Raises:
        BundleError: The bundle fails verification or has no such model file, or ``device`` is
            CUDA and this onnxruntime has no CUDA provider.

    Example:
        >>> predictor = OnnxPredictor("bundle/")  # doctest: +SKIP
        >>> predictor.predict([[0.0] * 64])[0]["class"]  # doctest: +SKIP
        3
    """

    runtime = "onnx"

    def __init__(
        self,
        bundle_dir: str | os.PathLike[str],
        model_file: str | None = None,
        *,
        num_threads: int | None = None,
        max_new_tokens: int = MAX_NEW_TOKENS,
        device: str = "cpu",
    ) -> None:
        super().__init__(load_bundle(bundle_dir), max_new_tokens=max_new_tokens)
        try:
            import onnxruntime as ort
        except ImportError:
            raise BundleError("OnnxPredictor needs onnxruntime: pip install onnxruntime") from None
        kind, _, index = device.partition(":")
        providers: list[Any] = ["CPUExecutionProvider"]
        if kind == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BundleError(
                    f"device {device!r}: this onnxruntime has no CUDA provider (available: "
                    f"{', '.join(ort.get_available_providers())}); pip install onnxruntime-gpu, or serve with "
                    "runtime 'torch' on the GPU"
                )
            providers = [("CUDAExecutionProvider", {"device_id": int(index or 0)}), "CPUExecutionProvider"]
        elif kind != "cpu":
            raise BundleError(f"device must be cpu or cuda (cuda:N), got {device!r}")
        self.device = device
        listed = sorted(self.manifest.get("files") or {})
        default = ((self.manifest.get("formats") or {}).get("onnx") or {}).get("file", "model.onnx")
        self.model_file = model_file or default
        onnx_files = ", ".join(f for f in listed if f.endswith(".onnx")) or "none (export with the onnx format)"
        if self.model_file not in listed or not self.model_file.endswith(".onnx"):
            raise BundleError(
                f"model file {self.model_file!r} is not an ONNX model of the bundle {self.bundle.path} — "
                f"available: {onnx_files}"
            )
        options = ort.SessionOptions()
        if num_threads is not None:
            options.intra_op_num_threads = num_threads
        # onnxruntime's workers spin-wait between calls by default; in a server whose cores also run
        # the HTTP stack, that burns them (measured: batch-32 requests/s +40% without it, 2 cores).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.bundle.path / self.model_file), options, providers=providers)
        except Exception as exc:
            raise BundleError(f"onnxruntime cannot load {self.model_file} of {self.bundle.path}: {exc}") from exc
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        # onnxruntime's CPU arena keeps the high-water mark of its largest call; after a large one,
        # hand the unused part back (small calls keep the arena: re-allocating would cost time).
        self._shrink = ort.RunOptions()
        self._shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Run the ONNX model (thread-safe: one session serves concurrent calls)."""
        options = self._shrink if x.size >= _SHRINK_ARENA_AFTER else None
        return self.session.run([self.output_name], {self.input_name: x}, options)[0]


# ----------------------------------------------------------------------------- drift
def _feature_columns(reference: Mapping[str, Any]) -> list[tuple[str, int, np.ndarray, np.ndarray]]:
    """(name, flat column, edges, reference vector) per profiled feature, in the profile's order."""
    columns = []
    for name, hist in (reference.get("features") or {}).items():
        try:
            column = int(str(name).rsplit("_", 1)[1])
        except (IndexError, ValueError):
            raise ValueError(f"reference profile feature {name!r} is not named feature_<index>") from None
        columns.append((name, column, np.asarray(hist["edges"], dtype=np.float64), histogram_vector(hist)))
    return columns


def drift_divergences(reference: Mapping[str, Any], current: np.ndarray | Sequence[np.ndarray]) -> dict[str, float]:
    """Jensen–Shannon divergence (base 2) per feature of ``current`` against a reference profile.

    The same numbers as ``compare_profiles(reference, profile_dataset(current,
    reference=reference)).per_feature`` in ``trainengine.monitoring``, with numpy only.

    Args:
        reference: ``reference_profile.json`` (``DatasetProfile.to_dict()``).
        current: Feature data: an array ``(N, ...)`` (flattened per example). Token data: a
            sequence of 1-D arrays of token ids, one per example.

    Returns:
        ``{"feature_0": js, ...}`` for feature profiles; ``{"token_ids": js,
        "sequence_length": js}`` for token profiles.

    Raises:
        ValueError: An empty ``current`` or fewer features than the profile.
    """
    if reference.get("kind") == "tokens":
        rows = [np.asarray(r).reshape(-1) for r in current]
        if not rows:
            raise ValueError("drift needs at least one example")
        tokens = np.concatenate(rows).astype(np.int64)
        uniq, counts = np.unique(tokens, return_counts=True)
        out = {
            "token_ids": categorical_js(
                reference.get("token_counts") or {}, {str(int(u)): int(c) for u, c in zip(uniq, counts, strict=True)}
            )
        }
        seq = reference.get("sequence_length")
        if seq:
            lengths = np.array([r.size for r in rows], dtype=np.float64)
            out["sequence_length"] = js_divergence(
                histogram_vector(seq), bin_vector(lengths, np.asarray(seq["edges"], dtype=np.float64))
            )
        return out
    matrix = np.asarray(current)
    if matrix.ndim == 0 or matrix.shape[0] == 0:
        raise ValueError("drift needs at least one example")
    matrix = matrix.reshape(matrix.shape[0], -1)  # (N, F)
    out = {}
    for name, column, edges, ref_vector in _feature_columns(reference):
        if column >= matrix.shape[1]:
            raise ValueError(f"the inputs have {matrix.shape[1]} features but the reference profile has {name}")
        out[name] = js_divergence(ref_vector, bin_vector(matrix[:, column], edges))
    return out


def drift_score(reference: Mapping[str, Any], current: np.ndarray | Sequence[np.ndarray]) -> float:
    """Overall drift: the mean of :func:`drift_divergences` (``compare_profiles(...).overall``).

    Example:
        >>> ref = {"kind": "features", "features": {"feature_0": {"edges": [0.0, 0.5, 1.0], "counts": [5, 5]}}}
        >>> drift_score(ref, np.array([[0.2], [0.7]])), drift_score(ref, np.array([[3.0], [4.0]]))
        (0.0, 1.0)
    """
    values = list(drift_divergences(reference, current).values())
    overall = float(np.mean(values)) if values else 0.0
    return overall if math.isfinite(overall) else 1.0


class DriftWindow:
    """The last ``max_examples`` inputs (bounded memory) and their drift against a reference profile.

    :meth:`add` costs O(batch) (a copy into a ring buffer); :meth:`score` costs O(window) and is
    meant for a scrape or a background refresh, not the request path.

    Args:
        reference: ``reference_profile.json``.
        max_examples: Window length in examples.
        max_tokens: Token data: also keep at most this many tokens (oldest examples go first).

    Example:
        >>> ref = {"kind": "features", "features": {"feature_0": {"edges": [0.0, 0.5, 1.0], "counts": [5, 5]}}}
        >>> window = DriftWindow(ref, max_examples=3)
        >>> window.add(np.array([[0.2], [0.7], [5.0], [5.0]]))
        >>> window.num_examples, round(window.score(), 3)
        (3, 0.595)
    """

    def __init__(self, reference: Mapping[str, Any], *, max_examples: int = 2000, max_tokens: int = 262_144) -> None:
        if max_examples < 1:
            raise ValueError(f"max_examples must be >= 1, got {max_examples}")
        self.reference = reference
        self.max_examples = max_examples
        self.max_tokens = max_tokens
        self._lock = threading.Lock()
        self._tokens = reference.get("kind") == "tokens"
        self._num_features = 1 + max((c for _, c, _, _ in _feature_columns(reference)), default=-1)
        self._rows: deque[np.ndarray] = deque()
        self._token_total = 0
        self._buffer: np.ndarray | None = None  # (max_examples, num_features) ring buffer
        self._next = 0
        self._count = 0
        self.version = 0  # bumped by every add: lets a caller skip recomputing an unchanged window

    @property
    def num_examples(self) -> int:
        """Examples in the window now."""
        return len(self._rows) if self._tokens else self._count

    def add(self, batch: np.ndarray) -> None:
        """Record a preprocessed batch (``PAD`` token padding is dropped)."""
        if self._tokens:
            rows = [r[r != PAD].astype(np.int64) for r in np.asarray(batch)][-self.max_examples :]
            with self._lock:
                for r in rows:
                    self._rows.append(r[-self.max_tokens :])
                    self._token_total += min(r.size, self.max_tokens)
                while len(self._rows) > self.max_examples or self._token_total > self.max_tokens:
                    self._token_total -= self._rows.popleft().size
                self.version += 1
            return
        flat = np.asarray(batch).reshape(len(batch), -1)[-self.max_examples :, : self._num_features]
        if flat.shape[1] < self._num_features:
            raise ValueError(f"inputs have {flat.shape[1]} features; the reference profile needs {self._num_features}")
        with self._lock:
            if self._buffer is None:
                self._buffer = np.empty((self.max_examples, self._num_features), dtype=np.float64)
            n = flat.shape[0]
            first = min(n, self.max_examples - self._next)
            self._buffer[self._next : self._next + first] = flat[:first]
            self._buffer[: n - first] = flat[first:]  # wrap around
            self._next = (self._next + n) % self.max_examples
            self._count = min(self._count + n, self.max_examples)
            self.version += 1

    def score(self) -> float | None:
        """The drift score of the window now (:func:`drift_score`), or ``None`` when it is empty."""
        with self._lock:  # copy under the lock, compute outside it
            if self._tokens:
                current: Any = list(self._rows)
            else:
                current = None if self._buffer is None else self._buffer[: self._count].copy()
        if current is None or len(current) == 0:
            return None
        return drift_score(self.reference, current)


# ----------------------------------------------------------------------------- script
def main(argv: Sequence[str] | None = None) -> int:
    """``python inference.py --input examples.json [--bundle DIR] [--model FILE]``."""
    parser = argparse.ArgumentParser(description="Predict with a trainengine export bundle (ONNX Runtime).")
    parser.add_argument("--input", required=True, help='JSON file: {"inputs": [example, ...]} or a list of examples')
    parser.add_argument(
        "--bundle", default=str(Path(__file__).resolve().parent), help="bundle folder (default: this script's folder)"
    )
    parser.add_argument("--model", default=None, help="ONNX file of the bundle, e.g. model.onnx or model.int8.onnx")
    args = parser.parse_args(argv)
    try:
        try:
            payload = json.loads(Path(args.input).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError("--input", f"cannot read {args.input} as JSON: {exc}") from None
        predictor = OnnxPredictor(args.bundle, args.model)
        if predictor.bundle.task_type == REWARD_TASK:
            inputs = reward_inputs(payload)
        else:
            inputs = payload.get("inputs") if isinstance(payload, dict) else payload
            if isinstance(payload, dict) and "inputs" not in payload:
                raise InputError("inputs", f'missing; {args.input} must hold {{"inputs": [example, ...]}}')
        sampling = None
        if predictor.bundle.task_type == "language_modeling" and isinstance(payload, dict):
            limit = predictor.bundle.monitoring.get("max_new_tokens") or MAX_NEW_TOKENS_LIMIT
            sampling = sampling_options(payload, max_new_tokens_limit=int(limit))
        predictions = predictor.predict(inputs, sampling)
    except (InputError, BundleError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    json.dump(
        {"predictions": predictions, "model": predictor.bundle.name, "version": predictor.bundle.version}, sys.stdout
    )
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
