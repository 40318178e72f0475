"""``trainengine serve BUNDLE_DIR|NAME@ALIAS``: serve an export bundle over HTTP (see docs/serve.md)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import typer

from trainengine.errors import TrainEngineError

__all__ = ["serve_command", "resolve_bundle"]

_RUNTIMES = ("onnx", "torch")
logger = logging.getLogger(__name__)


def resolve_bundle(target: str, registry: str | None = None) -> Path:
    """The bundle folder of ``target``: a path, or ``NAME@ALIAS`` / ``NAME:VERSION`` from the model registry.

    Raises:
        TrainEngineError: No bundle at the path, no registry, or the reference does not resolve to
            an export bundle.
    """
    path = Path(target)
    if path.exists() or not ("@" in target or ":" in target):
        if not (path / "manifest.json").is_file():
            why = "no such folder" if not path.exists() else "no manifest.json in it (an incomplete export?)"
            raise TrainEngineError(
                f"{target} is not an export bundle ({why}); pass the folder `trainengine export` wrote, "
                "or NAME@ALIAS from the model registry"
            )
        return path
    try:
        from trainengine.registry import ModelRegistry
    except ImportError as exc:
        raise TrainEngineError(
            f"cannot resolve {target!r}: the model registry is not available ({exc}); pass a bundle folder instead"
        ) from exc
    url = registry or os.environ.get("TRAINENGINE_REGISTRY") or "models.db"
    if "://" not in url and url != ":memory:" and not Path(url).is_file():
        # Opening a missing SQLite file would create an empty registry: say what is wrong instead.
        raise TrainEngineError(
            f"cannot resolve {target!r}: no model registry at {url} (no such file); pass --registry URL or set "
            "TRAINENGINE_REGISTRY, or pass a bundle folder"
        )
    with ModelRegistry(url, artifact_root=os.environ.get("TRAINENGINE_REGISTRY_ARTIFACTS") or None) as reg:
        record = reg.resolve(target)
    record.verify()  # the artifact is still what was registered
    artifact = Path(record.artifact_path)
    if record.artifact_kind in ("bundle", "sklearn") and (artifact / "manifest.json").is_file():
        return artifact
    if record.artifact_kind in ("checkpoint", "run"):
        return _exported_bundle(record)
    raise TrainEngineError(
        f"{target} resolves to {record.model_id}, a {record.artifact_kind} artifact (bare weights, no task spec), "
        "not an export bundle; export it with create_export_bundle and register the bundle as a new version, "
        "then serve that"
    )


def _exported_bundle(record) -> Path:
    """A bundle of a registered checkpoint, exported once and cached under its artifact hash.

    The cache key is the artifact's SHA-256, so a cached bundle always belongs to exactly the
    weights that were registered; the cache lives in ``$TRAINENGINE_CACHE`` (default
    ``~/.cache/trainengine``)/bundles.
    """
    from trainengine.export import export_registered, verify_bundle

    root = Path(os.environ.get("TRAINENGINE_CACHE") or Path.home() / ".cache" / "trainengine") / "bundles" / record.name
    key = f"{record.version}-{record.artifact_sha256[:16]}"
    cached = root / key
    if (cached / "manifest.json").is_file() and not verify_bundle(cached):
        return cached
    logger.warning(
        "%s is a %s artifact: exporting it to %s before serving", record.model_id, record.artifact_kind, cached
    )
    bundle = export_registered(record, formats=["onnx", "pytorch"], output_dir=root / ".staging")
    if cached.exists():
        shutil.rmtree(cached)
    os.replace(bundle, cached)
    return cached


def _onnx_has_cuda() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def serve_command(
    target: str = typer.Argument(
        ...,
        metavar="BUNDLE_DIR|NAME@ALIAS",
        help="Export bundle folder, or NAME@ALIAS / NAME:VERSION in the model registry.",
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; the default serves this machine only."),
    port: int = typer.Option(8080, "--port", min=0, max=65535, help="TCP port."),
    runtime: str = typer.Option(
        "onnx", "--runtime", help="onnx (onnxruntime, model.onnx) or torch (model.safetensors in PyTorch)."
    ),
    api_key_env: str | None = typer.Option(
        None,
        "--api-key-env",
        metavar="VAR",
        help="Environment variable holding the API key; then every endpoint but /health needs X-API-Key or "
        "Authorization: Bearer.",
    ),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes; /metrics aggregates them."),
    registry: str | None = typer.Option(
        None,
        "--registry",
        "-r",
        metavar="URL",
        envvar="TRAINENGINE_REGISTRY",
        help="Model registry (SQLite file or SQLAlchemy URL) to resolve NAME@ALIAS in; default models.db.",
    ),
    model_file: str | None = typer.Option(
        None, "--model", help="ONNX file of the bundle (default model.onnx; e.g. model.int8.onnx)."
    ),
    max_body_bytes: int = typer.Option(1_048_576, "--max-body-bytes", min=1, help="Larger request bodies get a 413."),
    max_batch: int = typer.Option(1024, "--max-batch", min=1, help="More examples per request get a 422."),
    max_request_tokens: int | None = typer.Option(
        None,
        "--max-request-tokens",
        min=1,
        help="Language models: more tokens per request get a 413 (default: the bundle's monitoring.json, else 65536).",
    ),
    max_batch_tokens: int | None = typer.Option(
        None,
        "--max-batch-tokens",
        min=1,
        help="Language models: tokens per model call; the request runs in chunks of this size "
        "(default: the bundle's monitoring.json, else 8192 or one full context).",
    ),
    request_timeout: float | None = typer.Option(
        None,
        "--request-timeout",
        min=0.001,
        help="Seconds of compute per request before a 503 with Retry-After "
        "(default: the bundle's monitoring.json, else 30).",
    ),
    batch_max_size: int = typer.Option(
        1,
        "--batch-max-size",
        min=1,
        help="Adaptive batching: run concurrent requests' examples as one model call of at most this many "
        "(1 = off, the lowest one-example latency).",
    ),
    batch_max_wait_ms: float = typer.Option(
        2.0, "--batch-max-wait-ms", min=0.0, max=1000.0, help="Adaptive batching: how long a request waits for company."
    ),
    device: str = typer.Option(
        "cpu",
        "--device",
        help="cpu or cuda[:N]: onnxruntime's CUDA provider where installed (onnxruntime-gpu), else the torch "
        "runtime on the GPU.",
    ),
    threads: int | None = typer.Option(
        None,
        "--threads",
        min=1,
        help="CPU threads one model call may use (default: all cores); 1 suits many small concurrent requests.",
    ),
    log_level: str = typer.Option(
        "info", "--log-level", help="uvicorn log level; warning drops the per-request access log line."
    ),
    no_alerts: bool = typer.Option(
        False, "--no-alerts", help="Do not evaluate the alert rules (p95 latency, error rate, drift)."
    ),
    alert_window_s: float | None = typer.Option(
        None,
        "--alert-window-s",
        min=1.0,
        help="Sliding window the alert rules judge, seconds (default: the bundle's monitoring.json, else 300).",
    ),
    alert_interval_s: float = typer.Option(
        5.0, "--alert-interval-s", min=0.1, help="Seconds between two evaluations of the alert rules."
    ),
    alert_repeat_s: float | None = typer.Option(
        None,
        "--alert-repeat-s",
        min=1.0,
        help="Send a lasting alert again at most this often, seconds (default: monitoring.json, else 3600).",
    ),
    alert_min_requests: int | None = typer.Option(
        None,
        "--alert-min-requests",
        min=1,
        help="Requests the window needs before latency and error rate are judged (default: monitoring.json, else 20).",
    ),
    alert_webhook: list[str] | None = typer.Option(
        None, "--alert-webhook", metavar="URL", help="POST alerts as JSON here (repeatable); adds to monitoring.json's."
    ),
    alert_email: list[str] | None = typer.Option(
        None, "--alert-email", metavar="ADDR", help="Email alerts here (repeatable; needs --smtp-host)."
    ),
    alert_action: list[str] | None = typer.Option(
        None,
        "--alert-action",
        metavar="NAME",
        help="An alert action registered with register_alert_action (repeatable), e.g. one that submits retraining.",
    ),
    plugin: list[str] | None = typer.Option(
        None, "--plugin", metavar="MODULE", help="Import this module first (it registers alert actions; repeatable)."
    ),
    smtp_host: str | None = typer.Option(
        None, "--smtp-host", envvar="TRAINENGINE_SMTP_HOST", help="SMTP server for email alerts."
    ),
    smtp_port: int | None = typer.Option(
        None, "--smtp-port", min=1, max=65535, envvar="TRAINENGINE_SMTP_PORT", help="SMTP port (default 25)."
    ),
    smtp_from: str | None = typer.Option(
        None, "--smtp-from", envvar="TRAINENGINE_SMTP_FROM", help="From address of alert emails."
    ),
    smtp_starttls: bool | None = typer.Option(
        None,
        "--smtp-starttls/--no-smtp-starttls",
        envvar="TRAINENGINE_SMTP_STARTTLS",
        help="Upgrade the SMTP connection with STARTTLS (needed to log in to a remote server).",
    ),
    smtp_username: str | None = typer.Option(
        None, "--smtp-username", envvar="TRAINENGINE_SMTP_USERNAME", help="SMTP login name."
    ),
    smtp_password_env: str | None = typer.Option(
        None,
        "--smtp-password-env",
        metavar="VAR",
        envvar="TRAINENGINE_SMTP_PASSWORD_ENV",
        help="Environment variable holding the SMTP password (never the password itself).",
    ),
) -> None:
    """Serve a bundle: POST /predict, GET /health, GET /metrics (Prometheus), GET /alerts."""
    from trainengine.serve._runtime import BundleError

    if runtime not in _RUNTIMES:
        raise TrainEngineError(f"unknown runtime {runtime!r} — available: {', '.join(_RUNTIMES)}")
    if api_key_env is not None and not os.environ.get(api_key_env):
        raise TrainEngineError(
            f"--api-key-env {api_key_env}: the variable is unset or empty; export {api_key_env}=<key> first"
        )
    if model_file is not None and runtime != "onnx":
        raise TrainEngineError("--model picks an ONNX file; it applies to --runtime onnx only")
    if device.split(":")[0] not in ("cpu", "cuda"):
        raise TrainEngineError(f"--device must be cpu or cuda (cuda:N), got {device!r}")
    if plugin:
        from trainengine.registries import load_plugins

        load_plugins(plugin)  # a ConfigError (exit 2) names a module that does not import
    if alert_action:
        from trainengine.registries import ALERT_ACTIONS

        for name in alert_action:
            ALERT_ACTIONS.check(name)  # an unknown name lists the registered ones, before anything loads
    smtp = {
        "host": smtp_host,
        "port": smtp_port,
        "sender": smtp_from,
        "starttls": smtp_starttls,
        "username": smtp_username,
        "password_env": smtp_password_env,
    }
    bundle = resolve_bundle(target, registry)
    if device != "cpu" and runtime == "onnx" and not _onnx_has_cuda():
        if model_file is not None:
            raise TrainEngineError(
                f"--device {device} with --model {model_file}: onnxruntime here has no CUDA provider "
                "(pip install onnxruntime-gpu), and the torch runtime cannot run an ONNX file"
            )
        logger.warning("--device %s: onnxruntime has no CUDA provider here; serving with the torch runtime", device)
        runtime = "torch"
    try:
        from trainengine.serve import serve

        torch_predictor = None
        if runtime == "torch" and workers == 1:
            from trainengine.serve._torch import TorchPredictor

            torch_predictor = TorchPredictor(bundle, device=device, num_threads=threads)
        serve(
            bundle,
            host=host,
            port=port,
            runtime=runtime,
            api_key_env=api_key_env,
            workers=workers,
            model_file=model_file,
            max_body_bytes=max_body_bytes,
            max_batch=max_batch,
            log_level=log_level,
            torch_predictor=torch_predictor,
            max_request_tokens=max_request_tokens,
            max_batch_tokens=max_batch_tokens,
            request_timeout_s=request_timeout,
            batch_max_size=batch_max_size,
            batch_max_wait_ms=batch_max_wait_ms,
            device=device,
            threads=threads,
            alerts=not no_alerts,
            alert_window_s=alert_window_s,
            alert_interval_s=alert_interval_s,
            alert_repeat_s=alert_repeat_s,
            alert_min_requests=alert_min_requests,
            alert_webhooks=alert_webhook or [],
            alert_emails=alert_email or [],
            smtp={k: v for k, v in smtp.items() if v is not None} or None,
            alert_actions=alert_action or [],
            plugins=plugin or [],
        )
    except BundleError as exc:
        raise TrainEngineError(str(exc)) from exc
    except ValueError as exc:
        if isinstance(exc, TrainEngineError):
            raise
        raise TrainEngineError(str(exc)) from exc
