"""Presets, the fluent TrainingConfigBuilder, unknown-key suggestions and flat accessors."""

from __future__ import annotations

import pytest

from trainengine.config import PRESETS, TrainingConfig, TrainingConfigBuilder, get_preset
from trainengine.errors import ConfigError

DEFAULTS = TrainingConfig()
PRESET_NAMES = ["quick_prototype", "baseline", "production", "low_memory", "prm_lora"]


# -- presets ---------------------------------------------------------------------------------------


def test_the_presets_are_registered():
    assert set(PRESETS) == set(PRESET_NAMES)


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_every_preset_builds_and_validates(name):
    builder = getattr(TrainingConfigBuilder, name)()
    cfg = builder.build()
    assert isinstance(cfg, TrainingConfig)
    assert cfg.validate() is cfg
    # The classmethod and the registry agree.
    assert TrainingConfigBuilder.from_preset(name).build() == cfg
    # Every preset changes something: it is not just the defaults under a name.
    assert cfg != DEFAULTS


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_every_preset_also_builds_with_its_hyphenated_name(name):
    assert (
        TrainingConfigBuilder.from_preset(name.replace("_", "-")).build()
        == getattr(TrainingConfigBuilder, name)().build()
    )


def test_quick_prototype_is_short_small_and_cheap():
    cfg = TrainingConfigBuilder.quick_prototype().build()
    assert cfg.epochs == 3
    assert cfg.batch_size < DEFAULTS.batch_size
    assert cfg.checkpointing.enabled is False
    assert cfg.export.enabled is False
    assert cfg.monitoring.gradient_monitor is False
    assert cfg.training.compile is False


def test_baseline_has_ten_epochs_and_checkpointing():
    cfg = TrainingConfigBuilder.baseline().build()
    assert cfg.epochs == 10
    assert cfg.checkpointing.enabled is True
    assert cfg.checkpointing.save_every_n_epochs == 1
    assert cfg.training.max_grad_norm is not None


def test_production_has_twenty_epochs_full_validation_and_export():
    cfg = TrainingConfigBuilder.production().build()
    assert cfg.epochs == 20
    assert cfg.export.enabled is True
    assert cfg.training.eval_every_epoch is True
    assert cfg.data.max_val_samples is None  # full validation set
    assert cfg.checkpointing.enabled is True  # derived from baseline
    assert cfg.deterministic is False


def test_production_with_deterministic_true():
    cfg = TrainingConfigBuilder.production().with_training(deterministic=True).build()
    assert cfg.deterministic is True
    assert cfg.training.deterministic is True
    # The rest of the preset is untouched.
    assert cfg.epochs == 20 and cfg.export.enabled is True


def test_low_memory_is_batch_two_times_accumulation_eight_with_shorter_sequences():
    cfg = TrainingConfigBuilder.low_memory().build()
    assert cfg.batch_size == 2
    assert cfg.gradient_accumulation_steps == 8
    assert cfg.batch_size * cfg.gradient_accumulation_steps == 16
    assert cfg.data.max_length < DEFAULTS.data.max_length
    assert cfg.data.max_length < TrainingConfigBuilder.baseline().build().data.max_length


def test_presets_are_fresh_each_time():
    first = get_preset("baseline")
    first["training"]["epochs"] = 99
    assert get_preset("baseline")["training"]["epochs"] == 10
    b = TrainingConfigBuilder.baseline()
    b.with_training(epochs=2)
    assert TrainingConfigBuilder.baseline().build().epochs == 10


def test_unknown_preset_lists_the_available_ones():
    with pytest.raises(ConfigError) as info:
        get_preset("prodution")
    msg = str(info.value)
    assert "prodution" in msg
    for name in PRESET_NAMES:
        assert name in msg
    with pytest.raises(ConfigError):
        TrainingConfigBuilder.from_preset("nope")


# -- fluent setters --------------------------------------------------------------------------------


def test_fluent_setters_return_the_builder_and_land_in_their_sections():
    b = TrainingConfigBuilder()
    assert b.with_training(epochs=2) is b
    cfg = (
        b.with_optimizer(name="sgd", momentum=0.8)
        .with_scheduler(name="linear", warmup_steps=3)
        .with_checkpointing(save_every_n_steps=7)
        .with_tracking(experiment_name="exp1")
        .with_data(dataset="digits")
        .with_model(architecture="mlp", hidden_dims=[16])
        .with_lora(lora_r=4)
        .with_distributed(strategy="none")
        .with_export(formats=["onnx"])
        .with_monitoring(gradient_check_interval=3)
        .build()
    )
    assert cfg.epochs == 2
    assert (cfg.optimizer.name, cfg.optimizer.momentum) == ("sgd", 0.8)
    assert (cfg.scheduler.name, cfg.scheduler.warmup_steps) == ("linear", 3)
    assert cfg.checkpointing.save_every_n_steps == 7
    assert cfg.tracking.experiment_name == "exp1"
    assert cfg.data.dataset == "digits"
    assert cfg.model.hidden_dims == [16]
    assert cfg.lora.lora_r == 4
    assert cfg.distributed.strategy == "none"
    assert cfg.export.formats == ["onnx"]
    assert cfg.monitoring.gradient_check_interval == 3


def test_with_checkpointing_turns_checkpoints_on_unless_told_otherwise():
    assert TrainingConfigBuilder().with_checkpointing(keep_last_n=2).build().checkpointing.enabled is True
    off = TrainingConfigBuilder.baseline().with_checkpointing(enabled=False).build()
    assert off.checkpointing.enabled is False


def test_later_setters_override_earlier_ones_and_the_preset():
    cfg = TrainingConfigBuilder.baseline().with_training(epochs=4).with_training(epochs=6, batch_size=8).build()
    assert (cfg.epochs, cfg.batch_size) == (6, 8)
    assert cfg.learning_rate == get_preset("baseline")["training"]["learning_rate"]


def test_seed_example_builder_flow():
    cfg = TrainingConfigBuilder.baseline().with_training(learning_rate=1e-4, batch_size=8, epochs=20).build()
    assert (cfg.learning_rate, cfg.batch_size, cfg.epochs) == (1e-4, 8, 20)
    assert cfg.checkpointing.enabled is True


def test_with_optimizer_gradient_accumulation_lands_in_training():
    cfg = TrainingConfigBuilder.baseline().with_optimizer(gradient_accumulation_steps=8, weight_decay=0.05).build()
    assert cfg.training.gradient_accumulation_steps == 8
    assert cfg.gradient_accumulation_steps == 8
    assert cfg.optimizer.weight_decay == 0.05
    assert "gradient_accumulation_steps" not in type(cfg.optimizer).model_fields


def test_cross_section_routes_are_explicit():
    cfg = (
        TrainingConfigBuilder()
        .with_training(weight_decay=0.2, warmup_steps=4)
        .with_optimizer(max_grad_norm=0.5)
        .build()
    )
    assert cfg.optimizer.weight_decay == 0.2
    assert cfg.scheduler.warmup_steps == 4
    assert cfg.training.max_grad_norm == 0.5
    # Any other misplaced key is still an error.
    with pytest.raises(ConfigError) as info:
        TrainingConfigBuilder().with_optimizer(epochs=3)
    assert "optimizer.epochs" in info.value.problems[0]


def test_unknown_training_key_suggests_the_right_one_exactly():
    with pytest.raises(ConfigError) as info:
        TrainingConfigBuilder.baseline().with_training(learnin_rate=1e-3)
    assert info.value.problems == ["unknown field training.learnin_rate — did you mean training.learning_rate?"]
    assert "unknown field training.learnin_rate — did you mean training.learning_rate?" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_every_unknown_key_of_one_call_is_reported():
    with pytest.raises(ConfigError) as info:
        TrainingConfigBuilder().with_training(learnin_rate=1e-3, bach_size=4, epochs=2)
    assert len(info.value.problems) == 2
    assert any("did you mean training.batch_size?" in p for p in info.value.problems)


def test_common_aliases_from_other_tools_are_suggested():
    with pytest.raises(ConfigError) as info:
        TrainingConfigBuilder().with_training(lr=1e-3, num_epochs=3)
    problems = "\n".join(info.value.problems)
    assert "did you mean training.learning_rate?" in problems
    assert "did you mean training.epochs?" in problems


def test_a_hopeless_unknown_key_lists_the_sections_fields():
    with pytest.raises(ConfigError) as info:
        TrainingConfigBuilder().with_scheduler(zzzzzz=1)
    msg = info.value.problems[0]
    assert msg.startswith("unknown field scheduler.zzzzzz")
    assert "warmup_steps" in msg and "min_lr_ratio" in msg


def test_unknown_section_lists_the_sections():
    with pytest.raises(ConfigError) as info:
        TrainingConfigBuilder().with_section("trainig", epochs=1)
    assert "trainig" in str(info.value) and "training" in str(info.value) and "optimizer" in str(info.value)


def test_build_validates_everything():
    b = (
        TrainingConfigBuilder()
        .with_training(learning_rate=-1, max_steps=5)
        .with_scheduler(warmup_steps=2)
        .with_model(n_heads=0)
    )
    with pytest.raises(ConfigError) as info:
        b.build()
    joined = "\n".join(info.value.problems)
    assert "training.learning_rate" in joined and "model.n_heads" in joined


def test_builder_state_does_not_leak_into_built_configs():
    b = TrainingConfigBuilder.baseline().with_model(hidden_dims=[8, 8])
    cfg = b.build()
    b.with_training(epochs=2)
    cfg.model.hidden_dims.append(99)
    again = b.build()
    assert cfg.epochs == 10 and again.epochs == 2
    assert again.model.hidden_dims == [8, 8]


def test_from_config_and_with_overrides():
    base = TrainingConfigBuilder.low_memory().build()
    cfg = (
        TrainingConfigBuilder.from_config(base)
        .with_overrides({"learning_rate": 3e-4, "data": {"max_length": 32}})
        .build()
    )
    assert cfg.learning_rate == 3e-4
    assert cfg.data.max_length == 32
    assert cfg.gradient_accumulation_steps == 8  # kept from the source config
    assert TrainingConfigBuilder.from_config(base).build() == base
    with pytest.raises(ConfigError):
        TrainingConfigBuilder().with_overrides({"learnin_rate": 1})


def test_from_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("learning_rate: 0.02\nmodel:\n  hidden_dims: [4]\n", encoding="utf-8")
    cfg = TrainingConfigBuilder.from_file(path).with_training(epochs=2).build()
    assert (cfg.learning_rate, cfg.epochs, cfg.model.hidden_dims) == (0.02, 2, [4])


# -- flat and nested accessors -----------------------------------------------------------------------


def test_seed_flat_accessors_read_from_their_sections():
    cfg = (
        TrainingConfigBuilder()
        .with_training(
            learning_rate=2e-4, batch_size=12, epochs=7, gradient_accumulation_steps=3, deterministic=True, max_steps=40
        )
        .with_data(max_length=48)
        .build()
    )
    assert cfg.learning_rate == cfg.training.learning_rate == 2e-4
    assert cfg.batch_size == cfg.training.batch_size == 12
    assert cfg.epochs == cfg.training.epochs == 7
    assert cfg.gradient_accumulation_steps == cfg.training.gradient_accumulation_steps == 3
    assert cfg.deterministic is cfg.training.deterministic is True
    assert cfg.training.max_steps == 40
    assert cfg.data.max_length == 48


def test_flat_constructor_routes_keys_to_their_sections():
    cfg = TrainingConfig(learning_rate=3e-4, batch_size=16, max_length=64, weight_decay=0.0, hidden_dims=[32])
    assert cfg.training.learning_rate == 3e-4
    assert cfg.training.batch_size == 16
    assert cfg.data.max_length == 64
    assert cfg.optimizer.weight_decay == 0.0
    assert cfg.model.hidden_dims == [32]


def test_flat_and_nested_keys_mix():
    cfg = TrainingConfig(training={"epochs": 5}, learning_rate=0.01)
    assert (cfg.epochs, cfg.learning_rate) == (5, 0.01)


def test_flat_constructor_with_unknown_key_suggests():
    with pytest.raises(ConfigError) as info:
        TrainingConfig(learnin_rate=1e-3)
    assert info.value.problems == ["unknown field learnin_rate — did you mean training.learning_rate?"]


def test_flat_constructor_with_unknown_nested_key_suggests():
    with pytest.raises(ConfigError) as info:
        TrainingConfig(training={"learnin_rate": 1e-3})
    assert info.value.problems == ["unknown field training.learnin_rate — did you mean training.learning_rate?"]


def test_ambiguous_flat_key_names_every_section():
    with pytest.raises(ConfigError) as info:
        TrainingConfig(name="sgd")
    msg = info.value.problems[0]
    assert "ambiguous" in msg and "optimizer.name" in msg and "scheduler.name" in msg
    with pytest.raises(ConfigError) as info:
        TrainingConfig(enabled=True)
    for path in ("checkpointing.enabled", "lora.enabled", "export.enabled"):
        assert path in info.value.problems[0]


def test_ambiguous_flat_read_is_an_attribute_error_naming_the_sections():
    cfg = TrainingConfig()
    with pytest.raises(AttributeError, match="optimizer.name"):
        _ = cfg.name
    with pytest.raises(AttributeError):
        _ = cfg.no_such_thing
    assert not hasattr(cfg, "enabled")


def test_with_overrides_takes_dotted_paths_as_set_writes_them():
    config = (
        TrainingConfigBuilder()
        .with_overrides({"training.fused_loss": "off", "optimizer.weight_decay": 0.2, "learning_rate": 0.1})
        .build()
    )
    assert config.training.fused_loss == "off" and config.optimizer.weight_decay == 0.2
    assert config.training.learning_rate == 0.1
    # A typo in the field is named with the closest real one (it used to suggest the typo's own spelling).
    with pytest.raises(ConfigError, match="unknown field training.fused_los — did you mean training.fused_loss"):
        TrainingConfigBuilder().with_overrides({"training.fused_los": "off"}).build()
