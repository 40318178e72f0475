"""Where a result came from: the git checkout, library versions and the host.

This is a low-level module (it imports nothing from trainengine beyond the package version), so
tracking, checkpoints and export bundles record the same facts without importing each other.

Example:
    >>> from trainengine.provenance import git_info, library_versions
    >>> sorted(git_info())
    ['commit', 'dirty']
    >>> "torch" in library_versions()
    True
"""

from __future__ import annotations

import os
import platform
import subprocess
from typing import Any

__all__ = ["git_info", "library_versions", "host_info"]


def git_info(cwd: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Commit and dirty flag of the git checkout around ``cwd`` (nulls outside a checkout).

    Args:
        cwd: folder to ask git about; default: the current directory.

    Returns:
        ``{"commit": str | None, "dirty": bool | None}``.
    """

    def run(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = run("rev-parse", "HEAD")
    dirty = None
    if commit is not None:
        status = run("status", "--porcelain", "--untracked-files=no")
        dirty = bool(status) if status is not None else None
    return {"commit": commit, "dirty": dirty}


def library_versions() -> dict[str, str]:
    """Versions of Python, torch, numpy and trainengine (and CUDA when a GPU is present).

    torch and numpy are imported here, inside the function, so importing this module stays cheap.
    """
    import numpy
    import torch

    from trainengine import __version__

    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "trainengine": __version__,
    }
    if torch.cuda.is_available():
        versions["cuda"] = str(torch.version.cuda)
    return versions


def host_info() -> dict[str, Any]:
    """The machine a run ran on: OS, host name and CPU count (no torch import).

    Example:
        >>> sorted(host_info())
        ['cpu_count', 'hostname', 'os']
    """
    return {"os": platform.platform(), "hostname": platform.node(), "cpu_count": os.cpu_count()}
