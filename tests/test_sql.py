"""SqlStore: the SQL plumbing ExperimentDB and ModelRegistry share (schema, transactions, errors)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Column, Connection, Integer, MetaData, String, Table, insert, select, update

from trainengine._sql import SqlStore, init_versioned_schema, resolve_database
from trainengine.errors import TrainEngineError

_meta = MetaData()
_items = Table("items", _meta, Column("id", Integer, primary_key=True), Column("name", String(20), unique=True))
_version = Table("schema_version", _meta, Column("version", Integer, nullable=False))


class StoreError(TrainEngineError):
    pass


class Store(SqlStore):
    _kind = "test store"
    _error = StoreError
    schema_version = 2
    migrated: list[int]

    def __init__(self, path: str | Path) -> None:
        self.migrated = []
        self._connect(resolve_database(path, kind=self._kind, example="t.db"), busy_timeout_s=5.0, max_retries=2)

    def _init_schema(self, conn: Connection) -> None:
        init_versioned_schema(
            conn,
            _meta,
            _version,
            self.schema_version,
            kind=self._kind,
            error=StoreError,
            migrations={2: lambda c: self.migrated.append(2)},
        )

    def add(self, name: str) -> None:
        self._write(lambda c: c.execute(insert(_items).values(name=name)), conflict=f"{name} exists already")

    def names(self) -> list[str]:
        return self._read(lambda c: list(c.execute(select(_items.c.name).order_by(_items.c.id)).scalars()))


def _set_version(path: Path, version: int) -> None:
    with Store(path) as store:
        store._write(lambda c: c.execute(update(_version).values(version=version)))


def test_reads_writes_and_a_unique_conflict_message(tmp_path: Path) -> None:
    with Store(tmp_path / "t.db") as store:
        store.add("a")
        store.add("b")
        assert store.names() == ["a", "b"]
        with pytest.raises(StoreError, match="^a exists already$"):
            store.add("a")
        assert store.names() == ["a", "b"]  # the failed transaction left nothing
    assert "closed" in repr(store)
    with pytest.raises(StoreError, match=r"Store\(.*\) is closed; open a new one"):
        store.names()


def test_schema_versions_migrate_forward_and_refuse_a_newer_database(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    _set_version(path, 1)  # an older database
    store = Store(path)
    assert store.migrated == [2] and store._read(lambda c: c.execute(select(_version.c.version)).scalar()) == 2
    store.close()
    _set_version(path, 3)
    with pytest.raises(StoreError, match="test store has schema version 3, newer than this trainengine supports"):
        Store(path)


def test_experiment_db_and_registry_share_it() -> None:
    from trainengine.registry import ModelRegistry
    from trainengine.tracking import ExperimentDB

    assert issubclass(ExperimentDB, SqlStore) and issubclass(ModelRegistry, SqlStore)
    for cls in (ExperimentDB, ModelRegistry):
        assert cls._run is SqlStore._run and cls._write is SqlStore._write and cls._read is SqlStore._read
