"""Search spaces: checked against the config schema before any trial, sampled through Optuna."""

from __future__ import annotations

import math

import optuna
import pytest

from trainengine.config import TrainingConfig
from trainengine.errors import ConfigError
from trainengine.tune import SearchSpace, load_space


def _problems(space: dict, base: TrainingConfig | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_space(space, base)
    assert str(info.value).startswith("invalid search space")
    return info.value.problems


def test_every_problem_of_every_parameter_is_listed_at_once():
    problems = _problems(
        {
            "training.learnin_rate": {"type": "float", "low": 1e-4, "high": 1e-1},  # typo
            "training.learning_rate": {"type": "float", "low": 1e-4, "high": 20.0, "log": True},  # field: <= 10
            "training.batch_size": {"type": "float", "low": 8, "high": 64},  # an int field
            "training.epochs": {"type": "int", "low": 5, "high": 2},  # low > high
            "optimizer.name": {"type": "categorical", "choices": ["adamw", "sgdd"]},  # not an optimizer
            "model.dropout": {"type": "uniform", "low": 0, "high": 0.5},  # not a space type
            "model.mlp_dropout": {"type": "float", "low": 0.1, "high": 1.5},  # the field is < 1
            "optimizer.weight_decay": {"type": "float", "low": 0.0, "high": 0.1, "log": True},  # log from 0
        }
    )
    text = "\n".join(problems)
    assert len(problems) == 8, text
    assert "training.learnin_rate: unknown field — did you mean training.learning_rate?" in problems
    assert any(
        p.startswith("training.learning_rate: high 20.0 is outside the bounds") and "<= 10" in p for p in problems
    )
    assert "training.batch_size: training.batch_size holds integers — use type: int (or categorical)" in problems
    assert "training.epochs: low (5) is greater than high (2) — swap them" in problems
    assert any(p.startswith("optimizer.name: choice 'sgdd'") and "available: adam, adamw, sgd" in p for p in problems)
    assert any(p.startswith("model.dropout: type 'uniform'") for p in problems)
    assert any(p.startswith("model.mlp_dropout: high 1.5 is outside the bounds") for p in problems)
    assert "optimizer.weight_decay: a log-scale range needs low > 0, got low 0.0" in problems


def test_bounds_are_the_fields_own_and_checked_in_the_base_configs_context():
    # model.dropout is ge=0, lt=1: high 1.0 is outside; 0.99 is inside.
    assert (
        "outside the bounds of model.dropout (>= 0.0 and < 1.0)"
        in _problems({"model.dropout": {"type": "float", "low": 0.0, "high": 1.0}})[0]
    )
    assert load_space({"model.dropout": {"type": "float", "low": 0.0, "high": 0.99}}).keys == ("model.dropout",)
    # A cross-field rule: warmup as long as training is refused before any trial, for this base only.
    base = TrainingConfig.from_dict({"training": {"max_steps": 10}})
    (problem,) = _problems({"scheduler.warmup_steps": {"type": "int", "low": 0, "high": 10}}, base)
    assert problem.startswith("scheduler.warmup_steps: high makes the config invalid") and "max_steps (10)" in problem
    assert load_space({"scheduler.warmup_steps": {"type": "int", "low": 0, "high": 9}}, base).keys


def test_seed_spellings_go_through_the_alias_table_and_nested_keys_equal_dotted_ones():
    flat = load_space({"training.grad_clip": {"type": "float", "low": 0.5, "high": 2.0}})
    nested = load_space({"training": {"grad_clip": {"type": "float", "low": 0.5, "high": 2.0}}})
    assert flat == nested and flat.keys == ("training.max_grad_norm",)
    assert flat.params[0].spelled == "training.grad_clip"
    config = flat.apply(TrainingConfig(), {"training.max_grad_norm": 1.25})
    assert config.training.max_grad_norm == 1.25
    # The same field under two spellings is one parameter given twice.
    (problem,) = _problems(
        {
            "training.grad_clip": {"type": "float", "low": 0.5, "high": 2.0},
            "training.max_grad_norm": {"type": "float", "low": 0.5, "high": 2.0},
        }
    )
    assert "already in the space" in problem


def test_yaml_file_and_samples_stay_in_range_on_a_log_scale(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(
        "training.learning_rate: {type: float, low: 1.0e-4, high: 1.0e-0, log: true}\n"
        "training.batch_size: {type: int, low: 8, high: 64, step: 8}\n",
        encoding="utf-8",
    )
    space = load_space(path)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    lrs, sizes = [], []
    for _ in range(200):
        values = space.suggest(study.ask())
        lrs.append(values["training.learning_rate"])
        sizes.append(values["training.batch_size"])
    assert all(1e-4 <= lr <= 1.0 for lr in lrs) and set(sizes) <= set(range(8, 65, 8))
    # Log-uniform: the median sits near the geometric middle 1e-2, far below the arithmetic 0.5.
    median = sorted(lrs)[len(lrs) // 2]
    assert 10**-2.6 < median < 10**-1.4


def test_list_choices_round_trip_through_optuna_storage():
    space = load_space({"model.hidden_dims": {"type": "categorical", "choices": [[16], [32, 32]]}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = []
    for _ in range(6):
        trial = study.ask()
        seen.append(space.suggest(trial)["model.hidden_dims"])
        study.tell(trial, 0.0)
    assert {tuple(v) for v in seen} == {(16,), (32, 32)}
    # Optuna stores the JSON text; decode gives the list back, which the config accepts.
    stored = study.trials[0].params["model.hidden_dims"]
    assert isinstance(stored, str)
    assert space.apply(TrainingConfig(), space.decode(study.trials[0].params)).model.hidden_dims == seen[0]


def test_grid_needs_finite_values():
    space = load_space(
        {
            "training.batch_size": {"type": "int", "low": 16, "high": 64, "step": 16},
            "optimizer.name": {"type": "categorical", "choices": ["adamw", "sgd"]},
            "model.dropout": {"type": "float", "low": 0.0, "high": 0.2, "step": 0.1},
        }
    )
    grid = space.grid()
    assert grid["training.batch_size"] == [16, 32, 48, 64] and grid["optimizer.name"] == ["adamw", "sgd"]
    assert [round(v, 9) for v in grid["model.dropout"]] == [0.0, 0.1, 0.2]
    assert space.grid_size() == 4 * 2 * 3
    continuous = load_space({"training.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2}})
    with pytest.raises(ConfigError, match="grid sampler needs a finite set of values"):
        continuous.grid()


def test_a_ready_space_and_its_dict_form_are_equivalent():
    space = load_space({"training.learning_rate": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}})
    again = load_space(space.to_dict())
    assert again == space and load_space(space) == space
    assert isinstance(space, SearchSpace) and math.isclose(space.params[0].high or 0, 0.1)
    assert _problems({}) == ["the space is empty — name at least one config key, e.g. training.learning_rate"]
