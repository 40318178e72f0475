"""Parallel workers: one storage, a shared exact budget, distinct trials, and a killed study that resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from trainengine import TrainingConfigBuilder
from trainengine.cli.main import main
from trainengine.errors import ConfigError
from trainengine.tracking import ExperimentDB
from trainengine.tune import open_storage, tune, tune_parallel, used_budget, worker_seed
from trainengine.tune._workers import _Budget, _Gated, _Stopper

REPO = Path(__file__).resolve().parents[2]
SPACE = {"training.learning_rate": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}}


def _config(tmp_path: Path, max_steps: int = 20):
    return (
        TrainingConfigBuilder.quick_prototype()
        .with_data(dataset="digits", max_train_samples=256, max_val_samples=64)
        .with_training(max_steps=max_steps, eval_interval_steps=10, eval_every_epoch=False, batch_size=32)
        .with_tracking(progress="off", output_dir=str(tmp_path), experiment_name="w")
        .build()
    )


def _race(url: str, n_trials: int, num_threads: int) -> optuna.Study:
    """``num_threads`` workers (threads here, each with its own storage connection) racing for one budget."""
    optuna.create_study(storage=open_storage(url), study_name="race")
    lock = threading.Lock()

    def objective(trial: optuna.Trial) -> float:
        time.sleep(0.01)  # long enough for the others to finish a trial meanwhile
        return trial.suggest_float("x", 0.0, 1.0)

    def worker(index: int) -> None:
        sampler = optuna.samplers.RandomSampler(seed=worker_seed(0, index, 0))
        study = optuna.load_study(study_name="race", storage=open_storage(url), sampler=sampler)
        budget = _Budget(n_trials, lock)
        if budget.acquire(study):
            try:
                study.optimize(_Gated(objective, budget, index, _Stopper()), callbacks=[budget.after_trial])
            finally:
                budget.release()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(num_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return optuna.load_study(study_name="race", storage=open_storage(url))


def test_the_shared_budget_is_exact_when_workers_race(tmp_path):
    study = _race(f"sqlite:///{tmp_path / 'race.db'}", n_trials=13, num_threads=4)
    trials = study.get_trials()
    # Exactly the budget: no worker created a trial after another had used the last one.
    assert len(trials) == 13 and used_budget(study) == 13
    assert sorted(t.number for t in trials) == list(range(13))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.params["x"] for t in trials}) == 13  # distinct draws: the workers' samplers differ
    assert len({t.user_attrs["worker"]["index"] for t in trials}) > 1  # several workers took part


@pytest.mark.slow
def test_workers_share_a_postgresql_storage(tmp_path, postgres_url):
    result = tune_parallel(
        _config(tmp_path, max_steps=10), SPACE, 3, workers=2, sampler="random", pruner="none", storage=postgres_url
    )
    stored = optuna.load_study(study_name=result.study_name, storage=postgres_url).get_trials()
    assert sorted(t.number for t in stored) == [0, 1, 2]
    assert all(t.state == TrialState.COMPLETE for t in stored)
    assert len({t.params["training.learning_rate"] for t in stored}) == 3


_KILLED_RUN = textwrap.dedent(
    """
    import sys
    from trainengine.config import TrainingConfig
    from trainengine.tune import tune_parallel

    cfg = TrainingConfig.load(sys.argv[1])
    tune_parallel(cfg, sys.argv[2], 8, workers=2, sampler="random", pruner="none", seed=1)
    """
)


@pytest.mark.parametrize("moment", ["budget released", "worker recorded"])
def test_a_signal_between_trial_creation_and_objective_fails_that_trial_at_once(tmp_path, monkeypatch, moment):
    """SIGTERM after Optuna created the trial and before the objective runs: the trial ends FAILED
    at once (not left RUNNING, not trained to its end while the command waits to stop it)."""
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 's.db'}"), study_name="s")
    stopper = _Stopper()
    stopper.study = study
    budget = _Budget(5, threading.Lock(), stopper)

    def signal_once() -> None:
        if not stopper.requested:
            stopper.handle(signal.SIGTERM, None)

    if moment == "budget released":
        release = budget.release
        monkeypatch.setattr(budget, "release", lambda: (release(), signal_once()))
    else:
        set_user_attr = optuna.Trial.set_user_attr
        monkeypatch.setattr(optuna.Trial, "set_user_attr", lambda t, k, v: (set_user_attr(t, k, v), signal_once()))
    ran: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        ran.append(trial.number)
        return 0.0

    assert budget.acquire(study)
    with pytest.raises(KeyboardInterrupt):
        study.optimize(_Gated(objective, budget, 0, stopper), callbacks=[budget.after_trial])
    assert not ran  # the objective never started
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL]
    assert not budget.held


@pytest.mark.slow
def test_a_killed_study_continues_where_it_stopped(tmp_path, capsys):
    """Kill the command mid-study; the same study, run again through the CLI with 2 workers, finishes
    its budget: numbers go on, no trial twice, every trial a child run of the study."""
    config, space = tmp_path / "base.yaml", tmp_path / "space.yaml"
    _config(tmp_path, max_steps=150).save(config)  # long enough trials: the kill lands mid-study
    space.write_text(yaml.safe_dump(SPACE))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_RUN, str(config), str(space)], env=env)
    study_dir = tmp_path / "w" / "tune-w"
    url = f"sqlite:///{(study_dir / 'study.db').resolve()}"
    deadline = time.monotonic() + 90
    done: list[optuna.trial.FrozenTrial] = []
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.3)
        if not (study_dir / "run.json").is_file():  # the study is created before its run.json is written
            continue
        done = optuna.load_study(study_name="tune-w", storage=url).get_trials(states=(TrialState.COMPLETE,))
        if len(done) >= 2:
            break
    assert proc.poll() is None and len(done) >= 2, "the first run should still be running with 2 trials done"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) != 0
    before = {t.number: t for t in optuna.load_study(study_name="tune-w", storage=url).get_trials()}
    running = [(t.number, t.params, t.user_attrs) for t in before.values() if t.state == TrialState.RUNNING]
    assert not running  # the workers stopped with the command
    assert json.loads((study_dir / "run.json").read_text())["status"] == "interrupted"
    assert len(before) < 8

    code = main(["tune", "--config", str(config), "--space", str(space), "--trials", "8", "--workers", "2",
                 "--sampler", "random", "--pruner", "none"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "8 / 8 trials" in out and "trial-0007" in out  # the live table's last state

    trials = {t.number: t for t in optuna.load_study(study_name="tune-w", storage=url).get_trials()}
    assert sorted(trials) == list(range(8))  # numbers go on from the first run's: no gap, no repeat
    assert all(trials[n].params == t.params for n, t in before.items())  # the first run's trials are kept
    new = [trials[n] for n in range(len(before), 8)]
    assert all(t.state == TrialState.COMPLETE for t in new)  # the budget was the study's total: 8 in all
    lrs = [t.params["training.learning_rate"] for t in trials.values() if t.params]  # none: stopped before sampling
    assert len(set(lrs)) == len(lrs) >= 8 - 2
    pids = {t.user_attrs["worker"]["pid"] for t in new}
    assert os.getpid() not in pids and (len(pids) == 2 or len(new) == 1)  # both worker processes ran trials
    facts = json.loads((study_dir / "run.json").read_text())
    assert facts["status"] == "completed" and facts["group"]["workers"] == 2
    db = ExperimentDB(str(tmp_path / "experiments.db"))
    try:
        children = db.get_children(facts["group"]["db_run_id"])
    finally:
        db.close()
    names = {c["run_name"] for c in children}  # a trial interrupted before its run started has none
    assert {f"trial-{n:04d}" for n, t in trials.items() if t.state == TrialState.COMPLETE} <= names
    assert names <= {f"trial-{n:04d}" for n in range(8)}


def test_workers_need_a_sampler_and_pruner_by_name(tmp_path):
    """Objects and callbacks do not cross processes: refused before any study or folder exists."""
    cfg = _config(tmp_path)
    for bad in ({"sampler": optuna.samplers.RandomSampler()}, {"pruner": optuna.pruners.NopPruner()},
                {"callbacks": [object()]}):  # fmt: skip
        with pytest.raises(ConfigError, match="by name"):
            tune(cfg, SPACE, 2, workers=2, **bad)
    with pytest.raises(ConfigError, match="workers must be"):
        tune(cfg, SPACE, 2, workers=0)
    assert not (tmp_path / "w").exists()
