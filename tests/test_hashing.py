"""trainengine._hashing: the one home of file hashes and the bundle contract (stdlib only)."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from trainengine import _hashing
from trainengine._hashing import bundle_files, content_sha256, copy_and_hash, file_sha256, hash_file, verify_bundle


def _bundle(tmp_path: Path) -> Path:
    root = tmp_path / "b"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"alpha")
    (root / "sub" / "b.bin").write_bytes(bytes(range(256)) * 10)
    (root / "manifest.json").write_text(json.dumps({"files": bundle_files(root)}))
    return root


def test_file_hashes_match_hashlib_and_the_copy_is_what_was_hashed(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 17)  # crosses read-chunk boundaries
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert hash_file(src) == (len(data), expected) and hash_file(src, fsync=True)[1] == expected
    assert file_sha256(src) == expected
    assert copy_and_hash(src, tmp_path / "dst.bin") == expected and (tmp_path / "dst.bin").read_bytes() == data
    with pytest.raises(FileExistsError):
        copy_and_hash(src, tmp_path / "dst.bin")  # never overwrites


def test_content_hash_is_the_documented_formula(tmp_path: Path) -> None:
    root = _bundle(tmp_path)
    files = bundle_files(root)
    assert list(files) == ["a.txt", "sub/b.bin"]  # sorted, manifest.json left out
    lines = "".join(f"{rel}\t{hashlib.sha256((root / rel).read_bytes()).hexdigest()}\n" for rel in sorted(files))
    assert content_sha256(files) == hashlib.sha256(lines.encode()).hexdigest()
    # Manifest entries of the form {"sha256": ...} give the same hash.
    assert content_sha256({k: {"sha256": v.upper(), "size": 1} for k, v in files.items()}) == content_sha256(files)


def test_an_intact_bundle_verifies_and_pycache_is_ignored(tmp_path: Path) -> None:
    root = _bundle(tmp_path)
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "x.pyc").write_bytes(b"x")
    assert verify_bundle(root) == []


def test_every_kind_of_damage_is_reported_once_per_file(tmp_path: Path) -> None:
    root = _bundle(tmp_path)
    manifest = json.loads((root / "manifest.json").read_text())
    (root / "a.txt").write_bytes(b"ALPHA")
    (root / "sub" / "b.bin").unlink()
    (root / "extra.py").write_text("")
    manifest["files"]["../escape.txt"] = "0" * 64
    manifest["files"]["nohash.txt"] = {"size": 3}
    (root / "nohash.txt").write_text("abc")
    problems = verify_bundle(root, manifest)
    assert problems == [
        "'../escape.txt': not a path inside the bundle",
        problems[1],
        "nohash.txt: the manifest has no sha256 for it",
        "sub/b.bin: missing",
        "extra.py: not listed in the manifest",
    ]
    assert problems[1].startswith("a.txt: content changed (sha256 ")


def test_a_folder_without_a_usable_manifest_is_one_problem(tmp_path: Path) -> None:
    assert verify_bundle(tmp_path / "none") == [
        f"{tmp_path / 'none'} has no manifest.json: not an export bundle, or an export that did not finish"
    ]
    (tmp_path / "manifest.json").write_text("{")
    assert "cannot be read as JSON" in verify_bundle(tmp_path)[0]
    (tmp_path / "manifest.json").write_text("{}")
    assert "lists no files" in verify_bundle(tmp_path)[0]


def test_export_and_serve_use_this_one_contract() -> None:
    from trainengine.export import verify_bundle as export_verify
    from trainengine.serve import _runtime

    assert export_verify is verify_bundle and _runtime.verify_bundle is verify_bundle


def test_module_imports_only_the_standard_library() -> None:
    # Export copies this file into every bundle, where trainengine is not installed.
    tree = ast.parse(Path(_hashing.__file__).read_text())
    modules = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert modules <= set(sys.stdlib_module_names) | {"__future__"}, modules
