"""Export bundles of fitted scikit-learn pipelines, served by ``trainengine serve``.

:func:`export_pipeline_bundle` turns a :class:`~trainengine.sklearn.SklearnTrainer` run's
``model/`` folder (or a registered copy of it) into a bundle folder: the pipeline's
``model.skops`` (and ``model.onnx`` when it converted and matched scikit-learn),
``sklearn_model.json`` (columns and their kinds, classes, ONNX inputs), ``task_spec.json``,
``monitoring.json`` with ``prometheus/alerts.yml`` (the export package's writers, so the
thresholds and rules are those of torch bundles), ``reference_profile.json`` (the drift
reference the run recorded at fit time, see :func:`reference_profile`), a ``README.md`` and a
``manifest.json`` with ``"format": "sklearn"``, the serving runtime and the SHA-256 of every
file. ``trainengine serve BUNDLE`` serves it through ONNX Runtime when the bundle has
``model.onnx``, else through the skops pipeline (loaded only after the trusted-types check); see
``trainengine.serve._sklearn``.

Like a torch bundle it also serves without trainengine: ``server.py``, ``inference.py`` and their
helpers (``trainengine.export``'s standalone files) plus ``sklearn_inference.py`` (a verbatim copy
of ``trainengine/serve/_sklearn.py``), a ``requirements.txt`` pinned to this machine's versions
(numpy + onnxruntime for ``model.onnx``; scikit-learn, scipy, skops and pandas for
``model.skops``) and a ``Dockerfile``: ``python server.py`` in the folder serves it.
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

__all__ = ["export_pipeline_bundle", "reference_profile", "BUNDLE_FORMAT", "REFERENCE_PROFILE"]

BUNDLE_FORMAT = "sklearn"  # manifest["format"]: what trainengine serve recognises
_BUNDLE_FORMAT_VERSION = 1
REFERENCE_PROFILE = "reference_profile.json"  # in the run's model/ folder and in the bundle
_PROFILED_KINDS = ("number", "bool")  # input-schema column kinds the drift reference profiles


def reference_profile(data: Any, task: Any, classes: list[Any] | None) -> dict[str, Any] | None:
    """The drift reference of a fitted pipeline: a profile of its training data, as the server reads it.

    A :class:`~trainengine.monitoring.DatasetProfile` (``profile_dataset``: up to 10,000 rows, 20
    bins) of what the server also sees in every request: the **number and boolean columns** of a
    DataFrame (boolean as 0/1, a missing value counted as non-finite), in the schema's order,
    ``feature_<k>`` being ``columns[k]`` (the dict's extra ``"columns"`` key); or every feature of
    an array (``"columns": None``). Text, category and date columns are not profiled: a
    ``DatasetProfile`` holds histograms of numbers (its category counts are token ids of token
    data), and the serving drift window compares numbers only. Labels: class indices in
    ``classes`` order (the served ``class``) or the regression targets, as for torch bundles.

    Args:
        data: The training data (``trainengine.sklearn._data.TabularData``: ``X``, ``y``,
            ``input_schema()``).
        task: The run's :class:`~trainengine.tasks.TaskSpec`.
        classes: The classes, in the order the bundle's ``class`` indexes them.

    Returns:
        The profile's dict, or None when there is nothing numeric to profile.
    """
    import numpy as np

    from trainengine.probes import profile_dataset

    schema = data.input_schema()
    if schema.get("kind") == "dataframe":
        names: list[str] | None = [str(c["name"]) for c in schema["columns"] if c.get("dtype") in _PROFILED_KINDS]
        if not names:
            return None
        frame = data.X[names]
        matrix = np.column_stack([frame[n].to_numpy(dtype=np.float64, na_value=np.nan) for n in names])
    else:
        names = None
        try:
            matrix = np.asarray(data.X, dtype=np.float64).reshape(len(data.X), -1)
        except (TypeError, ValueError):  # an array of text: nothing the drift window can compare
            return None
    y = np.asarray(data.y)
    labels: np.ndarray | None
    if task.task_type == "classification":
        index = {str(c): i for i, c in enumerate(classes or [])}
        found = [index.get(str(v)) for v in (y.tolist() if y.dtype != object else y)]
        labels = None if any(i is None for i in found) else np.asarray(found, dtype=np.int64)
    else:
        labels = y.astype(np.float64)
    samples = [(row,) for row in matrix] if labels is None else list(zip(matrix, labels, strict=True))
    profile = profile_dataset(samples, task).to_dict()
    profile["columns"] = names
    return profile


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


def _readme(manifest: Mapping[str, Any], requirements: str) -> str:
    columns = [c["name"] for c in manifest["input"].get("columns") or []]
    example = dict.fromkeys(columns, "...") if columns else ["..."] * int(manifest["input"].get("num_features") or 1)
    needs = ", ".join(line.split("==")[0] for line in requirements.splitlines() if line and not line.startswith("#"))
    profile = manifest.get("reference_profile")
    if profile:
        profiled = profile.get("columns")
        what = f"the columns {', '.join(profiled)}" if profiled else "every input feature"
        drift = (
            f"`trainengine_serve_drift_score` compares the recent inputs ({what}; text and date columns are not "
            f"profiled) with `{profile['file']}`, the training data's profile"
        )
    else:
        drift = "drift is not measured (the run recorded no reference profile)"
    return (
        f"# {manifest['name']} ({manifest.get('version', 'unversioned')})\n\n"
        f"A scikit-learn {manifest['task_type']} pipeline exported by trainengine; served through "
        f"**{manifest['runtime']}**.\n\n"
        "```shell\n"
        "# With trainengine installed\n"
        "trainengine serve .\n"
        f"# Without it: the bundle's own server (pip install -r requirements.txt: {needs})\n"
        "python server.py --port 8080\n"
        "# In a container\n"
        f"docker build -t {manifest['name']}:latest . && docker run --rm -p 8080:8080 {manifest['name']}:latest\n"
        f"curl -s localhost:8080/predict -H 'content-type: application/json' -d '{json.dumps({'inputs': [example]})}'\n"
        "```\n\n"
        "Inputs are records with every column the pipeline was trained on (null for a missing value): "
        f"{', '.join(columns) or 'lists of numbers'}. Every file's SHA-256 is in manifest.json and is checked "
        "before the model is loaded.\n\n"
        "`GET /metrics` (Prometheus) counts requests by status, latency, batch sizes and predictions; "
        f"{drift}. `monitoring.json` holds the alert thresholds, `prometheus/alerts.yml` the same rules for "
        "Prometheus.\n"
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
    from trainengine.export._files import (
        SKLEARN_FILES,
        SKLEARN_RUNTIME_PACKAGES,
        copy_standalone_runtime,
        dockerfile,
        monitoring_settings,
        requirements_txt,
    )
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
    profile: dict[str, Any] | None = None
    if (src / REFERENCE_PROFILE).is_file():  # recorded at fit time (older runs have none: no drift)
        shutil.copyfile(src / REFERENCE_PROFILE, folder / REFERENCE_PROFILE)
        columns = json.loads((src / REFERENCE_PROFILE).read_text(encoding="utf-8")).get("columns")
        profile = {"file": REFERENCE_PROFILE, "source": "training_data", "columns": columns}
    runtime = "onnx" if has_onnx else "skops"
    # The bundle's own server (python server.py), as torch bundles have: no trainengine needed.
    copy_standalone_runtime(folder)
    for file, source in SKLEARN_FILES.items():
        shutil.copyfile(source, folder / file)
    extra = list(SKLEARN_RUNTIME_PACKAGES[runtime])
    columns_in = (info.get("input") or {}).get("columns") or []
    if runtime == "onnx" and any(c.get("dtype") == "datetime" for c in columns_in):
        extra.append("pandas")  # dates are parsed as in training before they are fed as text
    requirements = requirements_txt(extra=extra)
    (folder / "requirements.txt").write_text(requirements)
    (folder / "Dockerfile").write_text(dockerfile())

    classes = info.get("classes")
    manifest: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "format_version": _BUNDLE_FORMAT_VERSION,
        "name": name,
        "created_at": stamp.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "task_type": info.get("task_type"),
        "runtime": runtime,
        "input": info.get("input") or {},
        "formats": formats,
        "model_info": MODEL_INFO,
        "prometheus_rules": ALERTS_FILE,
        "reference_profile": profile,  # None: drift is not measured
        "lineage": info.get("lineage") or source_manifest.get("lineage"),
        "versions": library_versions(),
    }
    if isinstance(classes, list) and classes:
        manifest["class_names"] = [str(c) for c in classes]
    if version is not None:
        manifest["version"] = version
    (folder / "README.md").write_text(_readme(manifest, requirements))
    manifest["files"] = bundle_files(folder)
    atomic_write_json(folder / MANIFEST, manifest)
    return folder
