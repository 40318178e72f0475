"""Convert a ``torch.save`` checkpoint (seed 002 / 004 ``.pt`` dict) into a checkpoint folder, never unpickling.

The seeds save checkpoints as one pickled dict::

    {"model_state_dict": ..., "optimizer_state_dict": ..., "scheduler_state_dict": ...,
     "scaler_state_dict": ..., "step": 7000, "epoch": 3, "val_loss": 2.1, "config": {...},
     "git_commit": "abc123", ...}

Such a file is read with ``torch.load(weights_only=True)`` only: tensors and plain containers
(dict, list, tuple, str, numbers, and ``torch.__version__``) load; anything else (a pickled class,
a whole ``nn.Module``, a numpy array, a TorchScript archive) is refused by torch's restricted
unpickler before it can run, and the refusal is reported with its reason. Nothing is ever
unpickled with the full unpickler.

Where each entry goes in the folder format (see :mod:`trainengine.checkpoint`):

=================================================  =========================================
``.pt`` entry                                      checkpoint folder
=================================================  =========================================
``model_state_dict`` (or a bare state dict)        ``model.safetensors`` (canonical keys)
``optimizer_state_dict``                           ``state["optimizer"]``
``scheduler_state_dict``                           ``state["scheduler"]``
``scaler_state_dict``                              ``state["scaler"]``
``step`` / ``global_step``, ``epoch``              the checkpoint's step and epoch
numbers (``val_loss``, ``best_val_loss``, ...)     ``metrics``
other entries holding tensors                      ``state[<key>]``
other entries (``config``, ``git_commit``, ...)    ``meta`` (JSON)
=================================================  =========================================
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.torch_version import TorchVersion

from trainengine.checkpoint._format import checkpoint_name
from trainengine.checkpoint._manager import CheckpointManager
from trainengine.errors import CheckpointError

__all__ = ["import_pt_checkpoint", "read_pt_checkpoint"]

_STATE_KEYS = {"optimizer_state_dict": "optimizer", "scheduler_state_dict": "scheduler", "scaler_state_dict": "scaler"}
_STEP_KEYS = ("step", "global_step")


def read_pt_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a ``.pt`` / ``.pth`` file with ``torch.load(weights_only=True)`` (tensors and plain containers only).

    Args:
        path: The file ``torch.save`` wrote.

    Returns:
        The dict it holds (a bare ``state_dict`` is a dict of tensors).

    Raises:
        CheckpointError: The file is missing, is not a dict, or holds something ``weights_only``
            refuses (the message gives torch's reason; the file is never unpickled).
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such file (expected a .pt / .pth file written by torch.save)")
    try:
        # torch.__version__ is a TorchVersion (a str subclass); seed 002's checkpoint stores it as
        # "pytorch_version". Allowing that one class of torch's keeps such files readable.
        with torch.serialization.safe_globals([TorchVersion]):
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, ValueError, EOFError, OSError) as exc:
        raise CheckpointError(
            f"{p}: refused — torch.load(weights_only=True) cannot read it: {_reason(exc)}. "
            "trainengine reads only tensors and plain containers (dict, list, tuple, str, numbers) and never "
            "unpickles other objects (pickled classes, whole nn.Modules, numpy arrays, TorchScript archives). "
            "Re-save it in the process that wrote it with state dicts and plain values only, e.g. "
            "torch.save({'model_state_dict': model.state_dict(), 'optimizer_state_dict': optimizer.state_dict(), "
            "'step': step}, path)"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{p}: holds a {type(obj).__name__}, not a dict; expected a checkpoint dict "
            "({'model_state_dict': ..., 'step': ...}) or a model state_dict"
        )
    return obj


def _reason(exc: BaseException) -> str:
    """The line of torch's message that says what was refused (not its advice to unpickle anyway)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    for line in text.splitlines():
        _, found, rest = line.partition("WeightsUnpickler error:")
        if found:
            return rest.split(" Please use", 1)[0].strip().rstrip(".")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0].rstrip(".") if lines else type(exc).__name__


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _holds_tensor(obj: Any) -> bool:
    if isinstance(obj, torch.Tensor):
        return True
    if isinstance(obj, Mapping):
        return any(_holds_tensor(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(_holds_tensor(v) for v in obj)
    return False


def _number(value: Any) -> float | None:
    """A metric value: a Python number or a one-element tensor (bools are not metrics)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        return float(value.detach().float().item())
    return None


def _int(value: Any, key: str, source: Path) -> int:
    number = _number(value)
    if number is None or not math.isfinite(number) or number < 0 or number != int(number):
        raise CheckpointError(f"{source}: '{key}' must be a non-negative whole number, got {value!r}")
    return int(number)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def import_pt_checkpoint(
    source: str | os.PathLike[str],
    output_dir: str | os.PathLike[str] | None = None,
    *,
    step: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert a ``torch.save`` checkpoint dict into a pickle-free checkpoint folder.

    Args:
        source: The ``.pt`` / ``.pth`` file (seed 002's ``checkpoint_7000.pt``, seed 004's
            ``best_model.pth``, or a bare ``model.state_dict()``).
        output_dir: The checkpoint folder to write into (``<output_dir>/ckpt-<step>``); default
            ``<source without suffix>/`` next to the file. Other checkpoints there are kept.
        step: Step to file it under when the dict has no ``step`` / ``global_step``; default 0.
        overwrite: Replace a checkpoint of the same step already in ``output_dir``.

    Returns:
        The written ``ckpt-*`` folder; load it with
        :func:`trainengine.checkpoint.load_checkpoint` or ``trainengine.compat.seed002.load_checkpoint``.

    Raises:
        CheckpointError: The file cannot be read with ``weights_only=True`` (the reason is
            given), has no model weights, holds an unusable step, or the target exists.

    Example:
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> folder = Path(tempfile.mkdtemp())
        >>> model = torch.nn.Linear(2, 1)
        >>> torch.save({"model_state_dict": model.state_dict(), "step": 7, "val_loss": 0.5}, folder / "c.pt")
        >>> import_pt_checkpoint(folder / "c.pt").name
        'ckpt-000000007'
    """
    src = Path(source)
    data = read_pt_checkpoint(src)
    if "model_state_dict" in data:
        weights = data["model_state_dict"]
        rest = {k: v for k, v in data.items() if k != "model_state_dict"}
    elif _is_state_dict(data):
        weights, rest = data, {}
    else:
        raise CheckpointError(
            f"{src}: no model weights — expected a 'model_state_dict' entry or a bare model state_dict; "
            f"found the keys {', '.join(sorted(map(str, data))) or '(none)'}"
        )
    if not _is_state_dict(weights):
        raise CheckpointError(f"{src}: 'model_state_dict' must be a non-empty dict of tensors")
    found_steps = [k for k in _STEP_KEYS if rest.get(k) is not None]
    step_value = _int(rest[found_steps[0]], found_steps[0], src) if found_steps else (step if step is not None else 0)
    epoch = _int(rest["epoch"], "epoch", src) if rest.get("epoch") is not None else 0
    state: dict[str, Any] = {}
    metrics: dict[str, float] = {}
    meta: dict[str, Any] = {}
    for key, value in rest.items():
        if key in _STEP_KEYS or key == "epoch":
            continue
        if key in _STATE_KEYS:
            if value is not None:
                state[_STATE_KEYS[key]] = value
            continue
        number = _number(value)
        if number is not None:
            metrics[str(key)] = number
        elif _holds_tensor(value):
            state[str(key)] = value
        else:
            meta[str(key)] = value
    meta["imported_from"] = {"file": str(src.resolve()), "sha256": _sha256(src), "format": "torch.save dict"}
    out = Path(output_dir) if output_dir is not None else src.with_suffix("")
    target = out / checkpoint_name(step_value)
    if target.exists() and not overwrite:
        raise CheckpointError(
            f"{target} already exists; pass overwrite=True (--overwrite) to replace it, or choose another --output"
        )
    # keep_last_n as large as can be: importing must never prune checkpoints already in the folder.
    manager = CheckpointManager(out, keep_best_k=0, keep_last_n=sys.maxsize)
    return manager.save(step=step_value, epoch=epoch, model=weights, state=state, metrics=metrics, meta=meta)
