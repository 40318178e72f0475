"""The one registry mechanism (trainengine.registries) and the builders that look names up in it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from trainengine import registries
from trainengine.errors import ConfigError, DataError, TaskError
from trainengine.registries import Registry


def test_register_get_names_contains() -> None:
    reg = Registry("colour")
    reg.register("red", 1)
    reg.register("blue", 2)
    assert reg.get("red") == 1 and reg.names() == ["blue", "red"]
    assert "blue" in reg and "green" not in reg and 3 not in reg


def test_lazy_entry_is_imported_on_first_get_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "te_lazy_target.py").write_text("VALUE = object()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "te_lazy_target", raising=False)
    reg = Registry("thing")
    reg.register("x", "te_lazy_target:VALUE")
    assert "x" in reg and reg.names() == ["x"]
    assert "te_lazy_target" not in sys.modules  # checking a name imports nothing
    value = reg.get("x")
    assert value is sys.modules["te_lazy_target"].VALUE
    assert reg.get("x") is value


def test_reregistering_another_target_needs_overwrite() -> None:
    reg = Registry("schedule")
    reg.register("mine", len)
    reg.register("mine", len)  # the same target again: harmless (a plugin imported twice)
    with pytest.raises(ConfigError, match="schedule 'mine' is already registered .*overwrite=True"):
        reg.register("mine", abs)
    reg.register("mine", abs, overwrite=True)
    assert reg.get("mine") is abs


def test_a_lazy_builtin_and_its_object_are_the_same_entry() -> None:
    reg = Registry("thing")
    reg.register("path", "os.path:join")
    import os.path

    reg.register("path", os.path.join)  # no error: it is what the lazy entry names
    with pytest.raises(ConfigError):
        reg.register("path", os.path.split)


def test_check_lists_names_and_suggests_the_closest() -> None:
    reg = Registry("schedule")
    for name in ("cosine", "linear", "constant"):
        reg.register(name, name.upper())
    reg.check("cosine")
    with pytest.raises(ConfigError) as info:
        reg.check("cosin")
    assert info.value.problems == [
        "unknown schedule 'cosin' — available: constant, cosine, linear; did you mean 'cosine'?"
    ]
    with pytest.raises(ConfigError) as info:
        reg.check("zzz")
    assert "did you mean" not in str(info.value)


def test_empty_name_and_error_class() -> None:
    reg = Registry("dataset", normalize=str.lower, error=DataError)
    with pytest.raises(DataError, match="non-empty"):
        reg.register("  ", 1)
    reg.register("Digits", 1)
    assert "DIGITS" in reg and reg.names() == ["digits"]
    with pytest.raises(DataError, match="unknown dataset 'digit'"):
        reg.get("digit")


@pytest.mark.parametrize(
    ("registry", "builtins"),
    [
        (registries.MODELS, {"mlp", "cnn", "gpt"}),
        (registries.DATASETS, {"digits", "diabetes", "pystdlib"}),
        (registries.TASKS, {"classification", "regression", "language_modeling", "vision"}),
        (registries.LOSSES, {"classification", "regression", "language_modeling", "vision"}),
        (registries.SCHEDULES, {"cosine", "linear", "constant", "one_cycle", "cyclic", "reduce_on_plateau"}),
        (registries.OPTIMIZERS, {"adamw", "adam", "sgd"}),
        (registries.TRACKERS, {"console", "jsonl", "tensorboard", "mlflow", "wandb"}),
        (registries.EXPORT_FORMATS, {"onnx", "torchscript", "torch_export", "pytorch"}),
    ],
)
def test_builtin_entries_resolve(registry: Registry, builtins: set[str]) -> None:
    assert builtins <= set(registry.names())
    for name in builtins:
        assert callable(registry.get(name)), f"{registry.kind} {name!r} does not resolve to a callable"


def test_validating_a_config_imports_nothing_heavy() -> None:
    code = textwrap.dedent(
        """
        import sys
        from trainengine.config import TrainingConfig
        TrainingConfig(scheduler={"name": "one_cycle"}, optimizer={"name": "sgd"}, model={"architecture": "gpt"},
                       data={"dataset": "pystdlib", "task": "language_modeling"}, tracking={"backends": ["jsonl"]},
                       export={"formats": ["onnx", "torch_export"]})
        TrainingConfig.explain()
        heavy = ("torch", "numpy", "trainengine.models", "trainengine.engine", "trainengine.tracking",
                 "trainengine.data", "trainengine.registry")
        heavy = sorted(m for m in heavy if m in sys.modules)
        print(heavy)
        """
    )
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**__import__("os").environ}
    env["PYTHONPATH"] = src + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_public_register_functions_feed_the_registries() -> None:
    import torch

    from trainengine.data import list_datasets, register_dataset
    from trainengine.models import list_models, register_model
    from trainengine.tasks import available_loss_strategies, register_loss_strategy
    from trainengine.tasks._losses import RegressionLoss
    from trainengine.tracking import TrackerBackend, available_trackers, register_tracker

    class Tracker(TrackerBackend):
        def log_metrics(self, metrics: dict, step: int) -> None:
            pass

    class Loss(RegressionLoss):
        pass

    def factory(**options: object) -> None:
        return None

    try:
        register_model("te_reg_model", torch.nn.Identity)
        register_dataset("TE_Reg_Data", factory)
        register_tracker("te_reg_tracker", Tracker)
        register_loss_strategy("te_reg_loss", Loss)
        assert "te_reg_model" in registries.MODELS and "te_reg_model" in list_models()
        assert "te_reg_data" in registries.DATASETS and "te_reg_data" in list_datasets()
        assert registries.TRACKERS.get("te_reg_tracker") is Tracker and "te_reg_tracker" in available_trackers()
        assert registries.LOSSES.get("te_reg_loss") is Loss and "te_reg_loss" in available_loss_strategies()
        # The old error types stay: data raises DataError, losses TaskError.
        with pytest.raises(DataError, match="already registered"):
            register_dataset("te_reg_data", lambda **kw: None)
        with pytest.raises(TaskError, match="already registered"):
            register_loss_strategy("te_reg_loss", RegressionLoss)
        with pytest.raises(ConfigError, match="TrackerBackend subclass"):
            register_tracker("te_bad", object)  # type: ignore[arg-type]  # a wrong type on purpose
    finally:
        for reg, name in (
            (registries.MODELS, "te_reg_model"),
            (registries.DATASETS, "te_reg_data"),
            (registries.TRACKERS, "te_reg_tracker"),
            (registries.LOSSES, "te_reg_loss"),
        ):
            reg.unregister(name)


def test_registered_schedule_is_built_from_the_section_by_name() -> None:
    import torch

    from trainengine.config import SchedulerSection
    from trainengine.engine import build_scheduler

    seen = {}

    def step_down(optimizer, section, *, total_steps, warmup_steps, base_lrs, monitor_mode):
        seen.update(total_steps=total_steps, warmup_steps=warmup_steps, base_lrs=base_lrs, mode=monitor_mode)
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.1)

    registries.register_schedule("te_step_down", step_down)
    try:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        handle = build_scheduler(opt, SchedulerSection(name="te_step_down", warmup_steps=1), 10, monitor_mode="max")
        assert seen == {"total_steps": 10, "warmup_steps": 1, "base_lrs": [1.0], "mode": "max"}
        lrs = []
        for _ in range(5):
            lrs.append(handle.get_last_lr()[0])
            opt.step()
            handle.step()
        assert lrs == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01])
    finally:
        registries.SCHEDULES.unregister("te_step_down")
    with pytest.raises(ConfigError, match="unknown schedule 'te_step_down'"):
        build_scheduler(opt, {"name": "te_step_down"}, 10)


def test_schedule_builder_must_return_a_torch_scheduler() -> None:
    import torch

    from trainengine.engine import build_scheduler

    registries.register_schedule("te_bad_schedule", lambda *a, **k: "not a scheduler")
    try:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        with pytest.raises(ConfigError, match="must return a torch LRScheduler"):
            build_scheduler(opt, {"name": "te_bad_schedule"}, 10)
    finally:
        registries.SCHEDULES.unregister("te_bad_schedule")


def test_section_form_and_keyword_form_build_the_same_schedule() -> None:
    import torch

    from trainengine.config import SchedulerSection
    from trainengine.engine import build_scheduler

    def curve(**kwargs: object) -> list[float]:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
        handle = build_scheduler(opt, **kwargs)  # type: ignore[arg-type]  # kwargs typed loosely: section fields
        out = []
        for _ in range(8):
            out.append(handle.get_last_lr()[0])
            opt.step()
            handle.step()
        return out

    section = SchedulerSection(name="cosine", warmup_steps=2, min_lr_ratio=0.1)
    assert curve(section=section, total_steps=8) == curve(
        name="cosine", warmup_steps=2, min_lr_ratio=0.1, total_steps=8
    )
    with pytest.raises(ConfigError, match="unknown scheduler setting 'warmup'"):
        curve(name="cosine", warmup=2, total_steps=8)


def test_scale_updates_the_reported_lr_without_torch_private_state() -> None:
    # LRScheduleHandle.get_last_lr() reads the param groups, not torch's private _last_lr: after a
    # rollback's scale() the next update's lr is reported at once, and the curve continues scaled.
    import torch

    from trainengine.engine import build_scheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    handle = build_scheduler(opt, name="linear", total_steps=5)
    opt.step()
    handle.step()  # lr 0.75 for update 1
    handle.scale(0.5)
    assert handle.get_last_lr() == pytest.approx([0.375])
    opt.step()
    handle.step()
    assert handle.get_last_lr() == pytest.approx([0.25])  # 0.5 x the unscaled 0.5
    # torch keeps _last_lr in step with the param groups after a step; if it stopped doing so,
    # the handle would still be right, but this documents what the handle no longer relies on.
    assert handle.scheduler.get_last_lr() == pytest.approx(handle.get_last_lr())


def test_registered_optimizer_gets_groups_and_section() -> None:
    import torch

    from trainengine.config import OptimizerSection
    from trainengine.engine import build_optimizer

    def rms(param_groups, section, *, lr, fused):
        return torch.optim.RMSprop(param_groups, lr=lr, eps=section.eps)

    registries.register_optimizer("te_rmsprop", rms)
    try:
        model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
        opt = build_optimizer(
            model, OptimizerSection(name="te_rmsprop", weight_decay=0.05, eps=1e-6), 0.01, torch.device("cpu")
        )
        assert isinstance(opt, torch.optim.RMSprop)
        assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]  # decay on the weight matrix only
        assert opt.param_groups[0]["eps"] == 1e-6
    finally:
        registries.OPTIMIZERS.unregister("te_rmsprop")


def test_unknown_export_format_lists_registered_ones() -> None:
    from trainengine.errors import ExportError
    from trainengine.export._bundle import _formats

    with pytest.raises(ExportError, match="unknown export format 'onx' — available: .*; did you mean 'onnx'"):
        _formats(["onx"])
