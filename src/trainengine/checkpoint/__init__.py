"""Pickle-free, crash-safe checkpoints.

``CheckpointManager`` writes, prunes, finds, verifies and loads checkpoints; the functions below
are the same operations for a single folder.

Folder layout (``format_version`` 1)::

    <checkpoint_dir>/
      index.json                 best-k / last-n bookkeeping (a cache; rebuilt from the folders)
      .writer.lock               advisory lock a writer holds while saving (cleanup waits for it)
      ckpt-000001200/            one checkpoint per step: ckpt-<step:09d>
        model.safetensors        model weights under canonical keys (no "_orig_mod." / "module."
                                 wrapper prefixes); tied weights stored once
        state.safetensors        every other tensor: optimizer moments, RNG states (as byte
                                 tensors), numpy arrays, ...
        state.json               {"format_version", "skeleton", "model": {"file", "aliases"}}:
                                 the structure of ``state`` with every scalar, tensors referenced
                                 by name (grammar in ``trainengine.checkpoint._flatten``)
        meta.json                {"format_version", "step", "epoch", "timestamp", "tags",
                                 "metrics", "library_versions", "meta": {git_commit, config, ...}}
        manifest.json            {"format_version", "step", "files": {name: {"size", "sha256"}}}
                                 for every other file; written last, so it marks completion

Guarantees:

* **Nothing is unpickled.** Reading uses ``safetensors.torch.load_file`` and ``json`` only; a
  ``.safetensors`` file that is really a pickle (``torch.save``) is refused with an error saying
  so, before any byte of it is interpreted.
* **Atomic writes.** A save writes ``.tmp-ckpt-<step>-<random>/``, fsyncs each file and the
  folder, renames it to ``ckpt-<step>`` and fsyncs the parent. Re-saving a step moves the old
  folder aside (``.trash-replaced-*``) and deletes it only once the new one is in place. A crash
  at any point leaves the old state or the new complete checkpoint, plus perhaps a hidden
  leftover that the next ``CheckpointManager`` removes (or, for a re-save interrupted between its
  two renames, puts back).
* **Safe deletes.** Pruning renames a checkpoint to ``.trash-*`` before removing it.
* **One writer, many readers.** A manager opened while another process writes (a CLI listing)
  leaves that write's temporary folder alone: leftovers are only removed under the writer lock.
* **Verified reads.** Sizes and SHA-256 of every file are checked against the manifest before
  loading; ``get_latest_valid_checkpoint()`` skips (and names) newer damaged checkpoints.
* **Failed saves are clean.** Disk full or permission errors raise ``CheckpointError`` naming
  the reason, remove the temporary folder and leave earlier checkpoints untouched.

Example:
    >>> import tempfile, torch
    >>> from trainengine.checkpoint import CheckpointManager
    >>> model = torch.nn.Linear(4, 2)
    >>> opt = torch.optim.AdamW(model.parameters())
    >>> manager = CheckpointManager(tempfile.mkdtemp(), keep_last_n=2)
    >>> path = manager.save(
    ...     step=100, epoch=1, model=model, state={"optimizer": opt.state_dict()}, metrics={"val/loss": 0.25}
    ... )
    >>> path.name, manager.verify(path)
    ('ckpt-000000100', [])
    >>> manager.load_checkpoint(path, model, optimizer=opt).step
    100
"""

from trainengine.checkpoint._async import AsyncSave
from trainengine.checkpoint._consolidate import consolidate_checkpoint
from trainengine.checkpoint._flatten import flatten_state, unflatten_state
from trainengine.checkpoint._format import (
    FORMAT_VERSION,
    CheckpointMetadata,
    LoadedCheckpoint,
    checkpoint_name,
    is_checkpoint_name,
    read_checkpoint,
    read_metadata,
    sniff_safetensors,
    verify_checkpoint,
)
from trainengine.checkpoint._import_pt import import_pt_checkpoint, read_pt_checkpoint
from trainengine.checkpoint._keys import canonical_keys, load_model_state, load_weights_file, save_weights_file
from trainengine.checkpoint._load import apply_checkpoint, load_checkpoint
from trainengine.checkpoint._manager import EMERGENCY_TAG, CheckpointInfo, CheckpointManager
from trainengine.checkpoint._optim_state import load_optimizer_state, load_scheduler_state, named_optimizer_state

__all__ = [
    "import_pt_checkpoint",
    "read_pt_checkpoint",
    "CheckpointManager",
    "consolidate_checkpoint",
    "CheckpointInfo",
    "CheckpointMetadata",
    "LoadedCheckpoint",
    "AsyncSave",
    "EMERGENCY_TAG",
    "FORMAT_VERSION",
    "flatten_state",
    "unflatten_state",
    "checkpoint_name",
    "is_checkpoint_name",
    "verify_checkpoint",
    "sniff_safetensors",
    "read_checkpoint",
    "read_metadata",
    "load_checkpoint",
    "apply_checkpoint",
    "named_optimizer_state",
    "load_optimizer_state",
    "load_scheduler_state",
    "load_model_state",
    "save_weights_file",
    "load_weights_file",
    "canonical_keys",
]
