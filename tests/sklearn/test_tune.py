"""tune_pipeline: an Optuna study over a Pipeline's own parameters, with tune()'s storage and report conventions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

pytest.importorskip("optuna")

from trainengine.errors import ConfigError
from trainengine.sklearn import load_pipeline_space, tune_pipeline
from trainengine.tracking import ExperimentDB

SPACE = {"classifier__learning_rate": {"type": "float", "low": 1e-4, "high": 1.0, "log": True}}


def test_the_search_finds_a_better_learning_rate_and_records_it(credit, config, make_pipeline):
    pipe = make_pipeline(n_estimators=5)  # few trees: the learning rate decides between a guess and a model
    result = tune_pipeline(
        pipe, SPACE, 4, credit, target="approved", config=config, cv=3, sampler="random", study_name="lr"
    )

    values = [t["values"][0] for t in result.trials if t["state"] == "complete"]
    assert result.best_value == max(values) and result.best_value > min(values) + 0.05
    best_lr = result.best_params["classifier__learning_rate"]
    assert result.best_estimator.get_params()["classifier__learning_rate"] == best_lr
    assert result.objectives == ["val/accuracy"] and result.directions == ["maximize"]

    study = Path(config.tracking.output_dir) / "credit" / "lr"
    assert yaml.safe_load((study / "best_params.yaml").read_text()) == {"classifier__learning_rate": best_lr}
    assert yaml.safe_load((study / "space.yaml").read_text()) == {
        "classifier__learning_rate": {"type": "float", "low": 1e-4, "high": 1.0, "log": True}
    }
    summary = json.loads((study / "study_summary.json").read_text())
    assert summary["best_params"] == result.best_params and summary["num_trials"] == 4
    facts = json.loads((study / "run.json").read_text())
    assert facts["status"] == "completed" and facts["group"]["kind"] == "tune" and facts["group"]["num_children"] == 4
    trial = json.loads((study / f"trial-{result.best_trial:04d}" / "run.json").read_text())
    assert trial["model"]["params"]["classifier__learning_rate"] == best_lr
    assert trial["results"]["best_metric"] == pytest.approx(result.best_value)

    db = ExperimentDB(str(Path(config.tracking.output_dir) / "experiments.db"))
    try:
        parent = db.get_run(facts["group"]["db_run_id"])
        children = db.get_children(parent["run_id"])
        assert parent["group_kind"] == "tune" and len(children) == 4
        assert all("classifier__learning_rate" in c["config"]["sklearn"]["params"] for c in children)
    finally:
        db.close()

    # Continued with a larger budget: one more trial, the study's numbering goes on.
    more = tune_pipeline(
        pipe, SPACE, 5, credit, target="approved", config=config, cv=3, sampler="random", study_name="lr"
    )
    assert [t["number"] for t in more.trials] == list(range(5))


def test_the_space_is_checked_against_the_estimator_before_any_trial(make_pipeline):
    with pytest.raises(ConfigError) as err:
        load_pipeline_space(
            {
                "classifier": {"learning_rat": {"type": "float", "low": 0.01, "high": 0.3}},
                "classifier__max_depth": {"type": "int", "low": 0, "high": 3},
                "classifier__loss": {"type": "categorical", "choices": ["log_loss", "hinge"]},
                "classifier__subsample": {"type": "float", "low": 0.9, "high": 0.5},
            },
            make_pipeline(),
        )
    text = str(err.value)
    assert "(4 problems)" in text and "did you mean classifier__learning_rate" in text
    assert "low 0 is refused by GradientBoostingClassifier" in text and "choice 'hinge'" in text
    assert "low (0.9) is greater than high (0.5)" in text
