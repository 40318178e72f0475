"""trainengine.provenance: git, library versions and host facts, below tracking and checkpoints."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy
import torch

import trainengine
from trainengine.provenance import git_info, host_info, library_versions


def test_library_versions_are_the_installed_ones() -> None:
    versions = library_versions()
    assert versions["torch"] == torch.__version__ and versions["numpy"] == numpy.__version__
    assert versions["trainengine"] == trainengine.__version__


def test_git_info_reads_a_real_checkout_and_is_null_outside_one(tmp_path: Path) -> None:
    assert git_info(tmp_path) == {"commit": None, "dirty": None}
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, capture_output=True)
    (tmp_path / "f.txt").write_text("a")
    env = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "-C", str(tmp_path), "add", "f.txt"], check=True)
    subprocess.run(["git", "-C", str(tmp_path), *env, "commit", "-qm", "x"], check=True)
    head = subprocess.run(
        ["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert git_info(tmp_path) == {"commit": head, "dirty": False}
    (tmp_path / "f.txt").write_text("b")
    assert git_info(tmp_path) == {"commit": head, "dirty": True}


def test_host_info_and_the_tracking_reexports() -> None:
    assert set(host_info()) == {"os", "hostname", "cpu_count"}
    from trainengine import tracking

    assert tracking.git_info is git_info and tracking.library_versions is library_versions
