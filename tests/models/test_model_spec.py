"""Model specs rebuild the same architecture, so saved weights load into the rebuilt module."""

from __future__ import annotations

import json

import pytest
import torch

from trainengine.errors import ConfigError
from trainengine.models import GPT, GPTConfig, build_model, model_spec, rebuild_model


@pytest.mark.parametrize(
    ("arch", "kwargs", "x"),
    [
        ("mlp", {"input_dim": 6, "output_dim": 3, "hidden_dims": (8, 4)}, torch.randn(2, 6)),
        ("cnn", {"in_channels": 1, "num_classes": 4, "channels": (4,), "image_size": 8}, torch.randn(2, 1, 8, 8)),
        (
            "gpt",
            {"vocab_size": 32, "max_seq_len": 8, "d_model": 16, "n_heads": 2, "n_layers": 1},
            torch.randint(0, 32, (2, 5)),
        ),
    ],
)
def test_spec_round_trips_through_json_and_rebuilds_same_function(arch, kwargs, x):
    model = build_model(arch, **kwargs).eval()
    spec = json.loads(json.dumps(model_spec(model)))  # what checkpoints and bundles store
    assert spec["architecture"] == arch
    rebuilt = rebuild_model(spec).eval()
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))


def test_spec_of_compiled_wrapper_and_plain_gpt():
    model = build_model("mlp", input_dim=4, output_dim=2, hidden_dims=(8,))
    assert model_spec(torch.compile(model)) == model_spec(model)
    gpt = GPT(GPTConfig(vocab_size=16, max_seq_len=4, d_model=8, n_heads=2, n_layers=1))
    assert model_spec(gpt)["kwargs"]["vocab_size"] == 16


def test_unknown_model_has_no_spec_unless_hinted():
    model = torch.nn.Linear(3, 2)
    assert model_spec(model) is None
    assert model_spec(model, {"architecture": "mlp", "kwargs": {"input_dim": 3}})["architecture"] == "mlp"


def test_bad_spec_is_a_config_error():
    with pytest.raises(ConfigError, match="architecture"):
        rebuild_model({"kwargs": {}})
    with pytest.raises(ConfigError, match="unknown model architecture"):
        rebuild_model({"architecture": "nope", "kwargs": {}})
