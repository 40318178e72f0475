"""Typed configuration sections.

Every field has a type, a default, bounds where numbers are involved and a one-line
``description``; the descriptions feed ``trainengine config show --explain`` and
``docs/config-reference.md``. Fixed choices are ``Literal`` so a typo is a validation error, not a
silent fallback. Names of extensible things (model architecture, task, schedule, optimizer,
tracker back-ends, export formats, data set) are checked against the registries of
:mod:`trainengine.registries` instead: registering one more makes it valid here, and an unknown
name lists the registered ones with the closest suggestion. Such a field says which registry it
uses in ``json_schema_extra={"registry": ...}`` so ``explain()`` can list the choices.

Why one module of this length: one pydantic class per config section, each field with type, default,
bounds and description; the field descriptions are the documentation (config show --explain).
"""

from __future__ import annotations

from types import UnionType
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo, field_validator

from trainengine import registries
from trainengine.config._aliases import NOT_AN_ALIAS, OwnerLink, get_section_alias, set_section_alias

__all__ = [
    "Section",
    "TrainingSection",
    "OptimizerSection",
    "SchedulerSection",
    "CheckpointingSection",
    "TrackingSection",
    "DataSection",
    "ModelSection",
    "LoraSection",
    "CurriculumPhase",
    "CurriculumSection",
    "TransferSection",
    "DistributedSection",
    "ExportSection",
    "MonitoringSection",
    "RegistrySection",
    "TaskSection",
    "SECTION_TYPES",
]


class Section(BaseModel):
    """Base of every section: unknown keys are errors and assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)

    # The TrainingConfig this section was last read from, for the seeds' names of fields in other
    # sections (``config.training.weight_decay`` is ``optimizer.weight_decay``; config/_aliases.py).
    _owner: OwnerLink = PrivateAttr(default_factory=OwnerLink)

    if not TYPE_CHECKING:  # hidden from mypy, so a misspelt attribute in our own code stays a type error

        def __getattr__(self, name: str) -> Any:
            # Only reached when normal lookup fails: a seed's name of a field (training.grad_clip).
            if not name.startswith("_"):
                value = get_section_alias(self, name)
                if value is not NOT_AN_ALIAS:
                    return value
            return super().__getattr__(name)

    def __setattr__(self, name: str, value: Any) -> None:
        # ``config.training.max_steps = 0`` fails like construction does: one ConfigError
        # with the dotted path and the allowed range.
        from trainengine.config._errors import to_config_error, unknown_field_message
        from trainengine.errors import ConfigError

        section = next((k for k, v in SECTION_TYPES.items() if v is type(self)), type(self).__name__)
        if name not in type(self).model_fields and not name.startswith("_") and set_section_alias(self, name, value):
            return
        if name not in type(self).model_fields and not name.startswith("_"):
            # Same message as construction: a typo is named, with the closest field.
            raise ConfigError(
                unknown_field_message(f"{section}.{name}", [f"{section}.{n}" for n in type(self).model_fields])
            )
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            err = to_config_error(exc, type(self))
            raise type(err)([_full_path(section, p) for p in err.problems]) from None

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic's lax mode reads True as 1 and False as 0, so `--set training.epochs=true` or
        # `learning_rate: yes` became a number. Only booleans are refused: "3" and 3 stay accepted
        # for an int field, 3 for a float field.
        annotation = cls.model_fields[info.field_name or ""].annotation
        if isinstance(value, bool) and get_origin(annotation) is Literal and {"on", "off"} <= set(get_args(annotation)):
            # YAML 1.1 reads a bare `off` / `on` (and yes/no) as a boolean: an auto/on/off switch means the word.
            return "on" if value else "off"
        if isinstance(value, bool) or (isinstance(value, list) and any(isinstance(v, bool) for v in value)):
            kind = _number_kind(annotation)
            if kind is not None:
                raise ValueError(f"must be {kind}, not a boolean (got {value!r}) — write the number itself")
        return value


def _number_kind(annotation: Any) -> str | None:
    """'a whole number' / 'a number' / 'a list of whole numbers' for int / float / list[int] fields (None allowed)."""
    args = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (annotation,)
    args = tuple(a for a in args if a is not type(None))
    if len(args) != 1:
        return None
    (arg,) = args
    if get_origin(arg) is list and get_args(arg) in ((int,), (float,)):
        return "a list of whole numbers" if get_args(arg) == (int,) else "a list of numbers"
    return {int: "a whole number", float: "a number"}.get(arg)


def _registered(registry: registries.Registry, value: Any, *, also: tuple[str, ...] = ()) -> Any:
    """``value`` when it is in ``registry`` (or one of ``also``), else a ValueError naming the
    registered names and the closest one (to_config_error adds the field's dotted path)."""
    if value in also:
        return value
    problem = registry.problem(value)
    if problem is not None:
        if also:
            problem = problem.replace(" — available: ", f" — available: {', '.join(also)}, ", 1)
        raise ValueError(problem)
    return value


def _registered_list(registry: registries.Registry, values: list[str]) -> list[str]:
    problems = [p for p in (registry.problem(v) for v in values) if p is not None]
    if problems:
        raise ValueError("\n".join(problems))
    return values


def _full_path(section: str, problem: str) -> str:
    """``field: message`` -> ``section.field: message``; a validator's message that already names its
    full dotted path (``registry.gates.production.val_loss: ...``) is kept as it is."""
    _, _, message = problem.partition(": ")
    return message if message.startswith(f"{section}.") else f"{section}.{problem}"


class TrainingSection(Section):
    """How long and how to train: batch, learning rate, precision, evaluation, stopping."""

    epochs: int = Field(
        3, ge=1, le=1_000_000, description="Passes over the training data (ignored when max_steps is set)."
    )
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimizer steps; overrides epochs when set."
    )
    batch_size: int = Field(32, ge=1, le=1_000_000, description="Samples per micro-batch (per device).")
    eval_batch_size: int | None = Field(
        None, ge=1, description="Samples per evaluation batch; defaults to 2 x batch_size."
    )
    learning_rate: float = Field(1e-3, gt=0.0, le=10.0, description="Peak learning rate reached after warmup.")
    gradient_accumulation_steps: int = Field(
        1,
        ge=1,
        le=4096,
        description="Micro-batches accumulated per optimizer step (effective batch = batch_size x this).",
    )
    max_grad_norm: float | None = Field(
        1.0, gt=0.0, description="Clip the global gradient norm to this value; null disables clipping."
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description=(
            "Autocast precision: auto = bf16 on GPUs that support it, else fp32; fp16 uses a GradScaler and needs CUDA."
        ),
    )
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$",
        description="Device to train on: auto, cpu, cuda, cuda:N or mps.",
    )
    seed: int = Field(42, ge=0, le=2**32 - 1, description="Seed for python, numpy, torch and the data order.")
    deterministic: bool = Field(
        False, description="Bit-exact runs: deterministic algorithms and seeded data order (about 5-10% slower)."
    )
    compile: bool = Field(
        False,
        description=(
            "Compile the training step's forward and loss as one graph with torch.compile (graph breaks and "
            "recompilations are reported)."
        ),
    )
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = Field(
        "default", description="torch.compile mode with training.compile (max-autotune tunes kernels: slower start)."
    )
    fused_loss: Literal["auto", "on", "off"] = Field(
        "auto",
        description=(
            "Language modeling: a chunked linear + cross-entropy that never materialises the full logits; auto = on "
            "under training.compile where the model supports it (the built-in GPT, Hugging Face causal LMs), where it "
            "is faster and smaller than the plain loss; on = also eagerly (about half the peak memory, 10-20% slower)."
        ),
    )
    activation_checkpointing: bool = Field(
        False,
        description=(
            "Recompute each transformer block's activations in the backward pass: less memory, more compute "
            "(built-in GPT blocks; Hugging Face models through their own activation checkpointing)."
        ),
    )
    eval_interval_steps: int | None = Field(
        None, ge=1, description="Evaluate every N optimizer steps; null = only at epoch ends."
    )
    eval_every_epoch: bool = Field(True, description="Evaluate at the end of every epoch.")
    eval_at_start: bool = Field(
        False, description="Evaluate once before the first step (a step-0 baseline in the history)."
    )
    log_interval_steps: int = Field(
        10, ge=1, description="Read the loss back from the device and log it every N optimizer steps."
    )
    monitor: str | None = Field(
        None,
        description="Metric used for the best model and early stopping (e.g. val/loss); null = the task's default.",
    )
    monitor_mode: Literal["auto", "min", "max"] = Field(
        "auto", description="Whether the monitored metric should go down (min) or up (max); auto = the task's default."
    )
    early_stopping_patience: int | None = Field(
        None, ge=1, description="Stop after this many evaluations without improvement; null disables early stopping."
    )
    early_stopping_min_delta: float = Field(
        0.0, ge=0.0, description="Smallest change of the monitored metric that counts as an improvement."
    )
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="Label smoothing for classification losses.")
    nonfinite_policy: Literal["skip", "halt", "rollback"] = Field(
        "skip",
        description=(
            "On a non-finite loss or gradient: skip the step and go on; halt = emergency checkpoint, then stop; "
            "rollback = reload the last good checkpoint with a lower learning rate."
        ),
    )
    rollback_lr_factor: float = Field(
        0.5, gt=0.0, lt=1.0, description="rollback: multiply the learning rate by this after each rollback."
    )
    max_rollbacks: int = Field(
        3, ge=1, le=1000, description="rollback: give up (stop with an error) after this many rollbacks."
    )
    oom_policy: Literal["raise", "skip", "split"] = Field(
        "raise",
        description=(
            "On out-of-memory in a step: raise; skip the batch; or split = retry as smaller micro-batches (same "
            "effective batch and gradients)."
        ),
    )
    oom_max_splits: int = Field(
        3, ge=1, le=16, description="split: halve the micro-batches at most this many times before giving up."
    )
    max_nonfinite_fraction: float | None = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description=(
            "skip: stop with an error when this fraction of an epoch's optimizer steps (or more) were "
            "skipped as non-finite; 1.0 = when no step succeeded; null = never."
        ),
    )


class OptimizerSection(Section):
    """The optimizer and its hyper-parameters."""

    name: str = Field(
        "adamw",
        description="Optimizer: adamw, adam, sgd or one added with trainengine.registries.register_optimizer.",
        json_schema_extra={"registry": "OPTIMIZERS"},
    )
    weight_decay: float = Field(
        0.01,
        ge=0.0,
        le=1.0,
        description="Weight decay on weight matrices only; never on biases, norms, embeddings or other 1-D parameters.",
    )
    beta1: float = Field(0.9, ge=0.0, lt=1.0, description="Adam beta1 (first-moment decay).")
    beta2: float = Field(0.999, ge=0.0, lt=1.0, description="Adam beta2 (second-moment decay).")
    eps: float = Field(1e-8, gt=0.0, le=1.0, description="Adam epsilon.")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum.")
    nesterov: bool = Field(False, description="Use Nesterov momentum with SGD.")
    fused: Literal["auto", "on", "off"] = Field(
        "auto",
        description=(
            "Fused Adam/AdamW/SGD kernels: auto = on for CPU and CUDA parameters (they also skip non-finite steps on "
            "the device)."
        ),
    )

    @field_validator("name")
    @classmethod
    def _known_optimizer(cls, value: str) -> str:
        return _registered(registries.OPTIMIZERS, value)


class SchedulerSection(Section):
    """The learning-rate schedule, stepped once per optimizer step."""

    name: str = Field(
        "cosine",
        description="Schedule after warmup: a built-in one or one added with trainengine.registries.register_schedule.",
        json_schema_extra={"registry": "SCHEDULES"},
    )
    warmup_steps: int = Field(
        0, ge=0, description="Linear warmup length in optimizer steps (set this or warmup_ratio)."
    )
    warmup_ratio: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Linear warmup as a fraction of total optimizer steps (set this or warmup_steps).",
    )
    min_lr_ratio: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Final learning rate as a fraction of the peak (cosine, linear; the floor for reduce_on_plateau).",
    )
    cycle_steps: int = Field(2000, ge=1, description="Cyclic: optimizer steps from the low to the high learning rate.")
    cyclic_base_lr_ratio: float = Field(
        0.1, gt=0.0, le=1.0, description="Cyclic: low learning rate as a fraction of the peak."
    )
    cyclic_mode: Literal["triangular", "triangular2", "exp_range"] = Field(
        "triangular", description="Cyclic: shape of the cycle."
    )
    cyclic_gamma: float = Field(1.0, gt=0.0, le=1.0, description="Cyclic exp_range: amplitude multiplier per step.")
    one_cycle_pct_start: float = Field(
        0.3, gt=0.0, lt=1.0, description="One-cycle: fraction of steps spent increasing the learning rate."
    )
    one_cycle_div_factor: float = Field(25.0, gt=1.0, description="One-cycle: initial lr = peak / div_factor.")
    one_cycle_final_div_factor: float = Field(
        1e4, gt=1.0, description="One-cycle: final lr = initial lr / final_div_factor."
    )
    plateau_factor: float = Field(
        0.1, gt=0.0, lt=1.0, description="Reduce-on-plateau: multiply the lr by this on a plateau."
    )
    plateau_patience: int = Field(
        3, ge=0, description="Reduce-on-plateau: evaluations without improvement before reducing."
    )
    plateau_threshold: float = Field(
        1e-4, ge=0.0, description="Reduce-on-plateau: relative change that counts as an improvement."
    )
    plateau_cooldown: int = Field(0, ge=0, description="Reduce-on-plateau: evaluations to wait after a reduction.")

    @field_validator("name")
    @classmethod
    def _known_schedule(cls, value: str) -> str:
        return _registered(registries.SCHEDULES, value)

    def __setattr__(self, name: str, value: Any) -> None:
        # Warmup is given one way: setting a length in steps clears a ratio and vice versa (seed
        # 001's "longer warmup: config.training.warmup_ratio = 0.1" on a config with 500 steps),
        # as a config layer that sets one does.
        other = {"warmup_steps": "warmup_ratio", "warmup_ratio": "warmup_steps"}.get(name)
        if other is not None and value and getattr(self, other):
            super().__setattr__(other, 0 if other == "warmup_steps" else 0.0)
        super().__setattr__(name, value)


class CheckpointingSection(Section):
    """When and where checkpoints are written (the CheckpointManager arrives with checkpoints)."""

    enabled: bool = Field(False, description="Write checkpoints during training.")
    checkpoint_dir: str | None = Field(
        None,
        description=(
            "Folder for checkpoints; null = <run_dir>/checkpoints. A local or mounted folder: URLs (s3://, gs://) are "
            "refused, as checkpoints need atomic renames and fsync."
        ),
    )

    @field_validator("checkpoint_dir")
    @classmethod
    def _local_checkpoint_dir(cls, value: str | None) -> str | None:
        from trainengine._storage import refuse_url

        problem = refuse_url(value, "checkpointing.checkpoint_dir")
        if problem:
            raise ValueError(problem)
        return value

    save_every_n_epochs: int | None = Field(
        1, ge=1, description="Save a checkpoint every N epochs; null disables epoch saves."
    )
    folder_name: Literal["ckpt", "checkpoint_step"] = Field(
        "ckpt",
        description=(
            "Checkpoint folder names: ckpt (ckpt-000001000) or checkpoint_step (checkpoint_step_1000, as Hugging "
            "Face style scripts and seed 001 name them); both are read either way."
        ),
    )
    save_every_n_steps: int | None = Field(
        None, ge=1, description="Save a checkpoint every N optimizer steps; null disables step saves."
    )
    keep_best_k: int = Field(3, ge=0, le=1000, description="Keep the K best checkpoints by the monitored metric.")
    keep_last_n: int = Field(5, ge=1, le=1000, description="Keep the N newest checkpoints regardless of metric.")
    save_final_weights: bool = Field(
        True, description="Write the final model weights (safetensors) into the run directory."
    )
    async_save: bool = Field(
        False, description="Copy the state to CPU memory on the training thread and write it from a background thread."
    )
    save_on_interrupt: bool = Field(
        True, description="Write an emergency checkpoint on SIGINT/SIGTERM (Ctrl+C) before stopping."
    )
    on_save_error: Literal["stop", "continue"] = Field(
        "stop",
        description=(
            "When a checkpoint cannot be written (disk full, permissions): stop with the error, or log it and continue."
        ),
    )


class TrackingSection(Section):
    """Run naming and where the run directory goes."""

    experiment_name: str = Field(
        "default",
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Experiment folder under output_dir (letters, digits, . _ -).",
    )
    run_name: str | None = Field(
        None, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Run id; null = a timestamped id."
    )
    output_dir: str = Field(
        "runs", min_length=1, description="Root folder of run directories: <output_dir>/<experiment>/<run_id>/."
    )
    tags: list[str] = Field(default_factory=list, description="Free-form tags recorded in run.json.")
    notes: str = Field("", description="Free-form notes recorded in run.json.")
    progress: Literal["auto", "bar", "plain", "off"] = Field(
        "auto", description="Console progress: a live bar on a terminal, plain periodic lines otherwise."
    )
    write_run_dir: bool = Field(
        True, description="Write config.yaml, run.json, logs.jsonl and weights into a run directory."
    )
    backends: list[str] = Field(
        default_factory=list,
        description=(
            "Extra tracker back-ends fed from the run's logs (tensorboard, mlflow, wandb, jsonl, or one added with "
            "trainengine.registries.register_tracker); they write inside the run directory."
        ),
        json_schema_extra={"registry": "TRACKERS"},
    )
    project: str = Field(
        "trainengine",
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Project name for MLflow / W&B.",
    )
    experiment_db: bool = Field(True, description="Record the run and its logged metrics in the experiment database.")
    db_url: str | None = Field(
        None,
        description=(
            "Experiment database: a SQLAlchemy URL or a file path; null = <output_dir>/experiments.db (SQLite)."
        ),
    )

    @field_validator("backends")
    @classmethod
    def _known_trackers(cls, value: list[str]) -> list[str]:
        return _registered_list(registries.TRACKERS, value)


class DataSection(Section):
    """Which data to train on and how it is batched."""

    dataset: str | None = Field(
        None,
        description=(
            "Data set (built in: digits, diabetes, pystdlib; more with trainengine.data.register_dataset); null when "
            "data is passed to Trainer.train()."
        ),
        json_schema_extra={"registry": "DATASETS"},
    )
    task: str = Field(
        "auto",
        description=(
            "Task to train: auto = the data set's natural task (vision = the digits as 8x8 images for the CNN); more "
            "with trainengine.registries.register_task."
        ),
        json_schema_extra={"registry": "TASKS", "also": ["auto"]},
    )
    val_fraction: float = Field(
        0.2, gt=0.0, lt=1.0, description="Fraction of a built-in data set held out for validation."
    )
    max_length: int = Field(128, ge=2, le=1_000_000, description="Sequence length in tokens for language modeling.")
    max_train_samples: int | None = Field(None, ge=1, description="Use at most this many training samples; null = all.")
    max_val_samples: int | None = Field(None, ge=1, description="Use at most this many validation samples; null = all.")
    max_corpus_bytes: int = Field(
        2_000_000, ge=1024, description="pystdlib: bytes of Python source read into the corpus."
    )
    num_workers: int = Field(0, ge=0, le=256, description="DataLoader worker processes.")
    pin_memory: Literal["auto", "on", "off"] = Field(
        "auto", description="Pin host memory for faster copies: auto = on when training on CUDA."
    )
    shuffle: bool = Field(True, description="Shuffle the training data every epoch (seeded).")
    drop_last: bool = Field(False, description="Drop the last incomplete training batch.")
    check_overlap: bool = Field(
        True, description="Warn when validation samples also appear in the training data (leakage)."
    )
    # -- your own files (docs/data.md) -----------------------------------------------------
    train_file: str | list[str] | None = Field(
        None,
        description=(
            "Training data file(s): a path, a glob (data/*.csv) or a list; CSV, JSONL, Parquet, text, an image "
            "folder (class_name/xxx.png) or a Hugging Face save_to_disk folder. Instead of data.dataset."
        ),
    )
    val_file: str | list[str] | None = Field(
        None,
        description="Validation file(s); null = hold out data.val_fraction of the training rows (seeded).",
    )
    test_file: str | list[str] | None = Field(
        None, description="Test file(s), evaluated once after training (test_* metrics in the run record)."
    )
    format: str = Field(
        "auto",
        description=(
            "File format: auto = by extension (.csv/.tsv, .jsonl/.ndjson, .parquet, .txt, a folder of class "
            "folders, a save_to_disk folder), or csv, jsonl, parquet, text, imagefolder, hf_disk; more with "
            "trainengine.registries.register_data_format."
        ),
        json_schema_extra={"registry": "DATA_FORMATS", "also": ["auto"]},
    )
    feature_columns: list[str] | None = Field(
        None, description="Tabular input columns, in order; null = every column but the label."
    )
    label_column: str | None = Field(
        None, description="Tabular target column; null = a column named label, target or y."
    )
    text_column: str | None = Field(
        None, description="JSONL / save_to_disk text column for language modeling; null = a column named text."
    )
    categorical_columns: list[str] | None = Field(
        None, description="Columns treated as categories; null = the string and boolean columns."
    )
    categorical_encoding: Literal["onehot", "embedding"] = Field(
        "onehot",
        description="onehot: one input per category; embedding: a learned vector per category (model tabular_mlp).",
    )
    max_categories: int = Field(
        100, ge=1, le=100_000, description="Keep the N most frequent training categories per column; rarer = other."
    )
    standardize: bool = Field(
        True,
        description="Standardise numeric columns with the training split's mean and std (saved for serving).",
    )
    missing_values: Literal["fill", "drop", "error"] = Field(
        "fill",
        description=(
            "Missing feature values: fill (numeric = training mean, categorical = a missing category), drop the "
            "row, or error. Rows without a label are always dropped (counted in the run record)."
        ),
    )
    bad_rows: Literal["error", "skip"] = Field(
        "error",
        description="A malformed row (wrong column count, bad JSON, unparsable value, unreadable image): stop "
        "with its file and line, or skip it and count it.",
    )
    delimiter: str | None = Field(
        None, min_length=1, max_length=1, description="CSV delimiter; null = ',' (tab for .tsv files)."
    )
    tokenizer: str = Field(
        "byte",
        description=(
            "Text tokenizer: byte (UTF-8 bytes, vocabulary 256), bpe / bpe:<N> (dataset prm: a byte-level BPE of N "
            "tokens trained on the training texts) or the path of a Hugging Face tokenizer folder / tokenizer.json "
            "(needs trainengine[data]); with dataset prm a local backbone tokenizer (model.name_or_path) takes "
            "precedence over byte and bpe. Saved with checkpoints and export bundles."
        ),
    )
    image_size: int | None = Field(
        None, ge=4, le=4096, description="Image folders: resize to this square size; null = keep (sizes must match)."
    )
    image_mode: Literal["auto", "L", "RGB"] = Field(
        "auto", description="Image folders: L (grayscale), RGB, or auto (L when every image is grayscale)."
    )
    cache_dir: str | None = Field(
        None,
        description=(
            "Folder of the parsed-data cache (memory-mapped Arrow files keyed by the files' hashes); null = "
            "$TRAINENGINE_DATA_CACHE, else ~/.cache/trainengine/data."
        ),
    )
    # -- reasoning-step data for process reward models (dataset: prm; docs/reward-models.md) ----------
    prm800k_path: str | None = Field(
        None, description="PRM800K: a JSONL file, a glob or a folder of phase1_*/phase2_* JSONL files."
    )
    reveal_path: str | None = Field(None, description="REVEAL: a CSV file, a glob or a folder of CSV files.")
    eqasc_path: str | None = Field(None, description="EQASC: a JSON-lines file, a glob or a folder.")
    use_prm800k: bool = Field(True, description="Use PRM800K (when prm800k_path is set).")
    use_reveal: bool = Field(
        True, description="Use REVEAL (when reveal_path is set); evaluation only unless reveal_for_training."
    )
    use_eqasc: bool = Field(True, description="Use EQASC (when eqasc_path is set).")
    reveal_for_training: bool = Field(
        False,
        description="Mix REVEAL into training; by default it is a test set only, as its published terms allow.",
    )
    prm800k_weight: float = Field(
        0.5, ge=0.0, description="PRM800K's share of the training mix (weights are normalised)."
    )
    reveal_weight: float = Field(
        0.25, ge=0.0, description="REVEAL's share of the training mix (with reveal_for_training)."
    )
    eqasc_weight: float = Field(0.25, ge=0.0, description="EQASC's share of the training mix.")
    prm800k_phase: Literal[1, 2] | None = Field(
        None, description="PRM800K phase files: 1 (simpler problems), 2 (harder); null = both."
    )
    max_steps_per_example: int = Field(
        10, ge=1, le=10_000, description="Keep at most this many reasoning steps per example."
    )
    step_separator: str = Field(
        "\n", description="Text put after every reasoning step; each step is scored at its last token."
    )
    source_fields: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description=(
            "Per source (prm800k, reveal, eqasc): field or column names that differ from the published files', "
            "e.g. {reveal: {step: step_text}} (docs/reward-models.md lists each source's fields)."
        ),
    )

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        return _registered(registries.DATA_FORMATS, value, also=("auto",)).lower()

    @field_validator("train_file", "val_file", "test_file")
    @classmethod
    def _file_list(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list):
            if not value:
                raise ValueError("an empty list of files; give at least one path or null")
            if any(not str(v).strip() for v in value):
                raise ValueError("an empty path in the list of files")
        elif isinstance(value, str) and not value.strip():
            raise ValueError("an empty path; give a file, a glob or null")
        return value

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str | None) -> str | None:
        # Checked with the config, not hours later at train time. Data sets registered with
        # trainengine.data.register_dataset before the config is built (or by a plugin) count.
        if value is None:
            return value
        return _registered(registries.DATASETS, value).lower()

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        return _registered(registries.TASKS, value, also=("auto",))


class ModelSection(Section):
    """The built-in model to create (ignored when you pass your own model)."""

    architecture: str = Field(
        "auto",
        description=(
            "Model: auto = the task's default (mlp, cnn for vision, gpt for language modeling), or a name added with "
            "trainengine.models.register_model."
        ),
        json_schema_extra={"registry": "MODELS", "also": ["auto"]},
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Keyword arguments of a registered (not built-in) model's builder; data sizes it names (input_dim, "
            "input_shape, num_outputs, output_dim, num_classes, vocab_size) are filled in."
        ),
    )
    hidden_dims: list[int] = Field(default_factory=lambda: [128, 128], description="MLP hidden layer widths.")
    activation: Literal["gelu", "relu", "silu", "tanh"] = Field("gelu", description="MLP activation.")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout probability.")
    cnn_channels: list[int] = Field(
        default_factory=lambda: [32, 64], description="CNN channel widths, one conv block each."
    )
    vocab_size: int = Field(256, ge=2, description="GPT vocabulary size (256 for byte-level text).")
    max_seq_len: int = Field(128, ge=2, description="GPT context length (longest sequence it accepts).")
    d_model: int = Field(128, ge=8, description="GPT embedding width.")
    n_heads: int = Field(4, ge=1, description="GPT attention heads; must divide d_model.")
    n_layers: int = Field(2, ge=1, le=512, description="GPT transformer blocks.")
    d_ff: int | None = Field(None, ge=1, description="GPT feed-forward width; null = 4 x d_model.")
    tie_weights: bool = Field(True, description="Share the GPT token embedding with the output layer.")
    bias: bool = Field(False, description="Use biases in GPT linear layers and norms.")
    # -- Hugging Face backbones (reward_model; docs/reward-models.md) ------------------------------
    name_or_path: str | None = Field(
        None,
        description=(
            "Backbone to load with transformers: a local folder, or a hub id where the network allows (reward_model)."
        ),
    )
    backbone_config: dict[str, Any] | None = Field(
        None,
        description=(
            "Build a randomly initialised backbone from this transformers config instead (model_type plus its "
            "fields, e.g. {model_type: llama, hidden_size: 64, num_hidden_layers: 2, ...})."
        ),
    )
    mlp_hidden_dims: list[int] = Field(
        default_factory=lambda: [1024, 256], description="Reward head: hidden widths of the MLP on each step."
    )
    mlp_dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Reward head: dropout between MLP layers.")
    freeze_backbone: bool = Field(
        False, description="Train the head only (the backbone frozen); with lora.enabled the adapters train too."
    )

    @field_validator("architecture")
    @classmethod
    def _known_architecture(cls, value: str) -> str:
        return _registered(registries.MODELS, value, also=("auto",))


class LoraSection(Section):
    """LoRA adapters (PEFT) on a Hugging Face backbone: only the adapters and the head train."""

    enabled: bool = Field(False, description="Train LoRA adapters on the backbone instead of its weights.")
    lora_r: int = Field(16, ge=1, le=4096, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    lora_dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout on the LoRA path.")
    target_modules: list[str] = Field(
        default_factory=list,
        description=(
            "Module names to adapt (q_proj, v_proj, ...); empty = the architecture's usual attention projections."
        ),
    )
    bias: Literal["none", "all", "lora_only"] = Field("none", description="Which biases train with the adapters.")


class DistributedSection(Section):
    """Multi-process training under torchrun: DDP or FSDP2 (see docs/distributed.md).

    The strategy takes effect when the process runs under a launcher (``torchrun``, or
    ``trainengine train --nproc-per-node N``, which starts torchrun itself); ``nproc_per_node`` and
    ``nnodes`` are read only by that launch, the DDP fields only by DDP and the ``fsdp_`` fields only
    by FSDP2. Every rank stops within ``timeout_s`` when another one fails, instead of hanging in a collective.
    """

    strategy: Literal["auto", "none", "ddp", "fsdp2"] = Field(
        "auto",
        description=(
            "auto: DDP when launched with WORLD_SIZE > 1, else one process; none: one process (a multi-process "
            "launch is refused); ddp: DistributedDataParallel; fsdp2: fully_shard (parameters, gradients and "
            "optimizer state sharded over the processes, sharded checkpoints)."
        ),
    )
    backend: Literal["auto", "nccl", "gloo"] = Field(
        "auto", description="Process-group backend: auto = nccl on CUDA devices, gloo on the CPU."
    )
    nproc_per_node: int = Field(
        1,
        ge=1,
        le=1024,
        description=(
            "Processes per node; above 1, `trainengine train` starts torchrun itself (--nproc-per-node wins over it)."
        ),
    )
    nnodes: int = Field(
        1,
        ge=1,
        le=65536,
        description="Nodes for `trainengine train` to launch on; above 1 it needs --rdzv-endpoint HOST:PORT.",
    )
    find_unused_parameters: bool = Field(
        False,
        description="DDP: allow parameters that get no gradient in a step (costs one extra graph traversal per step).",
    )
    static_graph: bool = Field(
        False,
        description="DDP: the set of used parameters never changes between steps, so DDP can optimise its buckets.",
    )
    bucket_cap_mb: float = Field(
        25.0, gt=0.0, le=65536.0, description="DDP: gradient bucket size in MiB (the all-reduce granularity)."
    )
    sync_batchnorm: bool = Field(
        True, description="DDP: convert BatchNorm layers to SyncBatchNorm (statistics over the global batch)."
    )
    timeout_s: float = Field(
        600.0,
        gt=0.0,
        le=86400.0,
        description=(
            "Bound on every collective, in seconds: when a rank fails, the others stop with a clear message within it."
        ),
    )

    fsdp_wrap_modules: list[str] = Field(
        default_factory=list,
        description=(
            "FSDP2: class names of the modules sharded as one unit each (e.g. [Block]); empty = every element of "
            "the model's ModuleLists (its transformer blocks). The rest of the model is sharded with the root."
        ),
    )
    fsdp_reshard_after_forward: bool = Field(
        True,
        description=(
            "FSDP2: free each unit's gathered parameters after its forward and gather them again for the backward "
            "(less memory); false keeps them until the backward (less communication)."
        ),
    )
    fsdp_cpu_offload: bool = Field(
        False,
        description="FSDP2: keep parameters, gradients and optimizer state on the CPU; the optimizer steps there.",
    )
    fsdp_reduce_dtype: Literal["float32", "bfloat16"] = Field(
        "float32",
        description=(
            "FSDP2: dtype of the gradient reduce-scatter. With training.precision bf16 the parameters are gathered "
            "in bf16; reducing in float32 keeps the gradient sum exact to fp32."
        ),
    )


class ExportSection(Section):
    """Export a verified bundle when training ends (see docs/export.md)."""

    enabled: bool = Field(
        False,
        description=(
            "Create an export bundle (<output_dir>/<experiment>_<time>/) when training ends; its folder is "
            "results['export_dir']."
        ),
    )
    formats: list[str] = Field(
        default_factory=lambda: ["pytorch"],
        description=(
            "Formats in the bundle: pytorch, onnx, torchscript, torch_export, or one added with "
            "trainengine.registries.register_export_format."
        ),
        json_schema_extra={"registry": "EXPORT_FORMATS"},
    )
    output_dir: str = Field("exports", min_length=1, description="Folder that receives export bundles.")
    verify: bool = Field(
        True,
        description=(
            "Fail the export when a format differs from the PyTorch outputs by more than 1e-4 (relative); false = "
            "record the differences only."
        ),
    )

    @field_validator("formats")
    @classmethod
    def _known_formats(cls, value: list[str]) -> list[str]:
        return _registered_list(registries.EXPORT_FORMATS, value)


class MonitoringSection(Section):
    """Health and speed probes."""

    gradient_monitor: bool = Field(
        False,
        description=(
            "Check gradient norms every gradient_check_interval steps and warn on vanishing/exploding gradients."
        ),
    )
    gradient_check_interval: int = Field(10, ge=1, description="Optimizer steps between gradient checks.")
    grad_norm_warning: float | None = Field(
        None,
        gt=0.0,
        description="Gradient norm above which a warning is logged; null = a spike of 5x the run's recent median norm.",
    )
    grad_norm_critical: float | None = Field(
        None,
        gt=0.0,
        description=(
            "Gradient norm above which a critical alert is logged; null = a spike of 20x the run's recent median norm."
        ),
    )
    peak_flops: float | None = Field(
        None, gt=0.0, description="Peak FLOP/s of one device for MFU; null = looked up for known GPUs."
    )
    profile_steps: int | None = Field(
        None,
        ge=1,
        le=1000,
        description=(
            "Run torch.profiler over this many optimizer steps after profile_warmup_steps and write a trace "
            "(Chrome / TensorBoard) and the top kernels and memory to <run_dir>/profile; null = off "
            "(trainengine train --profile N)."
        ),
    )
    profile_warmup_steps: int = Field(
        5, ge=0, le=10_000, description="Steps to run (compilation, allocator, data loader warm-up) before profiling."
    )
    profile_data: bool = Field(
        True,
        description=(
            "Save a profile of the training data (histograms, labels, lengths) as data_profile.json in the run "
            "directory, for later drift checks."
        ),
    )
    sample_prompts: list[str] = Field(
        default_factory=list,
        description=(
            "Language models: at each evaluation, greedily complete each prompt and log the texts (logs.jsonl records "
            "of type 'samples'); empty = off."
        ),
    )
    sample_max_new_tokens: int = Field(
        32, ge=1, le=4096, description="Tokens generated per sample prompt (monitoring.sample_prompts)."
    )

    @field_validator("sample_prompts")
    @classmethod
    def _non_empty_prompts(cls, value: list[str]) -> list[str]:
        # An empty prompt has no token to condition on: refused with the config, not at the first evaluation.
        empty = [i for i, prompt in enumerate(value) if not prompt]
        if empty:
            raise ValueError(f"prompts {empty} are empty strings; give each sample prompt at least one character")
        return value


class RegistrySection(Section):
    """The model registry that ModelRegistry.from_config(config) opens, and its promotion gates."""

    url: str = Field(
        "models.db",
        min_length=1,
        description=(
            "Model registry database: a SQLite file path or a SQLAlchemy URL (postgresql://user@host/db) for a "
            "shared server."
        ),
    )
    artifact_root: str | None = Field(
        None,
        description=(
            "Folder for copies of registered artifacts, or an fsspec URL (s3://bucket/models, gs://..., "
            "memory://...); null = <stem>-artifacts/ next to a SQLite file (models.db -> models-artifacts/); required "
            "for a server URL."
        ),
    )
    gates: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description=(
            "Promotion gates per alias, e.g. {production: {val_loss: '<= 0.40', accuracy: '>= 0.9'}}; operators <=, "
            "<, >=, >, ==; a failing promotion is refused unless forced."
        ),
    )

    @field_validator("gates")
    @classmethod
    def _valid_gates(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        # Checked with the config, not at the first promotion months later. Each problem names its
        # full dotted path (registry.gates.production.val_loss) so the line stands on its own.
        if not value:
            return value
        from trainengine.config._gates import gate_problems

        problems = gate_problems(value, prefix="registry.gates")
        if problems:
            raise ValueError("\n".join(problems))
        return value

    require_significant: dict[str, dict[str, str | int | float]] = Field(
        default_factory=dict,
        description=(
            "Aliases whose promotions must beat the current holder in a paired bootstrap on the same data, e.g. "
            "{production: {metric: accuracy, confidence: 0.95}}; keys metric (default: the task's headline metric), "
            "confidence (one-sided, default 0.95), n_bootstrap (default 1000); refused unless forced."
        ),
    )

    @field_validator("require_significant")
    @classmethod
    def _valid_significance(
        cls, value: dict[str, dict[str, str | int | float]]
    ) -> dict[str, dict[str, str | int | float]]:
        if not value:
            return value
        from trainengine.config._significance import significance_problems

        problems = significance_problems(value, prefix="registry.require_significant")
        if problems:
            raise ValueError("\n".join(problems))
        return value


class TaskSection(Section):
    """What the task reports while training and how its loss weighs the classes (data.task picks the task)."""

    metrics: list[str] | None = Field(
        None,
        description=(
            "Metrics reported at each evaluation (loss always): classification / vision: accuracy, precision_macro, "
            "precision_weighted, recall_macro, recall_weighted, f1_macro, f1_weighted, roc_auc; regression: mse, mae, "
            "r2; language_modeling: perplexity, accuracy; null = the task's defaults. Any of them can be "
            "training.monitor."
        ),
    )
    class_weights: Literal["auto"] | list[float] | None = Field(
        None,
        description=(
            "Classification loss weight per class for imbalanced data: auto = n / (classes x count) from the "
            "training labels, or a list with one weight > 0 per class; null = unweighted. The weighted loss is "
            "also val/loss."
        ),
    )
    compute_metrics: str | None = Field(
        None,
        description=(
            "A function 'module:function' called at each evaluation as fn(predictions, labels) -> {name: value} "
            "with numpy arrays of the whole pass (raw model outputs, labels); its names can be training.monitor. "
            "Costs a copy of the outputs to the host."
        ),
    )

    @field_validator("metrics")
    @classmethod
    def _metric_names(cls, value: list[str] | None) -> list[str] | None:
        # The names per task type are checked with the task (tasks.SUPPORTED_METRICS), which the config
        # does not know; here only what is wrong whatever the task.
        if value is not None:
            dupes = sorted({m for m in value if value.count(m) > 1})
            if dupes or any(not m.strip() or "/" in m for m in value):
                raise ValueError(
                    f"must be distinct metric names without a split prefix (f1_macro, not val/f1_macro), got {value!r}"
                )
        return value

    @field_validator("compute_metrics")
    @classmethod
    def _function_ref(cls, value: str | None) -> str | None:
        import re

        if value is not None and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", value):
            raise ValueError(f"must name a function as 'module:function' (e.g. my_metrics:compute), got {value!r}")
        return value

    @field_validator("class_weights")
    @classmethod
    def _positive_weights(cls, value: Any) -> Any:
        if isinstance(value, list) and (len(value) < 2 or any(not w > 0 or w == float("inf") for w in value)):
            raise ValueError(f"must be 'auto' or one finite weight > 0 per class (at least 2), got {value!r}")
        return value


class CurriculumPhase(Section):
    """One phase of a curriculum: until optimizer step ``until_step``, draw from these sources / examples."""

    until_step: int = Field(..., ge=1, description="The phase lasts until this optimizer step (exclusive).")
    weights: dict[str, float] | None = Field(
        None, description="Source weights during the phase (prm800k: 1.0, eqasc: 0.0); null = data's weights."
    )
    filter: dict[str, Any] | None = Field(
        None,
        description=(
            "Keep examples whose fields match: a value (source: prm800k, phase: 1), a list of values, or a range "
            "{min: 0, max: 0.5}; null = all."
        ),
    )


class CurriculumSection(Section):
    """Curriculum learning for any task: phases, easy-to-hard ordering, growing sequence length (docs/curriculum)."""

    phases: list[CurriculumPhase] = Field(
        default_factory=list, description="Phases in order; after the last one the whole data set is used."
    )
    difficulty: Literal["none", "field", "loss"] = Field(
        "none",
        description=(
            "Easy-to-hard sampling: by an example field (difficulty_field), or by each example's loss under the "
            "starting model (a scoring pass before training); none = off."
        ),
    )
    difficulty_field: str = Field("difficulty", description="The example field scored when difficulty is field.")
    start_fraction: float = Field(
        0.3, gt=0.0, le=1.0, description="Difficulty: the easiest fraction of the data used at step 0."
    )
    full_data_step: int | None = Field(
        None, ge=1, description="Difficulty: the step from which all data is used; null = half of the run."
    )
    start_length: int | None = Field(
        None, ge=2, description="Sequence-length curriculum: the maximum length at step 0 (grows to data.max_length)."
    )
    full_length_step: int | None = Field(
        None,
        ge=1,
        description="Sequence-length curriculum: the step that reaches data.max_length; null = half of the run.",
    )


class TransferSection(Section):
    """Transfer learning: freezing by name, discriminative learning rates, gradual unfreezing.

    docs/transfer-learning.md shows each.
    """

    freeze: list[str] = Field(
        default_factory=list,
        description="Parameter-name patterns (fnmatch: backbone.*, *.layers.0.*) that do not train.",
    )
    unfreeze: list[str] = Field(
        default_factory=list, description="Patterns that train even when freeze matches them (the head, norms)."
    )
    layer_groups: list[str] = Field(
        default_factory=list,
        description=(
            "Discriminative learning rates: patterns of parameter groups from the input to the output; the last "
            "group gets training.learning_rate, each earlier one lr_decay times the next. Empty = found from the model."
        ),
    )
    lr_decay: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="Discriminative learning rates: the factor per group towards the input; null = off.",
    )
    unfreeze_at_epoch: dict[int, list[str]] = Field(
        default_factory=dict,
        description="Gradual unfreezing: epoch -> patterns that start training at that epoch ({2: [layer4.*]}).",
    )
    schedule: Literal["none", "progressive"] = Field(
        "none",
        description=(
            "progressive: seed 003's three phases: the head alone, then the top half of the layer groups with "
            "discriminative rates, then everything at a tenth of the rate (phase_epochs each)."
        ),
    )
    phase_epochs: list[int] = Field(
        default_factory=lambda: [2, 2], description="progressive: epochs of phase 1 and phase 2; phase 3 is the rest."
    )

    @field_validator("phase_epochs")
    @classmethod
    def _two_phases(cls, value: list[int]) -> list[int]:
        if len(value) != 2 or any(e < 0 for e in value):
            raise ValueError(f"must be two whole numbers >= 0 (epochs of phase 1 and phase 2), got {value!r}")
        return value

    @field_validator("unfreeze_at_epoch")
    @classmethod
    def _epochs(cls, value: dict[int, list[str]]) -> dict[int, list[str]]:
        bad = sorted(e for e in value if e < 0)
        if bad:
            raise ValueError(f"epochs must be >= 0 (0 is the first epoch), got {bad}")
        return value


SECTION_TYPES: dict[str, type[Section]] = {
    "training": TrainingSection,
    "optimizer": OptimizerSection,
    "scheduler": SchedulerSection,
    "checkpointing": CheckpointingSection,
    "tracking": TrackingSection,
    "data": DataSection,
    "model": ModelSection,
    "lora": LoraSection,
    "distributed": DistributedSection,
    "export": ExportSection,
    "monitoring": MonitoringSection,
    "registry": RegistrySection,
    "task": TaskSection,
    "curriculum": CurriculumSection,
    "transfer": TransferSection,
}
