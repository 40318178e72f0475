"""Registered artifacts: recognising a source, reading its lineage, the artifact store, loading weights.

Kinds of artifact:

* ``checkpoint``: a ``ckpt-*`` folder written by :class:`~trainengine.checkpoint.CheckpointManager`
  (all its files; checked against its own manifest).
* ``run``: a run directory (``run.json`` + ``model.safetensors`` + ``config.yaml``; only these
  and ``data_profile.json`` are kept, not logs or checkpoints).
* ``safetensors``: one ``.safetensors`` file of weights.
* ``torch``: one ``.pt`` / ``.pth`` / ``.bin`` file, read with ``torch.load(weights_only=True)``
  only: a state dict, or a dict holding one under ``model_state_dict`` / ``state_dict`` / ``model``.
* ``bundle``: an export bundle folder (the files its ``manifest.json`` lists, plus the manifest).
* ``sklearn``: a fitted scikit-learn pipeline: the ``model/`` folder of a
  :class:`~trainengine.sklearn.SklearnTrainer` run (or the run directory, meaning its ``model/``):
  the files its ``manifest.json`` (``format: "sklearn"``) lists — ``model.skops``, ``model.onnx``
  when there is one, ``sklearn_model.json`` — plus the manifest. Loaded only through
  :func:`trainengine._skops.load_skops` (the trusted-types check; never pickle).

The artifact's SHA-256 is that of the file's bytes, or for a folder the SHA-256 of the sorted lines
``"<relpath>\\t<sha256>\\n"`` of its files (a bundle's ``manifest.json`` left out, as in
``trainengine.export.bundle_sha256``; a ``sklearn`` folder's manifest is covered, so an edited
manifest is caught too).

Why one module of this length: every artifact kind the registry accepts (checkpoint, run directory,
bundle, weights file, scikit-learn model folder) is recognised, read and placed by the ArtifactStore
here; splitting by kind would spread one contract (what is copied, hashed and verified) over five files.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import re
import shutil
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from trainengine._hashing import MANIFEST, content_sha256, copy_and_hash, file_sha256, manifest_digest
from trainengine._skops import SKOPS_FILE as _SKOPS_FILE
from trainengine._storage import RemoteStore, is_url
from trainengine.errors import ConfigError, RegistryError

__all__ = [
    "ArtifactKind",
    "ArtifactSource",
    "ArtifactStore",
    "Placement",
    "inspect_source",
    "hash_files",
    "artifact_sha256",
    "verify_source",
    "read_state_dict",
    "load_weights",
    "load_sklearn",
    "sklearn_manifest",
    "ARTIFACT_KINDS",
    "remove_path",
    "default_cache_dir",
]

logger = logging.getLogger(__name__)

ArtifactKind = Literal["checkpoint", "run", "safetensors", "torch", "bundle", "sklearn"]
#: Every artifact kind, in the order the docs list them.
ARTIFACT_KINDS: tuple[str, ...] = get_args(ArtifactKind)
SKLEARN_FORMAT = "sklearn"  # manifest["format"] of a scikit-learn model folder (and of its export bundle)
TORCH_SUFFIXES = (".pt", ".pth", ".bin")
_STATE_KEYS = ("model_state_dict", "state_dict", "model")
_RUN_FILES = ("model.safetensors", "run.json", "config.yaml", "data_profile.json")
# A scikit-learn model folder, as trainengine.sklearn writes it (that package is a higher layer: the
# names are repeated here, and tests/sklearn/test_registry.py checks they agree).
_SKLEARN_MODEL_DIR = "model"  # trainengine.sklearn.MODEL_DIR
_SKLEARN_INFO = "sklearn_model.json"  # trainengine.sklearn.MODEL_INFO


@dataclass
class ArtifactSource:
    """What a source path is and what it says about itself (lineage, spec, metrics)."""

    kind: ArtifactKind
    path: Path
    files: list[str]  # relative paths to keep; [] for a single-file artifact
    run_id: str | None = None
    git_commit: str | None = None
    data_fingerprint: str | None = None
    config: dict[str, Any] | None = None
    task_type: str | None = None
    model_spec: dict[str, Any] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    expected: dict[str, str] = field(default_factory=dict)  # relpath -> sha256 its own manifest promises


# ------------------------------------------------------------------------------- recognising
def inspect_source(checkpoint_path: Any, bundle_path: Any) -> ArtifactSource:
    """Recognise the artifact to register and read its lineage.

    Raises:
        RegistryError: neither or both paths given, the path is missing, or it is not one of the
            accepted kinds (the message says which are).
    """
    if (checkpoint_path is None) == (bundle_path is None):
        raise RegistryError(
            "give exactly one of checkpoint_path= (a checkpoint folder, run directory, .safetensors or .pt file, "
            "or a scikit-learn model folder) or bundle_path= (an export bundle folder)"
        )
    if bundle_path is not None:
        return _inspect_bundle(Path(bundle_path))
    path = Path(checkpoint_path)
    if not path.exists():
        raise RegistryError(f"checkpoint_path {str(path)!r} does not exist")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".safetensors":
            return ArtifactSource("safetensors", path.resolve(), [])
        if suffix in TORCH_SUFFIXES:
            return ArtifactSource("torch", path.resolve(), [])
        raise RegistryError(
            f"cannot register {str(path)!r}: unknown file type {path.suffix or '(no suffix)'!r}; "
            f"accepted: a .safetensors file, a {'/'.join(TORCH_SUFFIXES)} state dict, a checkpoint folder (ckpt-*), "
            "a run directory, a scikit-learn model folder (a SklearnTrainer run's model/), or bundle_path= for an "
            "export bundle"
        )
    if (path / "meta.json").is_file() and (path / "state.json").is_file():
        return _inspect_checkpoint(path)
    sklearn_folder = _sklearn_folder(path)
    if sklearn_folder is not None:
        return _inspect_sklearn(sklearn_folder)
    if (path / "run.json").is_file():
        return _inspect_run(path)
    if (path / "manifest.json").is_file() and (path / "model_config.json").is_file():
        raise RegistryError(
            f"{str(path)!r} is an export bundle; register it with bundle_path= instead of checkpoint_path="
        )
    from trainengine.checkpoint import is_checkpoint_name

    inner = sorted(p.name for p in path.iterdir() if p.is_dir() and is_checkpoint_name(p.name)) if path.is_dir() else []
    if inner:
        raise RegistryError(
            f"{str(path)!r} is a checkpoint directory holding {len(inner)} checkpoint(s); pass one of them, "
            f"e.g. {str(path / inner[-1])!r} (trainengine checkpoints list shows them)"
        )
    raise RegistryError(
        f"{str(path)!r} is a folder that is neither a checkpoint (meta.json + state.json + manifest.json), a run "
        "directory (run.json + model.safetensors) nor a scikit-learn model folder (manifest.json of format 'sklearn' "
        "+ model.skops); give one of those, a .safetensors / .pt file, or bundle_path="
    )


def _finite_metrics(values: Any) -> dict[str, float]:
    out = {}
    for key, value in (values or {}).items() if isinstance(values, Mapping) else ():
        if key in ("step", "epoch") or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(float(value)):
            out[str(key)] = float(value)
    return out


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RegistryError(f"cannot read {what} {str(path)!r}: {exc}") from exc
    if not isinstance(doc, dict):
        raise RegistryError(f"{what} {str(path)!r} is not a JSON object")
    return doc


def _read_yaml(path: Path) -> dict[str, Any] | None:
    import yaml

    from trainengine.config import load_yaml

    try:
        doc = load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return doc if isinstance(doc, dict) else None


def _inspect_checkpoint(path: Path) -> ArtifactSource:
    from trainengine.checkpoint import read_metadata
    from trainengine.errors import CheckpointError

    if not (path / "manifest.json").is_file():
        raise RegistryError(
            f"checkpoint {str(path)!r} has no manifest.json: its write never finished or it was damaged; register a "
            "complete checkpoint"
        )
    if not (path / "model.safetensors").is_file():
        raise RegistryError(
            f"checkpoint {str(path)!r} holds no model weights (model.safetensors); it was saved without a model"
        )
    try:
        meta = read_metadata(path)
    except CheckpointError as exc:
        raise RegistryError(f"cannot read checkpoint metadata: {exc}") from exc
    extra = meta.extra
    manifest = _read_json(path / "manifest.json", "checkpoint manifest")
    files = manifest.get("files")
    listed: dict[str, Any] = files if isinstance(files, dict) else {}
    source = ArtifactSource(
        "checkpoint",
        path.resolve(),
        sorted(p.name for p in path.iterdir() if p.is_file()),
        git_commit=(extra.get("git") or {}).get("commit") or extra.get("git_commit"),
        config=extra.get("config") if isinstance(extra.get("config"), dict) else None,
        task_type=(extra.get("task") or {}).get("task_type"),
        model_spec=extra.get("model_spec") if isinstance(extra.get("model_spec"), dict) else None,
        metrics=_finite_metrics(meta.metrics),
        expected={name: str(entry.get("sha256")) for name, entry in listed.items() if isinstance(entry, dict)},
    )
    # The run it came from: the run_dir in its metadata (relative to where training ran), or the
    # folder holding <run_dir>/checkpoints/. A run.json is only trusted when its run_id is the
    # recorded run's name, so a same-named path elsewhere cannot lend a wrong data fingerprint.
    recorded = Path(extra["run_dir"]) if extra.get("run_dir") else None
    candidates = [recorded] if recorded is not None else []
    if path.parent.name == "checkpoints":
        candidates.append(path.parent.parent)
    source.run_id = recorded.name if recorded is not None else None
    for run_dir in candidates:
        if not (run_dir / "run.json").is_file():
            continue
        facts = _read_json(run_dir / "run.json", "run.json")
        if recorded is not None and facts.get("run_id") != recorded.name:
            continue
        source.run_id = facts.get("run_id")
        source.data_fingerprint = (facts.get("data") or {}).get("train_fingerprint")
        source.git_commit = source.git_commit or (facts.get("git") or {}).get("commit")
        break
    return source


def _inspect_run(path: Path) -> ArtifactSource:
    if not (path / "model.safetensors").is_file():
        raise RegistryError(
            f"run directory {str(path)!r} has no final weights (model.safetensors): the run is still going, failed, "
            "or had checkpointing.save_final_weights off; register one of its checkpoints instead"
        )
    facts = _read_json(path / "run.json", "run.json")
    results = facts.get("results") or {}
    return ArtifactSource(
        "run",
        path.resolve(),
        [f for f in _RUN_FILES if (path / f).is_file()],
        run_id=facts.get("run_id"),
        git_commit=(facts.get("git") or {}).get("commit"),
        data_fingerprint=(facts.get("data") or {}).get("train_fingerprint"),
        config=_read_yaml(path / "config.yaml"),
        task_type=(facts.get("task") or {}).get("task_type"),
        model_spec=(facts.get("model") or {}).get("spec"),
        metrics=_finite_metrics(results.get("final_metrics")),
    )


def _inspect_bundle(path: Path) -> ArtifactSource:
    if not path.is_dir():
        raise RegistryError(
            f"bundle_path {str(path)!r} is not a folder; give an export bundle folder (trainengine export writes one)"
        )
    if not (path / "manifest.json").is_file():
        raise RegistryError(
            f"bundle {str(path)!r} has no manifest.json: the export is incomplete (the manifest is written last); "
            "export it again"
        )
    manifest = _read_json(path / "manifest.json", "bundle manifest")
    files = _listed_files(path, manifest, "bundle", "export the bundle again")
    model_config = (
        _read_json(path / "model_config.json", "model_config.json") if (path / "model_config.json").is_file() else {}
    )
    lineage = manifest.get("lineage") or {}
    config = _read_yaml(path / "training_config.yaml") if (path / "training_config.yaml").is_file() else None
    return ArtifactSource(
        "bundle",
        path.resolve(),
        [*sorted(files), "manifest.json"],
        run_id=lineage.get("run_id"),
        git_commit=lineage.get("git_commit"),
        data_fingerprint=lineage.get("data_fingerprint"),
        config=config or None,
        task_type=manifest.get("task_type"),
        model_spec=model_config.get("spec") or manifest.get("model_spec"),
        expected={rel: str(sha) for rel, sha in files.items()},
    )


def _listed_files(path: Path, manifest: Mapping[str, Any], what: str, redo: str) -> dict[str, Any]:
    """The manifest's ``files`` table (relpath -> its entry), checked: safe names, every file present.

    Raises:
        RegistryError: no table, a name outside the folder, or a listed file that is missing.
    """
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise RegistryError(f"{what} manifest {str(path / MANIFEST)!r} has no 'files' table; {redo}")
    for rel in files:
        parts = Path(rel).parts
        if not isinstance(rel, str) or Path(rel).is_absolute() or ".." in parts or rel == MANIFEST:
            raise RegistryError(f"{what} manifest lists an invalid file name {rel!r}")
    missing = [rel for rel in files if not (path / rel).is_file()]
    if missing:
        raise RegistryError(
            f"{what} {str(path)!r} is incomplete: its manifest lists {', '.join(missing)}, which do not exist; {redo}"
        )
    return files


def sklearn_manifest(folder: Path) -> dict[str, Any] | None:
    """The ``manifest.json`` of ``folder`` when it says ``format: "sklearn"`` (a scikit-learn model
    folder or its export bundle), else None."""
    file = folder / MANIFEST
    if not file.is_file():
        return None
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("format") == SKLEARN_FORMAT else None


def _sklearn_folder(path: Path) -> Path | None:
    """The scikit-learn model folder ``path`` means: itself, or a SklearnTrainer run directory's ``model/``."""
    if sklearn_manifest(path) is not None:
        return path
    inner = path / _SKLEARN_MODEL_DIR
    if not (path / "model.safetensors").is_file() and sklearn_manifest(inner) is not None:
        return inner
    return None


def _inspect_sklearn(path: Path) -> ArtifactSource:
    manifest = _read_json(path / MANIFEST, "scikit-learn model manifest")
    if "runtime" in manifest or (path / "task_spec.json").is_file():
        raise RegistryError(
            f"{str(path)!r} is a scikit-learn export bundle; register it with bundle_path= (kind 'bundle', what "
            "trainengine serve NAME@ALIAS serves), or register the run's model/ folder for kind 'sklearn'"
        )
    redo = "train the pipeline again (SklearnTrainer writes the manifest last)"
    files = _listed_files(path, manifest, "scikit-learn model", redo)
    if _SKOPS_FILE not in files:
        raise RegistryError(
            f"scikit-learn model {str(path)!r} lists no {_SKOPS_FILE} in its manifest, so there is no pipeline to "
            f"load; {redo}"
        )
    info: dict[str, Any] = {}
    if _SKLEARN_INFO in files:
        info = _read_json(path / _SKLEARN_INFO, _SKLEARN_INFO)
    lineage = manifest.get("lineage") or info.get("lineage") or {}
    if not isinstance(lineage, dict):
        lineage = {}
    # The run's config: from the run directory holding this model/ folder, when its run.json is that run.
    config = None
    run_dir = path.parent
    if path.name == _SKLEARN_MODEL_DIR and (run_dir / "run.json").is_file() and (run_dir / "config.yaml").is_file():
        facts = _read_json(run_dir / "run.json", "run.json")
        if lineage.get("run_id") is None or facts.get("run_id") == lineage.get("run_id"):
            config = _read_yaml(run_dir / "config.yaml")
    return ArtifactSource(
        "sklearn",
        path.resolve(),
        [*sorted(files), MANIFEST],
        run_id=lineage.get("run_id"),
        git_commit=lineage.get("git_commit"),
        data_fingerprint=lineage.get("data_fingerprint"),
        config=config or None,
        task_type=manifest.get("task_type") or info.get("task_type"),
        metrics=_finite_metrics(info.get("metrics")),
        expected={rel: manifest_digest(entry) or "" for rel, entry in files.items()},
    )


# ------------------------------------------------------------------------------- hashing
def hash_files(root: Path, files: list[str]) -> dict[str, str]:
    """``{relpath: sha256}`` of ``root / relpath`` for each file."""
    return {rel: file_sha256(root / rel) for rel in files}


def artifact_sha256(kind: str, hashes: Mapping[str, str], *, single_file: bool) -> str:
    """The artifact hash: a single file's own hash, or a folder's content hash.

    A folder's hash is :func:`trainengine._hashing.content_sha256` of its files (a bundle's
    ``manifest.json`` left out, so it equals ``trainengine.export.bundle_sha256`` of the bundle).
    """
    if single_file:
        return next(iter(hashes.values()))
    return content_sha256({rel: sha for rel, sha in hashes.items() if not (kind == "bundle" and rel == MANIFEST)})


def verify_source(source: ArtifactSource, hashes: Mapping[str, str], path: Path) -> None:
    """Check the copied (or in-place) files the way ``trainengine checkpoints verify`` does.

    * a checkpoint: :func:`trainengine.checkpoint.verify_checkpoint` itself (its manifest's sizes
      and hashes, missing or unlisted files, and each file's format: a pickle planted as
      ``model.safetensors`` with a re-hashed manifest is refused);
    * a run directory or a bundle: the bundle's files against its manifest, and every
      ``.safetensors`` file with the same format check (``sniff_safetensors``);
    * a scikit-learn model folder: its files against its manifest, and ``model.skops`` must be a
      ``.skops`` file (a zip skops can read: a pickle renamed is refused). Types outside the
      allow-list do not stop the registration — the pipeline is then loaded with ``trusted=[...]``
      only — but are logged;
    * a ``.safetensors`` / ``.pt`` file: loaded (``.pt`` with ``weights_only=True`` only).

    Args:
        source: What is registered.
        hashes: ``{relpath: sha256}`` of the bytes at ``path`` (computed while copying them).
        path: The staged copy (or the source itself for ``copy_artifact=False``).

    Raises:
        RegistryError: the first line names the source and says it cannot be registered; then
            each problem.
    """
    from trainengine.checkpoint import sniff_safetensors, verify_checkpoint

    problems: list[str] = []
    if source.kind == "checkpoint":
        problems = verify_checkpoint(path, hashes=hashes)
    elif source.kind in ("run", "bundle", "sklearn"):
        bad = [rel for rel, sha in source.expected.items() if rel in hashes and hashes[rel] != sha]
        problems = [f"{rel}: sha256 differs from the manifest (modified or damaged)" for rel in bad]
        problems += [f"{rel}: listed in the manifest but missing" for rel in source.expected if rel not in hashes]
        for rel in sorted(hashes):
            reason = sniff_safetensors(path / rel) if rel.endswith(".safetensors") else None
            if reason:
                problems.append(f"{rel}: {reason}")
        if source.kind == "sklearn" and not problems:
            problems += _skops_problems(path / _SKOPS_FILE, source.path)
    if problems:
        raise RegistryError(
            f"{source.kind} {str(source.path)!r} failed verification and cannot be registered: {'; '.join(problems)}"
        )
    if source.kind in ("safetensors", "torch"):
        read_state_dict(source.kind, path, label=source.path)


def _skops_problems(file: Path, shown: Path) -> list[str]:
    """What is wrong with a registered ``model.skops`` (empty: it is a readable ``.skops`` file)."""
    from trainengine._skops import UntrustedModelError, skops_types
    from trainengine.errors import MissingExtraError

    try:
        _, refused = skops_types(file)
    except UntrustedModelError as exc:
        return [f"{_SKOPS_FILE}: {str(exc).replace(str(file), 'it', 1)}"]
    except MissingExtraError:
        return []  # the file is a zip (checked first); its types are checked when it is loaded
    if refused:
        logger.warning(
            "%s/%s holds types outside the allow-list (%s): load it with trusted=%r once you have checked them",
            shown,
            _SKOPS_FILE,
            ", ".join(refused),
            refused,
        )
    return []


# ------------------------------------------------------------------------------- the store
@dataclass
class Placement:
    """An artifact on its way into the registry: hashed and verified, not yet committed.

    ``commit()`` moves the staged copy to its final place (call it inside the transaction that
    inserts the version's row, so the row and the folder appear together); ``abort()`` removes
    a copy this placement committed when that transaction rolled back; ``cleanup()`` removes the
    staging folder. A placement made with ``copy=False`` records the source path in place and its
    three methods do nothing.

    Attributes:
        source: What is registered.
        hashes: ``{relpath: sha256}`` of the bytes placed (a single file under its own name).
        sha256: The artifact hash stored with the version (:func:`artifact_sha256`).
        stored_path: The row's ``artifact_path``: relative to the store root when copied, else the
            source's absolute path.
        in_store: Whether the artifact was copied into the store.
    """

    source: ArtifactSource
    hashes: dict[str, str]
    sha256: str
    stored_path: str
    in_store: bool
    staging: Path | None = None
    final: Path | None = None
    _placed_inode: int | None = None
    created: list[Path] = field(default_factory=list)  # folders made for the staging copy, innermost first
    remote: RemoteStore | None = None  # an fsspec store: the upload is already at its (unique) final prefix
    remote_prefix: str | None = None

    def _ours(self) -> bool:
        return (
            self.final is not None
            and self._placed_inode is not None
            and self.final.exists()
            and self.final.stat().st_ino == self._placed_inode
        )

    def commit(self) -> None:
        """Move the staged copy to its final place (idempotent: a retried transaction finds it there).

        Only call this while owning the final path (its row is inserted in the open transaction):
        whatever sits there now is the leftover of a crashed registration and is moved aside.
        """
        if self.remote is not None:
            return  # uploaded under a prefix of its own: the row that names it is the commit
        if self.staging is None or self.final is None or self._ours():
            return
        if self.final.exists():
            trash = self.final.with_name(f".trash-{self.final.name}-{uuid.uuid4().hex[:8]}")
            os.rename(self.final, trash)
            remove_path(trash)
        os.rename(self.staging, self.final)
        self._placed_inode = self.final.stat().st_ino

    def abort(self) -> None:
        """The row was rolled back: remove the copy if it is ours (same inode), or if the move was interrupted."""
        if self.remote is not None and self.remote_prefix is not None:
            self.remote.rm(self.remote_prefix)  # nothing names this upload: remove it
            return
        if self.final is None or self.staging is None:
            return
        if self._ours() or (self._placed_inode is None and self.final.exists() and not self.staging.exists()):
            remove_path(self.final)

    def cleanup(self) -> None:
        """Remove the staging folder (always safe: after a commit it no longer exists), and the
        folders made for it that are empty now: a refused registration leaves nothing behind."""
        if self.staging is not None:
            remove_path(self.staging)
        for folder in self.created:
            try:
                folder.rmdir()  # only when empty: a committed version or another registration keeps it
            except OSError:
                break


class ArtifactStore:
    """The folder that keeps a copy of every registered artifact: ``<root>/<name>/<version>/``.

    Copies are written to a hidden staging folder, hashed from the bytes written (one read of
    the source), verified against the source's own manifest, and moved into place by
    :meth:`Placement.commit`. A store without a root (an in-memory registry) can only record
    artifacts in place (``put(..., copy=False)``).

    The root may also be an fsspec URL (``s3://bucket/models``, ``gs://...``, ``memory://...``,
    ``file:///mnt/share/models``): object stores have no atomic rename, so each registration is
    uploaded under a prefix of its own, ``<root>/<name>/<version>/<upload id>/``, hashed from the
    bytes sent; the database row that names the prefix is the commit (a refused or rolled-back
    registration removes its upload). Reading downloads the artifact once into ``cache_dir``
    (``<cache_dir>/<sha256>/``), hashing the bytes received, and refuses it unless the hash is the
    registered one; the cached copy is re-hashed before every load, like a local one.

    Args:
        root: The store's folder or URL, or None.
        cache_dir: Where artifacts of a URL store are downloaded to (default
            ``$TRAINENGINE_CACHE/artifacts``, else ``~/.cache/trainengine/artifacts``).

    Example:
        >>> import tempfile, torch
        >>> folder = Path(tempfile.mkdtemp())
        >>> torch.save({"w": torch.ones(2)}, folder / "w.pt")
        >>> store = ArtifactStore(folder / "store")
        >>> placed = store.put(inspect_source(folder / "w.pt", None), "m", "1.0.0")
        >>> placed.commit()
        >>> placed.cleanup()
        >>> store.get(placed.stored_path, in_store=True).relative_to(folder).as_posix()
        'store/m/1.0.0/w.pt'
        >>> store.verify(store.get(placed.stored_path, in_store=True), "torch", [], placed.sha256, "m:1.0.0")
    """

    def __init__(self, root: str | os.PathLike[str] | None, *, cache_dir: str | os.PathLike[str] | None = None) -> None:
        self.remote: RemoteStore | None = None
        if is_url(root):
            try:
                self.remote = RemoteStore(str(root))
            except ConfigError as exc:
                raise RegistryError(f"cannot use the artifact store {root!r}: {'; '.join(exc.problems)}") from None
        self.root: Path | None = Path(root) if root is not None and self.remote is None else None
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()

    def __repr__(self) -> str:
        if self.remote is not None:
            return f"ArtifactStore({self.remote.location!r})"
        return f"ArtifactStore({str(self.root) if self.root is not None else None!r})"

    def put(self, source: ArtifactSource, name: str, version: str, *, copy: bool = True) -> Placement:
        """Stage (``copy=True``) or hash in place (``copy=False``) an artifact and verify it.

        Raises:
            RegistryError: no store root for a copy, the source cannot be read or copied, or it
                fails its own manifest / is not loadable weights.
        """
        single = not source.files
        files = [source.path.name] if single else list(source.files)
        src_root = source.path.parent if single else source.path
        if not copy:
            try:
                hashes = hash_files(src_root, files)
            except OSError as exc:
                raise RegistryError(f"cannot read {str(source.path)!r}: {exc}") from exc
            verify_source(source, hashes, source.path)
            return Placement(
                source, hashes, artifact_sha256(source.kind, hashes, single_file=single), str(source.path), False
            )
        if self.remote is not None:
            return self._upload(source, name, version, files, src_root, single)
        if self.root is None:
            raise RegistryError(
                "an in-memory registry has no artifact store: give artifact_root= or register with copy_artifact=False"
            )
        final = self.root / name / version
        staging = self.root / name / f".tmp-{version}-{uuid.uuid4().hex[:12]}"
        stored = f"{name}/{version}" + (f"/{source.path.name}" if single else "")  # relative to the root
        placement = Placement(source, {}, "", stored, True, staging=staging, final=final)
        placement.created = [d for d in (final.parent, self.root) if not d.exists()]
        try:
            try:
                for attempt in range(3):
                    try:
                        staging.mkdir(parents=True)
                        break
                    except FileNotFoundError:
                        # A refused registration of the same name removed the (empty) name
                        # folder between our mkdir of it and of the staging folder: again.
                        if attempt == 2:
                            raise
                for rel in files:
                    dest = staging / rel
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    placement.hashes[rel] = copy_and_hash(src_root / rel, dest)
            except OSError as exc:
                raise RegistryError(
                    f"cannot copy {str(source.path)!r} into the artifact store {str(staging.parent)!r}: {exc}"
                ) from exc
            verify_source(source, placement.hashes, staging / source.path.name if single else staging)
        except BaseException:
            placement.cleanup()
            raise
        placement.sha256 = artifact_sha256(source.kind, placement.hashes, single_file=single)
        return placement

    def _upload(
        self, source: ArtifactSource, name: str, version: str, files: list[str], src_root: Path, single: bool
    ) -> Placement:
        """``put`` into a URL store: upload under a fresh prefix, hashing the bytes sent, then verify."""
        assert self.remote is not None
        prefix = f"{name}/{version}/{uuid.uuid4().hex[:12]}"
        stored = prefix + (f"/{source.path.name}" if single else "")
        placement = Placement(source, {}, "", stored, True, remote=self.remote, remote_prefix=prefix)
        try:
            try:
                for rel in files:
                    placement.hashes[rel] = self.remote.put_file(src_root / rel, f"{prefix}/{rel}")
            except (OSError, ValueError) as exc:
                raise RegistryError(
                    f"cannot upload {str(source.path)!r} to the artifact store {self.remote.url(prefix)!r}: {exc}"
                ) from exc
            # The format checks read the source; the hashes are those of the bytes uploaded.
            verify_source(source, placement.hashes, source.path)
        except BaseException:
            placement.abort()
            raise
        placement.sha256 = artifact_sha256(source.kind, placement.hashes, single_file=single)
        return placement

    def get(
        self,
        stored_path: str,
        *,
        in_store: bool,
        model_id: str = "the model",
        sha256: str | None = None,
        kind: str | None = None,
    ) -> Path:
        """The absolute path of a registered artifact from its row's ``artifact_path``.

        For a URL store this is where :meth:`fetch` puts the downloaded copy (``<cache_dir>/<sha256>``).

        Raises:
            RegistryError: the artifact lives in the store but this store has no root.
        """
        if not in_store:
            return Path(stored_path)
        if self.remote is not None:
            if sha256 is None:
                raise RegistryError(f"{model_id}: a URL store needs the artifact's sha256 to find its cached copy")
            folder = self.cache_dir / sha256
            return folder / Path(stored_path).name if kind in ("safetensors", "torch") else folder
        if self.root is None:
            raise RegistryError(f"{model_id} lives in the artifact store: open the registry with artifact_root=")
        return self.root / stored_path

    def url(self, stored_path: str, *, in_store: bool) -> str | None:
        """The artifact's URL in a URL store (None for a local store or an artifact kept in place)."""
        if not in_store or self.remote is None:
            return None
        return self.remote.url(stored_path)

    @staticmethod
    def fetch(url: str, path: Path, kind: str, files: Sequence[str], sha256: str, model_id: str) -> bool:
        """Download an artifact of a URL store to ``path`` (its cache place) unless a good copy is there.

        The bytes are hashed as they arrive; the copy is moved into place only when its hash is
        the registered one. Returns True when it downloaded (and so verified) the copy just now.

        Raises:
            RegistryError: the artifact is missing from the store or its content changed.
        """
        single = kind in ("safetensors", "torch")
        folder = path.parent if single else path
        if path.exists():
            try:
                ArtifactStore.verify(path, kind, files, sha256, model_id)
                return False
            except RegistryError:
                remove_path(folder)  # a damaged cache entry: fetched again below
        base = url.rsplit("/", 1)[0] if single else url
        try:
            remote = RemoteStore(base)
        except ConfigError as exc:
            raise RegistryError(f"cannot read {model_id} from {url!r}: {'; '.join(exc.problems)}") from None
        names = [url.rsplit("/", 1)[1]] if single else list(files)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = folder.with_name(f".tmp-{folder.name}-{uuid.uuid4().hex[:8]}")
        try:
            try:
                hashes = {rel: remote.get_file(rel, tmp / rel) for rel in names}
            except FileNotFoundError as exc:
                raise RegistryError(
                    f"artifact of {model_id} is missing: {url!r} lacks {exc.filename or exc} (deleted from the store "
                    "since registration?)"
                ) from None
            except (OSError, ValueError) as exc:
                raise RegistryError(f"cannot download {model_id} from {url!r}: {exc}") from exc
            actual = artifact_sha256(kind, hashes, single_file=single)
            if actual != sha256:
                raise RegistryError(
                    f"artifact changed since registration: {model_id} at {url!r} has sha256 {actual[:12]}…, "
                    f"registered {sha256[:12]}…; it was modified or damaged in the store — register the intended "
                    "weights as a new version"
                )
            try:
                os.replace(tmp, folder)
            except OSError:
                if not folder.exists():  # another process placed the same (content-addressed) copy: keep it
                    raise
        finally:
            remove_path(tmp)
        return True

    @staticmethod
    def verify(path: Path, kind: str, files: Sequence[str], sha256: str, model_id: str) -> None:
        """Check that an artifact is still what was registered (same SHA-256).

        Raises:
            RegistryError: the artifact is missing or its content changed since registration.
        """
        if not path.exists():
            raise RegistryError(
                f"artifact of {model_id} is missing: {str(path)!r} was deleted or moved since registration "
                "(register with copy_artifact=True to keep a copy in the registry's artifact store)"
            )
        if kind in ("safetensors", "torch"):
            actual = file_sha256(path)
        else:
            absent = [rel for rel in files if not (path / rel).is_file()]
            if absent:
                raise RegistryError(
                    f"artifact changed since registration: {model_id} is missing {', '.join(absent)} in {str(path)!r}"
                )
            actual = artifact_sha256(kind, hash_files(path, list(files)), single_file=False)
        if actual != sha256:
            raise RegistryError(
                f"artifact changed since registration: {model_id} at {str(path)!r} has sha256 {actual[:12]}…, "
                f"registered {sha256[:12]}…; it was modified or damaged — register the intended weights as a new "
                "version"
            )

    def delete(self, name: str, version: str) -> None:
        """Remove a version's copy from the store (nothing happens when there is none)."""
        if self.remote is not None:
            self.remote.rm(f"{name}/{version}")
        elif self.root is not None:
            remove_path(self.root / name / version)


def default_cache_dir() -> Path:
    """Where artifacts of URL stores are downloaded: ``$TRAINENGINE_CACHE/artifacts``.

    ``TRAINENGINE_CACHE`` defaults to ``~/.cache/trainengine`` (where ``trainengine serve`` caches bundles too).
    """
    return Path(os.environ.get("TRAINENGINE_CACHE") or Path.home() / ".cache" / "trainengine") / "artifacts"


def remove_path(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------------------- loading
def read_state_dict(kind: str, path: Path, map_location: Any = "cpu", *, label: Any = None) -> dict[str, Any]:
    """The weights of an artifact as ``{key: tensor}``, read without unpickling anything.

    Args:
        kind: The artifact kind (:data:`ArtifactKind`).
        path: The artifact (a folder holding ``model.safetensors``, or the weights file).
        map_location: Device to read the tensors to.
        label: The path to name in messages (e.g. the source of a staged copy); default ``path``.

    Raises:
        RegistryError: the file is unreadable, is a pickle needing more than tensors, or holds no
            state dict. The message is ours alone: torch's own warnings and its advice to load
            with ``weights_only=False`` (running the file's code) are not passed on.
    """
    if kind == "sklearn":
        raise RegistryError(
            f"{str(label if label is not None else path)!r} is a scikit-learn model: it holds no torch weights; "
            "ModelRecord.load() returns its fitted pipeline"
        )
    import torch

    from trainengine.checkpoint import sniff_safetensors

    device = map_location if isinstance(map_location, str) else str(map_location)
    if kind in ("checkpoint", "run", "bundle", "safetensors"):
        file = path if kind == "safetensors" else path / "model.safetensors"
        shown = str(label if label is not None and kind == "safetensors" else file)
        if not file.is_file():
            hint = (
                " (the bundle was exported without the 'pytorch' format; use its ONNX file instead)"
                if kind == "bundle"
                else ""
            )
            raise RegistryError(f"{shown!r} is missing{hint}")
        import safetensors.torch

        reason = sniff_safetensors(file)
        if reason:
            raise RegistryError(f"{shown!r} is {reason}")
        try:
            return dict(safetensors.torch.load_file(str(file), device=device))
        except Exception as exc:  # safetensors raises its own error types; it never unpickles
            raise RegistryError(f"{shown!r} is not a readable safetensors file ({exc})") from exc
    shown = str(label if label is not None else path)
    try:
        # torch warns (e.g. "Detected pickle protocol 4") before refusing: our message says it all.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # UnpicklingError for objects beyond tensors, others for non-pickles
        raise RegistryError(f"cannot read {shown!r}: {_torch_load_reason(exc)}; {_PT_ONLY}") from exc

    def is_state(value: Any) -> bool:
        return (
            isinstance(value, Mapping)
            and bool(value)
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())
        )

    if is_state(obj):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in _STATE_KEYS:
            if is_state(obj.get(key)):
                return dict(obj[key])
    found = ", ".join(map(repr, list(obj)[:8])) if isinstance(obj, Mapping) else type(obj).__name__
    raise RegistryError(
        f"{shown!r} holds no state dict: expected a dict of tensors, or a dict with one of "
        f"{', '.join(_STATE_KEYS)}; found {found}"
    )


_PT_ONLY = (
    "only state dicts of tensors are accepted, because unpickling anything else can run arbitrary code "
    "(save with torch.save(model.state_dict(), path) or use safetensors)"
)


def _torch_load_reason(exc: BaseException) -> str:
    """One line on why ``torch.load(weights_only=True)`` refused a file, without torch's advice to
    retry with ``weights_only=False`` (which would run the file's code)."""
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found:
        return f"it is a pickle that refers to {found.group(1)!r}, which is not a tensor or a container of tensors"
    if "Weights only load failed" in text or isinstance(exc, pickle.UnpicklingError):
        return "it is not a torch.save file of tensors (a pickle of other objects, or not a pickle at all)"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"torch.load(weights_only=True) failed: {first[:200]}"


def load_sklearn(path: Path, *, trusted: Any = (), model_id: str = "the model") -> Any:
    """The fitted pipeline of a scikit-learn artifact (a ``sklearn`` folder, or an export bundle of
    format ``sklearn``), loaded through :func:`trainengine._skops.load_skops` — never pickle.

    The folder is checked against its manifest, then ``model.skops``'s types against the
    allow-list; only then is anything built. Call it after the registered hash was checked.

    Args:
        path: The artifact's folder (the registered copy).
        trusted: Further type names to accept (``["mypackage.MyTransformer"]``), each one checked by you.
        model_id: The version, for messages.

    Raises:
        RegistryError: the folder is not a scikit-learn model.
        UntrustedModelError: ``model.skops`` holds types outside the allow-list and ``trusted``
            (named in the message), is not a ``.skops`` file, or the folder no longer matches its
            manifest.
        MissingExtraError: skops is not installed.
    """
    from trainengine._skops import load_skops

    if sklearn_manifest(path) is None or not (path / _SKOPS_FILE).is_file():
        raise RegistryError(
            f"{model_id} at {str(path)!r} is not a scikit-learn model (no manifest.json of format 'sklearn' with "
            f"{_SKOPS_FILE})"
        )
    return load_skops(path, trusted=trusted)


def load_weights(model: Any, state: Mapping[str, Any]) -> None:
    """Load canonical-key weights into ``model``; tied weights may be stored once.

    ``safetensors.save_model`` and checkpoints store a tied tensor (a GPT's embedding and head)
    under one name only: a key missing from ``state`` is fine when the model shares its storage
    with a key that is present. Any other mismatch is refused with the standard message.
    """
    from trainengine.checkpoint import canonical_keys, load_model_state

    mapping = canonical_keys(state)
    state = {mapping[k]: v for k, v in state.items()}
    own = model.state_dict()
    own_canonical = {canon: own[orig] for orig, canon in canonical_keys(own).items()}
    present = {t.data_ptr() for k, t in own_canonical.items() if k in state and t.numel()}
    missing = [k for k, t in own_canonical.items() if k not in state and not (t.numel() and t.data_ptr() in present)]
    unexpected = [k for k in state if k not in own_canonical]
    load_model_state(model, state, strict=bool(missing or unexpected))
