"""An MLP over tabular rows whose categorical columns are learned embeddings."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from trainengine.errors import ConfigError, DataError
from trainengine.models._common import Activation, check_positive_int
from trainengine.models._mlp import MLP

__all__ = ["TabularMLP"]

_MAX_EMBEDDING_DIM = 16
_OTHER = 1  # the code of "other" in trainengine._preprocess's layout (0 = missing, 2 + k = categories[k])


class TabularMLP(nn.Module):
    """An :class:`~trainengine.models.MLP` over ``[dense features | embedded category codes]``.

    The input row is the layout ``trainengine._preprocess`` writes for
    ``data.categorical_encoding: embedding``: ``dense_width`` float features, then one column
    per categorical feature holding its category *code* as a float (0 = missing, 1 = other,
    ``2 + k`` = the k-th category). Each code column goes through its own ``nn.Embedding``; the
    vectors are concatenated after the dense part and fed to the MLP. A code outside
    ``[0, cardinality)`` (or NaN) is read as "other" rather than failing inside ONNX Runtime.
    Everything is a fixed graph of tensor ops, so the model exports to ONNX as it is.

    Args:
        dense_width: Number of leading float features (0 when every feature is categorical).
        cardinalities: Number of codes of each categorical column, in input order.
        output_dim: Number of outputs (classes, or 1 for regression).
        hidden_dims: Width of each hidden layer of the MLP.
        dropout: Dropout probability after each hidden activation, in [0, 1).
        activation: ``"gelu"``, ``"relu"``, ``"silu"`` or ``"tanh"``.
        embedding_dim: Width of every embedding; None = ``min(16, (cardinality + 1) // 2)`` per column.

    Raises:
        ConfigError: An argument is out of range; the message lists every problem.

    Example:
        >>> model = TabularMLP(dense_width=3, cardinalities=[5, 4], output_dim=2, hidden_dims=(8,))
        >>> x = model.example_input(batch=4)
        >>> x.shape, model(x).shape
        (torch.Size([4, 5]), torch.Size([4, 2]))
    """

    def __init__(
        self,
        dense_width: int,
        cardinalities: Sequence[int],
        output_dim: int,
        hidden_dims: Sequence[int] = (128, 128),
        dropout: float = 0.1,
        activation: Activation = "gelu",
        embedding_dim: int | None = None,
    ) -> None:
        super().__init__()
        problems: list[str] = []
        if isinstance(dense_width, bool) or not isinstance(dense_width, int) or dense_width < 0:
            problems.append(f"dense_width: must be an integer >= 0, got {dense_width!r}")
            dense_width = 0
        if isinstance(cardinalities, (int, str)) or not isinstance(cardinalities, Sequence):
            problems.append(f"cardinalities: must be a list of code counts like [4, 12], got {cardinalities!r}")
            cardinalities = []
        for i, card in enumerate(cardinalities):
            check_positive_int(problems, f"cardinalities[{i}]", card)
        if not problems and dense_width + len(cardinalities) == 0:
            problems.append("dense_width is 0 and cardinalities is empty: the model would have no input")
        if embedding_dim is not None:
            check_positive_int(problems, "embedding_dim", embedding_dim)
        if problems:
            raise ConfigError(problems, prefix="invalid TabularMLP arguments")

        self.dense_width = dense_width
        self.cardinalities = [int(c) for c in cardinalities]
        self.output_dim = output_dim
        dims = [embedding_dim or min(_MAX_EMBEDDING_DIM, (c + 1) // 2) for c in self.cardinalities]
        self.embeddings = nn.ModuleList(nn.Embedding(c, d) for c, d in zip(self.cardinalities, dims, strict=True))
        # The MLP validates output_dim / hidden_dims / dropout / activation and reports them all.
        self.mlp = MLP(dense_width + sum(dims), output_dim, hidden_dims, dropout, activation)

    @property
    def input_width(self) -> int:
        """Columns of one input row: ``dense_width + len(cardinalities)``."""
        return self.dense_width + len(self.cardinalities)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``x`` of shape ``[B, dense_width + len(cardinalities)]`` to ``[B, output_dim]``."""
        if x.dim() != 2 or x.shape[1] != self.input_width:
            raise DataError(
                f"TabularMLP expects a batch of shape [B, {self.input_width}] ({self.dense_width} dense features + "
                f"{len(self.cardinalities)} category codes), got shape {tuple(x.shape)}; encode the rows with the "
                "run's preprocessing (preprocessing.json), or build the model for this width"
            )
        parts = [x[:, : self.dense_width]]  # (B, dense_width)
        for j, (card, emb) in enumerate(zip(self.cardinalities, self.embeddings, strict=True)):
            code = x[:, self.dense_width + j]  # (B,) float codes
            # Out of range (or NaN, which fails both comparisons) -> "other": no data-dependent branch.
            valid = (code >= 0) & (code < card)
            idx = torch.where(valid, code, torch.full_like(code, float(min(_OTHER, card - 1)))).long()  # (B,)
            parts.append(emb(idx))  # (B, dim_j)
        return self.mlp(torch.cat(parts, dim=1))  # (B, output_dim)

    def example_input(self, batch: int = 1) -> torch.Tensor:
        """A valid input batch (random dense features, codes within range) for tracing and export.

        Example:
            >>> TabularMLP(0, [3], 2, hidden_dims=()).example_input(2).shape
            torch.Size([2, 1])
        """
        gen = torch.Generator().manual_seed(0)
        dense = torch.randn(batch, self.dense_width, generator=gen)  # (B, dense_width)
        codes = [torch.randint(0, c, (batch, 1), generator=gen).float() for c in self.cardinalities]  # (B, 1) each
        return torch.cat([dense, *codes], dim=1)  # (B, input_width)
