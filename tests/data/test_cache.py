"""The Arrow cache never shows a half-built entry: a build that fails or is killed leaves nothing
that looks complete, and the next call builds it again from the files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest

from trainengine.data._cache import build_or_load, cache_key, source_hashes

KILLED_BUILDER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import pyarrow as pa
    from trainengine.data._cache import build_or_load

    def build(sink):
        sink.write(pa.record_batch({"a": list(range(1000))}))
        os.kill(os.getpid(), signal.SIGKILL)  # dies with half a table written

    build_or_load(Path(sys.argv[1]), "k", build)
    """
)


def _build(sink) -> dict:
    sink.write(pa.record_batch({"a": [1, 2, 3]}))
    sink.write(pa.record_batch({"a": [4]}))
    return {"note": "built"}


def test_a_failed_build_leaves_no_entry_and_the_next_call_builds(tmp_path):
    def failing(sink):
        sink.write(pa.record_batch({"a": [1]}))
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        build_or_load(tmp_path, "k", failing)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []
    entry = build_or_load(tmp_path, "k", _build)
    assert entry.table.column("a").to_pylist() == [1, 2, 3, 4] and entry.meta["note"] == "built"


def test_a_killed_build_is_invisible_and_rebuilt(tmp_path):
    script = tmp_path / "killed.py"
    script.write_text(KILLED_BUILDER)
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    cache = tmp_path / "cache"
    proc = subprocess.run([sys.executable, str(script), str(cache)], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert not (cache / "k").exists() and list(cache.glob(".k.*"))  # only the dead builder's temporary folder
    calls = []
    entry = build_or_load(cache, "k", lambda sink: calls.append(1) or _build(sink))
    assert calls == [1] and entry.table.num_rows == 4
    assert not [p for p in cache.glob(".k.*") if p.is_dir()]  # the leftover was cleaned up
    build_or_load(cache, "k", lambda sink: pytest.fail("a complete entry must be reused"))


def test_the_key_follows_file_content_not_names(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("x\n1\n")
    b.write_text("x\n1\n")
    key_a = cache_key("csv", source_hashes([a]), {})
    assert key_a == cache_key("csv", source_hashes([b]), {})
    b.write_text("x\n2\n")
    assert key_a != cache_key("csv", source_hashes([b]), {})
