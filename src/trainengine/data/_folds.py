"""K-fold splits of a training set: the one splitter behind ``trainengine train --cv`` and the
scikit-learn trainer's cross-validation, so both make the same folds from the same seed."""

from __future__ import annotations

from typing import Any

import numpy as np

from trainengine.errors import DataError

__all__ = ["make_folds"]


def make_folds(
    num_samples: int,
    k: int,
    task_type: str,
    seed: int,
    labels: Any = None,
    *,
    option: str = "cv={k}",
) -> tuple[list[tuple[np.ndarray, np.ndarray]], dict[str, Any]]:
    """The ``(train_indices, val_indices)`` of each fold and how they were made.

    Classification: ``StratifiedKFold(k, shuffle=True, random_state=seed)`` on ``labels``;
    regression: ``KFold(k, shuffle=True, random_state=seed)``; language modeling:
    ``KFold(k)`` in contiguous blocks (neighbouring windows share text).

    Args:
        num_samples: the size of the training set.
        k: the number of folds, 2 or more.
        task_type: ``classification``, ``regression`` or ``language_modeling``.
        seed: the shuffle seed.
        labels: one class label per sample (classification only).
        option: how the caller's user spells the fold count, ``{k}`` filled in (``"--cv {k}"``
            on the command line): error messages say what to change in their words.

    Raises:
        DataError: fewer than 2 folds, more folds than samples, or a class too small to appear in
            every fold.

    Example:
        >>> folds, how = make_folds(10, 5, "regression", seed=0)
        >>> [len(va) for _, va in folds], how["splitter"]
        ([2, 2, 2, 2, 2], 'KFold')
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    if not isinstance(k, int) or isinstance(k, bool) or k < 2:
        raise DataError(f"{option.format(k=k)}: k-fold cross-validation needs a whole number of folds >= 2")
    if k > num_samples:
        raise DataError(
            f"{option.format(k=k)}: the training data has only {num_samples} samples; use at most {num_samples} folds"
        )
    index = np.arange(num_samples)
    if task_type == "classification":
        y = np.asarray(labels)
        _, counts = np.unique(y.astype(str) if y.dtype == object else y, return_counts=True)
        if counts.min() < k:
            raise DataError(
                f"{option.format(k=k)}: the smallest class of the training data has {int(counts.min())} samples, "
                f"fewer than the {k} folds StratifiedKFold needs; use {option.format(k=max(2, int(counts.min())))} "
                "or more data"
            )
        splitter: Any = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        folds = list(splitter.split(index, y))
        how: dict[str, Any] = {"splitter": "StratifiedKFold", "shuffle": True, "seed": seed}
    elif task_type == "language_modeling":
        folds = list(KFold(n_splits=k).split(index))
        how = {"splitter": "KFold", "shuffle": False, "seed": None}
    else:
        folds = list(KFold(n_splits=k, shuffle=True, random_state=seed).split(index))
        how = {"splitter": "KFold", "shuffle": True, "seed": seed}
    how.update(k=k, num_samples=num_samples, fold_sizes=[len(va) for _, va in folds])
    return folds, how
