"""A small convolutional classifier for low-resolution images (8x8 digits, 28x28 MNIST)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from trainengine.errors import ConfigError, DataError
from trainengine.models._common import check_choice, check_dropout, check_positive_int

__all__ = ["SmallCNN"]


class SmallCNN(nn.Module):
    """Conv blocks -> global average pool -> dropout -> linear head.

    Each block is ``Conv3x3 (no bias) -> BatchNorm/GroupNorm -> ReLU``, followed by a 2x2
    max-pool while the feature map is still at least 2 pixels wide. The pooling plan is
    fixed at construction from ``image_size`` (so ``forward`` has no shape-dependent
    branches); thanks to the global average pool, other image sizes still run.

    Args:
        in_channels: Channels of the input images (1 for grey-scale).
        num_classes: Number of output logits.
        channels: Output channels of each conv block; one block per entry.
        image_size: Expected height/width of the input, used to decide how many blocks are
            followed by a 2x2 max-pool (8 -> pools after at most 3 blocks).
        dropout: Dropout probability before the linear head, in [0, 1).
        norm: ``"batch"`` (BatchNorm2d, the default) or ``"group"`` (GroupNorm; use it for
            very small per-device batches, where batch statistics are noisy).

    Raises:
        ConfigError: An argument is out of range; the message lists every problem.

    Example:
        >>> import torch
        >>> model = SmallCNN(in_channels=1, num_classes=10)
        >>> model(torch.randn(4, 1, 8, 8)).shape
        torch.Size([4, 10])
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        channels: Sequence[int] = (32, 64),
        image_size: int = 8,
        dropout: float = 0.1,
        norm: Literal["batch", "group"] = "batch",
    ) -> None:
        super().__init__()
        problems: list[str] = []
        check_positive_int(problems, "in_channels", in_channels)
        check_positive_int(problems, "num_classes", num_classes)
        check_positive_int(problems, "image_size", image_size)
        if isinstance(channels, (int, str)) or not isinstance(channels, Sequence) or not channels:
            problems.append(f"channels: must be a non-empty sequence like (32, 64), got {channels!r}")
            channels = ()
        for i, c in enumerate(channels):
            check_positive_int(problems, f"channels[{i}]", c)
        check_dropout(problems, "dropout", dropout)
        check_choice(problems, "norm", norm, ("batch", "group"))
        if problems:
            raise ConfigError(problems, prefix="invalid SmallCNN arguments")

        self.in_channels = in_channels
        blocks: list[nn.Module] = []
        c_in, size = in_channels, image_size
        for c_out in channels:
            # GroupNorm needs a group count that divides the channels; up to 8 groups.
            norm_layer: nn.Module
            if norm == "batch":
                norm_layer = nn.BatchNorm2d(c_out)
            else:
                norm_layer = nn.GroupNorm(math.gcd(c_out, 8), c_out)
            block: list[nn.Module] = [
                # No conv bias: the norm layer right after has its own shift.
                nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
                norm_layer,
                nn.ReLU(),
            ]
            if size >= 2:
                block.append(nn.MaxPool2d(2))
                size //= 2
            blocks.append(nn.Sequential(*block))
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images ``[B, C, H, W]`` to logits ``[B, num_classes]``."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise DataError(
                f"SmallCNN expects images of shape [B, {self.in_channels}, H, W], got shape "
                f"{tuple(x.shape)}; reshape flat pixels with x.view(B, {self.in_channels}, H, W) "
                f"or build the model with in_channels matching dimension 1"
            )
        x = self.features(x)  # (B, C_last, H', W')
        x = self.pool(x).flatten(1)  # (B, C_last)
        return self.head(self.dropout(x))  # (B, num_classes)
