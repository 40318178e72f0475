"""Readers for reasoning-step data (process reward models): PRM800K, REVEAL and EQASC.

Each reader maps one published format to :class:`RewardExample` (a problem, its reasoning steps,
one target in ``[0, 1]`` per step, the source's name). Every field or column name a reader looks
for is a default that ``data.source_fields[<source>]`` overrides (``{reveal: {step: step_text}}``);
dotted names (``question.problem``) walk into nested JSON objects. The defaults are listed in
:data:`DEFAULT_FIELDS` and in each reader's docstring.

A malformed line (bad JSON, a missing or mistyped field, an unknown label value) either stops the
read with a :class:`~trainengine.errors.DataError` naming the file and line (``bad_rows="error"``)
or is skipped and counted in :attr:`ReadReport.skipped` (``bad_rows="skip"``). Well-formed records
that yield no scorable step (an unlabelled chain, a PRM800K ``bad_problem``) are not errors: they
are counted in :attr:`ReadReport.excluded` by reason.

Example:
    >>> ex = RewardExample(id="a", problem="1+1?", steps=["1+1=2"], targets=[1.0], source="prm800k")
    >>> ex.num_steps, ex.mean_target
    (1, 1.0)
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from trainengine.errors import ConfigError, DataError

__all__ = [
    "RewardExample",
    "ReadReport",
    "DEFAULT_FIELDS",
    "SOURCES",
    "read_prm800k",
    "read_reveal",
    "read_eqasc",
    "phase_of_file",
    "label_value",
    "resolve_fields",
]

#: The sources the ``prm`` data set knows, in their canonical order (``source_ids`` index this order
#: restricted to the sources present).
SOURCES: tuple[str, ...] = ("prm800k", "reveal", "eqasc")

#: Default field / column names per source; ``data.source_fields`` overrides any of them.
DEFAULT_FIELDS: dict[str, dict[str, str]] = {
    "prm800k": {
        "id": "",  # empty: "<file name>:<line>"
        "problem": "question.problem",
        "steps": "label.steps",
        "completions": "completions",
        "text": "text",
        "rating": "rating",
        "chosen": "chosen_completion",
        "human": "human_completion",
        "finish_reason": "label.finish_reason",
    },
    "reveal": {
        "id": "answer_id",
        "question": "question",
        "answer": "full_answer",
        "step": "step",
        "step_index": "step_idx",
        "correctness": "correctness_label",
        "attribution": "attribution_label",
        "relevance": "relevance_label",
    },
    "eqasc": {
        "id": "id",
        "question": "question.stem",
        "choices": "question.choices",
        "choice_label": "label",
        "choice_text": "text",
        "answer_key": "answerKey",
        "chains": "chain_candidates",
        "chain_id": "chain_id",
        "facts": "fact1,fact2",
        "label": "turk_label.label",
    },
}

BadRows = Literal["error", "skip"]

_RATING_TARGET = {1: 1.0, 0: 0.5, -1: 0.0}
_TRUE = frozenset({"correct", "true", "yes", "valid", "1", "1.0", "fully", "fully supported", "relevant"})
_FALSE = frozenset(
    {
        "incorrect",
        "false",
        "no",
        "invalid",
        "0",
        "0.0",
        "unsupported",
        "contradictory",
        "contradicted",
        "not relevant",
        "irrelevant",
    }
)
_HALF = frozenset({"partially", "partially supported", "partial", "0.5"})


@dataclass
class RewardExample:
    """One reasoning chain: a problem, its steps and one target per step.

    Attributes:
        id: unique within its source (``"phase2_train.jsonl:17"``, a REVEAL ``answer_id``, an
            EQASC chain id).
        problem: the question (EQASC: the question plus the answer the chain explains).
        steps: the reasoning steps, in order.
        targets: one value per step in ``[0, 1]`` (1 = correct / valid), or NaN for a step that
            is part of the text but has no label (REVEAL steps without one): it is not scored.
        source: ``"prm800k"``, ``"reveal"`` or ``"eqasc"``.
        phase: PRM800K phase (1 or 2, from the file name); 0 when unknown or another source.
        meta: source-specific extras kept for analysis (``finish_reason``, REVEAL's
            attribution / relevance labels, the EQASC chain id).

    Raises:
        DataError: steps and targets differ in length, or a target is outside ``[0, 1]``.
    """

    id: str
    problem: str
    steps: list[str]
    targets: list[float]
    source: str
    phase: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.steps) != len(self.targets):
            raise DataError(
                f"example {self.id!r}: {len(self.steps)} steps but {len(self.targets)} targets; give one per step"
            )
        for t in self.targets:
            if not (math.isnan(t) or 0.0 <= t <= 1.0):
                raise DataError(f"example {self.id!r}: target {t} is outside [0, 1]")

    @property
    def num_steps(self) -> int:
        """Number of steps."""
        return len(self.steps)

    @property
    def mean_target(self) -> float:
        """Mean of the labelled targets (NaN when no step is labelled)."""
        vals = [t for t in self.targets if not math.isnan(t)]
        return sum(vals) / len(vals) if vals else math.nan


@dataclass
class ReadReport:
    """What a reader skipped or left out.

    Attributes:
        skipped: malformed lines / rows skipped with ``bad_rows="skip"``.
        skipped_at: the first few skipped places (``"phase1_train.jsonl:7: ..."``).
        excluded: well-formed records that gave no example, by reason.
        files: the files read.
    """

    skipped: int = 0
    skipped_at: list[str] = field(default_factory=list)
    excluded: Counter[str] = field(default_factory=Counter)
    files: list[str] = field(default_factory=list)

    def bad(self, where: str, what: str, bad_rows: BadRows, field_hint: str) -> None:
        """Raise for a malformed record, or count it (``bad_rows="skip"``)."""
        if bad_rows == "error":
            raise DataError(
                f"{where}: {what}; fix the line{field_hint}, or set data.bad_rows: skip to skip malformed lines"
            )
        self.skipped += 1
        if len(self.skipped_at) < 10:
            self.skipped_at.append(f"{where}: {what}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "skipped": self.skipped,
            "skipped_at": list(self.skipped_at),
            "excluded": dict(self.excluded),
            "files": list(self.files),
        }


class _Malformed(Exception):
    """A record that cannot be mapped (message says why)."""


def resolve_fields(source: str, overrides: Mapping[str, Mapping[str, str]] | None) -> dict[str, str]:
    """The field names for ``source``: :data:`DEFAULT_FIELDS` updated by ``data.source_fields``.

    Raises:
        ConfigError: an unknown source in ``overrides`` or an unknown field key (the message lists
            the known ones).

    Example:
        >>> resolve_fields("reveal", {"reveal": {"step": "step_text"}})["step"]
        'step_text'
    """
    overrides = overrides or {}
    unknown = sorted(set(overrides) - set(SOURCES))
    if unknown:
        raise ConfigError(f"data.source_fields names unknown source(s) {unknown}; the sources are {', '.join(SOURCES)}")
    fields = dict(DEFAULT_FIELDS[source])
    extra = overrides.get(source) or {}
    bad = sorted(set(extra) - set(fields))
    if bad:
        raise ConfigError(
            f"data.source_fields.{source} has unknown key(s) {bad}; the keys are {', '.join(sorted(fields))}"
        )
    fields.update({k: str(v) for k, v in extra.items()})
    return fields


def _get(obj: Any, path: str) -> Any:
    """``obj["a"]["b"]`` for ``path="a.b"``; None where a level is missing."""
    if not path:
        return None
    cur = obj
    for part in path.split("."):
        if isinstance(cur, Mapping) and part in cur:
            cur = cur[part]
        else:
            return None
    return cur


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise _Malformed(f"{what} must be a string, got {type(value).__name__}")
    return value.strip()


def phase_of_file(path: str | os.PathLike[str]) -> int:
    """PRM800K phase from a file name: ``phase1_train.jsonl`` -> 1, ``phase2*`` -> 2, else 0.

    Example:
        >>> phase_of_file("data/phase2_test.jsonl"), phase_of_file("x.jsonl")
        (2, 0)
    """
    m = re.search(r"phase[_\-\s]?([12])", Path(path).name.lower())
    return int(m.group(1)) if m else 0


def _json_records(path: Path, report: ReadReport, bad_rows: BadRows) -> Iterator[tuple[int, Any]]:
    """(line number, parsed object) of a JSON-lines file; a file starting with ``[`` is one JSON array."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path.name}:{exc.lineno}: invalid JSON ({exc.msg}); fix the file") from None
        # A JSON array: "line" is the item number.
        yield from enumerate(items, start=1)
        return
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as exc:
            report.bad(f"{path.name}:{lineno}", f"invalid JSON ({exc.msg} at column {exc.colno})", bad_rows, "")


# ----------------------------------------------------------------------------- PRM800K
def _prm_rating(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value not in _RATING_TARGET:
        raise _Malformed(f"{where} rating must be -1, 0, 1 or null, got {value!r}")
    return _RATING_TARGET[int(value)]


def _prm_record(rec: Any, f: dict[str, str]) -> tuple[str, list[str], list[float], str | None]:
    if not isinstance(rec, Mapping):
        raise _Malformed(f"expected a JSON object, got {type(rec).__name__}")
    problem = _text(_get(rec, f["problem"]), f"'{f['problem']}'")
    steps = _get(rec, f["steps"])
    if not isinstance(steps, list):
        raise _Malformed(f"'{f['steps']}' must be a list of steps, got {type(steps).__name__}")
    finish = _get(rec, f["finish_reason"])
    texts: list[str] = []
    targets: list[float] = []
    for k, step in enumerate(steps):
        if not isinstance(step, Mapping):
            raise _Malformed(f"step {k} must be an object")
        completions = step.get(f["completions"]) or []
        if not isinstance(completions, list) or not all(isinstance(c, Mapping) for c in completions):
            raise _Malformed(f"step {k}: '{f['completions']}' must be a list of objects")
        chosen = step.get(f["chosen"])
        human = step.get(f["human"])
        picked: tuple[str, float | None] | None = None
        last = False
        if chosen is not None:
            if isinstance(chosen, bool) or not isinstance(chosen, int) or not 0 <= chosen < len(completions):
                raise _Malformed(
                    f"step {k}: '{f['chosen']}' is {chosen!r}, not an index into its {len(completions)} completions"
                )
            c = completions[chosen]
            picked = (
                _text(c.get(f["text"]), f"step {k} completion text"),
                _prm_rating(c.get(f["rating"]), f"step {k}"),
            )
        elif human:
            # A labeller's own step: its rating is usually null in the published files; it is correct.
            if isinstance(human, str):
                picked = (human.strip(), 1.0)
            elif isinstance(human, Mapping):
                rating = _prm_rating(human.get(f["rating"]), f"step {k} human completion")
                picked = (
                    _text(human.get(f["text"]), f"step {k} human completion text"),
                    1.0 if rating is None else rating,
                )
            else:
                raise _Malformed(f"step {k}: '{f['human']}' must be an object, a string or null")
        else:
            # No chosen and no human completion: the solution ended here (an error was found, the
            # labeller gave up). Take the first rated completion as this last step, then stop.
            last = True
            for c in completions:
                rating = _prm_rating(c.get(f["rating"]), f"step {k}")
                if rating is not None:
                    picked = (_text(c.get(f["text"]), f"step {k} completion text"), rating)
                    break
        if picked is None or picked[1] is None:
            break  # an unrated step: the labelled part of the solution ends before it
        texts.append(picked[0])
        targets.append(picked[1])
        if last:
            break
    return problem, texts, targets, finish if isinstance(finish, str) else None


def read_prm800k(
    files: list[Path],
    *,
    fields: Mapping[str, str] | None = None,
    bad_rows: BadRows = "error",
    report: ReadReport | None = None,
) -> list[RewardExample]:
    """Read PRM800K JSON-lines files, one labelled solution per line.

    Default fields (``data.source_fields.prm800k`` overrides them): problem ``question.problem``;
    steps ``label.steps``, each with ``completions`` (objects with ``text`` and ``rating`` in
    {-1, 0, 1}), ``chosen_completion`` (an index or null) and ``human_completion`` (an object with
    ``text``, or null); ``label.finish_reason``; ``id`` unset (the id is ``<file name>:<line>``).

    Mapping, per step in order: the chosen completion; else the human completion (its rating,
    usually null, counts as 1.0: a labeller wrote it as the correct step); else (the solution
    ended at this step: an error was found or the labeller gave up) the first completion that has
    a rating, which becomes the last step. A step without a rating ends the solution before it.
    Ratings map 1 -> 1.0, 0 -> 0.5, -1 -> 0.0. Solutions whose ``finish_reason`` is
    ``bad_problem`` and solutions with no rated step are excluded (counted, not errors). The
    phase (1 or 2) comes from the file name (``phase1_train.jsonl``), 0 when it has none.

    Args:
        files: JSON-lines files (a file starting with ``[`` is read as one JSON array).
        fields: field names (see above); None = the defaults.
        bad_rows: ``"error"`` raises on a malformed line, ``"skip"`` skips and counts it.
        report: collects skipped / excluded counts; a new one when None.

    Returns:
        The examples, in file and line order.

    Raises:
        DataError: a malformed line (with ``bad_rows="error"``), naming the file and line.
    """
    f = dict(DEFAULT_FIELDS["prm800k"], **(fields or {}))
    report = report if report is not None else ReadReport()
    out: list[RewardExample] = []
    for path in files:
        report.files.append(str(path))
        phase = phase_of_file(path)
        for lineno, rec in _json_records(path, report, bad_rows):
            where = f"{path.name}:{lineno}"
            try:
                problem, steps, targets, finish = _prm_record(rec, f)
                rid = _get(rec, f["id"]) if f["id"] else None
            except _Malformed as exc:
                report.bad(where, str(exc), bad_rows, " (or map its fields with data.source_fields.prm800k)")
                continue
            if finish == "bad_problem":
                report.excluded["bad_problem"] += 1
                continue
            if not steps:
                report.excluded["no_rated_step"] += 1
                continue
            meta = {"finish_reason": finish, "file": path.name, "line": lineno}
            out.append(
                RewardExample(
                    id=str(rid) if rid is not None else where,
                    problem=problem,
                    steps=steps,
                    targets=targets,
                    source="prm800k",
                    phase=phase,
                    meta=meta,
                )
            )
    return out


# ----------------------------------------------------------------------------- REVEAL
def label_value(value: Any) -> float | None:
    """A correctness / validity label as a target: 1.0, 0.5, 0.0, or None when empty.

    Accepted (case-insensitive): ``Correct``/``true``/``yes``/``valid``/``1``/``Fully`` (supported)
    -> 1.0; ``Partially`` -> 0.5; ``Incorrect``/``false``/``no``/``invalid``/``0``/``Unsupported``/
    ``Contradictory`` -> 0.0; booleans; numbers in ``[0, 1]``; empty / null -> None.

    Raises:
        ValueError: any other value.

    Example:
        >>> label_value("Correct"), label_value("incorrect"), label_value(""), label_value(0.25)
        (1.0, 0.0, None, 0.25)
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        if 0.0 <= float(value) <= 1.0:
            return float(value)
        raise ValueError(f"label {value!r} is outside [0, 1]")
    text = str(value).strip().lower().rstrip(".")
    if not text or text in ("nan", "none", "null"):
        return None
    if text in _TRUE:
        return 1.0
    if text in _FALSE:
        return 0.0
    if text in _HALF:
        return 0.5
    try:
        number = float(text)
    except ValueError:
        raise ValueError(
            f"unknown label {value!r} (accepted: Correct/Incorrect, true/false, yes/no, valid/invalid, "
            "Fully/Partially/Unsupported/Contradictory, or a number in [0, 1])"
        ) from None
    if 0.0 <= number <= 1.0:
        return number
    raise ValueError(f"label {value!r} is outside [0, 1]")


def read_reveal(
    files: list[Path],
    *,
    fields: Mapping[str, str] | None = None,
    bad_rows: BadRows = "error",
    report: ReadReport | None = None,
) -> list[RewardExample]:
    """Read REVEAL CSV files (one row per reasoning step) and group the rows back into chains.

    REVEAL's published terms allow it as a test set only; :func:`trainengine.data.load_prm`
    therefore puts it in the test split unless ``data.reveal_for_training`` is set.

    Default columns (``data.source_fields.reveal`` overrides them): chain id ``answer_id``,
    ``question``, the full answer ``full_answer``, the step text ``step``, its index ``step_idx``
    (an integer), and the labels ``correctness_label``, ``attribution_label``,
    ``relevance_label``. Rows are grouped by chain id (first appearance order) and ordered by step
    index; a repeated (chain id, step index) row (REVEAL repeats a step once per evidence passage)
    keeps its first occurrence. The target is the correctness label (see :func:`label_value` for the
    accepted values: ``Correct`` -> 1.0, ``Incorrect`` -> 0.0); when it is empty, the attribution
    label (``Fully`` -> 1.0, ``Partially`` -> 0.5, ``Unsupported``/``Contradictory`` -> 0.0); when
    both are empty the step stays in the text unscored (target NaN). Attribution and relevance
    labels are kept in ``meta``. A chain with no labelled step is excluded.

    Raises:
        DataError: a required column is missing (the message lists the header), or a malformed
            row (wrong number of fields, a non-integer step index, an unknown label) with
            ``bad_rows="error"`` (the message names the file and line).
    """
    f = dict(DEFAULT_FIELDS["reveal"], **(fields or {}))
    report = report if report is not None else ReadReport()
    chains: dict[str, dict[str, Any]] = {}
    for path in files:
        report.files.append(str(path))
        try:
            handle = path.open(newline="", encoding="utf-8")
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
        with handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                continue
            header = [h.strip() for h in header]
            col = {name: i for i, name in enumerate(header)}
            required = [f[k] for k in ("id", "question", "step", "step_index", "correctness")]
            missing = [c for c in required if c not in col]
            if missing:
                raise DataError(
                    f"{path.name}: column(s) {missing} are missing (header: {', '.join(header)}); map them with "
                    f"data.source_fields.reveal, e.g. {{step: <your step column>}}"
                )
            for row in reader:
                lineno = reader.line_num
                if not any(cell.strip() for cell in row):
                    continue
                where = f"{path.name}:{lineno}"
                if len(row) != len(header):
                    report.bad(where, f"{len(row)} fields where the header has {len(header)}", bad_rows, "")
                    continue

                def cell(key: str, row: list[str] = row, col: dict[str, int] = col) -> str:
                    name = f[key]
                    return row[col[name]] if name in col else ""

                try:
                    index = int(float(cell("step_index")))
                except ValueError:
                    report.bad(where, f"step index {cell('step_index')!r} is not an integer", bad_rows, "")
                    continue
                try:
                    target = label_value(cell("correctness"))
                    if target is None and f["attribution"] in col:
                        target = label_value(cell("attribution"))
                except ValueError as exc:
                    report.bad(where, str(exc), bad_rows, "")
                    continue
                key = cell("id").strip() or f"{cell('question')}\x00{cell('answer')}"
                chain = chains.setdefault(
                    key,
                    {
                        "question": cell("question").strip(),
                        "answer": cell("answer").strip(),
                        "steps": {},
                        "where": where,
                    },
                )
                if index in chain["steps"]:
                    continue  # the same step again (one row per evidence passage): keep the first
                chain["steps"][index] = (
                    cell("step").strip(),
                    math.nan if target is None else target,
                    cell("attribution").strip(),
                    cell("relevance").strip(),
                )
    out: list[RewardExample] = []
    for key, chain in chains.items():
        ordered = [chain["steps"][i] for i in sorted(chain["steps"])]
        targets = [s[1] for s in ordered]
        if all(math.isnan(t) for t in targets):
            report.excluded["no_labelled_step"] += 1
            continue
        out.append(
            RewardExample(
                id=key if "\x00" not in key else chain["where"],
                problem=chain["question"],
                steps=[s[0] for s in ordered],
                targets=targets,
                source="reveal",
                meta={
                    "full_answer": chain["answer"],
                    "attribution": [s[2] for s in ordered],
                    "relevance": [s[3] for s in ordered],
                },
            )
        )
    return out


# ----------------------------------------------------------------------------- EQASC
def _eqasc_record(rec: Any, f: dict[str, str], where: str) -> tuple[list[RewardExample], int]:
    if not isinstance(rec, Mapping):
        raise _Malformed(f"expected a JSON object, got {type(rec).__name__}")
    qid = _get(rec, f["id"])
    question = _get(rec, f["question"])
    if question is None and isinstance(rec.get("question"), str):
        question = rec["question"]
    question = _text(question, f"'{f['question']}'")
    fact_keys = [k.strip() for k in f["facts"].split(",") if k.strip()]
    groups: list[tuple[str, Any]] = []  # (answer text or "", chains)
    choices = _get(rec, f["choices"])
    if isinstance(choices, list):
        for c in choices:
            if not isinstance(c, Mapping):
                raise _Malformed(f"'{f['choices']}' must be a list of objects")
            text = c.get(f["choice_text"])
            groups.append((text.strip() if isinstance(text, str) else "", c.get(f["chains"])))
    top = _get(rec, f["chains"])
    if top is not None:
        groups.append(("", top))
    if not groups:
        raise _Malformed(f"no chains: neither '{f['choices']}[].{f['chains']}' nor '{f['chains']}' is present")
    out: list[RewardExample] = []
    unlabelled = 0
    for answer, chains in groups:
        if chains is None:
            continue
        if not isinstance(chains, list):
            raise _Malformed(f"'{f['chains']}' must be a list of chains")
        for j, chain in enumerate(chains):
            if not isinstance(chain, Mapping):
                raise _Malformed(f"chain {j} must be an object")
            try:
                target = label_value(_get(chain, f["label"]))
            except ValueError as exc:
                raise _Malformed(f"chain {j}: {exc}") from None
            if target is None:
                unlabelled += 1
                continue
            facts = [_get(chain, k) for k in fact_keys]
            facts = [x for x in facts if x is not None]
            if not facts:
                raise _Malformed(f"chain {j} has none of the fact fields {fact_keys}")
            steps = [_text(x, f"chain {j} fact") for x in facts]
            cid = _get(chain, f["chain_id"])
            problem = f"{question}\nAnswer: {answer}" if answer else question
            out.append(
                RewardExample(
                    id=str(cid) if cid is not None else f"{qid if qid is not None else where}#{len(out)}",
                    problem=problem,
                    steps=steps,
                    targets=[target] * len(steps),
                    source="eqasc",
                    meta={"question_id": qid, "where": where},
                )
            )
    return out, unlabelled


def read_eqasc(
    files: list[Path],
    *,
    fields: Mapping[str, str] | None = None,
    bad_rows: BadRows = "error",
    report: ReadReport | None = None,
) -> list[RewardExample]:
    """Read EQASC JSON lines: questions with candidate explanation chains labelled valid / invalid.

    Each labelled chain becomes one example whose steps are its facts, every step carrying the
    chain's label (valid -> 1.0, invalid -> 0.0; see :func:`label_value`). Default fields
    (``data.source_fields.eqasc`` overrides them): ``id``, the question ``question.stem`` (or a
    plain string ``question``), the answer choices ``question.choices`` (each with ``label``,
    ``text`` and its ``chain_candidates``), ``answerKey``; per chain ``chain_id``, the facts
    ``fact1,fact2`` (a comma-separated list of fields) and the label ``turk_label.label``
    (``yes``/``no``). Chains may also sit at the top level (``chain_candidates``). The problem
    text is the question followed by ``"\\nAnswer: <choice text>"`` when the chain belongs to a
    choice. Chains without a label are excluded (counted). A file starting with ``[`` is read as
    one JSON array (the AllenAI release), each element counting as a "line".

    Raises:
        DataError: a malformed line (with ``bad_rows="error"``), naming the file and line.
    """
    f = dict(DEFAULT_FIELDS["eqasc"], **(fields or {}))
    report = report if report is not None else ReadReport()
    out: list[RewardExample] = []
    for path in files:
        report.files.append(str(path))
        for lineno, rec in _json_records(path, report, bad_rows):
            where = f"{path.name}:{lineno}"
            try:
                examples, unlabelled = _eqasc_record(rec, f, where)
            except _Malformed as exc:
                report.bad(where, str(exc), bad_rows, " (or map its fields with data.source_fields.eqasc)")
                continue
            if unlabelled:
                report.excluded["unlabelled_chain"] += unlabelled
            out.extend(examples)
    return out
