"""MLP: shapes, flattening, argument validation, and that it can fit a tiny batch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainengine.errors import ConfigError, DataError
from trainengine.models import MLP


def test_flattens_image_batches() -> None:
    model = MLP(input_dim=64, output_dim=10)
    assert model(torch.randn(5, 1, 8, 8)).shape == (5, 10)
    assert model(torch.randn(5, 64)).shape == (5, 10)


def test_single_target_regression_keeps_the_target_dimension() -> None:
    assert MLP(input_dim=7, output_dim=1)(torch.randn(3, 7)).shape == (3, 1)


def test_layer_layout_follows_arguments() -> None:
    model = MLP(4, 2, hidden_dims=(8, 16), activation="tanh", norm=True, dropout=0.2)
    kinds = [type(m) for m in model.net]
    block = [nn.Linear, nn.LayerNorm, nn.Tanh, nn.Dropout]
    assert kinds == block + block + [nn.Linear]
    assert [m.out_features for m in model.net if isinstance(m, nn.Linear)] == [8, 16, 2]
    # No hidden layers: a plain linear model.
    assert [type(m) for m in MLP(4, 2, hidden_dims=()).net] == [nn.Linear]


@pytest.mark.parametrize("activation,cls", [("gelu", nn.GELU), ("relu", nn.ReLU), ("silu", nn.SiLU), ("tanh", nn.Tanh)])
def test_activation_choice(activation: str, cls: type[nn.Module]) -> None:
    model = MLP(4, 2, hidden_dims=(8,), activation=activation)  # type: ignore[arg-type]  # a wrong type on purpose
    assert any(isinstance(m, cls) for m in model.net)


def test_wrong_feature_count_names_both_numbers() -> None:
    model = MLP(input_dim=64, output_dim=10)
    with pytest.raises(DataError, match=r"input_dim=64.*49 features"):
        model(torch.randn(2, 1, 7, 7))
    with pytest.raises(DataError, match=r"\[B, 64\]"):
        model(torch.randn(64))


def test_invalid_arguments_are_all_reported() -> None:
    with pytest.raises(ConfigError) as info:
        MLP(0, 2, hidden_dims=(8, -1), dropout=1.0, activation="swish")  # type: ignore[arg-type]  # a wrong type on purpose
    text = str(info.value)
    assert len(info.value.problems) == 4
    assert "input_dim" in text and "hidden_dims[1]" in text and "dropout" in text
    assert "swish" in text and "gelu, relu, silu, tanh" in text
    with pytest.raises(ConfigError, match="hidden_dims"):
        MLP(4, 2, hidden_dims=128)  # type: ignore[arg-type]  # a wrong type on purpose


def test_overfits_a_tiny_batch() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    model = MLP(input_dim=64, output_dim=10, hidden_dims=(64,), dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(100):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
