"""Serve an export bundle over HTTP: predictions, health, Prometheus metrics, input drift and alerts.

:func:`create_app` builds the FastAPI app for a bundle (``POST /predict``, ``GET /health``,
``GET /metrics``); :func:`serve` runs it with uvicorn (``trainengine serve`` on the command
line). :class:`OnnxPredictor` is the same prediction path without HTTP. :class:`ServingAlerts` judges
p95 latency, error rate and drift over a sliding window on a background thread and sends alerts
through the monitoring alert actions (log, webhook, email, registered functions). The runtime module is
copied into every bundle as ``inference.py`` and the app as ``server.py``, so a bundle serves
itself without trainengine installed.

Example:
    >>> from fastapi.testclient import TestClient  # doctest: +SKIP
    >>> from trainengine.serve import create_app
    >>> client = TestClient(create_app("exports/digits_20261122_054000"))  # doctest: +SKIP
    >>> client.post("/predict", json={"inputs": [[0.0] * 64]}).json()  # doctest: +SKIP
    {'predictions': [{'class': 1, 'probabilities': [...]}], 'model': 'digits', 'version': 'unversioned'}
"""

from __future__ import annotations

import os
from typing import Any

from trainengine.serve._alerting import ServingAlerts, WindowCounts, build_alert_actions, histogram_quantile
from trainengine.serve._runtime import (
    BundleError,
    DriftWindow,
    InputError,
    OnnxPredictor,
    Predictor,
    Sampling,
    drift_divergences,
    drift_score,
    load_bundle,
    sampling_options,
)

__all__ = [
    "Sampling",
    "sampling_options",
    "create_app",
    "serve",
    "OnnxPredictor",
    "Predictor",
    "InputError",
    "BundleError",
    "load_bundle",
    "drift_score",
    "drift_divergences",
    "DriftWindow",
    "ServingAlerts",
    "WindowCounts",
    "build_alert_actions",
    "histogram_quantile",
]


def _fastapi_missing(exc: ImportError) -> Exception:
    from trainengine.errors import MissingExtraError

    return MissingExtraError(exc.name or "fastapi", "serve", "serving a model over HTTP")


def create_app(bundle_dir: str | os.PathLike[str], **options: Any) -> Any:
    """Build the FastAPI app serving ``bundle_dir``; see :func:`trainengine.serve._app.create_app`.

    Options: ``runtime`` ("onnx" | "torch"), ``api_key``, ``max_body_bytes``, ``max_batch``,
    ``torch_predictor``, ``model_file``, ``drift_window``, ``drift_interval_s``,
    ``drift_min_examples``, ``max_request_tokens``, ``max_batch_tokens``, ``request_timeout_s``, and the
    alert options ``alerts``, ``alert_window_s``, ``alert_interval_s``, ``alert_repeat_s``,
    ``alert_min_requests``, ``alert_webhooks``, ``alert_emails``, ``smtp``, ``alert_actions``.

    Raises:
        MissingExtraError: fastapi / prometheus_client are not installed (``pip install trainengine[serve]``).
    """
    try:
        import fastapi  # noqa: F401 - imported to report a missing extra clearly
        import prometheus_client  # noqa: F401 - imported to report a missing extra clearly

        from trainengine.serve._app import create_app as _create_app
    except ImportError as exc:
        raise _fastapi_missing(exc) from exc
    return _create_app(bundle_dir, **options)


def serve(
    bundle_dir: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    runtime: str = "onnx",
    api_key_env: str | None = None,
    workers: int = 1,
    **options: Any,
) -> None:
    """Serve a bundle with uvicorn until interrupted (blocks); binds loopback unless told otherwise.

    Args:
        bundle_dir: The export bundle's folder.
        host: Address to bind; a non-loopback address without an API key prints a warning.
        port: TCP port.
        runtime: ``"onnx"`` or ``"torch"``.
        api_key_env: Name of the environment variable holding the API key (none: no key).
        workers: uvicorn worker processes; metrics are aggregated across them.
        **options: ``model_file``, ``max_body_bytes``, ``max_batch``, ``log_level``,
            ``torch_predictor``, ``max_request_tokens``, ``max_batch_tokens``, ``request_timeout_s``,
            ``batch_max_size`` / ``batch_max_wait_ms`` (adaptive batching), ``device`` (cpu, cuda),
            ``threads`` (CPU threads per model call), the alert options of :func:`create_app` and
            ``plugins`` (modules registering alert actions).

    Example:
        >>> serve("exports/digits_20261122_054000", port=8080)  # doctest: +SKIP
    """
    try:
        import fastapi  # noqa: F401 - imported to report a missing extra clearly
        import uvicorn  # noqa: F401 - imported to report a missing extra clearly

        from trainengine.serve._app import run_server
    except ImportError as exc:
        raise _fastapi_missing(exc) from exc
    run_server(
        bundle_dir,
        host=host,
        port=port,
        runtime=runtime,  # type: ignore[arg-type]  # run_server checks it
        api_key_env=api_key_env,
        workers=workers,
        **options,
    )
