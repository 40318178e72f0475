"""Name -> builder registry, so a config can say ``architecture: gpt`` instead of naming a class."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from trainengine import registries
from trainengine.errors import ConfigError
from trainengine.models._gpt import GPT, GPTConfig
from trainengine.models._spec import attach_spec
from trainengine.registries import MODELS

__all__ = ["ModelBuilder", "register_model", "list_models", "build_model", "build_model_for_data", "rebuild_model"]

ModelBuilder = Callable[..., nn.Module]


def register_model(name: str, builder: ModelBuilder, *, overwrite: bool = False) -> None:
    """Make ``builder`` available to :func:`build_model` and ``model.architecture: <name>``.

    The entry goes into :data:`trainengine.registries.MODELS`, the registry the config checks
    ``model.architecture`` against. For a fresh process (``resume``, ``export``) to find it, put
    the registering module in the config's ``plugins:`` list or a ``trainengine.plugins`` entry
    point (see docs/extending.md).

    Args:
        name: Architecture name used in configs (lower-case by convention).
        builder: Callable taking keyword arguments and returning an ``nn.Module``; a model
            class works as is.
        overwrite: Replace an existing entry instead of raising.

    Raises:
        ConfigError: ``name`` is empty, ``builder`` is not callable, or the name is already
            registered to another builder (and ``overwrite`` is False).

    Example:
        >>> from torch import nn
        >>> register_model("linear", nn.Linear, overwrite=True)
        >>> build_model("linear", in_features=3, out_features=1)
        Linear(in_features=3, out_features=1, bias=True)
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"model name must be a non-empty string, got {name!r}", prefix="cannot register model")
    if not callable(builder):
        raise ConfigError(
            f"builder for model {name!r} must be callable, got {type(builder).__name__}",
            prefix="cannot register model",
        )
    registries.register_model(name, builder, overwrite=overwrite)


def list_models() -> list[str]:
    """Return the registered architecture names, sorted.

    Example:
        >>> {"cnn", "gpt", "mlp"} <= set(list_models())
        True
    """
    return MODELS.names()


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
    problem = MODELS.problem(architecture)
    if problem is not None:
        raise ConfigError(problem, prefix="cannot build model")
    builder = MODELS.get(architecture)
    _check_arguments(architecture, builder, kwargs)
    model = builder(**kwargs)
    if isinstance(model, nn.Module):
        # Remember the recipe: checkpoints, the registry and export bundles rebuild from it.
        attach_spec(model, architecture, kwargs)
    return model


def build_model_for_data(
    architecture: str,
    options: Mapping[str, Any],
    *,
    input_shape: tuple[int, ...],
    num_outputs: int,
    vocab_size: int | None = None,
) -> nn.Module:
    """Build a registered model selected by ``model.architecture`` for the run's data.

    The builder gets ``model.options`` as keyword arguments, plus each data-derived size its
    signature names and ``options`` does not set: ``input_shape`` (one sample, e.g. ``(64,)``),
    ``input_dim`` (the product of ``input_shape``), ``num_outputs`` / ``output_dim`` /
    ``num_classes`` (classes, or 1 for regression) and ``vocab_size`` (token data).

    Raises:
        ConfigError: unknown architecture, or an argument the builder does not accept.

    Example:
        >>> from torch import nn
        >>> def linear(input_dim, num_outputs, bias=True):
        ...     return nn.Linear(input_dim, num_outputs, bias=bias)
        >>> register_model("linear_for_data", linear, overwrite=True)
        >>> build_model_for_data("linear_for_data", {"bias": False}, input_shape=(1, 3), num_outputs=2)
        Linear(in_features=3, out_features=2, bias=False)
    """
    problem = MODELS.problem(architecture)
    if problem is not None:
        raise ConfigError(problem, prefix="cannot build model")
    builder = MODELS.get(architecture)
    input_dim = 1
    for size in input_shape:
        input_dim *= int(size)
    derived: dict[str, Any] = {
        "input_shape": tuple(input_shape),
        "input_dim": input_dim,
        "num_outputs": num_outputs,
        "output_dim": num_outputs,
        "num_classes": num_outputs,
        "vocab_size": vocab_size,
    }
    params: Mapping[str, inspect.Parameter]
    try:
        params = inspect.signature(builder).parameters
    except (TypeError, ValueError):
        params = {}
    kwargs = dict(options)
    for name, value in derived.items():
        if name in params and name not in kwargs and value is not None:
            kwargs[name] = value
    return build_model(architecture, **kwargs)


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
            [f"model 'gpt': unknown argument {name!r}; GPTConfig fields: {', '.join(known)}" for name in unknown],
            prefix="cannot build model",
        )
    return GPT(GPTConfig(**fields))


# mlp (MLP), cnn (SmallCNN) and gpt (_build_gpt) are registered lazily in trainengine.registries.


def rebuild_model(spec: Mapping[str, Any]) -> nn.Module:
    """Build a fresh (randomly initialised) model from a spec made by :func:`model_spec`.

    Raises:
        ConfigError: The spec is malformed or names an architecture that is not registered
            (register custom ones with :func:`trainengine.models.register_model` first).

    Example:
        >>> from trainengine.models import build_model
        >>> m = rebuild_model({"architecture": "mlp", "kwargs": {"input_dim": 4, "output_dim": 2, "hidden_dims": [8]}})
        >>> type(m).__name__
        'MLP'
    """
    if (
        not isinstance(spec, Mapping)
        or not isinstance(spec.get("architecture"), str)
        or not isinstance(spec.get("kwargs", {}), Mapping)
    ):
        raise ConfigError(
            f"model spec must be {{'architecture': <name>, 'kwargs': {{...}}}}, got {spec!r}",
            prefix="cannot rebuild model",
        )
    return build_model(spec["architecture"], **dict(spec.get("kwargs") or {}))
