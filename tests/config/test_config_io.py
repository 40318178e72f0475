"""save/load/to_dict: JSON and YAML round trips, timestamped default path, clear file errors, atomic writes."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from trainengine.config import TrainingConfig, TrainingConfigBuilder, read_config_file
from trainengine.errors import ConfigError


def _rich_config() -> TrainingConfig:
    """Non-default values in many sections, including lists, None and floats that YAML mangles easily."""
    return (
        TrainingConfigBuilder.production()
        .with_training(
            learning_rate=5e-4, batch_size=8, max_steps=123, deterministic=True, monitor="val/loss", max_grad_norm=None
        )
        .with_optimizer(eps=1e-7, name="adam")
        .with_scheduler(warmup_steps=10, warmup_ratio=0.0, min_lr_ratio=0.05)
        .with_data(dataset="pystdlib", max_length=64, max_train_samples=1000)
        .with_model(architecture="gpt", d_model=96, n_heads=3, hidden_dims=[7, 9])
        .with_tracking(tags=["a", "b c"], notes="yes: a note", experiment_name="e.1")
        .with_export(formats=["onnx", "pytorch"])
        .build()
    )


def _tmp_leftovers(folder) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".")]


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml", ".YAML"])
def test_save_and_load_round_trip_to_an_equal_config(tmp_path, suffix):
    cfg = _rich_config()
    path = tmp_path / f"cfg{suffix}"
    returned = cfg.save(path)
    assert returned == path and path.is_file()
    loaded = TrainingConfig.load(path)
    assert loaded == cfg
    assert loaded.to_dict() == cfg.to_dict()
    assert _tmp_leftovers(tmp_path) == []


def test_the_file_format_follows_the_extension(tmp_path):
    cfg = _rich_config()
    as_json = json.loads(cfg.save(tmp_path / "c.json").read_text(encoding="utf-8"))
    as_yaml = yaml.safe_load(cfg.save(tmp_path / "c.yaml").read_text(encoding="utf-8"))
    assert as_json == cfg.to_dict() == as_yaml
    # YAML is not JSON-with-a-different-name: it is the block style people edit by hand.
    assert not (tmp_path / "c.yaml").read_text(encoding="utf-8").lstrip().startswith("{")


def test_save_creates_missing_parent_folders(tmp_path):
    path = tmp_path / "a" / "b" / "c.yaml"
    TrainingConfig().save(path)
    assert TrainingConfig.load(path) == TrainingConfig()


def test_save_without_path_writes_a_timestamped_file_under_configs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = _rich_config()
    path = cfg.save()
    assert path.parent == type(path)("configs")
    assert path.suffix in (".json", ".yaml", ".yml")
    assert any(ch.isdigit() for ch in path.stem)  # a timestamp is in the name
    assert (tmp_path / path).is_file()
    assert TrainingConfig.load(path) == cfg
    assert _tmp_leftovers(tmp_path / "configs") == []


def test_save_twice_without_path_does_not_overwrite(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = TrainingConfig(epochs=1).save()
    b = TrainingConfig(epochs=2).save()
    assert a != b
    assert TrainingConfig.load(a).epochs == 1 and TrainingConfig.load(b).epochs == 2


@pytest.mark.parametrize("name", ["c.txt", "c.toml", "c"])
def test_save_with_an_unknown_extension_fails_and_writes_nothing(tmp_path, name):
    with pytest.raises(ConfigError) as info:
        TrainingConfig().save(tmp_path / name)
    msg = str(info.value)
    assert ".json" in msg and ".yaml" in msg
    assert list(tmp_path.iterdir()) == []


def test_save_overwrites_atomically_and_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    TrainingConfig(epochs=1).save(path)
    TrainingConfig(epochs=2).save(path)
    assert TrainingConfig.load(path).epochs == 2

    import trainengine._io as io_mod

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(io_mod.os, "replace", broken_replace)
    with pytest.raises(OSError):
        TrainingConfig(epochs=3).save(path)
    monkeypatch.undo()
    # The old file is intact and the temporary file was cleaned up.
    assert TrainingConfig.load(path).epochs == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


def test_to_dict_is_plain_json_and_round_trips_through_from_dict():
    cfg = _rich_config()
    data = cfg.to_dict()
    text = json.dumps(data)  # no custom encoder needed
    assert set(data) == {
        "training",
        "optimizer",
        "scheduler",
        "checkpointing",
        "tracking",
        "data",
        "model",
        "lora",
        "distributed",
        "export",
        "monitoring",
        "registry",
        "task",
        "curriculum",
        "transfer",
        "plugins",
    }
    assert data["training"]["learning_rate"] == 5e-4
    assert TrainingConfig.from_dict(json.loads(text)) == cfg
    # Mutating the dict does not touch the config.
    data["training"]["epochs"] = 999
    assert cfg.epochs != 999


def test_from_dict_refuses_a_non_mapping():
    with pytest.raises(ConfigError, match="mapping"):
        TrainingConfig.from_dict([1, 2])  # type: ignore[arg-type]  # the wrong type is the point of the test


# -- load errors -----------------------------------------------------------------------------------


def test_load_missing_file_names_it(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        TrainingConfig.load(path)
    assert "not found" in str(info.value) and str(path) in str(info.value)


def test_load_invalid_yaml_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("training:\n  epochs: [1, 2\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        TrainingConfig.load(path)
    assert str(path) in str(info.value) and "YAML" in str(info.value)


def test_load_invalid_json_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"training": {', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        TrainingConfig.load(path)
    assert str(path) in str(info.value) and "JSON" in str(info.value)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_load_non_mapping_names_the_file(tmp_path, text):
    path = tmp_path / "list.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        TrainingConfig.load(path)
    assert str(path) in str(info.value) and "mapping" in str(info.value)


def test_load_invalid_values_names_the_file_and_every_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("training:\n  learning_rate: -1\n  batch_size: 0\nmodel:\n  dropout: 2\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        TrainingConfig.load(path)
    err = info.value
    assert str(path) in str(err)
    assert len(err.problems) == 3
    joined = "\n".join(err.problems)
    for field in ("training.learning_rate", "training.batch_size", "model.dropout"):
        assert field in joined


def test_load_unknown_keys_suggests_and_names_the_file(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("training:\n  learnin_rate: 0.1\nschedular:\n  name: linear\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        TrainingConfig.load(path)
    assert str(path) in str(info.value)
    assert "unknown field training.learnin_rate — did you mean training.learning_rate?" in info.value.problems
    assert any("schedular" in p for p in info.value.problems)


def test_load_cross_field_problem_names_the_file(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"model": {"d_model": 100, "n_heads": 3}}), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        TrainingConfig.load(path)
    assert str(path) in str(info.value) and "model.d_model" in str(info.value)


def test_load_accepts_flat_keys_and_an_empty_file(tmp_path):
    flat = tmp_path / "flat.yaml"
    flat.write_text("learning_rate: 0.01\nbatch_size: 4\n", encoding="utf-8")
    cfg = TrainingConfig.load(flat)
    assert (cfg.training.learning_rate, cfg.training.batch_size) == (0.01, 4)
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    assert TrainingConfig.load(empty) == TrainingConfig()


def test_load_refuses_unknown_extensions(tmp_path):
    path = tmp_path / "c.ini"
    path.write_text("[training]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\.json, \.yaml or \.yml"):
        TrainingConfig.load(path)


def test_read_config_file_returns_the_raw_mapping(tmp_path):
    path = tmp_path / "c.yml"
    path.write_text("training:\n  epochs: 4\n", encoding="utf-8")
    assert read_config_file(path) == {"training": {"epochs": 4}}


@pytest.mark.skipif(os.name == "nt", reason="permissions are not enforced")
def test_load_unreadable_file_is_a_config_error(tmp_path, permissions_enforced):
    path = tmp_path / "secret.yaml"
    path.write_text("training: {}\n", encoding="utf-8")
    path.chmod(0)
    try:
        with permissions_enforced(), pytest.raises(ConfigError, match="cannot read"):  # binds root too
            TrainingConfig.load(path)
    finally:
        path.chmod(0o600)
