"""Errors of the model registry (all are :class:`~trainengine.errors.RegistryError`)."""

from __future__ import annotations

from trainengine.errors import RegistryError

__all__ = ["RegistryError", "RegistryValueError", "ModelNotFoundError", "PromotionGateError"]


class RegistryValueError(RegistryError, ValueError):
    """An argument is invalid: a bad name, version, alias, tag, metric or gate."""


class ModelNotFoundError(RegistryError, KeyError):
    """No registered model matches the query; the message lists what exists."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class PromotionGateError(RegistryError):
    """A promotion failed the alias's gates; the message names each failing metric and its bound.

    Attributes:
        failures: One line per failed gate (``"val_loss = 0.52 fails <= 0.4"``).
    """

    def __init__(self, message: str, failures: list[str]) -> None:
        super().__init__(message)
        self.failures = list(failures)
