"""What a bundle of a model trained on files needs from its data: the fitted preprocessing, the
tokenizer, raw example records and the class names (``create_export_bundle`` keyword arguments);
for a reward model also its step encoding and problem/steps examples.

Gathered from the live training data sets (export at train end) or from what a checkpoint's
metadata and a run directory kept (``trainengine export``), so a bundle made later from a
checkpoint serves exactly like one made when training ended.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

__all__ = ["serving_kwargs_from_data", "serving_kwargs_from_saved"]

_EXAMPLES = 4


def _raw_records(dataset: Any, n: int = _EXAMPLES) -> list[dict[str, Any]] | None:
    """The first ``n`` rows of a tabular file data set as raw JSON records (what ``/predict`` takes)."""
    import numpy as np

    spec = getattr(dataset, "preprocessing", None)
    table, rows = getattr(dataset, "table", None), getattr(dataset, "rows", None)
    if not spec or table is None or rows is None or not len(rows):
        return None
    import pyarrow as pa

    picked = table.select(list(spec["feature_columns"])).take(pa.array(np.asarray(rows[:n], dtype=np.int64)))
    return [{k: (None if isinstance(v, float) and v != v else v) for k, v in rec.items()} for rec in picked.to_pylist()]


def _step_examples(dataset: Any, n: int = _EXAMPLES) -> list[dict[str, Any]] | None:
    """The first ``n`` examples of a reward data set as ``/predict`` takes them: ``{"problem", "steps"}``."""
    example = getattr(dataset, "example", None)
    if not callable(example) or getattr(dataset, "separator", None) is None:
        return None
    out = []
    for i in range(min(n, len(dataset))):
        ex = example(i)
        steps = [str(s) for s in getattr(ex, "steps", ()) if s]
        if isinstance(getattr(ex, "problem", None), str) and steps:
            out.append({"problem": ex.problem, "steps": steps})
    return out or None


def _step_encoding(dataset: Any) -> dict[str, Any] | None:
    """A reward data set's ``{"step_separator", "max_length", "max_steps_per_example"}``."""
    separator, length, steps = (getattr(dataset, name, None) for name in ("separator", "max_length", "max_steps"))
    if separator is None or length is None or steps is None:
        return None
    return {"step_separator": separator, "max_length": int(length), "max_steps_per_example": int(steps)}


def _tokenizer_folder(tokenizer: Any, scratch: Path) -> Path | None:
    if tokenizer is None or not hasattr(tokenizer, "save"):
        return None
    folder = scratch / "tokenizer"
    tokenizer.save(folder)
    return folder


def serving_kwargs_from_data(train_ds: Any, val_ds: Any, scratch: Path) -> dict[str, Any]:
    """``create_export_bundle`` keywords from the training / validation data sets (empty for in-memory data)."""
    kwargs: dict[str, Any] = {}
    spec = getattr(train_ds, "preprocessing", None)
    if spec:
        kwargs["preprocessing"] = spec
        records = _raw_records(val_ds) or _raw_records(train_ds)
        if records:
            kwargs["raw_examples"] = records
    folder = _tokenizer_folder(getattr(train_ds, "tokenizer", None), scratch)
    if folder is not None:
        kwargs["tokenizer_dir"] = folder
    names = getattr(train_ds, "class_names", None)
    if names:
        kwargs["class_names"] = list(names)
    encoding = _step_encoding(train_ds)
    if encoding is not None:  # a reward data set: examples are problems with their steps
        kwargs["step_encoding"] = encoding
        examples = _step_examples(val_ds) or _step_examples(train_ds)
        if examples:
            kwargs["raw_examples"] = examples
    return kwargs


def serving_kwargs_from_saved(
    meta_data: dict[str, Any] | None, run_dir: Path | None, scratch: Path, splits: Any = None
) -> dict[str, Any]:
    """The same keywords from a checkpoint's ``meta["data"]`` (else the run directory's files).

    ``splits`` (the data re-read from the config's files, when they are still there) adds raw
    examples and image class names.
    """
    import json

    data = dict(meta_data or {})
    if not data.get("preprocessing") and run_dir is not None and (run_dir / "preprocessing.json").is_file():
        data["preprocessing"] = json.loads((run_dir / "preprocessing.json").read_text())
    kwargs: dict[str, Any] = {}
    if data.get("preprocessing"):
        kwargs["preprocessing"] = data["preprocessing"]
    tokenizer_info = data.get("tokenizer") or {}
    if data.get("tokenizer_json"):
        folder = scratch / "tokenizer"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "tokenizer.json").write_text(data["tokenizer_json"], encoding="utf-8")
        kwargs["tokenizer_dir"] = folder
    elif run_dir is not None and (run_dir / "tokenizer").is_dir():
        kwargs["tokenizer_dir"] = run_dir / "tokenizer"
    elif (data.get("tokenizer") or {}).get("kind") == "byte":
        from trainengine.data import ByteTokenizer

        kwargs["tokenizer_dir"] = ByteTokenizer().save(scratch / "tokenizer").parent
    written = kwargs.get("tokenizer_dir")
    if written is not None and Path(written).is_relative_to(scratch) and "prefix_ids" in tokenizer_info:
        # A reward model's StepTokenizer: its pad and prefix ids travel beside the tokenizer file
        # (what StepTokenizer.save writes as reward_tokenizer.json).
        from trainengine._io import atomic_write_json

        atomic_write_json(Path(written) / "reward_tokenizer.json", tokenizer_info)
    if splits is not None:
        from_data = serving_kwargs_from_data(splits.train, splits.val, scratch / "live")
        for key in ("raw_examples", "class_names", "step_encoding"):
            if key in from_data:
                kwargs.setdefault(key, from_data[key])
    return kwargs


def scratch_dir() -> tempfile.TemporaryDirectory[str]:
    """A temporary folder for tokenizer files on their way into a bundle."""
    return tempfile.TemporaryDirectory(prefix="trainengine-export-")
