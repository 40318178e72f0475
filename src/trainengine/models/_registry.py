"""Name -> builder registry, so a config can say ``architecture: gpt`` instead of naming a class."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from trainengine.errors import ConfigError
from trainengine.models._cnn import SmallCNN
from trainengine.models._gpt import GPT, GPTConfig
from trainengine.models._mlp import MLP
from trainengine.models._spec import attach_spec

__all__ = ["ModelBuilder", "register_model", "list_models", "build_model"]

ModelBuilder = Callable[..., nn.Module]

_MODELS: dict[str, ModelBuilder] = {}


def register_model(name: str, builder: ModelBuilder, *, overwrite: bool = False) -> None:
    """Make ``builder`` available to :func:`build_model` under ``name``.

    Args:
        name: Architecture name used in configs (lower-case by convention).
        builder: Callable taking keyword arguments and returning an ``nn.Module``; a model
            class works as is.
        overwrite: Replace an existing entry instead of raising.

    Raises:
        ConfigError: ``name`` is empty or already registered (and ``overwrite`` is False).

    Example:
        >>> from torch import nn
        >>> register_model("linear", nn.Linear, overwrite=True)
        >>> build_model("linear", in_features=3, out_features=1)
        Linear(in_features=3, out_features=1, bias=True)
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(
            f"model name must be a non-empty string, got {name!r}", prefix="cannot register model"
        )
    if not callable(builder):
        raise ConfigError(
            f"builder for model {name!r} must be callable, got {type(builder).__name__}",
            prefix="cannot register model",
        )
    if name in _MODELS and not overwrite:
        raise ConfigError(
            f"model {name!r} is already registered; pick another name or pass overwrite=True",
            prefix="cannot register model",
        )
    _MODELS[name] = builder


def list_models() -> list[str]:
    """Return the registered architecture names, sorted.

    Example:
        >>> {"cnn", "gpt", "mlp"} <= set(list_models())
        True
    """
    return sorted(_MODELS)


def build_model(architecture: str, **kwargs: Any) -> nn.Module:
    """Construct the model registered as ``architecture`` from keyword arguments.

    Built in: ``"mlp"`` (:class:`MLP`), ``"cnn"`` (:class:`SmallCNN`) and ``"gpt"`` (the
    keyword arguments are :class:`GPTConfig` fields).

    Args:
        architecture: A name from :func:`list_models`.
        **kwargs: Arguments of that model's builder.

    Returns:
        A freshly initialised module.

    Raises:
        ConfigError: The name is unknown (the message lists the available names), an
            argument is unknown or missing, or a value is invalid.

    Example:
        >>> model = build_model("gpt", vocab_size=64, n_layers=1, d_model=32, n_heads=2)
        >>> type(model).__name__
        'GPT'
    """
    builder = _MODELS.get(architecture)
    if builder is None:
        available = ", ".join(list_models())
        close = difflib.get_close_matches(str(architecture), list_models(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"unknown model architecture {architecture!r}{hint} — available: {available}",
            prefix="cannot build model",
        )
    _check_arguments(architecture, builder, kwargs)
    model = builder(**kwargs)
    if isinstance(model, nn.Module):
        # Remember the recipe: checkpoints, the registry and export bundles rebuild from it.
        attach_spec(model, architecture, kwargs)
    return model


def _check_arguments(architecture: str, builder: ModelBuilder, kwargs: dict[str, Any]) -> None:
    # Turn a TypeError from a misspelt or missing argument into a ConfigError naming the
    # accepted arguments, before the builder runs.
    try:
        signature = inspect.signature(builder)
    except (TypeError, ValueError):  # some C callables have no signature; let them raise
        return
    try:
        signature.bind(**kwargs)
    except TypeError as exc:
        variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        params = signature.parameters.values()
        accepted = ", ".join(p.name for p in params if p.kind not in variadic)
        raise ConfigError(
            f"model {architecture!r}: {exc}; accepted arguments: {accepted}",
            prefix="cannot build model",
        ) from None


def _build_gpt(**fields: Any) -> GPT:
    """Build a :class:`GPT` from :class:`GPTConfig` fields, rejecting unknown ones."""
    known = [f.name for f in dataclasses.fields(GPTConfig)]
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise ConfigError(
            [
                f"model 'gpt': unknown argument {name!r}; GPTConfig fields: {', '.join(known)}"
                for name in unknown
            ],
            prefix="cannot build model",
        )
    return GPT(GPTConfig(**fields))


register_model("mlp", MLP)
register_model("cnn", SmallCNN)
register_model("gpt", _build_gpt)
