"""Fixtures for the serving tests: contract-conforming export bundles and a live server.

Bundles come from ``trainengine.export.create_export_bundle`` (ONNX + PyTorch formats); the
bundle's ``inference.py`` / ``server.py`` are copies of this package's ``_runtime.py`` / ``_app.py``.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from trainengine.data import TokenWindowDataset, load_builtin
from trainengine.models import build_model
from trainengine.tasks import TaskSpec


@dataclass
class BundleInfo:
    """A bundle on disk plus what the tests need to check its answers independently."""

    path: Path
    model: torch.nn.Module  # the PyTorch model the bundle was exported from (eval mode)
    task: TaskSpec
    train: Any = None
    val: Any = None
    target_scaling: dict[str, float] | None = None


def _export(model: torch.nn.Module, task: TaskSpec, out: Path, name: str, **kwargs: Any) -> Path:
    from trainengine.export import create_export_bundle

    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_export_bundle(
            model, task_spec=task, formats=["onnx", "pytorch"], output_dir=out, name=name, **kwargs
        )


def _train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, loss_fn: Callable) -> None:
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=gen)
        opt.zero_grad()
        loss_fn(model(x[idx]), y[idx]).backward()
        opt.step()
    model.eval()


@pytest.fixture(scope="session")
def digits_bundle(tmp_path_factory: pytest.TempPathFactory) -> BundleInfo:
    """An MLP trained on digits (300 steps, ~95% val accuracy) exported as a bundle."""
    torch.manual_seed(0)
    splits = load_builtin("digits")
    x, y = _val_x(splits.train), torch.stack([splits.train[i][1] for i in range(len(splits.train))])
    model = build_model("mlp", input_dim=64, output_dim=10, hidden_dims=(64,), dropout=0.0)
    _train(model, x, y, 300, torch.nn.functional.cross_entropy)
    task = TaskSpec.classification("digits", 10)
    path = _export(
        model,
        task,
        tmp_path_factory.mktemp("bundles"),
        "digits",
        reference_data=splits.train,
        example_input=_val_x(splits.val)[:8],
    )
    return BundleInfo(path, model, task, splits.train, splits.val)


@pytest.fixture(scope="session")
def regression_bundle(tmp_path_factory: pytest.TempPathFactory) -> BundleInfo:
    """A small MLP regressor on diabetes (single output)."""
    torch.manual_seed(0)
    splits = load_builtin("diabetes")
    x, y = _val_x(splits.train), torch.stack([splits.train[i][1] for i in range(len(splits.train))])
    model = build_model("mlp", input_dim=10, output_dim=1, hidden_dims=(16,), dropout=0.0)
    _train(model, x, y, 100, lambda out, t: torch.nn.functional.mse_loss(out.squeeze(-1), t))
    task = TaskSpec.regression("diabetes")
    scaling = {"mean": splits.info.target_mean, "std": splits.info.target_std}
    path = _export(
        model,
        task,
        tmp_path_factory.mktemp("bundles"),
        "diabetes",
        reference_data=splits.train,
        target_scaling=scaling,
        version="1.2.0",
    )
    return BundleInfo(path, model, task, splits.train, splits.val, scaling)


@pytest.fixture(scope="session")
def gpt_bundle(tmp_path_factory: pytest.TempPathFactory) -> BundleInfo:
    """A tiny byte-level GPT (untrained) with dynamic batch and sequence axes."""
    torch.manual_seed(0)
    model = build_model("gpt", vocab_size=256, max_seq_len=32, d_model=32, n_heads=2, n_layers=1)
    task = TaskSpec.language_modeling("bytes")
    text = (Path(__file__).read_bytes() * 2)[:8000]
    stream = torch.tensor(list(text), dtype=torch.uint8)
    windows = stream[: (len(stream) // 33) * 33].reshape(-1, 33)
    train = TokenWindowDataset(windows)
    path = _export(model, task, tmp_path_factory.mktemp("bundles"), "bytes-gpt", reference_data=train)
    return BundleInfo(path, model, task, train, None)


def _val_x(dataset: Any) -> torch.Tensor:
    return torch.stack([dataset[i][0] for i in range(len(dataset))])


@pytest.fixture
def copy_bundle(tmp_path: Path) -> Callable[[Path], Path]:
    """A private copy of a session bundle that a test may modify."""

    def copy(src: Path) -> Path:
        dst = tmp_path / src.name
        shutil.copytree(src, dst)
        return dst

    return copy


class LiveServer:
    """A real uvicorn server on an ephemeral loopback port, in a background thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        from trainengine.serve._app import KEEP_ALIVE_S

        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=5,
            timeout_keep_alive=KEEP_ALIVE_S,  # as trainengine serve runs it
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@pytest.fixture
def live_server() -> Iterator[Callable[[Any], LiveServer]]:
    """``with live_server(app) as server: httpx.get(server.url + "/health")``."""
    started: list[LiveServer] = []

    def start(app: Any) -> LiveServer:
        server = LiveServer(app)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.thread.is_alive():
            server.__exit__()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def port() -> int:
    """A free loopback port (for servers started in a subprocess)."""
    return free_port()


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus text -> {(sample name, labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


@pytest.fixture
def metrics_of() -> Callable[[str], dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    return parse_metrics


@pytest.fixture(scope="session")
def site_packages() -> str:
    """The virtualenv's site-packages (no trainengine source on it: that comes through a .pth file)."""
    import numpy

    return str(Path(numpy.__file__).resolve().parents[1])


@pytest.fixture(scope="session")
def digits_val(digits_bundle: BundleInfo) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of the digits validation split as numpy."""
    x = _val_x(digits_bundle.val).numpy()
    y = np.array([int(digits_bundle.val[i][1]) for i in range(len(digits_bundle.val))])
    return x, y
