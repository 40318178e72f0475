"""A multi-layer perceptron for tabular data and flattened small images."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from trainengine.errors import ConfigError, DataError
from trainengine.models._common import (
    ACTIVATIONS,
    Activation,
    check_choice,
    check_dropout,
    check_positive_int,
    make_activation,
)

__all__ = ["MLP"]


class MLP(nn.Module):
    """Feed-forward network: ``[Linear -> (LayerNorm) -> activation -> Dropout] * n -> Linear``.

    Inputs of shape ``[B, *]`` are flattened to ``[B, input_dim]``, so an image batch
    ``[B, 1, 8, 8]`` works with ``input_dim=64``. The output is always ``[B, output_dim]``
    (``[B, 1]`` for single-target regression; the task decides whether to squeeze).

    Args:
        input_dim: Number of input features after flattening all but the batch dimension.
        output_dim: Number of outputs (classes for classification, targets for regression).
        hidden_dims: Width of each hidden layer; ``()`` gives a linear model.
        dropout: Dropout probability after each hidden activation, in [0, 1).
        activation: Hidden activation: ``"gelu"``, ``"relu"``, ``"silu"`` or ``"tanh"``.
        norm: Put a LayerNorm between each hidden Linear and its activation; helps deeper
            or wider nets on unscaled features.

    Raises:
        ConfigError: An argument is out of range; the message lists every problem.

    Example:
        >>> import torch
        >>> model = MLP(input_dim=64, output_dim=10, hidden_dims=(32,))
        >>> model(torch.randn(4, 1, 8, 8)).shape
        torch.Size([4, 10])
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        hidden_dims: Sequence[int] = (128, 128),
        dropout: float = 0.1,
        activation: Activation = "gelu",
        norm: bool = False,
    ) -> None:
        super().__init__()
        problems: list[str] = []
        check_positive_int(problems, "input_dim", input_dim)
        check_positive_int(problems, "output_dim", output_dim)
        if isinstance(hidden_dims, (int, str)) or not isinstance(hidden_dims, Sequence):
            problems.append(f"hidden_dims: must be a sequence of widths like (128, 128), got {hidden_dims!r}")
            hidden_dims = ()
        for i, width in enumerate(hidden_dims):
            check_positive_int(problems, f"hidden_dims[{i}]", width)
        check_dropout(problems, "dropout", dropout)
        check_choice(problems, "activation", activation, tuple(ACTIVATIONS))
        if problems:
            raise ConfigError(problems, prefix="invalid MLP arguments")

        self.input_dim = input_dim
        self.output_dim = output_dim
        layers: list[nn.Module] = []
        width_in = input_dim
        for width in hidden_dims:
            layers.append(nn.Linear(width_in, width))
            if norm:
                layers.append(nn.LayerNorm(width))
            layers.append(make_activation(activation))
            layers.append(nn.Dropout(dropout))
            width_in = width
        layers.append(nn.Linear(width_in, output_dim))
        # One Sequential keeps state_dict keys simple and stable: "net.0.weight", ...
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``x`` of shape ``[B, *]`` (``input_dim`` features in all) to ``[B, output_dim]``."""
        if x.dim() < 2:
            raise DataError(
                f"MLP expects a batch of shape [B, {self.input_dim}] (or [B, ...] that flattens "
                f"to it), got shape {tuple(x.shape)}; add a batch dimension with x.unsqueeze(0)"
            )
        x = x.flatten(1)  # (B, input_dim)
        # A shape check (not a value check): static under torch.compile, and it replaces
        # the opaque "mat1 and mat2 shapes cannot be multiplied" with an actionable message.
        if x.shape[1] != self.input_dim:
            raise DataError(
                f"MLP was built with input_dim={self.input_dim} but the input flattens to "
                f"{x.shape[1]} features; build it with input_dim={x.shape[1]}"
            )
        return self.net(x)  # (B, output_dim)
