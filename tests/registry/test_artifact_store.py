"""ArtifactStore: put (stage, hash, verify), commit/abort, get, verify and delete of registered copies."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from trainengine.errors import RegistryError
from trainengine.registry import ArtifactStore
from trainengine.registry._artifacts import inspect_source


def _weights(tmp_path: Path) -> Path:
    path = tmp_path / "w.pt"
    torch.save({"w": torch.arange(4.0)}, path)
    return path


def _bundle(tmp_path: Path) -> Path:
    root = tmp_path / "bundle"
    root.mkdir()
    (root / "model_config.json").write_text("{}")
    (root / "model.onnx").write_bytes(b"onnx")
    files = {n: hashlib.sha256((root / n).read_bytes()).hexdigest() for n in ("model_config.json", "model.onnx")}
    (root / "manifest.json").write_text(json.dumps({"files": files}))
    return root


def test_put_stages_a_verified_copy_that_commit_moves_into_place(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    src = _weights(tmp_path)
    placed = store.put(inspect_source(src, None), "m", "1.0.0")
    assert placed.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()  # a single file: its own hash
    assert placed.stored_path == "m/1.0.0/w.pt" and placed.in_store
    assert not (tmp_path / "store" / "m" / "1.0.0").exists()  # staged, not yet visible
    placed.commit()
    placed.commit()  # a retried transaction: already in place
    placed.cleanup()
    path = store.get(placed.stored_path, in_store=True)
    assert path.read_bytes() == src.read_bytes()
    assert [p.name for p in (tmp_path / "store" / "m").iterdir()] == ["1.0.0"]  # no staging leftovers
    store.verify(path, "torch", [], placed.sha256, "m:1.0.0")
    path.write_bytes(b"changed")
    with pytest.raises(RegistryError, match="artifact changed since registration: m:1.0.0"):
        store.verify(path, "torch", [], placed.sha256, "m:1.0.0")
    store.delete("m", "1.0.0")
    with pytest.raises(RegistryError, match="artifact of m:1.0.0 is missing"):
        store.verify(path, "torch", [], placed.sha256, "m:1.0.0")


def test_abort_removes_a_committed_copy_and_a_leftover_is_replaced(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    leftover = tmp_path / "store" / "m" / "1.0.0"
    leftover.mkdir(parents=True)
    (leftover / "junk").write_text("a crashed registration")
    placed = store.put(inspect_source(_weights(tmp_path), None), "m", "1.0.0")
    placed.commit()
    assert sorted(p.name for p in leftover.iterdir()) == ["w.pt"]
    placed.abort()  # the row was rolled back
    placed.cleanup()
    assert not leftover.exists()


def test_a_bundle_hashes_like_export_and_a_bad_copy_leaves_nothing(tmp_path: Path) -> None:
    from trainengine.export import bundle_sha256

    root = _bundle(tmp_path)
    store = ArtifactStore(tmp_path / "store")
    placed = store.put(inspect_source(None, root), "b", "1.0.0")
    assert placed.sha256 == bundle_sha256(root)  # manifest.json left out of the hash
    placed.cleanup()
    (root / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(RegistryError, match=r"model\.onnx: sha256 differs from the manifest"):
        store.put(inspect_source(None, root), "b", "1.0.1")
    assert not (tmp_path / "store").exists()  # the failed staging folder and the folders made for it are gone


def test_in_place_and_rootless_stores(tmp_path: Path) -> None:
    src = _weights(tmp_path)
    store = ArtifactStore(None)
    placed = store.put(inspect_source(src, None), "m", "1.0.0", copy=False)
    assert placed.stored_path == str(src.resolve()) and not placed.in_store
    placed.commit()
    placed.abort()
    placed.cleanup()  # no-ops in place
    assert src.exists() and store.get(placed.stored_path, in_store=False) == src.resolve()
    with pytest.raises(RegistryError, match="in-memory registry has no artifact store"):
        store.put(inspect_source(src, None), "m", "1.0.0")
    with pytest.raises(RegistryError, match="open the registry with artifact_root="):
        store.get("m/1.0.0/w.pt", in_store=True, model_id="m:1.0.0")
