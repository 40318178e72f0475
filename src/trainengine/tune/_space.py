"""Search spaces over dotted config keys, checked against the config schema before any trial runs.

A space is a mapping from a config field to how to sample it, in YAML or as a dict::

    training.learning_rate: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}
    training.batch_size: {type: categorical, choices: [16, 32, 64]}
    model.hidden_dims: {type: categorical, choices: [[64], [128, 128]]}
    scheduler.warmup_steps: {type: int, low: 0, high: 20, step: 5}

Keys may also be nested (``training: {learning_rate: {type: float, ...}}``) and may use the seeds'
spellings (``training.grad_clip``), which :func:`trainengine.config.find_alias` maps to the
engine's field (``training.max_grad_norm``). :func:`load_space` checks every parameter — an
unknown key (with a "did you mean"), a missing or non-numeric bound, ``low > high``, a ``log``
range that reaches 0, a ``type`` the field cannot hold (``float`` for an integer field), a bound
outside the field's own bounds (``training.learning_rate`` must be ``> 0 and <= 10``), a choice the
field refuses — and raises one :class:`~trainengine.errors.ConfigError` listing every problem.

Optuna's parameter names are the canonical dotted keys, so a trial's ``params`` read as config
overrides. A categorical choice that is not a scalar (a list such as ``[128, 128]``) is stored in
Optuna as its JSON text and decoded by :meth:`SearchSpace.decode`.
"""

from __future__ import annotations

import json
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from trainengine.errors import ConfigError

if TYPE_CHECKING:
    import optuna

    from trainengine.config import TrainingConfig

__all__ = ["ParamSpec", "SearchSpace", "load_space", "ParamType"]

ParamType = Literal["float", "int", "categorical"]
_TYPES: tuple[str, ...] = typing.get_args(ParamType)
_KEYS: dict[str, frozenset[str]] = {
    "float": frozenset({"type", "low", "high", "log", "step"}),
    "int": frozenset({"type", "low", "high", "log", "step"}),
    "categorical": frozenset({"type", "choices"}),
}
_SCALARS = (type(None), bool, int, float, str)  # what Optuna stores as a categorical choice


@dataclass(frozen=True)
class ParamSpec:
    """How one config field is sampled.

    Attributes:
        key: The engine's dotted field (``training.learning_rate``); also Optuna's parameter name.
        type: ``float``, ``int`` or ``categorical``.
        low: Smallest value (``float`` / ``int``).
        high: Largest value, included (``float`` / ``int``).
        log: Sample on a log scale (``low`` must be > 0).
        step: Grid spacing of a discretised range (``float`` / ``int``; not with ``log`` floats).
        choices: The values of a ``categorical`` parameter.
        spelled: The key as the space wrote it (a seed spelling, before the alias table).

    Example:
        >>> import optuna
        >>> spec = ParamSpec("training.batch_size", "categorical", choices=(16, 32))
        >>> study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        >>> spec.suggest(study.ask()) in (16, 32)
        True
    """

    key: str
    type: ParamType
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()
    spelled: str = ""

    @property
    def encoded_choices(self) -> tuple[Any, ...]:
        """The choices as Optuna stores them: scalars as they are, lists and mappings as JSON text."""
        return tuple(c if isinstance(c, _SCALARS) else json.dumps(c) for c in self.choices)

    def decode(self, value: Any) -> Any:
        """The config value of a stored Optuna value (JSON text back to its list)."""
        if self.type == "categorical" and isinstance(value, str) and value not in self.choices:
            for choice, encoded in zip(self.choices, self.encoded_choices, strict=True):
                if encoded == value:
                    return choice
        return value

    def distribution(self) -> optuna.distributions.BaseDistribution:
        """The Optuna distribution of this parameter."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.type == "categorical":
            return CategoricalDistribution(self.encoded_choices)
        if self.type == "int":
            return IntDistribution(int(self.low or 0), int(self.high or 0), log=self.log, step=int(self.step or 1))
        return FloatDistribution(float(self.low or 0.0), float(self.high or 0.0), log=self.log, step=self.step)

    def suggest(self, trial: optuna.Trial) -> Any:
        """Sample this parameter in ``trial`` (Optuna's own ``suggest_*``); returns the config value."""
        if self.type == "categorical":
            return self.decode(trial.suggest_categorical(self.key, list(self.encoded_choices)))
        if self.type == "int":
            return trial.suggest_int(
                self.key, int(self.low or 0), int(self.high or 0), step=int(self.step or 1), log=self.log
            )
        return trial.suggest_float(
            self.key, float(self.low or 0.0), float(self.high or 0.0), step=self.step, log=self.log
        )

    def grid_values(self) -> list[Any] | None:
        """Every value of a finite parameter (for the grid sampler); None for a continuous float range."""
        if self.type == "categorical":
            return list(self.encoded_choices)
        if self.type == "int":
            if self.log:
                return None
            return list(range(int(self.low or 0), int(self.high or 0) + 1, int(self.step or 1)))
        if self.step is None or self.low is None or self.high is None:
            return None
        count = math.floor((float(self.high) - float(self.low)) / float(self.step) + 1e-9) + 1
        return [float(self.low) + i * float(self.step) for i in range(count)]

    def to_dict(self) -> dict[str, Any]:
        """The YAML form of this parameter (``{type: float, low: ..., high: ..., log: true}``)."""
        if self.type == "categorical":
            return {"type": "categorical", "choices": list(self.choices)}
        out: dict[str, Any] = {"type": self.type, "low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space: one :class:`ParamSpec` per config field.

    Example:
        >>> import optuna
        >>> space = load_space({"training.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}})
        >>> space.keys
        ('training.learning_rate',)
        >>> trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
        >>> 1e-4 <= space.suggest(trial)["training.learning_rate"] <= 1e-1
        True
    """

    params: tuple[ParamSpec, ...] = field(default_factory=tuple)

    @property
    def keys(self) -> tuple[str, ...]:
        """The canonical dotted keys, in the space's order."""
        return tuple(p.key for p in self.params)

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Sample every parameter in ``trial``: ``{dotted key: config value}``."""
        return {p.key: p.suggest(trial) for p in self.params}

    def decode(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Optuna's stored ``params`` (a trial's, ``study.best_params``) as config values."""
        by_key = {p.key: p for p in self.params}
        return {k: by_key[k].decode(v) if k in by_key else v for k, v in params.items()}

    def apply(self, config: TrainingConfig, values: Mapping[str, Any]) -> TrainingConfig:
        """The config with ``values`` (``{dotted key: value}``) set, validated.

        Raises:
            ConfigError: the combination is invalid (a cross-field rule such as
                ``scheduler.warmup_steps < training.max_steps``).
        """
        from trainengine.config import TrainingConfig

        return TrainingConfig.from_dict(_with_values(config.to_dict(), values))

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        """``{key: distribution}``: the space as Optuna sees it (for ``study.enqueue_trial`` / ``ask``)."""
        return {p.key: p.distribution() for p in self.params}

    def grid(self) -> dict[str, list[Any]]:
        """The grid sampler's ``search_space``.

        Raises:
            ConfigError: a continuous float range (no ``step``) or a log-scale int range.
        """
        grid: dict[str, list[Any]] = {}
        problems = []
        for p in self.params:
            values = p.grid_values()
            if values is None:
                problems.append(
                    f"{p.key}: the grid sampler needs a finite set of values — give a step "
                    "(float: low, high, step without log) or use type: categorical"
                )
            else:
                grid[p.key] = values
        if problems:
            raise ConfigError(problems, prefix="invalid search space for sampler 'grid'")
        return grid

    def grid_size(self) -> int:
        """The number of points of the full grid."""
        return math.prod(len(v) for v in self.grid().values())

    def to_dict(self) -> dict[str, Any]:
        """The YAML form of the space (canonical keys)."""
        return {p.key: p.to_dict() for p in self.params}


# ---------------------------------------------------------------------------------------------- loading
def load_space(
    source: str | Path | Mapping[str, Any] | SearchSpace, base_config: TrainingConfig | None = None
) -> SearchSpace:
    """Read a search space from a YAML/JSON file or a mapping and check it against the config schema.

    Args:
        source: a file path, a mapping (flat dotted keys or nested sections), or a ready space
            (returned as is after the checks).
        base_config: the config the trials start from; its values are the context in which every
            bound and choice is checked. None = the default config.

    Returns:
        The validated :class:`SearchSpace`.

    Raises:
        ConfigError: listing every problem of every parameter (nothing is sampled before the
            whole space is valid).

    Example:
        >>> load_space({"training.lr": {"type": "float", "low": 0, "high": 1}})
        Traceback (most recent call last):
        ...
        trainengine.errors.ConfigError: invalid search space (1 problem):
          - training.lr: unknown field — did you mean training.learning_rate?
    """
    from trainengine.config import TrainingConfig

    base = base_config if base_config is not None else TrainingConfig()
    if isinstance(source, SearchSpace):
        raw: Mapping[str, Any] = {p.key: p.to_dict() for p in source.params}
    elif isinstance(source, (str, Path)):
        raw = _read_space_file(Path(source))
    elif isinstance(source, Mapping):
        raw = source
    else:
        raise ConfigError(
            f"a search space is a mapping of config keys or a YAML file, got {type(source).__name__}",
            prefix="invalid search space",
        )
    problems: list[str] = []
    entries = _flatten(raw, "", problems)
    if not entries and not problems:
        problems.append("the space is empty — name at least one config key, e.g. training.learning_rate")
    params: list[ParamSpec] = []
    seen: dict[str, str] = {}
    for spelled, spec in entries:
        key, key_problem = _canonical_key(spelled)
        if key_problem:
            problems.append(key_problem)
            continue
        if key in seen:
            problems.append(f"{spelled}: {key} is already in the space (as {seen[key]}) — give each field once")
            continue
        seen[key] = spelled
        param, param_problems = _parse_param(key, spelled, spec)
        problems += param_problems
        if param is not None:
            problems += _check_against_schema(param, base)
            params.append(param)
    if problems:
        raise ConfigError(problems, prefix="invalid search space")
    return SearchSpace(tuple(params))


def _read_space_file(path: Path) -> Mapping[str, Any]:
    from trainengine.config import load_yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read the search space {path}: {exc.strerror}", prefix="invalid search space"
        ) from None
    data = json.loads(text) if path.suffix == ".json" else load_yaml(text)
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{path}: a search space is a mapping of config keys (training.learning_rate: {{type: float, ...}}), "
            f"got {type(data).__name__}",
            prefix="invalid search space",
        )
    return data


def _flatten(raw: Mapping[str, Any], prefix: str, problems: list[str]) -> list[tuple[str, Any]]:
    """``{training: {learning_rate: {type: ...}}}`` -> ``[("training.learning_rate", {type: ...})]``."""
    out: list[tuple[str, Any]] = []
    for name, value in raw.items():
        key = f"{prefix}{name}"
        if not isinstance(name, str):
            problems.append(f"{key!r}: a search-space key is a dotted config field such as training.learning_rate")
        elif isinstance(value, Mapping) and "type" not in value and value:
            out += _flatten(value, key + ".", problems)
        else:
            out.append((key, value))
    return out


def _canonical_key(spelled: str) -> tuple[str, str | None]:
    """The engine's dotted field for a spelling, or a problem (unknown, planned, a whole section)."""
    from trainengine.config import SECTION_TYPES, TrainingConfig, find_alias
    from trainengine.config._aliases import planned_message
    from trainengine.config._errors import all_field_paths, unknown_field_message

    row = find_alias(spelled)
    if row is not None:
        if row.canonical is None:
            return spelled, planned_message(row, spelled)
        spelled_key = row.canonical
    else:
        spelled_key = spelled
    fields = all_field_paths(TrainingConfig)
    if spelled_key in fields:
        return spelled_key, None
    if spelled_key in SECTION_TYPES:
        return spelled, f"{spelled}: a whole section cannot be sampled — name one of its fields ({spelled}.<field>)"
    message = unknown_field_message(spelled_key, fields).replace(f"unknown field {spelled_key}", "unknown field", 1)
    return spelled, f"{spelled}: {message}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse_param(key: str, spelled: str, spec: Any) -> tuple[ParamSpec | None, list[str]]:
    """One parameter's own checks (type, keys, bounds, step, log, choices); no schema yet."""
    if not isinstance(spec, Mapping):
        return None, [
            f"{spelled}: expected a mapping such as {{type: float, low: 1e-4, high: 1e-1, log: true}} or "
            f"{{type: categorical, choices: [...]}}, got {spec!r}"
        ]
    kind = spec.get("type")
    if kind not in _TYPES:
        return None, [f"{spelled}: type {kind!r} is not a search-space type — use one of: {', '.join(_TYPES)}"]
    problems = []
    extra = sorted(str(k) for k in spec if k not in _KEYS[kind])
    if extra:
        problems.append(
            f"{spelled}: {', '.join(extra)} do not apply to type {kind} — allowed: {', '.join(sorted(_KEYS[kind]))}"
        )
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, (list, tuple)) or not choices:
            return None, [*problems, f"{spelled}: type categorical needs a non-empty list of choices, got {choices!r}"]
        encoded = [c if isinstance(c, _SCALARS) else json.dumps(c, sort_keys=True) for c in choices]
        if len(set(map(repr, encoded))) != len(encoded):
            problems.append(f"{spelled}: choices {list(choices)!r} repeat a value — give each choice once")
        return (None if problems else ParamSpec(key, "categorical", choices=tuple(choices), spelled=spelled)), problems
    low: Any = spec.get("low")
    high: Any = spec.get("high")
    log: Any = spec.get("log", False)
    step: Any = spec.get("step")
    for name, value in (("low", low), ("high", high)):
        if not _is_number(value):
            problems.append(f"{spelled}: {name} must be a finite number, got {value!r}")
    if not isinstance(log, bool):
        problems.append(f"{spelled}: log must be true or false, got {log!r}")
    if step is not None and (not _is_number(step) or step <= 0):
        problems.append(f"{spelled}: step must be a number > 0, got {step!r}")
    if kind == "int":
        for name, value in (("low", low), ("high", high), ("step", step)):
            if _is_number(value) and value != int(value):
                problems.append(f"{spelled}: type int needs an integer {name}, got {value!r} — use type: float")
        if log is True and step not in (None, 1):
            problems.append(f"{spelled}: an int range on a log scale takes no step (got step {step}) — drop one")
    elif log is True and step is not None:
        problems.append(f"{spelled}: a float range cannot have both log and step — drop one")
    if problems:
        return None, problems
    if low > high:
        problems.append(f"{spelled}: low ({low}) is greater than high ({high}) — swap them")
    if log and low <= 0:
        problems.append(f"{spelled}: a log-scale range needs low > 0, got low {low}")
    if problems:
        return None, problems
    if kind == "int":
        low, high, step = int(low), int(high), None if step is None else int(step)
    return ParamSpec(key, kind, low=low, high=high, log=bool(log), step=step, spelled=spelled), []


def _field_annotation(key: str) -> tuple[Any, Any]:
    """The pydantic annotation and FieldInfo of a dotted config field."""
    from trainengine.config import SECTION_TYPES

    section, leaf = key.split(".", 1)
    info = SECTION_TYPES[section].model_fields[leaf]
    return info.annotation, info


def _numeric_kind(annotation: Any) -> str | None:
    """``int`` / ``float`` when the field holds that number (``int | None`` included), else None."""
    args = (
        typing.get_args(annotation)
        if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union
        else (annotation,)
    )
    kinds = [a for a in args if a is not type(None)]
    if kinds == [int]:
        return "int"
    if kinds and all(a in (int, float) for a in kinds):
        return "float"
    return None


def _out_of_bounds(value: float, info: Any) -> bool:
    for meta in info.metadata:
        for attr, bad in (
            ("gt", lambda v, b: v <= b),
            ("ge", lambda v, b: v < b),
            ("lt", lambda v, b: v >= b),
            ("le", lambda v, b: v > b),
        ):
            bound = getattr(meta, attr, None)
            if bound is not None and bad(value, bound):
                return True
    return False


def _check_against_schema(param: ParamSpec, base: TrainingConfig) -> list[str]:
    """The field's type and its own bounds, then every end of the range / every choice set on the base config."""
    from trainengine.config import TrainingConfig
    from trainengine.config._errors import describe_bounds

    where = param.spelled or param.key
    annotation, info = _field_annotation(param.key)
    kind = _numeric_kind(annotation)
    if param.type in ("int", "float") and kind is None:
        return [f"{where}: {param.key} is not a number field — sample it with type: categorical"]
    if param.type == "float" and kind == "int":
        return [f"{where}: {param.key} holds integers — use type: int (or categorical)"]
    probes: list[tuple[str, Any]] = (
        [("low", param.low), ("high", param.high)]
        if param.type != "categorical"
        else [(f"choice {c!r}", c) for c in param.choices]
    )
    problems = []
    bounds = describe_bounds(info)
    base_data = base.to_dict()
    for label, value in probes:
        if _is_number(value) and kind is not None and _out_of_bounds(float(value), info):
            problems.append(f"{where}: {label} {value} is outside the bounds of {param.key} ({bounds})")
            continue
        try:
            TrainingConfig.from_dict(_with_values(base_data, {param.key: value}))
        except ConfigError as exc:
            problems += [f"{where}: {label} makes the config invalid: {p}" for p in exc.problems]
    return problems


def _with_values(data: dict[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the nested config dict with ``{dotted key: value}`` set."""
    out = {section: dict(fields) if isinstance(fields, dict) else fields for section, fields in data.items()}
    for dotted, value in values.items():
        section, leaf = dotted.split(".", 1)
        out.setdefault(section, {})[leaf] = value
    return out
