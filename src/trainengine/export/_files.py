"""The non-model files of a bundle: hashes, Dockerfile, requirements, README, monitoring config."""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from trainengine.errors import ExportError

__all__ = [
    "MANIFEST",
    "bundle_files",
    "bundle_sha256",
    "file_sha256",
    "verify_bundle",
    "monitoring_settings",
    "requirements_txt",
    "dockerfile",
    "readme",
]

MANIFEST = "manifest.json"
DEFAULT_MONITORING: dict[str, Any] = {"latency_threshold_ms": 100.0, "error_rate_threshold": 0.01, "drift_threshold": 0.2, "drift_window": 2000}
# The runtime packages the bundle's server needs; pinned to what the export machine runs.
RUNTIME_PACKAGES = ("numpy", "onnxruntime", "fastapi", "uvicorn", "prometheus-client")


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def bundle_files(folder: str | os.PathLike[str]) -> dict[str, str]:
    """``{relative path: sha256}`` of every file in the bundle except ``manifest.json``, sorted."""
    root = Path(folder)
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel != MANIFEST and "__pycache__" not in path.parts:
            out[rel] = file_sha256(path)
    return out


def bundle_sha256(folder: str | os.PathLike[str]) -> str:
    """The bundle's content hash: SHA-256 over the sorted ``"relpath\\tsha256\\n"`` lines.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp()); _ = (d / "a.txt").write_text("x")
        >>> len(bundle_sha256(d))
        64
    """
    lines = "".join(f"{rel}\t{digest}\n" for rel, digest in bundle_files(folder).items())
    return hashlib.sha256(lines.encode()).hexdigest()


def verify_bundle(folder: str | os.PathLike[str]) -> list[str]:
    """Check a bundle against its manifest; returns the problems found (empty = intact).

    Example:
        >>> verify_bundle("/nonexistent")
        ['/nonexistent has no manifest.json: not an export bundle, or an export that did not finish']
    """
    root = Path(folder)
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except FileNotFoundError:
        return [f"{root} has no {MANIFEST}: not an export bundle, or an export that did not finish"]
    except ValueError as exc:
        return [f"{root / MANIFEST} is not valid JSON: {exc}"]
    expected: Mapping[str, str] = manifest.get("files") or {}
    actual = bundle_files(root)
    problems = [f"{rel}: missing" for rel in expected if rel not in actual]
    problems += [f"{rel}: content changed (sha256 {actual[rel][:12]}..., manifest says {digest[:12]}...)" for rel, digest in expected.items() if rel in actual and actual[rel] != digest]
    problems += [f"{rel}: not listed in the manifest" for rel in actual if rel not in expected]
    return problems


def monitoring_settings(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults merged with the user's monitoring config; thresholds must be positive numbers.

    Raises:
        ExportError: A threshold is not a positive finite number.
    """
    settings = dict(DEFAULT_MONITORING)
    if config is None:
        return settings
    if not isinstance(config, Mapping):
        raise ExportError(f"monitoring_config must be a dict such as {{'latency_threshold_ms': 100}}, got {type(config).__name__}")
    settings.update(config)
    for key in ("latency_threshold_ms", "error_rate_threshold", "drift_threshold", "drift_window"):
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ExportError(f"monitoring_config['{key}'] must be a positive number, got {value!r}")
    return settings


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def requirements_txt() -> str:
    """Pinned runtime requirements of the bundle's ``server.py`` / ``inference.py``."""
    lines = ["# Runtime of server.py / inference.py, pinned to the versions the bundle was verified with."]
    for package in RUNTIME_PACKAGES:
        version = _version(package)
        lines.append(f"{package}=={version}" if version else package)
    return "\n".join(lines) + "\n"


def dockerfile(port: int = 8080) -> str:
    """A slim, non-root image serving the bundle on ``port`` with a health check."""
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    return f"""\
# Build: docker build -t model:1 .    Run: docker run -p {port}:{port} model:1
FROM python:{py}-slim

ENV PYTHONDONTWRITEBYTECODE=1 \\
    PYTHONUNBUFFERED=1 \\
    PIP_NO_CACHE_DIR=1 \\
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt \\
    && useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin model

COPY --chown=10001:10001 . .
USER 10001:10001

EXPOSE {port}
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \\
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/health', timeout=4)"]

# Inside a container the server must listen on all interfaces; publish the port with -p.
CMD ["python", "server.py", "--host", "0.0.0.0", "--port", "{port}"]
"""


def _fmt_bytes(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def readme(manifest: Mapping[str, Any], monitoring: Mapping[str, Any]) -> str:
    """The bundle's README: quick start, inputs/outputs, measured latency and size, monitoring, rollback."""
    name = manifest["name"]
    folder = manifest.get("folder", name)
    inp = manifest["input"]
    shape = ["batch" if d is None and i == 0 else ("sequence" if d is None else d) for i, d in enumerate(inp["shape"])]
    rows = []
    for fmt, entry in manifest["formats"].items():
        files = ", ".join(entry.get("files") or [entry.get("file", "")])
        diff = entry.get("max_abs_diff")
        rows.append(f"| {fmt} | {files} | {'-' if diff is None else f'{diff:.2e}'} | {entry.get('note', entry.get('method', ''))} |")
    sizes = "\n".join(f"| {f} | {_fmt_bytes(n)} |" for f, n in manifest.get("size_bytes", {}).items())
    lat = manifest.get("latency_ms", {})
    lat_rows = "\n".join(f"| {k} | {v['p50']:.3f} | {v['p95']:.3f} |" for k, v in lat.items())
    quant = manifest.get("quantization")
    quant_text = ""
    if quant:
        quant_text = (
            f"\n## Quantized model\n`{quant['file']}` ({quant['method']}): {_fmt_bytes(quant['size_bytes'])} vs "
            f"{_fmt_bytes(quant['fp32_size_bytes'])} fp32. Metric change: `{json.dumps(quant.get('metric_delta'))}`.\n"
            f"Serve it with `python server.py --model {quant['file']}`.\n"
        )
    lineage = manifest.get("lineage") or {}
    return f"""\
# {name}

Exported by trainengine {manifest['versions'].get('trainengine', '')} on {manifest['created_at']}.
Task: **{manifest['task_type']}**. Lineage: run `{lineage.get('run_id')}`, git commit `{lineage.get('git_commit')}`,
data fingerprint `{lineage.get('data_fingerprint')}`.

## Quick start
```bash
# 1. Standalone prediction (needs only numpy + onnxruntime)
python inference.py --input examples.json

# 2. Container (serves on port 8080)
docker build -t {name}:latest .
docker run --rm -p 8080:8080 {name}:latest
curl -s localhost:8080/health
curl -s -X POST localhost:8080/predict -H 'content-type: application/json' -d @examples.json

# 3. Without Docker, with trainengine installed
trainengine serve {folder}
```

## Inputs and outputs
`POST /predict` takes `{{"inputs": [example, ...]}}`; one example has shape `{shape[1:]}` and dtype
`{inp['dtype']}` (the values the model saw in training, after the data set's scaling; see
`examples.json`). The answer is `{{"predictions": [...], "model": ..., "version": ...}}`.

## Formats (verified against the PyTorch model at export time)
| format | files | max abs difference | note |
|---|---|---|---|
{chr(10).join(rows)}

## Size
| file | size |
|---|---|
{sizes}

## Latency measured at export (one CPU thread of the export machine, ms per request)
| runtime / batch | p50 | p95 |
|---|---|---|
{lat_rows}
{quant_text}
## Monitoring
`GET /metrics` (Prometheus): request count by status, latency histogram, batch sizes, prediction
distribution, and `drift_score` — the Jensen–Shannon divergence of recent inputs against
`reference_profile.json` (the training data). Thresholds from `monitoring.json`:
latency p95 > {monitoring['latency_threshold_ms']} ms, error rate > {monitoring['error_rate_threshold']},
drift > {monitoring['drift_threshold']} (retrain recommended). `GET /health` returns the model
name, version and artifact hash.

## Rollback
Keep the previous image tag and run it again (`docker run -p 8080:8080 {name}:<previous>`); with a
model registry, move the alias back: `trainengine registry rollback {name} production`, then
re-export and redeploy. Every file here is listed with its SHA-256 in `manifest.json`.
"""
