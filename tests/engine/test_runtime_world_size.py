"""Under a multi-process launcher the single-process runtime refuses to start (issue 10, item 14).

The distributed runtime (trainengine.distributed, tests/distributed) is the one for several processes.
"""

from __future__ import annotations

import pytest

from trainengine import ConfigError
from trainengine.engine import Runtime


def test_world_size_above_one_is_refused_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match=r"WORLD_SIZE=2 .*this Trainer runs one process"):
        Runtime("cpu", "fp32")


def test_one_process_and_no_launcher_still_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert Runtime("cpu", "fp32").world_size == 1
    monkeypatch.delenv("WORLD_SIZE")
    assert Runtime("cpu", "fp32").is_rank_zero
