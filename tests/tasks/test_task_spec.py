"""TaskSpec: factories, validation, serialisation, for_dataset, wiring to losses and metrics."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from trainengine.errors import TaskError
from trainengine.tasks import (
    ClassificationLoss,
    LanguageModelingLoss,
    RegressionLoss,
    TaskMetrics,
    TaskSpec,
)


def test_language_modeling_factory_fields() -> None:
    spec = TaskSpec.language_modeling(name="wikitext", ignore_index=-1)
    assert spec.name == "wikitext"
    assert spec.task_type == "language_modeling"
    assert spec.num_classes is None
    assert spec.modality == "tokens"
    assert spec.ignore_index == -1
    assert spec.label_smoothing == 0.0
    assert spec.metrics == ("loss", "perplexity")
    assert (spec.monitor, spec.monitor_mode) == ("val/loss", "min")
    assert spec.default_dataset == "pystdlib"
    assert spec.default_architecture == "gpt"


def test_classification_factory_fields() -> None:
    spec = TaskSpec.classification(name="imdb", num_classes=2, label_smoothing=0.1)
    assert spec.task_type == "classification"
    assert spec.num_classes == 2
    assert spec.modality == "features"
    assert spec.label_smoothing == 0.1
    assert spec.metrics == ("loss", "accuracy")
    assert (spec.monitor, spec.monitor_mode) == ("val/accuracy", "max")
    assert spec.default_dataset is None  # only "digits" is a built-in classification set
    assert spec.default_architecture == "mlp"
    assert TaskSpec.classification().default_dataset == "digits"
    assert TaskSpec.classification().num_classes == 10


def test_regression_factory_fields() -> None:
    spec = TaskSpec.regression()
    assert (spec.name, spec.task_type, spec.num_classes, spec.modality) == ("diabetes", "regression", None, "features")
    assert spec.metrics == ("loss", "mse", "mae", "r2")
    assert (spec.monitor, spec.monitor_mode) == ("val/loss", "min")
    assert spec.default_dataset == "diabetes"
    assert spec.default_architecture == "mlp"
    assert TaskSpec.regression(name="housing").default_dataset is None


def test_vision_tiny_factory_fields() -> None:
    spec = TaskSpec.vision_tiny()
    assert (spec.name, spec.task_type, spec.num_classes, spec.modality) == ("digits", "vision", 10, "image")
    assert spec.metrics == ("loss", "accuracy")
    assert (spec.monitor, spec.monitor_mode) == ("val/accuracy", "max")
    assert spec.default_dataset == "digits"
    assert spec.default_architecture == "cnn"


def test_spec_is_frozen() -> None:
    spec = TaskSpec.regression()
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"  # type: ignore[misc]  # assigning a frozen field on purpose


@pytest.mark.parametrize("num_classes", [1, 0, -3, 2.0, True])
def test_classification_rejects_bad_num_classes(num_classes: object) -> None:
    with pytest.raises(TaskError, match=r"num_classes must be an int >= 2.*got"):
        TaskSpec.classification(name="x", num_classes=num_classes)  # type: ignore[arg-type]  # a wrong type on purpose
    with pytest.raises(TaskError, match=r"num_classes must be an int >= 2"):
        TaskSpec.vision_tiny(num_classes=num_classes)  # type: ignore[arg-type]  # a wrong type on purpose


@pytest.mark.parametrize("smoothing", [-0.1, 1.0, 1.5, "0.1"])
def test_classification_rejects_bad_label_smoothing(smoothing: object) -> None:
    with pytest.raises(TaskError, match=r"label_smoothing must be a float in \[0, 1\)"):
        TaskSpec.classification(label_smoothing=smoothing)  # type: ignore[arg-type]  # a wrong type on purpose


@pytest.mark.parametrize("name", ["", "   ", None])
def test_factories_reject_empty_name(name: object) -> None:
    for factory in (
        TaskSpec.language_modeling,
        TaskSpec.classification,
        TaskSpec.regression,
        TaskSpec.vision_tiny,
    ):
        with pytest.raises(TaskError, match="name must be a non-empty string"):
            factory(name)  # type: ignore[arg-type]  # a wrong type on purpose


def test_direct_construction_reports_every_problem_at_once() -> None:
    with pytest.raises(TaskError) as info:
        TaskSpec(
            name="x",
            task_type="regression",
            num_classes=3,
            modality="audio",  # type: ignore[arg-type]  # a wrong type on purpose
            label_smoothing=0.2,
            metrics=("loss", "accuracy"),
        )
    msg = str(info.value)
    assert "num_classes must be None" in msg
    assert "modality 'audio' is not one of: tokens, features, image" in msg
    assert "regression needs 0.0" in msg
    assert "'accuracy'" in msg and "supported: loss, mse, mae, r2" in msg


def test_unknown_task_type_lists_valid_ones() -> None:
    with pytest.raises(TaskError, match="language_modeling, classification, regression, vision"):
        TaskSpec(name="x", task_type="ranking", num_classes=None, modality="features")  # type: ignore[arg-type]  # a wrong type on purpose


def test_monitor_must_name_a_reported_metric_with_the_right_mode() -> None:
    base = TaskSpec.classification()
    with pytest.raises(TaskError, match="names no reported metric.*loss, accuracy"):
        dataclasses.replace(base, monitor="val/acc")
    with pytest.raises(TaskError, match="monitor_mode must be 'max'"):
        dataclasses.replace(base, monitor="val/accuracy", monitor_mode="min")
    with pytest.raises(TaskError, match="<split>/<metric>"):
        dataclasses.replace(base, monitor="accuracy")
    # A consistent change is accepted.
    assert dataclasses.replace(base, monitor="val/loss", monitor_mode="min").monitor == "val/loss"


def test_lm_needs_token_modality() -> None:
    with pytest.raises(TaskError, match="language_modeling tasks need modality 'tokens'"):
        dataclasses.replace(TaskSpec.language_modeling(), modality="features")


@pytest.mark.parametrize(
    "spec",
    [
        TaskSpec.language_modeling(name="wikitext", ignore_index=0),
        TaskSpec.classification(name="imdb", num_classes=2, label_smoothing=0.25),
        TaskSpec.regression(),
        TaskSpec.vision_tiny(name="tiny", num_classes=3),
    ],
    ids=lambda s: s.task_type,
)
def test_to_dict_from_dict_round_trip_through_json(spec: TaskSpec) -> None:
    data = json.loads(json.dumps(spec.to_dict()))  # must be JSON-able
    restored = TaskSpec.from_dict(data)
    assert restored == spec
    assert isinstance(restored.metrics, tuple)
    assert hash(restored) == hash(spec)


def test_from_dict_rejects_unknown_and_missing_keys() -> None:
    data = TaskSpec.regression().to_dict()
    with pytest.raises(TaskError, match=r"unknown TaskSpec field\(s\) 'lr' — valid: name, task_type"):
        TaskSpec.from_dict({**data, "lr": 0.1})
    del data["modality"]
    with pytest.raises(TaskError, match="missing required field.*modality"):
        TaskSpec.from_dict(data)
    with pytest.raises(TaskError, match="needs a mapping"):
        TaskSpec.from_dict([("name", "x")])  # type: ignore[arg-type]  # a wrong type on purpose


def test_from_dict_accepts_int_label_smoothing_and_list_metrics() -> None:
    data = TaskSpec.classification().to_dict()
    data["label_smoothing"] = 0
    spec = TaskSpec.from_dict(data)
    assert spec == TaskSpec.classification()
    assert isinstance(spec.label_smoothing, float)


def test_for_dataset_maps_builtin_sets() -> None:
    assert TaskSpec.for_dataset("digits") == TaskSpec.classification(name="digits", num_classes=10)
    assert TaskSpec.for_dataset("diabetes") == TaskSpec.regression(name="diabetes")
    assert TaskSpec.for_dataset("pystdlib") == TaskSpec.language_modeling(name="pystdlib")
    with pytest.raises(TaskError, match="'digit' — available: diabetes, digits, pystdlib"):
        TaskSpec.for_dataset("digit")


def test_loss_strategy_property_carries_options() -> None:
    cls_spec = TaskSpec.classification(num_classes=4, label_smoothing=0.2)
    strategy = cls_spec.loss_strategy
    assert isinstance(strategy, ClassificationLoss)
    assert (strategy.label_smoothing, strategy.num_classes) == (0.2, 4)
    logits, labels = torch.randn(6, 4), torch.randint(0, 4, (6,))
    torch.testing.assert_close(strategy(logits, labels), F.cross_entropy(logits, labels, label_smoothing=0.2))

    lm = TaskSpec.language_modeling(ignore_index=7).loss_strategy
    assert isinstance(lm, LanguageModelingLoss) and lm.ignore_index == 7
    assert isinstance(TaskSpec.regression().loss_strategy, RegressionLoss)
    assert isinstance(TaskSpec.vision_tiny().loss_strategy, ClassificationLoss)


def test_loss_strategy_checks_num_classes_of_the_spec() -> None:
    strategy = TaskSpec.classification(num_classes=10).loss_strategy
    with pytest.raises(TaskError, match=r"num_classes = 10; got logits float32 \[4, 3\]"):
        strategy.validate_inputs(torch.randn(4, 3), torch.zeros(4, dtype=torch.int64))


def test_create_metrics_reports_the_spec_metrics() -> None:
    for spec in (
        TaskSpec.language_modeling(),
        TaskSpec.classification(),
        TaskSpec.regression(),
        TaskSpec.vision_tiny(),
    ):
        metrics = spec.create_metrics("cpu")
        assert isinstance(metrics, TaskMetrics)
        assert metrics.names == spec.metrics
        assert metrics.device == torch.device("cpu")
