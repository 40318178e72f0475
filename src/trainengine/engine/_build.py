"""Build a whole run from a config: task, data and model (what the CLI and quickstart use)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from trainengine.config import TrainingConfig
from trainengine.data import DatasetSplits, load_builtin
from trainengine.errors import ConfigError
from trainengine.models import GPTConfig, build_model
from trainengine.models._registry import build_model_for_data
from trainengine.tasks import TaskSpec
from trainengine.tasks._registry import build_task_spec

__all__ = ["BuiltRun", "build_task", "load_data_for", "build_model_for", "build_from_config"]


@dataclass
class BuiltRun:
    """Everything a config describes, ready for ``Trainer(model, model_config, config, task_spec)``."""

    model: nn.Module
    model_config: Any
    task_spec: TaskSpec
    splits: DatasetSplits


def build_task(config: TrainingConfig) -> TaskSpec:
    """The TaskSpec for ``config.data`` (``task: auto`` = the data set's natural task)."""
    d = config.data
    if d.dataset is None:
        raise ConfigError(
            "data.dataset is not set — name a built-in data set (digits, diabetes, pystdlib) "
            "or pass data to Trainer.train()"
        )
    # data.task names an entry of trainengine.registries.TASKS (auto = the data set's own task).
    spec = build_task_spec(d.task, d.dataset)
    return spec  # training.label_smoothing is applied by the Trainer, for every TaskSpec


def load_data_for(config: TrainingConfig, task_spec: TaskSpec) -> DatasetSplits:
    """Load the built-in data set named by ``config.data`` in the shape the task needs."""
    d = config.data
    if d.dataset is None:
        raise ConfigError("data.dataset is not set — name a built-in data set (digits, diabetes, pystdlib)")
    return load_builtin(
        d.dataset,
        val_fraction=d.val_fraction,
        seed=config.training.seed,
        max_length=d.max_length,
        max_train_samples=d.max_train_samples,
        max_val_samples=d.max_val_samples,
        image=task_spec.modality == "image",
        max_corpus_bytes=d.max_corpus_bytes,
    )


def build_model_for(config: TrainingConfig, task_spec: TaskSpec, splits: DatasetSplits) -> tuple[nn.Module, Any]:
    """Build ``config.model`` sized for the data; returns (model, model config or None)."""
    m, info = config.model, splits.info
    arch = task_spec.default_architecture if m.architecture == "auto" else m.architecture
    if arch not in ("gpt", "cnn", "mlp"):
        # A registered model: its builder gets model.options plus the data-derived sizes it declares.
        model = build_model_for_data(
            arch,
            m.options,
            input_shape=tuple(info.input_shape),
            num_outputs=task_spec.num_classes or 1,
            vocab_size=info.vocab_size,
        )
        return model, None
    if arch == "gpt":
        if task_spec.task_type != "language_modeling":
            raise ConfigError(f"model.architecture gpt needs a language-modeling task, not {task_spec.task_type}")
        gpt_cfg = GPTConfig(
            vocab_size=max(m.vocab_size, info.vocab_size or 0),
            max_seq_len=m.max_seq_len,
            d_model=m.d_model,
            n_heads=m.n_heads,
            n_layers=m.n_layers,
            d_ff=m.d_ff,
            dropout=m.dropout if m.dropout else 0.0,
            bias=m.bias,
            tie_weights=m.tie_weights,
        )
        return build_model("gpt", **vars(gpt_cfg)), gpt_cfg
    num_out = task_spec.num_classes if task_spec.num_classes else 1
    if arch == "cnn":
        if len(info.input_shape) != 3:
            raise ConfigError(
                f"model.architecture cnn needs image inputs [C, H, W]; {info.name} gives "
                f"{list(info.input_shape)} — set data.task vision"
            )
        c, h, _ = info.input_shape
        return build_model(
            "cnn", in_channels=c, num_classes=num_out, channels=tuple(m.cnn_channels), image_size=h, dropout=m.dropout
        ), None
    if task_spec.task_type == "language_modeling":
        raise ConfigError("language modeling needs model.architecture gpt (or auto)")
    input_dim = 1
    for size in info.input_shape:
        input_dim *= size
    return build_model(
        "mlp",
        input_dim=input_dim,
        output_dim=num_out,
        hidden_dims=tuple(m.hidden_dims),
        dropout=m.dropout,
        activation=m.activation,
    ), None


def build_from_config(config: TrainingConfig) -> BuiltRun:
    """Task, data and model from a config with ``data.dataset`` set."""
    task_spec = build_task(config)
    splits = load_data_for(config, task_spec)
    model, model_config = build_model_for(config, task_spec, splits)
    return BuiltRun(model=model, model_config=model_config, task_spec=task_spec, splits=splits)
