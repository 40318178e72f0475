"""ExperimentDB schema version 3: parent/child runs (groups) and the migration from versions 1 and 2.

Runs on SQLite and PostgreSQL (the ``sql_db`` fixture).
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import Column, Double, ForeignKey, Integer, MetaData, String, Table, Text, create_engine

from trainengine.tracking import ExperimentDB, ExperimentDBValueError, UnknownRunError


# ---------------------------------------------------------------------------------------- groups
def test_children_join_their_group_and_its_experiment(sql_db):
    with ExperimentDB(sql_db("e.db")) as db:
        solo = db.log_run("solo", experiment="mnist")
        group = db.log_run("seeds-a", experiment="mnist", group_kind="seeds")
        # A child logged under another experiment name still belongs to its parent's experiment.
        kids = [db.log_run(f"seed-{s}", {"seed": s}, experiment="elsewhere", parent_run_id=group) for s in (0, 1)]
        adopted = db.log_run("seed-2", experiment="elsewhere")  # made by the Trainer's own callback
        db.set_parent(adopted, group)
        for kid, loss in zip([*kids, adopted], (0.5, 0.7, 0.6), strict=True):
            db.log_metric(kid, "val/loss", loss, step=1)

        children = db.get_children(group, include_metrics=True)
        assert [c["run_name"] for c in children] == ["seed-0", "seed-1", "seed-2"]  # the order they ran
        assert {c["experiment"] for c in children} == {"mnist"}
        assert [c["metrics"]["val/loss"][0]["value"] for c in children] == [0.5, 0.7, 0.6]
        assert all(c["parent_run_id"] == group and c["group_kind"] is None for c in children)

        parent = db.get_run(group)
        assert (parent["group_kind"], parent["num_children"], parent["parent_run_id"]) == ("seeds", 3, None)
        assert db.get_run(solo)["num_children"] == 0

        top = db.list_runs({"parent_run_id": None}, experiment="mnist")
        assert [r["run_name"] for r in top] == ["seeds-a", "solo"]  # children hidden, newest first
        assert [r["run_name"] for r in db.list_runs({"group_kind": "seeds"})] == ["seeds-a"]
        assert len(db.list_runs({"parent_run_id": group})) == 3
        assert db.list_runs(experiment="elsewhere") == []

        db.set_parent(adopted, None)  # detach
        assert db.get_run(group)["num_children"] == 2 and db.get_run(adopted)["parent_run_id"] is None


def test_group_links_are_validated(sql_db):
    with ExperimentDB(sql_db("e.db")) as db:
        group = db.log_run("g", group_kind="cv")
        child = db.log_run("fold-0", parent_run_id=group)
        with pytest.raises(UnknownRunError, match="no run with run_id 999"):
            db.log_run("orphan", parent_run_id=999)
        with pytest.raises(UnknownRunError, match="no run with run_id 998"):
            db.set_parent(child, 998)
        with pytest.raises(UnknownRunError, match="no run with run_id 997"):
            db.get_children(997)
        with pytest.raises(ExperimentDBValueError, match="cannot be its own parent"):
            db.set_parent(group, group)
        with pytest.raises(ExperimentDBValueError, match="cannot be the parent of its own parent"):
            db.set_parent(group, child)
        with pytest.raises(ExperimentDBValueError, match="group_kind must be a short name .* got 'cv folds'"):
            db.log_run("bad", group_kind="cv folds")
        with pytest.raises(ExperimentDBValueError, match="run_id must be an integer"):
            db.log_run("bad", parent_run_id="1")
        assert [r["run_name"] for r in db.list_runs()] == ["fold-0", "g"]  # nothing half-written


# ------------------------------------------------------------------------------------- migration
def _old_schema(version: int) -> tuple[MetaData, Table, Table, Table]:
    """The tables exactly as schema version 1 (no heartbeat) or 2 (heartbeat) declared them."""
    md = MetaData()
    version_table = Table("schema_version", md, Column("version", Integer, nullable=False))
    columns = [
        Column("run_id", Integer, primary_key=True, autoincrement=True),
        Column("run_name", String(255), nullable=False),
        Column("experiment", String(255), nullable=False, index=True),
        Column("config_json", Text, nullable=False),
        Column("notes", Text, nullable=False),
        Column("status", String(16), nullable=False, index=True),
        Column("error", Text),
        Column("start_time", Double, nullable=False),
        Column("end_time", Double),
        Column("run_dir", Text),
    ]
    if version >= 2:
        columns += [Column("heartbeat_time", Double), Column("heartbeat_interval_s", Double)]
    runs = Table("runs", md, *columns)
    Table(
        "run_tags",
        md,
        Column("run_id", Integer, ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True),
        Column("tag", String(255), primary_key=True),
        Column("position", Integer, nullable=False),
    )
    metrics = Table(
        "metrics",
        md,
        Column("metric_id", Integer, primary_key=True, autoincrement=True),
        Column("run_id", Integer, ForeignKey("runs.run_id", ondelete="CASCADE"), nullable=False),
        Column("name", String(255), nullable=False),
        Column("value", Double),
        Column("nonfinite", String(4)),
        Column("step", Integer),
        Column("epoch", Integer),
        Column("time", Double, nullable=False),
    )
    return md, version_table, runs, metrics


@pytest.mark.parametrize("old_version", [1, 2])
def test_an_older_database_is_migrated_to_version_3(sql_db, old_version):
    location = sql_db(f"v{old_version}.db")
    url = location if "://" in str(location) else f"sqlite:///{location}"
    md, version_table, runs, metrics = _old_schema(old_version)
    engine = create_engine(url)
    with engine.begin() as conn:
        md.create_all(conn)
        conn.execute(version_table.insert().values(version=old_version))
        row = {
            "run_name": "old",
            "experiment": "exp",
            "config_json": '{"lr": 0.1}',
            "notes": "",
            "status": "completed",
            "start_time": time.time() - 60,
            "end_time": time.time(),
        }
        old_id = conn.execute(runs.insert().values(**row)).inserted_primary_key[0]
        conn.execute(metrics.insert().values(run_id=old_id, name="val/loss", value=0.25, step=3, time=time.time()))
    engine.dispose()

    with ExperimentDB(location) as db:  # opening for writing migrates
        old = db.get_run(old_id)
        assert (old["run_name"], old["config"], old["metrics"]["val/loss"][0]["value"]) == ("old", {"lr": 0.1}, 0.25)
        assert (old["parent_run_id"], old["group_kind"], old["num_children"], old["stale"]) == (None, None, 0, False)
        # The migrated database takes groups like a new one, the old run as a parent included.
        child = db.log_run("child", parent_run_id=old_id)
        db.set_parent(child, old_id)
        assert db.get_run(old_id)["num_children"] == 1
        assert db.get_run(child)["experiment"] == "exp"
    assert sql_db.raw(location, "SELECT version FROM schema_version") == [(3,)]
    if sql_db.is_sqlite:
        index = "SELECT name FROM sqlite_master WHERE type = 'index' AND name = 'ix_runs_parent_run_id'"
    else:
        index = "SELECT indexname FROM pg_indexes WHERE indexname = 'ix_runs_parent_run_id'"
    assert len(sql_db.raw(location, index)) == 1  # children of a group are found by index
    with ExperimentDB(location) as again:  # a second open finds version 3: nothing to migrate
        assert [c["run_name"] for c in again.get_children(old_id)] == ["child"]
    assert sql_db.raw(location, "SELECT version FROM schema_version") == [(3,)]
