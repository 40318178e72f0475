"""Around the loop: what the Trainer derives before it (loaders, step count, data facts) and its results."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sized
from dataclasses import asdict, is_dataclass
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from trainengine.data import (
    CurriculumBatchSampler,
    InMemoryDataset,
    build_dataloader,
    check_overlap,
    collate_batch,
    curriculum_active,
    fingerprint_dataset,
    score_by_loss,
    seed_worker,
    to_dataset,
)
from trainengine.engine._step import call_model, extract_logits, split_batch
from trainengine.errors import ConfigError, DataError, TaskError, TrainEngineError
from trainengine.tasks import METRIC_MODES, SUPPORTED_METRICS, TaskSpec, balanced_class_weights

if TYPE_CHECKING:
    from trainengine.engine._trainer import Trainer

__all__ = [
    "with_label_smoothing",
    "with_task_section",
    "with_auto_class_weights",
    "monitor_mode_for",
    "canonical_metric",
    "build_loaders",
    "attach_loss_scoring",
    "plan_total_steps",
    "record_data_facts",
    "check_label_values",
    "model_config_dict",
    "results_of",
]


def build_loaders(config: Any, runtime: Any, train_data: Any, val_data: Any) -> tuple[Any, Any]:
    """The training and validation DataLoaders (validation None without ``val_data``).

    Raises:
        ConfigError: early stopping or ``reduce_on_plateau`` without validation data.
    """
    t, d = config.training, config.data
    pin = runtime.pin_memory(d.pin_memory)
    # Under several processes each loads its own shard of the order they all draw from the seed.
    shard = {"rank": runtime.rank, "world_size": runtime.world_size}
    if _wants_curriculum(config, train_data):
        if runtime.world_size > 1:
            raise ConfigError("the curriculum section is not available under several processes yet; train on one")
        train_loader = _curriculum_loader(config, train_data, pin)
    else:
        train_loader = build_dataloader(
            train_data, batch_size=t.batch_size, shuffle=d.shuffle, seed=t.seed, drop_last=d.drop_last,
            num_workers=d.num_workers, pin_memory=pin, deterministic=t.deterministic, **shard,
        )  # fmt: skip
    if val_data is not None:
        eval_batch = t.eval_batch_size or 2 * t.batch_size
        val_loader = build_dataloader(
            val_data, batch_size=eval_batch, shuffle=False, seed=t.seed, num_workers=d.num_workers, pin_memory=pin,
            pad_shards=False, **(shard if runtime.checkpoint_io is None else {}),
        )  # fmt: skip
        # FSDP2 (sharded parameters): every rank evaluates the whole set, because each forward takes part in the
        # parameter all-gathers and uneven shards would leave a rank waiting; the metrics' ratios are unchanged.
        return train_loader, val_loader
    needs = [
        name
        for name, on in (
            ("training.early_stopping_patience", t.early_stopping_patience is not None),
            ("scheduler.name reduce_on_plateau", config.scheduler.name == "reduce_on_plateau"),
        )
        if on
    ]
    if needs:
        raise ConfigError(
            f"{' and '.join(needs)} need validation data — pass val_data to train() or use a built-in data set"
        )
    return train_loader, None


def _wants_curriculum(config: Any, train_data: Any) -> bool:
    """A ``curriculum`` section that asks for something, or training data with ``mixing_weights``.

    Raises:
        ConfigError: a curriculum asked for with a ready-made DataLoader (its batches are fixed).
    """
    if isinstance(train_data, DataLoader):
        if curriculum_active(config.curriculum, None):
            raise ConfigError(
                "the curriculum section needs the training Dataset, but train_data is a DataLoader whose batches are "
                "fixed — pass the dataset itself, or remove the curriculum section"
            )
        return False
    return curriculum_active(config.curriculum, train_data)


def _curriculum_loader(config: Any, train_data: Any, pin: bool) -> DataLoader:
    """The training DataLoader drawing its batches from a :class:`CurriculumBatchSampler`.

    The batch count per epoch is the plain loader's, so :func:`plan_total_steps` plans the same
    run; the sampler's order depends only on ``training.seed``, the epoch and the position, so
    the data iterator's mid-epoch resume (re-draw the epoch, skip the consumed batches) is exact.
    """
    t, d = config.training, config.data
    dataset = to_dataset(train_data)
    try:
        n = len(cast(Sized, dataset))
    except TypeError:
        n = 0  # an IterableDataset: the sampler names the problem
    batches = n // t.batch_size if d.drop_last else math.ceil(n / t.batch_size)
    total = plan_total_steps(config, batches) if batches else None
    generator = torch.Generator()
    generator.manual_seed(t.seed)
    sampler = CurriculumBatchSampler.from_config(dataset, config, total_steps=total, generator=generator)
    workers = d.num_workers > 0
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=getattr(dataset, "collate_fn", None) or collate_batch,
        num_workers=d.num_workers,
        pin_memory=pin and torch.cuda.is_available(),
        generator=generator,
        worker_init_fn=seed_worker if workers else None,
        persistent_workers=workers,
    )


def attach_loss_scoring(train_loader: Any, model: Any, loss_strategy: Any, runtime: Any, *, batch_size: int) -> None:
    """``curriculum.difficulty: loss``: give the sampler its scoring pass (per-example loss of ``model``).

    The pass runs when the first epoch is drawn, before the first step, so it scores the starting
    model; a resumed run takes the scores from its checkpoint instead and skips the pass.
    Does nothing for any other loader.
    """
    sampler = getattr(train_loader, "batch_sampler", None)
    if not isinstance(sampler, CurriculumBatchSampler) or sampler.difficulty != "loss":
        return

    def forward(m: Any, batch: Any) -> tuple[Tensor, Tensor]:
        inputs, labels = split_batch(batch)
        return extract_logits(call_model(m, inputs)), labels

    def scorer(dataset: Any) -> Any:
        return score_by_loss(
            model, dataset, loss_strategy, batch_size=batch_size, to_device=runtime.to_device, forward=forward
        )

    sampler.scorer = scorer


def plan_total_steps(config: Any, batches_per_epoch: int | None) -> int:
    """Optimizer steps of the run: ``max_steps``, else ``epochs * ceil(batches / accumulation)``.

    Raises:
        ConfigError: data without a length and no ``training.max_steps``.
        DataError: no batches at all.

    Example:
        >>> from trainengine import TrainingConfigBuilder
        >>> plan_total_steps(TrainingConfigBuilder().with_training(epochs=2, gradient_accumulation_steps=4).build(), 10)
        6
    """
    t = config.training
    if t.max_steps is not None:
        total = t.max_steps
    elif batches_per_epoch is None:
        raise ConfigError("the training data has no length (an IterableDataset?): set training.max_steps")
    else:
        total = t.epochs * math.ceil(batches_per_epoch / t.gradient_accumulation_steps)
    if total < 1:
        raise DataError("the training data produced no batches — check the data set and data.drop_last")
    return total


def record_data_facts(train_loader: Any, val_loader: Any, task_spec: TaskSpec, *, check: bool) -> dict[str, Any]:
    """Sizes, fingerprints, train/val overlap (``check``) and the LM sequence length of the data.

    Example:
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> import torch
        >>> loader = DataLoader(TensorDataset(torch.zeros(4, 2), torch.zeros(4)))
        >>> record_data_facts(loader, None, TaskSpec.regression("r"), check=False)["num_train_samples"]
        4
    """
    info: dict[str, Any] = {}
    train_ds = getattr(train_loader, "dataset", None)
    val_ds = getattr(val_loader, "dataset", None) if val_loader is not None else None
    info["num_train_samples"] = _safe_len(train_ds)
    info["num_val_samples"] = _safe_len(val_ds)
    info["train_fingerprint"] = _safe_fingerprint(train_ds)
    info["val_fingerprint"] = _safe_fingerprint(val_ds)
    indexable = not isinstance(train_ds, IterableDataset) and not isinstance(val_ds, IterableDataset)
    if train_ds is not None and val_ds is not None and indexable and check:
        try:
            info["train_val_overlap"] = check_overlap(train_ds, val_ds)
        except (TypeError, DataError):
            info["train_val_overlap"] = None  # a dataset we cannot index or hash
    # File-backed data (data.train_file) carries its run record, preprocessing and tokenizer.
    for key, attr in (("source", "data_record"), ("preprocessing", "preprocessing")):
        value = getattr(train_ds, attr, None)
        if value:
            info[key] = value
    tokenizer = getattr(train_ds, "tokenizer", None)
    if tokenizer is not None and hasattr(tokenizer, "to_dict"):
        info["tokenizer"] = tokenizer.to_dict()
        to_json = getattr(tokenizer, "to_json", None)
        if callable(to_json):  # a trained tokenizer travels in checkpoint metadata (export needs it)
            info["tokenizer_json"] = to_json()
    if task_spec.task_type == "language_modeling" and indexable and train_ds is not None and _safe_len(train_ds):
        _, labels = split_batch(train_ds[0])
        info["seq_len"] = int(labels.shape[-1])
    return info


def _label_column(ds: Any) -> Tensor | None:
    """The whole label tensor of in-memory data (``(X, y)`` columns or a ``labels`` column), else None."""
    if isinstance(ds, InMemoryDataset):
        cols = ds.columns
        label = cols.get("labels") if isinstance(cols, dict) else (cols[1] if len(cols) == 2 else None)
        return label if isinstance(label, Tensor) else None
    tensors = getattr(ds, "tensors", None)  # torch.utils.data.TensorDataset
    if isinstance(tensors, tuple) and len(tensors) == 2 and isinstance(tensors[1], Tensor):
        return tensors[1]
    return None


def check_label_values(train_loader: Any, val_loader: Any, task_spec: TaskSpec, strategy: Any) -> set[str]:
    """Check every label of in-memory data against the task once, before the first step.

    One vectorised pass per split (one host sync each); data that is not in memory is checked
    on its first batches instead (``StepRunner`` and ``Trainer.evaluate``).

    Returns:
        The splits checked whole (``{"train", "val"}`` or part): their first batches need no check.

    Raises:
        DataError: a label outside ``[0, num_classes)``, naming the sample and the value.

    Example:
        >>> import torch
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> spec = TaskSpec.classification("c", 3)
        >>> loader = DataLoader(TensorDataset(torch.zeros(3, 2), torch.tensor([0, 1, 3])))
        >>> try:
        ...     check_label_values(loader, None, spec, spec.loss_strategy)
        ... except ValueError as exc:
        ...     print(str(exc)[:37])
        train data: sample 2 has label 3, but
    """
    checked: set[str] = set()
    for split, loader in (("train", train_loader), ("val", val_loader)):
        labels = _label_column(getattr(loader, "dataset", None))
        if labels is not None:
            strategy.check_label_values(labels, num_classes=task_spec.num_classes, what=f"{split} data")
            checked.add(split)
    return checked


def results_of(trainer: Trainer, *, train_time: float, wall_time: float) -> dict[str, Any]:
    """What ``Trainer.train()`` returns (see its docstring), checkpoint paths from its checkpointer."""
    st, rt = trainer.state, trainer.runtime
    if rt is None:
        raise TrainEngineError("no results before train() has set the Trainer up")
    val_losses = [r["val/loss"] for r in trainer.history["val"] if "val/loss" in r]
    busy = max(train_time, 1e-9)
    tokens_per_second = st.tokens_seen / busy if trainer.task_spec.task_type == "language_modeling" else None
    mfu = trainer.log_window.mfu(tokens_per_second)
    ckpt = trainer.checkpointer
    best = ckpt.best_path if ckpt is not None else None
    epochs_done = st.epoch + (st.batch_in_epoch / trainer.batches_per_epoch if trainer.batches_per_epoch else 0)
    return {
        "best_val_loss": min(val_losses) if val_losses else None,
        "best_metric": st.best_metric,
        "best_metric_name": trainer.monitor,
        "best_step": st.best_step,
        "final_metrics": trainer.history["val"][-1] if trainer.history["val"] else {},
        "history": trainer.history,
        "steps": st.step,
        "epochs": round(epochs_done, 4),
        "stopped_early": st.stopped_early,
        "stop_reason": st.stop_reason,
        "run_dir": str(trainer.run_dir) if trainer.run_dir is not None else None,
        "samples_per_second": st.samples_seen / busy,
        "tokens_per_second": tokens_per_second,
        "mfu": mfu,
        "train_time_s": train_time,
        "wall_time_s": wall_time,
        "nonfinite_steps": st.num_nonfinite_steps,
        "num_parameters": trainer.num_parameters,
        "device": str(rt.device),
        "precision": rt.precision,
        "last_checkpoint": str(ckpt.last_path) if ckpt is not None and ckpt.last_path else None,
        "best_checkpoint": str(best) if best else None,
        # async saves: the time the loop waited for each copy
        **({"checkpoint_stall_seconds": list(ckpt.stalls)} if ckpt is not None and ckpt.stalls else {}),
    }


def model_config_dict(config: Any) -> dict[str, Any] | None:
    """A model config as a plain dict (dataclass, pydantic model, dict), or None.

    Example:
        >>> model_config_dict({"d_model": 8})
        {'d_model': 8}
    """
    if config is None:
        return None
    if is_dataclass(config) and not isinstance(config, type):
        return asdict(config)
    if hasattr(config, "model_dump"):
        return config.model_dump(mode="json")
    if isinstance(config, dict):
        return dict(config)
    return {"repr": repr(config)}


def with_label_smoothing(spec: TaskSpec, value: float) -> TaskSpec:
    """Apply ``training.label_smoothing`` to the task (a value set on the TaskSpec itself wins).

    Raises:
        ConfigError: smoothing asked for a regression task, or two different values.
    """
    if not value or spec.label_smoothing == value:
        return spec
    if spec.task_type == "regression":
        raise ConfigError(
            f"training.label_smoothing ({value}) applies to class targets; the task is regression — set it to 0"
        )
    if spec.label_smoothing:
        raise ConfigError(
            f"training.label_smoothing ({value}) differs from the TaskSpec's label_smoothing "
            f"({spec.label_smoothing}) — set one of them"
        )
    return dataclasses.replace(spec, label_smoothing=value)  # replace, not to_dict: keeps a compute_metrics function


def with_task_section(spec: TaskSpec, section: Any, monitor: str | None = None) -> TaskSpec:
    """Apply the config's ``task:`` section (metrics, listed class weights, compute_metrics) to the task.

    ``training.monitor`` naming a metric the task can report but does not list is added to its
    metrics (monitoring ``f1_macro`` reports ``f1_macro``). ``class_weights: auto`` needs the
    training labels: :func:`with_auto_class_weights` applies it once the data is known.

    Raises:
        ConfigError: a metric the task type cannot report (listing those it can), class weights
            for a task without classes or with the wrong count, or weights set twice differently.

    Example:
        >>> from trainengine import TrainingConfigBuilder
        >>> cfg = TrainingConfigBuilder().with_section("task", metrics=["f1_macro"]).build()
        >>> with_task_section(TaskSpec.classification("c", 3), cfg.task, "val/roc_auc").metrics
        ('loss', 'f1_macro', 'roc_auc')
    """
    supported = SUPPORTED_METRICS.get(spec.task_type, spec.metrics)
    names = list(section.metrics) if section.metrics is not None else list(spec.metrics)
    wanted = canonical_metric(monitor).split("/", 1)[1] if monitor else None
    if wanted is not None and wanted in supported and wanted not in names:
        names.append(wanted)
    unknown = [n for n in names if n not in supported]
    if unknown:
        raise ConfigError(
            f"task.metrics {', '.join(map(repr, unknown))} are not reported by {spec.task_type} tasks — "
            f"supported: {', '.join(supported)}"
        )
    changes: dict[str, Any] = {"metrics": ("loss", *(n for n in dict.fromkeys(names) if n != "loss"))}
    if section.compute_metrics is not None:
        changes["compute_metrics"] = section.compute_metrics
    weights = section.class_weights
    if weights is not None:
        if spec.task_type not in ("classification", "vision"):
            raise ConfigError(f"task.class_weights applies to class targets; the task is {spec.task_type} — remove it")
        if spec.class_weights is not None and (weights == "auto" or list(spec.class_weights) != list(weights)):
            raise ConfigError(
                f"task.class_weights ({weights}) and the TaskSpec's class_weights ({list(spec.class_weights)}) "
                "are both set — set one of them"
            )
        if weights != "auto":
            changes["class_weights"] = tuple(weights)
    own = spec.monitor.split("/", 1)[-1]
    if own in supported and own not in changes["metrics"]:
        changes["monitor"], changes["monitor_mode"] = "val/loss", "min"  # task.metrics dropped the spec's monitor
    try:
        return dataclasses.replace(spec, **changes)
    except TaskError as exc:
        raise ConfigError(f"task: {exc}") from None


def with_auto_class_weights(spec: TaskSpec, train_loader: Any) -> TaskSpec:
    """``task.class_weights: auto``: inverse-frequency weights ``n / (C * count_c)`` from the training labels.

    The labels of in-memory data (and data sets with a ``labels`` tensor) are read directly;
    other data is read once through ``train_loader`` (one pass, no model).

    Raises:
        ConfigError: a streamed (iterable) data set, whose labels cannot be read up front.
        TaskError: a class with no training example (its weight would be infinite).
    """
    ds = getattr(train_loader, "dataset", None)
    labels = _label_column(ds)
    column = getattr(ds, "labels", None)  # image folders keep their labels as one tensor
    if labels is None and isinstance(column, Tensor):
        labels = column
    if labels is None:
        if isinstance(ds, IterableDataset):
            raise ConfigError(
                "task.class_weights auto needs the training labels up front; streamed data cannot give them — "
                "list one weight per class instead"
            )
        labels = torch.cat([split_batch(batch)[1].reshape(-1) for batch in train_loader])
    num_classes = spec.num_classes or int(labels.max()) + 1
    weights = balanced_class_weights(labels, num_classes, ignore_index=spec.ignore_index)
    return dataclasses.replace(spec, class_weights=weights)


def monitor_mode_for(monitor: str, configured: str, spec: TaskSpec) -> str:
    """``min`` / ``max`` for the monitored metric: the configured mode, else the metric's own direction.

    Raises:
        ConfigError: ``auto`` for a metric only ``compute_metrics`` returns (its direction is unknown).
    """
    if configured != "auto":
        return configured
    metric = monitor.split("/", 1)[1]
    if metric in METRIC_MODES:
        return METRIC_MODES[metric]
    if monitor == spec.monitor:
        return spec.monitor_mode
    raise ConfigError(
        f"training.monitor '{monitor}' comes from compute_metrics, so its direction is unknown — set "
        "training.monitor_mode to max (higher is better) or min"
    )


def canonical_metric(name: str) -> str:
    """``val_loss`` -> ``val/loss`` (both spellings are accepted in configs)."""
    for prefix in ("val_", "train_"):
        if name.startswith(prefix):
            return prefix[:-1] + "/" + name[len(prefix) :]
    return name if "/" in name else f"val/{name}"


def _safe_len(ds: Any) -> int | None:
    try:
        return len(ds) if ds is not None else None
    except TypeError:
        return None


def _safe_fingerprint(ds: Any) -> str | None:
    if ds is None or isinstance(ds, IterableDataset):
        return None  # a stream may be readable once only: never consume it for a hash
    try:
        if getattr(ds, "data_fingerprint", None):  # file data: the files' content hash covers every row
            return fingerprint_dataset(ds)
        return fingerprint_dataset(ds, max_items=10_000)
    except (TypeError, DataError, NotImplementedError):
        return None
