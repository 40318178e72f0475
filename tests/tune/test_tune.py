"""tune(): real tiny studies on digits — child runs, the study's files, resuming, objectives, Pareto front."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from trainengine.config import TrainingConfig, TrainingConfigBuilder
from trainengine.errors import ConfigError
from trainengine.tracking import ExperimentDB
from trainengine.tune import LATENCY_MS, tune

LR = {"training.learning_rate": {"type": "float", "low": 1e-3, "high": 0.1, "log": True}}


def tiny(tmp_path: Path, *, max_steps: int = 4, **training) -> TrainingConfig:
    return (
        TrainingConfigBuilder.quick_prototype()
        .with_data(dataset="digits", max_train_samples=160, max_val_samples=64)
        .with_training(max_steps=max_steps, eval_interval_steps=2, eval_every_epoch=False, **training)
        .with_tracking(progress="off", output_dir=str(tmp_path / "runs"), experiment_name="exp")
        .with_monitoring(profile_data=False)
        .build()
    )


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_each_trial_is_a_child_run_and_the_study_writes_its_results(tmp_path):
    result = tune(tiny(tmp_path), LR, n_trials=3, sampler="random", study_name="lr")
    study_dir = tmp_path / "runs" / "exp" / "lr"
    assert result.study_dir == study_dir and result.num_trials == 3 and result.objectives == ["val/accuracy"]
    assert result.directions == ["maximize"]  # digits monitors accuracy: the study follows the run's own mode

    # Every trial is an ordinary run directory inside the study's folder, trained with its sampled value.
    runs = [study_dir / f"trial-{i:04d}" for i in range(3)]
    facts = [_json(r / "run.json") for r in runs]
    lrs = [TrainingConfig.load(r / "config.yaml").training.learning_rate for r in runs]
    assert [t["params"]["training.learning_rate"] for t in result.trials] == lrs
    assert all(f["status"] == "completed" for f in facts) and len(set(lrs)) == 3
    # The best value is the best child's own record of its monitored metric.
    best_child = max(facts, key=lambda f: f["results"]["best_metric"])
    assert result.best_value == best_child["results"]["best_metric"]
    assert result.best_trial == int(best_child["run_id"].split("-")[1])

    # best_config.yaml is the base config with the best values: trainable as it is.
    best = TrainingConfig.load(study_dir / "best_config.yaml")
    assert best.training.learning_rate == result.best_params["training.learning_rate"] == lrs[result.best_trial]
    assert best.training.max_steps == 4 and best.tracking.run_name is None
    assert "trainengine train --config" in (study_dir / "best_config.yaml").read_text(encoding="utf-8")

    summary = _json(study_dir / "study_summary.json")
    assert (summary["num_trials"], summary["num_complete"], summary["best_trial"]) == (3, 3, result.best_trial)
    assert summary["total_steps"] == sum(f["results"]["steps"] for f in facts) == 12
    assert set(result.importances["val/accuracy"]) == {"training.learning_rate"}
    assert result.importances["val/accuracy"]["training.learning_rate"] == pytest.approx(1.0)
    for png in ("optimization_history.png", "parallel_coordinates.png"):
        assert (study_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The study is the parent run: on disk and in the ExperimentDB (group_kind tune, 3 children).
    parent = _json(study_dir / "run.json")
    assert parent["status"] == "completed" and parent["group"]["kind"] == "tune"
    assert [c["name"] for c in parent["group"]["children"]] == [r.name for r in runs]
    db = ExperimentDB(str(tmp_path / "runs" / "experiments.db"))
    try:
        row = db.get_run(parent["group"]["db_run_id"])
        children = db.get_children(row["run_id"])
        assert row["group_kind"] == "tune" and row["status"] == "completed"
        assert sorted(c["run_name"] for c in children) == [r.name for r in runs]
        assert all(c["status"] == "completed" for c in children)
    finally:
        db.close()


def test_a_study_continues_from_its_storage(tmp_path):
    cfg = tiny(tmp_path, max_steps=2)
    first = tune(cfg, LR, n_trials=2, sampler="random", study_name="resume")
    assert [t["number"] for t in first.trials] == [0, 1]
    # The same call again: n_trials is the study's total, so there is nothing left to run.
    again = tune(cfg, LR, n_trials=2, sampler="random", study_name="resume")
    assert again.num_trials == 2
    more = tune(cfg, LR, n_trials=4, sampler="random", study_name="resume")
    assert [t["number"] for t in more.trials] == [0, 1, 2, 3]
    study_dir = tmp_path / "runs" / "exp" / "resume"
    assert sorted(p.name for p in study_dir.glob("trial-*")) == [f"trial-{i:04d}" for i in range(4)]
    # The earlier trials were not re-run: their parameters are those of the first call.
    assert [t["params"] for t in more.trials[:2]] == [t["params"] for t in first.trials]
    stored = optuna.load_study(study_name="resume", storage=first.storage)
    assert len(stored.trials) == 4
    parent = _json(study_dir / "run.json")
    assert len(parent["resumes"]) == 2 and parent["status"] == "completed"
    with pytest.raises(ConfigError, match="already exists"):
        tune(cfg, LR, n_trials=5, study_name="resume", load_if_exists=False)


def test_directions_follow_the_metric_and_a_contradiction_is_refused(tmp_path):
    cfg = tiny(tmp_path, max_steps=2)
    with pytest.raises(ConfigError, match="disagrees with the monitored metric val/accuracy"):
        tune(cfg, LR, n_trials=1, direction="minimize", study_name="d1")
    assert not (tmp_path / "runs" / "exp" / "d1").exists()  # refused before anything was made
    # objective_metric: the study minimises val/loss and the trials monitor it.
    result = tune(cfg, LR, n_trials=2, sampler="random", study_name="d2", objective_metric="val_loss")
    assert result.objectives == ["val/loss"] and result.directions == ["minimize"]
    assert result.best_value == min(
        _json(Path(t["run_dir"]) / "run.json")["results"]["best_val_loss"] for t in result.trials
    )
    with pytest.raises(ConfigError, match="val/bleu is not reported by a classification task"):
        tune(cfg, LR, n_trials=1, directions=["val/loss", "val/bleu"], study_name="d3")


def test_multi_objective_reports_the_pareto_front(tmp_path):
    cfg = tiny(tmp_path, max_steps=2)
    space = {
        "model.hidden_dims": {"type": "categorical", "choices": [[8], [2048, 2048, 2048]]},
        "training.learning_rate": {"type": "float", "low": 1e-3, "high": 0.1, "log": True},
    }
    with pytest.raises(ConfigError, match="cannot prune multi-objective"):
        tune(cfg, space, n_trials=1, directions=["val/loss", LATENCY_MS], pruner="median", study_name="mo0")
    result = tune(cfg, space, n_trials=4, directions=["val/loss", LATENCY_MS], sampler="random", study_name="mo")
    assert result.directions == ["minimize", "minimize"] and result.best_value is None
    done = [t for t in result.trials if t["state"] == "complete"]
    assert len(done) == 4 and all(v > 0 for t in done for v in t["values"])
    # The bigger network (~0.5 GFLOP per batch vs ~0.1 MFLOP) is slower: latency is measured on each trial's model.
    fastest: dict[int, float] = {}
    for t in done:
        size = len(t["params"]["model.hidden_dims"])
        fastest[size] = min(fastest.get(size, float("inf")), t["values"][1])
    assert set(fastest) == {1, 3} and fastest[3] > fastest[1]

    # The front is exactly the non-dominated trials (checked here by brute force).
    def dominates(a, b):
        return all(x <= y for x, y in zip(a, b, strict=True)) and a != b

    expected = sorted(
        t["number"] for t in done if not any(dominates(o["values"], t["values"]) for o in done if o is not t)
    )
    assert [row["number"] for row in result.pareto_front] == expected
    saved = _json(result.study_dir / "pareto_front.json")
    assert [row["number"] for row in saved["trials"]] == expected
    assert [o["name"] for o in saved["objectives"]] == ["val/loss", LATENCY_MS]
    assert result.best_trial in expected and (result.study_dir / "best_config.yaml").is_file()


def test_grid_sampler_runs_each_point_once(tmp_path):
    space = {"training.batch_size": {"type": "categorical", "choices": [8, 16, 32]}}
    result = tune(tiny(tmp_path, max_steps=2), space, n_trials=3, sampler="grid", study_name="grid")
    assert sorted(t["params"]["training.batch_size"] for t in result.trials) == [8, 16, 32]


def test_bad_arguments_are_refused_before_any_trial(tmp_path):
    cfg = tiny(tmp_path, max_steps=2)
    with pytest.raises(ConfigError, match="unknown sampler 'tpee' — available: tpe, random, grid, cmaes"):
        tune(cfg, LR, n_trials=1, sampler="tpee")  # type: ignore[arg-type]  # the typo under test
    with pytest.raises(ConfigError, match="unknown pruner 'medain'"):
        tune(cfg, LR, n_trials=1, pruner="medain")  # type: ignore[arg-type]  # the typo under test
    with pytest.raises(ConfigError, match="n_trials must be a whole number >= 1"):
        tune(cfg, LR, n_trials=0)
    with pytest.raises(ConfigError, match="invalid search space"):
        tune(cfg, {"training.lr": {"type": "float", "low": 0.1, "high": 0.2}}, n_trials=1)
    assert not (tmp_path / "runs").exists()
