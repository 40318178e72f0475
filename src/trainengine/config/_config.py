"""``TrainingConfig``: the whole, validated description of a run."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from trainengine import registries
from trainengine._io import atomic_write_text
from trainengine.config._aliases import (
    NOT_AN_ALIAS,
    attach_owner,
    get_config_alias,
    resolve_aliases,
    set_config_alias,
)
from trainengine.config._errors import (
    all_field_paths,
    clip_problem,
    describe_bounds,
    short_repr,
    to_config_error,
    unknown_field_message,
)
from trainengine.config._sections import (
    SECTION_TYPES,
    CheckpointingSection,
    CurriculumSection,
    DataSection,
    DistributedSection,
    ExportSection,
    LoraSection,
    ModelSection,
    MonitoringSection,
    OptimizerSection,
    RegistrySection,
    SchedulerSection,
    TaskSection,
    TrackingSection,
    TrainingSection,
    TransferSection,
)
from trainengine.config._yaml import MAX_DEPTH, ConfigYAMLError, load_yaml
from trainengine.errors import ConfigError

__all__ = ["TrainingConfig", "FLAT_FIELDS", "route_flat_keys", "deep_merge", "merge_layer", "read_config_layer"]


def _flat_index() -> dict[str, list[str]]:
    index: dict[str, list[str]] = {}
    for section, model in SECTION_TYPES.items():
        for name in model.model_fields:
            index.setdefault(name, []).append(section)
    return index


# field name -> sections that have it; a name in exactly one section can be used flat
# (``TrainingConfig(learning_rate=...)``, ``config.batch_size``), as the seed examples do.
FLAT_FIELDS: dict[str, list[str]] = _flat_index()


def route_flat_keys(data: dict[str, Any]) -> dict[str, Any]:
    """Move flat keys (``learning_rate``) and dotted ones (``"training.learning_rate"``) into their section.

    Raises:
        ConfigError: a flat key names a field of several sections, or no field at all.
    """
    nested, problems = _route(data)
    if problems:
        raise ConfigError(problems)
    return nested


def _route(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    # The seeds' spellings (training.grad_clip, experiment:, ...) first: config/_aliases.py's table.
    data, aliased, problems = resolve_aliases(data)
    nested: dict[str, Any] = {}
    flat_targets = {FLAT_FIELDS[k][0] for k in data if k not in SECTION_TYPES and len(FLAT_FIELDS.get(k, ())) == 1}
    flat_targets |= set(aliased)
    for key, value in data.items():
        if key == "plugins":
            nested["plugins"] = value
            continue
        if key in SECTION_TYPES:
            if isinstance(value, SECTION_TYPES[key]) and key not in flat_targets:
                # Keep a section instance as it is: on assignment (``config.scheduler = {...}``)
                # pydantic stores the other sections straight from this dict, unvalidated.
                nested[key] = value
                continue
            if isinstance(value, BaseModel):
                value = value.model_dump()
            if value is None:
                value = {}
            if not isinstance(value, dict):
                problems.append(f"{key}: must be a mapping of fields (got {type(value).__name__})")
                continue
            nested.setdefault(key, {}).update(value)
            continue
        section, dot, field = key.partition(".") if isinstance(key, str) else ("", "", "")
        if dot and section in SECTION_TYPES and field:  # a dotted path, as --set writes it
            nested.setdefault(section, {})[field] = value
            continue
        sections = FLAT_FIELDS.get(key)
        if sections is None:
            problems.append(_unknown_key_message(key))
        elif len(sections) > 1:
            options = " or ".join(f"{s}.{key}" for s in sections)
            problems.append(f"ambiguous field {key} — it exists in several sections; say {options}")
        else:
            nested.setdefault(sections[0], {})[key] = value
    for section, fields in aliased.items():
        nested.setdefault(section, {}).update(fields)
    return nested, problems


def _unknown_key_message(key: Any) -> str:
    """An unknown top-level key: the closest section (``trainin`` -> ``training``) or field."""
    import difflib

    text = short_repr(key) if not isinstance(key, str) or len(key) > 100 else key
    if isinstance(key, str):
        close = difflib.get_close_matches(key, [*SECTION_TYPES, "plugins"], n=1, cutoff=0.75)
        if close:
            return f"unknown section {text} — did you mean {close[0]}?"
    return unknown_field_message(text, all_field_paths(TrainingConfig))


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` with ``override`` merged in (nested dicts merged, other values replaced)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def merge_layer(base: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    """Merge a higher-precedence layer (file, ``--set``, flags, builder call) over ``base``.

    Like :func:`deep_merge`, except that warmup is given one way: a layer that sets
    ``scheduler.warmup_steps`` clears a lower layer's ``warmup_ratio`` and vice versa, so
    ``--preset baseline --set scheduler.warmup_steps=10`` means what it says. Setting both in
    one layer is still an error.
    """
    sched = layer.get("scheduler") or {}
    base = dict(base)
    if isinstance(sched, dict) and isinstance(base.get("scheduler"), dict):
        lower = dict(base["scheduler"])
        if sched.get("warmup_steps") and "warmup_ratio" not in sched:
            lower["warmup_ratio"] = 0.0
        if sched.get("warmup_ratio") and "warmup_steps" not in sched:
            lower["warmup_steps"] = 0
        base["scheduler"] = lower
    return deep_merge(base, layer)


class TrainingConfig(BaseModel):
    """The validated configuration of a training run, made of typed sections.

    Fields can be given nested (``training={"learning_rate": 1e-3}``) or flat when the name
    belongs to one section only (``TrainingConfig(learning_rate=1e-3, batch_size=16)``); flat
    reads work too (``config.learning_rate``). Construction, :meth:`validate`, the builder's
    ``build()`` and :meth:`load` raise one :class:`~trainengine.errors.ConfigError` that lists
    every problem.

    Example:
        >>> cfg = TrainingConfig(learning_rate=3e-4, batch_size=16)
        >>> cfg.training.learning_rate, cfg.batch_size
        (0.0003, 16)
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    training: TrainingSection = Field(default_factory=TrainingSection, description="How long and how to train.")
    optimizer: OptimizerSection = Field(default_factory=OptimizerSection, description="Optimizer settings.")
    scheduler: SchedulerSection = Field(default_factory=SchedulerSection, description="Learning-rate schedule.")
    checkpointing: CheckpointingSection = Field(default_factory=CheckpointingSection, description="Checkpoints.")
    tracking: TrackingSection = Field(default_factory=TrackingSection, description="Run naming and output.")
    data: DataSection = Field(default_factory=DataSection, description="Data.")
    model: ModelSection = Field(default_factory=ModelSection, description="Built-in model.")
    lora: LoraSection = Field(default_factory=LoraSection, description="LoRA adapters.")
    distributed: DistributedSection = Field(default_factory=DistributedSection, description="Distributed training.")
    export: ExportSection = Field(default_factory=ExportSection, description="Export after training.")
    monitoring: MonitoringSection = Field(default_factory=MonitoringSection, description="Health and speed probes.")
    registry: RegistrySection = Field(
        default_factory=RegistrySection, description="Model registry and promotion gates."
    )
    task: TaskSection = Field(
        default_factory=TaskSection, description="Metrics reported while training, class weights."
    )
    curriculum: CurriculumSection = Field(
        default_factory=CurriculumSection, description="Curriculum learning: phases, difficulty, sequence length."
    )
    transfer: TransferSection = Field(
        default_factory=TransferSection, description="Freezing, discriminative learning rates, gradual unfreezing."
    )
    plugins: list[str] = Field(
        default_factory=list,
        description=(
            "Modules imported before the config's names are checked, so models, schedules, trackers, export formats "
            "... they register can be named here (also in a fresh process: resume, export, a job worker)."
        ),
    )

    def __init__(self, **data: Any) -> None:
        # Plugins first: the modules they name register the schedules, models, trackers ... that
        # the sections' name checks below look up.
        problems = _load_plugins(data.get("plugins"))
        # Route flat keys first so that an unknown top-level key does not hide the problems of
        # the sections next to it: every problem is reported in one error.
        nested, route_problems = _route(data)
        problems += route_problems
        try:
            super().__init__(**nested)
        except ValidationError as exc:
            problems = problems + to_config_error(exc, type(self)).problems
        if problems:
            raise ConfigError([clip_problem(p) for p in problems])

    @model_validator(mode="before")
    @classmethod
    def _route_flat(cls, data: Any) -> Any:
        if isinstance(data, dict):
            nested, problems = _route(data)
            if problems:
                raise ValueError("\n".join(problems))
            return nested
        return data

    @model_validator(mode="after")
    def _cross_field(self) -> TrainingConfig:
        problems = self.cross_field_problems()
        if problems:
            # One ValueError per validator is all pydantic allows: join the problems with
            # newlines; to_config_error splits them back into separate lines.
            raise ValueError("\n".join(problems))
        return self

    # -- flat access ---------------------------------------------------------------------
    if not TYPE_CHECKING:  # hidden from mypy: it would make every attribute of a config look valid

        def __getattribute__(self, name: str) -> Any:
            value = object.__getattribute__(self, name)
            if name in SECTION_TYPES:  # a validated field: always its section (no isinstance: ABC checks are slow)
                # A section read from this config knows it, for the seeds' names of fields that live
                # in another section (config.training.weight_decay -> config.optimizer.weight_decay).
                attach_owner(value, self)
            return value

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: resolve seed-style flat names.
        sections = FLAT_FIELDS.get(name)
        if sections and len(sections) == 1 and not name.startswith("_"):
            return getattr(getattr(self, sections[0]), name)
        if sections and not name.startswith("_"):
            options = " or ".join(f"config.{s}.{name}" for s in sections)
            raise AttributeError(
                f"'{type(self).__name__}' has no flat attribute '{name}' — it exists in several sections; use {options}"
            )
        if not name.startswith("_"):
            value = get_config_alias(self, name)  # a seed's name: config.grad_clip, config.experiment.name
            if value is not NOT_AN_ALIAS:
                return value
        return super().__getattr__(name)  # type: ignore[misc]  # pydantic defines __getattr__ only when type checking is off

    def __setattr__(self, name: str, value: Any) -> None:
        sections = FLAT_FIELDS.get(name)
        if name not in type(self).model_fields and sections and len(sections) == 1:
            setattr(getattr(self, sections[0]), name, value)
            return
        if not name.startswith("_") and set_config_alias(self, name, value):
            return
        if name not in type(self).model_fields and not name.startswith("_"):
            if sections:
                options = " or ".join(f"{s}.{name}" for s in sections)
                raise ConfigError(f"ambiguous field {name} — it exists in several sections; say {options}")
            raise ConfigError(unknown_field_message(name, all_field_paths(type(self))))
        previous = self.__dict__.get(name)
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            # pydantic has already stored the new section when the cross-field validator fails:
            # put the old one back so a refused assignment changes nothing.
            if name in type(self).model_fields:
                self.__dict__[name] = previous
            # Assigning a whole section (``config.training = {...}``) fails like construction.
            raise to_config_error(exc, type(self)) from None

    # -- validation ----------------------------------------------------------------------
    def cross_field_problems(self) -> list[str]:
        """Problems that involve several fields (each one a complete sentence)."""
        t, s, m, d, c = self.training, self.scheduler, self.model, self.data, self.checkpointing
        problems: list[str] = []
        if s.warmup_steps > 0 and s.warmup_ratio > 0:
            problems.append(
                f"scheduler.warmup_steps ({s.warmup_steps}) and scheduler.warmup_ratio ({s.warmup_ratio}) are both "
                "set — set only one"
            )
        if t.max_steps is not None and s.warmup_steps >= t.max_steps:
            problems.append(
                f"scheduler.warmup_steps ({s.warmup_steps}) must be smaller than training.max_steps ({t.max_steps}): "
                "warmup longer than training"
            )
        if s.name in ("one_cycle", "cyclic") and (s.warmup_steps or s.warmup_ratio):
            problems.append(
                f"scheduler.name {s.name} ramps the learning rate up by itself — set scheduler.warmup_steps and "
                "warmup_ratio to 0"
            )
        if s.name == "reduce_on_plateau" and t.eval_interval_steps is None and not t.eval_every_epoch:
            problems.append(
                "scheduler.name reduce_on_plateau needs evaluations — set training.eval_every_epoch or "
                "training.eval_interval_steps"
            )
        if t.early_stopping_patience is not None and t.eval_interval_steps is None and not t.eval_every_epoch:
            problems.append(
                "training.early_stopping_patience needs evaluations — set training.eval_every_epoch or "
                "training.eval_interval_steps"
            )
        if t.precision == "fp16" and t.device == "cpu":
            problems.append("training.precision fp16 is not supported on the CPU — use bf16 or fp32")
        if m.d_model % m.n_heads != 0:
            problems.append(f"model.d_model ({m.d_model}) must be divisible by model.n_heads ({m.n_heads})")
        if any(h < 1 for h in m.hidden_dims):
            problems.append(f"model.hidden_dims must all be >= 1 (got {short_repr(m.hidden_dims)})")
        if not m.cnn_channels or any(ch < 1 for ch in m.cnn_channels):
            problems.append(
                f"model.cnn_channels must be a non-empty list of widths >= 1 (got {short_repr(m.cnn_channels)})"
            )
        if m.architecture in ("gpt", "auto") and d.dataset == "pystdlib" and d.max_length > m.max_seq_len:
            problems.append(
                f"data.max_length ({d.max_length}) is longer than model.max_seq_len ({m.max_seq_len}) — raise "
                "model.max_seq_len or lower data.max_length"
            )
        if d.dataset is not None and d.train_file is not None:
            problems.append(
                f"data.dataset ({d.dataset}) and data.train_file are both set — train on one of them: set the other "
                "to null"
            )
        for name in ("val_file", "test_file"):
            if getattr(d, name) is not None and d.train_file is None:
                problems.append(f"data.{name} needs data.train_file — name the training file(s) too")
        if c.enabled and c.save_every_n_epochs is None and c.save_every_n_steps is None:
            problems.append("checkpointing.enabled needs save_every_n_epochs or save_every_n_steps")
        return problems

    def validate(self) -> TrainingConfig:  # type: ignore[override]  # the seed API's validate(), not pydantic's deprecated classmethod
        """Re-check every field and every cross-field rule; return self when all is well.

        Raises:
            ConfigError: listing every problem with its dotted path and allowed range.
        """
        # Through __init__ (not model_validate): pydantic runs a custom __init__ inside
        # model_validate too and would wrap its ConfigError in a ValidationError.
        type(self)(**self.model_dump())
        return self

    # -- io ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A plain nested dict (JSON/YAML-safe) that :meth:`from_dict` turns back into an equal config."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingConfig:
        """Build from a nested (or flat) dict, validating everything."""
        if not isinstance(data, dict):
            raise ConfigError(f"a configuration must be a mapping of sections (got {type(data).__name__})")
        if not all(isinstance(key, str) for key in data):
            # A YAML key like `1:` cannot be a keyword argument; report it like any unknown key.
            problems = _route(data)[1]
            raise ConfigError([p for p in problems if not p.startswith("ambiguous")] or problems)
        return cls(**data)

    def save(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write the config as JSON or YAML (by extension) atomically and return the path.

        Args:
            path: ``.json``, ``.yaml`` or ``.yml`` file; None writes ``configs/config_<timestamp>.json``.
        """
        if path is None:
            stamp = datetime.now().strftime("%Y%m%d_%H%M%S_%f")
            path = Path("configs") / f"config_{stamp}.json"
        path = Path(path)
        text = dump_config_text(self.to_dict(), path)
        # Written next to the target and renamed: a crash never leaves a half-written config.
        return atomic_write_text(path, text)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrainingConfig:
        """Read a config written by :meth:`save` (or by hand) and validate it.

        Raises:
            ConfigError: the file is missing, unreadable, not JSON/YAML, or invalid.
        """
        data = read_config_file(path)
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(exc.problems, prefix=f"invalid configuration in {path}") from None

    @classmethod
    def explain(cls, *, builtin_only: bool = False) -> list[dict[str, str]]:
        """One row per field: path, type, default, bounds and description (for docs and the CLI).

        A field checked against a registry shows the registered names as its choices
        (``Literal['adam', 'adamw', 'sgd']``), plugins included when they are loaded.

        Args:
            builtin_only: List only trainengine's own names for registry-checked fields (the
                generated reference must not depend on what a process has registered).
        """
        rows = []
        for section, model in SECTION_TYPES.items():
            for name, info in model.model_fields.items():
                default = info.get_default(call_default_factory=True)
                rows.append(
                    {
                        "path": f"{section}.{name}",
                        "type": _registry_type_name(info, builtin_only) or _type_name(info.annotation),
                        "default": _yaml_scalar(default),
                        "bounds": describe_bounds(info),
                        "description": info.description or "",
                    }
                )
        info = cls.model_fields["plugins"]
        rows.append(
            {
                "path": "plugins",
                "type": _type_name(info.annotation),
                "default": "[]",
                "bounds": "",
                "description": info.description or "",
            }
        )
        return rows


def _load_plugins(plugins: Any) -> list[str]:
    """Import the ``plugins:`` modules; their problems, one line each (``[]`` = all imported)."""
    if plugins is None:
        return []
    if not isinstance(plugins, (list, tuple)):
        return [f"plugins: must be a list of module names, e.g. [my_project.plugins] (got {type(plugins).__name__})"]
    try:
        registries.load_plugins(plugins)
    except ConfigError as exc:
        return exc.problems
    return []


def _registry_type_name(info: Any, builtin_only: bool = False) -> str | None:
    """``Literal['a', 'b']`` (or ``list[...]`` / ``... | None``) for a registry-checked field."""
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    registry = getattr(registries, str(extra.get("registry", "")), None)
    if not isinstance(registry, registries.Registry):
        return None
    names = [*extra.get("also", []), *(registry.builtin_names() if builtin_only else registry.names())]
    text = f"Literal[{', '.join(repr(n) for n in names)}]"
    annotation = str(info.annotation)
    if annotation.startswith("list["):
        return f"list[{text}]"
    return f"{text} | None" if "None" in annotation else text


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    text = text or str(annotation)
    return text.replace("typing.", "").replace("NoneType", "None")


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, str) and any(c in value for c in "\n\r\t"):
        import json

        return json.dumps(value)  # "\n" on one line: a YAML double-quoted scalar, as a user types it
    return (
        "null" if value is None else yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
    )


def dump_config_text(data: dict[str, Any], path: Path) -> str:
    """Serialise a config dict by the file extension (``.json``, ``.yaml``, ``.yml``)."""
    import json

    suffix = path.suffix.lower()
    if suffix == ".json":
        return json.dumps(data, indent=2) + "\n"
    if suffix in (".yaml", ".yml"):
        return yaml.safe_dump(data, sort_keys=False)
    raise ConfigError(f"cannot save a config as '{path.suffix or path.name}' — use a .json, .yaml or .yml file name")


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a JSON/YAML config file into a dict, with clear errors.

    The file must be UTF-8 (a byte-order mark is allowed). YAML is read with
    :class:`~trainengine.config._yaml.ConfigLoader`: safe types only, no duplicate keys, aliases
    bounded by ``MAX_ALIAS_NODES``, at most ``MAX_DEPTH`` levels; JSON refuses duplicate keys and
    the same depth.

    Raises:
        ConfigError: the file is missing, unreadable, not UTF-8, not JSON/YAML, or refused as above;
            the message names the file (and the line or byte offset where there is one).
    """
    import json

    p = Path(path)
    if p.suffix.lower() not in (".json", ".yaml", ".yml"):
        raise ConfigError(f"cannot read a config from '{p}' — use a .json, .yaml or .yml file")
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror or exc}") from None
    try:
        # utf-8-sig: a byte-order mark (Windows editors write one) is not part of the config.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(_not_utf8_message(p, raw, exc)) from None
    try:
        data = _parse_json(text) if p.suffix.lower() == ".json" else load_yaml(text)
    except ConfigYAMLError as exc:
        raise ConfigError(f"{p}: {exc}") from None
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{p} is not valid {p.suffix.lstrip('.').upper()}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{p}: nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as exc:
        # A number Python will not read (an integer of more than 4,300 digits), in YAML or JSON.
        raise ConfigError(f"{p}: a value cannot be read: {str(exc).split(';')[0]}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p} must contain a mapping of sections at the top level (got {type(data).__name__})")
    return data


def read_config_layer(path: str | os.PathLike[str]) -> dict[str, Any]:
    """:func:`read_config_file` with flat keys routed to their sections (a file layer of the CLI / builder).

    Raises:
        ConfigError: as :func:`read_config_file`; an unknown or ambiguous key names the file too.
    """
    nested, problems = _route(read_config_file(path))
    if problems:
        raise ConfigError(problems, prefix=f"invalid configuration in {path}")
    return nested


def _not_utf8_message(path: Path, raw: bytes, exc: UnicodeDecodeError) -> str:
    """``f.yaml is not UTF-8 text: byte 0xe9 at offset 27 (line 3, column 7) ...``"""
    offset = exc.start
    line = raw.count(b"\n", 0, offset) + 1
    column = offset - (raw.rfind(b"\n", 0, offset) + 1) + 1
    return (
        f"{path} is not UTF-8 text: byte 0x{raw[offset]:02x} at offset {offset} (line {line}, column {column}) "
        "cannot be decoded — save the file as UTF-8"
    )


def _parse_json(text: str) -> Any:
    """``json.loads`` that refuses duplicate keys and nesting deeper than MAX_DEPTH."""
    import json

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                raise ConfigYAMLError(f"duplicate key {short_repr(key)} in one object — keep one")
            out[key] = value
        return out

    data = json.loads(text, object_pairs_hook=pairs)
    # JSON has no aliases, but the same depth limit as YAML keeps the later checks from recursing.
    level, frontier = 0, [data]
    while frontier:
        level += 1
        if level > MAX_DEPTH:
            raise ConfigYAMLError(f"nested more than {MAX_DEPTH} levels deep")
        frontier = [
            v
            for item in frontier
            if isinstance(item, (dict, list))
            for v in (item.values() if isinstance(item, dict) else item)
        ]
    return data
