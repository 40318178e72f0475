"""Significance-gated promotion: the registry promotes only when a paired bootstrap says the
candidate beats the alias's holder on the same data; refusals name both intervals and the p-value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from trainengine.cli.main import main
from trainengine.errors import RegistryError
from trainengine.evaluation import SignificanceCheck
from trainengine.registry import ModelRegistry, PromotionGateError
from trainengine.tasks import TaskSpec

TASK = TaskSpec.classification("teacher", 3)


@pytest.fixture
def teacher_registry(tmp_path, make_mlp, mlp_spec):
    """A registry with t:1.0.0 (a random MLP), t:1.1.0 (the teacher: right on every example) and
    t:1.2.0 (the teacher's weights again), plus data labelled by the teacher."""
    x = torch.randn(300, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        labels = make_mlp(0)(x).argmax(dim=1)
    for seed, version in ((1, "1.0.0"), (0, "1.1.0"), (0, "1.2.0")):
        torch.save(make_mlp(seed).state_dict(), tmp_path / f"{version}.pt")
    reg = ModelRegistry(tmp_path / "models.db", require_significant={"production": {"n_bootstrap": 300}})
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        reg.register_model("t", version, tmp_path / f"{version}.pt", model_config=mlp_spec)
    yield reg, TensorDataset(x, labels)
    reg.close()


def test_first_holder_needs_no_test_and_a_better_candidate_is_promoted(teacher_registry) -> None:
    reg, data = teacher_registry
    # No holder yet: nothing to beat, promoted without a test.
    assert reg.promote_model("t:1.0.0", "production").aliases == ("production",)
    check = SignificanceCheck(data=data, task_spec=TASK)
    assert reg.promote_model("t:1.1.0", "production", significance=check).model_id == "t:1.1.0"
    [result] = check.results
    assert result.significant and result.candidate == "t:1.1.0" and result.holder == "t:1.0.0"
    assert result.test.candidate.n_bootstrap == 300  # the alias's rule filled what the check left open
    event = reg.history("t", "production")[-1]
    assert (event["from_model"], event["to_model"], event["forced"]) == ("t:1.0.0", "t:1.1.0", False)
    assert event["details"]["significance"] == result.to_dict()


def test_same_weights_are_refused_with_both_intervals_and_the_p_value(teacher_registry) -> None:
    reg, data = teacher_registry
    reg.promote_model("t:1.1.0", "production")
    check = SignificanceCheck(data=data, task_spec=TASK)
    with pytest.raises(PromotionGateError) as err:
        reg.promote_model("t:1.2.0", "production", significance=check)
    message = str(err.value)
    t = check.results[-1].test
    assert message.startswith(
        "cannot promote t:1.2.0 to 'production': t:1.2.0 is not significantly better than t:1.1.0"
    )
    assert f"candidate {t.candidate}" in message and f"holder {t.baseline}" in message and "p = 1" in message
    assert reg.get_model("t", alias="production").model_id == "t:1.1.0"  # nothing moved
    assert [e["to_model"] for e in reg.history("t", "production")] == ["t:1.1.0"]


def test_worse_candidate_is_refused_and_force_promotes_it_with_the_verdict_recorded(teacher_registry) -> None:
    reg, data = teacher_registry
    reg.promote_model("t:1.1.0", "production")
    check = SignificanceCheck(data=data, task_spec=TASK)
    with pytest.raises(PromotionGateError, match=r"t:1.0.0 is not significantly better than t:1.1.0"):
        reg.promote_model("t:1.0.0", "production", significance=check)
    assert reg.promote_model("t:1.0.0", "production", significance=check, force=True, reason="rollout test")
    event = reg.history("t", "production")[-1]
    assert event["forced"] and event["details"]["significance"]["significant"] is False
    assert event["details"]["significance"]["delta"] < 0


def test_an_alias_with_a_rule_refuses_a_promotion_without_a_test(teacher_registry) -> None:
    reg, _ = teacher_registry
    reg.promote_model("t:1.0.0", "production")
    with pytest.raises(
        PromotionGateError,
        match=r"requires a significant improvement over its holder t:1.0.0.*"
        r"--require-significant",
    ):
        reg.promote_model("t:1.1.0", "production")
    # Aliases without a rule promote as before; force overrides the rule.
    assert reg.promote_model("t:1.1.0", "staging").model_id == "t:1.1.0"
    assert reg.promote_model("t:1.1.0", "production", force=True).model_id == "t:1.1.0"


def test_gates_are_checked_before_the_evaluation(tmp_path, make_mlp, mlp_spec) -> None:
    torch.save(make_mlp(0).state_dict(), tmp_path / "w.pt")
    calls: list[str] = []

    def never_called(candidate, holder, rule):
        calls.append(candidate.model_id)
        raise AssertionError("the test ran although a gate failed")

    with ModelRegistry(tmp_path / "models.db", gates={"production": {"val_loss": "<= 0.4"}}) as reg:
        reg.register_model("t", "1.0.0", tmp_path / "w.pt", model_config=mlp_spec, metrics={"val_loss": 0.3})
        reg.register_model("t", "1.1.0", tmp_path / "w.pt", model_config=mlp_spec, metrics={"val_loss": 0.5})
        reg.promote_model("t:1.0.0", "production")
        with pytest.raises(PromotionGateError, match="val_loss = 0.5 fails the gate <= 0.4"):
            reg.promote_model("t:1.1.0", "production", significance=never_called)
    assert calls == []


def test_a_holder_change_during_the_test_refuses_the_promotion(teacher_registry) -> None:
    reg, data = teacher_registry
    reg.promote_model("t:1.0.0", "production")
    check = SignificanceCheck(data=data, task_spec=TASK)

    def racing(candidate, holder, rule):
        reg.promote_model("t:1.2.0", "production", force=True)  # another user promotes meanwhile
        return check(candidate, holder, rule)

    with pytest.raises(RegistryError, match="the alias changed hands while the significance test ran"):
        reg.promote_model("t:1.1.0", "production", significance=racing)
    assert reg.get_model("t", alias="production").model_id == "t:1.2.0"


def test_from_config_and_invalid_rules(tmp_path) -> None:
    from trainengine.config import TrainingConfig
    from trainengine.registry import RegistryValueError

    cfg = TrainingConfig(
        registry={"url": str(tmp_path / "m.db"), "require_significant": {"production": {"confidence": 0.99}}}
    )
    with ModelRegistry.from_config(cfg) as reg:
        rule = reg.significance_rule("production")
        assert rule is not None and (rule.metric, rule.confidence, rule.n_bootstrap) == (None, 0.99, 1000)
        assert reg.significance_rule("staging") is None
    with pytest.raises(RegistryValueError, match=r"require_significant.production.n_bootstrap: must be a whole"):
        ModelRegistry(tmp_path / "x.db", require_significant={"production": {"n_bootstrap": 5}})


# ---------------------------------------------------------------- end to end: real runs, the CLI
@pytest.fixture(scope="module")
def better_checkpoint(tmp_path_factory) -> Path:
    """The `trained` fixture's config trained for 60 steps at lr 0.01 (val accuracy ~0.6 vs ~0.1)."""
    from trainengine.cli._train import run_training
    from trainengine.config import TrainingConfigBuilder

    root = tmp_path_factory.mktemp("better")
    config = (
        TrainingConfigBuilder.quick_prototype()
        .with_data(dataset="digits", max_train_samples=200, max_val_samples=100)
        .with_model(architecture="mlp", hidden_dims=[16])
        .with_training(max_steps=60, device="cpu", learning_rate=0.01)
        .with_checkpointing(checkpoint_dir=str(root / "ck"), save_every_n_steps=60)
        .with_tracking(output_dir=str(root / "runs"), progress="off", experiment_db=False)
        .build()
    )
    run_training(config)
    return sorted((root / "ck").glob("ckpt-*"))[-1]


def _cli(*args: str) -> int:
    return main(["registry", *args])


@pytest.mark.slow
def test_cli_require_significant_on_the_candidates_validation_data(
    tmp_path, monkeypatch, capsys, trained, better_checkpoint
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRAINENGINE_REGISTRY", raising=False)
    monkeypatch.delenv("TRAINENGINE_REGISTRY_ARTIFACTS", raising=False)
    for version, path in (("1.0.0", trained.checkpoint), ("1.1.0", trained.checkpoint), ("2.0.0", better_checkpoint)):
        assert _cli("register", "digits", version, "--checkpoint", str(path)) == 0
    assert _cli("promote", "digits:1.0.0", "production", "--require-significant") == 0
    out = capsys.readouterr().out
    assert "production -> digits:1.0.0" in out and "promoted without a significance test" in out

    # The same weights again: refused, exit 2, one line with both intervals and the p-value.
    assert _cli("promote", "digits:1.1.0", "production", "--require-significant", "--n-bootstrap", "300") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "digits:1.1.0 is not significantly better than digits:1.0.0 at 95% confidence on accuracy" in err
    assert "n = 100" in err and "candidate " in err and "holder " in err and "p = 1" in err

    # A better-trained version, compared on its own validation split (digits, the run's seed).
    assert _cli("promote", "digits:2.0.0", "production", "--require-significant", "--confidence", "0.99") == 0
    out = capsys.readouterr().out
    assert out.startswith("production -> digits:2.0.0 (was digits:1.0.0)")
    assert "digits:2.0.0 is significantly better than digits:1.0.0 at 99% confidence on accuracy" in out
    with ModelRegistry("models.db", read_only=True) as reg:
        details = reg.history("digits", "production")[-1]["details"]["significance"]
    assert details["significant"] and details["confidence"] == 0.99 and details["n"] == 100
    assert json.dumps(details)


def test_cli_significance_options_need_the_flag(tmp_path, monkeypatch, capsys, weights_pt, mlp_spec) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRAINENGINE_REGISTRY", raising=False)
    with ModelRegistry("models.db") as reg:
        reg.register_model("t", "1.0.0", weights_pt, model_config=mlp_spec)
    assert _cli("promote", "t:1.0.0", "production", "--confidence", "0.99") == 2
    assert "add --require-significant" in capsys.readouterr().err
