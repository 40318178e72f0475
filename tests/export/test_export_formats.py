"""Exporter helpers: a missing ONNX dependency and the parity comparison."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import nn

from trainengine.errors import MissingExtraError
from trainengine.export._formats import ParityInputs, export_onnx, max_abs_diff


def test_missing_onnx_dependency_is_a_missing_extra_error(tmp_path, monkeypatch):
    # A None entry in sys.modules makes `import onnxscript` raise ImportError(name="onnxscript").
    # The error was built with too few arguments, so a TypeError hid the install hint.
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    model = nn.Linear(3, 2)
    parity = ParityInputs(model, torch.zeros(2, 3), token_inputs=False, max_seq_len=None)
    with pytest.raises(MissingExtraError, match=r"'onnxscript'.*pip install \"trainengine\[export\]\""):
        export_onnx(model, parity, tmp_path, tolerance=1e-4, max_seq_len=None)


def test_max_abs_diff_counts_a_missing_batch_as_a_mismatch():
    expected = [np.zeros((2, 3)), np.ones((3, 3))]
    assert max_abs_diff(expected, [np.zeros((2, 3)), np.ones((3, 3)) + 0.5]) == pytest.approx(0.5)
    # Fewer outputs than batches used to compare only the common prefix and report 0.
    assert max_abs_diff(expected, [np.zeros((2, 3))]) == float("inf")
