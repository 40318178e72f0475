"""Saved pipelines: skops round trips, the trusted-types allow-list, never a pickle, manifest checks."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from trainengine.sklearn import SklearnTrainer, UntrustedModelError, check_trusted, load_pipeline, save_pipeline


class Passthrough(BaseEstimator, TransformerMixin):
    """A user's own transformer: not a class skops or the allow-list trusts."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return X


def _xy():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    return X, (X[:, 0] > 0).astype(int)


def test_skops_round_trip_of_a_trained_run_gives_equal_predictions(credit, config, pipeline):
    results = SklearnTrainer(pipeline, config=config, cv=3, n_bootstrap=50).train(credit, target="approved")
    features = credit.drop(columns="approved")
    for source in (results["model_path"], results["model_dir"], results["run_dir"]):
        loaded = load_pipeline(source)
        assert np.array_equal(loaded.predict(features), pipeline.fit(features, credit["approved"]).predict(features))
        assert np.allclose(loaded.predict_proba(features), pipeline.predict_proba(features))
    # The allow-list covered what skops does not trust by default (a tree's extension type, numpy.dtype).
    assert "sklearn.tree._tree.Tree" in check_trusted(results["model_path"])


def test_a_user_class_or_a_function_in_the_file_is_refused_with_its_name(tmp_path):
    X, y = _xy()
    custom = save_pipeline(make_pipeline(Passthrough(), LogisticRegression()).fit(X, y), tmp_path / "custom.skops")
    with pytest.raises(UntrustedModelError, match=r"not trusted: .*Passthrough") as err:
        load_pipeline(custom)
    assert "trusted=[" in str(err.value)  # says how to accept a type the user has checked
    own = f"{Passthrough.__module__}.{Passthrough.__qualname__}"
    assert own in check_trusted(custom, trusted=[own])  # named by the user: accepted
    evil = save_pipeline(make_pipeline(FunctionTransformer(os.system), LogisticRegression()), tmp_path / "evil.skops")
    with pytest.raises(UntrustedModelError, match=r"posix\.system|nt\.system"):
        load_pipeline(evil)
    reader = save_pipeline(FunctionTransformer(np.load), tmp_path / "reader.skops")
    with pytest.raises(UntrustedModelError, match=r"numpy\.load"):  # a numpy *function* is not on the list
        load_pipeline(reader)


def test_a_pickle_is_never_loaded(tmp_path):
    X, y = _xy()
    path = tmp_path / "model.skops"
    path.write_bytes(pickle.dumps(LogisticRegression().fit(X, y)))
    with pytest.raises(UntrustedModelError, match="not a .skops file"):
        load_pipeline(path)


def test_a_model_folder_that_no_longer_matches_its_manifest_is_refused(credit, config, pipeline):
    results = SklearnTrainer(pipeline, config=config, cv=2, n_bootstrap=50, onnx=False).train(credit, target="approved")
    other = save_pipeline(LogisticRegression().fit(*_xy()), config.tracking.output_dir + "/other.skops")
    os.replace(other, results["model_path"])  # swapped behind the manifest's back
    with pytest.raises(UntrustedModelError, match="does not match its manifest"):
        load_pipeline(results["run_dir"])


def test_the_safe_loader_lives_in_layer_0_and_is_re_exported_here():
    import doctest

    from trainengine import _skops
    from trainengine.sklearn import _persist

    for name in ("UntrustedModelError", "TRUSTED_MODULES", "SKOPS_FILE", "check_trusted"):
        assert getattr(_persist, name) is getattr(_skops, name)
    result = doctest.testmod(_skops, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted >= 1


def test_trusted_must_be_a_list_of_type_names(tmp_path):
    path = save_pipeline(make_pipeline(Passthrough(), LogisticRegression()).fit(*_xy()), tmp_path / "custom.skops")
    own = f"{Passthrough.__module__}.{Passthrough.__qualname__}"
    with pytest.raises(TypeError, match=r"trusted= must be a list of type names, e\.g\. trusted=\["):
        load_pipeline(path, trusted=own)  # a string would be read as its letters
    assert load_pipeline(path, trusted=[own]).predict(_xy()[0]).shape == (60,)
