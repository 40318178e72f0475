"""Seed 000's hand-written Optuna objective around ``Trainer``, and the reused-model warning.

The seed's objective ("Hyperparameter Tuning Best Practices", 1.) runs with only its imports and
its data changed: the fluent chain is wrapped in parentheses (the seed prints it over several
lines without them, which is not valid Python), and ``model``, ``task_spec`` and the data are
the digits MLP from the seed's "Training best practices" section. The seed builds ``model`` once,
outside the objective, so every trial after the first starts from the weights of the trials
before it: the Trainer warns about exactly that, naming the fix.
"""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path

import optuna
import pytest
import torch
import yaml

from trainengine import TaskSpec, Trainer, TrainingConfigBuilder
from trainengine.data import load_builtin
from trainengine.engine import Trainer as EngineTrainer
from trainengine.models import MLP

FIX = "build a fresh model inside the objective"


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the seed's runs land in ./runs of the test's own folder


@pytest.fixture(autouse=True)
def _quiet_optuna():
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    optuna.logging.set_verbosity(level)


@pytest.fixture(scope="module")
def digits():
    # 48 training samples: at the seed's batch sizes (4..32) an epoch is 2..12 steps.
    splits = load_builtin("digits", max_train_samples=48, max_val_samples=48)
    return splits.train, splits.val


def _trial_configs(root: Path) -> list[dict]:
    return [yaml.safe_load(p.read_text()) for p in sorted(root.glob("runs/*/*/config.yaml"))]


def _reuse_warnings(record) -> list[warnings.WarningMessage]:
    return [w for w in record if issubclass(w.category, UserWarning) and "already trained" in str(w.message)]


def test_seed_objective_runs_as_written_and_warns_on_the_reused_model(digits, tmp_path):
    train_data, val_data = digits
    model = MLP(64, 10)
    model_config = None
    task_spec = TaskSpec.classification(name="digits", num_classes=10)

    # --- seed 000, as written (the chain parenthesised; n_trials 20 -> 2: each trial is ~1.4 s)
    def objective(trial):
        config = (
            TrainingConfigBuilder.baseline()
            .with_training(
                learning_rate=trial.suggest_float("lr", 1e-5, 1e-3, log=True),
                batch_size=trial.suggest_int("batch", 4, 32, step=4),
                epochs=10,
            )
            .build()
        )

        trainer = Trainer(model, model_config, config, task_spec)
        results = trainer.train(train_data, val_data)

        return results["best_val_loss"]

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        study = optuna.create_study(direction="minimize")
        study.optimize(objective, n_trials=2)

        print(f"Best: {study.best_value:.4f}")
        print(f"Params: {study.best_params}")
    # --- end of the seed's code

    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert set(study.best_params) == {"lr", "batch"} and math.isfinite(study.best_value)
    # Each trial really trained with its sampled values: the run folders' resolved configs hold them.
    configs = _trial_configs(tmp_path)
    assert sorted((c["training"]["learning_rate"], c["training"]["batch_size"]) for c in configs) == sorted(
        (t.params["lr"], t.params["batch"]) for t in study.trials
    )
    # Trial 0 got the fresh model; trial 1 got the one trial 0 trained, and was told so at the
    # seed's own `trainer.train(...)` line, with the fix.
    reused = _reuse_warnings(record)
    assert len(reused) == 1
    assert all(FIX in str(w.message) and w.filename == __file__ for w in reused)


def test_the_fix_a_fresh_model_per_trial_gives_independent_trials(digits):
    train_data, val_data = digits
    task_spec = TaskSpec.classification(name="digits", num_classes=10)

    def objective(trial):
        config = (
            TrainingConfigBuilder.quick_prototype()
            .with_training(learning_rate=trial.suggest_float("lr", 1e-3, 1e-2, log=True), batch_size=16, epochs=2)
            .with_tracking(write_run_dir=False, progress="off")
            .build()
        )
        torch.manual_seed(0)  # the same initial weights in every trial: only the sampled value differs
        model = MLP(64, 10)  # the fix: a fresh model inside the objective
        return Trainer(model, None, config, task_spec).train(train_data, val_data)["best_val_loss"]

    study = optuna.create_study(direction="minimize")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        # The same learning rate twice: fresh models give the same value; a reused one would not.
        study.enqueue_trial({"lr": 3e-3})
        study.enqueue_trial({"lr": 3e-3})
        study.optimize(objective, n_trials=2)
    assert _reuse_warnings(record) == []
    assert study.trials[0].value == study.trials[1].value


def _quick(max_steps: int = 2, **tracking):
    return (
        TrainingConfigBuilder.quick_prototype()
        .with_training(max_steps=max_steps, batch_size=16)
        .with_tracking(progress="off", **({"write_run_dir": False} | tracking))
        .build()
    )


def test_warning_only_for_a_model_an_earlier_trainer_trained(digits):
    train_data, val_data = digits
    task = TaskSpec.classification(name="digits", num_classes=10)
    model = MLP(64, 10)
    trainer = EngineTrainer(model, None, _quick(), task)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        trainer.train(train_data, val_data)  # a fresh model
        trainer.train(train_data, val_data)  # the same trainer again: its own training, no "earlier" one
    assert _reuse_warnings(record) == []

    # Another Trainer, and a copy of the trained model (its weights are the trained ones too).
    for again in (model, copy.deepcopy(model)):
        with pytest.warns(UserWarning, match=FIX) as caught:
            EngineTrainer(again, None, _quick(), task).train(train_data, val_data)
        assert caught[0].filename == __file__  # points at the caller's train() line

    # Weights loaded on purpose (a checkpoint, a state dict) are not an accident: no warning.
    model.load_state_dict(copy.deepcopy(model.state_dict()))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        EngineTrainer(model, None, _quick(), task).train(train_data, val_data)
    assert _reuse_warnings(record) == []


def test_no_warning_when_a_checkpoint_replaces_the_weights(digits, tmp_path):
    train_data, val_data = digits
    task = TaskSpec.classification(name="digits", num_classes=10)
    model = MLP(64, 10)
    config = _quick(output_dir=str(tmp_path / "runs"), write_run_dir=True)
    config.checkpointing.enabled = True
    config.checkpointing.save_every_n_steps = 2
    first = Trainer(model, None, config, task).train(train_data, val_data)
    assert first["last_checkpoint"] is not None

    more = config.model_copy(deep=True)
    more.training.max_steps = 4
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        resumed = Trainer(model, None, more, task).train(train_data, val_data, resume_from=first["last_checkpoint"])
    assert _reuse_warnings(record) == [] and resumed["steps"] == 4
