"""The ``registry`` config section: validated gates, builder, files, and ModelRegistry.from_config."""

from __future__ import annotations

import pytest

from trainengine.config import SECTION_TYPES, RegistrySection, TrainingConfig, TrainingConfigBuilder
from trainengine.errors import ConfigError
from trainengine.registry import ModelRegistry, PromotionGateError


def test_defaults_and_explain():
    cfg = TrainingConfig()
    assert SECTION_TYPES["registry"] is RegistrySection
    assert (cfg.registry.url, cfg.registry.artifact_root, cfg.registry.gates) == ("models.db", None, {})
    paths = {row["path"] for row in TrainingConfig.explain()}
    assert {"registry.url", "registry.artifact_root", "registry.gates"} <= paths


def test_bad_gates_are_config_errors_naming_the_dotted_path():
    with pytest.raises(ConfigError) as info:
        TrainingConfig(
            registry={"gates": {"production": {"val_loss": "<< 0.4", "accuracy": ">= 0.9"}, "staging": {"f1": "high"}}}
        )
    problems = info.value.problems
    assert len(problems) == 2
    assert problems[0].startswith("registry.gates.production.val_loss: invalid gate '<< 0.4'")
    assert problems[1].startswith("registry.gates.staging.f1: invalid gate 'high'")
    cfg = TrainingConfig()
    with pytest.raises(ConfigError) as info:
        cfg.registry.gates = {"production": {"val_loss": "about 0.4"}}
    assert info.value.problems == [
        "registry.gates.production.val_loss: invalid gate 'about 0.4': write an operator (<=, <, >=, >, ==) and a "
        "finite number, "
        "e.g. '<= 0.40' or '>= 0.9'"
    ]
    assert cfg.registry.gates == {}  # a refused assignment changes nothing
    with pytest.raises(ConfigError, match=r"registry\.gates\.\.\./x: invalid alias"):
        TrainingConfig(registry={"gates": {"../x": {"acc": ">= 1"}}})
    with pytest.raises(ConfigError, match="registry.unknown"):
        TrainingConfig(registry={"unknown": 1})


def test_builder_and_file_round_trip(tmp_path):
    cfg = (
        TrainingConfigBuilder.baseline()
        .with_registry(url=str(tmp_path / "m.db"), gates={"production": {"val_loss": "<= 0.4"}})
        .build()
    )
    path = cfg.save(tmp_path / "cfg.yaml")
    loaded = TrainingConfig.load(path)
    assert loaded.registry == cfg.registry and loaded.registry.gates == {"production": {"val_loss": "<= 0.4"}}


def test_from_config_applies_url_artifact_root_and_gates(tmp_path, weights_pt):
    cfg = TrainingConfig(
        registry={
            "url": str(tmp_path / "team.db"),
            "artifact_root": str(tmp_path / "store"),
            "gates": {"production": {"val_loss": "<= 0.4"}},
        }
    )
    for source in (cfg, cfg.registry, cfg.to_dict(), cfg.to_dict()["registry"]):
        with ModelRegistry.from_config(source) as reg:
            assert reg.artifact_root == (tmp_path / "store").resolve() and reg.gates == {
                "production": {"val_loss": "<= 0.4"}
            }
    with ModelRegistry.from_config(cfg) as reg:
        reg.register_model("m", "1.0.0", weights_pt, metrics={"val_loss": 0.5})
        with pytest.raises(PromotionGateError, match="val_loss = 0.5 fails the gate <= 0.4"):
            reg.promote_model("m:1.0.0", "production")
    assert (tmp_path / "store" / "m" / "1.0.0" / "weights.pt").is_file()
    with ModelRegistry.from_config(cfg, gates=None) as reg:  # keyword arguments win over the config
        reg.promote_model("m:1.0.0", "production")
