"""``create_export_bundle``: one folder with the model in several verified formats and everything
needed to run, serve, monitor and roll it back."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from trainengine import _preprocess
from trainengine._io import atomic_write_json, validate_name
from trainengine.errors import ExportError
from trainengine.export._example import infer_example_input
from trainengine.export._files import (
    MANIFEST,
    bundle_files,
    copy_standalone_runtime,
    dockerfile,
    monitoring_settings,
    readme,
    requirements_txt,
    standalone_runtime,
)
from trainengine.export._formats import (
    INPUT_NAME,
    OUTPUT_NAME,
    ExportContext,
    ParityInputs,
    write_format,
)
from trainengine.export._prometheus import ALERTS_FILE, prometheus_rules_yaml
from trainengine.models import count_parameters, model_spec, unwrap_model
from trainengine.registries import EXPORT_FORMATS
from trainengine.tasks import TaskSpec

__all__ = ["create_export_bundle", "QUANTIZATION_METHODS"]

QUANTIZATION_METHODS = ("dynamic-int8",)
FORMAT_VERSION = 1
_REWARD = "reward"  # the task type of process reward models (per-step scores)
# examples.json of a reward bundle made without raw_examples: one fixture-like problem and its steps.
_REWARD_EXAMPLE = {"problem": "What is 12 * 3 + 4?", "steps": ["12 * 3 = 36.", "36 + 4 = 40.", "The answer is 40."]}
logger = logging.getLogger(__name__)


def create_export_bundle(
    model: nn.Module,
    config: Any = None,
    task_spec: TaskSpec | Mapping[str, Any] | None = None,
    training_config: Any = None,
    formats: Sequence[str] = ("onnx", "torchscript", "pytorch"),
    output_dir: str | os.PathLike[str] = "./exports",
    example_input: Any = None,
    quantize: str | None = None,
    monitoring_config: Mapping[str, Any] | None = None,
    *,
    name: str = "model",
    reference_data: Any = None,
    reference_profile: Any = None,
    eval_data: Any = None,
    tolerance: float = 1e-4,
    lineage: Mapping[str, Any] | None = None,
    version: str | None = None,
    target_scaling: Mapping[str, float] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    tokenizer_dir: str | os.PathLike[str] | None = None,
    raw_examples: Sequence[Any] | None = None,
    class_names: Sequence[str] | None = None,
    step_encoding: Mapping[str, Any] | None = None,
) -> Path:
    """Export ``model`` into ``<output_dir>/<name>_<YYYYmmdd_HHMMSS>/``, verified, with what runs it.

    The bundle holds the model in each requested format — ``onnx`` (``model.onnx``, dynamic batch
    axis, plus a sequence axis for token inputs), ``torchscript`` (``model.torchscript.pt``, traced
    or scripted; when neither reproduces the model, ``torch_export`` is written instead and the
    manifest says why), ``torch_export`` (``model.pt2``) and ``pytorch`` (``model.safetensors`` +
    ``model_config.json`` to rebuild it) — and ``task_spec.json``, ``training_config.yaml``,
    ``monitoring.json``, ``reference_profile.json`` (drift reference), ``examples.json``,
    a standalone ``inference.py`` (numpy + onnxruntime), ``server.py``, ``requirements.txt``,
    ``Dockerfile``, ``README.md`` and ``manifest.json`` (SHA-256 of every file, library versions,
    parity, latency, sizes); with ``preprocessing`` also ``preprocessing.json`` and
    ``_preprocess.py`` (served inputs are raw records, encoded as in training), with a tokenizer
    ``tokenizer.json`` (text is tokenized and completions decoded with it; ``requirements.txt``
    lists ``tokenizers``). Every format is run on the example batch and on a batch of another
    size (and length) and compared with PyTorch; a difference above ``tolerance`` (relative to
    the output scale) fails the export naming the format. The bundle appears atomically: an
    export that fails leaves nothing behind.

    A reward model (task type ``"reward"``) is exported with what serving needs to encode a
    request ``{"problem": str, "steps": [str, ...]}`` exactly as in training: the step tokenizer
    (``tokenizer.json``, or UTF-8 bytes) and the manifest's ``"reward"`` section (step
    separator, ``max_length``, ``max_steps_per_example``, the tokenizer's prefix ids); its
    ``examples.json`` holds problem/steps examples and their per-step scores. The bundle's
    encoding of those examples is checked against the training encoding at export time.

    Args:
        model: The trained module (compiled / DDP wrappers are unwrapped; it is copied to CPU
            float32, the original is left untouched). A module with a ``for_export()`` method is
            exported as what that returns (a LoRA reward model: its merged copy).
        config: The model config (e.g. a :class:`~trainengine.models.GPTConfig`, or
            ``{"architecture": ..., "kwargs": ...}``), used to rebuild the model when it was not
            made by :func:`~trainengine.models.build_model`.
        task_spec: The :class:`~trainengine.tasks.TaskSpec` (or its dict); required.
        training_config: The :class:`~trainengine.config.TrainingConfig` (or dict) it was trained with.
        formats: Any of ``"onnx"``, ``"torchscript"``, ``"torch_export"``, ``"pytorch"``.
        output_dir: Parent folder of the bundle.
        example_input: A batch the model accepts (tensor, array or nested lists). Default: the
            first 4 samples of ``reference_data``, else a batch synthesised from the model spec, else
            (a model without spec, e.g. an ``nn.Sequential``) one read off a first ``nn.Linear`` /
            ``nn.Embedding``.
        quantize: ``"dynamic-int8"`` adds ``model.int8.onnx`` (needs ``"onnx"``); its size and
            the metric change on ``eval_data`` are recorded in the manifest.
        monitoring_config: Thresholds for serving (``latency_threshold_ms``,
            ``error_rate_threshold``, ``drift_threshold``, ``drift_window``) plus any keys you add.
        name: Bundle (and model) name: letters, digits, ``.``, ``_``, ``-``.
        reference_data: Training data set, profiled as the drift reference.
        reference_profile: A ready :class:`~trainengine.monitoring.DatasetProfile` (or its dict,
            or a path to ``data_profile.json``) to use instead of profiling ``reference_data``.
        eval_data: Labelled data set for the quantization metric delta.
        tolerance: Largest allowed |exported - PyTorch| per output, relative to max(1, max |output|).
        lineage: ``run_id``, ``git_commit``, ``data_fingerprint``, ``checkpoint`` to record.
        version: Registry version this bundle is of (recorded; served as the model version).
        target_scaling: Regression only: ``{"mean", "std"}`` the targets were standardised with;
            served predictions are un-scaled with it. Default: the ``mean``/``std`` of a numeric
            label in ``preprocessing``.
        preprocessing: The tabular preprocessing spec the model's inputs were encoded with
            (``trainengine._preprocess`` documents it; ``fit_tabular`` makes it). The model's
            input width must be its ``output_width``.
        tokenizer_dir: Language models: the training tokenizer, a folder holding
            ``tokenizer.json`` (or a byte tokenizer's ``tokenizer_config.json``) or a
            ``tokenizer.json`` file. Its vocabulary must fit the model's.
        raw_examples: Examples as ``/predict`` takes them (raw records for a bundle with
            ``preprocessing``, text for a language model) for ``examples.json``; default: the
            example batch (decoded back to raw records with ``preprocessing``).
        class_names: Classification: the name of each class, served as ``"label"`` with each
            prediction. Default: ``preprocessing["label"]["classes"]``.
        step_encoding: Reward models: ``{"step_separator", "max_length", "max_steps_per_example"}``
            of training. Default: ``training_config.data``. The tokenizer comes from
            ``tokenizer_dir`` (the folder ``StepTokenizer.save`` wrote, e.g.
            ``train_dataset.tokenizer.save(folder)``); without one, a run whose
            ``data.tokenizer`` is ``byte`` (and no ``model.name_or_path``) serves UTF-8 bytes.

    Returns:
        The bundle folder.

    Raises:
        ExportError: A bad argument, a format that fails to export or to match PyTorch.
        MissingExtraError: ``onnx`` without the ``[export]`` extra installed.

    Example:
        >>> import tempfile
        >>> from trainengine.models import build_model
        >>> from trainengine.tasks import TaskSpec
        >>> model = build_model("mlp", input_dim=4, output_dim=3, hidden_dims=(8,))
        >>> out = create_export_bundle(
        ...     model, task_spec=TaskSpec.classification("toy", 3), formats=["pytorch"], output_dir=tempfile.mkdtemp()
        ... )
        >>> sorted(p.name for p in out.iterdir())[:3]
        ['Dockerfile', 'README.md', 'examples.json']
    """
    spec_task = _task(task_spec)
    fmts = _formats(formats)
    if quantize is not None and quantize not in QUANTIZATION_METHODS:
        raise ExportError(f"unknown quantize={quantize!r} — choose one of: {', '.join(QUANTIZATION_METHODS)} (or None)")
    if quantize and "onnx" not in fmts:
        raise ExportError(f"quantize={quantize!r} quantizes the ONNX model: add 'onnx' to formats")
    try:
        validate_name(name, "bundle name")
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    if not (isinstance(tolerance, (int, float)) and tolerance > 0):
        raise ExportError(f"tolerance must be a positive number, got {tolerance!r}")
    monitoring = monitoring_settings(monitoring_config)
    if not isinstance(model, nn.Module):
        raise ExportError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    serving = _serving(spec_task, preprocessing, tokenizer_dir, raw_examples, class_names)
    if spec_task.task_type == _REWARD:
        _reward_serving(serving, tokenizer_dir, step_encoding, training_config)
    elif step_encoding is not None:
        raise ExportError(f"step_encoding is for reward models; this task is {spec_task.task_type!r}")
    if target_scaling is None and serving.preprocessing is not None:
        label = serving.preprocessing.get("label") or {}
        if label.get("type") == "numeric" and label.get("mean") is not None and label.get("std") is not None:
            target_scaling = {"mean": float(label["mean"]), "std": float(label["std"])}

    source = unwrap_model(model)
    for_export = getattr(source, "for_export", None)
    if callable(for_export):
        # The model's own export form, e.g. a LoRA model with its adapters merged into the weights
        # (RewardModel.for_export): a plain module whose spec rebuilds it.
        source = for_export()
    work = copy.deepcopy(source).to("cpu").float().eval()
    spec = model_spec(source, config)
    token_inputs = spec_task.modality == "tokens"
    max_seq_len = _max_seq_len(spec, work)
    if example_input is None and reference_data is None and serving.preprocessing is not None:
        records = list(serving.raw_examples or _spec_records(serving.preprocessing))
        example_input = _encode_examples(serving.preprocessing, records)
    if example_input is None and serving.reward is not None and serving.raw_examples:
        # A reward model's example: the first problem/steps example, encoded as the server encodes it.
        example_input = serving.step_batch([serving.raw_examples[0]]).tokens
    if example_input is None and reference_data is None and spec is None:
        example_input = infer_example_input(work, max_seq_len=max_seq_len)  # e.g. a plain nn.Sequential
    example = _example_batch(example_input, reference_data, spec, spec_task, max_seq_len)
    serving.check_input(example)
    try:
        parity = ParityInputs(work, example, token_inputs, max_seq_len)
    except Exception as exc:
        raise ExportError(
            f"the model cannot run on the example input of shape {list(example.shape)} ({exc}); "
            "pass example_input= with a batch it accepts"
        ) from exc
    serving.check_output(parity.expected[0])

    out_root = Path(output_dir)
    out_root.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=out_root))
    try:
        manifest = _build(
            work,
            spec,
            config,
            spec_task,
            training_config,
            fmts,
            tmp,
            parity,
            quantize,
            monitoring,
            name,
            reference_data,
            reference_profile,
            eval_data,
            tolerance,
            lineage,
            version,
            target_scaling,
            max_seq_len,
            stamp,
            serving,
        )
        final = _free_name(out_root, f"{name}_{stamp.strftime('%Y%m%d_%H%M%S')}")
        manifest["folder"] = final.name
        shown = json.loads((tmp / "examples.json").read_text())["inputs"][0] if serving.shows_example else None
        (tmp / "README.md").write_text(readme(manifest, monitoring, shown))
        manifest["files"] = bundle_files(tmp)
        atomic_write_json(tmp / MANIFEST, manifest)  # last: a bundle without it is incomplete
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("export bundle written to %s (%s)", final, ", ".join(manifest["formats"]))
    return final


# ----------------------------------------------------------------------------- arguments


def _task(task_spec: Any) -> TaskSpec:
    if task_spec is None:
        raise ExportError(
            "task_spec is required: the bundle's inference code needs the task "
            "(e.g. TaskSpec.classification('digits', 10))"
        )
    if isinstance(task_spec, TaskSpec):
        return task_spec
    if isinstance(task_spec, Mapping):
        return TaskSpec.from_dict(dict(task_spec))
    raise ExportError(f"task_spec must be a TaskSpec or its dict, got {type(task_spec).__name__}")


def _formats(formats: Sequence[str]) -> list[str]:
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.split(",") if f.strip()]
    out: list[str] = []
    for fmt in formats:
        problem = EXPORT_FORMATS.problem(fmt)
        if problem is not None:
            raise ExportError(problem)
        if fmt not in out:
            out.append(fmt)
    if not out:
        raise ExportError(f"formats is empty — choose at least one of: {', '.join(EXPORT_FORMATS.names())}")
    return out


def _max_seq_len(spec: Mapping[str, Any] | None, model: nn.Module) -> int | None:
    kwargs = (spec or {}).get("kwargs") or {}
    value = kwargs.get("max_seq_len") or getattr(getattr(model, "config", None), "max_seq_len", None)
    return int(value) if value else None


def _first_inputs(data: Any, n: int) -> torch.Tensor:
    rows = []
    for i in range(min(n, len(data))):
        sample = data[i]
        if isinstance(sample, Mapping):
            sample = next(
                sample[k] for k in ("input_ids", "x", "inputs", "input", "features", "pixel_values") if k in sample
            )
        elif isinstance(sample, (tuple, list)):
            sample = sample[0]
        rows.append(torch.as_tensor(sample))
    return torch.stack(rows)


def _example_batch(
    example_input: Any, reference_data: Any, spec: Mapping[str, Any] | None, task: TaskSpec, max_seq_len: int | None
) -> torch.Tensor:
    """The example batch: given, from the reference data, or synthesised from the model spec."""
    token = task.modality == "tokens"
    if example_input is not None:
        try:
            x = torch.as_tensor(
                np.asarray(example_input) if not isinstance(example_input, torch.Tensor) else example_input
            )
        except (TypeError, ValueError) as exc:
            raise ExportError(f"example_input must be a tensor, array or nested list of numbers: {exc}") from None
    elif reference_data is not None and len(reference_data) > 0:
        x = _first_inputs(reference_data, 4)
    else:
        x = _synthetic(spec, token, max_seq_len)
    x = x.detach().cpu()
    x = x.long() if token else x.float()
    if x.dim() == 0:
        raise ExportError("example_input must have a batch axis, e.g. shape [4, 64]")
    if token and x.dim() == 1:
        x = x.unsqueeze(0)
    if x.shape[0] < 2:
        # torch.export specialises a size-1 axis to a constant; two rows keep batch dynamic.
        x = torch.cat([x, x], dim=0)
    return x.contiguous()


def _synthetic(spec: Mapping[str, Any] | None, token: bool, max_seq_len: int | None) -> torch.Tensor:
    kwargs = (spec or {}).get("kwargs") or {}
    gen = torch.Generator().manual_seed(0)
    arch = (spec or {}).get("architecture")
    if token and kwargs.get("vocab_size"):
        length = min(16, max_seq_len or 16)
        return torch.randint(0, int(kwargs["vocab_size"]), (4, length), generator=gen)
    if arch == "mlp":
        return torch.randn(4, int(kwargs["input_dim"]), generator=gen)
    if arch == "cnn":
        size = int(kwargs.get("image_size", 8))
        return torch.randn(4, int(kwargs.get("in_channels", 1)), size, size, generator=gen)
    raise ExportError(
        "cannot guess an input for this model: pass example_input= (a batch it accepts) or reference_data="
    )


# ----------------------------------------------------------------------------- serving inputs


@dataclasses.dataclass
class _Serving:
    """What turns served JSON into model inputs and outputs into answers: preprocessing, tokenizer, names."""

    preprocessing: dict[str, Any] | None = None
    tokenizer_file: Path | None = None  # a tokenizer.json to copy into the bundle
    tokenizer_info: dict[str, Any] | None = None  # manifest["tokenizer"]
    tokenizer: Any = None  # the loaded tokenizers.Tokenizer (encodes raw text examples, decodes completions)
    raw_examples: list[Any] | None = None
    class_names: list[str] | None = None
    reward: dict[str, Any] | None = None  # manifest["reward"]: how problem/steps examples are encoded
    step_meta: dict[str, Any] | None = None  # the saved StepTokenizer's reward_tokenizer.json (pad, prefix ids)

    def step_batch(self, examples: list[Any]) -> Any:
        """Reward models: ``examples`` encoded by the serving runtime (a ``StepBatch``).

        Raises:
            ExportError: An example does not fit (``raw_examples[i].steps: ...``).
        """
        _runtime = standalone_runtime()
        try:
            encoding = _runtime.StepEncoding.from_manifest({"reward": self.reward})
            return _runtime.encode_step_requests(examples, encoding, tokenizer=self.tokenizer)
        except (_runtime.InputError, _runtime.BundleError) as exc:
            raise ExportError(f"{str(exc).replace('inputs', 'raw_examples', 1)}; fix raw_examples") from None

    @property
    def shows_example(self) -> bool:
        """examples.json holds raw inputs worth showing in the README."""
        return self.preprocessing is not None or self.tokenizer is not None or self.raw_examples is not None

    @property
    def requirements(self) -> tuple[str, ...]:
        return ("tokenizers",) if self.tokenizer_file is not None else ()

    def check_input(self, example: torch.Tensor) -> None:
        if self.preprocessing is None:
            return
        width = _preprocess.output_width(self.preprocessing)
        if example.dim() != 2 or example.shape[1] != width:
            raise ExportError(
                f"preprocessing encodes {width} values per example but the model's example input has shape "
                f"{list(example.shape)}; pass the preprocessing spec the model was trained with"
            )

    def check_output(self, outputs: np.ndarray) -> None:
        if self.class_names is not None and len(self.class_names) != outputs.shape[-1]:
            raise ExportError(
                f"{len(self.class_names)} class names ({', '.join(self.class_names[:5])}, ...) for a model with "
                f"{outputs.shape[-1]} outputs; pass one name per class, in class-index order"
            )
        vocab = (self.tokenizer_info or {}).get("vocab_size")
        if self.reward is None and vocab is not None and vocab > outputs.shape[-1]:
            raise ExportError(
                f"the tokenizer has {vocab} tokens but the model's vocabulary has {outputs.shape[-1]}: it gives ids "
                "the model cannot read; pass the tokenizer the model was trained with"
            )

    def write(self, folder: Path, manifest: dict[str, Any]) -> None:
        """Write preprocessing.json / tokenizer.json and record them (and the class names) in the manifest."""
        if self.preprocessing is not None:
            (folder / "preprocessing.json").write_text(json.dumps(self.preprocessing, indent=2) + "\n")
            manifest["preprocessing"] = {
                "file": "preprocessing.json",
                "kind": self.preprocessing["kind"],
                "feature_columns": list(self.preprocessing["feature_columns"]),
                "encoding": self.preprocessing.get("encoding", "onehot"),
                "missing_values": self.preprocessing.get("missing_values", "fill"),
                "output_width": _preprocess.output_width(self.preprocessing),
            }
        if self.tokenizer_info is not None:
            if self.tokenizer_file is not None:
                shutil.copyfile(self.tokenizer_file, folder / "tokenizer.json")
            manifest["tokenizer"] = dict(self.tokenizer_info)
        if self.class_names is not None:
            manifest["class_names"] = list(self.class_names)
        if self.reward is not None:
            manifest["reward"] = dict(self.reward)


def _serving(
    task: TaskSpec,
    preprocessing: Mapping[str, Any] | None,
    tokenizer_dir: str | os.PathLike[str] | None,
    raw_examples: Sequence[Any] | None,
    class_names: Sequence[str] | None,
) -> _Serving:
    out = _Serving()
    if preprocessing is not None:
        try:
            out.preprocessing = json.loads(json.dumps(dict(preprocessing)))  # a JSON copy: what the bundle holds
            _preprocess.check_spec(out.preprocessing)
        except (TypeError, ValueError) as exc:
            raise ExportError(f"preprocessing is not a usable spec: {exc}") from None
        label = preprocessing.get("label") or {}
        if class_names is None and label.get("type") == "class" and label.get("classes"):
            class_names = [str(c) for c in label["classes"]]
    classifies = task.task_type == "classification" or (task.num_classes and task.task_type != "language_modeling")
    if class_names is not None:
        if not classifies:
            raise ExportError(f"class_names are for classification bundles; this task is {task.task_type!r}")
        if isinstance(class_names, str) or not all(isinstance(c, str) for c in class_names):
            raise ExportError(f"class_names must be a list of strings, got {class_names!r}")
        out.class_names = list(class_names)
    if tokenizer_dir is not None:
        if task.modality != "tokens":
            raise ExportError(
                f"tokenizer_dir is for language-model bundles (token inputs); this task's inputs are {task.modality}"
            )
        _tokenizer(out, Path(tokenizer_dir))
    if raw_examples is not None:
        if isinstance(raw_examples, (str, bytes)) or not isinstance(raw_examples, Sequence) or not raw_examples:
            raise ExportError(f"raw_examples must be a non-empty list of examples, got {type(raw_examples).__name__}")
        try:
            out.raw_examples = json.loads(json.dumps(list(raw_examples)))
        except (TypeError, ValueError) as exc:
            raise ExportError(f"raw_examples must be JSON values (what /predict takes): {exc}") from None
    return out


def _tokenizer(out: _Serving, path: Path) -> None:
    """Resolve a tokenizer folder/file: a tokenizer.json (loaded with `tokenizers`) or a byte tokenizer."""
    meta = path / _STEP_META if path.is_dir() else path.parent / _STEP_META
    if meta.is_file():  # a reward model's StepTokenizer.save: pad id, prefix ids, how it was chosen
        try:
            out.step_meta = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ExportError(f"cannot read {meta}: {exc}; save the tokenizer again with StepTokenizer.save") from None
    if path.is_dir() and not (path / "tokenizer.json").is_file():
        config = path / "tokenizer_config.json"
        kind = None
        if config.is_file():
            with contextlib.suppress(OSError, ValueError, AttributeError):
                kind = json.loads(config.read_text(encoding="utf-8")).get("kind")
        if kind == "byte":
            out.tokenizer_info = {"kind": "byte", "file": None, "vocab_size": 256}
            return
        raise ExportError(
            f"no tokenizer in {path}: expected tokenizer.json (a Hugging Face tokenizer) or tokenizer_config.json "
            'with {"kind": "byte"}; pass the folder the tokenizer was saved to'
        )
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise ExportError(f"tokenizer_dir {path} does not exist; pass a tokenizer folder or its tokenizer.json")
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        from trainengine.errors import MissingExtraError

        raise MissingExtraError("tokenizers", "data", "exporting a bundle with its tokenizer") from exc
    try:
        out.tokenizer = Tokenizer.from_file(str(file))
    except Exception as exc:  # noqa: BLE001 - tokenizers raises a plain Exception for a bad file
        raise ExportError(f"cannot load the tokenizer {file}: {exc}") from None
    out.tokenizer_file = file
    out.tokenizer_info = {"kind": "hf", "file": "tokenizer.json", "vocab_size": out.tokenizer.get_vocab_size()}


_STEP_META = "reward_tokenizer.json"  # written beside the tokenizer by StepTokenizer.save (trainengine.data)


def _setting(config: Any, section: str, name: str) -> Any:
    """``config.<section>.<name>`` of a TrainingConfig or its dict (None when absent)."""
    part = config.get(section) if isinstance(config, Mapping) else getattr(config, section, None)
    return part.get(name) if isinstance(part, Mapping) else getattr(part, name, None)


def _reward_serving(
    out: _Serving,
    tokenizer_dir: str | os.PathLike[str] | None,
    step_encoding: Mapping[str, Any] | None,
    training_config: Any,
) -> None:
    """A reward bundle's step encoding (``manifest["reward"]``), checked against the training encoding."""
    given = dict(step_encoding) if step_encoding is not None else {}
    unknown = sorted(set(given) - {"step_separator", "max_length", "max_steps_per_example"})
    if unknown:
        raise ExportError(
            f"step_encoding has unknown key(s) {unknown}; it takes step_separator, max_length, max_steps_per_example"
        )
    settings = {
        key: given[key] if key in given else _setting(training_config, "data", key)
        for key in ("step_separator", "max_length", "max_steps_per_example")
    }
    problems = []
    missing = [key for key, value in settings.items() if value is None]
    if missing:
        problems.append(
            f"the step encoding of training ({', '.join(missing)}) is unknown: pass training_config= (its data "
            "section) or step_encoding={'step_separator': ..., 'max_length': ..., 'max_steps_per_example': ...}"
        )
    if tokenizer_dir is None:
        byte = str(_setting(training_config, "data", "tokenizer") or "").strip().lower() == "byte"
        if byte and not _setting(training_config, "model", "name_or_path"):
            out.tokenizer_info = {"kind": "byte", "file": None, "vocab_size": 256}  # trained on UTF-8 bytes
        else:
            problems.append(
                "the training tokenizer is unknown: pass tokenizer_dir= (the folder StepTokenizer.save wrote, e.g. "
                "train_dataset.tokenizer.save(folder)); only a run with data.tokenizer: byte and no "
                "model.name_or_path can do without"
            )
    if problems:
        # Still a working bundle, for clients that tokenize themselves; text requests get a 422 saying why.
        logger.warning("the reward bundle will take token ids only, not problem/steps text: %s", "; ".join(problems))
        out.reward = {**settings, "prefix_ids": [], "text_inputs": False}
        if out.raw_examples is not None and any(isinstance(x, Mapping) and "problem" in x for x in out.raw_examples):
            raise ExportError("raw_examples hold problem/steps text, which this bundle cannot encode: " + problems[0])
        return
    elif out.tokenizer_info is not None and out.tokenizer_info.get("kind") == "hf" and out.step_meta is None:
        logger.warning(
            "%s has no %s: the reward bundle assumes no prefix ids; save the tokenizer with StepTokenizer.save",
            tokenizer_dir,
            _STEP_META,
        )
    meta = out.step_meta or {}
    out.reward = {
        "step_separator": settings["step_separator"],
        "max_length": settings["max_length"],
        "max_steps_per_example": settings["max_steps_per_example"],
        "prefix_ids": [int(i) for i in meta.get("prefix_ids") or []],
        "pad_id": int(meta.get("pad_id") or 0),
        "tokenizer_source": meta.get("source", (out.tokenizer_info or {}).get("kind")),
        "text_inputs": True,
    }
    if out.raw_examples is None:
        out.raw_examples = [dict(_REWARD_EXAMPLE)]
    batch = out.step_batch(out.raw_examples)  # checks the settings and examples with the serving code
    _check_training_encoding(out, batch, tokenizer_dir)


def _check_training_encoding(out: _Serving, batch: Any, tokenizer_dir: str | os.PathLike[str] | None) -> None:
    """The serving encoding of the examples must equal training's (``encode_steps`` with the saved tokenizer)."""
    from trainengine.data import ByteTokenizer
    from trainengine.data._reward_tokenize import StepTokenizer, encode_steps, load_step_tokenizer
    from trainengine.errors import DataError

    reward = out.reward or {}
    try:
        if tokenizer_dir is None:
            tokenizer = StepTokenizer(ByteTokenizer(), source="byte", pad_id=0)
        else:
            folder = Path(tokenizer_dir)
            tokenizer = load_step_tokenizer(folder if folder.is_dir() else folder.parent)
    except (DataError, OSError, ValueError) as exc:
        raise ExportError(f"cannot load the training tokenizer from {tokenizer_dir}: {exc}") from None
    for i, example in enumerate(out.raw_examples or []):
        if not isinstance(example, Mapping) or "problem" not in example:
            continue  # token-id examples: nothing to encode
        try:
            expected = encode_steps(
                tokenizer,
                example["problem"],
                example["steps"],
                separator=reward["step_separator"],
                max_length=reward["max_length"],
                max_steps=reward["max_steps_per_example"],
            )
        except DataError as exc:
            raise ExportError(f"raw_examples[{i}]: {exc}") from None
        got = batch.tokens[i, : batch.lengths[i]]
        if not (
            np.array_equal(got, expected.input_ids) and np.array_equal(batch.positions[i], expected.step_positions)
        ):
            raise ExportError(
                f"raw_examples[{i}]: the bundle's tokenizer ({(out.tokenizer_info or {}).get('kind')}) encodes it "
                f"differently from the training tokenizer {tokenizer.name!r} ({tokenizer.source}); the bundle would "
                "serve other token ids than the model was trained on — pass the tokenizer folder that "
                "StepTokenizer.save wrote (tokenizer_dir=)"
            )


def _spec_records(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Two raw records from the spec's statistics (when no data is given): means, then mean + std."""
    records: list[dict[str, Any]] = [{}, {}]
    for column in spec["columns"]:
        for k, record in enumerate(records):
            if column["type"] == "numeric":
                record[column["name"]] = float(column["mean"]) + k * float(column["std"])
            else:
                categories = column["categories"]
                record[column["name"]] = categories[k % len(categories)] if categories else None
    return records


def _encode_examples(spec: Mapping[str, Any], records: list[Any]) -> np.ndarray:
    try:
        return _preprocess.encode_records(spec, records, prefix="raw_examples")
    except _preprocess.PreprocessError as exc:
        raise ExportError(f"{exc}; fix raw_examples") from None


def _examples(
    parity: ParityInputs,
    example: torch.Tensor,
    model: nn.Module,
    task: TaskSpec,
    manifest: Mapping[str, Any],
    serving: _Serving,
) -> dict[str, Any]:
    """examples.json: inputs as /predict takes them and the predictions the bundle must give for them."""
    if serving.reward is not None:
        _runtime = standalone_runtime()

        def score(batch: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return model(torch.as_tensor(batch)).detach().float().numpy()

        # Problem/steps examples; for a bundle without its tokenizer, the example batch as token ids
        # scored at the middle and last tokens.
        inputs = serving.raw_examples or [
            {"input_ids": row, "step_positions": sorted({len(row) // 2, len(row) - 1})} for row in example.tolist()
        ]
        return {"inputs": inputs, "predictions": _runtime.score_steps(serving.step_batch(inputs), score)}
    if serving.raw_examples is None and serving.preprocessing is None:
        tokens = example.numpy() if task.modality == "tokens" else None
        predictions = _predictions(parity.expected[0], tokens, model, task, manifest, serving)
        return {"inputs": example.tolist(), "predictions": predictions}
    if serving.raw_examples is not None:
        inputs = serving.raw_examples
    else:
        inputs = _preprocess.decode_rows(serving.preprocessing, example.numpy())  # type: ignore[arg-type]  # set
    _runtime = standalone_runtime()
    try:
        batch = _runtime.preprocess(
            inputs,
            manifest,
            task.to_dict(),
            preprocessing=serving.preprocessing,
            tokenizer=serving.tokenizer,
        )
    except _runtime.InputError as exc:
        raise ExportError(
            f"raw_examples do not fit the model: {str(exc).replace('inputs', 'raw_examples', 1)}"
        ) from None
    with torch.no_grad():
        outputs = model(torch.as_tensor(_runtime.model_input(batch))).detach().float().numpy()
    tokens = batch if task.modality == "tokens" else None
    return {"inputs": inputs, "predictions": _predictions(outputs, tokens, model, task, manifest, serving)}


def _free_name(root: Path, base: str) -> Path:
    candidate, n = root / base, 2
    while candidate.exists():
        candidate, n = root / f"{base}_{n}", n + 1
    return candidate


# ----------------------------------------------------------------------------- building


def _build(
    model: nn.Module,
    spec: Any,
    config: Any,
    task: TaskSpec,
    training_config: Any,
    fmts: list[str],
    folder: Path,
    parity: ParityInputs,
    quantize: str | None,
    monitoring: dict[str, Any],
    name: str,
    reference_data: Any,
    reference_profile: Any,
    eval_data: Any,
    tolerance: float,
    lineage: Mapping[str, Any] | None,
    version: str | None,
    target_scaling: Mapping[str, float] | None,
    max_seq_len: int | None,
    stamp: datetime,
    serving: _Serving,
) -> dict[str, Any]:
    # Each format is an entry of trainengine.registries.EXPORT_FORMATS (built-ins and registered ones).
    ctx = ExportContext(
        model=model,
        parity=parity,
        folder=folder,
        tolerance=tolerance,
        max_seq_len=max_seq_len,
        spec=spec,
        config_dict=_config_dict(config),
        formats=list(fmts),
    )
    for fmt in fmts:
        write_format(fmt, ctx)
    formats = ctx.entries

    example = parity.batches[0]
    out_shape = list(parity.expected[0].shape)
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "created_at": stamp.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "task_type": task.task_type,
        "input": {
            "name": INPUT_NAME,
            "dtype": "int64" if parity.token_inputs else "float32",
            "shape": [None, None, *example.shape[2:]] if parity.token_inputs else [None, *example.shape[1:]],
        },
        "output": {
            "name": OUTPUT_NAME,
            "dtype": "float32",
            "shape": [None, None, *out_shape[2:]] if parity.token_inputs else [None, *out_shape[1:]],
        },
        "formats": formats,
        "quantization": None,
        "model_spec": spec,
        "num_parameters": count_parameters(model),
        "lineage": {k: (lineage or {}).get(k) for k in ("run_id", "git_commit", "data_fingerprint", "checkpoint")},
        "versions": _versions(),
    }
    if max_seq_len:
        manifest["input"]["max_sequence_length"] = max_seq_len
    if version is not None:
        manifest["version"] = version
    if target_scaling:
        manifest["target_scaling"] = {"mean": float(target_scaling["mean"]), "std": float(target_scaling["std"])}

    (folder / "task_spec.json").write_text(json.dumps(task.to_dict(), indent=2) + "\n")
    (folder / "training_config.yaml").write_text(yaml.safe_dump(_config_dict(training_config) or {}, sort_keys=False))
    (folder / "monitoring.json").write_text(json.dumps(monitoring, indent=2) + "\n")
    # The same thresholds as Prometheus alerting rules over the metrics the server exports.
    (folder / ALERTS_FILE).parent.mkdir(parents=True, exist_ok=True)
    (folder / ALERTS_FILE).write_text(prometheus_rules_yaml(name, version, monitoring))
    manifest["prometheus_rules"] = ALERTS_FILE
    profile, source = _reference_profile(reference_profile, reference_data, task, example)
    (folder / "reference_profile.json").write_text(json.dumps(profile, indent=2) + "\n")
    manifest["reference_profile"] = {"file": "reference_profile.json", "source": source}
    serving.write(folder, manifest)
    # inference.py, server.py and their _hashing.py / _numeric.py (+ _preprocess.py with preprocessing.json)
    copy_standalone_runtime(folder, preprocessing=serving.preprocessing is not None)
    (folder / "requirements.txt").write_text(requirements_txt(extra=serving.requirements))
    (folder / "Dockerfile").write_text(dockerfile())

    if quantize:
        from trainengine.export._quantize import quantize_dynamic_int8

        manifest["quantization"] = quantize_dynamic_int8(folder, formats["onnx"], task, eval_data, parity, manifest)
    examples = _examples(parity, example, model, task, manifest, serving)
    (folder / "examples.json").write_text(json.dumps(examples) + "\n")
    manifest["latency_ms"] = _latency(folder, formats, model, example[:1], parity.token_inputs)
    manifest["size_bytes"] = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.name.startswith("model")}
    return manifest


def _config_dict(config: Any) -> dict[str, Any] | None:
    if config is None:
        return None
    if hasattr(config, "to_dict"):
        return config.to_dict()
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    if hasattr(config, "model_dump"):
        return config.model_dump(mode="json")
    if isinstance(config, Mapping):
        return json.loads(json.dumps(dict(config), default=str))
    raise ExportError(
        f"cannot serialise config of type {type(config).__name__}: pass a dataclass, pydantic model or dict"
    )


def _versions() -> dict[str, str]:
    from importlib import metadata

    from trainengine.provenance import library_versions

    versions = library_versions()
    for package in ("onnx", "onnxruntime", "onnxscript", "safetensors"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return versions


def _reference_profile(
    reference_profile: Any, reference_data: Any, task: TaskSpec, example: torch.Tensor
) -> tuple[dict[str, Any], str]:
    from trainengine.probes import DatasetProfile, profile_dataset

    if reference_profile is not None:
        if isinstance(reference_profile, DatasetProfile):
            return reference_profile.to_dict(), "given"
        if isinstance(reference_profile, Mapping):
            return DatasetProfile.from_dict(reference_profile).to_dict(), "given"
        path = Path(reference_profile)
        return DatasetProfile.load(path).to_dict(), str(path)
    if reference_data is not None:
        return profile_dataset(reference_data, task).to_dict(), "reference_data"
    logger.warning(
        "no reference_data given: the drift reference is a profile of the %d example inputs only", len(example)
    )
    return profile_dataset([(row,) for row in example], task).to_dict(), "example_input"


def _predictions(
    outputs: np.ndarray,
    tokens: np.ndarray | None,
    model: nn.Module,
    task: TaskSpec,
    manifest: Mapping[str, Any],
    serving: _Serving,
) -> list[Any]:
    """Expected predictions for examples.json, made by the same post-processing the server uses."""
    _runtime = standalone_runtime()  # serve/_runtime.py read as a file: export does not import serve

    def forward(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.as_tensor(batch)).detach().float().numpy()

    predictions = _runtime.postprocess(
        outputs.astype(np.float32),
        task.to_dict(),
        tokens=tokens,
        forward=forward,
        max_seq_len=manifest["input"].get("max_sequence_length"),
        target_scaling=manifest.get("target_scaling"),
        class_names=serving.class_names,
        decode=serving.tokenizer.decode if serving.tokenizer is not None else None,
    )
    return predictions


def _latency(
    folder: Path, formats: Mapping[str, Any], model: nn.Module, one: torch.Tensor, token_inputs: bool
) -> dict[str, dict[str, float]]:
    """p50/p95 ms of single-example calls: ONNX Runtime (one thread) and eager PyTorch."""
    results: dict[str, dict[str, float]] = {}

    def measure(fn: Any, runs: int = 30) -> dict[str, float]:
        fn()  # warm-up
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return {"p50": float(np.percentile(times, 50)), "p95": float(np.percentile(times, 95))}

    if "onnx" in formats:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        for key, file in (("onnx batch 1", "model.onnx"), ("onnx int8 batch 1", "model.int8.onnx")):
            if (folder / file).exists():
                session = ort.InferenceSession(str(folder / file), opts, providers=["CPUExecutionProvider"])
                feed = {INPUT_NAME: one.numpy().astype(np.int64 if token_inputs else np.float32)}
                results[key] = measure(lambda s=session, f=feed: s.run(None, f))
    with torch.no_grad():
        results["pytorch batch 1"] = measure(lambda: model(one))
    return results
