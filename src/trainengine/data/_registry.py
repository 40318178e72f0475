"""Registry of named, offline data sets and :func:`load_builtin`."""

from __future__ import annotations

import dataclasses
from typing import Protocol

from trainengine.data._fingerprint import combine_fingerprints, fingerprint_dataset
from trainengine.data._types import DatasetSplits
from trainengine.errors import DataError
from trainengine.registries import DATASETS
from trainengine.registries import register_dataset as register

__all__ = ["DatasetFactory", "register_dataset", "list_datasets", "load_builtin"]


class DatasetFactory(Protocol):
    """Builds the splits of one named data set. Receives every :func:`load_builtin` option
    (keyword-only); options that do not apply must be ignored, or rejected with a
    :class:`DataError` when set to a value the data set cannot honour (``image=True`` on text).
    ``info.fingerprint`` may be left ``""``: :func:`load_builtin` fills it in."""

    def __call__(
        self,
        *,
        val_fraction: float,
        seed: int,
        max_length: int,
        max_train_samples: int | None,
        max_val_samples: int | None,
        image: bool,
        max_corpus_bytes: int,
    ) -> DatasetSplits: ...


def register_dataset(name: str, factory: DatasetFactory, *, overwrite: bool = False) -> None:
    """Add a named data set that :func:`load_builtin` and ``data.dataset: <name>`` can use.

    The entry goes into :data:`trainengine.registries.DATASETS`, which the config checks
    ``data.dataset`` against.

    Args:
        name: registry key (stored lower-case).
        factory: callable taking the :func:`load_builtin` options as keywords and returning
            :class:`DatasetSplits`.
        overwrite: replace an existing entry instead of raising.

    Raises:
        DataError: ``name`` is empty or already registered (and ``overwrite`` is False).

    Example:
        >>> register_dataset("digits", lambda **kw: None)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        trainengine.errors.DataError: dataset 'digits' is already registered (...); ... overwrite=True to replace it
    """
    register(name, factory, overwrite=overwrite)


def list_datasets() -> list[str]:
    """Names of the registered data sets, sorted.

    Example:
        >>> list_datasets()[:3]
        ['diabetes', 'digits', 'pystdlib']
    """
    return DATASETS.names()


def _validate(
    val_fraction: float,
    seed: int,
    max_length: int,
    max_train_samples: int | None,
    max_val_samples: int | None,
    max_corpus_bytes: int,
) -> None:
    problems = []

    def is_int(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if not isinstance(val_fraction, (int, float)) or not 0.0 < float(val_fraction) < 1.0:
        problems.append(f"val_fraction must be strictly between 0 and 1; got {val_fraction!r}")
    if not is_int(seed) or not 0 <= seed < 2**32:
        problems.append(f"seed must be an integer in [0, 2**32); got {seed!r}")
    if not is_int(max_length) or max_length < 1:
        problems.append(f"max_length must be an integer >= 1; got {max_length!r}")
    for label, cap in (("max_train_samples", max_train_samples), ("max_val_samples", max_val_samples)):
        if cap is not None and (not is_int(cap) or cap < 1):
            problems.append(f"{label} must be None or an integer >= 1; got {cap!r}")
    if not is_int(max_corpus_bytes) or max_corpus_bytes < 2:
        problems.append(f"max_corpus_bytes must be an integer >= 2; got {max_corpus_bytes!r}")
    if problems:
        raise DataError("invalid data set options: " + "; ".join(problems))


def load_builtin(
    name: str,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    max_length: int = 128,
    max_train_samples: int | None = None,
    max_val_samples: int | None = None,
    image: bool = False,
    max_corpus_bytes: int = 2_000_000,
) -> DatasetSplits:
    """Build the train/validation splits of a registered offline data set.

    Built in: ``digits`` (8x8 digit images, 10 classes), ``diabetes`` (regression, 10 features,
    standardized target), ``pystdlib`` (byte-level language modeling on the Python standard
    library's source). Nothing is downloaded.

    Args:
        name: registry name (case-insensitive); see :func:`list_datasets`.
        val_fraction: share of the data (samples, or files for ``pystdlib``) for validation.
        seed: split seed; the same seed gives the same split and fingerprint.
        max_length: ``pystdlib`` only: tokens per sample (T).
        max_train_samples: keep only the first N training samples after the split.
        max_val_samples: keep only the first N validation samples after the split.
        image: ``digits`` only: samples shaped ``(1, 8, 8)`` instead of ``(64,)``.
        max_corpus_bytes: ``pystdlib`` only: bytes read in total (train gets
            ``1 - val_fraction`` of them).

    Returns:
        :class:`DatasetSplits` with ``info.fingerprint`` set.

    Raises:
        DataError: unknown name (the message lists the available ones) or invalid options.

    Example:
        >>> splits = load_builtin("digits", image=True, max_train_samples=100)
        >>> len(splits.train), tuple(splits.train[0][0].shape)
        (100, (1, 8, 8))
    """
    key = name.strip().lower() if isinstance(name, str) else ""
    problem = DATASETS.problem(key)
    if problem is not None:
        raise DataError(problem)
    _validate(val_fraction, seed, max_length, max_train_samples, max_val_samples, max_corpus_bytes)
    if getattr(DATASETS.get(key), "takes_config", False):
        raise DataError(
            f"data set '{key}' reads its files and settings from a config (its data paths, the backbone's "
            "tokenizer): set data.dataset in a TrainingConfig and use trainengine.engine.build_from_config(config) "
            "or trainengine train"
        )
    splits = DATASETS.get(key)(
        val_fraction=float(val_fraction),
        seed=seed,
        max_length=max_length,
        max_train_samples=max_train_samples,
        max_val_samples=max_val_samples,
        image=bool(image),
        max_corpus_bytes=max_corpus_bytes,
    )
    info = splits.info
    if not info.fingerprint:
        fp = combine_fingerprints(fingerprint_dataset(splits.train), fingerprint_dataset(splits.val))
        info = dataclasses.replace(info, fingerprint=fp)
        splits = dataclasses.replace(splits, info=info)
    return splits
