"""An example input inferred from a model's first layer, for models that carry no spec."""

from __future__ import annotations

import torch
from torch import nn

from trainengine.errors import ExportError

__all__ = ["infer_example_input"]

_DEFAULT_SEQ_LEN = 16


def infer_example_input(model: nn.Module, *, max_seq_len: int | None = None) -> torch.Tensor:
    """A one-row batch for ``model``, read off its first parametrised leaf module.

    Only unambiguous first layers are used: ``nn.Linear`` gives float32 ``(1, in_features)``,
    ``nn.Embedding`` gives int64 ``(1, seq)`` token ids below ``num_embeddings`` (``seq`` =
    ``min(16, max_seq_len)``). Anything else (a convolution, whose spatial size the weights do
    not tell; a custom module) raises, naming the argument to pass instead.

    Args:
        model: The module to export (e.g. a plain ``nn.Sequential``).
        max_seq_len: Longest sequence the model accepts, when known.

    Returns:
        The example batch.

    Raises:
        ExportError: The first layer does not determine the input; the message says to pass
            ``example_input=`` (or ``reference_data=``).

    Example:
        >>> infer_example_input(nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))).shape
        torch.Size([1, 64])
    """
    first = next((m for m in model.modules() if next(m.parameters(recurse=False), None) is not None), None)
    if isinstance(first, nn.Linear) and not isinstance(first, nn.modules.lazy.LazyModuleMixin):
        gen = torch.Generator().manual_seed(0)
        return torch.randn(1, first.in_features, generator=gen)  # (1, in_features)
    if isinstance(first, nn.Embedding):
        gen = torch.Generator().manual_seed(0)
        length = min(_DEFAULT_SEQ_LEN, max_seq_len or _DEFAULT_SEQ_LEN)
        return torch.randint(0, first.num_embeddings, (1, length), generator=gen)  # (1, T) int64
    fix = "pass example_input= (a batch the model accepts) or reference_data= (its training data)"
    if first is None:
        raise ExportError(f"cannot infer an example input: the model {type(model).__name__} has no parameters; {fix}")
    if isinstance(first, nn.modules.conv._ConvNd):
        spatial = ", 32" * len(first.kernel_size)  # Conv1d: (L,), Conv2d: (H, W), Conv3d: (D, H, W)
        raise ExportError(
            f"cannot infer an example input: the first layer is {first!r}, whose input's spatial size the "
            f"weights do not tell; {fix}, e.g. example_input=torch.randn(1, {first.in_channels}{spatial})"
        )
    raise ExportError(
        f"cannot infer an example input: the first layer with parameters is {type(first).__name__} (only a "
        f"first nn.Linear or nn.Embedding determines the input); {fix}"
    )
