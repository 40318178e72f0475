"""``trainengine checkpoints consolidate``: a sharded (FSDP2) checkpoint as one ordinary checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

from trainengine.checkpoint._format import checkpoint_name, read_checkpoint
from trainengine.checkpoint._write import materialize, prepare, write_checkpoint
from trainengine.errors import CheckpointError

__all__ = ["consolidate_checkpoint"]


def consolidate_checkpoint(
    path: str | os.PathLike[str], output_dir: str | os.PathLike[str] | None = None, *, overwrite: bool = False
) -> Path:
    """Write a sharded checkpoint again as an ordinary one: the whole weights in one ``model.safetensors``.

    The shards of every rank are verified against the manifest and assembled in this process (no
    process group, any number of saved ranks). The result holds the weights, the optimizer state
    in the one-process format, the rest of the training state and the metadata: export, the
    registry and a one-process resume read it like any checkpoint.

    Args:
        path: The sharded ``ckpt-*`` folder.
        output_dir: The folder to write ``ckpt-<step>`` into; default ``<run>/consolidated`` next
            to the run's ``checkpoints`` folder.
        overwrite: Replace a consolidated checkpoint of the same step.

    Returns:
        The consolidated checkpoint's folder.

    Raises:
        CheckpointError: the checkpoint is corrupt, not sharded, or the output exists.
    """
    source = Path(path)
    loaded = read_checkpoint(source)  # verified; the shards assembled whole
    if loaded.sharded is None:
        raise CheckpointError(
            f"{source} is not a sharded checkpoint (it already holds one model.safetensors): use it as it is"
        )
    out = Path(output_dir) if output_dir is not None else source.parent.parent / "consolidated"
    name = checkpoint_name(loaded.meta.step)
    if (out / name).exists() and not overwrite:
        raise CheckpointError(f"{out / name} exists: pass --overwrite to replace it, or choose another --output")
    out.mkdir(parents=True, exist_ok=True)
    meta = {k: v for k, v in loaded.meta.extra.items() if k != "library_versions"}
    meta["consolidated_from"] = str(source)
    payload = prepare(
        step=loaded.meta.step,
        epoch=loaded.meta.epoch,
        model=loaded.model_state,
        state=loaded.state,
        metrics=loaded.meta.metrics,
        meta=meta,
        tags=loaded.meta.tags,
    )
    if payload.model is not None:
        payload.model = materialize(payload.model)
    payload.state = materialize(payload.state)
    return write_checkpoint(out, payload, name=name)
