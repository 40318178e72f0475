"""The Trainer's wiring: the checkpointer as an owned component, the assembled defaults, event order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainengine import TaskSpec, TrainingConfigBuilder
from trainengine import Trainer as PublicTrainer
from trainengine.assembly import Trainer as AssembledTrainer
from trainengine.assembly import build_callbacks
from trainengine.engine import EVENTS, Checkpointer, EarlyStopping
from trainengine.engine import Trainer as EngineTrainer
from trainengine.models import MLP

CLS3 = TaskSpec.classification("blobs", num_classes=3)


def test_checkpoint_paths_reach_run_json_and_the_export_lineage(tmp_path):
    """Regression (issue 9): with checkpointing and export both on, run.json and the bundle name the checkpoint."""
    from trainengine.data import load_builtin

    config = (
        TrainingConfigBuilder()
        .with_training(max_steps=6, batch_size=32, device="cpu", eval_interval_steps=3)
        .with_checkpointing(enabled=True, save_every_n_steps=3, save_every_n_epochs=None)
        .with_export(enabled=True, formats=["pytorch"], output_dir=str(tmp_path / "exports"))
        .with_tracking(output_dir=str(tmp_path / "runs"), progress="off", experiment_db=False)
        .build()
    )
    splits = load_builtin("digits", max_train_samples=192, max_val_samples=64)
    trainer = PublicTrainer(MLP(64, 10, hidden_dims=(16,)), None, config, TaskSpec.classification("digits", 10))
    results = trainer.train(splits.train, splits.val)

    last, best = trainer.checkpointer.last_path, trainer.checkpointer.best_path
    assert last is not None and last.name.endswith("000000006") and last.is_dir()
    assert best is not None and best.parent == last.parent
    assert (results["last_checkpoint"], results["best_checkpoint"]) == (str(last), str(best))
    run = json.loads((Path(results["run_dir"]) / "run.json").read_text())
    assert run["results"]["last_checkpoint"] == str(last)
    assert run["results"]["best_checkpoint"] == str(best)
    manifest = json.loads((Path(results["export_dir"]) / "manifest.json").read_text())
    assert manifest["lineage"]["checkpoint"] == str(best)
    assert run["results"]["export_dir"] == results["export_dir"]


def test_engine_trainer_builds_no_tracking_or_export_objects(make_config, blobs):
    cfg = make_config(max_steps=4).with_tracking(progress="bar").with_export(enabled=True).build()
    assert cfg.tracking.write_run_dir and cfg.tracking.experiment_db  # the defaults would add callbacks
    trainer = EngineTrainer(MLP(4, 3), None, cfg, CLS3)
    results = trainer.train(blobs[0], blobs[1])
    assert trainer.callbacks.callbacks == []
    assert results["run_dir"] is None and "export_dir" not in results
    assert not Path(cfg.tracking.output_dir).exists()  # nothing written: no run directory, no DB


def test_public_trainer_is_the_assembled_one_with_defaults_first(make_config, blobs):
    assert PublicTrainer is AssembledTrainer and issubclass(AssembledTrainer, EngineTrainer)

    class Mine:
        def on_train_end(self, trainer, results):
            pass

    mine = Mine()
    cfg = make_config(max_steps=2).with_monitoring(gradient_monitor=True).build()
    trainer = PublicTrainer(MLP(4, 3), None, cfg, CLS3, callbacks=[mine])
    trainer.train(blobs[0], blobs[1])
    names = [type(cb).__name__ for cb in trainer.callbacks.callbacks]
    assert names == [type(cb).__name__ for cb in build_callbacks(cfg)] + ["Mine"]
    assert names[:2] == ["RunDirectory", "ExperimentDBCallback"] and "GradientMonitor" in names
    assert trainer.gradient_monitor is trainer.callbacks.callbacks[names.index("GradientMonitor")]


def test_checkpointer_is_owned_not_a_callback(make_config, blobs):
    cfg = make_config(max_steps=4).with_checkpointing(save_every_n_steps=2, save_every_n_epochs=None).build()
    trainer = EngineTrainer(MLP(4, 3), None, cfg, CLS3)
    assert isinstance(trainer.checkpointer, Checkpointer)
    saved = []

    class Seen:
        def on_checkpoint(self, trainer, info):
            saved.append(info["step"])

    trainer.add_callbacks([Seen()])
    with pytest.raises(Exception, match="checkpointing needs a folder"):
        trainer.train(blobs[0], blobs[1])  # the bare engine has no run directory to put them in
    cfg = (
        make_config(max_steps=4)
        .with_checkpointing(
            save_every_n_steps=2, save_every_n_epochs=None, checkpoint_dir=str(Path(cfg.tracking.output_dir) / "ck")
        )
        .build()
    )
    trainer = EngineTrainer(MLP(4, 3), None, cfg, CLS3, callbacks=[Seen()])
    results = trainer.train(blobs[0], blobs[1])
    assert saved == [2, 4] and trainer.checkpointer not in trainer.callbacks.callbacks
    assert results["last_checkpoint"] == str(trainer.checkpointer.last_path)
    # Without checkpointing or an emergency policy there is no checkpointer at all.
    off = (
        make_config(max_steps=1)
        .with_checkpointing(enabled=False, save_on_interrupt=False)
        .with_tracking(write_run_dir=False)
        .build()
    )
    assert EngineTrainer(MLP(4, 3), None, off, CLS3).checkpointer is None


class Recorder:
    """Records every event the Trainer fires, with the step it fired at."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []
        for event in EVENTS:
            setattr(self, event, self._make(event))

    def _make(self, event):
        return lambda trainer, *args: self.events.append((event, trainer.state.step))


def documented_order(*, epochs, steps_per_epoch, log_every, eval_every, save_every, save_every_epochs):
    """The event sequence docs/trainer.md describes, written from the docs (not from the code)."""
    total, step, logged, events = epochs * steps_per_epoch, 0, 0, ["on_train_start"]

    def save():
        nonlocal logged
        if logged != step:
            events.append("on_log")  # a checkpoint flushes the logging window first
            logged = step
        events.append("on_checkpoint")

    for epoch in range(epochs):
        events.append("on_epoch_start")
        for _ in range(steps_per_epoch):
            step += 1
            events += ["on_before_optimizer_step", "on_step_end"]  # the optimizer step is done
            if step % log_every == 0:
                events.append("on_log")  # the train record
                logged = step
            evaluated = step % eval_every == 0 and step < total  # the last step's eval is the final one
            if evaluated:
                events += ["on_log", "on_eval_end"]
            saved = step % save_every == 0
            if saved:
                save()
        if not evaluated:
            events += ["on_log", "on_eval_end"]  # the epoch's evaluation
        events.append("on_epoch_end")
        if (epoch + 1) % save_every_epochs == 0 and not saved:
            save()  # once per step: not again when the step just saved
    return events + (["on_log"] if logged != step else []) + ["on_train_end"]


def test_events_fire_in_the_documented_order(make_config, blobs):
    # 160 samples / batch 32 = 5 steps per epoch; log every 2, evaluate every 3, save every 2 steps and every epoch.
    cfg = (
        make_config(epochs=2, batch_size=32, log_interval_steps=2, eval_interval_steps=3)
        .with_checkpointing(save_every_n_steps=2, save_every_n_epochs=1)
        .with_tracking(experiment_db=False)
        .build()
    )
    rec = Recorder()
    PublicTrainer(MLP(4, 3), None, cfg, CLS3, callbacks=[rec]).train(blobs[0], blobs[1])
    names = [e for e, _ in rec.events]
    assert names == documented_order(
        epochs=2, steps_per_epoch=5, log_every=2, eval_every=3, save_every=2, save_every_epochs=1
    )
    # EVENTS lists them in that order: one step's events, then the epoch's, then the run's.
    one_step = ["on_before_optimizer_step", "on_step_end", "on_log", "on_eval_end", "on_checkpoint"]
    assert sorted(one_step, key=EVENTS.index) == one_step
    assert EVENTS.index("on_epoch_start") < EVENTS.index("on_before_optimizer_step") and EVENTS.index(
        "on_eval_end"
    ) < EVENTS.index("on_epoch_end") < EVENTS.index("on_checkpoint") < EVENTS.index("on_train_end")
    assert "on_exception" not in names


def test_stop_is_decided_once_per_step(make_config, blobs, monkeypatch):
    from trainengine.engine import Runtime

    asked = []
    monkeypatch.setattr(Runtime, "any_rank", lambda self, flag: asked.append(flag) or flag)
    cfg = make_config(max_steps=6).with_tracking(write_run_dir=False).build()
    EngineTrainer(MLP(4, 3), None, cfg, CLS3).train(blobs[0], blobs[1])
    # 10 steps per epoch, 6 planned: one decision before the loop, then one per step.
    assert len(asked) == 1 + 6


def test_early_stopping_from_the_config_is_engine_logic(make_config, blobs):
    cfg = (
        make_config(epochs=10, early_stopping_patience=2, early_stopping_min_delta=1.0)
        .with_tracking(write_run_dir=False)
        .build()
    )
    trainer = EngineTrainer(MLP(4, 3), None, cfg, CLS3)
    results = trainer.train(blobs[0], blobs[1])
    assert results["stopped_early"] and results["epochs"] == 3.0
    assert not any(isinstance(cb, EarlyStopping) for cb in trainer.callbacks.callbacks)
    assert results["stop_reason"].startswith("early stopping: val/accuracy did not improve for 2 evaluation(s)")
