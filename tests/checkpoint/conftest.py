"""Shared helpers for checkpoint tests: exact structural equality and a small trainable setup."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn


def assert_same(a: Any, b: Any, where: str = "root") -> None:
    """Equal values of the same types, recursively; tensors bit-for-bit (NaN == NaN)."""
    if isinstance(a, dict) and isinstance(b, dict):  # OrderedDict comes back as dict
        assert list(a.keys()) == list(b.keys()), f"{where}: keys {list(a)} != {list(b)}"
        for (ka, va), kb in zip(a.items(), b.keys(), strict=True):
            assert type(ka) is type(kb), f"{where}: key {ka!r} type {type(ka)} != {type(kb)}"
            assert_same(va, b[kb], f"{where}[{ka!r}]")
        return
    assert type(a) is type(b), f"{where}: type {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, (
            f"{where}: {a.dtype}{tuple(a.shape)} != {b.dtype}{tuple(b.shape)}"
        )
        assert bit_equal(a, b), f"{where}: tensor values differ"
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: {a.dtype}{a.shape} != {b.dtype}{b.shape}"
        assert a.tobytes() == b.tobytes(), f"{where}: array values differ"
    elif isinstance(a, float):
        assert (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b)), (
            f"{where}: {a!r} != {b!r}"
        )
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), f"{where}: {a!r} != {b!r}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def bit_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    a, b = a.detach().cpu().contiguous(), b.detach().cpu().contiguous()
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.numel() == 0:
        return True
    return (
        bytes(a.reshape(-1).view(torch.uint8).numpy()) == bytes(b.reshape(-1).view(torch.uint8).numpy())
        if a.dtype != torch.bool
        else torch.equal(a, b)
    )


class TinyNet(nn.Module):
    """Dropout makes the next step depend on the torch RNG, so an exact resume must restore it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 16)
        self.drop = nn.Dropout(0.3)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(torch.relu(self.fc1(x))))


class Wrapper(nn.Module):
    """Stands in for DDP (``attr="module"``) or torch.compile (``attr="_orig_mod"``)."""

    def __init__(self, inner: nn.Module, attr: str) -> None:
        super().__init__()
        self.add_module(attr, inner)


def make_training(seed: int = 0):
    torch.manual_seed(seed)
    model = TinyNet()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1.0 + 0.5 * s))
    return model, opt, sched


def train_steps(model: nn.Module, opt: torch.optim.Optimizer, sched: Any, n: int, start: int) -> list[float]:
    losses = []
    for i in range(start, start + n):
        g = torch.Generator().manual_seed(1000 + i)  # data depends on the step only
        x, y = torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


@pytest.fixture
def ckpt_dir(tmp_path):
    return tmp_path / "ckpts"


def listing(folder) -> list[str]:
    """Names in a checkpoint folder, without the writers' lock file (it stays by design)."""
    return sorted(p.name for p in folder.iterdir() if p.name != ".writer.lock")


class _Helpers:
    listing = staticmethod(listing)
    assert_same = staticmethod(assert_same)
    bit_equal = staticmethod(bit_equal)
    make_training = staticmethod(make_training)
    train_steps = staticmethod(train_steps)
    TinyNet = TinyNet
    Wrapper = Wrapper


@pytest.fixture
def h():
    """Helpers for the tests in this folder (test modules cannot import conftest under importlib mode)."""
    return _Helpers
