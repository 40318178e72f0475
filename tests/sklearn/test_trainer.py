"""SklearnTrainer: cross-validation as child runs, the results contract, run.json, logs, the
ExperimentDB, eval_metrics.json and the data forms (DataFrame, (X, y), files with the config's columns)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from trainengine import TaskSpec
from trainengine.errors import ConfigError, DataError
from trainengine.sklearn import SklearnTrainer
from trainengine.tracking import ExperimentDB

# The keys a torch Trainer's results have that a scikit-learn run fills in or sets to None.
TORCH_KEYS = {
    "best_val_loss",
    "best_metric",
    "best_metric_name",
    "best_step",
    "final_metrics",
    "history",
    "steps",
    "epochs",
    "stopped_early",
    "stop_reason",
    "run_dir",
    "samples_per_second",
    "tokens_per_second",
    "mfu",
    "train_time_s",
    "wall_time_s",
    "nonfinite_steps",
    "num_parameters",
    "device",
    "precision",
    "last_checkpoint",
    "best_checkpoint",
}


def test_cv_folds_are_child_runs_with_their_metrics_recorded(credit, config, pipeline):
    train, val = credit.iloc[:180], credit.iloc[180:]
    trainer = SklearnTrainer(pipeline, config=config, cv=3, n_bootstrap=100)
    results = trainer.train(train, target="approved", val_data=val)

    assert set(results) >= TORCH_KEYS
    assert results["best_metric_name"] == "val/accuracy" and 0.5 < results["best_metric"] <= 1.0
    assert results["final_metrics_source"] == "validation" and "val/roc_auc" in results["final_metrics"]
    assert results["fit_time_s"] > 0 and results["cv_fit_time_s"] > 0
    assert results["params"]["classifier__n_estimators"] == 20
    assert results["params"]["classifier__random_state"] == config.training.seed  # seeded: reproducible
    assert results["params"]["preprocessor__num__imputer__missing_values"] == "nan"  # JSON-safe
    assert trainer.estimator_ is not None and trainer.estimator_.predict(val).shape == (60,)

    run = Path(results["run_dir"])
    facts = json.loads((run / "run.json").read_text())
    assert facts["status"] == "completed" and facts["group"]["kind"] == "cv"
    assert [c["name"] for c in facts["group"]["children"]] == ["fold-0", "fold-1", "fold-2"]
    assert facts["group"]["splitter"] == "StratifiedKFold" and sum(facts["group"]["fold_sizes"]) == 180
    assert facts["model"]["class"] == "Pipeline" and facts["model"]["params"]["classifier__max_depth"] == 2
    assert facts["results"]["best_metric"] == pytest.approx(results["best_metric"])
    assert "history" not in facts["results"]
    assert facts["data"]["num_train_samples"] == 180 and len(facts["data"]["train_fingerprint"]) == 64

    summary = json.loads((run / "cv_summary.json").read_text())
    accuracy = summary["metrics"]["val/accuracy"]
    assert summary["kind"] == "cv" and summary["num_children"] == 3
    assert accuracy["mean"] == pytest.approx(results["best_metric"]) and len(accuracy["values"]) == 3
    assert summary["metrics"]["fit_time_s"]["n"] == 3

    for i in range(3):
        fold = json.loads((run / f"fold-{i}" / "run.json").read_text())
        assert fold["status"] == "completed" and fold["fold"] == i
        assert fold["results"]["final_metrics"]["val/accuracy"] == pytest.approx(accuracy["values"][i])
        assert (run / f"fold-{i}" / "config.yaml").is_file()

    records = [json.loads(line) for line in (run / "logs.jsonl").read_text().splitlines()]
    assert [r["type"] for r in records] == ["start", "cv", "cv", "cv", "fit", "onnx", "eval", "end"]

    # Same report schema as evaluate() writes for torch models.
    report = json.loads((run / "eval" / "eval_metrics.json").read_text())
    assert report["schema_version"] == 1 and report["task"] == "classification" and report["n"] == 60
    assert set(report["ci"]) == set(report["overall"]) and report["threshold"]["tuned_on"] == "threshold_data"
    assert report["checkpoint"].endswith("model/model.skops")

    db = ExperimentDB(str(Path(config.tracking.output_dir) / "experiments.db"))
    try:
        parent = db.get_run(facts["group"]["db_run_id"])
        assert parent["group_kind"] == "cv" and parent["status"] == "completed" and parent["num_children"] == 3
        assert parent["config"]["sklearn"]["params"]["classifier__learning_rate"] == 0.1
        assert "val/accuracy/mean" in parent["metrics"] and "val/accuracy" in parent["metrics"]
        children = db.get_children(parent["run_id"], include_metrics=True)
        assert sorted(c["run_name"] for c in children) == ["fold-0", "fold-1", "fold-2"]
        assert all("val/accuracy" in c["metrics"] and "fit_time_s" in c["metrics"] for c in children)
    finally:
        db.close()


def test_regression_from_files_with_the_configs_column_mapping(tmp_path, config):
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(0)
    lines = ["size,rooms,city,note,price"]
    for _ in range(120):
        size, rooms = rng.normal(80, 20), rng.integers(1, 6)
        city = rng.choice(["oslo", "lima", "rome"])
        lines.append(f"{size:.1f},{rooms},{city},x,{1000 + 30 * size + 50 * rooms + rng.normal(0, 5):.1f}")
    (tmp_path / "houses.csv").write_text("\n".join(lines[:101]) + "\n")
    (tmp_path / "test.csv").write_text("\n".join([lines[0], *lines[101:]]) + "\n")
    config.data.train_file = str(tmp_path / "houses.csv")
    config.data.test_file = str(tmp_path / "test.csv")
    config.data.label_column = "price"
    config.data.feature_columns = ["size", "rooms", "city"]  # "note" is left out, as for torch file data
    config.data.cache_dir = str(tmp_path / "cache")
    pre = ColumnTransformer([("num", StandardScaler(), ["size", "rooms"]), ("cat", OneHotEncoder(), ["city"])])
    trainer = SklearnTrainer(Pipeline([("pre", pre), ("reg", Ridge(alpha=0.1))]), config=config, cv=4, n_bootstrap=50)
    results = trainer.train()

    assert results["task_type"] == "regression" and results["best_metric_name"] == "val/loss"
    assert results["final_metrics_source"] == "cross_validation" and results["test_metrics"]["test/r2"] > 0.9
    facts = json.loads((Path(results["run_dir"]) / "run.json").read_text())
    assert facts["group"]["splitter"] == "KFold"
    assert facts["data"]["splits"]["train"]["columns"] == ["size", "rooms", "city"]
    assert facts["data"]["splits"]["train"]["source"]["format"] == "csv"
    assert facts["data"]["splits"]["train"]["source"]["sources"][0]["sha256"]
    assert (Path(results["run_dir"]) / "eval" / "test" / "eval_metrics.json").is_file()
    assert results["onnx_path"] is not None  # numbers and categories without NaN-imputers convert


def test_arrays_bunch_and_taskspec(config):
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    config.tracking.write_run_dir = False  # nothing written: the results and the fitted model only
    bunch = load_breast_cancer()
    trainer = SklearnTrainer(
        make_pipeline(StandardScaler(), LogisticRegression()), TaskSpec.classification("cancer", 2), config, cv=3
    )
    results = trainer.train(bunch)
    assert results["run_dir"] is None and results["model_path"] is None and results["best_metric"] > 0.9
    assert trainer.task_spec is not None and trainer.task_spec.name == "cancer"
    report = trainer.evaluate(bunch.data[:100], bunch.target[:100])
    assert report.n == 100 and report.overall["accuracy"] > 0.9


def test_refusals_say_what_to_change(credit, config, pipeline):
    from sklearn.linear_model import Ridge

    with pytest.raises(ConfigError, match="is a classifier"):
        SklearnTrainer(pipeline, "regression", config).train(credit, target="approved")
    with pytest.raises(DataError, match="target column 'nope' is not a column"):
        SklearnTrainer(pipeline, config=config).train(credit, target="nope")
    with pytest.raises(DataError, match="cv=5: the smallest class of the training data has 2 samples"):
        SklearnTrainer(pipeline, config=config, cv=5).train(
            credit.iloc[:8].assign(approved=[0] * 6 + [1] * 2), target="approved"
        )
    with pytest.raises(ConfigError, match="scikit-learn estimator"):
        SklearnTrainer(object())
    config.training.monitor = "val/accuracy"
    with pytest.raises(ConfigError, match=r"not a metric of a scikit-learn regression run — use one of: val/loss"):
        SklearnTrainer(Ridge(), config=config).train(np.zeros((10, 2)), np.arange(10.0))


def test_a_failing_fold_marks_the_run_failed(credit, config, pipeline):
    pipeline.set_params(classifier__learning_rate=-1.0)  # refused by scikit-learn at fit
    with pytest.raises(ValueError, match="learning_rate"):
        SklearnTrainer(pipeline, config=config, cv=3).train(credit, target="approved")
    run = next((Path(config.tracking.output_dir) / "credit").iterdir())
    facts = json.loads((run / "run.json").read_text())
    assert facts["status"] == "failed" and facts["error"].startswith("fold-0: InvalidParameterError")
    assert json.loads((run / "fold-0" / "run.json").read_text())["status"] == "failed"
