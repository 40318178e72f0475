"""A scikit-learn bundle serves without trainengine: ``python server.py`` in the bundle's folder.

As in tests/serve/test_serve_standalone.py, the servers run as ``python -S`` with PYTHONPATH set to
the virtualenv's site-packages alone: ``-S`` skips the .pth file of the editable trainengine
install, so ``import trainengine`` fails there and any trainengine import in the bundle's code would
crash the server. The ONNX bundle's server also runs with scikit-learn, skops and pandas made
unimportable: it needs numpy and onnxruntime only.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("onnxruntime")
pytest.importorskip("skl2onnx")
pytest.importorskip("httpx")

import httpx

from trainengine.sklearn import SklearnTrainer, export_pipeline_bundle, load_pipeline

SRC = Path(__file__).resolve().parents[2] / "src" / "trainengine"


def _records(frame) -> list[dict]:
    out = []
    for row in frame.to_dict(orient="records"):
        out.append({k: (None if v is None or (isinstance(v, float) and math.isnan(v)) else v) for k, v in row.items()})
    return out


def _site_packages() -> str:
    return str(Path(np.__file__).resolve().parents[1])


def _env(pythonpath: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PROMETHEUS_MULTIPROC_DIR")}
    env.update(PYTHONPATH=pythonpath, PYTHONDONTWRITEBYTECODE="1")
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _drift(url: str) -> float:
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("trainengine_serve_drift_score "):
            return float(line.split()[1])
    raise AssertionError("no trainengine_serve_drift_score in /metrics")


@pytest.fixture
def serve_standalone() -> Iterator[Callable[..., str]]:
    """``serve_standalone(bundle, pythonpath)``: ``python -S server.py`` in the bundle; returns its URL."""
    procs: list[subprocess.Popen] = []

    def start(bundle: Path, pythonpath: str) -> str:
        port = _free_port()
        args = ["--port", str(port), "--log-level", "warning", "--alert-interval-s", "0.1"]
        proc = subprocess.Popen(
            [sys.executable, "-S", "server.py", *args],
            cwd=bundle,
            env=_env(pythonpath),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"server.py exited with {proc.returncode}: {proc.stderr.read()}")  # type: ignore[union-attr]  # stderr is a pipe
            try:
                if httpx.get(url + "/health", timeout=1.0).status_code == 200:
                    return url
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("server.py did not become healthy")

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def test_a_skops_bundle_serves_without_trainengine(config, make_table, make_pipeline, serve_standalone, tmp_path):
    import skops

    import sklearn

    table = make_table()
    results = SklearnTrainer(make_pipeline(), config=config, cv=2, n_bootstrap=20).train(table, target="approved")
    bundle = export_pipeline_bundle(
        results["run_dir"], tmp_path / "exports", name="credit", monitoring_config={"drift_window": 200}
    )
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["runtime"] == "skops"  # seed 003's pipeline does not convert to ONNX
    for copy, source in (
        ("server.py", SRC / "serve" / "_app.py"),
        ("inference.py", SRC / "serve" / "_runtime.py"),
        ("sklearn_inference.py", SRC / "serve" / "_sklearn.py"),
        ("_skops.py", SRC / "_skops.py"),
        ("_hashing.py", SRC / "_hashing.py"),
    ):
        assert (bundle / copy).read_bytes() == source.read_bytes() and copy in manifest["files"]
    requirements = (bundle / "requirements.txt").read_text().splitlines()
    assert f"scikit-learn=={sklearn.__version__}" in requirements and f"skops=={skops.__version__}" in requirements
    assert any(r.startswith("pandas==") for r in requirements)
    assert 'CMD ["python", "server.py"' in (bundle / "Dockerfile").read_text()
    assert "python server.py" in (bundle / "README.md").read_text()
    no_trainengine = subprocess.run(
        [sys.executable, "-S", "-c", "import trainengine"], env=_env(_site_packages()), capture_output=True, text=True
    )
    assert no_trainengine.returncode == 1 and "No module named 'trainengine'" in no_trainengine.stderr

    url = serve_standalone(bundle, _site_packages())
    health = httpx.get(url + "/health", timeout=10).json()
    assert health["runtime"] == "skops" and health["name"] == "credit"
    fresh = make_table(n=400, seed=1).drop(columns="approved")  # rows the pipeline never saw
    model = load_pipeline(results["run_dir"])
    rows = fresh.iloc[:200]
    answer = httpx.post(url + "/predict", json={"inputs": _records(rows)}, timeout=30)
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert [p["label"] for p in predictions] == model.predict(rows).tolist()
    assert np.allclose([p["probabilities"] for p in predictions], model.predict_proba(rows), atol=1e-12)
    wrong = httpx.post(url + "/predict", json={"inputs": [{**_records(rows.iloc[:1])[0], "age": "old"}]}, timeout=10)
    assert wrong.status_code == 422 and "inputs[0].age: not a number" in wrong.text

    # Drift against the training profile: quiet for fresh rows of the same distribution, over the
    # threshold (0.2) once the window holds shifted ones, and the bundle's own drift alert fires.
    assert _drift(url) < 0.1
    shifted = fresh.iloc[200:].assign(income=fresh["income"].iloc[200:] + 60_000, age=90.0)
    assert httpx.post(url + "/predict", json={"inputs": _records(shifted)}, timeout=30).status_code == 200
    assert _drift(url) > 0.2
    deadline = time.monotonic() + 10
    while httpx.get(url + "/alerts", timeout=10).json()["active"] != ["drift"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert httpx.get(url + "/alerts", timeout=10).json()["active"] == ["drift"]
    assert not (bundle / "__pycache__").exists()  # the bundle's files stay as exported


def test_an_onnx_bundle_serves_with_numpy_and_onnxruntime_only(config, make_table, serve_standalone, tmp_path):
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    table = make_table().assign(income=lambda t: t["income"].fillna(50_000.0))
    table = table.assign(occupation=table["occupation"].fillna("unknown"))
    pre = ColumnTransformer(
        [
            ("num", StandardScaler(), ["age", "income", "credit_score"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["occupation", "region", "education"]),
        ]
    )
    pipe = Pipeline([("preprocessor", pre), ("classifier", LogisticRegression())])
    results = SklearnTrainer(pipe, config=config, cv=2, n_bootstrap=20).train(table, target="approved")
    assert results["onnx_path"] is not None
    bundle = export_pipeline_bundle(results["model_dir"], tmp_path / "exports")
    assert json.loads((bundle / "manifest.json").read_text())["runtime"] == "onnx"
    requirements = (bundle / "requirements.txt").read_text()
    assert "onnxruntime==" in requirements
    assert not any(p in requirements for p in ("scikit-learn", "skops", "pandas"))

    # scikit-learn, skops and pandas cannot be imported by the server: it must not need them.
    blocked = tmp_path / "blocked"
    for package in ("sklearn", "skops", "pandas"):
        (blocked / package).mkdir(parents=True)
        (blocked / package / "__init__.py").write_text(f"raise ImportError('{package} is not installed here')\n")
    url = serve_standalone(bundle, f"{blocked}{os.pathsep}{_site_packages()}")
    assert httpx.get(url + "/health", timeout=10).json()["runtime"] == "onnx"
    features = table.drop(columns="approved")
    model = load_pipeline(results["run_dir"])
    rows = features.iloc[:40]
    answer = httpx.post(url + "/predict", json={"inputs": _records(rows)}, timeout=30)
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert [p["label"] for p in predictions] == model.predict(rows).tolist()
    assert np.abs(np.array([p["probabilities"] for p in predictions]) - model.predict_proba(rows)).max() < 1e-4
    missing = httpx.post(url + "/predict", json={"inputs": [{**_records(rows.iloc[:1])[0], "region": None}]})
    assert missing.status_code == 422 and "inputs[0].region: missing value" in missing.text


def test_the_bundle_copy_of_the_skops_check_refuses_without_trainengine(tmp_path):
    """A bundle's _skops.py (a verbatim copy of trainengine._skops) applies the allow-list on its own."""
    import shutil

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer
    from sklearn.tree import DecisionTreeClassifier

    from trainengine.sklearn import save_pipeline

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for name, source in (("_skops.py", SRC / "_skops.py"), ("_hashing.py", SRC / "_hashing.py")):
        shutil.copyfile(source, bundle / name)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    tree = save_pipeline(DecisionTreeClassifier(max_depth=2).fit(X, X[:, 0] > 0), tmp_path / "tree.skops")
    evil = save_pipeline(make_pipeline(FunctionTransformer(os.system), LogisticRegression()), tmp_path / "evil.skops")
    reader = save_pipeline(FunctionTransformer(np.load), tmp_path / "reader.skops")
    pickled = tmp_path / "pickled.skops"
    pickled.write_bytes(pickle.dumps({"a": 1}))
    script = (
        "import sys, _skops\n"
        "assert 'trainengine' not in sys.modules\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        model = _skops.load_skops(path)\n"
        "        print('loaded', type(model).__name__)\n"
        "    except _skops.UntrustedModelError as exc:\n"
        "        print('refused', exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", script, str(tree), str(evil), str(reader), str(pickled)],
        cwd=bundle,
        env=_env(os.pathsep.join([str(bundle), _site_packages()])),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "loaded DecisionTreeClassifier"
    assert lines[1].startswith("refused") and "not trusted" in lines[1] and "system" in lines[1]
    assert lines[2].startswith("refused") and "numpy.load" in lines[2]
    assert lines[3].startswith("refused") and "not a .skops file" in lines[3]
