"""Build a whole run from a config: task, data and model (what the CLI and quickstart use)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from trainengine.config import TrainingConfig
from trainengine.data import DatasetInfo, DatasetSplits, load_builtin
from trainengine.errors import ConfigError
from trainengine.models import GPTConfig, build_model
from trainengine.models._registry import build_model_for_data
from trainengine.tasks import TaskSpec
from trainengine.tasks._registry import build_task_spec

__all__ = ["BuiltRun", "build_task", "task_for_data", "load_data_for", "build_model_for", "build_from_config"]


@dataclass
class BuiltRun:
    """Everything a config describes, ready for ``Trainer(model, model_config, config, task_spec)``."""

    model: nn.Module
    model_config: Any
    task_spec: TaskSpec
    splits: DatasetSplits


def build_task(config: TrainingConfig) -> TaskSpec:
    """The TaskSpec for ``config.data`` (``task: auto`` = the data set's natural task).

    File data (``data.train_file``) has no task before it is read: :func:`build_from_config`
    reads it and calls :func:`task_for_data`.
    """
    d = config.data
    if d.dataset is None:
        raise ConfigError(
            "data.dataset is not set — name a built-in data set (digits, diabetes, pystdlib), set data.train_file, "
            "or pass data to Trainer.train()"
        )
    # data.task names an entry of trainengine.registries.TASKS (auto = the data set's own task).
    spec = build_task_spec(d.task, d.dataset)
    return spec  # training.label_smoothing is applied by the Trainer, for every TaskSpec


def task_for_data(config: TrainingConfig, info: DatasetInfo) -> TaskSpec:
    """The TaskSpec for file data: its natural task, or ``data.task`` when that names a registered one.

    Raises:
        ConfigError: ``data.task`` asks for a task the data cannot be (vision on a table, ...).
    """
    task, name = config.data.task, info.name
    natural = info.task_type
    if task not in ("auto", "classification", "regression", "language_modeling", "vision"):
        from trainengine.registries import TASKS

        spec = TASKS.get(task)(name)  # a user task: it decides from the data set's name
        if not isinstance(spec, TaskSpec):
            raise ConfigError(f"task builder '{task}' returned {type(spec).__name__}; it must return a TaskSpec")
        return spec
    image = len(info.input_shape) == 3
    wanted = {"vision": "classification"}.get(task, task)
    if task != "auto" and wanted != natural:
        raise ConfigError(
            f"data.task {task} does not fit {name}: it is {natural} data"
            + (" (images)" if image else "")
            + " — set data.task auto"
        )
    if task == "vision" and not image:
        raise ConfigError(f"data.task vision needs an image folder; {name} is a table — set data.task classification")
    if natural == "language_modeling":
        return TaskSpec.language_modeling(name)
    if natural == "regression":
        return TaskSpec.regression(name)
    num_classes = info.num_classes or 2
    return TaskSpec.vision_tiny(name, num_classes) if image else TaskSpec.classification(name, num_classes)


def load_data_for(config: TrainingConfig, task_spec: TaskSpec | None) -> DatasetSplits:
    """Load the data named by ``config.data``: a built-in data set in the shape the task needs, or files."""
    d = config.data
    if d.train_file is not None:
        from trainengine.data import load_files

        return load_files(d, seed=config.training.seed)
    if d.dataset is None:
        raise ConfigError(
            "data.dataset is not set — name a built-in data set (digits, diabetes, pystdlib) or set data.train_file"
        )
    from trainengine.registries import DATASETS

    factory = DATASETS.get(d.dataset)
    if getattr(factory, "takes_config", False):
        # A data set that reads its own settings from the config (prm: the reasoning-step files,
        # their weights, the backbone's tokenizer).
        splits = factory(config=config)
        if not isinstance(splits, DatasetSplits):
            raise ConfigError(f"data set '{d.dataset}' returned {type(splits).__name__}; it must return DatasetSplits")
        return splits
    return load_builtin(
        d.dataset,
        val_fraction=d.val_fraction,
        seed=config.training.seed,
        max_length=d.max_length,
        max_train_samples=d.max_train_samples,
        max_val_samples=d.max_val_samples,
        image=task_spec is not None and task_spec.modality == "image",
        max_corpus_bytes=d.max_corpus_bytes,
    )


def build_model_for(config: TrainingConfig, task_spec: TaskSpec, splits: DatasetSplits) -> tuple[nn.Module, Any]:
    """Build ``config.model`` sized for the data; returns (model, model config or None)."""
    m, info = config.model, splits.info
    arch = task_spec.default_architecture if m.architecture == "auto" else m.architecture
    preprocessing = (info.extra.get("source") or {}).get("preprocessing") or {}
    if preprocessing.get("codes") and arch in ("mlp", "tabular_mlp"):
        # data.categorical_encoding embedding: the inputs end with category codes, one per column.
        return build_model(
            "tabular_mlp",
            dense_width=int(preprocessing["dense_width"]),
            cardinalities=[int(c["cardinality"]) for c in preprocessing["codes"]],
            output_dim=task_spec.num_classes or 1,
            hidden_dims=tuple(m.hidden_dims),
            dropout=m.dropout,
            activation=m.activation,
        ), None
    if arch == "tabular_mlp":
        raise ConfigError("model.architecture tabular_mlp needs data.categorical_encoding embedding on file data")
    if arch == "reward_model":
        from trainengine.models._reward import reward_model_kwargs

        if task_spec.task_type != "reward":
            raise ConfigError(
                f"model.architecture reward_model needs the reward task (data.dataset prm), not {task_spec.task_type}"
            )
        kwargs = reward_model_kwargs(
            m,
            config.lora,
            vocab_size=info.vocab_size,
            pad_token_id=(info.extra.get("tokenizer") or {}).get("pad_id"),
            # The random base and the head come from the seed; the spec records it, so evaluation,
            # export and resume rebuild the same frozen weights.
            init_seed=config.training.seed,
        )
        return build_model("reward_model", **kwargs), None
    if config.lora.enabled:
        raise ConfigError(
            f"lora.enabled adapts a Hugging Face backbone: set model.architecture reward_model (not {arch})"
        )
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
        vocab = max(m.vocab_size, info.vocab_size or 0)
        if info.vocab_size and "source" in info.extra and "vocab_size" not in m.model_fields_set:
            vocab = info.vocab_size  # file data: the tokenizer's size, unless model.vocab_size was set
        gpt_cfg = GPTConfig(
            vocab_size=vocab,
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
    """Task, data and model from a config with ``data.dataset`` or ``data.train_file`` set."""
    if config.data.train_file is not None:
        splits = load_data_for(config, None)
        task_spec = task_for_data(config, splits.info)
    else:
        task_spec = build_task(config)
        splits = load_data_for(config, task_spec)
    model, model_config = build_model_for(config, task_spec, splits)
    return BuiltRun(model=model, model_config=model_config, task_spec=task_spec, splits=splits)
