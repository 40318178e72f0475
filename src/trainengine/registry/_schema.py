"""Tables of the model registry (schema version 1) and the alias-history replay behind rollback.

Table names start with ``registry_`` so a registry can share a server database with an
:class:`~trainengine.tracking.ExperimentDB`.

* ``registry_models``: one row per version; ``UNIQUE(name, version)``: a version is never overwritten.
* ``registry_model_tags``: (model_pk, tag, position).
* ``registry_aliases``: the current holder of each alias; the primary key ``(name, alias)`` makes
  "one holder per alias per model name" a database rule, not a Python one.
* ``registry_alias_history``: every move of an alias (promote, rollback, archive), in order.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = ["SCHEMA_VERSION", "metadata", "schema_version", "models", "tags", "aliases", "history", "replay_alias"]

SCHEMA_VERSION = 1
_NAME = 128
_REF = 2 * _NAME + 1  # "<name>:<version>"

metadata = MetaData()
schema_version = Table("registry_schema_version", metadata, Column("version", Integer, nullable=False))
models = Table(
    "registry_models",
    metadata,
    Column("model_pk", Integer, primary_key=True, autoincrement=True),
    Column("name", String(_NAME), nullable=False),
    Column("version", String(_NAME), nullable=False),
    Column("status", String(16), nullable=False),
    Column("task_type", String(32)),
    Column("metrics_json", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("artifact_kind", String(16), nullable=False),
    Column("artifact_path", Text, nullable=False),  # relative to the artifact root when in the store
    Column("artifact_in_store", Boolean, nullable=False),
    Column("artifact_files_json", Text, nullable=False),
    Column("artifact_sha256", String(64), nullable=False),
    Column("source_path", Text),
    Column("run_id", String(255)),
    Column("git_commit", String(64)),
    Column("data_fingerprint", String(128)),
    Column("config_json", Text),
    Column("model_spec_json", Text),
    Column("created_at", Double, nullable=False),
    UniqueConstraint("name", "version", name="uq_registry_models_name_version"),
)
tags = Table(
    "registry_model_tags",
    metadata,
    Column("model_pk", Integer, ForeignKey("registry_models.model_pk", ondelete="CASCADE"), primary_key=True),
    Column("tag", String(_NAME), primary_key=True),
    Column("position", Integer, nullable=False),
    Index("ix_registry_model_tags_tag", "tag"),
)
aliases = Table(
    "registry_aliases",
    metadata,
    Column("name", String(_NAME), primary_key=True),
    Column("alias", String(_NAME), primary_key=True),
    Column("model_pk", Integer, ForeignKey("registry_models.model_pk"), nullable=False),
    Column("updated_at", Double, nullable=False),
    Index("ix_registry_aliases_alias", "alias"),
)
history = Table(
    "registry_alias_history",
    metadata,
    Column("event_id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(_NAME), nullable=False),
    Column("alias", String(_NAME)),  # NULL: archiving a version that held no alias
    Column("action", String(16), nullable=False),  # promote | rollback | archive
    Column("from_model", String(_REF)),
    Column("to_model", String(_REF)),
    Column("forced", Boolean, nullable=False),
    Column("reason", Text),
    Column("details_json", Text),
    Column("time", Double, nullable=False),
    Index("ix_registry_alias_history_name_alias", "name", "alias", "event_id"),
)


def replay_alias(events: Iterable[Any]) -> list[str]:
    """The alias's holders as a stack (oldest first, current last) rebuilt from its history.

    ``promote`` pushes the new holder; ``rollback`` pops back to the holder it restored (so a second
    rollback goes further back, like undo); ``archive`` removes the archived version everywhere.

    Example:
        >>> from types import SimpleNamespace as E
        >>> replay_alias(
        ...     [
        ...         E(action="promote", from_model=None, to_model="m:1.0.0"),
        ...         E(action="promote", from_model="m:1.0.0", to_model="m:2.0.0"),
        ...         E(action="promote", from_model="m:2.0.0", to_model="m:3.0.0"),
        ...         E(action="rollback", from_model="m:3.0.0", to_model="m:2.0.0"),
        ...     ]
        ... )
        ['m:1.0.0', 'm:2.0.0']
    """
    stack: list[str] = []
    for event in events:
        if event.action == "promote":
            if not stack or stack[-1] != event.to_model:
                stack.append(event.to_model)
        elif event.action == "rollback":
            while stack and stack[-1] != event.to_model:
                stack.pop()
            if not stack:
                stack.append(event.to_model)
        elif event.action == "archive":
            stack = [m for m in stack if m != event.from_model]
    return stack
