"""ONNX through skl2onnx: kept only when onnxruntime agrees with scikit-learn; the reason recorded when not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("skl2onnx")
pytest.importorskip("onnxruntime")

from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from trainengine.sklearn import SklearnTrainer, load_pipeline, run_onnx


def test_onnx_predictions_match_sklearn_on_a_mixed_table(credit, config):
    table = credit.assign(occupation=credit["occupation"].fillna("unknown"))  # strings without NaN convert
    numeric = Pipeline([("imputer", SimpleImputer(strategy="median")), ("scaler", StandardScaler())])
    pre = ColumnTransformer(
        [
            ("num", numeric, ["age", "income", "credit_score"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["occupation", "region", "education"]),
        ]
    )
    pipe = Pipeline([("preprocessor", pre), ("classifier", GradientBoostingClassifier(n_estimators=20))])
    results = SklearnTrainer(pipe, config=config, cv=2, n_bootstrap=50).train(table, target="approved")

    assert results["onnx_error"] is None and Path(results["onnx_path"]).is_file()
    info = json.loads((Path(results["model_dir"]) / "sklearn_model.json").read_text())
    assert [i["name"] for i in info["onnx"]["inputs"]] == list(table.columns.drop("approved"))
    assert info["onnx"]["parity"]["ok"] and info["onnx"]["parity"]["label_agreement"] == 1.0
    manifest = json.loads((Path(results["model_dir"]) / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.skops", "model.onnx", "sklearn_model.json", "reference_profile.json"}

    features = table.drop(columns="approved").iloc[:50]
    labels, probabilities = run_onnx(Path(results["onnx_path"]).read_bytes(), features, info["onnx"]["inputs"])
    model = load_pipeline(results["run_dir"])
    assert np.array_equal(labels.reshape(-1), model.predict(features))
    assert np.abs(probabilities - model.predict_proba(features)).max() < 1e-4


def test_a_pipeline_that_does_not_convert_is_saved_as_skops_with_the_reason(credit, config, pipeline):
    # Seed 003's own pipeline: SimpleImputer(most_frequent) on strings with NaN has no skl2onnx converter.
    results = SklearnTrainer(pipeline, config=config, cv=2, n_bootstrap=50).train(credit, target="approved")
    assert results["onnx_path"] is None and results["onnx_error"].startswith("skl2onnx:")
    info = json.loads((Path(results["model_dir"]) / "sklearn_model.json").read_text())
    assert info["onnx"]["file"] is None and info["onnx"]["reason"] == results["onnx_error"]
    assert Path(results["model_path"]).is_file()
