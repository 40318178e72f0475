"""Config fields that select by name are checked against trainengine.registries."""

from __future__ import annotations

import pytest

from trainengine import registries
from trainengine.config import TrainingConfig
from trainengine.errors import ConfigError

# field path -> (section data with an unknown name, registry kind, closest registered name)
CASES = {
    "optimizer.name": ({"optimizer": {"name": "adamx"}}, "optimizer", "adam"),
    "scheduler.name": ({"scheduler": {"name": "cosin"}}, "schedule", "cosine"),
    "tracking.backends": ({"tracking": {"backends": ["jsonl", "tensorbord"]}}, "tracker", "tensorboard"),
    "export.formats": ({"export": {"formats": ["onx"]}}, "export format", "onnx"),
    "model.architecture": ({"model": {"architecture": "mpl"}}, "model architecture", "mlp"),
    "data.dataset": ({"data": {"dataset": "digitz"}}, "dataset", "digits"),
    "data.task": ({"data": {"task": "regresion"}}, "task", "regression"),
}


@pytest.mark.parametrize("path", list(CASES))
def test_unknown_name_lists_registered_names_and_suggests(path: str) -> None:
    data, kind, closest = CASES[path]
    with pytest.raises(ConfigError) as info:
        TrainingConfig(**data)
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}: unknown {kind} ")
    assert problem.endswith(f"; did you mean '{closest}'?")
    assert closest in problem.split(" — available: ")[1]


def test_every_unknown_name_is_reported_in_one_error() -> None:
    merged: dict = {}
    for data, _, _ in CASES.values():
        for section, fields in data.items():
            merged.setdefault(section, {}).update(fields)
    with pytest.raises(ConfigError) as info:
        TrainingConfig(**merged, training={"learning_rate": -1})
    paths = [p.split(":")[0] for p in info.value.problems]
    assert sorted(paths) == sorted([*CASES, "training.learning_rate"])


def test_auto_stays_valid_where_it_means_the_default() -> None:
    config = TrainingConfig(model={"architecture": "auto"}, data={"task": "auto", "dataset": "DIGITS"})
    assert (config.model.architecture, config.data.task, config.data.dataset) == ("auto", "auto", "digits")


def test_a_registered_name_becomes_valid_and_is_listed() -> None:
    with pytest.raises(ConfigError):
        TrainingConfig(scheduler={"name": "te_cfg_schedule"})
    registries.register_schedule("te_cfg_schedule", "torch.optim.lr_scheduler:ConstantLR")
    try:
        assert TrainingConfig(scheduler={"name": "te_cfg_schedule"}).scheduler.name == "te_cfg_schedule"
        rows = {r["path"]: r for r in TrainingConfig.explain()}
        assert "'te_cfg_schedule'" in rows["scheduler.name"]["type"]
        builtin = {r["path"]: r for r in TrainingConfig.explain(builtin_only=True)}
        assert "te_cfg_schedule" not in builtin["scheduler.name"]["type"]
        assert "'cosine'" in builtin["scheduler.name"]["type"]
    finally:
        registries.SCHEDULES.unregister("te_cfg_schedule")
    with pytest.raises(ConfigError, match="unknown schedule 'te_cfg_schedule'"):
        TrainingConfig(scheduler={"name": "te_cfg_schedule"})


def test_assignment_is_checked_like_construction() -> None:
    config = TrainingConfig()
    with pytest.raises(ConfigError) as info:
        config.optimizer.name = "sdg"
    assert info.value.problems == [
        "optimizer.name: unknown optimizer 'sdg' — available: adam, adamw, sgd; did you mean 'sgd'?"
    ]
    assert config.optimizer.name == "adamw"


def test_explain_lists_registry_choices_as_literals() -> None:
    rows = {r["path"]: r for r in TrainingConfig.explain(builtin_only=True)}
    assert rows["optimizer.name"]["type"] == "Literal['adam', 'adamw', 'sgd']"
    assert rows["tracking.backends"]["type"] == "list[Literal['console', 'jsonl', 'mlflow', 'tensorboard', 'wandb']]"
    assert rows["data.dataset"]["type"] == "Literal['diabetes', 'digits', 'prm', 'pystdlib'] | None"
    assert rows["model.architecture"]["type"].startswith("Literal['auto', ")
    assert rows["plugins"]["type"] == "list[str]"


def test_plugins_must_be_a_list_of_module_names() -> None:
    with pytest.raises(ConfigError) as info:
        TrainingConfig(plugins="json")
    assert info.value.problems[0].startswith("plugins: must be a list of module names")
    with pytest.raises(ConfigError) as info:
        TrainingConfig(plugins=[""])
    assert info.value.problems[0].startswith("plugins[0]: must be a module name")
    assert TrainingConfig(plugins=["json"]).plugins == ["json"]
