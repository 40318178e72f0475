"""Folder permissions that hold for root too, so permission tests run in CI (which runs as root).

Root ignores file modes only because of two capabilities, CAP_DAC_OVERRIDE and
CAP_DAC_READ_SEARCH. :func:`enforced_permissions` lowers them from the calling thread's
effective set for the body of a ``with`` block (threads started inside inherit that), so a
``chmod 0o555`` folder refuses writes with ``EACCES`` as it would for any user; on leaving, the
capabilities come back from the permitted set. For an ordinary user it does nothing: modes are
already enforced. Linux only (``capget``/``capset``); elsewhere a root caller is skipped.

Loaded by tests/conftest.py, which registers the ``permissions_enforced`` fixture.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
from collections.abc import Callable, Iterator

import pytest

_CAPS = (1, 2)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
_VERSION_3 = 0x20080522


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _caps(libc: ctypes.CDLL) -> tuple[_Header, ctypes.Array[_Data]]:
    header, data = _Header(_VERSION_3, 0), (_Data * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget failed")
    return header, data


def _set(libc: ctypes.CDLL, header: _Header, data: ctypes.Array[_Data]) -> None:
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


@contextlib.contextmanager
def enforced_permissions() -> Iterator[None]:
    """Within the block, file modes bind this thread even when it runs as root."""
    if os.geteuid() != 0:
        yield
        return
    if not sys.platform.startswith("linux"):
        pytest.skip("root ignores file permissions and capabilities are Linux-only")
    libc = _libc()
    header, saved = _caps(libc)
    lowered = (_Data * 2)(*[_Data(d.effective, d.permitted, d.inheritable) for d in saved])
    for cap in _CAPS:
        lowered[0].effective &= ~(1 << cap)
    _set(libc, header, lowered)
    try:
        yield
    finally:
        _set(libc, _Header(_VERSION_3, 0), saved)


@pytest.fixture
def permissions_enforced() -> Callable[[], contextlib.AbstractContextManager[None]]:
    """The :func:`enforced_permissions` context manager (use it as ``with permissions_enforced():``)."""
    return enforced_permissions
