"""Image folders (``root/class_name/image.png``) decoded with Pillow into the Arrow cache.

Each image becomes one row: ``pixels`` (``fixed_size_binary(C*H*W)``, uint8 in C, H, W order, so a
batch is one reshape away from ``(B, C, H, W)``), ``label`` (the class folder's name) and ``path``.
Decoding happens once per content (the cache key holds every image's sha256, the folder layout,
the size and the mode); training then reads the memory-mapped pixels, never the image files.

Example:
    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> from trainengine.data._types import ReadOptions
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for cls, value in (("cat", 0), ("dog", 255)):
    ...     (root / cls).mkdir()
    ...     Image.new("RGB", (4, 4), (value, 0, 0)).save(root / cls / "a.png")
    >>> cached = read_imagefolder([root], ReadOptions(cache_dir=root / ".cache"))
    >>> cached.meta["classes"], cached.meta["image_shape"]
    (['cat', 'dog'], [3, 4, 4])
    >>> ds = ImageFolderDataset(cached, None, cached.meta["classes"])
    >>> x, y = ds[1]
    >>> tuple(x.shape), float(x[0, 0, 0]), int(y)
    ((3, 4, 4), 1.0, 1)
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from trainengine.data._cache import CachedTable, build_or_load, cache_key, cache_root, source_hashes
from trainengine.data._datasets import PreCollatedBatch
from trainengine.data._types import ReadOptions
from trainengine.errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "read_imagefolder", "ImageFolderDataset"]

#: File endings read as images (case-insensitive); other files in class folders are ignored.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})
_BATCH_BYTES = 32 * 1024 * 1024
_BATCH_ROWS = 1024
_MAX_EXAMPLES = 20


def _list_images(roots: Sequence[Path]) -> list[tuple[Path, str, str, int]]:
    """``(path, class name, root-relative name, root index)`` of every image, sorted by root, class, file name."""
    found: list[tuple[Path, str, str, int]] = []
    for r, root in enumerate(roots):
        if not root.exists():
            raise DataError(
                f"image folder {root} does not exist; data.train_file takes the folder holding class_name/ folders"
            )
        if not root.is_dir():
            raise DataError(
                f"the imagefolder format reads folders laid out as class_name/image.png but {root} is a file; "
                f"pass its parent folder"
            )
        classes = sorted(d for d in os.listdir(root) if not d.startswith(".") and (root / d).is_dir())
        if not classes:
            raise DataError(
                f"image folder {root} has no class folders; lay images out as {root}/<class_name>/<image>.png "
                f"(one folder per class)"
            )
        for cls in classes:
            # Recursive: nested folders under a class belong to that class (as torchvision's ImageFolder).
            for dirpath, dirnames, filenames in os.walk(root / cls):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(filenames):
                    if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                        path = Path(dirpath) / name
                        found.append((path, cls, path.relative_to(root).as_posix(), r))
    return found


def read_imagefolder(files: list[Path], options: ReadOptions) -> CachedTable:
    """Decode image folders (format ``imagefolder``) into the Arrow cache.

    ``files`` are root folders holding one sub-folder per class (several roots are read one after
    the other; their classes are united). Images are converted to ``options.image_mode`` ("auto" =
    L when every image is grayscale, else RGB; alpha is dropped) and resized to
    ``image_size x image_size`` (bilinear, aspect ratio not kept) when it is set; otherwise every
    image must have the first one's size.

    Meta: ``format``, ``image_shape`` ``[C, H, W]``, ``classes`` (sorted class names),
    ``class_counts``, ``sources`` (one entry per root: ``path``, ``size`` (bytes of its images),
    ``sha256`` (over its images' hashes), ``images``, ``rows``), ``bad_rows`` and ``bad_row_examples``.

    Raises:
        DataError: a root is missing, is a file or has no class folders; no images; an image
            cannot be read (``bad_rows="error"``; the message names the file); sizes differ
            without ``image_size`` (the message names the file, both sizes and ``data.image_size``).
    """
    import pyarrow as pa
    from PIL import Image

    roots = [Path(f) for f in files]
    listing = _list_images(roots)
    if not listing:
        raise DataError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in the class folders of {', '.join(map(str, roots))}"
        )
    hashes = source_hashes([p for p, _, _, _ in listing])
    layout = hashlib.sha256("\n".join(f"{r}\t{cls}\t{rel}" for _, cls, rel, r in listing).encode()).hexdigest()
    key = cache_key(
        "imagefolder",
        hashes,
        {
            "layout": layout,
            "roots": len(roots),
            "image_size": options.image_size,
            "image_mode": options.image_mode,
            "bad_rows": options.bad_rows,
        },
    )

    def bad(path: Path, problem: str, examples: list[dict[str, Any]]) -> None:
        if options.bad_rows == "error":
            raise DataError(
                f"cannot read image {path}: {problem}; remove or replace the file, or set data.bad_rows: skip "
                f"to leave unreadable images out"
            )
        if len(examples) < _MAX_EXAMPLES:
            examples.append({"file": str(path), "line": None, "problem": problem})

    def build(sink: Any) -> dict[str, Any]:
        examples: list[dict[str, Any]] = []
        # Pass 1: headers only (Image.open does not decode pixels): mode, size, readability.
        heads: list[tuple[Path, str, str, tuple[int, int], int] | None] = []
        for path, cls, _, r in listing:
            try:
                with Image.open(path) as im:
                    heads.append((path, cls, im.mode, im.size, r))
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                bad(path, str(exc) or type(exc).__name__, examples)
                heads.append(None)
        ok = [h for h in heads if h is not None]
        if not ok:
            raise DataError(f"none of the {len(listing)} images under {', '.join(map(str, roots))} could be read")
        mode = options.image_mode
        if mode == "auto":
            mode = "L" if all(h[2] in _GRAY_MODES for h in ok) else "RGB"
        channels = 1 if mode == "L" else 3
        if options.image_size is not None:
            width = height = options.image_size
        else:
            first_path, (width, height) = ok[0][0], ok[0][3]
            for path, _, _, size, _ in ok:
                if size != (width, height):
                    raise DataError(
                        f"image {path} is {size[0]}x{size[1]} but {first_path} is {width}x{height}: images of "
                        f"one data set need one size; set data.image_size (e.g. data.image_size: "
                        f"{max(width, height)}) to resize them all"
                    )
        row_bytes = channels * height * width
        schema = pa.schema([("pixels", pa.binary(row_bytes)), ("label", pa.string()), ("path", pa.string())])
        pixels: list[bytes] = []
        labels: list[str] = []
        paths: list[str] = []
        skipped = sum(h is None for h in heads)
        rows_per_root = [0] * len(roots)
        counts: dict[str, int] = {}

        def flush() -> None:
            if pixels:
                sink.write(
                    pa.record_batch(
                        [pa.array(pixels, pa.binary(row_bytes)), pa.array(labels), pa.array(paths)], schema=schema
                    )
                )
                pixels.clear()
                labels.clear()
                paths.clear()

        for head in heads:
            if head is None:
                continue
            path, cls, _, _, root_index = head
            try:
                with Image.open(path) as im:
                    im.load()  # pass 2: decode (a truncated file fails here)
                    img = im.convert(mode) if im.mode != mode else im
                    if img.size != (width, height):
                        img = img.resize((width, height), Image.Resampling.BILINEAR)
                    arr = np.asarray(img, dtype=np.uint8)  # (H, W) or (H, W, C)
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                bad(path, str(exc) or type(exc).__name__, examples)
                skipped += 1
                continue
            chw = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)  # (C, H, W)
            pixels.append(np.ascontiguousarray(chw).tobytes())
            labels.append(cls)
            paths.append(str(path))
            counts[cls] = counts.get(cls, 0) + 1
            rows_per_root[root_index] += 1
            if len(pixels) >= _BATCH_ROWS or len(pixels) * row_bytes >= _BATCH_BYTES:
                flush()
        flush()
        sources = []
        for r, root in enumerate(roots):
            mine = [h for item, h in zip(listing, hashes, strict=True) if item[3] == r]
            digest = hashlib.sha256(json.dumps([h["sha256"] for h in mine]).encode()).hexdigest()
            sources.append(
                {
                    "path": str(root),
                    "size": sum(h["size"] for h in mine),
                    "sha256": digest,
                    "images": len(mine),
                    "rows": rows_per_root[r],
                }
            )
        return {
            "format": "imagefolder",
            "image_shape": [channels, height, width],
            "image_mode": mode,
            "pixel_layout": "CHW",
            "classes": sorted(counts),
            "class_counts": dict(sorted(counts.items())),
            "sources": sources,
            "bad_rows": skipped,
            "bad_row_examples": examples,
            "schema": schema,
        }

    names = ", ".join(r.name for r in roots)
    return build_or_load(cache_root(options.cache_dir), key, build, describe=f"imagefolder: {names}")


class ImageFolderDataset(Dataset):
    """Rows of a :func:`read_imagefolder` table as ``(float32 (C, H, W) in [0, 1], int64 class index)``.

    Pixels stay in the memory-mapped cache; a batch (``__getitems__``) gathers its rows with one
    numpy fancy-index per Arrow chunk it touches and converts them in one op.

    Args:
        cached: the cache entry.
        rows: table row indices this split uses (None = every row).
        class_names: the class list (the TRAIN split's ``meta["classes"]``); index = position.

    Raises:
        DataError: the table is not an image table, or a row's class is not in ``class_names``
            (e.g. a validation class the training folders lack: the message names it and a file).
    """

    def __init__(
        self, cached: CachedTable, rows: Sequence[int] | np.ndarray | None, class_names: Sequence[str]
    ) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        table = cached.table
        shape = cached.meta.get("image_shape")
        if "pixels" not in table.column_names or "label" not in table.column_names or not shape:
            raise DataError("ImageFolderDataset needs a table from read_imagefolder (columns pixels, label, path)")
        self.image_shape: tuple[int, int, int] = (int(shape[0]), int(shape[1]), int(shape[2]))
        self.class_names = [str(c) for c in class_names]
        self.table_key = str(cached.meta.get("key", ""))
        n_rows = table.num_rows
        self.rows = np.arange(n_rows, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1)
        if self.rows.size and (self.rows.min() < 0 or self.rows.max() >= n_rows):
            raise DataError(f"row indices must be in [0, {n_rows}); got {int(self.rows.max())}")
        self._path = cached.path
        self._set_chunks(table)
        codes = pc.index_in(table.column("label").take(pa.array(self.rows)), value_set=pa.array(self.class_names))
        missing = pc.is_null(codes).to_numpy(zero_copy_only=False)
        if missing.any():
            j = int(np.flatnonzero(missing)[0])
            row = int(self.rows[j])
            label = table.column("label")[row].as_py()
            where = table.column("path")[row].as_py() if "path" in table.column_names else f"row {row}"
            raise DataError(
                f"class {label!r} ({where}) is not among the training classes {self.class_names}; "
                f"add training images of that class or remove its folder from this split"
            )
        self.labels = torch.from_numpy(codes.to_numpy(zero_copy_only=False).astype(np.int64))  # (N,)
        self._fingerprint: str | None = None

    def _set_chunks(self, table: Any) -> None:
        # One (n_k, C*H*W) uint8 view per Arrow chunk, straight over the memory-mapped buffer.
        row_bytes = int(np.prod(self.image_shape))
        self._chunks: list[np.ndarray] = []
        for chunk in table.column("pixels").chunks:
            view = np.frombuffer(chunk.buffers()[1], dtype=np.uint8, count=(chunk.offset + len(chunk)) * row_bytes)
            self._chunks.append(view.reshape(-1, row_bytes)[chunk.offset :])
        self._starts = np.cumsum([0] + [len(c) for c in self._chunks])  # chunk k holds rows [starts[k], starts[k+1])

    def __getstate__(self) -> dict[str, Any]:
        # Spawned DataLoader workers reopen the memory map instead of receiving a copy of every image.
        state = dict(self.__dict__)
        if self._path is not None:
            state["_chunks"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self._chunks is None:
            import pyarrow as pa

            self._set_chunks(pa.ipc.open_file(pa.memory_map(str(self._path), "r")).read_all())

    def __len__(self) -> int:
        return int(self.rows.size)

    def _gather(self, positions: np.ndarray) -> np.ndarray:
        """uint8 ``(B, C*H*W)`` of table rows ``self.rows[positions]``."""
        table_rows = self.rows[positions]
        chunk = np.searchsorted(self._starts, table_rows, side="right") - 1
        out = np.empty((table_rows.size, self._chunks[0].shape[1] if self._chunks else 0), dtype=np.uint8)
        for k in np.unique(chunk):
            sel = chunk == k
            out[sel] = self._chunks[int(k)][table_rows[sel] - self._starts[k]]
        return out

    def _positions(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"image index {int(idx[(idx < -n) | (idx >= n)][0])} is out of range for {n} images")
        return idx % max(n, 1)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        pos = self._positions([index])
        x = torch.from_numpy(self._gather(pos)).reshape(self.image_shape).float().div_(255.0)  # (C, H, W)
        return x, self.labels[int(pos[0])].clone()

    def __getitems__(self, indices: Sequence[int]) -> PreCollatedBatch:
        pos = self._positions(indices)
        x = torch.from_numpy(self._gather(pos)).reshape(-1, *self.image_shape).float().div_(255.0)  # (B, C, H, W)
        return PreCollatedBatch([x, self.labels[torch.from_numpy(pos)]])

    @property
    def data_fingerprint(self) -> str:
        """sha256 hex over the cache key (every image's content hash, size, mode), the rows and the classes."""
        if self._fingerprint is None:
            h = hashlib.sha256(b"trainengine.imagefolder.v1|")
            h.update(f"{self.table_key}|{json.dumps(self.class_names)}|".encode())
            h.update(self.rows.tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def __repr__(self) -> str:
        return f"ImageFolderDataset(n={len(self)}, shape={self.image_shape}, classes={len(self.class_names)})"
