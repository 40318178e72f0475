"""A bundle runs without trainengine: inference.py and server.py with numpy + onnxruntime + fastapi only.

The subprocesses run ``python -S`` with PYTHONPATH set to the virtualenv's site-packages alone:
``-S`` skips the .pth file of the editable trainengine install, so ``import trainengine`` fails
there (checked) and any trainengine import in the bundle's scripts would crash them.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar

import httpx
import numpy as np
import pytest

SERVE_SRC = Path(__file__).resolve().parents[2] / "src" / "trainengine" / "serve"


def _env(site_packages: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PROMETHEUS_MULTIPROC_DIR")}
    env.update(PYTHONPATH=site_packages, PYTHONDONTWRITEBYTECODE="1", **extra)
    return env


@pytest.fixture
def standalone_bundle(digits_bundle, copy_bundle) -> Path:
    path = copy_bundle(digits_bundle.path)
    # The exporter already copied these; copying the current sources again keeps the test honest
    # about *these* files (the hashes stay valid: the fixture bundle was exported from them).
    shutil.copyfile(SERVE_SRC / "_runtime.py", path / "inference.py")
    shutil.copyfile(SERVE_SRC / "_app.py", path / "server.py")
    shutil.copyfile(SERVE_SRC / "_alerting.py", path / "alerting.py")
    shutil.copyfile(SERVE_SRC.parent / "_alerting.py", path / "_alerting.py")
    return path


def test_trainengine_is_not_importable_in_the_subprocess_environment(site_packages) -> None:
    result = subprocess.run(
        [sys.executable, "-S", "-c", "import trainengine"], env=_env(site_packages), capture_output=True, text=True
    )
    assert result.returncode == 1 and "No module named 'trainengine'" in result.stderr


def test_inference_script_predicts_without_trainengine(
    standalone_bundle, digits_bundle, site_packages, tmp_path
) -> None:
    result = subprocess.run(
        [sys.executable, "-S", "inference.py", "--input", "examples.json"],
        cwd=standalone_bundle,
        env=_env(site_packages),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    examples = json.loads((standalone_bundle / "examples.json").read_text())
    assert out["model"] == "digits" and len(out["predictions"]) == len(examples["inputs"])
    import torch

    with torch.no_grad():
        probs = torch.softmax(digits_bundle.model(torch.tensor(examples["inputs"])).double(), -1).numpy()
    assert [p["class"] for p in out["predictions"]] == probs.argmax(1).tolist()
    np.testing.assert_allclose([p["probabilities"] for p in out["predictions"]], probs, atol=1e-5)
    assert not (standalone_bundle / "__pycache__").exists()

    # From elsewhere with --bundle, and a user error: one line, exit 2.
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"inputs": [[0.0] * 63]}))
    result = subprocess.run(
        [
            sys.executable,
            "-S",
            str(standalone_bundle / "inference.py"),
            "--input",
            str(bad),
            "--bundle",
            str(standalone_bundle),
        ],
        cwd=tmp_path,
        env=_env(site_packages),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and result.stderr.strip() == "error: inputs[0]: expected shape [64], got [63]"


def test_inference_script_refuses_a_tampered_bundle(standalone_bundle, site_packages) -> None:
    with (standalone_bundle / "model.onnx").open("ab") as fh:
        fh.write(b"x")
    result = subprocess.run(
        [sys.executable, "-S", "inference.py", "--input", "examples.json"],
        cwd=standalone_bundle,
        env=_env(site_packages),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        result.returncode == 2 and "model.onnx: content changed" in result.stderr and "Traceback" not in result.stderr
    )


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        try:
            response = httpx.get(url + "/health", timeout=1.0)
            if response.status_code == 200:
                return response.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("server did not become healthy")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


class _Hook(http.server.BaseHTTPRequestHandler):
    """A webhook endpoint: the JSON bodies POSTed to it land in ``bodies``."""

    bodies: ClassVar[list] = []

    def do_POST(self) -> None:
        _Hook.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_server_script_serves_without_trainengine(standalone_bundle, site_packages, port, digits_val) -> None:
    hook = http.server.HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    _Hook.bodies = []
    hook_url = f"http://127.0.0.1:{hook.server_address[1]}/hook"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-S",
            "server.py",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--alert-webhook",
            hook_url,
            "--alert-interval-s",
            "0.2",
        ],
        cwd=standalone_bundle,
        env=_env(site_packages),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        health = _wait_healthy(url, proc)
        assert health["status"] == "ok" and health["name"] == "digits" and health["runtime"] == "onnx"
        examples = json.loads((standalone_bundle / "examples.json").read_text())
        response = httpx.post(url + "/predict", json={"inputs": examples["inputs"]}, timeout=10)
        assert response.status_code == 200
        assert [p["class"] for p in response.json()["predictions"]] == [p["class"] for p in examples["predictions"]]
        bad = httpx.post(url + "/predict", json={"inputs": [[0.0] * 63]}, timeout=10)
        assert bad.status_code == 422 and bad.json()["detail"] == "inputs[0]: expected shape [64], got [63]"
        assert "trainengine_serve_requests_total" in httpx.get(url + "/metrics", timeout=10).text
        # Shifted inputs drift: the bundle's own alert rules send a webhook, without trainengine.
        shifted = (digits_val[0][:150] + 4.0).tolist()
        assert httpx.post(url + "/predict", json={"inputs": shifted}, timeout=10).status_code == 200
        deadline = time.monotonic() + 15
        while not _Hook.bodies and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _Hook.bodies and _Hook.bodies[0]["alert"]["kind"] == "drift", _Hook.bodies
        assert httpx.get(url + "/alerts", timeout=10).json()["active"] == ["drift"]
    finally:
        _stop(proc)
        hook.shutdown()
        hook.server_close()
    assert not (standalone_bundle / "__pycache__").exists()  # the bundle's files stay as exported


@pytest.mark.slow
def test_server_script_with_workers_aggregates_metrics(standalone_bundle, site_packages, port, metrics_of) -> None:
    # Log level info: each worker logs "Application startup complete." on stderr when it serves.
    proc = subprocess.Popen(
        [
            sys.executable,
            "-S",
            "server.py",
            "--port",
            str(port),
            "--workers",
            "2",
            "--log-level",
            "info",
            "--api-key-env",
            "BUNDLE_KEY",
        ],
        cwd=standalone_bundle,
        env=_env(site_packages, BUNDLE_KEY="k-123"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    both_up = threading.Event()

    def count_started_workers() -> None:  # reads stderr to the end, so the pipe never fills
        started = 0
        for line in proc.stderr:
            started += "Application startup complete" in line
            if started == 2:
                both_up.set()

    reader = threading.Thread(target=count_started_workers, daemon=True)
    reader.start()
    url = f"http://127.0.0.1:{port}"
    key = {"X-API-Key": "k-123"}
    try:
        assert both_up.wait(60), "the two workers did not both start within 60 s"
        _wait_healthy(url, proc)
        for _ in range(12):  # new connections: uvicorn's workers share the socket, both get traffic
            assert (
                httpx.post(url + "/predict", json={"inputs": [[0.0] * 64]}, headers=key, timeout=10).status_code == 200
            )
        assert httpx.post(url + "/predict", json={"inputs": [[0.0] * 64]}, timeout=10).status_code == 401
        counts = set()
        for _ in range(4):  # whichever worker answers the scrape, it reports every worker's counts
            m = metrics_of(httpx.get(url + "/metrics", headers=key, timeout=10).text)
            counts.add(
                m.get(("trainengine_serve_requests_total", frozenset({("endpoint", "/predict"), ("status", "200")})))
            )
        assert counts == {12.0}
    finally:
        _stop(proc)
        reader.join(timeout=15)
