"""The ``prm`` data set: reasoning steps with per-step targets for process reward models.

:func:`load_prm` reads the sources ``config.data`` enables (PRM800K, REVEAL, EQASC; readers in
``_reward_readers``), splits them into train / validation (and test), picks a tokenizer
(``_reward_tokenize``) and returns :class:`~trainengine.data.DatasetSplits` of
:class:`RewardDataset` s.

Splits:

* REVEAL goes to the **test split only** (its published terms allow it as a test set, not as
  training data) unless ``data.reveal_for_training`` is set; then it is split like the others.
* PRM800K files whose name contains ``test`` (``phase1_test.jsonl``) go to the test split when
  ``data.prm800k_path`` is a folder or a glob; a single named file is used for training.
* The rest is split train / validation by ``data.val_fraction``, per source (stratified), by
  problem: every example of one problem text lands on the same side (PRM800K has several
  solutions per problem, EQASC several chains per question), so validation problems are unseen.
  The split depends only on the data and ``training.seed``.
* ``data.max_train_samples`` / ``max_val_samples`` then keep a seeded random subset.

Batches (:class:`RewardCollator`) are dicts of ``input_ids``, ``attention_mask``,
``step_positions``, ``step_mask``, ``source_ids`` and ``labels`` (-100.0 at padding steps and at
unlabelled steps); see ``docs/reward-models.md``.

Example:
    >>> from trainengine.config import TrainingConfig
    >>> cfg = TrainingConfig.model_validate({"data": {"dataset": "prm", "eqasc_path": "eqasc.jsonl"}})
    >>> splits = load_prm(config=cfg)  # doctest: +SKIP
    >>> batch = splits.train.collate_fn([splits.train[0], splits.train[1]])  # doctest: +SKIP
"""

from __future__ import annotations

import glob
import hashlib
import os
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from trainengine.data._fingerprint import combine_fingerprints, fingerprint_dataset
from trainengine.data._reward_readers import (
    SOURCES,
    ReadReport,
    RewardExample,
    phase_of_file,
    read_eqasc,
    read_prm800k,
    read_reveal,
    resolve_fields,
)
from trainengine.data._reward_tokenize import StepTokenizer, assemble, build_step_tokenizer, encode_steps
from trainengine.data._types import DatasetInfo, DatasetSplits
from trainengine.errors import ConfigError, DataError

__all__ = ["RewardDataset", "RewardCollator", "load_prm", "split_reward_examples", "LABEL_PAD"]

#: Label value of padding steps and unlabelled steps (the loss ignores it).
LABEL_PAD = -100.0

_PATH_FIELDS = {"prm800k": "data.prm800k_path", "reveal": "data.reveal_path", "eqasc": "data.eqasc_path"}
_EXTENSIONS = {"prm800k": (".jsonl", ".json", ".ndjson"), "reveal": (".csv",), "eqasc": (".jsonl", ".json", ".ndjson")}


@dataclass(frozen=True)
class RewardCollator:
    """Pads a list of :class:`RewardDataset` items into one batch.

    Returns ``{"input_ids": int64 [B, T] (padded with pad_id), "attention_mask": int64 [B, T],
    "step_positions": int64 [B, S] (0 for padding steps), "step_mask": bool [B, S], "source_ids":
    int64 [B], "labels": float32 [B, S] (-100.0 for padding and unlabelled steps)}`` with ``T`` the
    longest sequence rounded up to a multiple of ``pad_to_multiple_of`` (at most ``max_length``)
    and ``S`` the most steps in the batch (at least 1).

    The rounding keeps the number of distinct batch shapes small: on a GPU every new sequence
    length makes the fused attention kernels (cuDNN / flash) build and tune a new plan, which cost
    a first pass over the data 40% of its speed in the H200 benchmark before it was added.

    Example:
        >>> import torch
        >>> item = {
        ...     "input_ids": torch.tensor([5, 10]),
        ...     "step_positions": torch.tensor([1]),
        ...     "labels": torch.tensor([1.0]),
        ...     "source_id": 0,
        ... }
        >>> b = RewardCollator(pad_id=0)([item])
        >>> b["input_ids"].tolist(), b["labels"].tolist(), b["step_mask"].tolist()
        ([[5, 10]], [[1.0]], [[True]])
    """

    pad_id: int = 0
    pad_to_multiple_of: int = 1
    max_length: int | None = None

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not items:
            raise DataError("cannot collate an empty batch")
        b = len(items)
        t = max(int(it["input_ids"].shape[0]) for it in items)
        m = max(1, self.pad_to_multiple_of)
        rounded = -(-t // m) * m
        t = max(t, min(rounded, self.max_length)) if self.max_length is not None else rounded
        s = max(1, max(int(it["step_positions"].shape[0]) for it in items))
        input_ids = torch.full((b, t), self.pad_id, dtype=torch.int64)
        attention = torch.zeros((b, t), dtype=torch.int64)
        positions = torch.zeros((b, s), dtype=torch.int64)
        step_mask = torch.zeros((b, s), dtype=torch.bool)
        labels = torch.full((b, s), LABEL_PAD, dtype=torch.float32)
        sources = torch.zeros(b, dtype=torch.int64)
        for i, it in enumerate(items):
            n = int(it["input_ids"].shape[0])
            k = int(it["step_positions"].shape[0])
            input_ids[i, :n] = it["input_ids"]
            attention[i, :n] = 1
            positions[i, :k] = it["step_positions"]
            step_mask[i, :k] = True
            lab = it["labels"].to(torch.float32)
            labels[i, :k] = torch.where(torch.isnan(lab), torch.full_like(lab, LABEL_PAD), lab)
            sources[i] = int(it["source_id"])
        return {
            "input_ids": input_ids,
            "attention_mask": attention,
            "step_positions": positions,
            "step_mask": step_mask,
            "source_ids": sources,
            "labels": labels,
        }


class RewardDataset(Dataset):
    """Tokenized reasoning chains: a map-style dataset for process reward models.

    ``ds[i]`` is ``{"input_ids": int64 [T], "step_positions": int64 [S], "labels": float32 [S]
    (NaN for an unlabelled step), "source_id": int}``; ``ds[(i, max_length)]`` is the same
    example truncated (whole steps) to at most ``max_length`` tokens (the sequence-length
    curriculum's cap; never longer than the data set's own ``max_length``).

    Metadata for samplers: :meth:`example_fields`, :attr:`mixing_weights`, :attr:`sources`;
    batching: :attr:`collate_fn` (:class:`RewardCollator`).

    Args:
        examples: the chains (kept for analysis: :meth:`example`).
        tokenizer: the tokenizer that encodes them.
        sources: the source names ``source_id`` indexes (the same tuple for every split).
        separator: text after every step (``data.step_separator``).
        max_length: most tokens per example.
        max_steps: most steps per example.
        mixing_weights: normalised per-source training weights, or None (no mixing).

    Raises:
        DataError: the separator has no tokens under the tokenizer, or an example's source is not
            in ``sources``.
    """

    def __init__(
        self,
        examples: Sequence[RewardExample],
        tokenizer: StepTokenizer,
        *,
        sources: Sequence[str],
        separator: str,
        max_length: int,
        max_steps: int,
        mixing_weights: dict[str, float] | None = None,
    ) -> None:
        self._examples = list(examples)
        self.tokenizer = tokenizer
        self.sources: tuple[str, ...] = tuple(sources)
        self.separator = separator
        self.max_length = int(max_length)
        self.max_steps = int(max_steps)
        self.mixing_weights = mixing_weights
        # Batches padded to a multiple of 64 tokens: few distinct shapes for the GPU's attention kernels.
        self.collate_fn = RewardCollator(tokenizer.pad_id, pad_to_multiple_of=64, max_length=self.max_length)
        self._sep = tokenizer.encode([separator])[0].astype(np.int64)
        if len(self._sep) == 0:
            raise DataError(
                f"data.step_separator {separator!r} encodes to no tokens with the {tokenizer.name} tokenizer; "
                "choose a separator it keeps (e.g. '\\n')"
            )
        self._prefix = np.asarray(tokenizer.prefix_ids, dtype=np.int64)
        index = {name: i for i, name in enumerate(self.sources)}
        missing = sorted({ex.source for ex in self._examples} - set(index))
        if missing:
            raise DataError(f"examples from source(s) {missing} are not in sources {self.sources}")
        n = len(self._examples)
        self._tokens: list[np.ndarray] = []
        self._cuts: list[np.ndarray] = []
        self._targets: list[np.ndarray] = []
        self.source_ids = np.asarray([index[ex.source] for ex in self._examples], dtype=np.int64)
        self.phases = np.asarray([ex.phase for ex in self._examples], dtype=np.int64)
        self.lengths = np.zeros(n, dtype=np.int64)
        self.num_steps = np.zeros(n, dtype=np.int64)
        self.mean_targets = np.full(n, np.nan, dtype=np.float64)
        self.problems_truncated = 0
        self.steps_dropped = 0
        texts: list[str] = []
        for ex in self._examples:
            texts.append(ex.problem)
            texts.extend(ex.steps[: self.max_steps])
        encoded = tokenizer.encode(texts) if texts else []
        h = hashlib.sha256(f"reward.v1|{tokenizer.sha256}|{separator}|{max_length}|{max_steps}|{n}|".encode())
        at = 0
        for i, ex in enumerate(self._examples):
            k = min(len(ex.steps), self.max_steps)
            pieces = encoded[at : at + 1 + k]
            at += 1 + k
            flat = np.concatenate(pieces).astype(np.int32) if pieces else np.zeros(0, np.int32)
            cuts = np.cumsum([len(p) for p in pieces]).astype(np.int64)
            targets = np.asarray(ex.targets[:k], dtype=np.float32)
            self._tokens.append(flat)
            self._cuts.append(cuts)
            enc = self._assemble(i, self.max_length)
            self._targets.append(targets)
            self.lengths[i] = len(enc.input_ids)
            self.num_steps[i] = enc.num_steps
            self.problems_truncated += int(enc.problem_truncated)
            self.steps_dropped += len(ex.steps) - enc.num_steps
            kept = targets[: enc.num_steps]
            if kept.size and not np.all(np.isnan(kept)):
                self.mean_targets[i] = float(np.nanmean(kept))
            h.update(f"{ex.source}|{ex.phase}|{k}|".encode())
            h.update(flat.tobytes())
            h.update(cuts.tobytes())
            h.update(targets.tobytes())
        self.data_fingerprint = h.hexdigest()
        self.data_record: dict[str, Any] | None = None

    def _assemble(self, i: int, max_length: int) -> Any:
        flat, cuts = self._tokens[i], self._cuts[i]
        bounds = np.concatenate([[0], cuts])
        pieces = [flat[bounds[j] : bounds[j + 1]] for j in range(len(cuts))]
        return assemble(self._prefix, pieces[0], pieces[1:], self._sep, max_length=max_length, max_steps=self.max_steps)

    def __len__(self) -> int:
        return len(self._examples)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        if isinstance(key, tuple):
            index, cap = int(key[0]), int(key[1])
            max_length = min(cap, self.max_length)
        else:
            index, max_length = int(key), self.max_length
        n = len(self._examples)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} examples")
        index %= n
        enc = self._assemble(index, max_length)
        return {
            "input_ids": torch.from_numpy(enc.input_ids),
            "step_positions": torch.from_numpy(enc.step_positions),
            "labels": torch.from_numpy(self._targets[index][: enc.num_steps].copy()),
            "source_id": int(self.source_ids[index]),
        }

    def encode(self, problem: str, steps: Sequence[str]) -> dict[str, torch.Tensor]:
        """A model-ready batch of one new solution, encoded exactly as this data set's examples.

        ``model(**dataset.encode(problem, steps))`` gives the steps' scores ``[1, S]`` (the steps
        beyond ``max_steps`` or ``max_length`` are left out: ``S`` may be fewer than given).

        Raises:
            DataError: no steps, or a step that is not text.
        """
        if not steps or not all(isinstance(step, str) for step in steps):
            raise DataError(f"give the solution's steps as a non-empty list of strings, got {steps!r}")
        enc = encode_steps(
            self.tokenizer, problem, list(steps), separator=self.separator, max_length=self.max_length,
            max_steps=self.max_steps,
        )  # fmt: skip
        item = {
            "input_ids": torch.from_numpy(enc.input_ids),
            "step_positions": torch.from_numpy(enc.step_positions),
            "labels": torch.zeros(enc.num_steps, dtype=torch.float32),
            "source_id": 0,
        }
        batch = self.collate_fn([item])
        batch.pop("labels")
        return batch

    def example(self, index: int) -> RewardExample:
        """The :class:`RewardExample` behind item ``index`` (texts, targets, meta)."""
        return self._examples[index]

    def example_fields(self) -> dict[str, np.ndarray]:
        """One value per example: ``source`` (str), ``phase`` (int, 0 unknown), ``num_steps`` (steps
        kept after truncation), ``length`` (tokens at the data set's ``max_length``), ``mean_target``
        (mean labelled target, NaN when none).

        Example:
            >>> ds.example_fields()["source"][:2]  # doctest: +SKIP
            array(['prm800k', 'prm800k'], dtype='<U7')
        """
        return {
            "source": np.asarray([self.sources[i] for i in self.source_ids], dtype=str),
            "phase": self.phases.copy(),
            "num_steps": self.num_steps.copy(),
            "length": self.lengths.copy(),
            "mean_target": self.mean_targets.copy(),
        }

    def counts(self) -> dict[str, int]:
        """Examples per source."""
        c = Counter(self.sources[i] for i in self.source_ids.tolist())
        return {name: c[name] for name in self.sources if c[name]}

    def __repr__(self) -> str:
        return f"RewardDataset({len(self)} examples, sources={self.counts()}, max_length={self.max_length})"


# ----------------------------------------------------------------------------- files
def _files_of(spec: str, source: str) -> tuple[list[Path], bool]:
    """Files of a ``data.*_path`` value, and whether it named several (a folder or a glob)."""
    what = _PATH_FIELDS[source]
    text = os.path.expanduser(spec)
    exts = _EXTENSIONS[source]
    if glob.has_magic(text):
        files = [Path(p) for p in sorted(glob.glob(text, recursive=True)) if Path(p).is_file()]
        if not files:
            raise DataError(f"{what}: {spec!r} matches no file (working directory {os.getcwd()})")
        return files, True
    path = Path(text)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in exts)
        if not files:
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in exts)
        if not files:
            raise DataError(f"{what}: the folder {spec!r} holds no {'/'.join(exts)} file")
        return files, True
    if not path.is_file():
        raise DataError(f"{what}: {spec!r} does not exist (working directory {os.getcwd()}); check the path")
    return [path], False


def _is_test_file(path: Path) -> bool:
    return "test" in path.stem.lower()


# ----------------------------------------------------------------------------- splitting
def split_reward_examples(
    examples: Sequence[RewardExample], val_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Deterministic train / validation indices, stratified by source and grouped by problem.

    Per source, the distinct problem texts are ordered and shuffled with a generator seeded by
    ``(seed, source)``; ``round(groups * val_fraction)`` of them (at least 1 when the source has two
    problems or more, at most all but one) go to validation with all their examples.

    Returns:
        ``(train indices, val indices)``, each in the examples' order.

    Example:
        >>> exs = [RewardExample(str(i), f"p{i}", ["s"], [1.0], "eqasc") for i in range(10)]
        >>> tr, va = split_reward_examples(exs, 0.2, seed=0)
        >>> len(tr), len(va), split_reward_examples(exs, 0.2, seed=0) == (tr, va)
        (8, 2, True)
    """
    by_source: dict[str, list[str]] = {}
    for ex in examples:
        by_source.setdefault(ex.source, []).append(ex.problem)
    val_groups: dict[str, set[str]] = {}
    for source, problems in by_source.items():
        groups = sorted(set(problems))
        n_val = round(len(groups) * val_fraction)
        n_val = min(max(n_val, 1), len(groups) - 1) if len(groups) >= 2 else 0
        rng = np.random.default_rng([int(seed) % 2**32, zlib.crc32(source.encode())])
        order = rng.permutation(len(groups))
        val_groups[source] = {groups[j] for j in order[:n_val]}
    train: list[int] = []
    val: list[int] = []
    for i, ex in enumerate(examples):
        (val if ex.problem in val_groups[ex.source] else train).append(i)
    return train, val


def _cap(indices: list[int], cap: int | None, seed: int, salt: int) -> list[int]:
    if cap is None or len(indices) <= cap:
        return indices
    rng = np.random.default_rng([int(seed) % 2**32, salt])
    keep = np.sort(rng.permutation(len(indices))[:cap])
    return [indices[j] for j in keep.tolist()]


def _mixing_weights(data: Any, present: Sequence[str]) -> dict[str, float] | None:
    if len(present) < 2:
        return None
    raw = {s: float(getattr(data, f"{s}_weight")) for s in present}
    total = sum(raw.values())
    if total <= 0:
        raise ConfigError(
            f"data.{'/'.join(f'{s}_weight' for s in present)} are all 0; give at least one training source a weight"
        )
    return {s: w / total for s, w in raw.items()}


# ----------------------------------------------------------------------------- the factory
def load_prm(config: Any = None, *, evaluation_only: bool = False) -> DatasetSplits:
    """Load the ``prm`` data set that ``config.data`` describes (the ``DATASETS`` factory ``prm``).

    Sources: PRM800K (``data.prm800k_path``), REVEAL (``data.reveal_path``), EQASC
    (``data.eqasc_path``), each when its ``data.use_*`` is true and its path is set. See the module
    docstring for how the splits are made, ``_reward_readers`` for each format's fields and
    ``_reward_tokenize`` for the tokenizer.

    Args:
        config: the whole :class:`~trainengine.config.TrainingConfig` (``data``, ``model.name_or_path``
            for the tokenizer, ``training.seed`` for the split).
        evaluation_only: allow an empty training split (evaluating on REVEAL alone); the train and
            validation datasets are then empty when no training source is set.

    Returns:
        :class:`DatasetSplits` with ``train``, ``val`` and ``test`` (None when no test data)
        :class:`RewardDataset` s; ``info`` has ``task_type "reward"``, the tokenizer's
        ``vocab_size``, ``seq_len = data.max_length`` and in ``extra``: ``tokenizer``,
        ``skipped_rows`` / ``excluded`` per source, ``counts`` per split and source, ``sources``,
        ``files``, ``reveal_test_only`` and truncation counts.

    Raises:
        ConfigError: no source is enabled and set, unknown ``data.source_fields`` keys, or all
            training weights are 0.
        DataError: a missing file, a malformed line (``data.bad_rows: error``), a phase that
            matches no file, or no training / validation examples.
    """
    if config is None:
        raise ConfigError("load_prm needs the training config: call load_prm(config=TrainingConfig(...))")
    d = config.data
    seed = int(getattr(getattr(config, "training", None), "seed", 0) or 0)
    enabled = [s for s in SOURCES if getattr(d, f"use_{s}") and getattr(d, f"{s}_path")]
    if not enabled:
        raise ConfigError(
            "data.dataset prm needs at least one source: set data.prm800k_path, data.reveal_path or data.eqasc_path "
            "(with its data.use_prm800k / use_reveal / use_eqasc true)"
        )
    fields = {s: resolve_fields(s, d.source_fields) for s in SOURCES}
    bad_rows = d.bad_rows
    pool: list[RewardExample] = []
    test: list[RewardExample] = []
    reports: dict[str, ReadReport] = {}
    for source in enabled:
        files, several = _files_of(str(getattr(d, f"{source}_path")), source)
        report = reports[source] = ReadReport()
        if source == "prm800k":
            if d.prm800k_phase is not None:
                chosen = [f for f in files if phase_of_file(f) == d.prm800k_phase]
                if not chosen:
                    raise DataError(
                        f"data.prm800k_phase: {d.prm800k_phase} matches none of {[f.name for f in files]} (the phase "
                        "is read from file names phase1*/phase2*); set data.prm800k_phase: null or point "
                        "data.prm800k_path at the phase files"
                    )
                files = chosen
            train_files = [f for f in files if not (several and _is_test_file(f))]
            test_files = [f for f in files if several and _is_test_file(f)]
            pool += read_prm800k(train_files, fields=fields[source], bad_rows=bad_rows, report=report)
            test += read_prm800k(test_files, fields=fields[source], bad_rows=bad_rows, report=report)
        elif source == "reveal":
            examples = read_reveal(files, fields=fields[source], bad_rows=bad_rows, report=report)
            (pool if d.reveal_for_training else test).extend(examples)
        else:
            pool += read_eqasc(files, fields=fields[source], bad_rows=bad_rows, report=report)

    train_idx, val_idx = split_reward_examples(pool, d.val_fraction, seed) if pool else ([], [])
    train_idx = _cap(train_idx, d.max_train_samples, seed, 1)
    val_idx = _cap(val_idx, d.max_val_samples, seed, 2)
    train_ex = [pool[i] for i in train_idx]
    val_ex = [pool[i] for i in val_idx]
    if not evaluation_only:
        if not train_ex:
            hint = (
                " REVEAL is a test set only unless data.reveal_for_training: true (its published terms allow it as a "
                "test set)."
                if "reveal" in enabled
                else ""
            )
            raise DataError(
                f"the prm data set has no training examples (sources read: {', '.join(enabled)}).{hint} Set "
                "data.prm800k_path or data.eqasc_path to training data."
            )
        if not val_ex:
            raise DataError(
                f"the prm data set has no validation examples: {len(train_ex)} training examples from too few "
                "distinct problems to hold some out; add data or raise data.val_fraction"
            )

    def training_texts() -> list[str]:
        texts: list[str] = []
        for ex in train_ex or test:
            texts.append(ex.problem)
            texts.extend(ex.steps)
        texts.append(d.step_separator)
        return texts

    tokenizer = build_step_tokenizer(
        d.tokenizer, backbone=getattr(config.model, "name_or_path", None), training_texts=training_texts
    )
    present = [s for s in SOURCES if any(ex.source == s for ex in (*train_ex, *val_ex, *test))]
    train_sources = [s for s in SOURCES if any(ex.source == s for ex in train_ex)]
    common = {
        "tokenizer": tokenizer,
        "sources": present,
        "separator": d.step_separator,
        "max_length": d.max_length,
        "max_steps": d.max_steps_per_example,
    }
    train_ds = RewardDataset(train_ex, mixing_weights=_mixing_weights(d, train_sources), **common)
    val_ds = RewardDataset(val_ex, **common)
    test_ds = RewardDataset(test, **common) if test else None

    splits = {"train": train_ds, "val": val_ds, **({"test": test_ds} if test_ds is not None else {})}
    extra: dict[str, Any] = {
        "tokenizer": tokenizer.to_dict(),
        "sources": list(present),
        "skipped_rows": {s: reports[s].skipped for s in enabled},
        "skipped_at": {s: reports[s].skipped_at for s in enabled if reports[s].skipped_at},
        "excluded": {s: dict(reports[s].excluded) for s in enabled if reports[s].excluded},
        "files": {s: reports[s].files for s in enabled},
        "counts": {name: ds.counts() for name, ds in splits.items()},
        "mixing_weights": train_ds.mixing_weights,
        "reveal_test_only": "reveal" in enabled and not d.reveal_for_training,
        "prm800k_phase": d.prm800k_phase,
        "step_separator": d.step_separator,
        "max_steps_per_example": d.max_steps_per_example,
        "truncation": {
            "problems_truncated": sum(ds.problems_truncated for ds in splits.values()),
            "steps_dropped": sum(ds.steps_dropped for ds in splits.values()),
        },
    }
    record = {"name": "prm", **{k: v for k, v in extra.items() if k != "tokenizer"}}
    for ds in splits.values():
        ds.data_record = record
    fingerprint = combine_fingerprints(fingerprint_dataset(train_ds), fingerprint_dataset(val_ds))
    info = DatasetInfo(
        name="prm",
        task_type="reward",
        input_dim=None,
        num_classes=None,
        vocab_size=tokenizer.vocab_size,
        seq_len=d.max_length,
        input_shape=(d.max_length,),
        num_train=len(train_ds),
        num_val=len(val_ds),
        fingerprint=fingerprint,
        extra=extra,
    )
    return DatasetSplits(train=train_ds, val=val_ds, info=info, test=test_ds)


load_prm.takes_config = True  # type: ignore[attr-defined]  # read by the engine's load_data_for: pass the whole config
