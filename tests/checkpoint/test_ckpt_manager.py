"""CheckpointManager: intervals, pruning, discovery, index.json, asynchronous saves."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest
import torch
from torch import nn

import trainengine.checkpoint._write as fmt
from trainengine.checkpoint import CheckpointManager, read_checkpoint
from trainengine.errors import CheckpointError, ConfigError


def _steps(manager):
    return [c.step for c in manager.list_checkpoints()]


def _save(manager, step, loss=None, tags=(), **metrics):
    if loss is not None:
        metrics["val/loss"] = loss
    return manager.save(step=step, epoch=step // 10, state={"x": step}, metrics=metrics, tags=list(tags))


def test_should_save_follows_the_intervals(ckpt_dir):
    m = CheckpointManager(ckpt_dir, save_interval_steps=100, save_interval_epochs=2)
    assert [s for s in range(0, 401, 50) if m.should_save(step=s)] == [100, 200, 300, 400]
    assert [e for e in range(6) if m.should_save(epoch_end=e)] == [1, 3, 5]
    none = CheckpointManager(ckpt_dir)
    assert not none.should_save(step=100) and not none.should_save(epoch_end=0)


def test_bad_arguments_are_listed_together(ckpt_dir):
    with pytest.raises(ConfigError) as info:
        CheckpointManager(ckpt_dir, keep_best_k=-1, save_interval_steps=0, mode="lowest")
    assert len(info.value.problems) == 3 and "mode: must be 'min' or 'max', got 'lowest'" in info.value.problems


def test_pruning_keeps_best_k_union_last_n(ckpt_dir, h):
    m = CheckpointManager(ckpt_dir, keep_best_k=2, keep_last_n=2)
    losses = {1: 5.0, 2: 1.0, 3: 4.0, 4: 2.0, 5: 6.0, 6: 7.0, 7: 8.0, 8: 9.0}
    for step, loss in losses.items():
        _save(m, step, loss)
    # best two: 2 (1.0), 4 (2.0); newest two: 7, 8
    assert _steps(m) == [2, 4, 7, 8]
    assert h.listing(ckpt_dir) == ["ckpt-000000002", "ckpt-000000004", "ckpt-000000007", "ckpt-000000008", "index.json"]
    infos = {c.step: c for c in m.list_checkpoints()}
    assert infos[2].is_best and infos[8].is_latest and not infos[4].is_best


def test_best_and_newest_survive_even_with_zero_budgets(ckpt_dir):
    m = CheckpointManager(ckpt_dir, keep_best_k=0, keep_last_n=0)
    for step, loss in [(1, 3.0), (2, 1.0), (3, 2.0), (4, 5.0)]:
        _save(m, step, loss)
    assert _steps(m) == [2, 4]


def test_mode_max_and_monitor_spellings(ckpt_dir):
    m = CheckpointManager(ckpt_dir, keep_best_k=1, keep_last_n=1, monitor="val_acc", mode="max")
    assert m.monitor == "val/acc"
    _save(m, 1, **{"val/acc": 0.9})
    _save(m, 2, val_acc=0.95)  # the underscore spelling counts too
    _save(m, 3, **{"val/acc": 0.5})
    _save(m, 4, **{"val/acc": 0.6})
    assert _steps(m) == [2, 4]
    assert m.get_best_checkpoint().name == "ckpt-000000002"


def test_checkpoints_without_the_metric_or_with_nan_never_count_as_best(ckpt_dir):
    m = CheckpointManager(ckpt_dir, keep_best_k=1, keep_last_n=1)
    _save(m, 1)
    assert m.get_best_checkpoint() is None and m.get_latest_checkpoint().name == "ckpt-000000001"
    _save(m, 2, 3.0)
    _save(m, 3, float("nan"))
    _save(m, 4, **{"train/loss": 0.0})
    assert _steps(m) == [2, 4]
    assert m.get_best_checkpoint().name == "ckpt-000000002"


def test_emergency_checkpoints_stay_until_a_newer_normal_one(ckpt_dir):
    m = CheckpointManager(ckpt_dir, keep_best_k=0, keep_last_n=1)
    _save(m, 1, 1.0)
    _save(m, 2, tags=["emergency"])
    _save(m, 3, tags=["emergency"])
    assert _steps(m) == [1, 2, 3]  # 1 is best, 2 and 3 are emergencies with nothing newer
    _save(m, 4, 2.0)
    assert _steps(m) == [1, 4]


def test_damaged_folders_are_not_pruned(ckpt_dir):
    m = CheckpointManager(ckpt_dir, keep_best_k=0, keep_last_n=1)
    _save(m, 1)
    (ckpt_dir / "ckpt-000000001" / "manifest.json").unlink()
    _save(m, 2)
    _save(m, 3)
    assert _steps(m) == [3]  # the damaged one is hidden from the default listing...
    assert [(c.step, c.complete) for c in m.list_checkpoints(include_invalid=True)] == [
        (1, False),
        (3, True),
    ]  # ...but still there


def test_resaving_a_step_replaces_it(ckpt_dir, h):
    m = CheckpointManager(ckpt_dir)
    _save(m, 5, 2.0)
    _save(m, 5, 1.0, tags=["emergency"])
    (info,) = m.list_checkpoints()
    assert info.metric == 1.0 and info.tags == ["emergency"] and m.verify(info.path) == []
    assert [n for n in h.listing(ckpt_dir) if n.startswith(".")] == []


def test_a_fresh_manager_discovers_checkpoints_and_cleans_leftovers(ckpt_dir, h):
    m = CheckpointManager(ckpt_dir, keep_best_k=1, keep_last_n=2)
    for step, loss in [(10, 2.0), (20, 1.0), (30, 3.0), (40, 4.0)]:
        _save(m, step, loss)
    (ckpt_dir / ".tmp-ckpt-000000050-deadbeef").mkdir()
    (ckpt_dir / ".tmp-ckpt-000000050-deadbeef" / "model.safetensors").write_bytes(b"half")
    (ckpt_dir / ".trash-ckpt-000000005-cafe0000").mkdir()
    (ckpt_dir / ".index.json.abc.tmp").write_text("{")
    fresh = CheckpointManager(ckpt_dir, keep_best_k=1, keep_last_n=2)
    infos = fresh.list_checkpoints()
    assert [(c.step, c.epoch, c.metric, c.is_best, c.is_latest) for c in infos] == [
        (20, 2, 1.0, True, False),
        (30, 3, 3.0, False, False),
        (40, 4, 4.0, False, True),
    ]
    assert all(c.size_bytes > 0 and c.complete for c in infos)
    assert h.listing(ckpt_dir) == ["ckpt-000000020", "ckpt-000000030", "ckpt-000000040", "index.json"]
    assert fresh.get_best_checkpoint() == ckpt_dir / "ckpt-000000020"
    assert fresh.get_latest_checkpoint() == ckpt_dir / "ckpt-000000040"
    meta = fresh.load_checkpoint("ckpt-000000030", nn.Linear(1, 1), strict=False)  # a name inside the folder works too
    assert (meta.step, meta.epoch, meta.metrics) == (30, 3, {"val/loss": 3.0})


def test_index_json_lists_the_checkpoints_and_is_rebuilt_from_the_folders(ckpt_dir):
    m = CheckpointManager(ckpt_dir, keep_best_k=1, keep_last_n=1)
    for step, loss in [(1, 1.0), (2, 2.0), (3, 3.0)]:
        _save(m, step, loss)
    index = json.loads((ckpt_dir / "index.json").read_text())
    assert index["monitor"] == "val/loss" and index["mode"] == "min"
    assert [(e["name"], e["step"], e["metric"], e["is_best"], e["is_latest"]) for e in index["checkpoints"]] == [
        ("ckpt-000000001", 1, 1.0, True, False),
        ("ckpt-000000003", 3, 3.0, False, True),
    ]
    assert all(e["size_bytes"] > 0 and e["tags"] == [] and e["epoch"] == 0 for e in index["checkpoints"])

    (ckpt_dir / "index.json").unlink()
    CheckpointManager(ckpt_dir)
    assert json.loads((ckpt_dir / "index.json").read_text())["checkpoints"] == index["checkpoints"]

    stale = dict(
        index, checkpoints=index["checkpoints"] + [dict(index["checkpoints"][0], name="ckpt-000000099", step=99)]
    )
    (ckpt_dir / "index.json").write_text(json.dumps(stale))
    assert _steps(CheckpointManager(ckpt_dir)) == [1, 3]  # the folders win
    assert [e["step"] for e in json.loads((ckpt_dir / "index.json").read_text())["checkpoints"]] == [1, 3]


def test_index_json_is_replaced_atomically(ckpt_dir, monkeypatch, h):
    m = CheckpointManager(ckpt_dir)
    _save(m, 1, 1.0)
    before = (ckpt_dir / "index.json").read_text()

    real_replace = os.replace

    def fail_for_index(src, dst, *args, **kwargs):
        if str(dst).endswith("index.json"):  # the rename that would publish the new index
            raise OSError(28, "No space left on device")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", fail_for_index)
    _save(m, 2, 2.0)  # the checkpoint itself goes through; the index is only a cache
    assert (ckpt_dir / "index.json").read_text() == before  # the old, whole index: never half a file
    assert not [p for p in ckpt_dir.iterdir() if p.name.startswith(".index.json")]
    monkeypatch.undo()
    assert _steps(CheckpointManager(ckpt_dir)) == [1, 2]
    assert [e["step"] for e in json.loads((ckpt_dir / "index.json").read_text())["checkpoints"]] == [1, 2]


# --------------------------------------------------------------------------- asynchronous saves


def _training_state(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(4, 32)).sum().backward()
    opt.step()
    return model, opt


def test_async_save_equals_a_sync_save_of_the_same_moment(tmp_path, h):
    model, opt = _training_state()
    sync_path = CheckpointManager(tmp_path / "sync").save(
        step=7, epoch=1, model=model, state={"optimizer": opt.state_dict()}, metrics={"val/loss": 0.3}
    )
    manager = CheckpointManager(tmp_path / "async")
    handle = manager.save_async(
        step=7, epoch=1, model=model, state={"optimizer": opt.state_dict()}, metrics={"val/loss": 0.3}
    )
    # Training goes on at once: the checkpoint must hold the state at the call, not after this.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    opt.state_dict()["state"][0]["exp_avg"].add_(1.0)
    assert handle.wait() == tmp_path / "async" / "ckpt-000000007"
    assert handle.stall_seconds > 0 and handle.write_seconds > 0
    a, b = read_checkpoint(sync_path), read_checkpoint(handle.path)
    h.assert_same(a.model_state, b.model_state)
    h.assert_same(a.state, b.state)
    assert (a.meta.step, a.meta.epoch, a.meta.metrics) == (b.meta.step, b.meta.epoch, b.meta.metrics)
    manager.close()


def test_async_write_error_surfaces_at_wait_and_previous_checkpoints_survive(ckpt_dir, monkeypatch, h):
    model, _ = _training_state()
    manager = CheckpointManager(ckpt_dir)
    good = manager.save(step=1, epoch=0, model=model)

    def disk_full(path, tensors):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fmt, "_save_tensors", disk_full)
    handle = manager.save_async(step=2, epoch=0, model=model)
    with pytest.raises(
        CheckpointError,
        match="cannot write checkpoint .*ckpt-000000002: No space left on device — previous checkpoints are intact",
    ):
        handle.wait()
    monkeypatch.undo()
    assert _steps(manager) == [1] and manager.verify(good) == []
    assert manager.save(step=3, epoch=0, model=model).name == "ckpt-000000003"  # seen at wait(): not raised again


def test_an_unseen_async_failure_is_raised_by_the_next_save(ckpt_dir, monkeypatch, h):
    model, _ = _training_state()
    manager = CheckpointManager(ckpt_dir)
    monkeypatch.setattr(
        fmt, "_save_tensors", lambda path, tensors: (_ for _ in ()).throw(OSError(13, "Permission denied"))
    )
    manager.save_async(step=1, epoch=0, model=model)
    manager.wait_quietly()
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match=r"previous asynchronous save \(step 1\) failed: .*Permission denied"):
        manager.save_async(step=2, epoch=0, model=model)
    assert manager.save_async(step=3, epoch=0, model=model).wait().name == "ckpt-000000003"


def test_next_save_waits_for_the_write_in_flight(ckpt_dir, monkeypatch, h):
    model, _ = _training_state()
    manager = CheckpointManager(ckpt_dir)
    release = threading.Event()
    original = fmt._write_bytes

    def slow(path, data):
        if path.name == "manifest.json" and "000000001" in path.parent.name:
            release.wait(5)
        return original(path, data)

    monkeypatch.setattr(fmt, "_write_bytes", slow)
    first = manager.save_async(step=1, epoch=0, model=model)
    assert not first.done()  # its manifest write waits for `release`
    joined_in_flight = []
    join = manager._join

    def join_then_release():
        # The second save has reached its wait for the first: only now may the first finish.
        joined_in_flight.append(not first.done())
        release.set()
        join()

    monkeypatch.setattr(manager, "_join", join_then_release)
    second = manager.save_async(step=2, epoch=0, model=model)
    assert joined_in_flight[:1] == [True] and first.done() and second.blocked_seconds > 0
    manager.close()
    assert second.done() and _steps(manager) == [1, 2]


def test_a_second_manager_never_deletes_a_write_in_progress(ckpt_dir, monkeypatch, h):
    model, _ = _training_state()
    writer = CheckpointManager(ckpt_dir)
    release = threading.Event()
    original = fmt._write_bytes

    def slow(path, data):
        if path.name == "manifest.json":
            release.wait(5)
        return original(path, data)

    monkeypatch.setattr(fmt, "_write_bytes", slow)
    handle = writer.save_async(step=1, epoch=0, model=model)
    deadline = time.monotonic() + 5
    while not list(ckpt_dir.glob(".tmp-ckpt-*/meta.json")) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert list(ckpt_dir.glob(".tmp-ckpt-*"))  # the write is in flight
    reader = CheckpointManager(ckpt_dir)  # e.g. `trainengine checkpoints list` while training runs
    assert list(ckpt_dir.glob(".tmp-ckpt-*")) and reader.list_checkpoints() == []
    release.set()
    assert handle.wait().name == "ckpt-000000001" and writer.verify(handle.path) == []


def test_checkpoint_step_folders_are_written_listed_pruned_and_resumed_from(tmp_path):
    """checkpointing.folder_name checkpoint_step (seed 001's outputs/<exp>/checkpoint_step_<N>)."""
    from trainengine.engine import resolve_resume

    mgr = CheckpointManager(tmp_path, keep_best_k=0, keep_last_n=2, folder_name="checkpoint_step")
    model = nn.Linear(2, 1)
    for step in (5, 10, 1000):
        path = mgr.save(step=step, epoch=0, model=model, metrics={"val/loss": 1.0 / step})
        assert path.name == f"checkpoint_step_{step}"
    assert sorted(p.name for p in tmp_path.glob("checkpoint_step_*")) == ["checkpoint_step_10", "checkpoint_step_1000"]
    assert [info.step for info in mgr.list_checkpoints()] == [10, 1000]
    # A manager of the other style reads them too, and resume accepts the folder itself.
    assert [info.step for info in CheckpointManager(tmp_path, read_only=True).list_checkpoints()] == [10, 1000]
    ckpt, _ = resolve_resume(None, str(tmp_path / "checkpoint_step_1000"))
    assert ckpt == tmp_path / "checkpoint_step_1000"
    assert read_checkpoint(ckpt).meta.step == 1000
    with pytest.raises(ConfigError, match="folder_name"):
        CheckpointManager(tmp_path, folder_name="step")  # type: ignore[arg-type]  # the wrong value is the test
