"""``trainengine evaluate`` of a scikit-learn run and of a registered scikit-learn model: the same report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tests.sklearn.conftest import credit_table

from trainengine.cli.main import main
from trainengine.sklearn import SklearnTrainer, register_pipeline


@pytest.fixture
def fitted(config, pipeline, tmp_path):
    table = credit_table(240, seed=0)
    trainer = SklearnTrainer(pipeline, config=config, cv=2, n_bootstrap=20, onnx=False)
    results = trainer.train(table, target="approved")
    held_out = credit_table(120, seed=1)
    data = tmp_path / "held_out.csv"
    held_out.to_csv(data, index=False)
    return trainer, results, held_out, data


def test_evaluate_a_sklearn_run_on_a_csv_gives_the_pipelines_own_accuracy(fitted, tmp_path, capsys):
    trainer, results, held_out, data = fitted
    out = tmp_path / "eval"
    args = ["evaluate", "--run", results["run_dir"], "--data", str(data), "--n-bootstrap", "50"]
    assert main([*args, "--segment-key", "region", "--output-dir", str(out)]) == 0
    assert "eval_metrics.json" in capsys.readouterr().out
    report = json.loads((out / "eval_metrics.json").read_text())
    X = held_out.drop(columns="approved")
    expected = float(np.mean(trainer.estimator_.predict(X) == held_out["approved"].to_numpy()))
    assert report["n"] == 120 and report["overall"]["accuracy"] == pytest.approx(expected)
    assert set(report["per_segment"]) == {"north", "south", "east"}  # the segment column of the CSV
    assert report["checkpoint"].endswith("model")


def test_evaluate_a_registered_sklearn_model_and_compare_two_runs(fitted, config, make_pipeline, tmp_path, capsys):
    trainer, results, held_out, data = fitted
    db = tmp_path / "models.db"
    from trainengine import ModelRegistry

    with ModelRegistry(str(db)) as registry:
        register_pipeline(registry, "credit", "1.0.0", results["run_dir"])
    out = tmp_path / "eval-registered"
    args = ["evaluate", "--model", "credit:1.0.0", "--registry", str(db), "--data", str(data), "--n-bootstrap", "20"]
    assert main([*args, "--output-dir", str(out)]) == 0
    registered = json.loads((out / "eval_metrics.json").read_text())
    X = held_out.drop(columns="approved")
    assert registered["overall"]["accuracy"] == pytest.approx(
        float(np.mean(trainer.estimator_.predict(X) == held_out["approved"].to_numpy()))
    )

    # Two scikit-learn runs side by side, as two checkpoints of torch runs are.
    other = SklearnTrainer(make_pipeline(5), config=config, cv=2, n_bootstrap=20, onnx=False)
    other_results = other.train(credit_table(240, seed=0), target="approved")
    compare = tmp_path / "compare"
    two = ["--checkpoint", results["run_dir"], "--checkpoint", other_results["run_dir"]]
    assert main(["evaluate", *two, "--data", str(data), "--n-bootstrap", "20", "--output-dir", str(compare)]) == 0
    assert "best by" in capsys.readouterr().out
    assert len(json.loads((compare / "comparison.json").read_text())["checkpoints"]) == 2


def test_without_data_a_sklearn_run_trained_on_a_frame_says_to_give_some(fitted, tmp_path, capsys):
    _, results, _, _ = fitted
    assert main(["evaluate", "--run", results["run_dir"], "--output-dir", str(tmp_path / "e")]) == 2
    assert "give the data (trainengine evaluate ... --data FILE)" in capsys.readouterr().err
