"""Several processes registering and promoting against one SQLite registry lose and duplicate nothing."""

from __future__ import annotations

import multiprocessing
import sqlite3
import sys

import pytest
import torch

from trainengine.errors import RegistryError
from trainengine.registry import ModelRegistry

NUM_PROCESSES = 8
needs_fork = pytest.mark.skipif(
    sys.platform == "win32" or "fork" not in multiprocessing.get_all_start_methods(), reason="needs fork"
)


def _register_and_promote(path: str, weights: str, worker: int, start, results) -> None:
    start.wait(timeout=30)  # all processes open the fresh file and create the schema together
    try:
        with ModelRegistry(path) as reg:
            model_id = reg.register_model("shared", f"1.{worker}.0", weights, metrics={"worker": worker})
            reg.promote_model(model_id, "production", reason=f"worker {worker}")
            reg.promote_model(model_id, "staging")
        results.put((worker, model_id))
    except BaseException as exc:  # report instead of dying silently
        results.put((worker, repr(exc)))


def _register_same(path: str, weights: str, worker: int, start, results) -> None:
    start.wait(timeout=30)
    try:
        with ModelRegistry(path) as reg:
            reg.register_model("same", "1.0.0", weights, metrics={"worker": worker})
        results.put((worker, "ok"))
    except RegistryError as exc:
        results.put((worker, str(exc)))
    except BaseException as exc:
        results.put((worker, repr(exc)))


def _run(target, args_of, n: int) -> list:
    # fork, not spawn: a spawned child re-imports torch (seconds of CPU each), and a test module
    # imported with --import-mode=importlib cannot be re-imported by name in a child.
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args_of(w), w, start, results)) for w in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0] * n
    return sorted(results.get(timeout=5) for _ in procs)


@needs_fork
def test_eight_processes_register_and_promote_without_losing_anything(tmp_path):
    path = str(tmp_path / "shared" / "models.db")
    weights = tmp_path / "w.pt"
    torch.save({"w": torch.arange(4.0)}, weights)
    outcomes = _run(_register_and_promote, lambda w: (path, str(weights)), NUM_PROCESSES)
    expected = [(w, f"shared:1.{w}.0") for w in range(NUM_PROCESSES)]
    assert outcomes == expected, outcomes

    with sqlite3.connect(path) as raw:  # count rows independently of ModelRegistry
        versions = [r[0] for r in raw.execute("SELECT version FROM registry_models")]
        assert sorted(versions) == sorted(f"1.{w}.0" for w in range(NUM_PROCESSES))  # each once
        holders = raw.execute("SELECT alias, count(*) FROM registry_aliases WHERE name = 'shared' GROUP BY alias").fetchall()
        assert sorted(holders) == [("production", 1), ("staging", 1)]
    with ModelRegistry(path) as reg:
        for alias in ("production", "staging"):
            events = reg.history("shared", alias)
            # Every promotion is there, once, and they form one unbroken chain: each move starts
            # from the holder the previous move left (no lost update).
            assert sorted(e["to_model"] for e in events) == [mid for _, mid in expected]
            assert events[0]["from_model"] is None
            assert all(b["from_model"] == a["to_model"] for a, b in zip(events, events[1:]))
            assert reg.get_model("shared", alias=alias).model_id == events[-1]["to_model"]
        for record in reg.list_models("shared"):
            record.verify()
            assert record.metrics == {"worker": float(record.version.split(".")[1])}
    store = tmp_path / "shared" / "models-artifacts" / "shared"
    assert sorted(p.name for p in store.iterdir()) == sorted(f"1.{w}.0" for w in range(NUM_PROCESSES))  # no temp leftovers


@needs_fork
def test_two_processes_registering_the_same_version_one_wins(tmp_path):
    path = str(tmp_path / "models.db")
    weights = tmp_path / "w.pt"
    torch.save({"w": torch.arange(4.0)}, weights)
    outcomes = _run(_register_same, lambda w: (path, str(weights)), 2)
    messages = [m for _, m in outcomes]
    assert messages.count("ok") == 1, messages
    (loser,) = [m for m in messages if m != "ok"]
    assert "same:1.0.0 is already registered" in loser and "never overwritten" in loser
    winner = next(w for w, m in outcomes if m == "ok")
    with ModelRegistry(path) as reg:
        (record,) = reg.list_models()
        assert record.metrics == {"worker": float(winner)}
        record.verify()
    store = tmp_path / "models-artifacts" / "same"
    assert [p.name for p in store.iterdir()] == ["1.0.0"]  # one copy, the loser's temp copy removed
    assert [p.name for p in (store / "1.0.0").iterdir()] == ["w.pt"]


def test_a_registration_racing_past_the_early_check_loses_cleanly(tmp_path, monkeypatch):
    # Deterministic version of the race: another writer registers the same version while this one
    # is copying (after its early existence check). The insert, under the write lock, refuses.
    from trainengine.registry import _registry as impl

    weights = tmp_path / "w.pt"
    torch.save({"w": torch.arange(4.0)}, weights)
    reg, rival = ModelRegistry(tmp_path / "models.db"), ModelRegistry(tmp_path / "models.db")
    real_copy = impl.copy_files

    def copy_then_rival_registers(*args, **kwargs):
        hashes = real_copy(*args, **kwargs)
        monkeypatch.setattr(impl, "copy_files", real_copy)
        rival.register_model("m", "1.0.0", weights, metrics={"who": 2.0})
        return hashes

    monkeypatch.setattr(impl, "copy_files", copy_then_rival_registers)
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
        assert list((tmp_path / "models-artifacts" / "m").iterdir()) == []
        monkeypatch.undo()
        reg.register_model("m", "1.0.0", weights)  # nothing was half-registered


def test_a_transaction_failing_after_the_copy_is_placed_removes_it(tmp_path, monkeypatch):
    from trainengine.registry import _registry as impl

    weights = tmp_path / "w.pt"
    torch.save({"w": torch.arange(4.0)}, weights)
    real_place = impl.place_folder

    def place_then_fail(tmp, final):
        real_place(tmp, final)
        raise KeyboardInterrupt  # e.g. Ctrl+C before the commit

    monkeypatch.setattr(impl, "place_folder", place_then_fail)
    with ModelRegistry(tmp_path / "models.db") as reg:
        with pytest.raises(KeyboardInterrupt):
            reg.register_model("m", "1.0.0", weights)
        assert reg.list_models() == []  # rolled back
        assert list((tmp_path / "models-artifacts" / "m").iterdir()) == []  # and its copy removed
