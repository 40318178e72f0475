"""Writing one model format each (ONNX, TorchScript, torch.export, safetensors) and checking it.

Every exporter takes the float32 CPU copy of the model in eval mode and the example batch, writes
its file(s) into the bundle folder and returns the manifest entry for the format. Parity is
checked against the PyTorch outputs on the example batch AND on a second batch of another size
(and, for token inputs, another length), so a format that baked in the example's shape fails at
export time instead of in production.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trainengine.errors import ExportError, MissingExtraError
from trainengine.registries import EXPORT_FORMATS

__all__ = [
    "FORMATS",
    "ExportContext",
    "write_format",
    "ParityInputs",
    "export_onnx",
    "export_torchscript",
    "export_torch_export",
    "export_pytorch",
    "max_abs_diff",
]

#: The built-in formats; every registered one is in :data:`trainengine.registries.EXPORT_FORMATS`.
FORMATS = ("onnx", "torchscript", "torch_export", "pytorch")
INPUT_NAME = "input"
OUTPUT_NAME = "output"
# Models above this size keep their ONNX weights in a side file (protobuf's 2 GB limit).
_ONNX_INLINE_LIMIT = 1_500_000_000

logger = logging.getLogger(__name__)


class ParityInputs:
    """The example batch and a second batch of another shape, with the PyTorch outputs of both.

    Attributes:
        batches: ``[example, variant]`` input tensors (CPU).
        expected: The PyTorch model's outputs for each, as float64 numpy arrays.
        token_inputs: Whether axis 1 is a sequence axis (integer token ids).
    """

    def __init__(self, model: nn.Module, example: torch.Tensor, token_inputs: bool, max_seq_len: int | None) -> None:
        self.token_inputs = token_inputs
        variant = _variant_batch(example, token_inputs, max_seq_len)
        self.batches = [example, variant]
        with torch.no_grad():
            self.expected = [_as_numpy(model(b)) for b in self.batches]


def _variant_batch(example: torch.Tensor, token_inputs: bool, max_seq_len: int | None) -> torch.Tensor:
    """A batch with one more row (and, for tokens, a shorter sequence) than the example."""
    extra = torch.cat([example, example[:1]], dim=0)  # (B+1, ...)
    if token_inputs and example.shape[1] > 2:
        return extra[:, : example.shape[1] - 1].contiguous()
    return extra


def _as_numpy(output: Any) -> np.ndarray:
    if isinstance(output, (tuple, list)):
        output = output[0]
    if isinstance(output, dict):
        output = output.get("logits", next(iter(output.values())))
    if hasattr(output, "logits"):
        output = output.logits
    if not isinstance(output, torch.Tensor):
        raise ExportError(
            f"the model returned {type(output).__name__}; "
            "export needs a tensor (or a tuple/dict whose first entry is one)"
        )
    return output.detach().to(torch.float64).cpu().numpy()


def max_abs_diff(expected: list[np.ndarray], actual: list[np.ndarray]) -> float:
    """Largest absolute difference over all batches (inf when shapes or batch counts differ)."""
    if len(expected) != len(actual):
        return float("inf")
    worst = 0.0
    for e, a in zip(expected, actual, strict=True):
        a = np.asarray(a, dtype=np.float64)
        if a.shape != e.shape:
            return float("inf")
        if e.size:
            worst = max(worst, float(np.max(np.abs(e - a))))
    return worst


def _check_parity(fmt: str, parity: ParityInputs, actual: list[np.ndarray], tolerance: float) -> float:
    diff = max_abs_diff(parity.expected, actual)
    scale = max(1.0, max(float(np.max(np.abs(e))) if e.size else 0.0 for e in parity.expected))
    if not diff <= tolerance * scale:
        shapes = ", ".join(str(list(b.shape)) for b in parity.batches)
        raise ExportError(
            f"{fmt} export does not match the PyTorch model: max abs difference {diff:.3g} on inputs of shape {shapes} "
            f"exceeds the tolerance {tolerance:g} x {scale:.3g} — the format cannot represent this model faithfully; "
            f"drop '{fmt}' from formats or raise tolerance"
        )
    return diff


def _dynamic_shapes(example: torch.Tensor, token_inputs: bool, max_seq_len: int | None) -> tuple[dict[int, Any]]:
    dims: dict[int, Any] = {0: torch.export.Dim("batch", min=1, max=1_000_000)}
    if token_inputs and example.dim() >= 2:
        dims[1] = torch.export.Dim("sequence", min=1, max=max_seq_len or 1_000_000)
    return (dims,)


@contextlib.contextmanager
def _quiet() -> Any:
    """Silence exporter chatter (progress prints, deprecation and registry warnings)."""
    noisy = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "onnxscript")]
    levels = [lg.level for lg in noisy]
    for lg in noisy:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(noisy, levels, strict=True):
            lg.setLevel(level)


def export_onnx(
    model: nn.Module, parity: ParityInputs, folder: Path, tolerance: float, max_seq_len: int | None, opset: int = 18
) -> dict[str, Any]:
    """``model.onnx`` with a dynamic batch axis (and sequence axis for tokens), checked with ONNX Runtime."""
    try:
        import onnx  # noqa: F401 - imported only to fail early: the exporter needs it
        import onnxruntime as ort
        import onnxscript  # noqa: F401 - imported only to fail early: the dynamo exporter needs it
    except ImportError as exc:
        raise MissingExtraError(exc.name or "onnx", "export", "ONNX export") from None
    example = parity.batches[0]
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    path = folder / "model.onnx"
    try:
        with _quiet():
            torch.onnx.export(
                model,
                (example,),
                str(path),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=_dynamic_shapes(example, parity.token_inputs, max_seq_len),
                dynamo=True,
                opset_version=opset,
                external_data=size > _ONNX_INLINE_LIMIT,
                verbose=False,
            )
    except Exception as exc:  # the exporter raises many types; name the format and the cause
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        raise ExportError(
            f"onnx export failed: {type(exc).__name__}: {first_line} — "
            "drop 'onnx' from formats or make the model traceable by torch.export"
        ) from exc
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    dtype = np.int64 if parity.token_inputs else np.float32
    actual = [session.run([OUTPUT_NAME], {INPUT_NAME: b.numpy().astype(dtype)})[0] for b in parity.batches]
    diff = _check_parity("onnx", parity, actual, tolerance)
    files = [path.name] + ([f"{path.name}.data"] if (folder / f"{path.name}.data").exists() else [])
    return {"file": path.name, "files": files, "opset": opset, "max_abs_diff": diff, "tolerance": tolerance}


def export_torchscript(model: nn.Module, parity: ParityInputs, folder: Path, tolerance: float) -> dict[str, Any]:
    """``model.torchscript.pt`` by tracing, or scripting when the trace does not generalise.

    Raises:
        ExportError: Neither tracing nor scripting reproduces the model (the caller then offers
            ``torch.export`` instead and says so in the manifest).
    """
    path = folder / "model.torchscript.pt"
    problems: list[str] = []
    for method in ("trace", "script"):
        try:
            with _quiet():
                module = (
                    torch.jit.trace(model, (parity.batches[0],), check_trace=False)
                    if method == "trace"
                    else torch.jit.script(model)
                )
                with torch.no_grad():
                    actual = [_as_numpy(module(b)) for b in parity.batches]
            diff = _check_parity("torchscript", parity, actual, tolerance)
        except Exception as exc:  # noqa: BLE001 - tracing/scripting fail in many ways; try the next method
            problems.append(f"{method}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
            continue
        with _quiet():
            torch.jit.save(module, str(path))
        return {
            "file": path.name,
            "method": method,
            "max_abs_diff": diff,
            "tolerance": tolerance,
            "note": "TorchScript is deprecated in PyTorch; prefer model.onnx or torch.export (.pt2)",
        }
    raise ExportError("torchscript export failed — " + "; ".join(problems))


def export_torch_export(
    model: nn.Module, parity: ParityInputs, folder: Path, tolerance: float, max_seq_len: int | None
) -> dict[str, Any]:
    """``model.pt2`` from ``torch.export`` (the successor of TorchScript), dynamic batch axis."""
    path = folder / "model.pt2"
    example = parity.batches[0]
    try:
        with _quiet():
            program = torch.export.export(
                model, (example,), dynamic_shapes=_dynamic_shapes(example, parity.token_inputs, max_seq_len)
            )
            module = program.module()
            with torch.no_grad():
                actual = [_as_numpy(module(b)) for b in parity.batches]
    except Exception as exc:
        raise ExportError(
            f"torch_export failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    diff = _check_parity("torch_export", parity, actual, tolerance)
    with _quiet():
        torch.export.save(program, str(path))
    return {
        "file": path.name,
        "max_abs_diff": diff,
        "tolerance": tolerance,
        "load": "torch.export.load('model.pt2').module()",
    }


def export_pytorch(
    model: nn.Module, folder: Path, spec: dict[str, Any] | None, config_dict: dict[str, Any] | None, num_parameters: int
) -> dict[str, Any]:
    """``model.safetensors`` (canonical keys, tied tensors once) and ``model_config.json``."""
    from trainengine.checkpoint import save_weights_file  # canonical keys, tied tensors once

    save_weights_file(model, folder / "model.safetensors")
    (folder / "model_config.json").write_text(
        json.dumps(
            {"spec": spec, "class": type(model).__name__, "config": config_dict, "num_parameters": num_parameters},
            indent=2,
        )
        + "\n"
    )
    entry: dict[str, Any] = {"files": ["model.safetensors", "model_config.json"], "rebuildable": spec is not None}
    if spec is None:
        entry["note"] = (
            "no model spec: load the weights into your own module with trainengine.checkpoint.load_model_state"
        )
    return entry


Exporter = Callable[..., dict[str, Any]]


# ----------------------------------------------------------------------------- the format table


@dataclass
class ExportContext:
    """What an exporter receives: one argument, so new fields never break registered exporters.

    Attributes:
        model: The float32 CPU copy of the model, in eval mode.
        parity: The example batch and a second batch of another shape, with the PyTorch outputs
            of both (check your format against ``parity.expected``).
        folder: The bundle folder (still a temporary one) to write the format's files into.
        tolerance: Largest allowed |exported - PyTorch|, relative to max(1, max |output|).
        max_seq_len: The model's longest sequence for token inputs, else None.
        spec: The model spec (``{"architecture", "kwargs"}``) or None.
        config_dict: The model config as a dict, or None.
        formats: Every format requested for this bundle, in order.
        entries: Manifest entries written so far (name -> entry); an exporter may add an entry
            for a format it writes instead (torchscript falls back to ``torch_export``).
    """

    model: nn.Module
    parity: ParityInputs
    folder: Path
    tolerance: float
    max_seq_len: int | None
    spec: dict[str, Any] | None
    config_dict: dict[str, Any] | None
    formats: list[str]
    entries: dict[str, Any] = field(default_factory=dict)


def onnx_format(ctx: ExportContext) -> dict[str, Any]:
    """The ``onnx`` entry of :data:`trainengine.registries.EXPORT_FORMATS`."""
    return export_onnx(ctx.model, ctx.parity, ctx.folder, ctx.tolerance, ctx.max_seq_len)


def torchscript_format(ctx: ExportContext) -> dict[str, Any]:
    """The ``torchscript`` entry: TorchScript, or ``torch.export`` when TorchScript cannot."""
    try:
        return export_torchscript(ctx.model, ctx.parity, ctx.folder, ctx.tolerance)
    except Exception as exc:  # noqa: BLE001 - any TorchScript failure falls back to torch.export, logged
        logger.warning("%s; writing torch.export (model.pt2) instead", exc)
        entry = {"status": "replaced", "replaced_by": "torch_export", "reason": str(exc)}
        ctx.entries["torchscript"] = entry  # first, so the manifest lists it before its stand-in
        if "torch_export" not in ctx.formats:
            ctx.entries["torch_export"] = torch_export_format(ctx)
        return entry


def torch_export_format(ctx: ExportContext) -> dict[str, Any]:
    """The ``torch_export`` entry: ``model.pt2``."""
    return export_torch_export(ctx.model, ctx.parity, ctx.folder, ctx.tolerance, ctx.max_seq_len)


def pytorch_format(ctx: ExportContext) -> dict[str, Any]:
    """The ``pytorch`` entry: ``model.safetensors`` and ``model_config.json``."""
    from trainengine.models import count_parameters

    return export_pytorch(ctx.model, ctx.folder, ctx.spec, ctx.config_dict, count_parameters(ctx.model))


def write_format(name: str, ctx: ExportContext) -> None:
    """Run the exporter registered as ``name`` and record its manifest entry in ``ctx.entries``.

    Raises:
        ExportError: The name is not registered (listing the registered formats), or the
            exporter returned something other than a dict.
    """
    exporter = EXPORT_FORMATS.get(name)
    entry = exporter(ctx)
    if not isinstance(entry, dict):
        raise ExportError(
            f"export format {name!r} returned {type(entry).__name__}; "
            "an exporter must return its manifest entry as a dict"
        )
    ctx.entries[name] = entry
