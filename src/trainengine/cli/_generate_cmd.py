"""``trainengine generate --checkpoint PATH | --model NAME@ALIAS --prompt TEXT``: complete text with a language model.

The model is rebuilt from the model spec stored with the checkpoint (as ``trainengine export``
does) and the text is tokenized with the tokenizer the run trained with: a file-trained run's
``tokenizer.json`` kept in the checkpoint metadata (``meta["data"]["tokenizer_json"]``) or the
run directory's ``tokenizer/`` folder; otherwise byte-level (UTF-8 bytes are the token ids, as for
the built-in ``pystdlib`` corpus).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from trainengine.errors import CheckpointError, TrainEngineError

__all__ = ["generate_command", "load_language_model", "LanguageModel"]


@dataclass
class LanguageModel:
    """A rebuilt language model with its tokenizer, ready for :func:`trainengine.models._gpt.generate_text`.

    Attributes:
        model: The ``nn.Module`` (eval mode).
        tokenizer: ``ByteTokenizer`` or ``HFTokenizer`` the model was trained with.
        source: Where it came from (a checkpoint folder, run directory or registry version).
    """

    model: Any
    tokenizer: Any
    source: str


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _check_language_model(task: dict[str, Any] | None, source: str) -> None:
    task_type = (task or {}).get("task_type")
    if task_type not in (None, "language_modeling"):
        raise TrainEngineError(
            f"{source} holds a {task_type} model; trainengine generate needs a language model "
            "(task language_modeling, e.g. a run of the lm_tiny preset)"
        )


def _tokenizer(data: dict[str, Any] | None, run_dir: Path | None, scratch: Path) -> Any:
    """The training tokenizer from checkpoint metadata, else the run directory, else byte-level."""
    from trainengine.data import ByteTokenizer, load_tokenizer

    data = data or {}
    if data.get("tokenizer_json"):
        # HFTokenizer reads a file: the JSON text kept in the checkpoint goes through a scratch folder.
        (scratch / "tokenizer.json").write_text(data["tokenizer_json"], encoding="utf-8")
        return load_tokenizer(scratch)
    if run_dir is not None and (run_dir / "tokenizer").is_dir():
        return load_tokenizer(run_dir / "tokenizer")
    return ByteTokenizer()


def _rebuild(spec: dict[str, Any] | None, config: dict[str, Any] | None, source: str) -> Any:
    from trainengine.models import rebuild_model

    if not spec:
        raise CheckpointError(f"{source} stores no model spec, so the model cannot be rebuilt for generation")
    if config:
        from trainengine.config import TrainingConfig

        TrainingConfig.from_dict(config)  # its plugins: list registers a user model the spec may name
    return rebuild_model(spec)


def _from_path(path: Path, scratch: Path) -> LanguageModel:
    """A checkpoint folder, a checkpoints folder (newest valid one) or a run directory."""
    from trainengine.checkpoint import CheckpointManager, load_model_state, load_weights_file
    from trainengine.engine._checkpointing import resolve_resume

    if not path.exists():
        raise CheckpointError(
            f"cannot generate from {path}: it does not exist; pass a ckpt-* folder or a run directory"
        )
    ckpt = run_dir = None
    if not ((path / "run.json").is_file() and not (path / "checkpoints").is_dir()):
        try:
            ckpt, run_dir = resolve_resume(None, path)
        except CheckpointError as exc:
            if not ((path / "run.json").is_file() and (path / "model.safetensors").is_file()):
                raise CheckpointError(str(exc).replace("cannot resume", "cannot generate")) from None
    if ckpt is None:
        # A run without (valid) checkpoints: its final weights.
        run = _read_json(path / "run.json")
        weights = path / "model.safetensors"
        if not weights.is_file():
            raise CheckpointError(f"cannot generate from {path}: the run has no checkpoints and no model.safetensors")
        _check_language_model(run.get("task"), str(path))
        model = _rebuild((run.get("model") or {}).get("spec"), None, str(path))
        load_weights_file(model, weights)
        return LanguageModel(model.eval(), _tokenizer(None, path, scratch), str(path))
    loaded = CheckpointManager(ckpt.parent, read_only=True).read(ckpt)
    meta = loaded.meta.extra
    _check_language_model(meta.get("task"), str(ckpt))
    model = _rebuild(meta.get("model_spec"), meta.get("config"), str(ckpt))
    load_model_state(model, loaded.model_state)
    return LanguageModel(model.eval(), _tokenizer(meta.get("data"), run_dir, scratch), str(ckpt))


def _from_registry(ref: str, registry: str, scratch: Path) -> LanguageModel:
    from trainengine.data import ByteTokenizer, load_tokenizer
    from trainengine.registry import ModelRegistry

    if "://" not in registry and not Path(registry).is_file():
        raise TrainEngineError(
            f"no model registry at {registry} (no such file); pass --registry PATH_OR_URL or set TRAINENGINE_REGISTRY"
        )
    with ModelRegistry(registry) as reg:
        record = reg.resolve(ref)
    source = f"{record.model_id} ({record.artifact_kind} {record.artifact_path})"
    _check_language_model({"task_type": record.task_type}, record.model_id)
    if record.artifact_kind in ("checkpoint", "run"):
        record.verify()  # the artifact is still what was registered
        found = _from_path(Path(record.artifact_path), scratch)
        return LanguageModel(found.model, found.tokenizer, source)
    model = record.load()  # hash checked, rebuilt from the registered spec, weights without unpickling
    tokenizer: Any = ByteTokenizer()
    if record.artifact_kind == "bundle":
        manifest = _read_json(Path(record.artifact_path) / "manifest.json")
        file = (manifest.get("tokenizer") or {}).get("file")
        if file:
            tokenizer = load_tokenizer(Path(record.artifact_path) / file)
    return LanguageModel(model, tokenizer, source)


def load_language_model(
    checkpoint: str | Path | None = None,
    model: str | None = None,
    *,
    registry: str = "models.db",
    device: str = "cpu",
) -> LanguageModel:
    """Rebuild a language model and its tokenizer from a checkpoint / run directory or a registry version.

    Args:
        checkpoint: A ``ckpt-*`` folder, a checkpoints folder or a run directory.
        model: A registry reference (``NAME@ALIAS``, ``NAME:VERSION`` or ``NAME``); exactly one of the two.
        registry: Registry file or SQLAlchemy URL (for ``model``).
        device: Where the model runs (``cpu``, ``cuda``, ``auto``).

    Raises:
        TrainEngineError: Not exactly one source, not a language model, no registry there.
        CheckpointError: No valid checkpoint or no model spec at the path.

    Example:
        >>> lm = load_language_model("runs/lm/20260101-120000")  # doctest: +SKIP
        >>> generate_text(lm.model, lm.tokenizer, "def ", max_new_tokens=32)  # doctest: +SKIP
    """
    import torch

    if (checkpoint is None) == (model is None):
        raise TrainEngineError("give exactly one of --checkpoint PATH or --model NAME@ALIAS")
    with tempfile.TemporaryDirectory(prefix="trainengine-generate-") as scratch:
        if checkpoint is not None:
            found = _from_path(Path(checkpoint), Path(scratch))
        else:
            assert model is not None
            found = _from_registry(model, registry, Path(scratch))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    found.model = found.model.to(device).eval()
    return found


def generate_command(
    prompt: str = typer.Option(..., "--prompt", "-p", help="The text to continue."),
    checkpoint: Path | None = typer.Option(
        None, "--checkpoint", help="A ckpt-* folder, a checkpoints folder or a run directory."
    ),
    model: str | None = typer.Option(
        None, "--model", help="A registry version: NAME@ALIAS, NAME:VERSION or NAME (latest)."
    ),
    registry: str = typer.Option(
        "models.db",
        "--registry",
        "-r",
        envvar="TRAINENGINE_REGISTRY",
        help="Registry file or SQLAlchemy URL (for --model).",
    ),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", "-n", min=1, help="Tokens to generate."),
    temperature: float = typer.Option(
        1.0, "--temperature", "-t", min=0.0, help="Divides the logits; 0 = greedy (argmax), < 1 sharper."
    ),
    top_k: int | None = typer.Option(None, "--top-k", min=1, help="Sample among the k most likely tokens only."),
    top_p: float | None = typer.Option(
        None, "--top-p", min=0.0, max=1.0, help="Nucleus sampling: the most likely tokens up to this probability mass."
    ),
    seed: int | None = typer.Option(
        None, "--seed", help="Seed of the sampling: same seed, prompt and device, same text."
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
    with_prompt: bool = typer.Option(False, "--with-prompt", help="Print the prompt before its completion."),
) -> None:
    """Complete --prompt with a trained language model (greedy at --temperature 0)."""
    from trainengine.models._gpt import check_sampling, generate_text

    try:
        check_sampling(temperature, top_k, top_p)
    except ValueError as exc:
        raise TrainEngineError(str(exc)) from None
    lm = load_language_model(checkpoint, model, registry=registry, device=device)
    try:
        text = generate_text(
            lm.model,
            lm.tokenizer,
            prompt,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
        )
    except TypeError as exc:
        raise TrainEngineError(f"{lm.source}: {exc}") from None
    typer.echo(prompt + text if with_prompt else text)
