"""The paired significance test behind gated promotion: real models, same data, both directions."""

from __future__ import annotations

import doctest
import json

import pytest
import torch
from torch.utils.data import TensorDataset

from trainengine.config import TrainingConfig
from trainengine.errors import ConfigError, TrainEngineError
from trainengine.evaluation import SignificanceCheck, compare_models, headline_metric
from trainengine.models import rebuild_model
from trainengine.tasks import TaskSpec

SPEC = {"architecture": "mlp", "kwargs": {"input_dim": 6, "output_dim": 3, "hidden_dims": [8], "dropout": 0.0}}
REG_SPEC = {"architecture": "mlp", "kwargs": {"input_dim": 6, "output_dim": 1, "hidden_dims": [8], "dropout": 0.0}}


def _mlp(spec: dict, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return rebuild_model(spec).eval()


@pytest.fixture(scope="module")
def teacher_data() -> tuple[torch.nn.Module, TensorDataset]:
    """Labels made by a 'teacher' MLP: the teacher is right on every example, another seed on ~1/3."""
    teacher = _mlp(SPEC, 0)
    x = torch.randn(300, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        labels = teacher(x).argmax(dim=1)
    return teacher, TensorDataset(x, labels)


TASK = TaskSpec.classification("teacher", 3)


def test_clearly_better_candidate_is_significant(teacher_data) -> None:
    teacher, data = teacher_data
    result = compare_models(teacher, _mlp(SPEC, 1), data, TASK, n_bootstrap=500)
    t = result.test
    assert result.metric == "accuracy" and result.n == 300
    assert t.candidate.estimate == 1.0 and t.baseline.estimate < 0.7
    assert result.significant and result.p_value < 0.01 and t.ci[0] > 0
    line = result.explain()
    assert "is significantly better than" in line and f"p = {t.p_value:.4g}" in line


def test_same_weights_are_not_significant(teacher_data) -> None:
    teacher, data = teacher_data
    twin = _mlp(SPEC, 0)  # a separate module with the same weights
    result = compare_models(twin, teacher, data, TASK, n_bootstrap=300, names=("v2", "v1"))
    # Identical predictions: every paired resample has a difference of exactly 0 -> never better.
    assert result.test.delta == 0.0 and result.test.ci == (0.0, 0.0)
    assert result.p_value == 1.0 and not result.significant
    line = result.explain()
    assert line.startswith("v2 is not significantly better than v1 at 95% confidence on accuracy")
    assert str(result.test.candidate) in line and str(result.test.baseline) in line and "p = 1" in line


def test_worse_candidate_is_refused(teacher_data) -> None:
    teacher, data = teacher_data
    result = compare_models(_mlp(SPEC, 1), teacher, data, TASK, n_bootstrap=300)
    assert result.test.delta < 0 and result.p_value == 1.0 and not result.significant


def test_lower_is_better_metrics_count_a_drop_as_an_improvement(teacher_data) -> None:
    # Regression: the teacher's own outputs as targets -> MSE 0 for the teacher; lower is better.
    teacher = _mlp(REG_SPEC, 0)
    x = teacher_data[1].tensors[0]
    with torch.no_grad():
        targets = teacher(x).squeeze(1)
    data = TensorDataset(x, targets)
    task = TaskSpec.regression("teacher")
    better = compare_models(teacher, _mlp(REG_SPEC, 3), data, task, n_bootstrap=300)
    assert better.metric == "mse" == headline_metric("regression")
    assert better.test.delta < 0 and better.significant and not better.test.higher_is_better
    assert "lower is better" in better.explain()
    worse = compare_models(_mlp(REG_SPEC, 3), teacher, data, task, n_bootstrap=300)
    assert not worse.significant and worse.p_value == 1.0


def test_named_metric_confidence_and_seed(teacher_data) -> None:
    teacher, data = teacher_data
    other = _mlp(SPEC, 1)
    a = compare_models(teacher, other, data, TASK, metric="log_loss", n_bootstrap=200, seed=5)
    b = compare_models(teacher, other, data, TASK, metric="log_loss", n_bootstrap=200, seed=5)
    assert a.metric == "log_loss" and a.test.delta < 0 and a.significant
    assert a.to_dict() == b.to_dict()  # same seed, same verdict
    strict = compare_models(teacher, other, data, TASK, confidence=0.999, n_bootstrap=200)
    assert strict.test.confidence == 0.999 and "99.9% confidence" in strict.explain()


def test_unknown_and_unusable_metrics_say_what_works(teacher_data) -> None:
    teacher, data = teacher_data
    with pytest.raises(TrainEngineError, match=r"unknown metric 'acuracy' — available: .*accuracy"):
        compare_models(teacher, teacher, data, TASK, metric="acuracy", n_bootstrap=100)
    with pytest.raises(TrainEngineError, match=r"metric 'mse' cannot compare classification models.*usable: accuracy"):
        compare_models(teacher, teacher, data, TASK, metric="mse", n_bootstrap=100)


def test_result_to_dict_is_json(teacher_data) -> None:
    teacher, data = teacher_data
    d = compare_models(teacher, _mlp(SPEC, 1), data, TASK, n_bootstrap=100, names=("m:2", "m:1")).to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["candidate"] == "m:2" and d["holder"] == "m:1" and d["n_bootstrap"] == 100 and d["significant"] is True
    lo, hi = d["candidate_ci"]
    assert lo <= d["candidate_value"] <= hi and d["delta"] == pytest.approx(d["candidate_value"] - d["holder_value"])


def test_check_settings_win_over_the_rule_and_the_rule_over_defaults(teacher_data, tmp_path) -> None:
    # Two registered versions of the teacher problem (real ModelRecords from a real registry).
    from trainengine.registry import ModelRegistry
    from trainengine.registry._gates import SignificanceRule

    _teacher, data = teacher_data
    for seed, version in ((1, "1.0.0"), (0, "1.1.0")):
        torch.save(_mlp(SPEC, seed).state_dict(), tmp_path / f"{version}.pt")
    with ModelRegistry(tmp_path / "models.db") as reg:
        for version in ("1.0.0", "1.1.0"):
            reg.register_model("t", version, tmp_path / f"{version}.pt", model_config=SPEC, task_type="classification")
        old, new = reg.get_model("t", "1.0.0"), reg.get_model("t", "1.1.0")
    rule = SignificanceRule(metric="brier", confidence=0.9, n_bootstrap=150)
    from_rule = SignificanceCheck(data=data, task_spec=TASK)(new, old, rule)
    assert (from_rule.metric, from_rule.test.confidence, from_rule.test.candidate.n_bootstrap) == ("brier", 0.9, 150)
    check = SignificanceCheck(data=data, task_spec=TASK, metric="accuracy", confidence=0.99, n_bootstrap=120)
    explicit = check(new, old, rule)
    assert (explicit.metric, explicit.test.confidence, explicit.test.candidate.n_bootstrap) == ("accuracy", 0.99, 120)
    defaults = SignificanceCheck(data=data, task_spec=TASK, n_bootstrap=100)(new, old, None)
    assert (defaults.metric, defaults.test.confidence) == ("accuracy", 0.95)
    assert check.results == [explicit] and explicit.candidate == "t:1.1.0" and explicit.holder == "t:1.0.0"
    assert explicit.significant


def test_check_without_config_or_task_says_what_to_pass(teacher_data, tmp_path) -> None:
    from trainengine.registry import ModelRegistry

    torch.save(_mlp(SPEC, 0).state_dict(), tmp_path / "w.pt")
    with ModelRegistry(tmp_path / "models.db") as reg:
        for version in ("1.0.0", "1.1.0"):
            reg.register_model("t", version, tmp_path / "w.pt", model_config=SPEC)
        old, new = reg.get_model("t", "1.0.0"), reg.get_model("t", "1.1.0")
    with pytest.raises(TrainEngineError, match=r"t:1.1.0 records no task .*SignificanceCheck\(task_spec=\.\.\.\)"):
        SignificanceCheck(n_bootstrap=100)(new, old, None)
    with pytest.raises(TrainEngineError, match=r"t:1.1.0 records no training config.*--data FILE"):
        SignificanceCheck(task_spec=TASK, n_bootstrap=100)(new, old, None)


def test_registry_require_significant_config_is_validated() -> None:
    cfg = TrainingConfig(registry={"require_significant": {"production": {"metric": "f1_macro", "confidence": 0.99}}})
    assert cfg.registry.require_significant == {"production": {"metric": "f1_macro", "confidence": 0.99}}
    with pytest.raises(ConfigError) as err:
        TrainingConfig(registry={"require_significant": {"production": {"confidence": 1.0, "metrc": "x"}}})
    text = str(err.value)
    assert "registry.require_significant.production.metrc: unknown key — valid keys: metric, confidence" in text
    assert "registry.require_significant.production.confidence: must be a number in [0.5, 1)" in text


def test_rule_module_doctests() -> None:
    from trainengine.config import _significance
    from trainengine.evaluation import _significance as evaluation_significance

    for module in (_significance, evaluation_significance):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted >= 1, module.__name__


def test_headline_metrics_are_the_quoted_ones() -> None:
    assert [headline_metric(t) for t in ("classification", "vision", "regression", "language_modeling")] == [
        "accuracy",
        "accuracy",
        "mse",
        "loss",
    ]
    with pytest.raises(TrainEngineError, match="no headline metric for task type 'ranking'"):
        headline_metric("ranking")
