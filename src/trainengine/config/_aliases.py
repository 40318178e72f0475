"""The seeds' spellings of config fields, in one table, mapped onto the engine's own fields.

The seed documents name some settings differently from :class:`~trainengine.config.TrainingConfig`:
seed 002's YAML says ``training.grad_clip`` and ``data.seq_len``, has ``experiment:`` and ``paths:``
sections and a flat ``optimizer: adamw``; seed 001 writes Hugging Face names such as
``config.training.per_device_train_batch_size``. :data:`CONFIG_ALIASES` is the only place those
spellings are known. Everything else reads it:

- dicts and files (``TrainingConfig(...)``, ``from_dict``, ``load``, the CLI's ``--config``) through
  :func:`resolve_aliases`, which ``_route`` in ``_config.py`` calls first;
- attributes (``config.training.grad_clip``, ``config.grad_clip``, ``config.experiment.name``, get
  and set) through :func:`get_section_alias` / :func:`set_section_alias` (sections) and
  :func:`get_config_alias` / :func:`set_config_alias` (the config itself);
- ``--set training.grad_clip=0.5`` through :func:`find_alias` in ``_overrides.py``.

A config only ever stores the engine's fields: ``to_dict``, ``save`` and ``trainengine config show``
print canonical names, so a saved seed-spelled config reads back as the engine's own. Setting a field
twice in one layer under two names (``grad_clip`` and ``max_grad_norm``) is an error naming both.

Example:
    >>> find_alias("training.grad_clip").canonical
    'training.max_grad_norm'
    >>> find_alias("grad_clip").canonical  # flat, as seed 002's training loop reads config.grad_clip
    'training.max_grad_norm'
    >>> find_alias("model.mlp_dropout") is None  # the engine's own name since issue 15
    True
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from functools import cache
from typing import Any

from pydantic import BaseModel

from trainengine.errors import ConfigError

__all__ = [
    "ConfigAlias",
    "CONFIG_ALIASES",
    "SEED_SECTIONS",
    "find_alias",
    "resolve_aliases",
    "both_set_message",
    "planned_message",
    "OwnerLink",
    "attach_owner",
    "NOT_AN_ALIAS",
    "get_section_alias",
    "set_section_alias",
    "get_config_alias",
    "set_config_alias",
    "SeedSectionView",
]


@dataclass(frozen=True)
class ConfigAlias:
    """One seed spelling of a config field.

    Attributes:
        alias: The dotted path as a seed writes it (``training.grad_clip``), or a section's name
            when a seed gives that section as a single name (``optimizer: adamw``).
        canonical: The engine's dotted path it means; None while that field is planned, not built.
        seeds: Where the seeds use it (seed number and line numbers), so a reader can check.
        note: Why the mapping is what it is, or, for a planned field, the issue that builds it.
        values: Seed value spellings the engine names differently (``constant_with_warmup`` ->
            ``constant``); any other value passes through unchanged.
        implies: Engine settings that go with it, applied unless the same layer sets them itself
            (a checkpoint interval turns checkpointing on).

    Example:
        >>> find_alias("training.lr_scheduler_type").convert("constant_with_warmup")
        'constant'
    """

    alias: str
    canonical: str | None
    seeds: str
    note: str = ""
    values: tuple[tuple[str, str], ...] = ()
    implies: tuple[tuple[str, Any], ...] = ()

    def convert(self, value: Any) -> Any:
        """The engine's spelling of a seed value (most values are the same)."""
        return dict(self.values).get(value, value) if isinstance(value, str) else value


#: The one table. Line numbers refer to /work/shared/seeds/00N_*.txt. A row whose ``canonical`` is
#: None names a field that is planned: its issue replaces the row with the real field.
CONFIG_ALIASES: tuple[ConfigAlias, ...] = (
    # -- seed 002: configs/shakespeare_baseline.yaml (l.1505-1540), its dataclasses (l.1740-1773), the
    #    production loop's config.grad_clip / log_interval / eval_interval (l.1963-2017); seed 004 l.1333-1370
    ConfigAlias("training.grad_clip", "training.max_grad_norm", "002 l.817, 1525, 1752, 1991; 004 l.1349"),
    ConfigAlias("training.eval_interval", "training.eval_interval_steps", "002 l.1528, 2017"),
    ConfigAlias("training.log_interval", "training.log_interval_steps", "002 l.1529, 2006"),
    ConfigAlias(
        "training.checkpoint_interval",
        "checkpointing.save_every_n_steps",
        "002 l.1530, 3113",
        note="an interval means the seed wants checkpoints: it also sets checkpointing.enabled",
        implies=(("checkpointing.enabled", True),),
    ),
    ConfigAlias("training.max_epochs", "training.epochs", "002 l.1963"),
    ConfigAlias("training.optimizer", "optimizer.name", "002 l.820, 1749"),
    ConfigAlias("optimizer", "optimizer.name", "002 l.820; 004 l.1337", note="the section given as one name"),
    ConfigAlias("scheduler", "scheduler.name", "004 l.1341", note="the section given as one name"),
    ConfigAlias("training.lr_schedule", "scheduler.name", "002 l.821, 1755", note="constant, cosine, linear"),
    ConfigAlias("training.weight_decay", "optimizer.weight_decay", "001 l.231-236; 002 l.815, 1524"),
    ConfigAlias("training.warmup_steps", "scheduler.warmup_steps", "001 l.194, 204; 002 l.818, 1527"),
    ConfigAlias("data.seq_len", "data.max_length", "002 l.750, 827, 1535"),
    ConfigAlias("experiment.name", "tracking.experiment_name", "002 l.1508, 1771"),
    ConfigAlias("experiment.project", "tracking.project", "002 l.1509"),
    ConfigAlias("experiment.tags", "tracking.tags", "002 l.1510, 1773"),
    ConfigAlias("experiment.description", "tracking.notes", "002 l.1772"),
    ConfigAlias("paths.checkpoint_dir", "checkpointing.checkpoint_dir", "002 l.1538"),
    ConfigAlias(
        "paths.log_dir",
        "tracking.output_dir",
        "002 l.1539",
        note="the run directory under it holds logs.jsonl, run.json and the tracker files",
    ),
    # -- seed 000: .with_optimizer(gradient_accumulation_steps=8) (l.239, 249-251)
    ConfigAlias(
        "optimizer.gradient_accumulation_steps",
        "training.gradient_accumulation_steps",
        "000 l.239, 249-251",
        note="it shapes the loop, not the optimizer",
    ),
    # -- seed 001: config.training.* (l.170-267), Hugging Face TrainingArguments names
    ConfigAlias("training.per_device_train_batch_size", "training.batch_size", "001 l.170-184; 003 l.551"),
    ConfigAlias(
        "training.lr_scheduler_type",
        "scheduler.name",
        "001 l.193; 003 l.557",
        note="Hugging Face's constant_with_warmup and reduce_lr_on_plateau are named constant and reduce_on_plateau",
        values=(("constant_with_warmup", "constant"), ("reduce_lr_on_plateau", "reduce_on_plateau")),
    ),
    ConfigAlias("training.warmup_ratio", "scheduler.warmup_ratio", "001 l.199; 003 l.556"),
    ConfigAlias("training.eval_steps", "training.eval_interval_steps", "001 l.257-267; 003 l.560"),
)

#: Seed sections that are not engine sections: their fields all live elsewhere (see the table).
SEED_SECTIONS = ("experiment", "paths")


def _sections() -> dict[str, type[BaseModel]]:
    # Imported when first needed: _sections.py imports this module for OwnerLink.
    from trainengine.config._sections import SECTION_TYPES

    return dict(SECTION_TYPES)


@cache
def _index() -> dict[str, ConfigAlias]:
    """Alias spelling -> row: every dotted alias, plus its bare leaf where that is unambiguous.

    A bare leaf (``grad_clip`` for ``training.grad_clip``) can be used flat, as seed 002's loop reads
    ``config.grad_clip``, when no engine field has that name and no other row ends in it.
    """
    sections = _sections()
    fields = {name for model in sections.values() for name in model.model_fields}
    index = {row.alias: row for row in CONFIG_ALIASES}
    leaves: dict[str, list[ConfigAlias]] = {}
    for row in CONFIG_ALIASES:
        section, _, leaf = row.alias.partition(".")
        if leaf and section in sections and leaf not in fields and leaf not in sections:
            leaves.setdefault(leaf, []).append(row)
    index.update({leaf: rows[0] for leaf, rows in leaves.items() if len(rows) == 1 and leaf not in index})
    return index


@cache
def _field_sections() -> dict[str, tuple[str, ...]]:
    """Field name -> the sections that have it (a flat name routes when there is one)."""
    out: dict[str, tuple[str, ...]] = {}
    for section, model in _sections().items():
        for name in model.model_fields:
            out[name] = (*out.get(name, ()), section)
    return out


def find_alias(path: str) -> ConfigAlias | None:
    """The table row for a seed spelling (dotted or flat), or None for any other name.

    Example:
        >>> find_alias("experiment.name").canonical
        'tracking.experiment_name'
        >>> find_alias("training.max_grad_norm") is None  # the engine's own name
        True
    """
    return _index().get(path)


def planned_message(row: ConfigAlias, spelled: str) -> str:
    """``model.mlp_dropout: not built yet — planned in issue 15 (...); remove it``."""
    issue, _, what = row.note.partition(": ")
    return f"{spelled}: not built yet — planned in {issue} ({what}); remove it"


def both_set_message(spelled: str, other: str, target: str) -> str:
    """The error for one field set under two names in one layer."""
    if target in (spelled, other):
        alias = other if spelled == target else spelled
        return f"{alias} and {target} are both set — {alias} is another name of {target}; keep one"
    return f"{spelled} and {other} are both set — both are names of {target}; keep one"


def resolve_aliases(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]], list[str]]:
    """Take the seed spellings out of one config layer (a dict as a file or a caller gives it).

    Args:
        data: Top-level keys: sections (``training: {...}``), flat names, ``experiment:`` /
            ``paths:``; not modified.

    Returns:
        ``(rest, canonical, problems)``: ``rest`` is ``data`` without seed spellings (a section
        dict is copied when something is taken out of it); ``canonical`` holds what they set,
        ``{section: {field: value}}`` in the engine's names and values; ``problems`` lists
        planned fields, unknown keys of ``experiment:`` / ``paths:``, and fields set twice under
        two names.

    Example:
        >>> rest, canonical, problems = resolve_aliases({"training": {"grad_clip": 0.5, "epochs": 2}})
        >>> rest, canonical, problems
        ({'training': {'epochs': 2}}, {'training': {'max_grad_norm': 0.5}}, [])
    """
    index, sections = _index(), _sections()
    rest: dict[str, Any] = {}
    hits: list[tuple[ConfigAlias, str, Any]] = []  # (row, as the layer spells it, value)
    problems: list[str] = []
    for key, value in data.items():
        if not isinstance(key, str):
            rest[key] = value
        elif key in sections:
            if isinstance(value, str) and key in index:  # optimizer: adamw
                hits.append((index[key], key, value))
            elif isinstance(value, dict) and any(isinstance(k, str) and f"{key}.{k}" in index for k in value):
                kept = {}
                for name, item in value.items():
                    row = index.get(f"{key}.{name}") if isinstance(name, str) else None
                    if row is None:
                        kept[name] = item
                    else:
                        hits.append((row, f"{key}.{name}", item))
                rest[key] = kept
            else:
                rest[key] = value
        elif key in SEED_SECTIONS:
            problems += _seed_section(key, value, hits)
        elif "." not in key and key in index:  # grad_clip: 1.0 at the top level
            hits.append((index[key], key, value))
        else:
            rest[key] = value
    if not hits:
        return rest, {}, problems
    explicit = _explicit_fields(rest)
    canonical: dict[str, dict[str, Any]] = {}
    set_by: dict[str, str] = {}
    for row, spelled, value in hits:
        if row.canonical is None:
            problems.append(planned_message(row, spelled))
            continue
        other = explicit.get(row.canonical) or set_by.get(row.canonical)
        if other is not None:
            problems.append(both_set_message(spelled, other, row.canonical))
            continue
        set_by[row.canonical] = spelled
        section, _, name = row.canonical.partition(".")
        canonical.setdefault(section, {})[name] = row.convert(value)
    for row, _, _ in hits:
        for path, value in row.implies:
            if path not in explicit and path not in set_by:
                section, _, name = path.partition(".")
                canonical.setdefault(section, {})[name] = value
    return rest, canonical, problems


def _seed_section(key: str, value: Any, hits: list[tuple[ConfigAlias, str, Any]]) -> list[str]:
    """Collect the rows of an ``experiment:`` / ``paths:`` mapping; its problems."""
    names = [row.alias.partition(".")[2] for row in CONFIG_ALIASES if row.alias.startswith(f"{key}.")]
    if value is None:  # an empty section in YAML
        return []
    if not isinstance(value, dict):
        return [f"{key}: must be a mapping of {', '.join(names)} (got {type(value).__name__})"]
    problems = []
    for name, item in value.items():
        row = find_alias(f"{key}.{name}") if isinstance(name, str) else None
        if row is None:
            problems.append(f"unknown field {key}.{name} — the seed section {key}: takes {', '.join(names)}")
        else:
            hits.append((row, f"{key}.{name}", item))
    return problems


def _explicit_fields(rest: dict[str, Any]) -> dict[str, str]:
    """Engine path -> how the layer spells it, for every field the layer sets under its own name."""
    sections, flat = _sections(), _field_sections()
    explicit: dict[str, str] = {}
    for key, value in rest.items():
        if key in sections:
            names = value.model_fields_set if isinstance(value, BaseModel) else value if isinstance(value, dict) else ()
            explicit.update({f"{key}.{name}": f"{key}.{name}" for name in names if isinstance(name, str)})
        elif isinstance(key, str) and len(flat.get(key, ())) == 1:
            explicit[f"{flat[key][0]}.{key}"] = key
    return explicit


# -- attributes -----------------------------------------------------------------------------


class OwnerLink:
    """A section's weak link to the ``TrainingConfig`` it was last read from.

    ``config.training.weight_decay = 0.05`` (seed 001) sets ``config.optimizer.weight_decay``:
    the training section has to know its config. ``TrainingConfig`` renews the link each time a
    section is read from it, so a copied or unpickled config links its own sections. The link
    never makes two sections unequal, pickles empty, and holds no reference that keeps a config
    alive.
    """

    __slots__ = ("_ref",)

    def __init__(self, config: Any = None) -> None:
        self._ref = weakref.ref(config) if config is not None else None

    def get(self) -> Any:
        """The config, or None when there is none (a bare section, or the config is gone)."""
        return self._ref() if self._ref is not None else None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OwnerLink)

    def __hash__(self) -> int:
        return 0

    def __reduce__(self) -> tuple[type[OwnerLink], tuple[()]]:
        return (OwnerLink, ())

    def __deepcopy__(self, memo: dict[int, Any]) -> OwnerLink:
        return OwnerLink()


def attach_owner(section: BaseModel, config: Any) -> None:
    """Link ``section`` to ``config`` (called whenever ``config.<section>`` is read)."""
    private = getattr(section, "__pydantic_private__", None)  # None for an unvalidated model_construct value
    if private is not None:
        link = private.get("_owner")
        if link is None or link._ref is None or link._ref() is not config:
            private["_owner"] = OwnerLink(config)


#: Returned by the ``get_*_alias`` functions for a name that is no seed spelling.
NOT_AN_ALIAS: Any = object()


def _section_name(section: BaseModel) -> str:
    return next((k for k, v in _sections().items() if v is type(section)), type(section).__name__)


def _target(row: ConfigAlias, spelled: str, error: type[Exception]) -> tuple[str, str]:
    if row.canonical is None:
        raise error(planned_message(row, spelled))
    section, _, name = row.canonical.partition(".")
    return section, name


def _owner_of(section: BaseModel, spelled: str, target: str, error: type[Exception]) -> Any:
    link = (section.__pydantic_private__ or {}).get("_owner")
    config = link.get() if isinstance(link, OwnerLink) else None
    if config is None:
        raise error(
            f"{spelled} is another name of {target}, which is in another section — use it through a "
            f"TrainingConfig (config.{spelled}) or set {target}"
        )
    return config


def get_section_alias(section: BaseModel, name: str) -> Any:
    """``config.training.grad_clip``: the value of the engine field a seed name means.

    Returns:
        The value, or :data:`NOT_AN_ALIAS` when ``name`` is no seed spelling in this section.

    Raises:
        AttributeError: the field is planned, not built; or it lives in another section and this
            section belongs to no config.
    """
    own = _section_name(section)
    spelled = f"{own}.{name}"
    row = find_alias(spelled)
    if row is None:
        return NOT_AN_ALIAS
    target_section, field = _target(row, spelled, AttributeError)
    if target_section == own:
        return getattr(section, field)
    config = _owner_of(section, spelled, str(row.canonical), AttributeError)
    return getattr(getattr(config, target_section), field)


def set_section_alias(section: BaseModel, name: str, value: Any) -> bool:
    """``config.training.weight_decay = 0.05``: set the engine field; False when ``name`` is no seed spelling.

    Raises:
        ConfigError: the field is planned, not built; the value is invalid for the engine field; or
            the field lives in another section and this section belongs to no config.
    """
    own = _section_name(section)
    spelled = f"{own}.{name}"
    row = find_alias(spelled)
    if row is None:
        return False
    _target(row, spelled, ConfigError)
    config = None
    for path, item in ((str(row.canonical), row.convert(value)), *row.implies):
        target_section, _, field = path.partition(".")
        if target_section == own:
            setattr(section, field, item)
        else:
            config = config or _owner_of(section, spelled, str(row.canonical), ConfigError)
            setattr(getattr(config, target_section), field, item)
    return True


def get_config_alias(config: Any, name: str) -> Any:
    """``config.grad_clip`` / ``config.experiment``: a flat seed name or a seed section; else :data:`NOT_AN_ALIAS`.

    Raises:
        AttributeError: the field is planned, not built.
    """
    if name in SEED_SECTIONS:
        return SeedSectionView(config, name)
    row = find_alias(name) if "." not in name and name not in _sections() else None
    if row is None:
        return NOT_AN_ALIAS
    section, field = _target(row, name, AttributeError)
    return getattr(getattr(config, section), field)


def set_config_alias(config: Any, name: str, value: Any) -> bool:
    """``config.grad_clip = 0.5``, ``config.optimizer = "sgd"``, ``config.experiment = {...}``; False for other names.

    Raises:
        ConfigError: the field is planned, not built, or the value is invalid.
    """
    if name in SEED_SECTIONS and isinstance(value, dict):
        view = SeedSectionView(config, name)
        for key, item in value.items():
            setattr(view, key, item)
        return True
    if name in _sections() and isinstance(value, dict):
        # config.training = {"grad_clip": 0.5}: pydantic validates an assigned section on its own.
        rest, canonical, problems = resolve_aliases({name: value})
        if problems:
            raise ConfigError(problems)
        if not canonical:
            return False  # the engine's own names: its own assignment
        setattr(config, name, {**rest.get(name, {}), **canonical.pop(name, {})})
        for section, fields in canonical.items():
            for field, item in fields.items():
                setattr(getattr(config, section), field, item)
        return True
    if name in _sections() and not isinstance(value, str):
        return False  # a section instance: the engine's own assignment
    row = find_alias(name) if "." not in name else None
    if row is None:
        return False
    _target(row, name, ConfigError)
    for path, item in ((str(row.canonical), row.convert(value)), *row.implies):
        section, _, field = path.partition(".")
        setattr(getattr(config, section), field, item)
    return True


class SeedSectionView:
    """``config.experiment`` / ``config.paths``: seed 002's sections as a view of the engine's fields.

    Nothing is stored here: ``config.experiment.name`` reads and writes
    ``config.tracking.experiment_name``.

    Example:
        >>> from trainengine.config import TrainingConfig
        >>> config = TrainingConfig(experiment={"name": "shakespeare_baseline"})
        >>> config.experiment.name, config.tracking.experiment_name
        ('shakespeare_baseline', 'shakespeare_baseline')
    """

    __slots__ = ("_config", "_name")

    def __init__(self, config: Any, name: str) -> None:
        object.__setattr__(self, "_config", config)
        object.__setattr__(self, "_name", name)

    def _row(self, key: str, error: type[Exception]) -> ConfigAlias:
        row = find_alias(f"{self._name}.{key}")
        if row is None:
            names = [r.alias.partition(".")[2] for r in CONFIG_ALIASES if r.alias.startswith(f"{self._name}.")]
            raise error(f"unknown field {self._name}.{key} — the seed section {self._name}: takes {', '.join(names)}")
        return row

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        section, field = _target(self._row(key, AttributeError), f"{self._name}.{key}", AttributeError)
        return getattr(getattr(self._config, section), field)

    def __setattr__(self, key: str, value: Any) -> None:
        row = self._row(key, ConfigError)
        section, field = _target(row, f"{self._name}.{key}", ConfigError)
        setattr(getattr(self._config, section), field, row.convert(value))

    def __repr__(self) -> str:
        fields = [r.alias.partition(".")[2] for r in CONFIG_ALIASES if r.alias.startswith(f"{self._name}.")]
        return f"{self._name}({', '.join(f'{k}={getattr(self, k)!r}' for k in fields)})"
