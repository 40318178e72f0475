"""Issue 18, launch part: ``trainengine train --nproc-per-node N`` re-runs itself under torchrun.

Unit tests of the command built and of the decision to launch; no torchrun process starts here
(tests/distributed runs real ranks). ``launch`` is replaced by a recorder, except in the one test
that checks signal forwarding on a plain ``sleep`` child.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import pytest

from trainengine import ConfigError, TrainingConfig
from trainengine.cli import _launch
from trainengine.cli._launch import LaunchOptions, launcher_argv, plan_launch, strip_launch_flags
from trainengine.cli.main import main

PY = "/venv/bin/python"


def _torchrun_parse(argv: list[str]):
    """torchrun's own parser over what follows ``python -m torch.distributed.run``."""
    from torch.distributed.run import get_args_parser

    assert argv[1:3] == ["-m", "torch.distributed.run"]
    return get_args_parser().parse_args(argv[3:])


# -- the command ---------------------------------------------------------------------------------
def test_single_node_uses_a_standalone_rendezvous():
    argv = launcher_argv(LaunchOptions(nproc_per_node=4), ["train", "--config", "run.yaml"], python=PY)
    assert argv == [
        PY, "-m", "torch.distributed.run", "--nproc-per-node", "4", "--nnodes", "1", "--standalone",
        "-m", "trainengine", "train", "--config", "run.yaml",
    ]  # fmt: skip
    args = _torchrun_parse(argv)
    assert (args.nproc_per_node, args.standalone, args.module) == ("4", True, True)
    assert (args.training_script, args.training_script_args) == ("trainengine", ["train", "--config", "run.yaml"])


def test_multi_node_with_a_node_rank_uses_the_static_rendezvous():
    options = LaunchOptions(nproc_per_node=8, nnodes=2, node_rank=1, rdzv_endpoint="node001:29500", max_restarts=3)
    argv = launcher_argv(options, ["--debug", "train", "--preset", "baseline"], python=PY)
    assert argv == [
        PY, "-m", "torch.distributed.run", "--nproc-per-node", "8", "--nnodes", "2", "--node-rank", "1",
        "--rdzv-endpoint", "node001:29500", "--max-restarts", "3", "-m", "trainengine", "--debug", "train",
        "--preset", "baseline",
    ]  # fmt: skip
    args = _torchrun_parse(argv)
    assert (args.nnodes, args.node_rank, args.rdzv_backend, args.rdzv_endpoint) == ("2", 1, "static", "node001:29500")
    assert (args.standalone, args.max_restarts) == (False, 3)


def test_multi_node_without_a_node_rank_joins_through_c10d():
    argv = launcher_argv(LaunchOptions(nproc_per_node=2, nnodes=2, rdzv_endpoint="10.0.0.1:29400"), ["train"])
    assert argv[0] == sys.executable  # the workers run in this interpreter's environment
    args = _torchrun_parse(argv)
    assert (args.rdzv_backend, args.rdzv_endpoint, args.standalone) == ("c10d", "10.0.0.1:29400", False)
    assert "--node-rank" not in argv and "--max-restarts" not in argv


@pytest.mark.parametrize(
    "given,expected",
    [
        (["train", "--nproc-per-node", "2", "--epochs", "1"], ["train", "--epochs", "1"]),
        (["train", "--nproc-per-node=2", "--nnodes=2", "--node-rank=0"], ["train"]),
        (
            ["--debug", "train", "--rdzv-endpoint", "h:1", "--max-restarts", "2", "--set", "training.seed=3"],
            ["--debug", "train", "--set", "training.seed=3"],
        ),
        # a --set of the config field is a run option, not a launch flag: the workers read it too
        (["train", "--set", "distributed.nproc_per_node=2"], ["train", "--set", "distributed.nproc_per_node=2"]),
        (
            ["train", "--run-name", "nnodes", "--", "--nnodes", "2"],
            ["train", "--run-name", "nnodes", "--", "--nnodes", "2"],
        ),
    ],
)
def test_the_launch_flags_are_stripped_from_the_forwarded_arguments(given, expected):
    assert strip_launch_flags(given) == expected


# -- the decision ---------------------------------------------------------------------------------
def _section(**fields):
    return TrainingConfig(distributed=fields).distributed


def test_one_process_is_not_launched():
    assert plan_launch(_section(), {}) is None
    assert plan_launch(_section(), {}, nproc_per_node=1, max_restarts=2) is None


def test_the_flag_or_the_config_asks_for_several_processes():
    assert plan_launch(_section(), {}, nproc_per_node=2) == LaunchOptions(nproc_per_node=2)
    assert plan_launch(_section(nproc_per_node=3), {}) == LaunchOptions(nproc_per_node=3)
    # the flag wins over the config, either way
    assert plan_launch(_section(nproc_per_node=3), {}, nproc_per_node=1) is None
    options = plan_launch(_section(nnodes=2), {}, rdzv_endpoint="h:29500", node_rank=1)
    assert options == LaunchOptions(nproc_per_node=1, nnodes=2, node_rank=1, rdzv_endpoint="h:29500")


@pytest.mark.parametrize("variable", ["LOCAL_RANK", "WORLD_SIZE"])
def test_a_torchrun_worker_never_launches_again(variable):
    env = {variable: "0"}
    assert _launch.is_torchrun_worker(env)
    assert plan_launch(_section(nproc_per_node=4), env, nproc_per_node=4, nnodes=2) is None


@pytest.mark.parametrize(
    "section,flags,expected",
    [
        ({"strategy": "none"}, {"nproc_per_node": 2}, "distributed.strategy: none trains in one process"),
        ({}, {"nproc_per_node": 2, "nnodes": 2}, "--nnodes 2 needs --rdzv-endpoint HOST:PORT"),
        ({}, {"nnodes": 2, "node_rank": 2, "rdzv_endpoint": "h:29500"}, "--node-rank 2 is outside 0..1"),
        ({}, {"nproc_per_node": 2, "rdzv_endpoint": "node001"}, "--rdzv-endpoint must be HOST:PORT"),
    ],
)
def test_a_launch_that_cannot_work_is_refused_before_starting(section, flags, expected):
    with pytest.raises(ConfigError) as info:
        plan_launch(_section(**section), {}, **flags)
    (problem,) = info.value.problems
    assert problem.startswith(expected), problem


# -- the command line ----------------------------------------------------------------------------
@pytest.fixture
def recorded(monkeypatch):
    """Replace the launcher with a recorder that exits with 7; no process starts."""
    calls: list[tuple[list[str], dict[str, str]]] = []

    def fake_launch(argv, env):
        calls.append((list(argv), dict(env)))
        return 7

    for variable in ("LOCAL_RANK", "WORLD_SIZE", "RANK"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(_launch, "launch", fake_launch)
    return calls


def test_train_relaunches_and_passes_the_exit_code_through(recorded, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("TRAINENGINE_TEST_MARK", "kept")
    args = ["train", "--dataset", "digits", "--nproc-per-node", "2", "--max-steps", "3", "--output-dir", str(tmp_path)]
    assert main(args) == 7
    ((argv, env),) = recorded
    assert argv[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert argv[argv.index("-m", 3) :] == [
        "-m", "trainengine", "train", "--dataset", "digits", "--max-steps", "3", "--output-dir", str(tmp_path),
    ]  # fmt: skip
    assert env["TRAINENGINE_TEST_MARK"] == "kept"
    assert "launching 2 processes:" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # the parent trained nothing


def test_the_config_alone_can_ask_for_the_launch(recorded, tmp_path):
    path = tmp_path / "ddp.yaml"
    path.write_text("data:\n  dataset: digits\ndistributed:\n  strategy: ddp\n  nproc_per_node: 3\n")
    assert main(["train", "--config", str(path), "--max-restarts", "1"]) == 7
    ((argv, _env),) = recorded
    args = _torchrun_parse(argv)
    assert (args.nproc_per_node, args.max_restarts, args.standalone) == ("3", 1, True)
    assert args.training_script_args == ["train", "--config", str(path)]


def test_a_bad_config_fails_once_in_the_parent(recorded, capsys):
    code = main(["train", "--dataset", "digits", "--nproc-per-node", "2", "--set", "distributed.fsdp_reduce_dtype=fp8"])
    assert code == 2 and not recorded
    assert "distributed.fsdp_reduce_dtype" in capsys.readouterr().err


def test_strategy_none_with_several_processes_is_refused(recorded, capsys):
    code = main(["train", "--dataset", "digits", "--nproc-per-node", "2", "--set", "distributed.strategy=none"])
    assert code == 2 and not recorded
    assert "distributed.strategy: none trains in one process" in capsys.readouterr().err


def test_groups_are_refused_with_several_processes(recorded, capsys):
    code = main(["train", "--dataset", "digits", "--seeds", "0,1", "--nproc-per-node", "2"])
    assert code == 2 and not recorded
    assert "--seeds / --cv train their runs in one process" in capsys.readouterr().err


def test_inside_a_worker_the_flags_are_ignored_and_nothing_launches(recorded, monkeypatch):
    # LOCAL_RANK without WORLD_SIZE: a worker by the rule, yet the run itself is one process.
    monkeypatch.setenv("LOCAL_RANK", "0")
    seen = []
    monkeypatch.setattr("trainengine.cli._train.run_training", lambda cfg, resume_from=None: seen.append(cfg) or {})
    assert main(["train", "--dataset", "digits", "--nproc-per-node", "2", "--max-steps", "1"]) == 0
    assert not recorded and len(seen) == 1


# -- the one side effect ----------------------------------------------------------------------------
def test_launch_returns_the_exit_code_and_forwards_sigterm():
    python = sys.executable
    assert _launch.launch([python, "-c", "raise SystemExit(5)"], os.environ) == 5
    before = signal.getsignal(signal.SIGTERM)
    # A SIGTERM to this process (a scheduler stopping the job) reaches the child, which dies of it.
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        code = _launch.launch([python, "-c", "import time; time.sleep(60)"], os.environ)
    finally:
        timer.cancel()
    assert code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored
