"""Seed 003's pipeline end to end: train -> bundle -> ``trainengine serve``'s app -> /predict, /health, /metrics."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("onnxruntime")
pytest.importorskip("skl2onnx")

from fastapi.testclient import TestClient

from trainengine.serve import create_app
from trainengine.serve._runtime import BundleError
from trainengine.sklearn import SklearnTrainer, export_pipeline_bundle, load_pipeline


def _records(frame) -> list[dict]:
    """JSON records of a DataFrame: NaN / None as null."""
    out = []
    for row in frame.to_dict(orient="records"):
        out.append({k: (None if v is None or (isinstance(v, float) and math.isnan(v)) else v) for k, v in row.items()})
    return out


@pytest.fixture
def seed003_run(config, make_table, make_pipeline):
    """Seed 003's pipeline (does not convert to ONNX: SimpleImputer on strings with NaN), trained."""
    table = make_table()
    results = SklearnTrainer(make_pipeline(), config=config, cv=2, n_bootstrap=20).train(table, target="approved")
    return results, table.drop(columns="approved")


@pytest.fixture
def onnx_run(config, make_table):
    """A seed-003-shaped pipeline that converts (strings without NaN, one-hot without imputer)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    table = make_table()
    table = table.assign(occupation=table["occupation"].fillna("unknown"))
    numeric = Pipeline([("imputer", SimpleImputer(strategy="median")), ("scaler", StandardScaler())])
    categorical = ["occupation", "region", "education"]
    pre = ColumnTransformer(
        [
            ("num", numeric, ["age", "income", "credit_score"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), categorical),
        ]
    )
    pipe = Pipeline([("preprocessor", pre), ("classifier", GradientBoostingClassifier(n_estimators=10))])
    results = SklearnTrainer(pipe, config=config, cv=2, n_bootstrap=20).train(table, target="approved")
    assert results["onnx_path"] is not None
    return results, table.drop(columns="approved")


def test_seed003_bundle_serves_the_pipelines_predictions(seed003_run, tmp_path):
    results, features = seed003_run
    bundle = export_pipeline_bundle(results["run_dir"], tmp_path / "exports", name="credit", version="1.0.0")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["format"] == "sklearn" and manifest["runtime"] == "skops"
    assert {"model.skops", "sklearn_model.json", "monitoring.json", "prometheus/alerts.yml"} <= set(manifest["files"])
    assert "model.onnx" not in manifest["files"]

    app = create_app(bundle, alerts=False)
    assert app.state.predictor.runtime == "skops"
    model = load_pipeline(results["run_dir"])
    rows = features.iloc[:20]
    with TestClient(app) as client:
        health = client.get("/health").json()
        assert health["runtime"] == "skops" and health["name"] == "credit" and health["version"] == "1.0.0"
        response = client.post("/predict", json={"inputs": _records(rows)})
        assert response.status_code == 200, response.text
        body = response.json()
        predictions = body["predictions"]
        assert [p["label"] for p in predictions] == model.predict(rows).tolist()
        assert [p["class"] for p in predictions] == model.predict(rows).tolist()  # classes are [0, 1]
        probabilities = np.array([p["probabilities"] for p in predictions])
        assert np.allclose(probabilities, model.predict_proba(rows), atol=1e-12)

        record = _records(rows.iloc[:1])[0]
        del record["income"]
        missing = client.post("/predict", json={"inputs": [record]})
        assert missing.status_code == 422
        assert "inputs[0]: missing column(s) income" in missing.text

        unknown = client.post("/predict", json={"inputs": [{**_records(rows.iloc[:1])[0], "colour": "red"}]})
        assert unknown.status_code == 422 and "inputs[0].colour: unknown column" in unknown.text
        wrong = client.post("/predict", json={"inputs": [{**_records(rows.iloc[:1])[0], "age": "old"}]})
        assert wrong.status_code == 422 and "inputs[0].age: not a number" in wrong.text

        metrics = client.get("/metrics").text
        ok = [line for line in metrics.splitlines() if line.startswith("trainengine_serve_requests_total{")]
        assert any('endpoint="/predict"' in line and 'status="200"' in line and line.endswith(" 1.0") for line in ok)
        assert any('status="422"' in line for line in ok)


def test_a_converted_pipeline_is_served_through_onnx(onnx_run, tmp_path):
    results, features = onnx_run
    bundle = export_pipeline_bundle(results["model_dir"], tmp_path / "exports")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["runtime"] == "onnx" and "model.onnx" in manifest["files"]

    app = create_app(bundle, alerts=False)
    assert app.state.predictor.runtime == "onnx" and app.state.predictor.pipeline is None
    model = load_pipeline(results["run_dir"])
    rows = features.iloc[:30]
    with TestClient(app) as client:
        assert client.get("/health").json()["runtime"] == "onnx"
        predictions = client.post("/predict", json={"inputs": _records(rows)}).json()["predictions"]
        assert [p["label"] for p in predictions] == model.predict(rows).tolist()
        probabilities = np.array([p["probabilities"] for p in predictions])
        assert np.abs(probabilities - model.predict_proba(rows)).max() < 1e-4
        as_list = client.post("/predict", json={"inputs": [list(_records(rows.iloc[:1])[0].values())]})
        assert as_list.json()["predictions"][0]["label"] == predictions[0]["label"]


def test_a_tampered_bundle_is_refused_at_load(seed003_run, tmp_path):
    results, _ = seed003_run
    bundle = export_pipeline_bundle(results["run_dir"], tmp_path / "exports")
    skops = bundle / "model.skops"
    skops.write_bytes(skops.read_bytes() + b"\0")
    with pytest.raises(BundleError, match="failed verification"):
        create_app(bundle, alerts=False)
    with pytest.raises(ValueError, match="scikit-learn bundle"):
        create_app(export_pipeline_bundle(results["run_dir"], tmp_path / "exports"), runtime="torch", alerts=False)


def test_trainengine_export_takes_a_sklearn_run_and_the_model_folder_serves_as_is(
    onnx_run, tmp_path, capsys, monkeypatch
):
    from trainengine import ModelRegistry
    from trainengine.cli._serve_cmd import resolve_bundle
    from trainengine.cli.main import main
    from trainengine.sklearn import register_pipeline

    results, features = onnx_run
    assert main(["export", "--checkpoint", results["run_dir"], "--output-dir", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "runtime       onnx" in out and "bundle: " in out
    bundle = out.rsplit("bundle: ", 1)[1].strip()
    assert (
        json.loads((tmp_path / "out" / bundle.rsplit("/", 1)[1] / "manifest.json").read_text())["format"] == "sklearn"
    )

    # A run's model/ folder has the same manifest format: trainengine serve takes it directly too.
    with TestClient(create_app(results["model_dir"], alerts=False)) as client:
        assert client.get("/health").json()["runtime"] == "onnx"
        answer = client.post("/predict", json={"inputs": _records(features.iloc[:2])})
        assert answer.status_code == 200 and len(answer.json()["predictions"]) == 2

    # A registered scikit-learn model: trainengine serve NAME@ALIAS resolves to its (verified) folder.
    store = tmp_path / "store"
    with ModelRegistry(str(tmp_path / "models.db"), artifact_root=str(store)) as registry:
        register_pipeline(registry, "credit", "1.0.0", results["run_dir"])
    monkeypatch.setenv("TRAINENGINE_REGISTRY_ARTIFACTS", str(store))
    folder = resolve_bundle("credit:1.0.0", registry=str(tmp_path / "models.db"))
    with TestClient(create_app(folder, alerts=False)) as client:
        answer = client.post("/predict", json={"inputs": _records(features.iloc[:2])})
        assert answer.status_code == 200, answer.text

    # trainengine export --model NAME:VERSION of a registered scikit-learn model: a bundle named after it.
    args = ["export", "--model", "credit:1.0.0", "--registry", str(tmp_path / "models.db")]
    assert main([*args, "--output-dir", str(tmp_path / "out2")]) == 0
    exported = Path(capsys.readouterr().out.rsplit("bundle: ", 1)[1].strip())
    assert exported.parent == tmp_path / "out2" and exported.name.startswith("credit")
    assert json.loads((exported / "manifest.json").read_text())["format"] == "sklearn"


def test_a_regressor_trained_on_an_array_serves_values(config, tmp_path):
    from sklearn.linear_model import Ridge

    from trainengine.serve._sklearn import SklearnPredictor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 4))
    y = X @ np.array([1.0, -2.0, 0.5, 3.0]) + rng.normal(0, 0.1, 120)
    results = SklearnTrainer(Ridge(), config=config, cv=2, n_bootstrap=20).train(X, y)
    bundle = export_pipeline_bundle(results["run_dir"], tmp_path / "exports")
    model = load_pipeline(results["run_dir"])
    with TestClient(create_app(bundle, alerts=False)) as client:
        assert client.get("/health").json()["runtime"] == "onnx"
        answer = client.post("/predict", json={"inputs": X[:5].tolist()})
        assert answer.status_code == 200, answer.text
        values = [p["value"] for p in answer.json()["predictions"]]
        assert np.allclose(values, model.predict(X[:5]), rtol=1e-4, atol=1e-4)
        short = client.post("/predict", json={"inputs": [[1.0, 2.0]]})
        assert short.status_code == 422 and "inputs[0]: expected shape [4], got [2]" in short.text
    skops = SklearnPredictor(bundle, runtime="skops")  # the pipeline itself, exactly
    assert np.allclose([p["value"] for p in skops.predict(X[:5].tolist())], model.predict(X[:5]), atol=1e-12)


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


def test_the_drift_gauge_and_alert_follow_shifted_inputs(seed003_run, make_table, tmp_path):
    results, _ = seed003_run
    # Recorded at fit time (the training data is not kept with the run), copied into the bundle.
    profile = json.loads((Path(results["model_dir"]) / "reference_profile.json").read_text())
    assert profile["columns"] == ["age", "income", "credit_score"]  # text columns are not profiled
    assert sorted(profile["features"]) == ["feature_0", "feature_1", "feature_2"]
    assert profile["features"]["feature_1"]["nonfinite"] > 0  # income's missing values
    assert profile["label_kind"] == "classes" and set(profile["label_counts"]) == {"0", "1"}
    bundle = export_pipeline_bundle(
        results["run_dir"], tmp_path / "exports", monitoring_config={"drift_window": 200, "drift_threshold": 0.2}
    )
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["reference_profile"]["file"] == "reference_profile.json"
    assert "reference_profile.json" in manifest["files"]

    app = create_app(bundle, alert_interval_s=0.05, drift_interval_s=0.0)
    fresh = make_table(n=400, seed=1).drop(columns="approved")  # same distribution, rows never trained on
    with TestClient(app) as client:
        assert math.isnan(_metric(client.get("/metrics").text, "trainengine_serve_drift_score"))
        answer = client.post("/predict", json={"inputs": _records(fresh.iloc[:200])})
        assert answer.status_code == 200
        metrics = client.get("/metrics").text
        assert _metric(metrics, "trainengine_serve_drift_window_examples") == 200
        assert _metric(metrics, "trainengine_serve_drift_score") < 0.1
        # The predicted-class counter counts every prediction by its class index, as for torch classifiers.
        by_class = [p["class"] for p in answer.json()["predictions"]]
        for c in (0, 1):
            counted = _metric(metrics, f'trainengine_serve_predicted_class_total{{class_id="{c}"}}')
            assert counted == by_class.count(c)

        shifted = fresh.iloc[200:].assign(credit_score=fresh["credit_score"].iloc[200:] + 400.0)
        assert client.post("/predict", json={"inputs": _records(shifted)}).status_code == 200
        assert _metric(client.get("/metrics").text, "trainengine_serve_drift_score") > 0.2
        deadline = time.monotonic() + 10
        while client.get("/alerts").json()["active"] != ["drift"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get("/alerts").json()["active"] == ["drift"]
        assert _metric(client.get("/metrics").text, 'trainengine_serve_alert_active{kind="drift"}') == 1.0


def test_an_array_pipeline_drifts_feature_by_feature(config, tmp_path):
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    y = X @ np.array([1.0, -2.0, 0.5, 3.0])
    results = SklearnTrainer(Ridge(), config=config, cv=2, n_bootstrap=20).train(X, y)
    bundle = export_pipeline_bundle(results["run_dir"], tmp_path / "exports")
    profile = json.loads((bundle / "reference_profile.json").read_text())
    assert profile["columns"] is None and len(profile["features"]) == 4 and profile["label_kind"] == "values"
    with TestClient(create_app(bundle, alerts=False, drift_window=100, drift_interval_s=0.0)) as client:
        metrics = client.get("/metrics").text
        # Regression predictions are bucketed on the training targets' histogram edges.
        edges = profile["label_histogram"]["edges"]
        assert f'trainengine_serve_prediction_value_bucket{{le="{float(edges[-1])}"}}' in metrics
        assert client.post("/predict", json={"inputs": rng.normal(size=(100, 4)).tolist()}).status_code == 200
        assert _metric(client.get("/metrics").text, "trainengine_serve_drift_score") < 0.1
        assert client.post("/predict", json={"inputs": (rng.normal(size=(100, 4)) + 5).tolist()}).status_code == 200
        assert _metric(client.get("/metrics").text, "trainengine_serve_drift_score") > 0.5
