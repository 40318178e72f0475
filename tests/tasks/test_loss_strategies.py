"""Loss strategies against torch's reference losses, input validation and the registry."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from trainengine import registries
from trainengine.errors import TaskError
from trainengine.tasks import (
    ClassificationLoss,
    LanguageModelingLoss,
    LossStrategy,
    RegressionLoss,
    available_loss_strategies,
    get_loss_strategy,
    register_loss_strategy,
)


@pytest.fixture()
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@pytest.fixture()
def restore_registry() -> Iterator[None]:
    saved = dict(registries.LOSSES._entries)
    yield
    registries.LOSSES._entries.clear()
    registries.LOSSES._entries.update(saved)


# ------------------------------------------------------------------------------------ registry


def test_vision_maps_to_classification() -> None:
    strategy = get_loss_strategy("vision", label_smoothing=0.1)
    assert isinstance(strategy, ClassificationLoss)
    assert strategy.task_type == "classification"
    assert strategy.label_smoothing == 0.1


def test_builtin_names() -> None:
    assert isinstance(get_loss_strategy("classification"), ClassificationLoss)
    assert isinstance(get_loss_strategy("language_modeling"), LanguageModelingLoss)
    assert isinstance(get_loss_strategy("regression"), RegressionLoss)
    assert set(available_loss_strategies()) >= {"classification", "language_modeling", "regression", "vision"}


def test_unknown_strategy_error_lists_available_names() -> None:
    with pytest.raises(TaskError) as info:
        get_loss_strategy("regresion")
    msg = str(info.value)
    assert "unknown loss strategy 'regresion'" in msg
    assert "did you mean 'regression'" in msg
    assert "available: classification, language_modeling, regression, reward, vision" in msg


def test_unknown_option_lists_accepted_ones() -> None:
    with pytest.raises(TaskError, match="does not accept option.*smoothing.*accepted: ignore_index"):
        get_loss_strategy("language_modeling", smoothing=0.1)
    with pytest.raises(TaskError, match="accepted: none"):
        get_loss_strategy("regression", label_smoothing=0.1)


@pytest.mark.parametrize("bad", [1.0, -0.5])
def test_bad_label_smoothing_option(bad: float) -> None:
    with pytest.raises(TaskError, match=r"label_smoothing must be a float in \[0, 1\)"):
        get_loss_strategy("classification", label_smoothing=bad)


def test_register_custom_strategy(restore_registry: None) -> None:
    class HalfMSE(RegressionLoss):
        task_type = "half_mse"

        def loss_sum(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            return super().loss_sum(logits, labels) / 2

    register_loss_strategy("half_mse", HalfMSE)
    strategy = get_loss_strategy("half_mse")
    assert "half_mse" in available_loss_strategies()
    preds, target = torch.tensor([1.0, 3.0]), torch.tensor([0.0, 0.0])
    assert float(strategy(preds, target)) == pytest.approx(2.5)  # (1 + 9) / 2 / 2

    with pytest.raises(TaskError, match="already registered.*overwrite=True"):
        register_loss_strategy("half_mse", RegressionLoss)
    register_loss_strategy("half_mse", RegressionLoss, overwrite=True)
    assert type(get_loss_strategy("half_mse")) is RegressionLoss
    with pytest.raises(TaskError, match="must be a subclass of trainengine.tasks.LossStrategy"):
        register_loss_strategy("bad", object)  # type: ignore[arg-type]  # a wrong type on purpose


def test_loss_strategy_is_abstract() -> None:
    with pytest.raises(TypeError):
        LossStrategy()  # type: ignore[abstract]  # instantiating the abstract base on purpose


# ---------------------------------------------------------------------------- classification


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_classification_matches_torch_mean(gen: torch.Generator, smoothing: float) -> None:
    logits = torch.randn(16, 5, generator=gen)
    labels = torch.randint(0, 5, (16,), generator=gen)
    strategy = ClassificationLoss(label_smoothing=smoothing)
    total, count = strategy.loss_sum(logits, labels), strategy.num_targets(labels)
    assert total.ndim == 0 and total.dtype == torch.float32
    assert count.ndim == 0 and count.dtype == torch.int64 and int(count) == 16
    expected = F.cross_entropy(logits, labels, label_smoothing=smoothing)
    torch.testing.assert_close(total / count, expected)
    torch.testing.assert_close(strategy(logits, labels), expected)


def test_label_smoothing_changes_loss_like_torch(gen: torch.Generator) -> None:
    logits = torch.randn(32, 4, generator=gen) * 3
    labels = torch.randint(0, 4, (32,), generator=gen)
    plain = ClassificationLoss()(logits, labels)
    smooth = ClassificationLoss(label_smoothing=0.2)(logits, labels)
    assert not torch.allclose(plain, smooth)
    # Independent closed form: (1 - eps) * NLL + eps * mean_c(-log p_c).
    logp = logits.log_softmax(-1)
    nll = -logp.gather(1, labels[:, None]).squeeze(1)
    uniform = -logp.mean(-1)
    torch.testing.assert_close(smooth, (0.8 * nll + 0.2 * uniform).mean())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_classification_computes_in_float32_for_half_logits(gen: torch.Generator, dtype: torch.dtype) -> None:
    logits = torch.randn(64, 7, generator=gen).to(dtype)
    labels = torch.randint(0, 7, (64,), generator=gen)
    total = ClassificationLoss().loss_sum(logits, labels)
    assert total.dtype == torch.float32
    reference = F.cross_entropy(logits.float(), labels, reduction="sum")
    torch.testing.assert_close(total, reference)


def test_classification_ignore_index_is_not_counted(gen: torch.Generator) -> None:
    logits = torch.randn(6, 3, generator=gen)
    labels = torch.tensor([0, -100, 2, 1, -100, 0])
    strategy = ClassificationLoss()
    assert int(strategy.num_targets(labels)) == 4
    torch.testing.assert_close(strategy(logits, labels), F.cross_entropy(logits, labels))


@pytest.mark.parametrize(
    ("logits", "labels", "fragments"),
    [
        (torch.randn(4, 3), torch.zeros(4, 2), ["int64 labels [B]", "got labels float32 [4, 2]", "argmax"]),
        (torch.randn(4, 3), torch.zeros(4), ["got labels float32 [4]", "labels.long()"]),
        (torch.randn(4, 3), torch.zeros(4, dtype=torch.int32), ["got labels int32 [4]"]),
        (torch.randn(4, 3, 2), torch.zeros(4, dtype=torch.int64), ["logits [B, C]", "got logits float32 [4, 3, 2]"]),
        (torch.zeros(4, 3, dtype=torch.int64), torch.zeros(4, dtype=torch.int64), ["got logits int64 [4, 3]"]),
        (
            torch.randn(4, 3),
            torch.zeros(5, dtype=torch.int64),
            ["logits float32 [4, 3] and labels int64 [5]", "4 vs 5"],
        ),
        (torch.randn(4, 1), torch.zeros(4, dtype=torch.int64), ["C >= 2", "got logits float32 [4, 1]"]),
    ],
)
def test_classification_validation_messages(logits: torch.Tensor, labels: torch.Tensor, fragments: list[str]) -> None:
    strategy = ClassificationLoss()
    with pytest.raises(TaskError) as info:
        strategy.validate_inputs(logits, labels)
    msg = str(info.value)
    assert msg.startswith("classification expects logits [B, C] and int64 labels [B]")
    for fragment in fragments:
        assert fragment in msg
    # The loss itself validates too, instead of failing deep inside torch.
    with pytest.raises(TaskError):
        strategy.loss_sum(logits, labels)


def test_brief_example_message_exactly() -> None:
    with pytest.raises(TaskError) as info:
        ClassificationLoss().validate_inputs(torch.randn(4, 10), torch.zeros(4, 2))
    assert str(info.value).startswith(
        "classification expects logits [B, C] and int64 labels [B]; got labels float32 [4, 2]"
    )


# ---------------------------------------------------------------------------- language model


def _lm_batch(gen: torch.Generator, b: int, t: int, v: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(b, t, v, generator=gen), torch.randint(0, v, (b, t), generator=gen)


def test_lm_matches_torch_mean(gen: torch.Generator) -> None:
    logits, labels = _lm_batch(gen, 3, 7, 11)
    strategy = LanguageModelingLoss()
    expected = F.cross_entropy(logits.reshape(-1, 11), labels.reshape(-1))
    torch.testing.assert_close(strategy.loss_sum(logits, labels) / strategy.num_targets(labels), expected)
    assert int(strategy.num_targets(labels)) == 21


def test_lm_padding_is_ignored(gen: torch.Generator) -> None:
    # Two sequences of lengths 5 and 2, right-padded to T=5 with ignore_index labels and
    # garbage logits; the padded loss must equal the loss over the 7 real tokens alone.
    logits, labels = _lm_batch(gen, 2, 5, 9)
    labels[1, 2:] = -100
    real_logits = torch.cat([logits[0, :5], logits[1, :2]])  # (7, V)
    real_labels = torch.cat([labels[0, :5], labels[1, :2]])  # (7,)
    strategy = LanguageModelingLoss()
    assert int(strategy.num_targets(labels)) == 7
    torch.testing.assert_close(strategy(logits, labels), F.cross_entropy(real_logits, real_labels))
    # Changing the padded positions' logits changes nothing.
    logits[1, 2:] = 1e4
    torch.testing.assert_close(strategy(logits, labels), F.cross_entropy(real_logits, real_labels))


def test_lm_custom_ignore_index(gen: torch.Generator) -> None:
    logits, labels = _lm_batch(gen, 2, 4, 6)
    labels[0, 3] = 0
    strategy = LanguageModelingLoss(ignore_index=0)
    n_real = int((labels != 0).sum())
    assert int(strategy.num_targets(labels)) == n_real
    torch.testing.assert_close(
        strategy(logits, labels),
        F.cross_entropy(logits.reshape(-1, 6), labels.reshape(-1), ignore_index=0),
    )


def test_lm_accumulation_over_uneven_micro_batches(gen: torch.Generator) -> None:
    # Four micro-batches with very different amounts of padding: the window loss
    # sum(loss_sum_i) / sum(num_targets_i) equals the loss of the concatenated batch, while the
    # naive mean of per-micro-batch means does not.
    v, t = 13, 8
    strategy = LanguageModelingLoss()
    micro = []
    for real_lengths in ([8, 8], [1, 3], [8, 2], [5, 1]):
        logits, labels = _lm_batch(gen, len(real_lengths), t, v)
        for row, length in enumerate(real_lengths):
            labels[row, length:] = -100
        micro.append((logits, labels))

    window_sum = sum(strategy.loss_sum(lg, lb) for lg, lb in micro)
    window_count = sum(strategy.num_targets(lb) for _, lb in micro)
    window_loss = window_sum / window_count

    all_logits = torch.cat([lg for lg, _ in micro])
    all_labels = torch.cat([lb for _, lb in micro])
    reference = F.cross_entropy(all_logits.reshape(-1, v), all_labels.reshape(-1))
    torch.testing.assert_close(window_loss, reference)
    assert int(window_count) == 8 + 8 + 1 + 3 + 8 + 2 + 5 + 1

    naive = torch.stack([strategy(lg, lb) for lg, lb in micro]).mean()
    assert not torch.allclose(naive, reference)


def test_lm_all_padding_gives_zero_not_nan(gen: torch.Generator) -> None:
    logits, _ = _lm_batch(gen, 2, 3, 5)
    labels = torch.full((2, 3), -100)
    loss = LanguageModelingLoss()(logits, labels)
    assert float(loss) == 0.0


def test_lm_label_smoothing_matches_torch(gen: torch.Generator) -> None:
    logits, labels = _lm_batch(gen, 2, 6, 10)
    labels[0, 4:] = -100
    strategy = LanguageModelingLoss(label_smoothing=0.1)
    torch.testing.assert_close(
        strategy(logits, labels),
        F.cross_entropy(logits.reshape(-1, 10), labels.reshape(-1), label_smoothing=0.1),
    )


def test_lm_bf16_logits_summed_in_float32(gen: torch.Generator) -> None:
    logits, labels = _lm_batch(gen, 4, 16, 32)
    total = LanguageModelingLoss().loss_sum(logits.bfloat16(), labels)
    assert total.dtype == torch.float32
    torch.testing.assert_close(
        total, F.cross_entropy(logits.bfloat16().float().reshape(-1, 32), labels.reshape(-1), reduction="sum")
    )


@pytest.mark.parametrize(
    ("logits", "labels", "fragment"),
    [
        (torch.randn(8, 5), torch.zeros(2, 4, dtype=torch.int64), "got logits float32 [8, 5]"),
        (torch.randn(2, 4, 5), torch.zeros(8, dtype=torch.int64), "got labels int64 [8]"),
        (torch.randn(2, 4, 5), torch.zeros(2, 4, dtype=torch.int32), "got labels int32 [2, 4]"),
        (
            torch.randn(2, 4, 5),
            torch.zeros(2, 3, dtype=torch.int64),
            "logits float32 [2, 4, 5] and labels int64 [2, 3]",
        ),
    ],
)
def test_lm_validation_messages(logits: torch.Tensor, labels: torch.Tensor, fragment: str) -> None:
    with pytest.raises(TaskError) as info:
        LanguageModelingLoss().validate_inputs(logits, labels)
    msg = str(info.value)
    assert msg.startswith("language_modeling expects logits [B, T, V] and int64 labels [B, T]")
    assert fragment in msg


# -------------------------------------------------------------------------------- regression


@pytest.mark.parametrize(
    ("pred_shape", "label_shape"),
    [((6,), (6,)), ((6, 1), (6,)), ((6,), (6, 1)), ((6, 3), (6, 3))],
)
def test_regression_matches_torch_mse(
    gen: torch.Generator, pred_shape: tuple[int, ...], label_shape: tuple[int, ...]
) -> None:
    preds = torch.randn(pred_shape, generator=gen)
    labels = torch.randn(label_shape, generator=gen)
    strategy = RegressionLoss()
    count = strategy.num_targets(labels)
    assert count.dtype == torch.int64 and int(count) == labels.numel()
    expected = F.mse_loss(preds.reshape(label_shape), labels)
    torch.testing.assert_close(strategy.loss_sum(preds, labels) / count, expected)
    torch.testing.assert_close(strategy(preds, labels), expected)


def test_regression_half_predictions_computed_in_float32(gen: torch.Generator) -> None:
    preds = torch.randn(32, 1, generator=gen).to(torch.bfloat16)
    labels = torch.randn(32, generator=gen) * 100
    total = RegressionLoss().loss_sum(preds, labels)
    assert total.dtype == torch.float32
    torch.testing.assert_close(total, ((preds.float().squeeze(1) - labels) ** 2).sum())


def test_regression_predictions_helper() -> None:
    assert RegressionLoss().predictions(torch.zeros(5, 1)).shape == (5,)
    assert RegressionLoss().predictions(torch.zeros(5, 2)).shape == (5, 2)


@pytest.mark.parametrize(
    ("preds", "labels", "fragment"),
    [
        (torch.randn(4, 1), torch.zeros(4, dtype=torch.int64), "got labels int64 [4]"),
        (torch.randn(4, 2), torch.zeros(4), "got predictions float32 [4, 2] and labels float32 [4]"),
        (torch.randn(4), torch.zeros(5), "got predictions float32 [4] and labels float32 [5]"),
        (torch.randn(4, 1, 1), torch.zeros(4), "got predictions float32 [4, 1, 1]"),
        (torch.zeros(4, dtype=torch.int64), torch.zeros(4), "got predictions int64 [4]"),
    ],
)
def test_regression_validation_messages(preds: torch.Tensor, labels: torch.Tensor, fragment: str) -> None:
    with pytest.raises(TaskError) as info:
        RegressionLoss().validate_inputs(preds, labels)
    msg = str(info.value)
    assert msg.startswith("regression expects float predictions")
    assert fragment in msg


def test_num_targets_stays_on_device_as_tensor() -> None:
    # A tensor (not a Python int) so the trainer can sum counts without a host sync.
    assert isinstance(RegressionLoss().num_targets(torch.zeros(3)), torch.Tensor)
    assert isinstance(ClassificationLoss().num_targets(torch.zeros(3, dtype=torch.int64)), torch.Tensor)
    assert isinstance(LanguageModelingLoss().num_targets(torch.zeros(2, 3, dtype=torch.int64)), torch.Tensor)


def test_gradients_flow_through_the_loss(gen: torch.Generator) -> None:
    logits = torch.randn(4, 3, generator=gen, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 1])
    ClassificationLoss()(logits, labels).backward()
    expected = (logits.detach().softmax(-1) - F.one_hot(labels, 3)) / 4
    torch.testing.assert_close(logits.grad, expected)
