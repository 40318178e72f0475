"""Plugins: user registrations selected by name from a config, in this process and in a fresh one.

One plugin module registers a schedule, an optimizer, a tracker, a model, an export format, a task
and a loss strategy; configs name them. The fresh-process tests run ``trainengine train`` and a
plain ``python`` with the plugin folder added to PYTHONPATH (extended, never replaced), and load
a plugin through a ``trainengine.plugins`` entry point of a tiny dist-info folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from trainengine import registries
from trainengine.config import TrainingConfig
from trainengine.errors import ConfigError

PLUGIN = "te_test_plugin"
PLUGIN_SOURCE = textwrap.dedent(
    '''
    """A plugin registering one of each kind (imported by name from a config's plugins: list)."""
    import json

    import torch
    from torch import nn

    from trainengine.registries import (
        register_export_format, register_loss, register_model, register_optimizer,
        register_schedule, register_task, register_tracker,
    )
    from trainengine.tasks import RegressionLoss, TaskSpec
    from trainengine.tracking import TrackerBackend


    def halving(optimizer, section, *, total_steps, warmup_steps, base_lrs, monitor_mode):
        # lr(s) = base * 0.5 ** s, never below base * min_lr_ratio.
        floor = section.min_lr_ratio
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.5 ** s, floor))


    def plain_sgd(param_groups, section, *, lr, fused):
        return torch.optim.SGD(param_groups, lr=lr, momentum=0.0)


    class FileTracker(TrackerBackend):
        def log_metrics(self, metrics, step):
            self.log_dir.mkdir(parents=True, exist_ok=True)
            with open(self.log_dir / "file_tracker.jsonl", "a") as f:
                f.write(json.dumps({"step": step, **metrics}) + "\\n")


    def tiny_net(input_dim, num_outputs, width=8):
        return nn.Sequential(nn.Linear(input_dim, width), nn.ReLU(), nn.Linear(width, num_outputs))


    def text_format(ctx):
        (ctx.folder / "model.txt").write_text(str(ctx.model))
        return {"file": "model.txt", "files": ["model.txt"]}


    class HalfMSE(RegressionLoss):
        def loss_sum(self, logits, labels):
            return 0.5 * super().loss_sum(logits, labels)


    register_schedule("te_halving", halving)
    register_optimizer("te_plain_sgd", plain_sgd)
    register_tracker("te_file", FileTracker)
    register_model("te_tiny_net", tiny_net)
    register_export_format("te_text", text_format)
    register_task("te_regression", lambda dataset: TaskSpec.regression(dataset))
    register_loss("te_half_mse", HalfMSE)
    '''
)
NAMES = {
    registries.SCHEDULES: "te_halving",
    registries.OPTIMIZERS: "te_plain_sgd",
    registries.TRACKERS: "te_file",
    registries.MODELS: "te_tiny_net",
    registries.EXPORT_FORMATS: "te_text",
    registries.TASKS: "te_regression",
    registries.LOSSES: "te_half_mse",
}


def _env(*folders: Path) -> dict[str, str]:
    """This environment with ``folders`` and src/ in front of PYTHONPATH (extended, not replaced)."""
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    parts = [str(f) for f in folders] + [src] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env["PYTHONPATH"] = os.pathsep.join(parts)
    return env


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / f"{PLUGIN}.py").write_text(PLUGIN_SOURCE)
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    # The registries are process-wide: leave them as the other tests expect.
    for registry, name in NAMES.items():
        registry.unregister(name)
    sys.modules.pop(PLUGIN, None)


def _config(**overrides) -> dict:
    data = {
        "plugins": [PLUGIN],
        "training": {
            "max_steps": 4,
            "batch_size": 16,
            "learning_rate": 0.1,
            "log_interval_steps": 1,
            "eval_every_epoch": False,
            "device": "cpu",
        },
        "optimizer": {"name": "te_plain_sgd"},
        "scheduler": {"name": "te_halving", "min_lr_ratio": 0.2},
        "data": {"dataset": "digits", "max_train_samples": 64, "max_val_samples": 32},
        "model": {"architecture": "te_tiny_net", "options": {"width": 4}},
        "tracking": {"backends": ["te_file"], "experiment_db": False},
        "monitoring": {"profile_data": False},
    }
    for key, value in overrides.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return data


def test_names_are_unknown_until_the_plugin_is_loaded() -> None:
    with pytest.raises(ConfigError) as info:
        TrainingConfig(scheduler={"name": "te_halving"}, model={"architecture": "te_tiny_net"})
    text = str(info.value)
    assert "scheduler.name: unknown schedule 'te_halving' — available: " in text
    assert "model.architecture: unknown model architecture 'te_tiny_net'" in text


def test_plugins_list_makes_every_kind_selectable(plugin_dir: Path) -> None:
    config = TrainingConfig(
        **_config(export={"enabled": True, "formats": ["te_text", "pytorch"]}, data={"task": "te_regression"})
    )
    assert config.plugins == [PLUGIN]
    assert (config.scheduler.name, config.optimizer.name, config.model.architecture) == (
        "te_halving",
        "te_plain_sgd",
        "te_tiny_net",
    )
    assert config.tracking.backends == ["te_file"] and config.export.formats == ["te_text", "pytorch"]
    # The saved config names the plugin, so whoever reloads it loads the plugin first.
    assert TrainingConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()
    for registry, name in NAMES.items():
        assert name in registry.names()


def test_an_unimportable_plugin_is_a_listed_config_problem() -> None:
    with pytest.raises(ConfigError) as info:
        TrainingConfig(plugins=["te_no_such_plugin"], scheduler={"name": "cosin"})
    problems = info.value.problems
    assert any(p.startswith("plugins[0]: cannot import plugin module 'te_no_such_plugin'") for p in problems)
    assert any("did you mean 'cosine'?" in p for p in problems)


def test_registered_schedule_optimizer_model_task_and_loss_are_built(plugin_dir: Path) -> None:
    import torch

    from trainengine.engine import build_from_config, build_optimizer, build_scheduler
    from trainengine.tasks import get_loss_strategy

    config = TrainingConfig(**_config(data={"task": "te_regression"}))
    built = build_from_config(config)
    assert built.task_spec.task_type == "regression"
    assert [m.out_features for m in built.model if isinstance(m, torch.nn.Linear)] == [
        4,
        1,
    ]  # width from options, 1 output
    optimizer = build_optimizer(built.model, config.optimizer, 0.1, torch.device("cpu"))
    assert type(optimizer) is torch.optim.SGD and optimizer.param_groups[0]["momentum"] == 0.0
    handle = build_scheduler(optimizer, config.scheduler, 6)
    lrs = []
    for _ in range(4):
        lrs.append(handle.get_last_lr()[0])
        optimizer.step()
        handle.step()
    assert lrs == pytest.approx([0.1, 0.05, 0.025, 0.02])  # halving, floored at 0.2 x 0.1
    labels = torch.tensor([[1.0], [3.0]])
    half = get_loss_strategy("te_half_mse")(torch.zeros(2, 1), labels)
    full = get_loss_strategy("regression")(torch.zeros(2, 1), labels)
    assert float(half) == pytest.approx(0.5 * float(full))


def test_registered_export_format_writes_into_the_bundle(plugin_dir: Path, tmp_path: Path) -> None:
    import importlib

    from trainengine.export import create_export_bundle
    from trainengine.models import build_model
    from trainengine.tasks import TaskSpec

    importlib.import_module(PLUGIN)
    model = build_model("te_tiny_net", input_dim=4, num_outputs=3)
    bundle = create_export_bundle(
        model,
        task_spec=TaskSpec.classification("toy", 3),
        formats=["te_text", "pytorch"],
        output_dir=tmp_path / "exports",
        example_input=[[0.0] * 4] * 2,
    )
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["formats"]["te_text"]["file"] == "model.txt"
    assert "Linear(in_features=4" in (bundle / "model.txt").read_text()


@pytest.mark.slow
def test_fresh_process_trains_with_plugin_names_and_reloads_the_saved_config(tmp_path: Path) -> None:
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / f"{PLUGIN}.py").write_text(PLUGIN_SOURCE)
    config_file = tmp_path / "run.yaml"
    data = _config(
        tracking={"output_dir": str(tmp_path / "runs"), "run_name": "r1"},
        export={"enabled": True, "formats": ["te_text"], "output_dir": str(tmp_path / "exports")},
    )
    config_file.write_text(yaml.safe_dump(data))
    env = _env(folder)
    proc = subprocess.run(
        [sys.executable, "-m", "trainengine", "train", "--config", str(config_file)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    run_dir = next((tmp_path / "runs").rglob("r1"))
    lrs = [
        r["lr"]
        for r in map(json.loads, (run_dir / "logs.jsonl").read_text().splitlines())
        if r.get("type") == "train" and "lr" in r
    ]
    # The plugin's halving schedule drove the optimizer (a train record logs the lr of the next update).
    assert lrs[:3] == pytest.approx([0.05, 0.025, 0.02])
    tracked = (run_dir / "file_tracker.jsonl").read_text().splitlines()
    assert tracked and "train/loss" in json.loads(tracked[0])  # the plugin's tracker got the logs
    bundle = next((tmp_path / "exports").iterdir())
    assert json.loads((bundle / "manifest.json").read_text())["formats"]["te_text"]["file"] == "model.txt"

    # A fresh process that only has the saved config (as resume / export / a job worker do)
    # loads the plugin from its plugins: list and rebuilds the same run.
    check = textwrap.dedent(
        f"""
        from trainengine.config import TrainingConfig
        from trainengine.engine import build_from_config
        config = TrainingConfig.load({str(run_dir / "config.yaml")!r})
        built = build_from_config(config)
        print(config.plugins, config.scheduler.name, type(built.model[0]).__name__)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == [f"['{PLUGIN}']", "te_halving", "Linear"]


def test_entry_point_plugin_is_found_by_a_fresh_process_without_a_plugins_list(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "te_ep_plugin.py").write_text(
        textwrap.dedent(
            """
        from trainengine.registries import register_schedule
        register_schedule("te_ep_schedule", "torch.optim.lr_scheduler:ConstantLR")
        """
        )
    )
    dist = site / "te_ep_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: te-ep-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[trainengine.plugins]\nte_ep = te_ep_plugin\nte_broken = te_ep_missing_module\n"
    )
    check = textwrap.dedent(
        """
        import sys
        from trainengine.config import TrainingConfig
        config = TrainingConfig(scheduler={"name": "te_ep_schedule"})
        print(config.scheduler.name, "torch" in sys.modules)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, env=_env(site), cwd=tmp_path, timeout=60
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Found through the entry point; registering it lazily imported nothing heavy.
    assert proc.stdout.split() == ["te_ep_schedule", "False"]
    # The broken entry point is reported, and does not stop the others.
    assert "trainengine plugin entry point 'te_broken'" in proc.stderr and "te_ep_missing_module" in proc.stderr
