"""SmallCNN: shapes, pooling plan, validation, fitting a tiny batch, and accuracy on 8x8 digits."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainengine.errors import ConfigError, DataError
from trainengine.models import SmallCNN


def test_output_shape() -> None:
    model = SmallCNN(in_channels=1, num_classes=10)
    assert model(torch.randn(4, 1, 8, 8)).shape == (4, 10)
    rgb = SmallCNN(in_channels=3, num_classes=5, image_size=28)
    assert rgb(torch.randn(2, 3, 28, 28)).shape == (2, 5)


def test_pooling_stops_before_the_feature_map_vanishes() -> None:
    # 8x8 halves to 4, 2, 1: only three of the four blocks may pool.
    model = SmallCNN(channels=(8, 8, 8, 8), image_size=8)
    pools = [any(isinstance(m, nn.MaxPool2d) for m in block) for block in model.features]
    assert pools == [True, True, True, False]
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_group_norm_trains_with_a_batch_of_one() -> None:
    model = SmallCNN(channels=(12, 16), norm="group").train()
    assert any(isinstance(m, nn.GroupNorm) for m in model.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    model(torch.randn(1, 1, 8, 8)).sum().backward()


def test_wrong_input_shape_is_explained() -> None:
    model = SmallCNN(in_channels=1)
    with pytest.raises(DataError, match=r"\[B, 1, H, W\].*\(2, 64\)"):
        model(torch.randn(2, 64))
    with pytest.raises(DataError, match=r"\(2, 3, 8, 8\)"):
        model(torch.randn(2, 3, 8, 8))


def test_invalid_arguments_are_all_reported() -> None:
    with pytest.raises(ConfigError) as info:
        SmallCNN(in_channels=0, channels=(), dropout=-0.1, norm="layer")  # type: ignore[arg-type]  # a wrong type on purpose
    text = str(info.value)
    assert len(info.value.problems) == 4
    assert "in_channels" in text and "channels" in text and "dropout" in text
    assert "batch, group" in text


def test_overfits_a_tiny_batch() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    model = SmallCNN(dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(100):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]


def test_reaches_high_accuracy_on_sklearn_digits() -> None:
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8)
    y = torch.tensor(digits.target)
    perm = torch.randperm(len(y))
    train, test = perm[:1400], perm[1400:]
    model = SmallCNN()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(6):
        for batch in train[torch.randperm(len(train))].split(64):
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x[test]).argmax(1) == y[test]).float().mean().item()
    assert accuracy > 0.95
