"""Seed 003's scikit-learn Pipeline example, run with only its imports changed (it imports scikit-learn
alone, so nothing changed), then trained, evaluated and registered through trainengine.

The seed leaves ``X_train`` / ``y_train`` / ``X_test`` to the reader; they are made here from a
mixed-type table with the seed's column names and missing values. The registered model is then
exported as a bundle and served by ``trainengine serve``'s app (tests/sklearn/test_serve.py has the details).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from trainengine import ModelRegistry
from trainengine.sklearn import SklearnTrainer, load_registered_pipeline, register_pipeline


def test_seed_003_pipeline_example_train_evaluate_register(tmp_path, config, make_table):
    table = make_table(n=200)
    X_train, y_train = table.iloc[:150].drop(columns="approved"), table.iloc[:150]["approved"]
    X_test, y_test = table.iloc[150:].drop(columns="approved"), table.iloc[150:]["approved"]

    # ---- seed 003, "1. Model Architecture Patterns", as written -----------------------------------
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric_features = ["age", "income", "credit_score"]
    categorical_features = ["occupation", "region", "education"]

    numeric_transformer = Pipeline(steps=[
        ("imputer", SimpleImputer(strategy="median")),
        ("scaler", StandardScaler()),
    ])  # fmt: skip

    categorical_transformer = Pipeline(steps=[
        ("imputer", SimpleImputer(strategy="most_frequent")),
        ("encoder", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
    ])  # fmt: skip

    preprocessor = ColumnTransformer(transformers=[
        ("num", numeric_transformer, numeric_features),
        ("cat", categorical_transformer, categorical_features),
    ])  # fmt: skip

    model_pipeline = Pipeline(steps=[
        ("preprocessor", preprocessor),
        ("classifier", GradientBoostingClassifier(
            n_estimators=200,
            learning_rate=0.1,
            max_depth=5,
            random_state=42,
        )),
    ])  # fmt: skip

    # Fit and predict in one call; preprocessing is applied correctly
    model_pipeline.fit(X_train, y_train)
    predictions = model_pipeline.predict(X_test)
    # ---- end of the seed's example ---------------------------------------------------------------

    assert predictions.shape == (50,)
    # The same pipeline, tracked: 2-fold CV as child runs, the final fit, the test report, the saved model.
    trainer = SklearnTrainer(model_pipeline, config=config, cv=2, n_bootstrap=100)
    results = trainer.train(X_train, y_train, test_data=(X_test, y_test))
    assert np.array_equal(trainer.estimator_.predict(X_test), predictions)  # random_state=42 kept: same model
    assert results["best_metric_name"] == "val/accuracy" and results["test_metrics"]["test/accuracy"] > 0.6
    report = json.loads(Path(results["test_eval_metrics_path"]).read_text())
    assert report["n"] == 50 and report["overall"]["accuracy"] == results["test_metrics"]["test/accuracy"]

    with ModelRegistry(str(tmp_path / "models.db"), artifact_root=str(tmp_path / "store")) as registry:
        register_pipeline(registry, "credit-approval", "1.0.0", results["run_dir"])
        served = load_registered_pipeline(registry, "credit-approval")
    assert np.array_equal(served.predict(X_test), predictions)

    # ---- serve: the registered model as an export bundle, through trainengine serve's app ---------
    from fastapi.testclient import TestClient

    from trainengine.serve import create_app
    from trainengine.sklearn import export_pipeline_bundle

    with ModelRegistry(str(tmp_path / "models.db"), artifact_root=str(tmp_path / "store")) as registry:
        registered = registry.resolve("credit-approval").fetch()
    bundle = export_pipeline_bundle(registered, tmp_path / "exports", name="credit-approval", version="1.0.0")
    records = [
        {k: None if v is None or (isinstance(v, float) and np.isnan(v)) else v for k, v in row.items()}
        for row in X_test.to_dict(orient="records")
    ]
    with TestClient(create_app(bundle, alerts=False)) as client:
        answer = client.post("/predict", json={"inputs": records})
        assert answer.status_code == 200, answer.text
        assert [p["label"] for p in answer.json()["predictions"]] == predictions.tolist()
        assert client.get("/health").json()["version"] == "1.0.0"
