"""TrainingConfig validation: one ConfigError listing every problem, with dotted paths and ranges."""

from __future__ import annotations

import pytest

from trainengine.config import TrainingConfig, TrainingConfigBuilder
from trainengine.errors import ConfigError, TrainEngineError


def _problems(**kwargs) -> list[str]:
    with pytest.raises(ConfigError) as info:
        TrainingConfig(**kwargs)
    return info.value.problems


def _line_for(problems: list[str], path: str) -> str:
    hits = [p for p in problems if p.startswith(path + ":") or f" {path} " in f" {p} "]
    assert hits, f"no problem names {path}: {problems}"
    return hits[0]


# -- field errors ----------------------------------------------------------------------------------


def test_three_bad_fields_give_one_error_naming_all_three_with_ranges():
    with pytest.raises(ConfigError) as info:
        TrainingConfig(learning_rate=-1, batch_size=0, epochs=0)
    err = info.value
    # A ConfigError is also a ValueError (callers that catch ValueError keep working).
    assert isinstance(err, ValueError) and isinstance(err, TrainEngineError)
    assert len(err.problems) == 3
    text = str(err)
    assert "3 problems" in text
    lr = _line_for(err.problems, "training.learning_rate")
    bs = _line_for(err.problems, "training.batch_size")
    ep = _line_for(err.problems, "training.epochs")
    # The allowed range is part of each line, and so is the offending value.
    assert "allowed:" in lr and "> 0" in lr and "-1" in lr
    assert "allowed:" in bs and ">= 1" in bs and "(got 0)" in bs
    assert "allowed:" in ep and ">= 1" in ep and "(got 0)" in ep
    # Everything is in the message itself, one line per problem.
    for path in ("training.learning_rate", "training.batch_size", "training.epochs"):
        assert path in text


def test_field_errors_from_several_sections_are_reported_together():
    problems = _problems(
        training={"epochs": 0},
        optimizer={"beta1": 1.5, "weight_decay": -0.1},
        data={"val_fraction": 2.0},
        model={"dropout": 1.0},
        lora={"lora_r": 0},
    )
    for path in (
        "training.epochs",
        "optimizer.beta1",
        "optimizer.weight_decay",
        "data.val_fraction",
        "model.dropout",
        "lora.lora_r",
    ):
        assert "allowed:" in _line_for(problems, path)
    assert len(problems) == 6


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"learning_rate": 10.5}, "training.learning_rate"),
        ({"training": {"eval_interval_steps": 0}}, "training.eval_interval_steps"),
        ({"training": {"label_smoothing": 1.0}}, "training.label_smoothing"),
        ({"training": {"gradient_accumulation_steps": 0}}, "training.gradient_accumulation_steps"),
        ({"training": {"seed": -1}}, "training.seed"),
        ({"training": {"max_grad_norm": 0.0}}, "training.max_grad_norm"),
        ({"scheduler": {"warmup_ratio": 1.0}}, "scheduler.warmup_ratio"),
        ({"scheduler": {"warmup_steps": -3}}, "scheduler.warmup_steps"),
        ({"optimizer": {"eps": 0.0}}, "optimizer.eps"),
        ({"checkpointing": {"keep_last_n": 0}}, "checkpointing.keep_last_n"),
        ({"data": {"max_length": 1}}, "data.max_length"),
        ({"model": {"d_model": 4}}, "model.d_model"),
        ({"monitoring": {"gradient_check_interval": 0}}, "monitoring.gradient_check_interval"),
    ],
)
def test_out_of_range_values_name_the_field_and_its_range(kwargs, path):
    problems = _problems(**kwargs)
    assert len(problems) == 1
    assert problems[0].startswith(path + ":")
    assert "allowed:" in problems[0]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"learning_rate": 10.0},  # inclusive upper bound
        {"training": {"label_smoothing": 0.99, "eval_interval_steps": 1}},
        {"scheduler": {"warmup_ratio": 0.0, "warmup_steps": 0}},
        {"training": {"max_grad_norm": None}},  # null disables clipping
        {"data": {"max_length": 2}, "model": {"max_seq_len": 2}},
    ],
)
def test_values_on_the_boundary_are_accepted(kwargs):
    TrainingConfig(**kwargs).validate()


def test_a_typo_in_a_choice_lists_the_valid_choices():
    problems = _problems(training={"precision": "fp8"}, optimizer={"name": "adamm"})
    precision = _line_for(problems, "training.precision")
    for choice in ("fp32", "bf16", "fp16"):
        assert choice in precision
    assert "sgd" in _line_for(problems, "optimizer.name")


def test_wrong_type_names_the_field_and_the_value():
    problems = _problems(training={"epochs": "many"})
    assert problems[0].startswith("training.epochs:")
    assert "many" in problems[0]


def test_a_section_that_is_not_a_mapping_is_an_error():
    problems = _problems(training=5)
    assert "training" in problems[0] and "mapping" in problems[0]


def test_device_pattern_is_checked():
    TrainingConfig(training={"device": "cuda:1"})
    problems = _problems(training={"device": "tpu"})
    assert problems[0].startswith("training.device:")


# -- cross-field checks ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "must_mention"),
    [
        (
            {"training": {"max_steps": 100}, "scheduler": {"warmup_steps": 100}},
            ["scheduler.warmup_steps", "training.max_steps"],
        ),
        (
            {"training": {"max_steps": 100}, "scheduler": {"warmup_steps": 500}},
            ["scheduler.warmup_steps", "training.max_steps"],
        ),
        (
            {"scheduler": {"warmup_steps": 10, "warmup_ratio": 0.1}},
            ["scheduler.warmup_steps", "scheduler.warmup_ratio"],
        ),
        ({"model": {"d_model": 100, "n_heads": 3}}, ["model.d_model", "model.n_heads"]),
        ({"training": {"precision": "fp16", "device": "cpu"}}, ["training.precision", "fp16", "bf16"]),
        (
            {"training": {"early_stopping_patience": 3, "eval_every_epoch": False}},
            ["training.early_stopping_patience", "eval"],
        ),
        (
            {"scheduler": {"name": "reduce_on_plateau"}, "training": {"eval_every_epoch": False}},
            ["reduce_on_plateau", "eval"],
        ),
        (
            {"data": {"dataset": "pystdlib", "max_length": 256}, "model": {"max_seq_len": 128}},
            ["data.max_length", "model.max_seq_len"],
        ),
        ({"scheduler": {"name": "one_cycle", "warmup_steps": 5}}, ["one_cycle", "warmup"]),
        ({"scheduler": {"name": "cyclic", "warmup_ratio": 0.1}}, ["cyclic", "warmup"]),
        (
            {"checkpointing": {"enabled": True, "save_every_n_epochs": None, "save_every_n_steps": None}},
            ["checkpointing"],
        ),
    ],
)
def test_cross_field_rules(kwargs, must_mention):
    problems = _problems(**kwargs)
    assert len(problems) == 1, problems
    for text in must_mention:
        assert text in problems[0]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"training": {"max_steps": 100}, "scheduler": {"warmup_steps": 99}},
        {"model": {"d_model": 96, "n_heads": 3}},
        {"training": {"precision": "fp16", "device": "auto"}},
        {"training": {"precision": "bf16", "device": "cpu"}},
        {"training": {"early_stopping_patience": 3, "eval_every_epoch": False, "eval_interval_steps": 50}},
        {"scheduler": {"name": "reduce_on_plateau"}, "training": {"eval_every_epoch": True}},
        {"data": {"dataset": "pystdlib", "max_length": 128}, "model": {"max_seq_len": 128}},
        # The sequence-length rule is about the GPT: an MLP on digits ignores data.max_length.
        {"data": {"dataset": "digits", "max_length": 512}, "model": {"max_seq_len": 128}},
        {"scheduler": {"name": "one_cycle"}},
        {"checkpointing": {"enabled": True, "save_every_n_epochs": None, "save_every_n_steps": 100}},
    ],
)
def test_cross_field_rules_do_not_fire_on_valid_neighbours(kwargs):
    TrainingConfig(**kwargs).validate()


def test_several_cross_field_problems_are_listed_together():
    problems = _problems(
        training={"precision": "fp16", "device": "cpu", "max_steps": 10},
        scheduler={"warmup_steps": 20},
        model={"d_model": 100, "n_heads": 3},
    )
    assert len(problems) == 3
    joined = "\n".join(problems)
    assert "fp16" in joined and "model.d_model" in joined and "scheduler.warmup_steps" in joined


def test_builder_build_and_validate_raise_the_same_kind_of_error():
    with pytest.raises(ConfigError) as info:
        TrainingConfigBuilder.baseline().with_training(learning_rate=-1, batch_size=0).build()
    assert len(info.value.problems) == 2


# -- assignment ------------------------------------------------------------------------------------


def test_assigning_an_invalid_value_raises_config_error_and_keeps_the_old_value():
    cfg = TrainingConfig(training={"max_steps": 50})
    with pytest.raises(ConfigError) as info:
        cfg.training.max_steps = 0
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith("training.max_steps:")
    assert "allowed:" in info.value.problems[0]
    assert cfg.training.max_steps == 50


def test_flat_assignment_is_validated_and_lands_in_its_section():
    cfg = TrainingConfig()
    cfg.learning_rate = 5e-4
    assert cfg.training.learning_rate == 5e-4
    with pytest.raises(ConfigError) as info:
        cfg.learning_rate = -1
    assert info.value.problems[0].startswith("training.learning_rate:")
    assert cfg.training.learning_rate == 5e-4


def test_assigning_an_unknown_field_of_a_section_fails():
    cfg = TrainingConfig()
    with pytest.raises(ConfigError):
        cfg.training.learnin_rate = 1e-3


def test_validate_catches_cross_field_problems_introduced_by_assignments():
    cfg = TrainingConfig()
    # Each assignment is valid on its own; together warmup outlasts training.
    cfg.scheduler.warmup_steps = 100
    cfg.training.max_steps = 10
    with pytest.raises(ConfigError) as info:
        cfg.validate()
    assert len(info.value.problems) == 1
    assert "scheduler.warmup_steps (100)" in info.value.problems[0]
    assert "training.max_steps (10)" in info.value.problems[0]


def test_validate_returns_the_config_when_valid():
    cfg = TrainingConfig(learning_rate=3e-4)
    assert cfg.validate() is cfg


def test_model_validate_does_not_nest_error_messages():
    # pydantic runs TrainingConfig.__init__ inside model_validate as well; the resulting error must
    # still list the plain problem, not a whole "invalid configuration (...)" block as a problem.
    from pydantic import ValidationError

    from trainengine.config._errors import to_config_error

    with pytest.raises(ValidationError) as info:
        TrainingConfig.model_validate({"training": {"max_steps": 5}, "scheduler": {"warmup_steps": 9}})
    err = to_config_error(info.value, TrainingConfig)
    assert len(err.problems) == 1
    assert err.problems[0].startswith("scheduler.warmup_steps (9)")


def test_assigning_an_unknown_field_suggests_the_right_one():
    cfg = TrainingConfig()
    with pytest.raises(ConfigError) as info:
        cfg.training.learnin_rate = 1e-3
    assert info.value.problems == ["unknown field training.learnin_rate — did you mean training.learning_rate?"]
    with pytest.raises(ConfigError) as info:
        cfg.learnin_rate = 1e-3
    assert "did you mean training.learning_rate?" in info.value.problems[0]


def test_assigning_a_whole_section_is_validated_with_cross_field_rules():
    cfg = TrainingConfig(scheduler={"warmup_steps": 3})
    cfg.training = {"epochs": 4}
    assert cfg.training.epochs == 4
    # The other sections stay typed sections (not plain dicts) after the assignment.
    assert cfg.scheduler.warmup_steps == 3
    with pytest.raises(ConfigError) as info:
        cfg.training = {"max_steps": 2}
    assert "scheduler.warmup_steps (3)" in info.value.problems[0]
    assert cfg.training.max_steps is None  # a failed assignment changes nothing
    with pytest.raises(ConfigError) as info:
        cfg.training = {"epochs": 0}
    assert info.value.problems[0].startswith("training.epochs:")


def test_an_unknown_top_level_key_does_not_hide_the_other_problems():
    problems = _problems(learnin_rate=1e-3, training={"epochs": 0}, schedular={"name": "linear"})
    assert "unknown field learnin_rate — did you mean training.learning_rate?" in problems
    assert "unknown section schedular — did you mean scheduler?" in problems
    assert any(p.startswith("training.epochs:") for p in problems)
    assert len(problems) == 3
