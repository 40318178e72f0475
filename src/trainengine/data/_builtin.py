"""The offline built-in data sets: scikit-learn's bundled ``digits`` and ``diabetes``, and
``pystdlib``, a byte-level corpus made from the Python standard library's own source files."""

from __future__ import annotations

import hashlib
import os
import sys
import sysconfig

import numpy as np
import torch

from trainengine.data._datasets import InMemoryDataset, TokenWindowDataset
from trainengine.data._registry import register_dataset
from trainengine.data._types import DatasetInfo, DatasetSplits
from trainengine.errors import DataError

__all__: list[str] = []

# Folders under the stdlib root that are not "the standard library's own code": third-party
# packages, the (huge, repetitive) test suites, and two tools with large generated tables.
_PYSTDLIB_SKIP_DIRS = frozenset(
    {"site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__"}
)
_SEPARATOR = 0  # byte written after every file (an end-of-document marker)


def _reject_image(name: str, image: bool) -> None:
    if image:
        raise DataError(f"image=True is only supported by 'digits'; dataset '{name}' has no image form")


def _split_error(name: str, exc: ValueError) -> DataError:
    return DataError(f"cannot split '{name}' with these options: {exc}")


def _digits(
    *,
    val_fraction: float,
    seed: int,
    max_train_samples: int | None,
    max_val_samples: int | None,
    image: bool,
    **_: object,
) -> DatasetSplits:
    from sklearn.datasets import load_digits  # lazy: scikit-learn costs ~0.7 s to import
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)  # (1797, 64), pixel counts 0..16 -> [0, 1]
    y = bunch.target.astype(np.int64)  # (1797,)
    try:
        # Stratified: every class keeps its share in both splits (all 10 appear in val).
        tr, va = train_test_split(np.arange(len(y)), test_size=val_fraction, stratify=y, random_state=seed)
    except ValueError as exc:
        raise _split_error("digits", exc) from exc
    tr, va = tr[:max_train_samples], va[:max_val_samples]
    shape = (1, 8, 8) if image else (64,)

    def part(idx: np.ndarray) -> InMemoryDataset:
        xs = torch.from_numpy(np.ascontiguousarray(x[idx])).reshape(len(idx), *shape)
        return InMemoryDataset((xs, torch.from_numpy(y[idx])))

    info = DatasetInfo(
        name="digits",
        task_type="classification",
        input_dim=64,
        num_classes=10,
        vocab_size=None,
        seq_len=None,
        input_shape=shape,
        num_train=len(tr),
        num_val=len(va),
        extra={"image": image, "class_names": [str(c) for c in range(10)], "pixel_max": 16},
    )
    return DatasetSplits(train=part(tr), val=part(va), info=info)


def _diabetes(
    *,
    val_fraction: float,
    seed: int,
    max_train_samples: int | None,
    max_val_samples: int | None,
    image: bool,
    **_: object,
) -> DatasetSplits:
    _reject_image("diabetes", image)
    from sklearn.datasets import load_diabetes  # lazy: scikit-learn costs ~0.7 s to import
    from sklearn.model_selection import train_test_split

    bunch = load_diabetes()  # features already mean-centred and scaled by scikit-learn
    x = bunch.data.astype(np.float32)  # (442, 10)
    y = bunch.target.astype(np.float64)  # (442,), disease progression 25..346
    try:
        tr, va = train_test_split(np.arange(len(y)), test_size=val_fraction, random_state=seed)
    except ValueError as exc:
        raise _split_error("diabetes", exc) from exc
    tr, va = tr[:max_train_samples], va[:max_val_samples]
    # Standardize with TRAIN statistics only (val must not leak into the scaling).
    mean = float(y[tr].mean())
    std = float(y[tr].std())
    std = std if std > 1e-12 else 1.0  # a single training sample: keep the scale

    def part(idx: np.ndarray) -> InMemoryDataset:
        ys = ((y[idx] - mean) / std).astype(np.float32)  # (n,) -> items are 0-dim
        return InMemoryDataset((torch.from_numpy(np.ascontiguousarray(x[idx])), torch.from_numpy(ys)))

    info = DatasetInfo(
        name="diabetes",
        task_type="regression",
        input_dim=10,
        num_classes=None,
        vocab_size=None,
        seq_len=None,
        input_shape=(10,),
        num_train=len(tr),
        num_val=len(va),
        target_mean=mean,
        target_std=std,
        extra={"feature_names": list(bunch.feature_names), "target_shape": "0-dim per sample"},
    )
    return DatasetSplits(train=part(tr), val=part(va), info=info)


def _stdlib_files(root: str) -> list[str]:
    """Relative posix paths of the stdlib's .py files, in sorted path-component order."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _PYSTDLIB_SKIP_DIRS]
        rel_dir = os.path.relpath(dirpath, root)
        for f in filenames:
            if f.endswith(".py"):
                rel = f if rel_dir == "." else os.path.join(rel_dir, f)
                found.append(rel.replace(os.sep, "/"))
    # Sort by components so a package's files stay together and order is platform-independent.
    found.sort(key=lambda p: p.split("/"))
    return found


def _is_val_file(rel: str, seed: int, val_fraction: float) -> bool:
    # A keyed hash of the path: stable across runs/machines, independent per file, no RNG state.
    digest = hashlib.sha256(f"pystdlib|{seed}|{rel}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < val_fraction


def _pystdlib(
    *,
    val_fraction: float,
    seed: int,
    max_length: int,
    max_train_samples: int | None,
    max_val_samples: int | None,
    image: bool,
    max_corpus_bytes: int,
    **_: object,
) -> DatasetSplits:
    _reject_image("pystdlib", image)
    root = sysconfig.get_paths()["stdlib"]
    files = _stdlib_files(root)
    if not files:
        raise DataError(f"pystdlib: no .py files found under the standard library at {root!r}")
    budget = {"train": round(max_corpus_bytes * (1.0 - val_fraction))}
    budget["val"] = max_corpus_bytes - budget["train"]
    need = max_length + 1
    for split, b in budget.items():
        if b < need:
            raise DataError(
                f"pystdlib: the {split} budget is {b} bytes (max_corpus_bytes={max_corpus_bytes}, "
                f"val_fraction={val_fraction}) but one sample needs {need} bytes "
                f"(max_length={max_length}); raise max_corpus_bytes or lower max_length"
            )
    bufs = {"train": bytearray(), "val": bytearray()}
    used: dict[str, list[str]] = {"train": [], "val": []}
    for rel in files:
        split = "val" if _is_val_file(rel, seed, val_fraction) else "train"
        room = budget[split] - len(bufs[split])
        if room <= 0:
            if all(len(bufs[s]) >= budget[s] for s in bufs):
                break  # both splits full: the rest of the tree is never read
            continue
        try:
            with open(os.path.join(root, rel), "rb") as fh:
                data = fh.read(room)  # never read more than the split still takes
        except OSError:
            continue  # unreadable (permissions, broken link): skip, as documented
        bufs[split] += (data + bytes([_SEPARATOR]))[:room]
        used[split].append(rel)

    parts = {}
    for split, cap in (("train", max_train_samples), ("val", max_val_samples)):
        if len(bufs[split]) < need:
            raise DataError(
                f"pystdlib: only {len(bufs[split])} bytes of {split} files were found under {root!r} "
                f"but one sample needs {need}; lower max_length or change val_fraction/seed"
            )
        stream = torch.from_numpy(np.frombuffer(bytes(bufs[split]), dtype=np.uint8).copy())
        parts[split] = TokenWindowDataset.from_stream(stream, max_length, max_windows=cap)

    info = DatasetInfo(
        name="pystdlib",
        task_type="language_modeling",
        input_dim=None,
        num_classes=None,
        vocab_size=256,
        seq_len=max_length,
        input_shape=(max_length,),
        num_train=len(parts["train"]),
        num_val=len(parts["val"]),
        extra={
            "stdlib_root": root,
            "python_version": sys.version.split()[0],
            "train_files": used["train"],
            "val_files": used["val"],
            "train_bytes": len(bufs["train"]),
            "val_bytes": len(bufs["val"]),
            "separator_byte": _SEPARATOR,
            "skipped_dirs": sorted(_PYSTDLIB_SKIP_DIRS),
        },
    )
    return DatasetSplits(train=parts["train"], val=parts["val"], info=info)


register_dataset("digits", _digits)
register_dataset("diabetes", _diabetes)
register_dataset("pystdlib", _pystdlib)
