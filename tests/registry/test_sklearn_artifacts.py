"""The ``sklearn`` artifact kind: a fitted pipeline's model folder registered with hashes, loaded
back by ``ModelRecord.load()`` through the skops trusted-types check, tampering caught.

The model folders are written by hand in SklearnTrainer's layout (``model.skops``,
``sklearn_model.json``, ``manifest.json`` of format ``sklearn``) so each test takes milliseconds;
tests/sklearn/test_registry.py registers a real run's folder.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import uuid
from pathlib import Path

import fsspec
import numpy as np
import pytest
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from trainengine._hashing import bundle_files
from trainengine._skops import UntrustedModelError
from trainengine.registry import ModelRegistry, RegistryError, RegistryValueError
from trainengine.sklearn import save_pipeline


class Passthrough(BaseEstimator, TransformerMixin):
    """A user's own transformer: neither skops nor the allow-list trusts it."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return X


OWN = f"{Passthrough.__module__}.{Passthrough.__qualname__}"


def _xy():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    return X, (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)


def model_folder(root: Path, estimator=None, *, run_id: str = "run-1") -> Path:
    """``root/model/``: a fitted pipeline saved the way SklearnTrainer saves it."""
    X, y = _xy()
    estimator = estimator if estimator is not None else make_pipeline(StandardScaler(), LogisticRegression())
    estimator.fit(X, y)
    folder = root / "model"
    save_pipeline(estimator, folder / "model.skops")
    info = {
        "format": "trainengine-sklearn",
        "task_type": "classification",
        "estimator": {"class": type(estimator).__name__},
        "metrics": {"cv/accuracy": 0.9, "val/accuracy": 0.85, "bad": float("nan")},
        "lineage": {"run_id": run_id, "git_commit": "abc123", "data_fingerprint": "fp-1"},
    }
    (folder / "sklearn_model.json").write_text(json.dumps(info))
    manifest = {
        "format": "sklearn",
        "task_type": "classification",
        "model_info": "sklearn_model.json",
        "lineage": info["lineage"],
        "files": bundle_files(folder),
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _rehash(folder: Path) -> None:
    """Rewrite a folder's manifest for its current files (what an attacker editing both would do)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"] = bundle_files(folder)
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture
def registry(tmp_path):
    with ModelRegistry(str(tmp_path / "models.db"), artifact_root=str(tmp_path / "store")) as reg:
        yield reg


def test_a_model_folder_registers_as_kind_sklearn_and_loads_as_its_pipeline(tmp_path, registry):
    folder = model_folder(tmp_path / "run")
    model_id = registry.register_model("credit", "1.0.0", folder, tags=["sklearn"])
    record = registry.get_model("credit")
    assert model_id == "credit:1.0.0" and record.artifact_kind == "sklearn"
    assert record.artifact_files == ("manifest.json", "model.skops", "sklearn_model.json")
    assert (record.run_id, record.git_commit, record.data_fingerprint) == ("run-1", "abc123", "fp-1")
    assert record.task_type == "classification" and record.metrics == {"cv/accuracy": 0.9, "val/accuracy": 0.85}
    assert record.model_spec is None and Path(record.artifact_path).is_relative_to(tmp_path / "store")

    X, _ = _xy()
    from trainengine.sklearn import load_pipeline

    expected = load_pipeline(folder)
    loaded = registry.resolve("credit:1.0.0").load()
    assert type(loaded).__name__ == "Pipeline"
    assert np.array_equal(loaded.predict(X), expected.predict(X))
    assert np.allclose(loaded.predict_proba(X), expected.predict_proba(X))

    # The run directory holding model/ registers the same folder; model_config= is refused for it.
    registry.register_model("credit", "1.0.1", tmp_path / "run")
    assert registry.get_model("credit", "1.0.1").artifact_sha256 == record.artifact_sha256
    with pytest.raises(RegistryValueError, match="model_config= tells how to rebuild a torch model"):
        registry.register_model("credit", "1.0.2", folder, model_config={"architecture": "mlp", "kwargs": {}})
    # Options of the other kind of model are refused, not ignored.
    with pytest.raises(RegistryValueError, match="model= is for torch weights"):
        record.load(model=object())


def test_a_tampered_registered_copy_is_refused_on_load(tmp_path, registry):
    registry.register_model("credit", "1.0.0", model_folder(tmp_path / "run"))
    record = registry.get_model("credit")
    stored = Path(record.artifact_path)
    other = save_pipeline(LogisticRegression().fit(*_xy()), tmp_path / "other.skops")
    os.replace(other, stored / "model.skops")  # swapped in the store
    with pytest.raises(RegistryError, match=r"artifact changed since registration: credit:1\.0\.0"):
        record.load()
    _rehash(stored)  # and the manifest edited to match: the registered hash covers the manifest too
    with pytest.raises(RegistryError, match="artifact changed since registration"):
        record.load()


def test_an_untrusted_type_is_refused_with_its_name_unless_trusted(tmp_path, registry, caplog):
    folder = model_folder(tmp_path / "run", make_pipeline(Passthrough(), LogisticRegression()))
    with caplog.at_level(logging.WARNING, logger="trainengine.registry"):
        registry.register_model("custom", "1.0.0", folder)  # registered: loading is what is checked
    assert OWN in caplog.text and "trusted=" in caplog.text
    record = registry.get_model("custom")
    with pytest.raises(UntrustedModelError, match=rf"not trusted: {OWN}") as err:
        record.load()
    assert f"trusted={[OWN]!r}" in str(err.value)
    X, _ = _xy()
    assert record.load(trusted=[OWN]).predict(X).shape == (60,)
    with pytest.raises(TypeError, match="list of type names"):
        record.load(trusted=OWN)


def test_a_pickle_or_an_unlisted_file_is_refused_at_registration(tmp_path, registry):
    folder = model_folder(tmp_path / "run")
    (folder / "model.skops").write_bytes(pickle.dumps(LogisticRegression().fit(*_xy())))
    _rehash(folder)
    with pytest.raises(RegistryError, match=r"model\.skops: it is not a \.skops file .*a pickle is never loaded"):
        registry.register_model("credit", "1.0.0", folder)
    good = model_folder(tmp_path / "run2")
    (good / "notes.txt").write_text("x")
    with pytest.raises(RegistryError, match=r"scikit-learn model .* holds files its manifest does not list \(notes"):
        registry.register_model("credit", "1.0.0", good, copy_artifact=False)
    (good / "model.skops").write_bytes(b"changed")
    with pytest.raises(RegistryError, match=r"model\.skops: sha256 differs from the manifest"):
        registry.register_model("credit", "1.0.0", good)
    assert registry.list_models() == [] and not (tmp_path / "store" / "credit").exists()


def test_a_version_kept_in_place_is_checked_where_it_is(tmp_path, registry):
    folder = model_folder(tmp_path / "run")
    registry.register_model("credit", "1.0.0", folder, copy_artifact=False)
    record = registry.get_model("credit")
    assert Path(record.artifact_path) == folder.resolve()
    record.load()
    (folder / "sklearn_model.json").write_text("{}")
    with pytest.raises(RegistryError, match="artifact changed since registration"):
        record.load()


def test_a_url_store_downloads_verifies_and_loads(tmp_path):
    url = f"memory://te-tests-{uuid.uuid4().hex[:8]}/models"
    try:
        with ModelRegistry(str(tmp_path / "models.db"), artifact_root=url, cache_dir=tmp_path / "cache") as reg:
            reg.register_model("credit", "1.0.0", model_folder(tmp_path / "run"))
            record = reg.resolve("credit")
            X, _ = _xy()
            assert record.artifact_url is not None and record.load().predict(X).shape == (60,)
            assert (Path(record.artifact_path) / "model.skops").is_file()  # the verified cached copy
    finally:
        fs = fsspec.filesystem("memory")
        root = url.split("://", 1)[1].split("/")[0]
        if fs.exists(f"/{root}"):
            fs.rm(f"/{root}", recursive=True)


def test_torch_records_refuse_the_sklearn_option(tmp_path, registry, weights_pt):
    registry.register_model("tiny", "1.0.0", weights_pt)
    record = registry.get_model("tiny")
    assert record.artifact_kind == "torch"
    with pytest.raises(RegistryValueError, match="trusted= applies to scikit-learn artifacts only"):
        record.load(trusted=["x.Y"])


def test_the_registry_cli_registers_and_shows_kind_sklearn(tmp_path, monkeypatch, capsys):
    from trainengine.cli.main import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRAINENGINE_REGISTRY", raising=False)
    monkeypatch.delenv("TRAINENGINE_REGISTRY_ARTIFACTS", raising=False)
    model_folder(tmp_path / "run")
    assert main(["registry", "register", "credit", "1.0.0", "--checkpoint", "run"]) == 0
    assert capsys.readouterr().out.startswith("registered credit:1.0.0 (sklearn, sha256 ")
    assert main(["registry", "show", "credit:1.0.0", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["artifact_kind"] == "sklearn" and shown["run_id"] == "run-1"
    assert main(["registry", "list", "--json"]) == 0
    assert [r["artifact_kind"] for r in json.loads(capsys.readouterr().out)] == ["sklearn"]
