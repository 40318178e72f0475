"""Pruning stops real runs early through the Trainer's own stop decision; the runs are marked pruned."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from trainengine.assembly import Trainer
from trainengine.config import TrainingConfig, TrainingConfigBuilder
from trainengine.engine import build_from_config
from trainengine.tracking import ExperimentDB
from trainengine.tune import PRUNED, PruningCallback, build_pruner, tune

MAX_STEPS, EVAL_EVERY = 10, 2


def tiny(tmp_path: Path, *, write_run_dir: bool = True) -> TrainingConfig:
    return (
        TrainingConfigBuilder.quick_prototype()
        .with_data(dataset="digits", max_train_samples=160, max_val_samples=64)
        .with_training(max_steps=MAX_STEPS, eval_interval_steps=EVAL_EVERY, eval_every_epoch=False)
        .with_tracking(
            progress="off", output_dir=str(tmp_path / "runs"), experiment_name="exp", write_run_dir=write_run_dir
        )
        .with_monitoring(profile_data=False)
        .build()
    )


def _train(config: TrainingConfig, callback: PruningCallback) -> dict:
    built = build_from_config(config)
    trainer = Trainer(built.model, built.model_config, config, built.task_spec, callbacks=[callback])
    return trainer.train(built.splits.train, built.splits.val)


def test_the_callback_reports_every_evaluation_and_stops_the_loop_when_pruned(tmp_path):
    config = tiny(tmp_path, write_run_dir=False)
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    kept = PruningCallback(study.ask(), "val/accuracy")
    results = _train(config, kept)
    assert results["steps"] == MAX_STEPS and results["stop_reason"] is None and not kept.pruned
    reported = study.trials[0].intermediate_values
    assert sorted(reported) == list(range(EVAL_EVERY, MAX_STEPS + 1, EVAL_EVERY))  # one value per evaluation
    assert reported[MAX_STEPS] == pytest.approx(results["final_metrics"]["val/accuracy"])

    # A pruner that prunes at once (accuracy can never reach 1.01): the run stops at its first evaluation.
    doomed = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=1.01)).ask()
    cut = PruningCallback(doomed, "val/accuracy")
    results = _train(config, cut)
    assert results["steps"] == EVAL_EVERY and results["stop_reason"] == PRUNED and results["stopped_early"]
    assert cut.pruned_at_step == EVAL_EVERY and cut.reports == 1


def test_median_pruning_stops_bad_trials_early_and_marks_their_runs_pruned(tmp_path):
    # Two learning rates: 0.05 learns, 1e-6 stays at chance. The trials' order is fixed by queueing them
    # in the study's storage before tune() continues it. Every trial starts from the same weights and
    # data order, so the good trials are identical (never below their own median) and the bad ones fall below.
    storage, order = f"sqlite:///{tmp_path / 'prune.db'}", [0.05, 0.05, 1e-6, 0.05, 1e-6]
    queued = optuna.create_study(storage=storage, study_name="prune", direction="maximize")
    for lr in order:
        queued.enqueue_trial({"training.learning_rate": lr})
    space = {"training.learning_rate": {"type": "categorical", "choices": [0.05, 1e-6]}}
    result = tune(
        tiny(tmp_path),
        space,
        n_trials=len(order),
        storage=storage,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
        study_name="prune",
    )
    assert [t["params"]["training.learning_rate"] for t in result.trials] == order
    pruned = [t for t in result.trials if t["state"] == "pruned"]
    complete = [t for t in result.trials if t["state"] == "complete"]
    assert [t["number"] for t in pruned] == [2, 4] and result.num_pruned == 2
    # Steps are counted from the runs themselves: pruned runs stopped at their first evaluation.
    for t in pruned:
        facts = json.loads((Path(t["run_dir"]) / "run.json").read_text(encoding="utf-8"))
        assert facts["status"] == "pruned" and facts["results"]["steps"] == t["steps"] == t["pruned_at_step"]
        assert t["steps"] == EVAL_EVERY
    assert [t["steps"] for t in complete] == [MAX_STEPS] * 3
    assert result.total_steps == 3 * MAX_STEPS + 2 * EVAL_EVERY  # vs 5 * MAX_STEPS unpruned
    assert result.best_params == {"training.learning_rate": 0.05}
    # Optuna holds them as PRUNED with the value they reported; the ExperimentDB as pruned children.
    states = {t.number: t for t in result.study.trials}
    assert all(states[t["number"]].state == optuna.trial.TrialState.PRUNED for t in pruned)
    assert all(list(states[t["number"]].intermediate_values) == [EVAL_EVERY] for t in pruned)
    db = ExperimentDB(str(tmp_path / "runs" / "experiments.db"))
    try:
        rows = {r["run_name"]: r["status"] for r in db.get_children(_parent(result))}
    finally:
        db.close()
    assert all(rows[Path(t["run_dir"]).name] == PRUNED for t in pruned)
    assert all(rows[Path(t["run_dir"]).name] == "completed" for t in complete)


def _parent(result) -> int:
    return json.loads((result.study_dir / "run.json").read_text(encoding="utf-8"))["group"]["db_run_id"]


def test_named_pruners_are_optunas():
    assert isinstance(build_pruner("median"), optuna.pruners.MedianPruner)
    assert isinstance(build_pruner("hyperband"), optuna.pruners.HyperbandPruner)
    assert isinstance(build_pruner("none"), optuna.pruners.NopPruner)
