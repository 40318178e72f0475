"""A model without spec (a plain nn.Sequential) exports without example_input when its first layer tells the input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from trainengine.errors import ExportError
from trainengine.export import create_export_bundle
from trainengine.export._example import infer_example_input
from trainengine.tasks import TaskSpec


def test_linear_first_gives_a_float_row_of_in_features():
    x = infer_example_input(nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)))
    assert x.dtype == torch.float32 and x.shape == (1, 64)


def test_first_parametrised_leaf_is_found_through_nesting_and_parameterless_layers():
    model = nn.Sequential(nn.Flatten(), nn.Sequential(nn.Dropout(), nn.Linear(12, 4)), nn.Linear(4, 2))
    assert infer_example_input(model).shape == (1, 12)


def test_embedding_first_gives_token_ids_below_the_vocabulary():
    model = nn.Sequential(nn.Embedding(7, 8), nn.Linear(8, 7))
    x = infer_example_input(model, max_seq_len=5)
    assert x.dtype == torch.int64 and x.shape == (1, 5)
    assert int(x.min()) >= 0 and int(x.max()) < 7
    model(x)  # runs


@pytest.mark.parametrize(
    "first, message",
    [
        (nn.Conv2d(3, 8, 3), r"Conv2d\(3, 8.*spatial size.*example_input=torch.randn\(1, 3, 32, 32\)"),
        (nn.Conv1d(2, 4, 3), r"example_input=torch.randn\(1, 2, 32\)"),
        (nn.LayerNorm(5), r"first layer with parameters is LayerNorm.*pass example_input="),
        (nn.LazyLinear(4), r"LazyLinear.*pass example_input="),
    ],
)
def test_ambiguous_first_layer_names_the_argument_to_pass(first, message):
    with pytest.raises(ExportError, match=message):
        infer_example_input(nn.Sequential(first, nn.ReLU()))


def test_model_without_parameters_names_the_argument_to_pass():
    with pytest.raises(ExportError, match="has no parameters; pass example_input="):
        infer_example_input(nn.Sequential(nn.ReLU()))


def test_sequential_mlp_exports_without_example_input(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    folder = create_export_bundle(
        model=model,
        task_spec=TaskSpec.classification(name="digits", num_classes=10),
        formats=["pytorch"],
        output_dir=tmp_path,
    )
    manifest = json.loads((Path(folder) / "manifest.json").read_text())
    assert manifest["input"]["shape"] == [None, 64] and manifest["input"]["dtype"] == "float32"


def test_embedding_first_model_exports_without_example_input(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(50, 16), nn.Linear(16, 50))
    folder = create_export_bundle(
        model=model, task_spec=TaskSpec.language_modeling(name="toy"), formats=["pytorch"], output_dir=tmp_path
    )
    manifest = json.loads((Path(folder) / "manifest.json").read_text())
    assert manifest["input"]["dtype"] == "int64" and manifest["input"]["shape"][0] is None


def test_conv_first_model_fails_before_writing_anything(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    with pytest.raises(ExportError, match="example_input="):
        create_export_bundle(
            model=model,
            task_spec=TaskSpec.classification(name="x", num_classes=2),
            formats=["pytorch"],
            output_dir=tmp_path / "out",
        )
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_given_example_input_is_still_used(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
    folder = create_export_bundle(
        model=model,
        task_spec=TaskSpec.classification(name="x", num_classes=3),
        formats=["pytorch"],
        output_dir=tmp_path,
        example_input=torch.randn(2, 1, 8, 8),
    )
    assert json.loads((Path(folder) / "manifest.json").read_text())["input"]["shape"][1:] == [1, 8, 8]
