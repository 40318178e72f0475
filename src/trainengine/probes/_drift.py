"""Data drift: profile a data set, compare two profiles with the Jensen–Shannon divergence.

:func:`profile_dataset` summarises up to ``max_items`` samples of a data set as histograms:

- **feature data** (``(x, y)`` samples with numeric ``x``; images are flattened): one histogram
  per feature for the first ``max_features`` (64) flattened features, with ``bins`` equal-width
  bins between the feature's min and max (the edges are stored), plus the label distribution —
  class counts for classification, a histogram for regression targets;
- **token data** (integer sequences, language modeling): a token-id histogram and the
  distribution of sequence lengths. Positions whose label is the task's ``ignore_index``
  (-100, padding) or whose ``attention_mask`` is 0 are not counted, and a sequence's length is
  its number of non-padding positions.

Every histogram also counts values below its first edge (``underflow``), above its last edge
(``overflow``) and NaN/Inf values (``nonfinite``), so data that moves out of the reference
range shows up as drift instead of being dropped.

:func:`compare_profiles` gives the Jensen–Shannon divergence per feature, for the labels and
``overall`` (the mean over features). The divergence (base-2 logarithms, so in [0, 1]: 0 for
identical distributions, 1 for disjoint ones) and the binning come from
:mod:`trainengine._numeric`, the numpy-only module the bundle's inference runtime also uses, so
training-time and serving-time drift scores are the same numbers. It equals
``scipy.spatial.distance.jensenshannon(p, q, base=2) ** 2`` (scipy returns the distance); scipy
is not used because the standalone runtime must stay numpy-only and one formula is one home.

The current data is compared on the REFERENCE bin edges. Profile it with
``profile_dataset(current, task_spec, reference=ref_profile)`` to bin it exactly on those
edges; a profile made with its own edges is re-binned onto the reference edges assuming a
uniform density inside each of its bins (a close approximation).

Why one module of this length: profile_dataset, DatasetProfile and compare_profiles share one
profile schema (feature, label and token histograms) that serving reads back; the arithmetic itself
is in trainengine._numeric.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from trainengine import _numeric
from trainengine.errors import DataError

__all__ = [
    "DatasetProfile",
    "DriftReport",
    "Histogram",
    "compare_profiles",
    "js_divergence",
    "profile_dataset",
]

ProfileKind = Literal["features", "tokens"]
LabelKind = Literal["classes", "values", "none"]

PROFILE_VERSION = 1
_X_KEYS = ("input_ids", "x", "inputs", "input", "features", "pixel_values")
_Y_KEYS = ("labels", "label", "y", "target", "targets")
_CHUNK = 1024  # samples fetched per __getitems__ call


# ----------------------------------------------------------------------------- divergence
def js_divergence(p: Sequence[float] | np.ndarray, q: Sequence[float] | np.ndarray) -> float:
    """Jensen–Shannon divergence (base 2, in [0, 1]) between two count or probability vectors.

    ``JS(P, Q) = ½ KL(P ‖ M) + ½ KL(Q ‖ M)`` with ``M = (P + Q) / 2``; the vectors are
    normalised first. Two empty vectors give 0.0; one empty and one not give 1.0.

    Args:
        p: Non-negative counts or probabilities.
        q: The same length as ``p``.

    Raises:
        DataError: For different lengths or negative entries.

    Example:
        >>> js_divergence([1, 0], [0, 1]), js_divergence([2, 2], [1, 1])
        (1.0, 0.0)
    """
    try:
        return _numeric.js_divergence(p, q)
    except ValueError as exc:  # same message, the package's error type
        raise DataError(str(exc)) from None


# ----------------------------------------------------------------------------- histograms
@dataclass
class Histogram:
    """Counts of values in equal-width bins, with out-of-range and NaN/Inf counts.

    Attributes:
        edges: ``bins + 1`` increasing bin edges; bin ``i`` is ``[edges[i], edges[i+1])``, the
            last bin also holds ``edges[-1]``.
        counts: ``bins`` counts.
        underflow: Values below ``edges[0]``.
        overflow: Values above ``edges[-1]``.
        nonfinite: NaN/Inf values.
        min: Smallest finite value counted (``None`` without finite values).
        max: Largest finite value counted.

    Example:
        >>> h = Histogram.from_values(np.array([0.0, 0.5, 1.0, 2.0]), np.linspace(0, 1, 3))
        >>> h.counts, h.overflow
        ([1, 2], 1)
    """

    edges: list[float]
    counts: list[int]
    underflow: int = 0
    overflow: int = 0
    nonfinite: int = 0
    min: float | None = None
    max: float | None = None

    @staticmethod
    def edges_for(values: np.ndarray, bins: int) -> np.ndarray:
        """``bins + 1`` equal-width edges from the finite min to max of ``values``.

        A constant (or empty) sample gets a unit-wide range around its value, so a later value
        that differs at all still lands in another bin.
        """
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            lo, hi = 0.0, 1.0
        else:
            lo, hi = float(finite.min()), float(finite.max())
        if not hi - lo > 1e-12 * max(1.0, abs(lo), abs(hi)):
            lo, hi = lo - 0.5, hi + 0.5
        return np.linspace(lo, hi, bins + 1)

    @classmethod
    def from_values(cls, values: np.ndarray, edges: np.ndarray | Sequence[float]) -> Histogram:
        """Count ``values`` (any shape, flattened) on ``edges``."""
        v = np.asarray(values, dtype=np.float64).ravel()
        e = np.asarray(edges, dtype=np.float64)
        counts, underflow, overflow, nonfinite = _numeric.bin_counts(v, e)
        v = v[np.isfinite(v)]
        return cls(
            edges=e.tolist(),
            counts=counts.tolist(),
            underflow=underflow,
            overflow=overflow,
            nonfinite=nonfinite,
            min=float(v.min()) if v.size else None,
            max=float(v.max()) if v.size else None,
        )

    @property
    def total(self) -> int:
        """Number of values counted (in range, out of range and non-finite)."""
        return int(sum(self.counts)) + self.underflow + self.overflow + self.nonfinite

    def vector(self) -> np.ndarray:
        """``[nonfinite, underflow, *counts, overflow]`` as float64, the vector JS compares."""
        return np.array([self.nonfinite, self.underflow, *self.counts, self.overflow], dtype=np.float64)

    def rebinned(self, edges: Sequence[float]) -> np.ndarray:
        """This histogram's mass on other ``edges``, as a :meth:`vector`-shaped float array.

        Each bin's count is spread uniformly over the part of the bin inside the observed
        ``[min, max]`` and split by overlap; a bin whose part is a single point (a constant
        feature, or data touching only an edge) moves as a point mass. Mass outside ``edges``
        goes to underflow/overflow. Exact when the edges are the same.
        """
        src = np.asarray(self.edges, dtype=np.float64)
        dst = np.asarray(edges, dtype=np.float64)
        if src.shape == dst.shape and np.allclose(src, dst, rtol=1e-9, atol=0.0):
            return self.vector()
        counts = np.asarray(self.counts, dtype=np.float64)  # (S,)
        vmin = src[0] if self.min is None else self.min
        vmax = src[-1] if self.max is None else self.max
        lo = np.maximum(src[:-1], vmin)  # (S,) support of each bin's data
        hi = np.maximum(np.minimum(src[1:], vmax), lo)
        width = hi - lo
        point = width <= 1e-12 * np.maximum(1.0, np.abs(hi))
        spread = ~point & (counts > 0)
        inner = np.zeros(dst.size - 1)
        below = above = 0.0
        if spread.any():
            lo_k, h, c = lo[spread, None], hi[spread, None], counts[spread]  # (K, 1), (K, 1), (K,)
            w = h - lo_k
            # Overlap of every spread bin with every destination bin: (K, D).
            overlap = np.clip(np.minimum(h, dst[None, 1:]) - np.maximum(lo_k, dst[None, :-1]), 0.0, None)
            inner += (overlap / w * c[:, None]).sum(axis=0)
            below += float((np.clip(np.minimum(h, dst[0]) - lo_k, 0.0, None) / w)[:, 0] @ c)
            above += float((np.clip(h - np.maximum(lo_k, dst[-1]), 0.0, None) / w)[:, 0] @ c)
        points = point & (counts > 0)
        if points.any():
            where = np.searchsorted(dst, lo[points], side="right") - 1
            for value, c, idx in zip(lo[points], counts[points], where, strict=True):
                if value < dst[0]:
                    below += c
                elif value > dst[-1]:
                    above += c
                else:
                    inner[min(idx, dst.size - 2)] += c
        # The source's own out-of-range counts lie beyond its edges: keep them on the same side.
        return np.array([self.nonfinite, self.underflow + below, *inner, self.overflow + above])

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return {
            "edges": list(self.edges),
            "counts": list(self.counts),
            "underflow": self.underflow,
            "overflow": self.overflow,
            "nonfinite": self.nonfinite,
            "min": self.min,
            "max": self.max,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Histogram:
        """Rebuild from :meth:`to_dict` output.

        Raises:
            DataError: For missing fields or edges/counts of mismatched lengths.
        """
        try:
            hist = cls(
                edges=[float(e) for e in data["edges"]],
                counts=[int(c) for c in data["counts"]],
                underflow=int(data.get("underflow", 0)),
                overflow=int(data.get("overflow", 0)),
                nonfinite=int(data.get("nonfinite", 0)),
                min=None if data.get("min") is None else float(data["min"]),
                max=None if data.get("max") is None else float(data["max"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(
                f"invalid histogram in profile ({type(exc).__name__}: {exc}); expected edges and counts"
            ) from exc
        if len(hist.edges) != len(hist.counts) + 1 or len(hist.counts) < 1:
            raise DataError(
                f"invalid histogram in profile: {len(hist.edges)} edges for {len(hist.counts)} counts "
                "(need counts + 1 edges)"
            )
        return hist


def _categorical_js(ref: Mapping[str, int], cur: Mapping[str, int]) -> float:
    return _numeric.categorical_js(ref, cur)


def _histogram_js(ref: Histogram, cur: Histogram) -> float:
    return js_divergence(ref.vector(), cur.rebinned(ref.edges))


def _counts(values: np.ndarray) -> dict[str, int]:
    """Category counts keyed by the integer value as a string (JSON object keys)."""
    uniq, counts = np.unique(values.astype(np.int64).ravel(), return_counts=True)
    return {str(int(u)): int(c) for u, c in zip(uniq, counts, strict=True)}


# ----------------------------------------------------------------------------- profile
@dataclass
class DatasetProfile:
    """Histograms that summarise a data set, for drift comparison (JSON-serialisable).

    Build with :func:`profile_dataset`; compare with :func:`compare_profiles`; store with
    :meth:`save` / :meth:`load` (plain JSON).

    Attributes:
        kind: ``"features"`` (numeric feature vectors / images) or ``"tokens"`` (sequences).
        num_samples: Samples profiled (at most ``max_items``).
        dataset_size: Samples in the data set.
        bins: Bins per histogram.
        task_type: The task's type when a TaskSpec was given, else ``None``.
        features: Feature name (``"feature_0"``, ...) -> histogram (feature data only).
        num_features_total: Flattened features per sample before the ``max_features`` cap.
        label_kind: ``"classes"`` (counts in :attr:`label_counts`), ``"values"`` (histogram
            in :attr:`label_histogram`) or ``"none"``.
        label_counts: Class id (as a string) -> count.
        label_histogram: Histogram of regression targets.
        token_counts: Token id (as a string) -> count of non-padding occurrences.
        sequence_length: Histogram of non-padding sequence lengths.
        seed: Seed of the sample drawn when the data set has more than ``max_items`` samples.
        version: Format version of the dict form.

    Example:
        >>> from trainengine.data import load_builtin
        >>> profile = profile_dataset(load_builtin("digits").train, bins=10)
        >>> profile.kind, len(profile.features), profile.label_kind
        ('features', 64, 'classes')
        >>> DatasetProfile.from_dict(profile.to_dict()) == profile
        True
    """

    kind: ProfileKind
    num_samples: int
    dataset_size: int
    bins: int
    task_type: str | None = None
    features: dict[str, Histogram] = field(default_factory=dict)
    num_features_total: int = 0
    label_kind: LabelKind = "none"
    label_counts: dict[str, int] = field(default_factory=dict)
    label_histogram: Histogram | None = None
    token_counts: dict[str, int] = field(default_factory=dict)
    sequence_length: Histogram | None = None
    seed: int = 0
    version: int = PROFILE_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (every histogram as a dict)."""
        return {
            "version": self.version,
            "kind": self.kind,
            "num_samples": self.num_samples,
            "dataset_size": self.dataset_size,
            "bins": self.bins,
            "task_type": self.task_type,
            "features": {name: h.to_dict() for name, h in self.features.items()},
            "num_features_total": self.num_features_total,
            "label_kind": self.label_kind,
            "label_counts": dict(self.label_counts),
            "label_histogram": self.label_histogram.to_dict() if self.label_histogram else None,
            "token_counts": dict(self.token_counts),
            "sequence_length": self.sequence_length.to_dict() if self.sequence_length else None,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetProfile:
        """Rebuild a profile from :meth:`to_dict` output.

        Raises:
            DataError: For a newer format version, an unknown kind, or missing fields.
        """
        if not isinstance(data, Mapping):
            raise DataError(f"a DatasetProfile dict is needed, got {type(data).__name__}")
        version = data.get("version")
        if version != PROFILE_VERSION:
            raise DataError(
                f"unsupported DatasetProfile version {version!r}; this trainengine reads version {PROFILE_VERSION}"
            )
        kind = data.get("kind")
        if kind not in ("features", "tokens"):
            raise DataError(f"DatasetProfile kind must be 'features' or 'tokens', got {kind!r}")
        label_kind = data.get("label_kind", "none")
        if label_kind not in ("classes", "values", "none"):
            raise DataError(f"DatasetProfile label_kind must be classes, values or none, got {label_kind!r}")
        try:
            label_hist = data.get("label_histogram")
            seq = data.get("sequence_length")
            return cls(
                kind=kind,
                num_samples=int(data["num_samples"]),
                dataset_size=int(data["dataset_size"]),
                bins=int(data["bins"]),
                task_type=data.get("task_type"),
                features={str(k): Histogram.from_dict(v) for k, v in data.get("features", {}).items()},
                num_features_total=int(data.get("num_features_total", 0)),
                label_kind=label_kind,
                label_counts={str(k): int(v) for k, v in data.get("label_counts", {}).items()},
                label_histogram=Histogram.from_dict(label_hist) if label_hist else None,
                token_counts={str(k): int(v) for k, v in data.get("token_counts", {}).items()},
                sequence_length=Histogram.from_dict(seq) if seq else None,
                seed=int(data.get("seed", 0)),
            )
        except KeyError as exc:
            raise DataError(f"DatasetProfile dict is missing the field {exc.args[0]!r}") from exc

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the profile as JSON to ``path`` (parent folders are created); return the path."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DatasetProfile:
        """Read a profile written by :meth:`save`.

        Raises:
            DataError: If the file is missing or is not a profile.
        """
        source = Path(path)
        try:
            data = json.loads(source.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise DataError(f"no dataset profile at {str(source)!r}") from exc
        except json.JSONDecodeError as exc:
            raise DataError(f"{str(source)!r} is not a JSON dataset profile: {exc}") from exc
        return cls.from_dict(data)


# ----------------------------------------------------------------------------- reading data
def _to_numpy(value: Any, what: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except Exception as exc:
        raise DataError(f"cannot read the {what} of a sample as numbers ({type(value).__name__}): {exc}") from exc


def _pick(sample: Mapping[str, Any], keys: Sequence[str]) -> Any:
    for k in keys:
        if k in sample:
            return sample[k]
    return None


def _split(sample: Any) -> tuple[Any, Any, Any]:
    """(x, y, attention_mask) of one sample or one batch of columns."""
    if isinstance(sample, Mapping):
        x = _pick(sample, _X_KEYS)
        if x is None:
            raise DataError(
                f"cannot find the inputs of a dict sample with keys {sorted(sample)}; "
                f"expected one of: {', '.join(_X_KEYS)}"
            )
        return x, _pick(sample, _Y_KEYS), sample.get("attention_mask")
    if isinstance(sample, (tuple, list)):
        if not sample:
            raise DataError("cannot profile an empty sample; samples should be (x, y) or x")
        return sample[0], (sample[1] if len(sample) > 1 else None), None
    return sample, None, None


def _rows(value: Any, what: str, batched: bool) -> list[np.ndarray]:
    arr = _to_numpy(value, what)
    return list(arr) if batched else [arr]


def _read(
    dataset: Any, indices: np.ndarray
) -> tuple[list[np.ndarray], list[np.ndarray] | None, list[np.ndarray] | None]:
    """Per-sample numpy arrays of inputs, labels and attention masks for ``indices``."""
    from trainengine.data import PreCollatedBatch

    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    ms: list[np.ndarray] = []
    has_y = has_m = True
    getitems = getattr(dataset, "__getitems__", None)
    for start in range(0, len(indices), _CHUNK):
        chunk = [int(i) for i in indices[start : start + _CHUNK]]
        got = getitems(chunk) if callable(getitems) else None
        if isinstance(got, PreCollatedBatch):
            # Fast path: the batch is already gathered column-wise, (B, ...) per column.
            parts = [(_split(got.collated), True)]
        else:
            samples = got if got is not None else [dataset[i] for i in chunk]
            parts = [(_split(s), False) for s in samples]
        for (x, y, m), batched in parts:
            xs.extend(_rows(x, "inputs", batched))
            has_y = has_y and y is not None
            has_m = has_m and m is not None
            if has_y:
                ys.extend(_rows(y, "labels", batched))
            if has_m:
                ms.extend(_rows(m, "attention_mask", batched))
    return xs, (ys if has_y else None), (ms if has_m else None)


def _is_integer(arr: np.ndarray) -> bool:
    return arr.dtype.kind in "iub"


# ----------------------------------------------------------------------------- profiling
def profile_dataset(
    dataset: Any,
    task_spec: Any | None = None,
    *,
    max_items: int = 10_000,
    bins: int = 20,
    seed: int = 0,
    max_features: int = 64,
    reference: DatasetProfile | None = None,
) -> DatasetProfile:
    """Summarise a data set as histograms for drift detection.

    Samples may be ``(x, y)`` tuples, ``x`` alone, or dicts (``input_ids``/``x``/... with
    ``labels``/``label``/... and an optional ``attention_mask``). With more than
    ``max_items`` samples, a random subset (seeded by ``seed``) is profiled.

    Token data is recognised from ``task_spec.modality == "tokens"``, or without a TaskSpec
    from 1-D integer inputs whose labels have the same shape. Labels are class counts for
    classification/vision tasks (without a TaskSpec: integer labels), a histogram for
    regression (float labels).

    Args:
        dataset: A map-style data set (``len`` and ``[i]``; ``__getitems__`` is used when
            present, e.g. :class:`trainengine.data.InMemoryDataset`).
        task_spec: The run's :class:`~trainengine.tasks.TaskSpec` (sets kind, label kind and
            the padding ``ignore_index``); optional.
        max_items: At most this many samples are read.
        bins: Bins per histogram (ignored with ``reference``: its edges are used).
        seed: Seed of the subset drawn when the data set is larger than ``max_items``.
        max_features: Only the first this many flattened features get a histogram (bounds
            the profile's size and time for wide inputs).
        reference: Bin the data on this profile's edges (features, labels, lengths) so that
            :func:`compare_profiles` compares exactly; kinds must match.

    Returns:
        A :class:`DatasetProfile`.

    Raises:
        DataError: For an empty data set, samples that cannot be read as numbers, feature
            vectors of different sizes, or a data set that does not fit ``reference``.

    Example:
        >>> from trainengine.data import load_builtin
        >>> splits = load_builtin("digits")
        >>> ref = profile_dataset(splits.train)
        >>> cur = profile_dataset(splits.val, reference=ref)
        >>> compare_profiles(ref, cur).overall < 0.05
        True
    """
    problems = []
    for name, value, low in (("max_items", max_items, 1), ("bins", bins, 1), ("max_features", max_features, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            problems.append(f"{name} must be an integer >= {low}, got {value!r}")
    if problems:
        raise DataError("cannot profile the data set: " + "; ".join(problems))
    if reference is not None and not isinstance(reference, DatasetProfile):
        raise DataError(f"reference must be a DatasetProfile, got {type(reference).__name__}")
    try:
        size = len(dataset)
    except TypeError as exc:
        raise DataError(
            f"profile_dataset needs a map-style data set with len() and [i]; got {type(dataset).__name__}"
        ) from exc
    if size == 0:
        raise DataError("cannot profile an empty data set (0 samples)")
    if size > max_items:
        indices = np.sort(np.random.default_rng(seed).choice(size, size=max_items, replace=False))
    else:
        indices = np.arange(size)
    xs, ys, masks = _read(dataset, indices)

    task_type = getattr(task_spec, "task_type", None)
    ignore_index = int(getattr(task_spec, "ignore_index", -100))
    if task_spec is not None:
        kind: ProfileKind = "tokens" if getattr(task_spec, "modality", None) == "tokens" else "features"
    else:
        x0 = xs[0]
        tokens = _is_integer(x0) and x0.ndim == 1 and ys is not None and ys[0].shape == x0.shape
        kind = "tokens" if tokens else "features"
    if reference is not None and reference.kind != kind:
        raise DataError(
            f"this data set profiles as {kind!r} data but the reference profile is {reference.kind!r}; "
            "profile both with the same task_spec"
        )
    bins_used = reference.bins if reference is not None else bins
    profile = DatasetProfile(
        kind=kind,
        num_samples=len(xs),
        dataset_size=size,
        bins=bins_used,
        task_type=task_type,
        seed=seed,
    )
    if kind == "tokens":
        _profile_tokens(profile, xs, ys, masks, ignore_index, bins_used, reference)
    else:
        _profile_features(profile, xs, max_features, bins_used, reference)
        _profile_labels(profile, ys, task_type, bins_used, reference)
    return profile


def _profile_features(
    profile: DatasetProfile,
    xs: list[np.ndarray],
    max_features: int,
    bins: int,
    reference: DatasetProfile | None,
) -> None:
    sizes = {x.size for x in xs}
    if len(sizes) != 1:
        raise DataError(
            f"feature samples have different sizes {sorted(sizes)[:5]}; profile token sequences "
            "with a language-modeling task_spec, or pad the features to one size"
        )
    total = sizes.pop()
    keep = min(total, max_features)
    # (N, F): flattened, then capped to the first `keep` features.
    matrix = np.stack([x.reshape(-1)[:keep] for x in xs]).astype(np.float64)
    profile.num_features_total = int(total)
    if reference is not None:
        present = {f"feature_{j}" for j in range(keep)}
        missing = [n for n in reference.features if n not in present]
        if missing:
            raise DataError(
                f"the data set has {total} features but the reference profile has "
                f"{len(reference.features)} (missing: {', '.join(missing[:5])}); compare data of one shape"
            )
    for j in range(keep):
        name = f"feature_{j}"
        if reference is not None:
            if name not in reference.features:
                continue
            edges = np.asarray(reference.features[name].edges)
        else:
            edges = Histogram.edges_for(matrix[:, j], bins)
        profile.features[name] = Histogram.from_values(matrix[:, j], edges)


def _profile_labels(
    profile: DatasetProfile,
    ys: list[np.ndarray] | None,
    task_type: str | None,
    bins: int,
    reference: DatasetProfile | None,
) -> None:
    if ys is None:
        profile.label_kind = "none"
        return
    labels = np.concatenate([y.reshape(-1) for y in ys])
    if task_type in ("classification", "vision"):
        kind: LabelKind = "classes"
    elif task_type == "regression":
        kind = "values"
    else:
        kind = "classes" if _is_integer(labels) else "values"
    if reference is not None and reference.label_kind not in (kind, "none"):
        raise DataError(
            f"labels profile as {kind!r} but the reference profile's are {reference.label_kind!r}; "
            "profile both with the same task_spec"
        )
    profile.label_kind = kind
    if kind == "classes":
        profile.label_counts = _counts(labels)
    else:
        if reference is not None and reference.label_histogram is not None:
            edges = np.asarray(reference.label_histogram.edges)
        else:
            edges = Histogram.edges_for(labels.astype(np.float64), bins)
        profile.label_histogram = Histogram.from_values(labels, edges)


def _profile_tokens(
    profile: DatasetProfile,
    xs: list[np.ndarray],
    ys: list[np.ndarray] | None,
    masks: list[np.ndarray] | None,
    ignore_index: int,
    bins: int,
    reference: DatasetProfile | None,
) -> None:
    lengths = np.empty(len(xs), dtype=np.int64)
    valid_tokens: list[np.ndarray] = []
    for i, x in enumerate(xs):
        x = x.reshape(-1)
        if not _is_integer(x):
            raise DataError(f"token data needs integer token ids; sample {i} has dtype {x.dtype}")
        if masks is not None:
            keep = masks[i].reshape(-1) != 0  # (T,)
        elif ys is not None and ys[i].shape == xs[i].shape:
            keep = ys[i].reshape(-1) != ignore_index  # padding positions carry ignore_index
        else:
            keep = np.ones(x.shape, dtype=bool)
        lengths[i] = int(keep.sum())
        valid_tokens.append(x[keep])
    tokens = np.concatenate(valid_tokens) if valid_tokens else np.empty(0, dtype=np.int64)
    profile.token_counts = _counts(tokens)
    if reference is not None and reference.sequence_length is not None:
        edges = np.asarray(reference.sequence_length.edges)
    else:
        edges = Histogram.edges_for(lengths.astype(np.float64), bins)
    profile.sequence_length = Histogram.from_values(lengths, edges)
    profile.label_kind = "none"  # LM labels are the next tokens: covered by token_counts


# ----------------------------------------------------------------------------- comparing
@dataclass
class DriftReport:
    """Jensen–Shannon divergences (base 2, in [0, 1]) between a reference and a current profile.

    Attributes:
        overall: Mean divergence over :attr:`per_feature` (labels not included).
        per_feature: Feature name -> divergence; for token data ``token_ids`` and
            ``sequence_length``.
        labels: Divergence of the label distributions, or ``None`` without labels.

    Example:
        >>> report = DriftReport(overall=0.3, per_feature={"feature_0": 0.3}, labels=0.01)
        >>> report.is_drift(0.2), report.is_drift(0.2, include_labels=True)
        (True, True)
    """

    overall: float
    per_feature: dict[str, float]
    labels: float | None = None

    def is_drift(self, threshold: float = 0.2, *, include_labels: bool = False) -> bool:
        """True when :attr:`overall` (or, with ``include_labels``, :attr:`labels`) exceeds ``threshold``."""
        if self.overall > threshold:
            return True
        return bool(include_labels and self.labels is not None and self.labels > threshold)

    def top_features(self, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` features that moved most, largest divergence first."""
        return sorted(self.per_feature.items(), key=lambda kv: -kv[1])[:k]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return {"overall": self.overall, "per_feature": dict(self.per_feature), "labels": self.labels}


def compare_profiles(reference: DatasetProfile, current: DatasetProfile) -> DriftReport:
    """Jensen–Shannon divergence of ``current`` against ``reference``, per feature and overall.

    Histograms are compared on the reference's bin edges (a ``current`` profiled with its own
    edges is re-binned, see the module docs). Class and token counts are compared over the
    union of their categories.

    Args:
        reference: Profile of the reference data (usually the training set).
        current: Profile of the data to check.

    Returns:
        A :class:`DriftReport`; ``overall`` is the mean over features.

    Raises:
        DataError: If the profiles are of different kinds or the current one lacks features
            of the reference.

    Example:
        >>> import torch
        >>> from trainengine.data import InMemoryDataset
        >>> x = torch.rand(500, 3)
        >>> ref = profile_dataset(InMemoryDataset((x,)))
        >>> shifted = profile_dataset(InMemoryDataset((x + 1.0,)), reference=ref)
        >>> compare_profiles(ref, shifted).overall > 0.9
        True
    """
    for name, p in (("reference", reference), ("current", current)):
        if not isinstance(p, DatasetProfile):
            raise DataError(f"compare_profiles: {name} must be a DatasetProfile, got {type(p).__name__}")
    if reference.kind != current.kind:
        raise DataError(
            f"cannot compare a {reference.kind!r} profile with a {current.kind!r} profile; "
            "profile both data sets with the same task_spec"
        )
    per_feature: dict[str, float] = {}
    if reference.kind == "tokens":
        per_feature["token_ids"] = _categorical_js(reference.token_counts, current.token_counts)
        if reference.sequence_length is not None and current.sequence_length is not None:
            per_feature["sequence_length"] = _histogram_js(reference.sequence_length, current.sequence_length)
    else:
        missing = [n for n in reference.features if n not in current.features]
        if missing:
            raise DataError(
                f"the current profile lacks {len(missing)} feature(s) of the reference "
                f"({', '.join(missing[:5])}); compare data of one shape"
            )
        for name, hist in reference.features.items():
            per_feature[name] = _histogram_js(hist, current.features[name])
    labels: float | None = None
    if reference.label_kind == "classes" and current.label_kind == "classes":
        labels = _categorical_js(reference.label_counts, current.label_counts)
    elif reference.label_histogram is not None and current.label_histogram is not None:
        labels = _histogram_js(reference.label_histogram, current.label_histogram)
    elif reference.label_kind != current.label_kind and "none" not in (reference.label_kind, current.label_kind):
        raise DataError(
            f"cannot compare {reference.label_kind!r} labels with {current.label_kind!r} labels; "
            "profile both data sets with the same task_spec"
        )
    overall = float(np.mean(list(per_feature.values()))) if per_feature else 0.0
    if not math.isfinite(overall):
        overall = 1.0
    return DriftReport(overall=overall, per_feature=per_feature, labels=labels)
