"""--set style overrides and the precedence CLI flags > --set > file > preset > defaults."""

from __future__ import annotations

import pytest

from trainengine.cli._common import resolve_config
from trainengine.config import TrainingConfig, apply_overrides, get_preset, parse_override
from trainengine.errors import ConfigError

# -- parse_override --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("training.learning_rate=5e-4", ("training", "learning_rate", 5e-4)),
        ("training.learning_rate=1E-3", ("training", "learning_rate", 1e-3)),
        ("training.learning_rate=0.5", ("training", "learning_rate", 0.5)),
        ("training.learning_rate=.25", ("training", "learning_rate", 0.25)),
        ("training.max_steps=100", ("training", "max_steps", 100)),
        ("training.max_steps=null", ("training", "max_steps", None)),
        ("training.deterministic=true", ("training", "deterministic", True)),
        ("training.deterministic=false", ("training", "deterministic", False)),
        ("model.hidden_dims=[64, 32]", ("model", "hidden_dims", [64, 32])),
        ("model.hidden_dims=[64,32]", ("model", "hidden_dims", [64, 32])),
        ("tracking.tags=[a, b]", ("tracking", "tags", ["a", "b"])),
        ("training.precision=bf16", ("training", "precision", "bf16")),
        ("training.monitor=val/loss", ("training", "monitor", "val/loss")),
        ("data.dataset=digits", ("data", "dataset", "digits")),
        ("data.dataset=null", ("data", "dataset", None)),
        # A bare key that belongs to one section only.
        ("learning_rate=3e-4", ("training", "learning_rate", 3e-4)),
        ("max_length=64", ("data", "max_length", 64)),
        # Hyphens as on a command line.
        ("training.max-steps=7", ("training", "max_steps", 7)),
    ],
)
def test_parse_override_types(text, expected):
    section, key, value = parse_override(text)
    assert (section, key, value) == expected
    assert type(value) is type(expected[2])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # YAML 1.1 reads these as bools or numbers; the fields hold text or a choice.
        ("optimizer.fused=off", "off"),
        ("optimizer.fused=on", "on"),
        ("data.pin_memory=off", "off"),
        ("tracking.run_name=123", "123"),
        ("tracking.run_name=1e5", "1e5"),
        ("tracking.notes=yes", "yes"),
        ("tracking.notes=a: b", "a: b"),
        ('tracking.notes="quoted text"', "quoted text"),
        ("tracking.run_name='null'", "null"),
    ],
)
def test_text_and_choice_fields_keep_the_text_as_typed(text, expected):
    section, key, value = parse_override(text)
    assert value == expected
    # And the value is accepted by the config (the whole point of keeping the text).
    TrainingConfig(**{section: {key: value}})


def test_null_clears_an_optional_text_field():
    assert parse_override("tracking.run_name=null")[2] is None
    assert parse_override("training.monitor=~")[2] is None


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("training.learning_rate", "section.key=value"),
        ("training.learnin_rate=1", "did you mean training.learning_rate?"),
        ("trainig.epochs=1", "unknown field trainig.epochs"),
        ("lernin_rate=1", "did you mean training.learning_rate?"),
        ("name=sgd", "optimizer.name or scheduler.name"),
        ("training.epochs=[1", "not valid YAML"),
    ],
)
def test_parse_override_errors(text, fragment):
    with pytest.raises(ConfigError) as info:
        parse_override(text)
    assert fragment in str(info.value)


def test_invalid_yaml_override_is_reported_on_one_line():
    with pytest.raises(ConfigError) as info:
        parse_override("model.hidden_dims=[1, 2")
    assert len(info.value.problems) == 1
    assert "\n" not in info.value.problems[0]
    assert "model.hidden_dims" in info.value.problems[0]


# -- apply_overrides -------------------------------------------------------------------------------


def test_apply_overrides_merges_without_mutating_its_input():
    base = {"training": {"epochs": 3, "batch_size": 8}}
    out = apply_overrides(base, ["training.epochs=5", "optimizer.name=sgd", "training.epochs=6"])
    assert out == {"training": {"epochs": 6, "batch_size": 8}, "optimizer": {"name": "sgd"}}
    assert base == {"training": {"epochs": 3, "batch_size": 8}}


def test_apply_overrides_lists_every_bad_override_at_once():
    with pytest.raises(ConfigError) as info:
        apply_overrides({}, ["training.lernin_rate=1", "nokey", "training.epochs=[1", "training.epochs=4"])
    err = info.value
    assert len(err.problems) == 3
    assert "did you mean training.learning_rate?" in err.problems[0]
    assert "nokey" in err.problems[1]
    assert "training.epochs" in err.problems[2]
    assert "--set" in str(err)


def test_override_values_are_validated_by_the_config():
    data = apply_overrides({}, ["training.epochs=0", "training.learning_rate=5e-4"])
    with pytest.raises(ConfigError) as info:
        TrainingConfig(**data)
    assert info.value.problems[0].startswith("training.epochs:")


# -- precedence ------------------------------------------------------------------------------------


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "run.yaml"
    # The file sets epochs and batch_size (over the preset) and seed (its own field).
    path.write_text("training:\n  epochs: 4\n  batch_size: 5\n  seed: 11\n", encoding="utf-8")
    return path


def test_defaults_when_nothing_is_given():
    assert resolve_config() == TrainingConfig()


def test_preset_over_defaults():
    cfg = resolve_config(preset="baseline")
    assert cfg.epochs == get_preset("baseline")["training"]["epochs"] != TrainingConfig().epochs
    assert cfg.checkpointing.enabled is True


def test_file_over_preset(config_file):
    cfg = resolve_config(config_file, "baseline")
    assert (cfg.epochs, cfg.batch_size, cfg.training.seed) == (4, 5, 11)
    # What the file does not set still comes from the preset.
    assert cfg.checkpointing.enabled is True
    assert cfg.scheduler.warmup_ratio == get_preset("baseline")["scheduler"]["warmup_ratio"]


def test_set_over_file(config_file):
    cfg = resolve_config(config_file, "baseline", ["training.epochs=6"])
    assert (cfg.epochs, cfg.batch_size, cfg.training.seed) == (6, 5, 11)
    assert cfg.checkpointing.enabled is True


def test_flags_over_set(config_file):
    cfg = resolve_config(
        config_file,
        "baseline",
        ["training.epochs=6", "training.batch_size=7"],
        {"training.epochs": 9, "training.batch_size": None, "training.learning_rate": 0.05},
    )
    assert cfg.epochs == 9  # flag beats --set
    assert cfg.batch_size == 7  # a flag that was not given (None) changes nothing
    assert cfg.learning_rate == 0.05
    assert cfg.training.seed == 11  # the file's own field survives all layers above it
    assert cfg.checkpointing.enabled is True  # so does the preset's


def test_resolve_config_reports_problems_of_every_layer(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("training:\n  batch_size: 0\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        resolve_config(path, None, ["training.epochs=0"])
    joined = "\n".join(info.value.problems)
    assert "training.batch_size" in joined and "training.epochs" in joined


def test_resolve_config_flat_file_keys(tmp_path):
    path = tmp_path / "flat.json"
    path.write_text('{"learning_rate": 0.02, "data": {"dataset": "digits"}}', encoding="utf-8")
    cfg = resolve_config(path, "low_memory")
    assert cfg.learning_rate == 0.02 and cfg.data.dataset == "digits" and cfg.batch_size == 2


def test_a_higher_layer_warmup_form_replaces_the_presets():
    from trainengine import TrainingConfigBuilder
    from trainengine.cli._common import resolve_config

    config = resolve_config(None, "baseline", ["scheduler.warmup_steps=10"])
    assert (config.scheduler.warmup_steps, config.scheduler.warmup_ratio) == (10, 0.0)
    config = TrainingConfigBuilder.baseline().with_training(warmup_steps=7).build()
    assert (config.scheduler.warmup_steps, config.scheduler.warmup_ratio) == (7, 0.0)
    with pytest.raises(ConfigError, match="both set"):
        resolve_config(None, "baseline", ["scheduler.warmup_steps=10", "scheduler.warmup_ratio=0.2"])


def test_unknown_dataset_is_caught_with_the_config():
    with pytest.raises(ConfigError) as info:
        TrainingConfig(data={"dataset": "digitz"})
    assert info.value.problems == [
        "data.dataset: unknown dataset 'digitz' — available: diabetes, digits, prm, pystdlib; did you mean 'digits'?"
    ]
