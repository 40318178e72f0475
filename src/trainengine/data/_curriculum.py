"""Source mixing and curricula for any task: which examples each training batch holds.

:class:`CurriculumBatchSampler` is a DataLoader ``batch_sampler`` that decides, for every
micro-batch, which dataset keys it holds:

* **Source mixing** (``dataset.mixing_weights``): a smooth weighted round-robin (nginx's SWRR:
  every pick adds each source's weight to its current value, takes the largest and subtracts the
  total from it) chooses the source of each example, so over any window of picks each source's
  count is within about one example of ``window * weight``. Within a source, examples come in a
  seeded shuffled order, reshuffled each time the source runs out.
* **Phases** (``curriculum.phases``): until optimizer step ``until_step`` draw with the phase's
  ``weights`` from the examples its ``filter`` keeps; after the last phase, all data with the
  data's own weights.
* **Difficulty** (``curriculum.difficulty``): examples ranked by an example field or by their loss
  under the starting model (:func:`score_by_loss`); at step ``t`` the easiest
  ``c(t) = start_fraction + (1 - start_fraction) * min(1, t / full_data_step)`` of them are
  eligible, and batches draw uniformly (seeded) among them.
* **Sequence length** (``curriculum.start_length``): the batch's maximum length grows linearly
  from ``start_length`` to ``data.max_length`` by ``full_length_step``; keys become
  ``(index, max_length)`` tuples and the dataset truncates.

Every batch is a pure function of ``(seed, epoch, position in the epoch)`` (and, for
``difficulty: loss``, the scores, which travel in checkpoints through :meth:`state_dict`): a run
resumed mid-epoch re-draws the epoch and skips the consumed batches, and sees exactly the
batches the uninterrupted run saw. The mixing sequence and the within-source order run over the
*global* example index (``epoch * examples_per_epoch + offset``) of each phase, so they continue
across epoch boundaries instead of restarting.

Example:
    >>> import numpy as np, torch
    >>> class Mixed(torch.utils.data.Dataset):
    ...     mixing_weights = {"a": 0.75, "b": 0.25}
    ...
    ...     def __len__(self):
    ...         return 8
    ...
    ...     def __getitem__(self, i):
    ...         return torch.tensor(float(i))
    ...
    ...     def example_fields(self):
    ...         return {"source": np.array(["a"] * 4 + ["b"] * 4)}
    >>> sampler = CurriculumBatchSampler(Mixed(), batch_size=4, seed=0)
    >>> [["ab"[i >= 4] for i in batch] for batch in sampler]
    [['a', 'a', 'b', 'a'], ['a', 'a', 'b', 'a']]
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, Sampler, TensorDataset

from trainengine.data._datasets import InMemoryDataset, ListDataset, TokenWindowDataset, collate_batch
from trainengine.errors import ConfigError, DataError

__all__ = [
    "CurriculumBatchSampler",
    "curriculum_active",
    "score_by_loss",
    "smooth_weighted_round_robin",
]

log = logging.getLogger(__name__)

Key = int | tuple[int, int]

# Weights become integers with this many parts at most (exact for ratios like 0.6/0.3/0.1): the
# integer SWRR repeats after sum(weights) picks, so the state at any pick is found in O(period).
_RESOLUTION = 100_000


# ---------------------------------------------------------------------------- SWRR
def smooth_weighted_round_robin(weights: Sequence[float], count: int) -> np.ndarray:
    """The first ``count`` picks of a smooth weighted round-robin (nginx's SWRR) over ``weights``.

    Each pick adds every source's weight to its current value, picks the largest (the earlier
    source on ties) and subtracts the total weight from it. Over any window of picks, each
    source's count stays within about one example of ``window * weight / total``.

    Args:
        weights: non-negative weight per source (at least one positive); need not sum to 1.
        count: how many picks.

    Returns:
        int64 array of source indices, shape ``(count,)``.

    Raises:
        ConfigError: a negative or non-finite weight, or no positive weight.

    Example:
        >>> smooth_weighted_round_robin([5, 1, 1], 7).tolist()  # nginx's documented sequence
        [0, 0, 1, 0, 2, 0, 0]
    """
    ints = _integer_weights(weights, "weights")
    return _Swrr(ints).sources(0, count)


def _integer_weights(weights: Sequence[float] | np.ndarray, where: str) -> list[int]:
    """Weights as small co-prime integers with the same ratios (rounded to 1/100000 when not rational)."""
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.size == 0 or not np.all(np.isfinite(w)) or np.any(w < 0) or float(w.sum()) <= 0:
        raise ConfigError(f"{where}: weights must be finite, >= 0 and not all 0; got {w.tolist()}")
    share = w / w.sum()
    fracs = [Fraction(float(x)).limit_denominator(1000) for x in share]
    lcm = math.lcm(*(f.denominator for f in fracs))
    if lcm <= _RESOLUTION and all(abs(float(f) - x) < 1e-9 for f, x in zip(fracs, share, strict=True)):
        ints = [int(f.numerator * (lcm // f.denominator)) for f in fracs]
    else:  # largest remainder: integers summing to _RESOLUTION
        raw = share * _RESOLUTION
        ints = [int(x) for x in np.floor(raw)]
        for i in np.argsort(-(raw - np.floor(raw)), kind="stable")[: _RESOLUTION - sum(ints)]:
            ints[int(i)] += 1
    g = math.gcd(*ints)
    return [i // g for i in ints]


class _Swrr:
    """Integer SWRR: one period of picks and the per-source counts before each pick of the period."""

    def __init__(self, weights: list[int]) -> None:
        self.weights = np.asarray(weights, dtype=np.int64)
        self.period = int(self.weights.sum())
        current = [0] * len(weights)
        seq = np.empty(self.period, dtype=np.int64)
        for k in range(self.period):
            best = 0
            for i, w in enumerate(weights):
                current[i] += w
                if current[i] > current[best]:
                    best = i
            current[best] -= self.period
            seq[k] = best
        self.seq = seq  # after one period every current value is 0 again: the sequence repeats
        onehot = np.zeros((self.period + 1, len(weights)), dtype=np.int64)
        onehot[np.arange(1, self.period + 1), seq] = 1
        self.before = np.cumsum(onehot, axis=0)  # [r, s]: picks of s among the period's first r

    def sources(self, start: int, count: int) -> np.ndarray:
        """Source of picks ``start .. start + count - 1``."""
        return self.seq[np.arange(start, start + count) % self.period]

    def counts_before(self, picks: np.ndarray, sources: np.ndarray) -> np.ndarray:
        """For each pick, how many earlier picks chose its source."""
        return (picks // self.period) * self.weights[sources] + self.before[picks % self.period, sources]


# ---------------------------------------------------------------------------- helpers
def _example_fields(dataset: Any, n: int) -> dict[str, np.ndarray]:
    """``dataset.example_fields()`` as arrays of length ``n`` ({} when the dataset has none)."""
    get = getattr(dataset, "example_fields", None)
    if not callable(get):
        return {}
    fields = {str(k): np.asarray(v) for k, v in dict(get()).items()}
    for name, values in fields.items():
        if values.shape[:1] != (n,):
            raise DataError(
                f"{type(dataset).__name__}.example_fields()['{name}'] has {values.shape[:1] or 'no'} values, "
                f"but the dataset has {n} examples — give one value per example"
            )
    return fields


def _fields_hint(fields: Mapping[str, Any], dataset: Any) -> str:
    if not fields:
        return (
            f"{type(dataset).__name__} has no example_fields() — give the dataset an example_fields() method "
            "returning {name: one value per example}"
        )
    return f"the data's example fields are: {', '.join(sorted(fields))}"


def _filter_mask(fields: Mapping[str, np.ndarray], spec: Mapping[str, Any], where: str, dataset: Any) -> np.ndarray:
    """Boolean mask of the examples a phase filter keeps (a value, a list of values, or {min, max})."""
    n = len(next(iter(fields.values()))) if fields else 0
    mask = np.ones(n, dtype=bool)
    for name, want in spec.items():
        if name not in fields:
            raise ConfigError(f"{where}.{name}: no such example field — {_fields_hint(fields, dataset)}")
        values = fields[name]
        if isinstance(want, Mapping):
            extra = sorted(set(want) - {"min", "max"})
            if extra or not want:
                raise ConfigError(
                    f"{where}.{name}: a range is {{min: .., max: ..}} (either may be left out); got keys {sorted(want)}"
                )
            try:
                numeric = values.astype(np.float64)
                if "min" in want and want["min"] is not None:
                    mask &= numeric >= float(want["min"])
                if "max" in want and want["max"] is not None:
                    mask &= numeric <= float(want["max"])
            except (TypeError, ValueError):
                raise ConfigError(
                    f"{where}.{name}: a {{min, max}} range needs numbers, but the field holds {values.dtype} values "
                    f"(e.g. {values[:1].tolist()}) — filter it by a value or a list of values"
                ) from None
        elif isinstance(want, (list, tuple, set)):
            allowed = set(want)
            mask &= np.fromiter((v in allowed for v in values.tolist()), dtype=bool, count=len(values))
        else:
            mask &= np.fromiter((v == want for v in values.tolist()), dtype=bool, count=len(values))
    return mask


def _accepts_max_length(dataset: Any, length: int) -> bool:
    """Whether ``dataset[(0, length)]`` works (the sequence-length curriculum's key)."""
    if isinstance(dataset, (InMemoryDataset, TokenWindowDataset, ListDataset, TensorDataset)):
        return False  # rows of fixed tensors: a tuple key would index inside a row, not truncate
    try:
        dataset[(0, length)]
    except Exception:  # noqa: BLE001 - any failure means the dataset does not take (index, max_length) keys
        return False
    return True


def _phase_parts(phase: Any) -> tuple[int, Mapping[str, float] | None, Mapping[str, Any] | None]:
    if isinstance(phase, Mapping):
        return int(phase["until_step"]), phase.get("weights"), phase.get("filter")
    return int(phase.until_step), phase.weights, phase.filter


@dataclass
class _Segment:
    """A stretch of optimizer steps drawing with one set of pools and weights (a phase, or the rest)."""

    index: int
    start_step: int
    end_step: int | None
    pools: list[np.ndarray]  # example indices per source (one pool when not mixing)
    swrr: _Swrr | None  # None: one pool, no mixing
    ranked: list[np.ndarray] = field(default_factory=list)  # pools sorted easy -> hard (difficulty)


# ---------------------------------------------------------------------------- the sampler
class CurriculumBatchSampler(Sampler[list[Key]]):
    """Batch sampler for source mixing, phase schedules, difficulty pacing and length curricula.

    Give it to a DataLoader as ``batch_sampler`` (``build_loaders`` does when the config asks for a
    curriculum or the training data has ``mixing_weights``). It yields one list of dataset keys per
    micro-batch: ints, or ``(index, max_length)`` tuples under a sequence-length curriculum.
    ``len()`` is the usual batch count, ``ceil(len(dataset) / batch_size)`` (floor with
    ``drop_last``), so step and epoch planning do not change; all batches but an epoch's last are
    full.

    The optimizer step of micro-batch ``p`` of epoch ``e`` is
    ``e * ceil(batches / accumulation_steps) + p // accumulation_steps`` — the Trainer's step
    count (an epoch's last, shorter window is one step).

    Args:
        dataset: a map-style dataset. Optional metadata: ``example_fields()`` (``{name: one value
            per example}``; ``source`` for mixing), ``mixing_weights`` (``{source: weight}``).
        batch_size: examples per micro-batch.
        seed: the seed of every draw (``training.seed``).
        drop_last: drop each epoch's last incomplete batch.
        shuffle: within-source order shuffled (False: dataset order; mixing still interleaves).
        accumulation_steps: micro-batches per optimizer step.
        total_steps: optimizer steps of the run (the default for ``full_data_step`` and
            ``full_length_step``: half of it).
        phases: ``curriculum.phases`` (objects or dicts with ``until_step``, ``weights``, ``filter``).
        difficulty: ``"none"``, ``"field"`` or ``"loss"``.
        difficulty_field: the example field scored when ``difficulty="field"`` (low = easy).
        start_fraction: the easiest fraction of each pool eligible at step 0.
        full_data_step: the step from which all examples are eligible (None: half the run).
        start_length: the sequence-length cap at step 0 (None: no length curriculum).
        max_length: the cap it grows to (``data.max_length``).
        full_length_step: the step that reaches ``max_length`` (None: half the run).
        generator: the loader's generator (kept as ``.generator``; the order does not draw from it).

    Raises:
        ConfigError: a filter or difficulty field the data lacks (the fields are listed), phase
            weights naming an unknown source, mixing without a ``source`` field, a phase keeping
            no example, steps not increasing, or a length curriculum on data that cannot truncate.
        DataError: an empty dataset, or ``drop_last`` with fewer examples than one batch.

    Example:
        >>> import numpy as np, torch
        >>> class Scored(torch.utils.data.Dataset):
        ...     def __len__(self):
        ...         return 10
        ...
        ...     def __getitem__(self, i):
        ...         return torch.tensor(float(i))
        ...
        ...     def example_fields(self):
        ...         return {"difficulty": np.arange(10.0)}
        >>> s = CurriculumBatchSampler(
        ...     Scored(), batch_size=5, seed=0, difficulty="field", start_fraction=0.2, full_data_step=4, total_steps=4
        ... )
        >>> sorted(set(s.batch(0, 0)))  # step 0: the easiest 20 %
        [0, 1]
    """

    def __init__(
        self,
        dataset: Any,
        *,
        batch_size: int,
        seed: int,
        drop_last: bool = False,
        shuffle: bool = True,
        accumulation_steps: int = 1,
        total_steps: int | None = None,
        phases: Sequence[Any] = (),
        difficulty: str = "none",
        difficulty_field: str = "difficulty",
        start_fraction: float = 0.3,
        full_data_step: int | None = None,
        start_length: int | None = None,
        max_length: int | None = None,
        full_length_step: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if isinstance(dataset, IterableDataset):
            raise ConfigError(
                "a curriculum or source mixing needs a map-style dataset (one with __len__ and __getitem__); "
                f"{type(dataset).__name__} is an IterableDataset — remove the curriculum section or pass indexable data"
            )
        self.dataset = dataset
        self.n = len(dataset)
        if self.n == 0:
            raise DataError("the dataset is empty (0 samples); nothing to load")
        if batch_size < 1 or accumulation_steps < 1:
            raise ConfigError(f"batch_size and accumulation_steps must be >= 1; got {batch_size}, {accumulation_steps}")
        self.batch_size, self.drop_last, self.shuffle = batch_size, drop_last, shuffle
        self.accumulation_steps = accumulation_steps
        self.seed = int(seed) % 2**63
        self.generator = generator
        self.epoch = 0
        self.batches_per_epoch = self.n // batch_size if drop_last else math.ceil(self.n / batch_size)
        if self.batches_per_epoch == 0:
            raise DataError(
                f"batch_size={batch_size} is larger than the dataset ({self.n} samples) and drop_last=True, "
                f"so no batch would be produced; lower batch_size to at most {self.n} or set drop_last=False"
            )
        self.examples_per_epoch = self.batches_per_epoch * batch_size if drop_last else self.n
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / accumulation_steps)
        self.total_steps = total_steps
        self.fields = _example_fields(dataset, self.n)

        # Difficulty
        if difficulty not in ("none", "field", "loss"):
            raise ConfigError(f"curriculum.difficulty must be none, field or loss; got {difficulty!r}")
        if not 0.0 < start_fraction <= 1.0:
            raise ConfigError(f"curriculum.start_fraction must be in (0, 1]; got {start_fraction}")
        self.difficulty, self.start_fraction = difficulty, float(start_fraction)
        self.full_data_step = self._default_step(full_data_step, "full_data_step") if difficulty != "none" else None
        self._scores: np.ndarray | None = None
        self.scorer: Callable[[Any], np.ndarray] | None = None  # difficulty loss: the scoring pass (set by the engine)
        if difficulty == "field":
            if difficulty_field not in self.fields:
                raise ConfigError(
                    f"curriculum.difficulty_field '{difficulty_field}' is not an example field — "
                    f"{_fields_hint(self.fields, dataset)}; or use difficulty: loss (scores every example by the "
                    "starting model's loss, for any task)"
                )
            try:
                self._scores = self.fields[difficulty_field].astype(np.float64)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"curriculum.difficulty_field '{difficulty_field}' holds {self.fields[difficulty_field].dtype} "
                    "values; difficulty needs numbers (low = easy)"
                ) from None

        # Sequence length
        self.start_length, self.max_length = start_length, max_length
        self.full_length_step: int | None = None
        if start_length is not None:
            if max_length is None or start_length > max_length:
                raise ConfigError(
                    f"curriculum.start_length ({start_length}) must be <= data.max_length ({max_length}); "
                    "lower start_length or raise data.max_length"
                )
            if not _accepts_max_length(dataset, start_length):
                raise ConfigError(
                    f"curriculum.start_length needs a dataset that takes (index, max_length) keys and truncates; "
                    f"{type(dataset).__name__}[(0, {start_length})] does not work — remove curriculum.start_length "
                    "or give the dataset a __getitem__ that accepts such a tuple"
                )
            self.full_length_step = self._default_step(full_length_step, "full_length_step")

        # Sources, then one segment per phase plus the rest of the run
        self.source_names: tuple[str, ...] = ()
        self._codes: np.ndarray | None = None
        data_weights = getattr(dataset, "mixing_weights", None)
        if "source" in self.fields:
            names, codes = np.unique(self.fields["source"].astype(str), return_inverse=True)
            self.source_names, self._codes = tuple(str(x) for x in names), codes.reshape(-1)
        elif data_weights:
            raise ConfigError(
                f"{type(dataset).__name__} has mixing_weights but example_fields() gives no 'source' field — "
                "mixing needs each example's source"
            )
        self.segments = self._build_segments(phases, data_weights)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(
        cls, dataset: Any, config: Any, *, total_steps: int | None = None, generator: torch.Generator | None = None
    ) -> CurriculumBatchSampler:
        """The sampler a TrainingConfig asks for (``curriculum``, ``training`` and ``data`` sections).

        Args:
            dataset: the training dataset.
            config: a TrainingConfig.
            total_steps: the run's planned optimizer steps (default: ``training.max_steps``, else
                ``epochs * ceil(batches / gradient_accumulation_steps)``).
            generator: the loader's generator.

        Returns:
            The sampler.
        """
        c, t, d = config.curriculum, config.training, config.data
        if total_steps is None:
            n = len(dataset)
            batches = n // t.batch_size if d.drop_last else math.ceil(n / t.batch_size)
            total_steps = t.max_steps or t.epochs * math.ceil(batches / t.gradient_accumulation_steps)
        return cls(
            dataset,
            batch_size=t.batch_size,
            seed=t.seed,
            drop_last=d.drop_last,
            shuffle=d.shuffle,
            accumulation_steps=t.gradient_accumulation_steps,
            total_steps=total_steps,
            phases=c.phases,
            difficulty=c.difficulty,
            difficulty_field=c.difficulty_field,
            start_fraction=c.start_fraction,
            full_data_step=c.full_data_step,
            start_length=c.start_length,
            max_length=d.max_length,
            full_length_step=c.full_length_step,
            generator=generator,
        )

    def _default_step(self, value: int | None, name: str) -> int:
        if value is not None:
            return int(value)
        if self.total_steps is None:
            raise ConfigError(f"curriculum.{name} is null (half the run), but the run's length is unknown — set it")
        return max(1, self.total_steps // 2)

    def _build_segments(self, phases: Sequence[Any], data_weights: Mapping[str, float] | None) -> list[_Segment]:
        segments, start = [], 0
        for i, phase in enumerate(phases):
            until, weights, spec = _phase_parts(phase)
            if until <= start:
                raise ConfigError(
                    f"curriculum.phases[{i}].until_step ({until}) must be larger than the previous phase's ({start}): "
                    "list the phases in order"
                )
            where = f"curriculum.phases[{i}]"
            if weights is not None:
                unknown = sorted(set(weights) - set(self.source_names))
                if unknown or not self.source_names:
                    known = (
                        f"its sources are: {', '.join(self.source_names)}"
                        if self.source_names
                        else _fields_hint(self.fields, self.dataset) + " (weights need a 'source' field)"
                    )
                    raise ConfigError(
                        f"{where}.weights names source(s) {unknown or sorted(weights)} the data does not have — {known}"
                    )
            chosen = weights if weights is not None else data_weights
            segments.append(self._segment(i, start, until, chosen, spec, where, explicit=weights is not None))
            start = until
        segments.append(self._segment(len(segments), start, None, data_weights, None, "the data after the phases"))
        return segments

    def _segment(
        self,
        index: int,
        start: int,
        end: int | None,
        weights: Mapping[str, float] | None,
        spec: Mapping[str, Any] | None,
        where: str,
        explicit: bool = False,
    ) -> _Segment:
        mask = _filter_mask(self.fields, spec, f"{where}.filter", self.dataset) if spec else np.ones(self.n, bool)
        if not weights:
            pool = np.flatnonzero(mask)
            if pool.size == 0:
                raise ConfigError(f"{where}.filter {dict(spec or {})} keeps no example — loosen the filter")
            return _Segment(index, start, end, [pool], None)
        assert self._codes is not None  # weights imply a source field (checked above)
        pools, kept = [], []
        for s, name in enumerate(self.source_names):
            w = float(weights.get(name, 0.0))
            if w < 0 or not math.isfinite(w):
                raise ConfigError(f"{where}: the weight of source '{name}' must be finite and >= 0; got {w}")
            pool = np.flatnonzero(mask & (self._codes == s))
            if w > 0 and pool.size:
                pools.append(pool)
                kept.append(w)
            elif w > 0 and spec and explicit:  # the phase's own weights name a source its filter removes
                warnings.warn(
                    f"{where}: source '{name}' has weight {w} but the filter keeps none of its examples; "
                    "the other sources share its weight",
                    UserWarning,
                    stacklevel=4,
                )
        if not pools:
            raise ConfigError(
                f"{where} keeps no example: weights {dict(weights)}, filter {dict(spec or {})} — check both against "
                f"the data's sources ({', '.join(self.source_names)})"
            )
        return _Segment(index, start, end, pools, _Swrr(_integer_weights(kept, where)))

    # ------------------------------------------------------------------ difficulty scores
    @property
    def scores(self) -> np.ndarray | None:
        """Difficulty score per example (low = easy), None before a loss scoring pass."""
        return self._scores

    def set_scores(self, scores: Any) -> None:
        """Set the per-example difficulty (``difficulty: loss``: the output of :func:`score_by_loss`).

        Raises:
            DataError: not one finite-or-NaN number per example.
        """
        arr = np.asarray(scores, dtype=np.float64).reshape(-1)
        if arr.shape != (self.n,):
            raise DataError(f"difficulty scores: {arr.shape[0]} values for {self.n} examples — give one per example")
        self._scores = arr
        for seg in self.segments:
            seg.ranked = []

    def _ranked(self, seg: _Segment) -> list[np.ndarray]:
        if not seg.ranked:
            if self._scores is None:
                if self.scorer is None:
                    raise ConfigError(
                        "curriculum.difficulty loss needs a scoring pass with the starting model: the Trainer runs it; "
                        "outside the Trainer call sampler.set_scores(score_by_loss(model, dataset, loss)) first"
                    )
                started = time.perf_counter()
                self.set_scores(self.scorer(self.dataset))
                log.info("curriculum: scored %d examples by loss in %.1fs", self.n, time.perf_counter() - started)
            scores = self._scores
            assert scores is not None
            # NaN scores sort last (hardest); ties keep dataset order.
            seg.ranked = [pool[np.argsort(scores[pool], kind="stable")] for pool in seg.pools]
        return seg.ranked

    # ------------------------------------------------------------------ schedule
    def step_of(self, epoch: int, position: int) -> int:
        """The optimizer step micro-batch ``position`` of ``epoch`` belongs to."""
        return epoch * self.steps_per_epoch + position // self.accumulation_steps

    def _first_example_of_step(self, step: int) -> int:
        epoch, within = divmod(step, self.steps_per_epoch)
        return epoch * self.examples_per_epoch + within * self.accumulation_steps * self.batch_size

    def fraction_at(self, step: int) -> float:
        """Difficulty pacing: the easiest fraction of examples eligible at ``step`` (1.0 without difficulty)."""
        if self.full_data_step is None:
            return 1.0
        return self.start_fraction + (1.0 - self.start_fraction) * min(1.0, step / self.full_data_step)

    def length_at(self, step: int) -> int | None:
        """Sequence-length curriculum: the maximum length at ``step`` (None without one)."""
        if self.start_length is None or self.max_length is None or self.full_length_step is None:
            return None
        grow = (self.max_length - self.start_length) * min(1.0, step / self.full_length_step)
        return int(self.start_length + math.floor(grow + 1e-9))

    def _segment_at(self, step: int) -> _Segment:
        for seg in self.segments:
            if seg.end_step is None or step < seg.end_step:
                return seg
        return self.segments[-1]  # unreachable: the last segment has no end

    # ------------------------------------------------------------------ batches
    def set_epoch(self, epoch: int) -> None:
        """Which epoch the next iteration yields (the Trainer's data iterator calls it)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[list[Key]]:
        epoch = self.epoch
        for position in range(self.batches_per_epoch):
            yield self.batch(epoch, position)

    def batch(self, epoch: int, position: int) -> list[Key]:
        """The keys of micro-batch ``position`` of ``epoch`` (a pure function of them and the seed).

        Example:
            >>> import torch
            >>> s = CurriculumBatchSampler(list(range(6)), batch_size=4, seed=3)
            >>> s.batch(0, 0) + s.batch(0, 1) == [k for b in s for k in b]
            True
        """
        offset = position * self.batch_size
        size = min(self.batch_size, self.examples_per_epoch - offset)
        step = self.step_of(epoch, position)
        seg = self._segment_at(step)
        first = epoch * self.examples_per_epoch + offset - self._first_example_of_step(seg.start_step)
        picks = np.arange(first, first + size, dtype=np.int64)  # pick numbers within the segment
        if seg.swrr is None:
            sources = np.zeros(size, dtype=np.int64)
            counts = picks
        else:
            sources = seg.swrr.sources(first, size)
            counts = seg.swrr.counts_before(picks, sources)
        out = np.empty(size, dtype=np.int64)
        if self.difficulty == "none":
            for s in np.unique(sources).tolist():
                sel = sources == s
                out[sel] = self._cycled(seg, s, counts[sel])
        else:
            ranked = self._ranked(seg)
            rng = np.random.default_rng([self.seed, 1 + seg.index, epoch, position])
            frac = self.fraction_at(step)
            for s in np.unique(sources).tolist():
                sel = sources == s
                pool = ranked[s]
                eligible = max(1, math.ceil(frac * len(pool) - 1e-9))
                m = int(sel.sum())
                out[sel] = pool[rng.choice(eligible, size=m, replace=m > eligible)]
        length = self.length_at(step)
        keys: list[Key] = list(out.tolist()) if length is None else [(i, length) for i in out.tolist()]
        return keys

    def _cycled(self, seg: _Segment, source: int, counts: np.ndarray) -> np.ndarray:
        """The ``counts``-th examples of a source's seeded cyclic order (reshuffled each pass)."""
        pool = seg.pools[source]
        cycles, within = np.divmod(counts, len(pool))
        out = np.empty(len(counts), dtype=np.int64)
        for cycle in np.unique(cycles).tolist():
            sel = cycles == cycle
            if self.shuffle:
                order = np.random.default_rng([self.seed, 0, seg.index, source, cycle]).permutation(len(pool))
                out[sel] = pool[order[within[sel]]]
            else:
                out[sel] = pool[within[sel]]
        return out

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict[str, Any]:
        """What a resume needs beyond the seed and the position: loss-based difficulty scores."""
        return {"num_examples": self.n, "scores": self._scores if self.difficulty == "loss" else None}

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        """Restore :meth:`state_dict` (a resumed run keeps the scores of the run's starting model).

        Raises:
            DataError: the checkpoint was written for data of another size.
        """
        if not state:
            return
        if state.get("num_examples") not in (None, self.n):
            raise DataError(
                f"the checkpoint's curriculum covers {state['num_examples']} training examples but the data has "
                f"{self.n}: resume with the same training data"
            )
        if state.get("scores") is not None and self.difficulty == "loss":
            self.set_scores(state["scores"])


def curriculum_active(section: Any, dataset: Any) -> bool:
    """Whether the training data needs a :class:`CurriculumBatchSampler`.

    True when the ``curriculum`` section asks for phases, a difficulty order or a length
    curriculum, or the dataset has ``mixing_weights``.

    Example:
        >>> from trainengine import TrainingConfigBuilder
        >>> section = TrainingConfigBuilder().with_section("curriculum", start_length=8).build().curriculum
        >>> curriculum_active(section, [1, 2])
        True
    """
    asks = bool(section.phases) or section.difficulty != "none" or section.start_length is not None
    return asks or bool(getattr(dataset, "mixing_weights", None))


# ---------------------------------------------------------------------------- loss scoring
def _move(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, Tensor):
        return obj.to(device)
    if isinstance(obj, Mapping):
        return {k: _move(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_move(v, device) for v in obj)
    return obj


def _default_forward(model: Any, batch: Any) -> tuple[Tensor, Tensor]:
    """(logits, labels) of a ``(inputs, labels)`` pair or a dict with ``labels`` (as the Trainer splits them)."""
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        inputs, labels = batch
    elif isinstance(batch, Mapping) and "labels" in batch:
        labels = batch["labels"]
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        if len(inputs) == 1 and "input_ids" in inputs:
            inputs = inputs["input_ids"]
    else:
        raise DataError(
            f"score_by_loss cannot split a batch of type {type(batch).__name__} into inputs and labels — "
            "yield (inputs, labels) pairs or dicts with a 'labels' key, or pass forward="
        )
    out = model(**inputs) if isinstance(inputs, Mapping) else model(inputs)
    if isinstance(out, Tensor):
        return out, labels
    logits = getattr(out, "logits", None)
    if logits is None and isinstance(out, Mapping):
        logits = out.get("logits")
    if logits is None and isinstance(out, (tuple, list)):
        logits = out[0]
    if not isinstance(logits, Tensor):
        raise DataError(f"score_by_loss: cannot find logits in a model output of type {type(out).__name__}")
    return logits, labels


def score_by_loss(
    model: torch.nn.Module,
    dataset: Any,
    loss: Any,
    *,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    to_device: Callable[[Any], Any] | None = None,
    forward: Callable[[Any, Any], tuple[Tensor, Tensor]] | None = None,
    collate_fn: Callable[[Any], Any] | None = None,
) -> np.ndarray:
    """Each example's loss under ``model`` (seed 004's loss-based curriculum: low loss = easy).

    One pass in dataset order, in eval mode and without gradients (the model's mode is restored).
    Works for any map-style dataset and task: the per-example loss is the strategy's mean over
    that example's targets (an example without targets scores 0).

    Args:
        model: the starting model.
        dataset: a map-style dataset.
        loss: a :class:`~trainengine.tasks.LossStrategy` (``loss_sum`` / ``num_targets``), or any
            ``loss(logits, labels) -> scalar`` applied to one example at a time.
        batch_size: examples per forward pass.
        device: where to run (default: the model's device); ignored when ``to_device`` is given.
        to_device: moves one batch to the model's device (the Trainer passes its runtime's).
        forward: ``forward(model, batch) -> (logits, labels)`` (default: ``(inputs, labels)``
            pairs or dicts with ``labels``, as the Trainer splits batches).
        collate_fn: batches examples (default: the dataset's ``collate_fn``, else :func:`collate_batch`).

    Returns:
        float64 array, one loss per example.

    Example:
        >>> import torch
        >>> from trainengine.data import InMemoryDataset
        >>> ds = InMemoryDataset((torch.tensor([[0.0], [1.0], [5.0]]), torch.tensor([0.0, 1.0, 0.0])))
        >>> model = torch.nn.Sequential(torch.nn.Flatten(0))  # predicts x
        >>> score_by_loss(model, ds, lambda p, y: ((p - y) ** 2).mean()).tolist()
        [0.0, 0.0, 25.0]
    """
    if to_device is None:
        dev = torch.device(device) if device is not None else next(iter(model.parameters()), torch.zeros(0)).device
        to_device = lambda b: _move(b, dev)  # noqa: E731 - a one-line default mover
    forward = forward or _default_forward
    collate = collate_fn or getattr(dataset, "collate_fn", None) or collate_batch
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    per_row = hasattr(loss, "loss_sum") and hasattr(loss, "num_targets")
    parts: list[Tensor] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in loader:
                logits, labels = forward(model, to_device(batch))
                values = []
                for i in range(int(labels.shape[0])):
                    lg, lb = logits[i : i + 1], labels[i : i + 1]
                    if per_row:
                        values.append(loss.loss_sum(lg, lb) / loss.num_targets(lb).clamp_min(1))
                    else:
                        values.append(loss(lg, lb))
                parts.append(torch.stack([v.reshape(()).double() for v in values]).cpu())  # one copy per batch
    finally:
        model.train(was_training)
    scores = torch.cat(parts).numpy() if parts else np.zeros(0)
    if scores.shape[0] != len(dataset):
        raise DataError(f"score_by_loss scored {scores.shape[0]} examples but the dataset has {len(dataset)}")
    return scores.astype(np.float64)
