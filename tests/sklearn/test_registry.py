"""A SklearnTrainer run's model in the ModelRegistry: registered with hashes and lineage, promoted, loaded back."""

from __future__ import annotations

import numpy as np
import pytest

from trainengine.errors import RegistryError
from trainengine.registry import ModelRegistry
from trainengine.sklearn import SklearnTrainer, load_registered_pipeline, register_pipeline


def test_register_promote_and_load_a_pipeline(tmp_path, credit, config, pipeline):
    results = SklearnTrainer(pipeline, config=config, cv=2, n_bootstrap=50).train(
        credit.iloc[:200], target="approved", val_data=credit.iloc[200:]
    )
    with ModelRegistry(str(tmp_path / "models.db"), artifact_root=str(tmp_path / "store")) as registry:
        model_id = register_pipeline(registry, "credit", "1.0.0", results["run_dir"], tags=["sklearn"])
        record = registry.get_model("credit")
        assert model_id == "credit:1.0.0" and record.task_type == "classification"
        assert record.run_id == results["run_dir"].rsplit("/", 1)[1]
        assert record.metrics["val/accuracy"] == pytest.approx(results["final_metrics"]["val/accuracy"])
        assert "cv/accuracy" in record.metrics and "model.skops" in record.artifact_files
        registry.promote_model(model_id, "production")
        model = load_registered_pipeline(registry, "credit@production")
        features = credit.drop(columns="approved")
        assert np.array_equal(model.predict(features), load_registered_pipeline(registry, "credit").predict(features))
        with pytest.raises(RegistryError, match="already"):
            register_pipeline(registry, "credit", "1.0.0", results["model_dir"])
        with pytest.raises(RegistryError, match="not a saved scikit-learn model"):
            register_pipeline(registry, "credit", "1.0.1", tmp_path)
