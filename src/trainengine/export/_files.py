"""The non-model files of a bundle: hashes, Dockerfile, requirements, README, monitoring config."""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

# One home for hashing and the bundle contract (stdlib only; copied into bundles too):
# verify_bundle, bundle_files and file_sha256 are re-exported from there.
from trainengine._hashing import MANIFEST, bundle_files, content_sha256, file_sha256, verify_bundle
from trainengine.errors import ExportError

__all__ = [
    "MANIFEST",
    "STANDALONE_FILES",
    "PREPROCESS_FILES",
    "SKLEARN_FILES",
    "SKLEARN_RUNTIME_PACKAGES",
    "copy_standalone_runtime",
    "standalone_runtime",
    "bundle_files",
    "bundle_sha256",
    "file_sha256",
    "verify_bundle",
    "monitoring_settings",
    "requirements_txt",
    "dockerfile",
    "readme",
]

DEFAULT_MONITORING: dict[str, Any] = {
    "latency_threshold_ms": 100.0,
    "error_rate_threshold": 0.01,
    "drift_threshold": 0.2,
    "drift_window": 2000,
}
_PACKAGE_DIR = Path(__file__).resolve().parent.parent
# The bundle's own code: file in the bundle -> the package source it is a verbatim copy of.
# inference.py imports its two siblings (stdlib / numpy only), never trainengine; server.py
# imports inference. Export reads these as files: it does not import trainengine.serve, which sits
# above it (docs/architecture.md, layering).
STANDALONE_FILES: dict[str, Path] = {
    "inference.py": _PACKAGE_DIR / "serve" / "_runtime.py",
    "server.py": _PACKAGE_DIR / "serve" / "_app.py",
    "_hashing.py": _PACKAGE_DIR / "_hashing.py",
    "_numeric.py": _PACKAGE_DIR / "_numeric.py",
    # server.py's alert rules (alerting.py) and the alert actions they send through (_alerting.py,
    # standard library only): a bundle alerts by log, webhook and email without trainengine.
    "alerting.py": _PACKAGE_DIR / "serve" / "_alerting.py",
    "_alerting.py": _PACKAGE_DIR / "_alerting.py",
}
# Copied too when the bundle has a preprocessing.json: inference.py imports it only then.
PREPROCESS_FILES: dict[str, Path] = {"_preprocess.py": _PACKAGE_DIR / "_preprocess.py"}
# Copied too into a scikit-learn bundle (trainengine.sklearn.export_pipeline_bundle, beside
# STANDALONE_FILES): server.py imports the scikit-learn runtime from it when it is there.
SKLEARN_FILES: dict[str, Path] = {
    "sklearn_inference.py": _PACKAGE_DIR / "serve" / "_sklearn.py",
    "_skops.py": _PACKAGE_DIR / "_skops.py",  # the trusted-types check sklearn_inference.py loads through
}
# What a scikit-learn bundle's server needs besides RUNTIME_PACKAGES, by the runtime it serves:
# model.onnx runs on numpy + onnxruntime alone; model.skops is the pipeline itself (skops rebuilds
# it with the scikit-learn, scipy and numpy it was saved with; pandas makes the DataFrame it takes).
SKLEARN_RUNTIME_PACKAGES: dict[str, tuple[str, ...]] = {
    "onnx": (),
    "skops": ("scikit-learn", "scipy", "skops", "pandas"),
}
# The runtime packages the bundle's server needs; pinned to what the export machine runs
# (_hashing.py is standard library only, _numeric.py and _preprocess.py need numpy). A bundle with a
# tokenizer.json adds "tokenizers" (requirements_txt(extra=...)).
RUNTIME_PACKAGES = ("numpy", "onnxruntime", "fastapi", "uvicorn", "prometheus-client")


def bundle_sha256(folder: str | os.PathLike[str]) -> str:
    """The bundle's content hash: SHA-256 over the sorted ``"relpath\\tsha256\\n"`` lines.

    The files are hashed from disk (every file but ``manifest.json``); the serving runtime's
    ``bundle_content_sha256(manifest)`` gives the same value from an intact bundle's manifest.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        ... _ = (d / "a.txt").write_text("x")
        >>> len(bundle_sha256(d))
        64
    """
    return content_sha256(bundle_files(folder))


def copy_standalone_runtime(folder: str | os.PathLike[str], *, preprocessing: bool = False) -> list[str]:
    """Copy the bundle's code (:data:`STANDALONE_FILES`) into ``folder``; returns the names written.

    Args:
        folder: The bundle folder being built.
        preprocessing: The bundle has a ``preprocessing.json``: also copy :data:`PREPROCESS_FILES`.
    """
    files = {**STANDALONE_FILES, **(PREPROCESS_FILES if preprocessing else {})}
    for name, source in files.items():
        shutil.copyfile(source, Path(folder) / name)
    return list(files)


@functools.cache
def standalone_runtime() -> ModuleType:
    """The serving runtime (``serve/_runtime.py``, a bundle's ``inference.py``) loaded from its file.

    Export makes the expected predictions of ``examples.json`` with the same pre/post-processing
    the bundle runs, without importing ``trainengine.serve`` (a higher layer). Loaded under a
    name inside ``trainengine``, the file takes its in-package branch and imports
    ``trainengine._hashing`` / ``trainengine._numeric``.
    """
    name = "trainengine.export._standalone_runtime"
    spec = importlib.util.spec_from_file_location(name, STANDALONE_FILES["inference.py"])
    if spec is None or spec.loader is None:  # pragma: no cover - the file ships with the package
        raise ExportError(f"cannot load the serving runtime from {STANDALONE_FILES['inference.py']}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def monitoring_settings(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults merged with the user's monitoring config; thresholds must be positive numbers.

    Raises:
        ExportError: A threshold is not a positive finite number.
    """
    settings = dict(DEFAULT_MONITORING)
    if config is None:
        return settings
    if not isinstance(config, Mapping):
        raise ExportError(
            f"monitoring_config must be a dict such as {{'latency_threshold_ms': 100}}, got {type(config).__name__}"
        )
    settings.update(config)
    for key in ("latency_threshold_ms", "error_rate_threshold", "drift_threshold", "drift_window"):
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ExportError(f"monitoring_config['{key}'] must be a positive number, got {value!r}")
    problems = _alert_problems(settings)
    if problems:
        raise ExportError("invalid monitoring_config: " + "; ".join(problems))
    return settings


def _alert_problems(settings: Mapping[str, Any]) -> list[str]:
    """What is wrong with the alert targets and windows of a monitoring config (the server reads them)."""
    from trainengine._alerting import ConfigError, EmailAlert, WebhookAlert

    problems = []
    for key in ("alert_window_s", "alert_repeat_s", "alert_min_requests"):
        value = settings.get(key)
        if value is None:
            continue
        integral = key == "alert_min_requests"
        ok = not isinstance(value, bool) and isinstance(value, int if integral else (int, float))
        if not ok or not math.isfinite(value) or value <= 0:
            problems.append(f"monitoring_config['{key}'] must be a positive {'integer' if integral else 'number'}")
    for key in settings:
        if "password" in str(key).lower():
            problems.append(
                f"monitoring_config[{key!r}]: a password never goes into a bundle; put it in an environment variable "
                "and name the variable in monitoring_config['smtp']['password_env']"
            )
    webhooks = settings.get("alert_webhook")
    for url in [webhooks] if isinstance(webhooks, str) else list(webhooks or []):
        try:
            WebhookAlert(url)
        except ConfigError as exc:
            problems += [f"monitoring_config['alert_webhook']: {p}" for p in exc.problems]
    emails = settings.get("alert_email")
    if emails is not None:
        smtp = settings.get("smtp") or {}
        try:  # the addresses are checked with a stand-in host: the real one may be given when serving
            EmailAlert(emails, smtp_host="localhost", sender=smtp.get("sender") if isinstance(smtp, Mapping) else None)
        except ConfigError as exc:
            problems += [f"monitoring_config['alert_email']: {p}" for p in exc.problems]
    smtp = settings.get("smtp")
    if smtp is not None:
        keys = ("host", "port", "sender", "starttls", "username", "password_env")
        if not isinstance(smtp, Mapping):
            problems.append(f"monitoring_config['smtp'] must be a table of {', '.join(keys)}")
        else:
            for key in smtp:
                if "password" in str(key).lower() and key != "password_env":
                    problems.append(
                        f"monitoring_config['smtp'][{key!r}]: a password never goes into a bundle; name the "
                        "environment variable that holds it in password_env"
                    )
                elif key not in keys:
                    problems.append(f"monitoring_config['smtp']: unknown key {key!r} — known: {', '.join(keys)}")
    return problems


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def requirements_txt(extra: Sequence[str] = ()) -> str:
    """Pinned runtime requirements of the bundle's ``server.py`` / ``inference.py``.

    Args:
        extra: Packages this bundle needs besides :data:`RUNTIME_PACKAGES` (``"tokenizers"`` for a
            bundle with a ``tokenizer.json``).

    Example:
        >>> "tokenizers" in requirements_txt(extra=["tokenizers"])
        True
    """
    lines = ["# Runtime of server.py / inference.py, pinned to the versions the bundle was verified with."]
    for package in (*RUNTIME_PACKAGES, *(p for p in extra if p not in RUNTIME_PACKAGES)):
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


def _inputs_section(manifest: Mapping[str, Any], example: Any) -> str:
    """README text on what one example is: raw records, text, or the model's input array."""
    inp = manifest["input"]
    shape = ["batch" if d is None and i == 0 else ("sequence" if d is None else d) for i, d in enumerate(inp["shape"])]
    answer = 'The answer is `{"predictions": [...], "model": ..., "version": ...}`.'
    names = manifest.get("class_names")
    if names:
        shown = ", ".join(map(str, names[:10])) + (", ..." if len(names) > 10 else "")
        answer += f' Each prediction has `"label"`, the class name of `"class"` ({shown}).'
    shown_example = f"\nOne example:\n```json\n{json.dumps(example)}\n```\n" if example is not None else ""
    prep = manifest.get("preprocessing")
    if prep:
        columns = ", ".join(f"`{c}`" for c in prep["feature_columns"])
        return (
            f'`POST /predict` takes `{{"inputs": [record, ...]}}`; a record is an object of raw column values '
            f"({columns}; a missing key or `null` is a missing value) or a list of the values in that order. "
            f"`preprocessing.json` (fitted on the training split) turns them into the model's "
            f"{inp['shape'][-1]} inputs exactly as in training: numeric columns standardised with the training "
            f"mean and std, categorical columns {prep['encoding']}-encoded (a value not seen in training counts "
            f"as other), missing values: {prep['missing_values']}. {answer}\n{shown_example}"
        )
    reward = manifest.get("reward")
    if reward:
        tokenizer = manifest.get("tokenizer") or {}
        tokens = (
            f"the bundle's `{tokenizer['file']}` (the training tokenizer; needs the `tokenizers` package)"
            if tokenizer.get("file")
            else "UTF-8 bytes (the training tokenizer)"
        )
        return (
            f'`POST /predict` takes `{{"problem": "...", "steps": ["...", ...]}}`, a list of them, or '
            f'`{{"inputs": [...]}}` (clients that tokenize themselves send `{{"input_ids": [...], '
            f'"step_positions": [...]}}`). Each example is encoded as in training: tokenized with {tokens}, '
            f"each step followed by the separator {json.dumps(reward['step_separator'])}, at most "
            f"{reward['max_steps_per_example']} steps and {reward['max_length']} tokens (trailing steps that do not "
            'fit are dropped whole). The answer is `{"predictions": [{"scores": [one per scored step], "num_steps", '
            '"steps_scored", "truncated", "problem_truncated"}, ...], "model": ..., "version": ...}`: scores in '
            f"(0, 1), one per step that was scored; `truncated` says steps were left out.\n{shown_example}"
        )
    tokenizer = manifest.get("tokenizer")
    if tokenizer and tokenizer.get("file"):
        return (
            f'`POST /predict` takes `{{"inputs": [text or token ids, ...]}}`; text is tokenized with the '
            f"bundle's `{tokenizer['file']}` (the training tokenizer, {tokenizer.get('vocab_size')} tokens; needs "
            f"the `tokenizers` package) and completions are decoded with it. {answer}\n{shown_example}"
        )
    return (
        f'`POST /predict` takes `{{"inputs": [example, ...]}}`; one example has shape `{shape[1:]}` and dtype '
        f"`{inp['dtype']}` (the values the model saw in training, after the data set's scaling; see "
        f"`examples.json`). {answer}\n"
    )


def readme(manifest: Mapping[str, Any], monitoring: Mapping[str, Any], example: Any = None) -> str:
    """The bundle's README: quick start, inputs/outputs, measured latency and size, monitoring, rollback.

    Args:
        manifest: The bundle's manifest (so far).
        monitoring: The monitoring thresholds.
        example: One example of ``examples.json`` to show (raw record or text bundles).
    """
    name = manifest["name"]
    folder = manifest.get("folder", name)
    rows = []
    for fmt, entry in manifest["formats"].items():
        files = ", ".join(entry.get("files") or [entry.get("file", "")])
        diff = entry.get("max_abs_diff")
        shown_diff = "-" if diff is None else f"{diff:.2e}"
        rows.append(f"| {fmt} | {files} | {shown_diff} | {entry.get('note', entry.get('method', ''))} |")
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
    needs = "numpy + onnxruntime" + (" + tokenizers" if (manifest.get("tokenizer") or {}).get("file") else "")
    return f"""\
# {name}

Exported by trainengine {manifest["versions"].get("trainengine", "")} on {manifest["created_at"]}.
Task: **{manifest["task_type"]}**. Lineage: run `{lineage.get("run_id")}`, git commit `{lineage.get("git_commit")}`,
data fingerprint `{lineage.get("data_fingerprint")}`.

## Quick start
```bash
# 1. Standalone prediction (needs only {needs})
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
{_inputs_section(manifest, example)}
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
latency p95 > {monitoring["latency_threshold_ms"]} ms, error rate > {monitoring["error_rate_threshold"]},
drift > {monitoring["drift_threshold"]} (retrain recommended). The server checks them itself over a sliding
window (`GET /alerts`; a log line always, plus `--alert-webhook URL` and `--alert-email ADDR` with
`--smtp-host HOST`), and `prometheus/alerts.yml` holds the same rules for Prometheus
(`promtool check rules prometheus/alerts.yml`). `GET /health` returns the model name, version and
artifact hash.

## Rollback
Keep the previous image tag and run it again (`docker run -p 8080:8080 {name}:<previous>`); with a
model registry, move the alias back: `trainengine registry rollback {name} production`, then
re-export and redeploy. Every file here is listed with its SHA-256 in `manifest.json`.
"""
