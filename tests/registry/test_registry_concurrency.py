"""Several processes registering and promoting against one registry lose and duplicate nothing.

The tests taking ``open_registry`` / ``sql_db`` run on a SQLite file and on a throwaway PostgreSQL
database (tests/_postgres.py); the file-system-only ones run on SQLite.
"""

from __future__ import annotations

import itertools
import multiprocessing
import sys

import pytest
import torch

from trainengine.errors import RegistryError
from trainengine.registry import ModelRegistry

NUM_PROCESSES = 8
needs_fork = pytest.mark.skipif(
    sys.platform == "win32" or "fork" not in multiprocessing.get_all_start_methods(), reason="needs fork"
)


def _register_and_promote(path: str, root: str | None, weights: str, worker: int, start, results) -> None:
    start.wait(timeout=30)  # all processes open the fresh database and create the schema together
    try:
        with ModelRegistry(path, artifact_root=root) as reg:
            model_id = reg.register_model("shared", f"1.{worker}.0", weights, metrics={"worker": worker})
            reg.promote_model(model_id, "production", reason=f"worker {worker}")
            reg.promote_model(model_id, "staging")
        results.put((worker, model_id))
    except BaseException as exc:  # noqa: BLE001 - a child process reports any failure instead of dying silently
        results.put((worker, repr(exc)))


def _register_same(path: str, root: str | None, weights: str, worker: int, start, results) -> None:
    start.wait(timeout=30)
    try:
        with ModelRegistry(path, artifact_root=root) as reg:
            reg.register_model("same", "1.0.0", weights, metrics={"worker": worker})
        results.put((worker, "ok"))
    except RegistryError as exc:
        results.put((worker, str(exc)))
    except BaseException as exc:  # noqa: BLE001 - a child process reports any failure instead of dying silently
        results.put((worker, repr(exc)))


def _warm_up(weights: str) -> None:
    """One registration in a private in-memory registry, so that what register/promote import lazily
    (the task types pull in torchmetrics: ~2 s of CPU) is imported once here, not in every child."""
    with ModelRegistry(":memory:") as reg:
        reg.promote_model(reg.register_model("warm", "0.0.1", weights, copy_artifact=False), "warm")


def _run(target, args_of, n: int) -> list:
    # fork, not spawn: a spawned child re-imports torch (seconds of CPU each), and a test module
    # imported with --import-mode=importlib cannot be re-imported by name in a child.
    ctx = multiprocessing.get_context("fork")
    _warm_up(args_of(0)[-1])
    start, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args_of(w), w, start, results)) for w in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0] * n
    return sorted(results.get(timeout=5) for _ in procs)


def _root(sql_db, tmp_path, name: str) -> str | None:
    """The artifact store a server database needs: where SQLite's default puts it, beside the file."""
    return None if sql_db.is_sqlite else str(tmp_path / name.replace(".db", "-artifacts"))


@needs_fork
def test_eight_processes_register_and_promote_without_losing_anything(tmp_path, sql_db):
    path, root = sql_db("shared/models.db"), _root(sql_db, tmp_path, "shared/models.db")
    weights = tmp_path / "w.pt"
    torch.save({"w": torch.arange(4.0)}, weights)
    outcomes = _run(_register_and_promote, lambda w: (path, root, str(weights)), NUM_PROCESSES)
    expected = [(w, f"shared:1.{w}.0") for w in range(NUM_PROCESSES)]
    assert outcomes == expected, outcomes

    # count rows independently of ModelRegistry
    versions = [r[0] for r in sql_db.raw(path, "SELECT version FROM registry_models")]
    assert sorted(versions) == sorted(f"1.{w}.0" for w in range(NUM_PROCESSES))  # each once
    holders = sql_db.raw(path, "SELECT alias, count(*) FROM registry_aliases WHERE name = 'shared' GROUP BY alias")
    assert sorted(holders) == [("production", 1), ("staging", 1)]
    with ModelRegistry(path, artifact_root=root) as reg:
        for alias in ("production", "staging"):
            events = reg.history("shared", alias)
            # Every promotion is there, once, and they form one unbroken chain: each move starts
            # from the holder the previous move left (no lost update).
            assert sorted(e["to_model"] for e in events) == [mid for _, mid in expected]
            assert events[0]["from_model"] is None
            assert all(b["from_model"] == a["to_model"] for a, b in itertools.pairwise(events))
            assert reg.get_model("shared", alias=alias).model_id == events[-1]["to_model"]
        for record in reg.list_models("shared"):
            record.verify()
            assert record.metrics == {"worker": float(record.version.split(".")[1])}
    store = tmp_path / "shared" / "models-artifacts" / "shared"
    assert sorted(p.name for p in store.iterdir()) == sorted(
        f"1.{w}.0" for w in range(NUM_PROCESSES)
    )  # no temp leftovers


@needs_fork
def test_two_processes_registering_the_same_version_one_wins(tmp_path, sql_db):
    path, root = sql_db("models.db"), _root(sql_db, tmp_path, "models.db")
    weights = tmp_path / "w.pt"
    torch.save({"w": torch.arange(4.0)}, weights)
    outcomes = _run(_register_same, lambda w: (path, root, str(weights)), 2)
    messages = [m for _, m in outcomes]
    assert messages.count("ok") == 1, messages
    (loser,) = [m for m in messages if m != "ok"]
    assert "same:1.0.0 is already registered" in loser and "never overwritten" in loser
    winner = next(w for w, m in outcomes if m == "ok")
    with ModelRegistry(path, artifact_root=root) as reg:
        (record,) = reg.list_models()
        assert record.metrics == {"worker": float(winner)}
        record.verify()
    store = tmp_path / "models-artifacts" / "same"
    assert [p.name for p in store.iterdir()] == ["1.0.0"]  # one copy, the loser's temp copy removed
    assert [p.name for p in (store / "1.0.0").iterdir()] == ["w.pt"]


def test_a_registration_racing_past_the_early_check_loses_cleanly(tmp_path, monkeypatch, open_registry):
    # Deterministic version of the race: another writer registers the same version while this one
    # is copying (after its early existence check). The insert, under the write lock, refuses.
    weights = tmp_path / "w.pt"
    torch.save({"w": torch.arange(4.0)}, weights)
    reg, rival = open_registry("models.db"), open_registry("models.db")
    real_put = reg.store.put

    def copy_then_rival_registers(*args, **kwargs):
        placement = real_put(*args, **kwargs)  # staged and verified, not yet committed
        rival.register_model("m", "1.0.0", weights, metrics={"who": 2.0})
        return placement

    monkeypatch.setattr(reg.store, "put", copy_then_rival_registers)
    with pytest.raises(RegistryError, match="m:1.0.0 is already registered"):
        reg.register_model("m", "1.0.0", weights, metrics={"who": 1.0})
    assert reg.get_model("m").metrics == {"who": 2.0}
    assert [p.name for p in (tmp_path / "models-artifacts" / "m").iterdir()] == ["1.0.0"]
    reg.get_model("m").verify()
    reg.close(), rival.close()


def test_a_failed_copy_leaves_nothing_behind(tmp_path, monkeypatch):
    from trainengine.registry import _artifacts

    weights = tmp_path / "w.pt"
    torch.save({"w": torch.arange(4.0)}, weights)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_artifacts.os, "fsync", disk_full)
    with ModelRegistry(tmp_path / "models.db") as reg:
        with pytest.raises(RegistryError, match="cannot copy .* No space left on device"):
            reg.register_model("m", "1.0.0", weights)
        assert reg.list_models() == []
        assert not (tmp_path / "models-artifacts").exists()  # no staging folder, nor the folders made for it
        monkeypatch.undo()
        reg.register_model("m", "1.0.0", weights)  # nothing was half-registered


def test_a_transaction_failing_after_the_copy_is_placed_removes_it(tmp_path, monkeypatch, open_registry):
    from trainengine.registry._artifacts import Placement

    weights = tmp_path / "w.pt"
    torch.save({"w": torch.arange(4.0)}, weights)
    real_commit = Placement.commit

    def place_then_fail(self):
        real_commit(self)
        raise KeyboardInterrupt  # e.g. Ctrl+C before the transaction commits

    monkeypatch.setattr(Placement, "commit", place_then_fail)
    with open_registry("models.db") as reg:
        with pytest.raises(KeyboardInterrupt):
            reg.register_model("m", "1.0.0", weights)
        assert reg.list_models() == []  # rolled back
        assert not (tmp_path / "models-artifacts").exists()  # and its copy removed, with the folders made for it
