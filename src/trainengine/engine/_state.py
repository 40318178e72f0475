"""The train state: one small object a checkpointer saves and restores exactly."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["TrainState", "capture_rng_state", "restore_rng_state"]


@dataclass
class TrainState:
    """Where a run is. Everything here is plain Python so it serialises to JSON.

    ``batch_in_epoch`` counts micro-batches consumed in the current epoch, so a resume can
    skip exactly those and continue at the next batch.
    """

    step: int = 0  # optimizer steps done
    epoch: int = 0  # current epoch, 0-based
    batch_in_epoch: int = 0  # micro-batches consumed in the current epoch
    samples_seen: int = 0
    tokens_seen: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    evals_since_improvement: int = 0
    num_nonfinite_steps: int = 0  # last value read back from the device
    stopped_early: bool = False
    stop_reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # callback state

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            if not hasattr(self, key):
                raise KeyError(f"unknown train-state field '{key}'")
            setattr(self, key, value)

    def snapshot(self) -> dict[str, Any]:
        """Everything a checkpoint needs to continue exactly: the fields plus every RNG state."""
        return {"state": self.state_dict(), "rng": capture_rng_state()}

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Inverse of :meth:`snapshot`: fields and RNG states as they were."""
        self.load_state_dict(snapshot["state"])
        restore_rng_state(snapshot["rng"])


def capture_rng_state() -> dict[str, Any]:
    """RNG states of python, numpy, torch (CPU) and every CUDA device."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
