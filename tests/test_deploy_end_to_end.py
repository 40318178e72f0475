"""From `trainengine train` to a served model: registry -> export -> serve, all through the CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from trainengine.cli.main import main
from trainengine.data import load_builtin

httpx = pytest.importorskip("httpx")
pytest.importorskip("onnxruntime")
pytest.importorskip("fastapi")

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainengine", "serve", *args, "--port", str(port), "--log-level", "warning"],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "server did not start within 120 s"
        time.sleep(0.2)


@pytest.mark.slow
def test_train_register_promote_export_serve(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRAINENGINE_CACHE", str(tmp_path / "cache"))
    # 1. Train with checkpoints.
    assert (
        main(
            [
                "train",
                "--dataset",
                "digits",
                "--max-steps",
                "150",
                "--output-dir",
                "runs",
                "--run-name",
                "e2e",
                "--set",
                "tracking.progress=off",
                "--set",
                "checkpointing.enabled=true",
                "--learning-rate",
                "3e-3",
            ]
        )
        == 0
    )
    run = json.loads(Path("runs/default/e2e/run.json").read_text())
    # 2. Register the run's checkpoint, with a gate on production, and promote it.
    assert (
        main(
            [
                "registry",
                "register",
                "digits-mlp",
                "1.0.0",
                "--checkpoint",
                "runs/default/e2e",
                "--registry",
                "models.db",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "registry",
                "promote",
                "digits-mlp:1.0.0",
                "production",
                "--gate",
                "val_accuracy>=0.99",
                "--registry",
                "models.db",
            ]
        )
        == 2
    )
    assert "val_accuracy" in capsys.readouterr().err  # the gate names the metric, value and bound
    assert (
        main(
            [
                "registry",
                "promote",
                "digits-mlp:1.0.0",
                "production",
                "--gate",
                "val_accuracy>=0.8",
                "--registry",
                "models.db",
            ]
        )
        == 0
    )
    # 3. Export the production version.
    capsys.readouterr()
    assert (
        main(
            [
                "export",
                "--model",
                "digits-mlp@production",
                "--formats",
                "onnx,pytorch",
                "--output-dir",
                "exports",
                "--registry",
                "models.db",
            ]
        )
        == 0
    )
    bundle = Path(capsys.readouterr().out.strip().splitlines()[-1].removeprefix("bundle: "))
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["name"] == "digits-mlp" and manifest["version"] == "1.0.0"
    assert manifest["lineage"]["run_id"] == run["run_id"]
    # The reference answers: the registered model itself, loaded through the registry.
    from trainengine.registry import ModelRegistry

    with ModelRegistry("models.db") as registry:
        model = registry.get_model(name="digits-mlp", alias="production").load()
    val = load_builtin("digits", seed=run["seed"]).val
    xs = torch.stack([val[i][0] for i in range(64)])
    labels = [int(val[i][1]) for i in range(64)]
    with torch.no_grad():
        expected = model(xs).argmax(1).tolist()
    assert sum(e == y for e, y in zip(expected, labels, strict=True)) / 64 > 0.85

    # 4. Serve the exported bundle, and the registry alias (exported on the fly, cached).
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p))
    for target in (str(bundle), "digits-mlp@production"):
        proc, url = _start_server([target, "--registry", "models.db"], tmp_path, env)
        try:
            health = httpx.get(url + "/health").json()
            assert health["name"] == "digits-mlp" and health["version"] == "1.0.0"
            answer = httpx.post(url + "/predict", json={"inputs": xs.tolist()}, timeout=30).json()
            assert [p["class"] for p in answer["predictions"]] == expected
            assert httpx.post(url + "/predict", json={"inputs": [[0.0] * 63]}).status_code == 422
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    assert any((tmp_path / "cache" / "bundles" / "digits-mlp").iterdir())
