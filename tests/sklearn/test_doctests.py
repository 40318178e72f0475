"""The examples in the docstrings of trainengine.sklearn run as written."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["_params", "_data", "_persist", "_onnx", "_evaluate", "_tune", "_trainer"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(f"trainengine.sklearn.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted >= 1
