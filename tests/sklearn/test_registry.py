"""A SklearnTrainer run's model in the ModelRegistry: registered as kind ``sklearn`` with hashes and
lineage, promoted, loaded back by ``ModelRecord.load()``; its export bundle stays kind ``bundle``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trainengine.errors import RegistryError
from trainengine.registry import ModelRegistry
from trainengine.sklearn import (
    MODEL_DIR,
    MODEL_INFO,
    SKOPS_FILE,
    SklearnTrainer,
    export_pipeline_bundle,
    load_registered_pipeline,
    register_pipeline,
)


def test_the_registry_knows_the_model_folder_layout():
    # The registry (a lower layer) repeats these names instead of importing trainengine.sklearn.
    from trainengine.registry import _artifacts

    assert (_artifacts._SKLEARN_MODEL_DIR, _artifacts._SKLEARN_INFO, _artifacts._SKOPS_FILE) == (
        MODEL_DIR,
        MODEL_INFO,
        SKOPS_FILE,
    )
    assert "sklearn" in _artifacts.ARTIFACT_KINDS


def test_register_promote_and_load_a_pipeline(tmp_path, credit, config, pipeline, monkeypatch):
    trainer = SklearnTrainer(pipeline, config=config, cv=2, n_bootstrap=50, onnx=False)
    results = trainer.train(credit.iloc[:200], target="approved", val_data=credit.iloc[200:])
    features = credit.drop(columns="approved")
    expected = trainer.estimator_.predict(features)  # the fitted pipeline, as trained
    db, store = tmp_path / "models.db", tmp_path / "models-artifacts"
    with ModelRegistry(str(db), artifact_root=str(store)) as registry:
        model_id = register_pipeline(registry, "credit", "1.0.0", results["run_dir"], tags=["sklearn"])
        record = registry.get_model("credit")
        assert model_id == "credit:1.0.0" and record.task_type == "classification"
        assert record.artifact_kind == "sklearn" and record.description == "scikit-learn Pipeline"
        assert record.run_id == results["run_dir"].rsplit("/", 1)[1]
        assert record.metrics["val/accuracy"] == pytest.approx(results["final_metrics"]["val/accuracy"])
        assert "cv/accuracy" in record.metrics and {"model.skops", "manifest.json"} <= set(record.artifact_files)
        assert record.config is not None  # the run's config.yaml, as lineage
        registry.promote_model(model_id, "production")
        loaded = registry.resolve("credit@production").load()  # the pipeline, through the allow-list
        assert np.array_equal(loaded.predict(features), expected)
        assert np.array_equal(load_registered_pipeline(registry, "credit").predict(features), expected)
        with pytest.raises(RegistryError, match="already"):
            register_pipeline(registry, "credit", "1.0.0", results["model_dir"])
        with pytest.raises(RegistryError, match="not a saved scikit-learn model"):
            register_pipeline(registry, "credit", "1.0.1", tmp_path)

        # The export path: a bundle stays kind 'bundle' (what trainengine serve NAME@ALIAS serves).
        bundle = export_pipeline_bundle(record.artifact_path, tmp_path / "exports", version="1.0.0")
        with pytest.raises(RegistryError, match="scikit-learn export bundle; register it with bundle_path="):
            registry.register_model("credit-bundle", "1.0.0", bundle)
        registry.register_model("credit-bundle", "1.0.0", bundle_path=bundle)
        registry.promote_model("credit-bundle:1.0.0", "production")
        bundled = registry.resolve("credit-bundle@production")
        assert bundled.artifact_kind == "bundle"
        served = load_registered_pipeline(registry, "credit-bundle@production")
        assert np.array_equal(served.predict(features), expected)
        with pytest.raises(RegistryError, match="scikit-learn export bundle .*load_registered_pipeline"):
            bundled.load()

    from trainengine.cli._serve_cmd import resolve_bundle

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRAINENGINE_REGISTRY_ARTIFACTS", raising=False)
    assert resolve_bundle("credit-bundle@production", str(db)) == Path(bundled.artifact_path)
