"""Data iteration for the loop: accumulation windows, the data position, exact resume.

A run resumed from a checkpoint sees the same batches in the same order as the run that wrote
it: the checkpoint holds the random state the epoch's order was drawn from (the DataLoader's
generator and torch's global RNG at the epoch's start) and ``TrainState.batch_in_epoch``; on
resume the epoch's order is drawn again from those states and the consumed batches are skipped.
An epoch-aware sampler (``set_epoch``: the curriculum sampler, ``DistributedSampler``) is told the
epoch before each pass, and a curriculum sampler's own state (loss-based difficulty scores) is
saved and restored with the data position.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from trainengine.data import CurriculumBatchSampler
from trainengine.engine._state import TrainState, capture_rng_state, restore_rng_state

__all__ = ["DataIterator"]


class DataIterator:
    """Yields windows of ``accumulation_steps`` device batches, one window per optimizer step.

    The position inside the epoch is ``state.batch_in_epoch`` (the loop advances it after each
    step, so a window that fails is not counted); this object holds the random state the
    current epoch's order was drawn from and the time spent waiting for batches.

    Args:
        loader: the training DataLoader (or any iterable of batches).
        state: the run's train state (``batch_in_epoch`` = micro-batches already consumed).
        accumulation_steps: micro-batches per optimizer step.
        to_device: moves one batch to the training device.

    Example:
        >>> import torch
        >>> from trainengine.engine import TrainState
        >>> it = DataIterator([torch.zeros(2)] * 5, TrainState(), accumulation_steps=2, to_device=lambda b: b)
        >>> [len(w) for w in it.windows()]  # the epoch's last window may be shorter
        [2, 2, 1]
    """

    def __init__(
        self, loader: Any, state: TrainState, *, accumulation_steps: int, to_device: Callable[[Any], Any]
    ) -> None:
        self.loader = loader
        self.state = state
        self.accumulation_steps = accumulation_steps
        self.to_device = to_device
        self.data_wait = 0.0  # seconds spent waiting for batches since the last reset_wait()
        self._epoch_start: dict[str, Any] = {"generator": None, "global_rng": None}
        self._resume: dict[str, Any] | None = None  # a checkpoint's position, used by the next windows()

    def generator(self) -> torch.Generator | None:
        """The generator the loader's sampler draws the order from (None: sequential data)."""
        for owner in (self.loader, getattr(self.loader, "sampler", None), getattr(self.loader, "batch_sampler", None)):
            gen = getattr(owner, "generator", None)
            if gen is not None:
                return gen
        return None

    def _curriculum(self) -> CurriculumBatchSampler | None:
        """The loader's curriculum / mixing batch sampler (its scores travel in checkpoints), if any."""
        sampler = getattr(self.loader, "batch_sampler", None)
        return sampler if isinstance(sampler, CurriculumBatchSampler) else None

    def _set_epoch(self) -> None:
        """Tell an epoch-aware sampler (curriculum, DistributedSampler) which epoch it draws."""
        for owner in (getattr(self.loader, "batch_sampler", None), getattr(self.loader, "sampler", None)):
            set_epoch = getattr(owner, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(self.state.epoch)
                return

    def state_dict(self) -> dict[str, Any]:
        """The random state the current epoch's order comes from (the next epoch's, between epochs)."""
        if self.state.batch_in_epoch == 0:  # between epochs: the next epoch starts from now
            gen = self.generator()
            out: dict[str, Any] = {
                "generator": gen.get_state() if gen is not None else None,
                "global_rng": torch.get_rng_state(),
            }
        else:
            out = dict(self._epoch_start)
        curriculum = self._curriculum()
        if curriculum is not None:
            out["sampler"] = curriculum.state_dict()
        return out

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Resume at a checkpoint's position: the next :meth:`windows` redraws that epoch's order."""
        self._resume = dict(state) if state is not None else None
        curriculum = self._curriculum()
        if curriculum is not None and state is not None:
            curriculum.load_state_dict(state.get("sampler"))

    def reset_wait(self) -> float:
        """The data wait since the last reset (seconds), and start counting again."""
        wait, self.data_wait = self.data_wait, 0.0
        return wait

    def windows(self) -> Iterator[list[Any]]:
        """One epoch (from ``state.batch_in_epoch`` on) as lists of device batches."""
        accum = self.accumulation_steps
        window: list[Any] = []
        to_device = self.to_device
        skip = self.state.batch_in_epoch  # resume mid-epoch: batches already consumed
        self._set_epoch()
        gen = self.generator()
        resume_rng = None
        if self._resume is not None:
            # Re-create the epoch's order exactly: the sampler draws from these states.
            if gen is not None and self._resume.get("generator") is not None:
                gen.set_state(self._resume["generator"])
            if skip:
                resume_rng = capture_rng_state()
                torch.set_rng_state(self._resume["global_rng"])
            self._resume = None
        self._epoch_start = {
            "generator": gen.get_state() if gen is not None else None,
            "global_rng": torch.get_rng_state(),
        }
        for i, batch in enumerate(self._timed()):
            if resume_rng is not None:
                # The sampler has drawn its order (on the first batch): continue the random
                # streams (dropout, ...) where the checkpoint left them.
                restore_rng_state(resume_rng)
                resume_rng = None
            if i < skip:
                continue
            window.append(to_device(batch))
            if len(window) == accum:
                yield window
                window = []
        if window:
            yield window

    def _timed(self) -> Iterator[Any]:
        """Iterate the loader while adding the time spent waiting for batches to ``data_wait``."""
        clock = time.perf_counter
        it = iter(self.loader)
        while True:
            start = clock()
            try:
                batch = next(it)
            except StopIteration:
                return
            self.data_wait += clock() - start
            yield batch
