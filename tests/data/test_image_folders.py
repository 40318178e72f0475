"""Image folders (class_name/image.png) through Pillow into the Arrow cache, and SmallCNN on them."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from trainengine.data import _images, build_dataloader
from trainengine.data._images import ImageFolderDataset, read_imagefolder
from trainengine.data._types import ReadOptions
from trainengine.errors import DataError
from trainengine.models import SmallCNN


def opts(tmp_path, **kw):
    return ReadOptions(cache_dir=tmp_path / "cache", **kw)


def rgb_image(seed: int, size: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)  # (H, W, C)


def make_folder(root, classes=("cat", "dog"), per_class=3, size=16):
    """PNG images with known random pixels; returns {(class, name): HWC array}."""
    pixels = {}
    for c, cls in enumerate(classes):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            arr = rgb_image(100 * c + i, size)
            Image.fromarray(arr, "RGB").save(root / cls / f"{i}.png")
            pixels[(cls, f"{i}.png")] = arr
    return pixels


def test_pixels_labels_and_layout_are_exact(tmp_path):
    pixels = make_folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "cat" / "notes.txt").write_text("not an image")
    cached = read_imagefolder([tmp_path / "imgs"], opts(tmp_path))
    meta = cached.meta
    assert meta["classes"] == ["cat", "dog"] and meta["image_shape"] == [3, 16, 16]
    assert meta["class_counts"] == {"cat": 3, "dog": 3} and meta["sources"][0]["rows"] == 6
    ds = ImageFolderDataset(cached, None, meta["classes"])
    assert len(ds) == 6
    for i in range(6):
        x, y = ds[i]
        path = cached.table.column("path")[i].as_py()
        cls, name = path.split("/")[-2:]
        expected = torch.from_numpy(pixels[(cls, name)].transpose(2, 0, 1).astype(np.float32) / 255)  # (C, H, W)
        assert x.dtype == torch.float32 and torch.equal(x, expected)
        assert y.dtype == torch.int64 and int(y) == ["cat", "dog"].index(cls)


def test_batches_equal_items_across_arrow_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(_images, "_BATCH_ROWS", 2)  # several record batches -> several chunks
    make_folder(tmp_path / "imgs", per_class=4)
    cached = read_imagefolder([tmp_path / "imgs"], opts(tmp_path))
    assert cached.table.column("pixels").num_chunks > 1
    rows = np.array([7, 1, 4, 2, 6])
    ds = ImageFolderDataset(cached, rows, cached.meta["classes"])
    order = [4, 0, 3, 3, -1]
    x, y = ds.__getitems__(order).collated
    assert x.shape == (5, 3, 16, 16)
    for j, i in enumerate(order):
        xi, yi = ds[i]
        assert torch.equal(x[j], xi) and int(y[j]) == int(yi)
    full = ImageFolderDataset(cached, None, cached.meta["classes"])
    assert torch.equal(ds[0][0], full[7][0])
    back = pickle.loads(pickle.dumps(ds))  # spawned workers reopen the memory map
    assert torch.equal(back.__getitems__(order).collated[0], x)
    with pytest.raises(IndexError, match="image index 5"):
        ds[5]


def test_auto_mode_is_gray_only_when_every_image_is(tmp_path):
    root = tmp_path / "g"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        Image.fromarray(np.full((8, 8), 200 if cls == "a" else 10, np.uint8), "L").save(root / cls / "x.png")
    gray = read_imagefolder([root], opts(tmp_path))
    assert gray.meta["image_shape"] == [1, 8, 8] and gray.meta["image_mode"] == "L"
    x, _ = ImageFolderDataset(gray, None, gray.meta["classes"])[0]
    assert torch.allclose(x, torch.full((1, 8, 8), 200 / 255))
    Image.fromarray(rgb_image(0, 8), "RGB").save(root / "b" / "y.png")
    mixed = read_imagefolder([root], opts(tmp_path))
    assert mixed.meta["image_shape"] == [3, 8, 8]
    x, _ = ImageFolderDataset(mixed, None, mixed.meta["classes"])[0]
    assert torch.allclose(x, torch.full((3, 8, 8), 200 / 255))  # gray replicated into R, G, B
    forced = read_imagefolder([root], opts(tmp_path, image_mode="L"))
    assert forced.meta["image_shape"] == [1, 8, 8]


def test_sizes_must_match_unless_image_size_resizes(tmp_path):
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    Image.fromarray(rgb_image(1, 16), "RGB").save(root / "a" / "big.png")
    Image.fromarray(rgb_image(2, 12), "RGB").save(root / "b" / "small.jpg")
    with pytest.raises(DataError) as err:
        read_imagefolder([root], opts(tmp_path))
    msg = str(err.value)
    assert "small.jpg is 12x12" in msg and "big.png is 16x16" in msg and "data.image_size" in msg
    cached = read_imagefolder([root], opts(tmp_path, image_size=8))
    assert cached.meta["image_shape"] == [3, 8, 8]
    x, y = ImageFolderDataset(cached, None, cached.meta["classes"]).__getitems__([0, 1]).collated
    assert x.shape == (2, 3, 8, 8) and y.tolist() == [0, 1]


def test_unreadable_image_errors_or_is_skipped(tmp_path):
    make_folder(tmp_path / "imgs", per_class=2)
    (tmp_path / "imgs" / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError) as err:
        read_imagefolder([tmp_path / "imgs"], opts(tmp_path))
    assert "dog/broken.png" in str(err.value) and "data.bad_rows: skip" in str(err.value)
    cached = read_imagefolder([tmp_path / "imgs"], opts(tmp_path, bad_rows="skip"))
    assert cached.table.num_rows == 4 and cached.meta["bad_rows"] == 1
    assert cached.meta["bad_row_examples"][0]["file"].endswith("broken.png")


def test_layout_errors_name_the_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_imagefolder([tmp_path / "missing"], opts(tmp_path))
    (tmp_path / "flat").mkdir()
    Image.fromarray(rgb_image(0, 4), "RGB").save(tmp_path / "flat" / "x.png")
    with pytest.raises(DataError, match=r"no class folders.*<class_name>/<image>\.png"):
        read_imagefolder([tmp_path / "flat"], opts(tmp_path))


def test_cache_key_follows_content_and_class_names(tmp_path):
    make_folder(tmp_path / "imgs", per_class=1)
    first = read_imagefolder([tmp_path / "imgs"], opts(tmp_path))
    (tmp_path / "imgs" / "dog").rename(tmp_path / "wolf")
    (tmp_path / "wolf").rename(tmp_path / "imgs" / "wolf")
    renamed = read_imagefolder([tmp_path / "imgs"], opts(tmp_path))
    assert renamed.meta["key"] != first.meta["key"] and renamed.meta["classes"] == ["cat", "wolf"]
    assert read_imagefolder([tmp_path / "imgs"], opts(tmp_path, image_size=8)).meta["key"] != renamed.meta["key"]


def test_validation_class_unknown_to_training_is_an_error(tmp_path):
    make_folder(tmp_path / "train", classes=("cat", "dog"), per_class=1)
    make_folder(tmp_path / "val", classes=("cat", "fox"), per_class=1)
    train = read_imagefolder([tmp_path / "train"], opts(tmp_path))
    val = read_imagefolder([tmp_path / "val"], opts(tmp_path))
    with pytest.raises(DataError) as err:
        ImageFolderDataset(val, None, train.meta["classes"])
    assert "'fox'" in str(err.value) and "fox/0.png" in str(err.value) and "['cat', 'dog']" in str(err.value)
    a = ImageFolderDataset(train, [0], train.meta["classes"])
    b = ImageFolderDataset(train, [1], train.meta["classes"])
    assert a.data_fingerprint != b.data_fingerprint
    assert a.data_fingerprint == ImageFolderDataset(train, [0], train.meta["classes"]).data_fingerprint


def test_small_cnn_learns_from_an_image_folder(tmp_path):
    # Two separable classes: mostly red vs mostly blue 16x16 RGB images with noise.
    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for cls, channel in (("blue", 2), ("red", 0)):
        (root / cls).mkdir(parents=True)
        for i in range(8):
            arr = rng.integers(0, 90, size=(16, 16, 3), dtype=np.uint8)
            arr[..., channel] += 150
            Image.fromarray(arr, "RGB").save(root / cls / f"{i}.png")
    cached = read_imagefolder([root], opts(tmp_path))
    ds = ImageFolderDataset(cached, None, cached.meta["classes"])
    c, h, _ = cached.meta["image_shape"]
    torch.manual_seed(0)
    model = SmallCNN(in_channels=c, num_classes=2, channels=(8,), image_size=h)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)  # (Adam's first step costs ~1.5 s of imports)
    x, y = next(iter(build_dataloader(ds, batch_size=len(ds), shuffle=True, seed=0)))  # (16, 3, 16, 16), (16,)
    losses = []
    for _ in range(6):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert losses[-1] < losses[0] and accuracy == 1.0
