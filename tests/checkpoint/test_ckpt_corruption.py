"""Damaged checkpoints are detected; crashed or failed writes never leave a checkpoint that looks valid."""

from __future__ import annotations

import builtins
import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import safetensors.torch
import torch
from torch import nn

import trainengine.checkpoint._write as fmt
from trainengine.checkpoint import CheckpointManager, read_checkpoint
from trainengine.errors import CheckpointError

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _manager_with(ckpt_dir, steps=(1, 2, 3)):
    m = CheckpointManager(ckpt_dir, keep_best_k=5, keep_last_n=5)
    torch.manual_seed(0)
    model = nn.Linear(8, 4)
    paths = [
        m.save(step=s, epoch=0, model=model, state={"w": torch.randn(64)}, metrics={"val/loss": float(s)})
        for s in steps
    ]
    return m, model, paths


def _truncate(path: Path):
    f = path / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-10])
    return "model.safetensors: ", "truncated"


def _flip(path: Path):
    f = path / "state.safetensors"
    data = bytearray(f.read_bytes())
    data[-3] ^= 0x01  # one bit in the tensor bytes, the header stays valid
    f.write_bytes(bytes(data))
    return "state.safetensors: ", "sha256 mismatch"


def _no_manifest(path: Path):
    (path / "manifest.json").unlink()
    return "manifest.json: ", "incomplete"


def _missing_file(path: Path):
    (path / "state.json").unlink()
    return "state.json: ", "missing"


def _extra_file(path: Path):
    (path / "notes.txt").write_text("hi")
    return "notes.txt: ", "unexpected file"


def _bad_json(path: Path):
    f = path / "meta.json"
    f.write_bytes(b"{not json" + b" " * (f.stat().st_size - 9))  # same size: only the hash catches it
    return "meta.json: ", "sha256 mismatch"


def _future_version(path: Path):
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format_version"] = 99
    (path / "manifest.json").write_text(json.dumps(manifest))
    return "manifest.json: ", "unsupported format_version 99"


def _bad_manifest(path: Path):
    (path / "manifest.json").write_text("{")
    return "manifest.json: ", "unreadable JSON"


@pytest.mark.parametrize(
    "damage", [_truncate, _flip, _no_manifest, _missing_file, _extra_file, _bad_json, _future_version, _bad_manifest]
)
def test_damage_is_reported_refused_and_skipped(ckpt_dir, damage):
    m, _, paths = _manager_with(ckpt_dir)
    prefix, words = damage(paths[2])
    problems = m.verify(paths[2])
    assert any(p.startswith(prefix) and words in p for p in problems), problems
    assert m.verify(paths[1]) == []
    with pytest.raises(CheckpointError) as info:
        m.read(paths[2])
    assert str(paths[2]) in str(info.value) and prefix + "" in str(info.value) and words in str(info.value)
    with pytest.raises(CheckpointError):
        m.load_checkpoint(paths[2], nn.Linear(8, 4))
    good, skipped = CheckpointManager(ckpt_dir).get_latest_valid_checkpoint()
    assert good == paths[1]
    assert [p for p, _ in skipped] == [paths[2]] and words in skipped[0][1]


def test_all_damaged_gives_none_and_names_each(ckpt_dir):
    m, _, paths = _manager_with(ckpt_dir, steps=(1, 2))
    for p in paths:
        _flip(p)
    good, skipped = m.get_latest_valid_checkpoint()
    assert good is None and [p for p, _ in skipped] == paths[::-1]


def test_read_verifies_before_loading_even_when_tensors_would_parse(ckpt_dir, h):
    _, _, paths = _manager_with(ckpt_dir, steps=(1,))
    _flip(paths[0])
    safetensors.torch.load_file(str(paths[0] / "state.safetensors"))  # still a well-formed file
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        read_checkpoint(paths[0])
    assert read_checkpoint(paths[0], verify=False).meta.step == 1  # opt-out reads it as is


# --------------------------------------------------------------------------- crashes mid-write


def test_exception_mid_write_leaves_no_checkpoint_and_no_temp_folder(ckpt_dir, monkeypatch, h):
    m, _, paths = _manager_with(ckpt_dir, steps=(1,))
    original = fmt._write_bytes

    def crash_on_meta(path, data):
        if path.name == "meta.json":
            raise RuntimeError("simulated crash while writing meta.json")
        return original(path, data)

    monkeypatch.setattr(fmt, "_write_bytes", crash_on_meta)
    with pytest.raises(CheckpointError, match="simulated crash"):
        m.save(step=2, epoch=0, model=nn.Linear(8, 4))
    assert [c.step for c in m.list_checkpoints()] == [1] and m.verify(paths[0]) == []
    assert h.listing(ckpt_dir) == ["ckpt-000000001", "index.json"]


def _run_crashing_save(ckpt_dir: Path, patch: str) -> subprocess.CompletedProcess:
    """Save step 2 in a child process that dies (os._exit, no cleanup at all) where ``patch`` says."""
    code = textwrap.dedent(
        f"""
        import os, sys, torch
        import trainengine.checkpoint._write as fmt
        from trainengine.checkpoint import CheckpointManager
        {patch}
        m = CheckpointManager({str(ckpt_dir)!r}, keep_best_k=5, keep_last_n=5)
        m.save(step=2, epoch=0, model=torch.nn.Linear(8, 4), state={{"w": torch.zeros(64)}})
        sys.exit(0)
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)


def test_killed_while_writing_the_manifest_leaves_only_a_temp_folder(ckpt_dir, h):
    m, _, paths = _manager_with(ckpt_dir, steps=(1,))
    proc = _run_crashing_save(
        ckpt_dir,
        textwrap.dedent("""
        original = fmt._write_bytes
        def dying(path, data):
            if path.name == "manifest.json":
                path.write_bytes(data[: len(data) // 2])  # half a manifest, then the process dies
                os._exit(9)
            return original(path, data)
        fmt._write_bytes = dying
    """).replace("\n", "\n        "),
    )
    assert proc.returncode == 9, proc.stderr
    leftovers = [p.name for p in ckpt_dir.iterdir() if p.name.startswith(".tmp-ckpt-000000002-")]
    assert len(leftovers) == 1  # the crash really left its temp folder behind
    assert [c.step for c in m.list_checkpoints()] == [1]  # invisible even before cleanup
    fresh = CheckpointManager(ckpt_dir)
    assert [c.step for c in fresh.list_checkpoints()] == [1] and fresh.verify(paths[0]) == []
    assert h.listing(ckpt_dir) == ["ckpt-000000001", "index.json"]


def test_killed_between_the_two_renames_of_a_resave_keeps_the_old_checkpoint(ckpt_dir, h):
    _manager_with(ckpt_dir, steps=(1, 2))
    old_meta = (ckpt_dir / "ckpt-000000002" / "meta.json").read_bytes()
    proc = _run_crashing_save(
        ckpt_dir,
        textwrap.dedent("""
        calls = []
        real = os.replace
        def dying(src, dst):
            calls.append(dst)
            real(src, dst)
            if ".trash-replaced-" in str(dst):  # old one moved aside, new one not yet in place
                os._exit(9)
        fmt.os.replace = dying
    """).replace("\n", "\n        "),
    )
    assert proc.returncode == 9, proc.stderr
    assert not (ckpt_dir / "ckpt-000000002").exists()  # the dangerous window really happened
    fresh = CheckpointManager(ckpt_dir, keep_best_k=5, keep_last_n=5)
    assert [c.step for c in fresh.list_checkpoints()] == [1, 2]
    assert fresh.verify(ckpt_dir / "ckpt-000000002") == []
    assert (ckpt_dir / "ckpt-000000002" / "meta.json").read_bytes() == old_meta
    assert h.listing(ckpt_dir) == ["ckpt-000000001", "ckpt-000000002", "index.json"]


def test_failed_rename_during_a_resave_puts_the_old_checkpoint_back(ckpt_dir, monkeypatch, h):
    m, _, _ = _manager_with(ckpt_dir, steps=(1,))
    old_meta = (ckpt_dir / "ckpt-000000001" / "meta.json").read_bytes()
    real = os.replace

    def refuse_new(src, dst):
        if Path(src).name.startswith(".tmp-ckpt-"):
            raise OSError(errno.EIO, "Input/output error")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", refuse_new)
    with pytest.raises(CheckpointError, match="Input/output error — previous checkpoints are intact"):
        m.save(step=1, epoch=5, model=nn.Linear(8, 4))
    monkeypatch.undo()
    assert (ckpt_dir / "ckpt-000000001" / "meta.json").read_bytes() == old_meta and m.verify(
        ckpt_dir / "ckpt-000000001"
    ) == []
    assert h.listing(ckpt_dir) == ["ckpt-000000001", "index.json"]


# --------------------------------------------------------------------------- disk full / unwritable


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("where", ["tensors", "json_open", "rename", "mkdir"])
def test_disk_full_or_unwritable_fails_cleanly(ckpt_dir, monkeypatch, where, h):
    m, model, paths = _manager_with(ckpt_dir, steps=(1, 2))
    before = {p.name: sorted((f.name, f.stat().st_size) for f in p.iterdir()) for p in paths}
    expected = "No space left on device"
    if where == "tensors":
        monkeypatch.setattr(safetensors.torch, "save_file", _enospc)
    elif where == "json_open":
        real_open = builtins.open

        def open_full(file, mode="r", *args, **kwargs):
            if "x" in mode and Path(file).name == "state.json":
                _enospc()
            return real_open(file, mode, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", open_full)
    elif where == "rename":
        monkeypatch.setattr(os, "replace", _enospc)
    else:

        def denied(*args, **kwargs):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

        monkeypatch.setattr(os, "mkdir", denied)
        expected = "Permission denied"
    with pytest.raises(CheckpointError) as info:
        m.save(step=3, epoch=0, model=model, state={"w": torch.ones(3)})
    monkeypatch.undo()
    assert (
        f"cannot write checkpoint {ckpt_dir / 'ckpt-000000003'}: {expected} — previous checkpoints are intact"
        in str(info.value)
    )
    assert h.listing(ckpt_dir) == ["ckpt-000000001", "ckpt-000000002", "index.json"]
    assert {p.name: sorted((f.name, f.stat().st_size) for f in p.iterdir()) for p in paths} == before
    assert all(m.verify(p) == [] for p in paths)


def test_read_only_folder_fails_cleanly(ckpt_dir, permissions_enforced):
    m, model, paths = _manager_with(ckpt_dir, steps=(1,))
    ckpt_dir.chmod(0o555)
    try:
        with (
            permissions_enforced(),  # binds root too (tests/_permissions.py)
            pytest.raises(CheckpointError, match="Permission denied — previous checkpoints are intact"),
        ):
            m.save(step=2, epoch=0, model=model)
    finally:
        ckpt_dir.chmod(0o755)
    assert m.verify(paths[0]) == [] and [c.step for c in m.list_checkpoints()] == [1]
