"""Model registry and parameter counting."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from trainengine import registries
from trainengine.errors import ConfigError
from trainengine.models import (
    GPT,
    MLP,
    SmallCNN,
    build_model,
    count_parameters,
    list_models,
    register_model,
)


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Registrations made by a test must not leak into the others.
    monkeypatch.setattr(registries.MODELS, "_entries", dict(registries.MODELS._entries))
    yield


def test_builtin_architectures_are_listed_sorted() -> None:
    names = list_models()
    assert {"cnn", "gpt", "mlp"} <= set(names)
    assert names == sorted(names)


def test_build_each_builtin() -> None:
    assert isinstance(build_model("mlp", input_dim=4, output_dim=2), MLP)
    assert isinstance(build_model("cnn", num_classes=3), SmallCNN)
    gpt = build_model("gpt", vocab_size=40, max_seq_len=8, d_model=16, n_heads=2, n_layers=3)
    assert isinstance(gpt, GPT)
    assert (gpt.config.vocab_size, gpt.config.n_layers) == (40, 3)
    assert gpt(torch.zeros(1, 8, dtype=torch.long)).shape == (1, 8, 40)


def test_unknown_architecture_lists_available_names() -> None:
    with pytest.raises(ConfigError) as info:
        build_model("gtp")
    text = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "'gtp'" in text and "available: cnn, gpt, mlp" in text
    assert "did you mean 'gpt'" in text


def test_unknown_or_missing_arguments_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"hidden_dim.*accepted arguments: input_dim, output_dim"):
        build_model("mlp", input_dim=4, output_dim=2, hidden_dim=(8,))
    with pytest.raises(ConfigError, match=r"input_dim"):
        build_model("mlp", output_dim=2)
    with pytest.raises(ConfigError, match=r"unknown argument 'n_head'.*n_heads"):
        build_model("gpt", n_head=4)
    with pytest.raises(ConfigError, match=r"not divisible"):
        build_model("gpt", d_model=30, n_heads=4)


@pytest.mark.usefixtures("isolated_registry")
def test_register_custom_model_and_refuse_silent_overwrite() -> None:
    register_model("linear", nn.Linear)
    assert "linear" in list_models()
    model = build_model("linear", in_features=3, out_features=2)
    assert isinstance(model, nn.Linear) and model.out_features == 2
    with pytest.raises(ConfigError, match="already registered"):
        register_model("linear", nn.Bilinear)
    register_model("linear", nn.Identity, overwrite=True)
    assert isinstance(build_model("linear"), nn.Identity)
    with pytest.raises(ConfigError, match="callable"):
        register_model("bad", 3)  # type: ignore[arg-type]  # a wrong type on purpose


def test_count_parameters() -> None:
    assert count_parameters(nn.Linear(3, 2)) == 3 * 2 + 2
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    model[0].requires_grad_(False)
    assert count_parameters(model) == 8 + 3
    assert count_parameters(model, trainable_only=True) == 3


def test_count_parameters_counts_a_tied_weight_once() -> None:
    cfg = {"vocab_size": 50, "max_seq_len": 8, "d_model": 16, "n_heads": 2, "n_layers": 1}
    tied, untied = build_model("gpt", **cfg), build_model("gpt", **cfg, tie_weights=False)
    assert count_parameters(untied) - count_parameters(tied) == 50 * 16
    assert count_parameters(tied) == tied.num_parameters()
