"""Aliases: promotion gates, forced promotions, the alias history, rollback (undo) and archiving.

Tests taking ``registry`` / ``versions`` run on SQLite and on a throwaway PostgreSQL database.
"""

from __future__ import annotations

import pytest

from trainengine.errors import RegistryError
from trainengine.registry import ModelRegistry, PromotionGateError, RegistryValueError

GATES = {"production": {"val_loss": "<= 0.40", "accuracy": ">= 0.9"}}


@pytest.fixture
def registry(open_registry):
    with open_registry("models.db", gates=GATES) as reg:
        yield reg


@pytest.fixture
def versions(registry, weights_pt):
    """m:1.0.0 .. m:4.0.0, all passing the production gates."""
    for major in range(1, 5):
        registry.register_model("m", f"{major}.0.0", weights_pt, metrics={"val_loss": 0.3, "accuracy": 0.95})
    return registry


def _holder(registry, alias, name="m"):
    return registry.get_model(name, alias=alias).model_id


# ------------------------------------------------------------------------------------------ gates
def test_failing_gates_are_refused_with_every_number(registry, weights_pt):
    registry.register_model("m", "1.0.0", weights_pt, metrics={"val_loss": 0.52})
    with pytest.raises(PromotionGateError) as info:
        registry.promote_model("m:1.0.0", "production")
    message = str(info.value)
    assert "val_loss = 0.52 fails the gate <= 0.4" in message
    assert "accuracy is missing (gate >= 0.9)" in message
    assert info.value.failures == ["val_loss = 0.52 fails the gate <= 0.4", "accuracy is missing (gate >= 0.9)"]
    assert isinstance(info.value, RegistryError)
    assert registry.get_model("m").aliases == () and registry.history("m") == []
    # Aliases without gates take anything.
    assert registry.promote_model("m:1.0.0", "staging").aliases == ("staging",)


@pytest.mark.parametrize(
    ("condition", "value", "passes"),
    [
        ("<= 0.4", 0.4, True),
        ("< 0.4", 0.4, False),
        (">= 0.9", 0.9, True),
        ("> 0.9", 0.9, False),
        ("== 3", 3.0, True),
        ("== 3", 3.5, False),
        (">=-1e-3", -0.001, True),
    ],
)
def test_gate_operators_bound_exactly(tmp_path, weights_pt, condition, value, passes):
    with ModelRegistry(tmp_path / "g.db", gates={"prod": {"score": condition}}) as reg:
        reg.register_model("m", "1.0.0", weights_pt, metrics={"score": value})
        if passes:
            reg.promote_model("m:1.0.0", "prod")
        else:
            with pytest.raises(PromotionGateError, match=f"score = {value!r} fails the gate"):
                reg.promote_model("m:1.0.0", "prod")


def test_gate_finds_slash_named_metrics(registry, weights_pt):
    # Checkpoints and runs record "val/loss"; gates usually say "val_loss".
    registry.register_model("m", "1.0.0", weights_pt, metrics={"val/loss": 0.7, "accuracy": 0.95})
    with pytest.raises(PromotionGateError, match=r"val_loss \(val/loss\) = 0.7 fails the gate <= 0.4"):
        registry.promote_model("m:1.0.0", "production")
    assert registry.check_gates("m:1.0.0", "production") == ["val_loss (val/loss) = 0.7 fails the gate <= 0.4"]
    assert registry.check_gates("m:1.0.0", "staging") == []


def test_force_overrides_gates_and_is_recorded(registry, weights_pt):
    registry.register_model("m", "1.0.0", weights_pt, metrics={"val_loss": 0.9, "accuracy": 0.5})
    rec = registry.promote_model("m:1.0.0", "production", force=True, reason="hotfix for incident 42")
    assert rec.aliases == ("production",)
    (event,) = registry.history("m", "production")
    assert event["forced"] is True and event["reason"] == "hotfix for incident 42" and event["action"] == "promote"
    assert event["details"]["gate_failures"] == [
        "val_loss = 0.9 fails the gate <= 0.4",
        "accuracy = 0.5 fails the gate >= 0.9",
    ]


@pytest.mark.parametrize(
    ("gates", "path"),
    [
        ({"production": {"val_loss": "=< 0.4"}}, "gates.production.val_loss"),
        ({"production": {"acc": ">= inf"}}, "gates.production.acc"),
        ({"../x": {"acc": ">= 1"}}, "gates.../x"),
        ({"production": ["acc >= 1"]}, "gates.production"),
    ],
)
def test_malformed_gates_are_refused_at_construction(tmp_path, gates, path):
    with pytest.raises(RegistryValueError, match=path.replace(".", r"\.")):
        ModelRegistry(tmp_path / "x.db", gates=gates)


# ------------------------------------------------------------------------------------------ promote
def test_promoting_moves_the_alias_and_keeps_one_holder(versions):
    versions.promote_model("m:1.0.0", "production")
    versions.promote_model("m:2.0.0", "production")
    assert _holder(versions, "production") == "m:2.0.0"
    assert versions.get_model("m", "1.0.0").aliases == ()
    assert versions.promote_model("m:2.0.0", "staging").aliases == ("production", "staging")
    # Promoting what an alias holds ("name@alias") moves another alias to it.
    versions.promote_model("m:3.0.0", "staging")
    assert versions.promote_model("m@staging", "production").model_id == "m:3.0.0"
    assert [(e["from_model"], e["to_model"]) for e in versions.history("m", "production")] == [
        (None, "m:1.0.0"),
        ("m:1.0.0", "m:2.0.0"),
        ("m:2.0.0", "m:3.0.0"),
    ]
    # Promoting the current holder again changes nothing and records nothing.
    versions.promote_model("m:3.0.0", "production")
    assert len(versions.history("m", "production")) == 3


def test_one_holder_per_alias_is_a_database_constraint(versions, sql_db):
    versions.promote_model("m:1.0.0", "production")
    path = sql_db("models.db")  # the database the registry fixture opened
    ((pk2,),) = sql_db.raw(path, "SELECT model_pk FROM registry_models WHERE version = '2.0.0'")
    with pytest.raises(sql_db.integrity_error):
        sql_db.raw(
            path,
            f"INSERT INTO registry_aliases (name, alias, model_pk, updated_at) VALUES ('m', 'production', {int(pk2)}, "
            "0)",
        )
    with pytest.raises(sql_db.integrity_error):
        sql_db.raw(
            path,
            "INSERT INTO registry_models (name, version, status, metrics_json, description, artifact_kind, "
            "artifact_path, "
            "artifact_in_store, artifact_files_json, artifact_sha256, created_at) "
            "VALUES ('m', '1.0.0', 'active', '{}', '', 'torch', 'x', true, '[]', 'x', 0)",
        )


def test_aliases_are_per_model_name(versions, weights_pt):
    versions.register_model("other", "1.0.0", weights_pt, metrics={"val_loss": 0.1, "accuracy": 0.99})
    versions.promote_model("m:1.0.0", "production")
    versions.promote_model("other:1.0.0", "production")
    assert _holder(versions, "production") == "m:1.0.0" and _holder(versions, "production", "other") == "other:1.0.0"
    with pytest.raises(RegistryValueError, match=r"alias 'production' belongs to several models \(m, other\).*name="):
        versions.get_model(tag="production")


def test_bad_promotion_targets(versions):
    with pytest.raises(RegistryValueError, match="invalid alias '../prod'"):
        versions.promote_model("m:1.0.0", "../prod")
    with pytest.raises(RegistryValueError, match="names no version"):
        versions.promote_model("m", "production")
    with pytest.raises(RegistryError, match="no version '9.0.0' of model 'm'"):
        versions.promote_model("m:9.0.0", "production")


# ------------------------------------------------------------------------------------------ rollback
def test_rollback_is_undo_and_goes_further_back(versions):
    for v in ("1.0.0", "2.0.0", "3.0.0"):
        versions.promote_model(f"m:{v}", "production")
    assert versions.rollback("m", "production").model_id == "m:2.0.0"
    assert versions.rollback("m", "production", reason="still bad").model_id == "m:1.0.0"  # back, not forth to 3.0.0
    assert _holder(versions, "production") == "m:1.0.0"
    with pytest.raises(
        RegistryError, match="nothing to roll back to: alias 'production' of model 'm' — m:1.0.0 is its first holder"
    ):
        versions.rollback("m", "production")
    events = versions.history("m", "production")
    assert [(e["action"], e["from_model"], e["to_model"]) for e in events] == [
        ("promote", None, "m:1.0.0"),
        ("promote", "m:1.0.0", "m:2.0.0"),
        ("promote", "m:2.0.0", "m:3.0.0"),
        ("rollback", "m:3.0.0", "m:2.0.0"),
        ("rollback", "m:2.0.0", "m:1.0.0"),
    ]
    assert events[-1]["reason"] == "still bad"
    # A new promotion after rollbacks starts a new branch: rolling it back returns to 1.0.0.
    versions.promote_model("m:4.0.0", "production")
    assert versions.rollback("m", "production").model_id == "m:1.0.0"


def test_rollback_returns_to_a_re_promoted_earlier_version_correctly(versions):
    for v in ("1.0.0", "2.0.0", "1.0.0"):
        versions.promote_model(f"m:{v}", "production")
    assert versions.rollback("m", "production").model_id == "m:2.0.0"
    assert versions.rollback("m", "production").model_id == "m:1.0.0"


def test_rollback_skips_archived_versions(versions):
    for v in ("1.0.0", "2.0.0", "3.0.0"):
        versions.promote_model(f"m:{v}", "production")
    versions.archive("m:2.0.0", reason="data leak")
    assert versions.rollback("m", "production").model_id == "m:1.0.0"


def test_archiving_the_holder_then_rollback_restores_the_previous_one(versions):
    versions.promote_model("m:1.0.0", "production")
    versions.promote_model("m:2.0.0", "production")
    versions.promote_model("m:2.0.0", "staging")
    archived = versions.archive("m:2.0.0", reason="regression")
    assert archived.status == "archived" and archived.aliases == ()
    with pytest.raises(RegistryError, match="has no alias 'production'"):
        versions.get_model("m", alias="production")
    archive_events = [e for e in versions.history("m") if e["action"] == "archive"]
    assert sorted(e["alias"] for e in archive_events) == ["production", "staging"]
    assert all(
        e["from_model"] == "m:2.0.0" and e["to_model"] is None and e["reason"] == "regression" for e in archive_events
    )
    assert versions.rollback("m", "production").model_id == "m:1.0.0"
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        versions.rollback("m", "staging")
    with pytest.raises(RegistryError, match="cannot promote m:2.0.0 to 'production': it is archived"):
        versions.promote_model("m:2.0.0", "production", force=True)
    assert versions.archive("m:2.0.0").status == "archived"  # twice: a no-op


def test_archiving_a_version_without_aliases_is_recorded(versions):
    versions.archive("m:4.0.0")
    (event,) = versions.history("m")
    assert (event["alias"], event["action"], event["from_model"]) == (None, "archive", "m:4.0.0")


def test_history_of_unknown_model_lists_names(versions):
    with pytest.raises(RegistryError, match="no model named 'n'.*registered: m"):
        versions.history("n")
