"""``trainengine serve``: options, safe defaults, user errors, registry references, workers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import httpx
import pytest

from trainengine.cli.main import main

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's TestClient asks for httpx2; the serve extra installs httpx
    from fastapi.testclient import TestClient


@pytest.fixture
def uvicorn_calls(monkeypatch):
    """Replace uvicorn.run (which would block) with a recorder."""
    import uvicorn

    calls: list[tuple[tuple, dict]] = []

    def fake_run(app, **kwargs):
        calls.append(
            (
                (app,),
                dict(
                    kwargs,
                    env={k: v for k, v in os.environ.items() if k.startswith(("TRAINENGINE_SERVE_", "PROMETHEUS"))},
                ),
            )
        )
        if kwargs.get("factory"):
            from trainengine.serve._app import create_app_from_env

            calls[-1][1]["app_from_env"] = create_app_from_env()

    monkeypatch.setattr(uvicorn, "run", fake_run)
    return calls


def test_serves_on_loopback_by_default(digits_bundle, uvicorn_calls, capsys) -> None:
    assert main(["serve", str(digits_bundle.path)]) == 0
    (app,), kwargs = uvicorn_calls[0]
    assert kwargs["host"] == "127.0.0.1" and kwargs["port"] == 8080
    assert kwargs["timeout_keep_alive"] >= 60  # not uvicorn's 5 s: idle connections a proxy reuses stay open
    assert "warning" not in capsys.readouterr().err
    with TestClient(app) as client:
        assert client.get("/health").json()["runtime"] == "onnx"
        assert client.post("/predict", json={"inputs": [[0.0] * 64]}).status_code == 200  # no key configured


def test_public_bind_without_key_warns(digits_bundle, uvicorn_calls, capsys) -> None:
    assert main(["serve", str(digits_bundle.path), "--host", "0.0.0.0", "--port", "9001"]) == 0
    err = capsys.readouterr().err
    assert "warning: serving on 0.0.0.0 without an API key" in err and "--api-key-env" in err
    assert uvicorn_calls[0][1]["host"] == "0.0.0.0" and uvicorn_calls[0][1]["port"] == 9001


def test_api_key_from_environment(digits_bundle, uvicorn_calls, capsys, monkeypatch) -> None:
    assert main(["serve", str(digits_bundle.path), "--api-key-env", "SERVE_TEST_KEY"]) == 2
    err = capsys.readouterr().err
    assert (
        err.strip()
        == "error: --api-key-env SERVE_TEST_KEY: the variable is unset or empty; export SERVE_TEST_KEY=<key> first"
    )
    monkeypatch.setenv("SERVE_TEST_KEY", "abc123")
    assert main(["serve", str(digits_bundle.path), "--api-key-env", "SERVE_TEST_KEY", "--host", "0.0.0.0"]) == 0
    assert "warning" not in capsys.readouterr().err
    with TestClient(uvicorn_calls[0][0][0]) as client:
        assert client.post("/predict", json={"inputs": [[0.0] * 64]}).status_code == 401
        assert (
            client.post("/predict", json={"inputs": [[0.0] * 64]}, headers={"X-API-Key": "abc123"}).status_code == 200
        )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no/such/bundle"], "no/such/bundle is not an export bundle (no such folder)"),
        (["{bundle}", "--runtime", "tensorrt"], "unknown runtime 'tensorrt' — available: onnx, torch"),
        (["{bundle}", "--runtime", "torch", "--model", "model.onnx"], "--model picks an ONNX file"),
        (["{bundle}", "--model", "model.int8.onnx"], "'model.int8.onnx' is not an ONNX model of the bundle"),
        (["digits@production", "--registry", "{tmp}/none.db"], "no model registry at"),
    ],
)
def test_user_errors_exit_2_with_one_line(digits_bundle, uvicorn_calls, capsys, tmp_path, args, message) -> None:
    args = [a.format(bundle=digits_bundle.path, tmp=tmp_path) for a in args]
    assert main(["serve", *args]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    )
    assert not uvicorn_calls
    assert not (tmp_path / "none.db").exists()  # a missing registry is not created


def test_tampered_bundle_is_refused(digits_bundle, copy_bundle, uvicorn_calls, capsys) -> None:
    path = copy_bundle(digits_bundle.path)
    (path / "examples.json").write_text("{}")
    assert main(["serve", str(path)]) == 2
    assert "failed verification: examples.json: content changed" in capsys.readouterr().err and not uvicorn_calls


def test_torch_runtime(digits_bundle, uvicorn_calls) -> None:
    assert main(["serve", str(digits_bundle.path), "--runtime", "torch"]) == 0
    with TestClient(uvicorn_calls[0][0][0]) as client:
        assert client.get("/health").json()["runtime"] == "torch"
        assert client.post("/predict", json={"inputs": [[0.0] * 64]}).status_code == 200


def test_workers_use_an_app_factory_and_multiprocess_metrics(
    digits_bundle, uvicorn_calls, monkeypatch, metrics_of
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setenv("SERVE_TEST_KEY", "k")
    assert (
        main(
            ["serve", str(digits_bundle.path), "--workers", "3", "--api-key-env", "SERVE_TEST_KEY", "--max-batch", "8"]
        )
        == 0
    )
    (target,), kwargs = uvicorn_calls[0]
    assert (
        target == "trainengine.serve._app:create_app_from_env" and kwargs["factory"] is True and kwargs["workers"] == 3
    )
    assert kwargs["timeout_keep_alive"] >= 60
    env = kwargs["env"]
    assert (
        env["TRAINENGINE_SERVE_BUNDLE"] == str(digits_bundle.path.resolve())
        and env["TRAINENGINE_SERVE_API_KEY_ENV"] == "SERVE_TEST_KEY"
    )
    assert "k" not in env.values()  # the key itself is never copied into another variable
    metrics_dir = env["PROMETHEUS_MULTIPROC_DIR"]
    assert not os.path.exists(metrics_dir)  # the temporary folder is removed when the server stops
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ and "TRAINENGINE_SERVE_BUNDLE" not in os.environ
    app = kwargs["app_from_env"]  # what each worker builds
    with TestClient(app) as client:
        assert client.post("/predict", json={"inputs": [[0.0] * 64] * 9}, headers={"X-API-Key": "k"}).status_code == 422


def test_registry_reference(digits_bundle, uvicorn_calls, tmp_path, capsys) -> None:
    from trainengine.registry import ModelRegistry

    db = tmp_path / "models.db"
    with ModelRegistry(str(db)) as registry:
        model_id = registry.register_model("digits", "1.0.0", bundle_path=digits_bundle.path)
        registry.promote_model(model_id, "production")
    assert main(["serve", "digits@production", "--registry", str(db)]) == 0
    with TestClient(uvicorn_calls[0][0][0]) as client:
        assert client.get("/health").json()["name"] == "digits"
    assert main(["serve", "digits:1.0.0", "--registry", str(db)]) == 0
    assert main(["serve", "digits@staging", "--registry", str(db)]) == 2
    assert "no alias 'staging'" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_server_with_two_workers_end_to_end(digits_bundle, port, metrics_of) -> None:
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trainengine",
            "serve",
            str(digits_bundle.path),
            "--port",
            str(port),
            "--workers",
            "2",
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        for _ in range(6):
            assert httpx.post(url + "/predict", json={"inputs": [[0.0] * 64]}, timeout=10).status_code == 200
        m = metrics_of(httpx.get(url + "/metrics", timeout=10).text)
        assert m[("trainengine_serve_requests_total", frozenset({("endpoint", "/predict"), ("status", "200")}))] == 6
    finally:
        proc.terminate()
        proc.wait(timeout=30)
