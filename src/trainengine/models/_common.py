"""Pieces shared by the built-in models: activation lookup and parameter counting."""

from __future__ import annotations

from typing import Literal

from torch import nn

__all__ = ["Activation", "ACTIVATIONS", "make_activation", "count_parameters"]

Activation = Literal["gelu", "relu", "silu", "tanh"]

# name -> module class; a class (not an instance) so every layer gets its own module and the
# state_dict / module tree stays the same whichever activation is picked.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "gelu": nn.GELU,
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}


def make_activation(name: str) -> nn.Module:
    """Return a fresh activation module for ``name`` (one of :data:`ACTIVATIONS`)."""
    return ACTIVATIONS[name]()


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Count the parameters of ``model``, each shared (tied) tensor once.

    Args:
        model: Any module.
        trainable_only: Count only parameters with ``requires_grad=True``.

    Returns:
        The number of scalar parameters.

    Example:
        >>> from torch import nn
        >>> count_parameters(nn.Linear(3, 2))
        8
    """
    # model.parameters() already yields a tied tensor once, so GPT's shared embedding/head
    # weight is not double counted.
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def check_choice(problems: list[str], field: str, value: object, choices: tuple[str, ...]) -> None:
    """Append a problem to ``problems`` when ``value`` is not one of ``choices``."""
    if value not in choices:
        options = ", ".join(choices)
        problems.append(f"{field}: {value!r} is not supported — choose one of {options}")


def check_positive_int(problems: list[str], field: str, value: object) -> None:
    """Append a problem to ``problems`` when ``value`` is not an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        problems.append(f"{field}: must be an integer >= 1, got {value!r}")


def check_dropout(problems: list[str], field: str, value: object) -> None:
    """Append a problem to ``problems`` when ``value`` is not a probability in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        problems.append(f"{field}: must be a probability in [0, 1), got {value!r}")
