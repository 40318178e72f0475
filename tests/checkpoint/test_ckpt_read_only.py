"""Issue 10: a read-only CheckpointManager creates nothing (item 11), and the one verification that
``checkpoints verify`` and registration share checks each file's format (item 5)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from trainengine.checkpoint import CheckpointManager, sniff_safetensors, verify_checkpoint
from trainengine.errors import CheckpointError


def _tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_a_read_only_manager_lists_and_verifies_without_touching_the_folder(tmp_path):
    with CheckpointManager(tmp_path / "ck") as writer:
        writer.save(step=1, epoch=0, model=torch.nn.Linear(2, 1), metrics={"val/loss": 0.5})
    (tmp_path / "ck" / "index.json").unlink()
    (tmp_path / "ck" / ".tmp-ckpt-000000002").mkdir()  # another process's write in progress
    before = _tree(tmp_path / "ck")
    reader = CheckpointManager(tmp_path / "ck", read_only=True)
    assert [c.step for c in reader.list_checkpoints()] == [1]
    assert reader.verify("ckpt-000000001") == []
    with pytest.raises(CheckpointError, match="opened with read_only=True"):
        reader.save(step=2, epoch=0, model=torch.nn.Linear(2, 1))
    with pytest.raises(CheckpointError, match="opened with read_only=True"):
        reader.prune()
    assert _tree(tmp_path / "ck") == before
    with pytest.raises(CheckpointError, match="does not exist"):
        CheckpointManager(tmp_path / "nosuch", read_only=True)
    assert not (tmp_path / "nosuch").exists()


def test_verification_checks_the_format_of_files_whose_hashes_match(tmp_path):
    with CheckpointManager(tmp_path / "ck") as writer:
        path = writer.save(step=1, epoch=0, model=torch.nn.Linear(4, 3))
    model_file = path / "model.safetensors"
    data = model_file.read_bytes()
    assert sniff_safetensors(model_file) is None
    # Cut short and re-hashed: sizes and hashes agree with the manifest, the header does not.
    model_file.write_bytes(data[:-4])
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["model.safetensors"] = {"size": len(data) - 4, "sha256": hashlib.sha256(data[:-4]).hexdigest()}
    (path / "manifest.json").write_text(json.dumps(manifest))
    (problem,) = verify_checkpoint(path)
    assert problem.startswith("model.safetensors: not a valid safetensors file (its header describes")
    # Hashes computed while copying are used instead of reading the files again.
    model_file.write_bytes(data)
    manifest["files"]["model.safetensors"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (path / "manifest.json").write_text(json.dumps(manifest))
    assert verify_checkpoint(path) == []
    (problem,) = verify_checkpoint(path, hashes={"model.safetensors": "0" * 64})
    assert problem.startswith("model.safetensors: sha256 mismatch")
