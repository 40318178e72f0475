"""The command line answers without importing torch: checked on the import graph, not the clock.

Each case runs a fresh interpreter with ``-X importtime``, which writes one line per imported
module to stderr; the test reads the module names from it. Wall time on a shared CI machine
says little, the import graph says exactly what a command pays for (the startup figures are in
benchmarks/README.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import trainengine

SRC = Path(__file__).resolve().parents[1] / "src"

# What the commands that neither train nor export must not pay for (torch alone is ~1.3 s).
HEAVY = ("torch", "torchmetrics", "sklearn", "matplotlib", "pandas", "scipy", "onnx", "onnxruntime")


def _imported(args: list[str], cwd: Path) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    """Run ``python -X importtime ARGS`` in ``cwd``; the top-level names of every module it imported."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    env.pop("TRAINENGINE_REGISTRY", None)
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )
    modules = set()
    for line in proc.stderr.splitlines():
        # "import time:       123 |        456 |     torch.nn" -> "torch"
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name and name != "package":  # the header line ends in "| imported package"
                modules.add(name.split(".")[0])
    return modules, proc


def _assert_light(modules: set[str], proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    # Guards the parser: were it to read no module names, the check below would pass vacuously.
    assert "trainengine" in modules, "the probe did not import trainengine at all"
    heavy = sorted(m for m in HEAVY if m in modules)
    assert not heavy, f"imported {heavy}; move those imports inside the functions that need them"


@pytest.mark.parametrize(
    "code",
    ["import trainengine", "import trainengine.cli.main", "import trainengine.config", "import trainengine.errors"],
)
def test_importing_the_package_and_the_cli_loads_no_torch(code: str, tmp_path: Path) -> None:
    modules, proc = _imported(["-c", code], tmp_path)
    _assert_light(modules, proc)


@pytest.mark.parametrize(
    "command",
    [
        ["--help"],
        ["config", "show"],
        ["config", "show", "--preset", "quick_prototype", "--format", "json"],
        ["runs", "list"],
        ["registry", "list"],
    ],
    ids=lambda c: " ".join(c),
)
def test_commands_that_neither_train_nor_export_load_no_torch(command: list[str], tmp_path: Path) -> None:
    # A run directory to list, so `runs list` walks a real run.json rather than an empty folder.
    run = tmp_path / "runs" / "exp" / "r1"
    run.mkdir(parents=True)
    facts = {"status": "completed", "start_time": "2026-11-30T12:00:00", "results": {"steps": 5}}
    (run / "run.json").write_text(json.dumps(facts), encoding="utf-8")
    if command[0] == "registry":
        from trainengine.registry import ModelRegistry

        ModelRegistry(tmp_path / "models.db").close()  # `registry list` reads an existing registry, creates none
        command = [*command, "--registry", str(tmp_path / "models.db")]
    modules, proc = _imported(["-m", "trainengine", *command], tmp_path)
    _assert_light(modules, proc)
    if command == ["--help"]:
        # Help needs typer and the command table only: not even the config (pydantic).
        assert "pydantic" not in modules and "sqlalchemy" not in modules
    if command[:2] == ["runs", "list"]:
        assert "exp/r1" in proc.stdout  # the command did its work, not just its imports


def test_public_names_resolve_lazily_and_match_all() -> None:
    lazy = set(trainengine._LAZY)
    assert lazy | {"__version__"} == set(trainengine.__all__)
    for name in trainengine.__all__:
        assert getattr(trainengine, name) is not None, name
    assert set(trainengine.__all__) <= set(dir(trainengine))
    with pytest.raises(AttributeError, match="no attribute 'Trainr'"):
        trainengine.Trainr  # noqa: B018 - the attribute access is the behaviour under test


def test_public_trainer_is_the_assembled_trainer() -> None:
    import trainengine.assembly
    import trainengine.engine

    assert trainengine.Trainer is trainengine.assembly.Trainer
    assert issubclass(trainengine.Trainer, trainengine.engine.Trainer)
