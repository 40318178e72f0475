"""Export bundles of fitted scikit-learn pipelines, served by ``trainengine serve``.

:func:`export_pipeline_bundle` turns a :class:`~trainengine.sklearn.SklearnTrainer` run's
``model/`` folder (or a registered copy of it) into a bundle folder: the pipeline's
``model.skops`` (and ``model.onnx`` when it converted and matched scikit-learn),
``sklearn_model.json`` (columns and their kinds, classes, ONNX inputs), ``task_spec.json``,
``monitoring.json`` with ``prometheus/alerts.yml`` (the export package's writers, so the
thresholds and rules are those of torch bundles), a ``README.md`` and a ``manifest.json`` with
``"format": "sklearn"``, the serving runtime and the SHA-256 of every file. ``trainengine serve
BUNDLE`` serves it through ONNX Runtime when the bundle has ``model.onnx``, else through the
skops pipeline (loaded only after the trusted-types check); see ``trainengine.serve._sklearn``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trainengine.errors import ExportError

__all__ = ["export_pipeline_bundle", "BUNDLE_FORMAT"]

BUNDLE_FORMAT = "sklearn"  # manifest["format"]: what trainengine serve recognises
_BUNDLE_FORMAT_VERSION = 1


def _model_folder(path: str | os.PathLike[str]) -> Path:
    from trainengine.sklearn._trainer import MODEL_DIR, MODEL_INFO

    src = Path(path)
    if (src / MODEL_DIR / MODEL_INFO).is_file():
        return src / MODEL_DIR
    if (src / MODEL_INFO).is_file():
        return src
    raise ExportError(
        f"no scikit-learn model at {src}: give the run directory of a SklearnTrainer run (it saves model/) "
        f"or its model/ folder (with {MODEL_INFO})"
    )


def _readme(manifest: Mapping[str, Any]) -> str:
    columns = [c["name"] for c in manifest["input"].get("columns") or []]
    example = dict.fromkeys(columns, "...") if columns else ["..."] * int(manifest["input"].get("num_features") or 1)
    return (
        f"# {manifest['name']} ({manifest.get('version', 'unversioned')})\n\n"
        f"A scikit-learn {manifest['task_type']} pipeline exported by trainengine; served through "
        f"**{manifest['runtime']}**.\n\n"
        "```shell\ntrainengine serve .\n"
        f"curl -s localhost:8080/predict -H 'content-type: application/json' -d '{json.dumps({'inputs': [example]})}'\n"
        "```\n\n"
        "Inputs are records with every column the pipeline was trained on (null for a missing value): "
        f"{', '.join(columns) or 'lists of numbers'}. Every file's SHA-256 is in manifest.json and is checked "
        "before the model is loaded.\n"
    )


def export_pipeline_bundle(
    run_dir_or_model_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    name: str | None = None,
    version: str | None = None,
    monitoring_config: Mapping[str, Any] | None = None,
) -> Path:
    """Write a bundle of a fitted pipeline that ``trainengine serve`` serves.

    Args:
        run_dir_or_model_dir: A SklearnTrainer run directory, or its ``model/`` folder (a
            registered copy too); its files are verified against its manifest first.
        output_dir: The bundle is written to ``output_dir/<name>_<UTC timestamp>/`` (a new folder).
        name: The model's name (default: the run's name).
        version: The model's version (``/health``, ``/predict`` answers, metrics labels).
        monitoring_config: Serving thresholds over the defaults (``latency_threshold_ms``,
            ``error_rate_threshold``, limits such as ``request_timeout_s``), as for torch bundles.

    Returns:
        The bundle's folder.

    Raises:
        ExportError: No model there, a folder that does not match its manifest, an invalid
            monitoring config, or a pipeline with untrusted types and no ONNX model to serve.

    Example:
        >>> bundle = export_pipeline_bundle("runs/credit/run_1", "exports", version="1.0.0")  # doctest: +SKIP
        >>> (bundle / "manifest.json").is_file()  # doctest: +SKIP
        True
    """
    from trainengine._hashing import MANIFEST, bundle_files, verify_bundle
    from trainengine._io import atomic_write_json
    from trainengine.export import prometheus_rules_yaml
    from trainengine.export._files import monitoring_settings
    from trainengine.export._prometheus import ALERTS_FILE
    from trainengine.provenance import library_versions
    from trainengine.sklearn._onnx import ONNX_FILE
    from trainengine.sklearn._persist import SKOPS_FILE, UntrustedModelError, check_trusted
    from trainengine.sklearn._trainer import MODEL_INFO

    src = _model_folder(run_dir_or_model_dir)
    if (src / MANIFEST).is_file():
        problems = verify_bundle(src)
        if problems:
            raise ExportError(f"{src} does not match its manifest, so it is not exported: {'; '.join(problems)}")
    info = json.loads((src / MODEL_INFO).read_text(encoding="utf-8"))
    source_manifest = json.loads((src / MANIFEST).read_text(encoding="utf-8")) if (src / MANIFEST).is_file() else {}
    has_onnx = (src / ONNX_FILE).is_file() and bool((info.get("onnx") or {}).get("file"))
    try:
        check_trusted(src / SKOPS_FILE)
    except UntrustedModelError as exc:
        if not has_onnx:
            raise ExportError(f"the pipeline cannot be served: {exc}") from None
    monitoring = monitoring_settings(monitoring_config)
    run_name = src.parent.name if src.name == "model" else src.name
    name = name or str(source_manifest.get("name") or run_name)
    stamp = datetime.now(UTC)
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", name) + stamp.strftime("_%Y%m%d_%H%M%S")
    root = Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    folder, n = root / base, 2
    while folder.exists():
        folder, n = root / f"{base}_{n}", n + 1
    folder.mkdir()

    shutil.copyfile(src / SKOPS_FILE, folder / SKOPS_FILE)
    formats: dict[str, Any] = {"skops": {"file": SKOPS_FILE}}
    if has_onnx:
        shutil.copyfile(src / ONNX_FILE, folder / ONNX_FILE)
        formats["onnx"] = {"file": ONNX_FILE, "parity": (info.get("onnx") or {}).get("parity")}
    (folder / MODEL_INFO).write_text(json.dumps(info, indent=2) + "\n")
    task = info.get("task") or {"task_type": info.get("task_type")}
    (folder / "task_spec.json").write_text(json.dumps(task, indent=2) + "\n")
    (folder / "monitoring.json").write_text(json.dumps(monitoring, indent=2) + "\n")
    (folder / ALERTS_FILE).parent.mkdir(parents=True, exist_ok=True)
    (folder / ALERTS_FILE).write_text(prometheus_rules_yaml(name, version, monitoring))

    classes = info.get("classes")
    manifest: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "format_version": _BUNDLE_FORMAT_VERSION,
        "name": name,
        "created_at": stamp.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "task_type": info.get("task_type"),
        "runtime": "onnx" if has_onnx else "skops",
        "input": info.get("input") or {},
        "formats": formats,
        "model_info": MODEL_INFO,
        "prometheus_rules": ALERTS_FILE,
        "reference_profile": None,  # drift is not measured for scikit-learn bundles
        "lineage": info.get("lineage") or source_manifest.get("lineage"),
        "versions": library_versions(),
    }
    if isinstance(classes, list) and classes:
        manifest["class_names"] = [str(c) for c in classes]
    if version is not None:
        manifest["version"] = version
    (folder / "README.md").write_text(_readme(manifest))
    manifest["files"] = bundle_files(folder)
    atomic_write_json(folder / MANIFEST, manifest)
    return folder
