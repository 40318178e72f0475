"""Built-in offline data sets: registry, shapes, splits, determinism, scaling, pystdlib corpus."""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_diabetes, load_digits

from trainengine import registries
from trainengine.data import (
    DatasetInfo,
    DatasetSplits,
    InMemoryDataset,
    check_overlap,
    combine_fingerprints,
    fingerprint_dataset,
    list_datasets,
    load_builtin,
    register_dataset,
)
from trainengine.errors import DataError


def _stack(ds, col):
    return torch.stack([ds[i][col] for i in range(len(ds))])


# ----------------------------------------------------------------------------- registry


def test_builtins_are_registered():
    assert {"digits", "diabetes", "pystdlib"} <= set(list_datasets())
    assert list_datasets() == sorted(list_datasets())


def test_unknown_dataset_lists_available_and_suggests():
    with pytest.raises(DataError) as ei:
        load_builtin("digit")
    msg = str(ei.value)
    assert msg.startswith(f"unknown dataset 'digit' — available: {', '.join(list_datasets())}")
    assert "diabetes, digits, prm, pystdlib" in msg
    assert "did you mean 'digits'" in msg


def test_unknown_dataset_far_from_any_name_has_no_suggestion():
    with pytest.raises(DataError) as ei:
        load_builtin("imagenet")
    assert "did you mean" not in str(ei.value)
    assert "available:" in str(ei.value)


def test_name_is_case_insensitive():
    assert load_builtin("Digits", max_train_samples=5).info.name == "digits"


def test_invalid_options_are_reported_together():
    with pytest.raises(DataError) as ei:
        load_builtin("digits", val_fraction=1.5, max_train_samples=0, seed=-1)
    msg = str(ei.value)
    assert "val_fraction" in msg and "max_train_samples" in msg and "seed" in msg


def test_register_custom_dataset_gets_fingerprint_and_rejects_duplicates():
    def toy(**_):
        ds = InMemoryDataset((torch.arange(6.0).reshape(3, 2), torch.zeros(3)))
        info = DatasetInfo("toy", "regression", 2, None, None, None, (2,), 3, 3)
        return DatasetSplits(ds, ds, info)

    register_dataset("toy_test_ds", toy)
    try:
        splits = load_builtin("toy_test_ds")
        assert splits.info.fingerprint == combine_fingerprints(
            fingerprint_dataset(splits.train), fingerprint_dataset(splits.val)
        )
        register_dataset("toy_test_ds", toy)  # the same factory again: harmless
        with pytest.raises(DataError, match="already registered"):
            register_dataset("toy_test_ds", lambda **_: toy())
        register_dataset("toy_test_ds", lambda **_: toy(), overwrite=True)
    finally:
        registries.DATASETS.unregister("toy_test_ds")


def test_image_flag_rejected_for_non_image_sets():
    for name in ("diabetes", "pystdlib"):
        with pytest.raises(DataError, match="image=True"):
            load_builtin(name, image=True)


# ----------------------------------------------------------------------------- digits


def test_digits_shapes_dtypes_sizes():
    s = load_builtin("digits", val_fraction=0.2, seed=0)
    info = s.info
    assert (info.task_type, info.input_dim, info.num_classes, info.input_shape) == (
        "classification",
        64,
        10,
        (64,),
    )
    # sklearn puts ceil(test_size * n) samples in the test split; 1797 digits ship with sklearn.
    assert info.num_val == math.ceil(0.2 * 1797) == len(s.val)
    assert info.num_train == 1797 - info.num_val == len(s.train)
    x, y = s.train[0]
    assert x.shape == (64,) and x.dtype == torch.float32
    assert y.shape == () and y.dtype == torch.int64
    xs = _stack(s.train, 0)
    assert xs.min() >= 0 and xs.max() <= 1
    assert torch.equal(xs * 16, (xs * 16).round())  # pixel counts 0..16 divided by 16


def test_digits_splits_partition_the_sklearn_data_with_matching_labels():
    bunch = load_digits()
    truth = {(row / 16.0).astype(np.float32).tobytes(): int(t) for row, t in zip(bunch.data, bunch.target, strict=True)}
    s = load_builtin("digits", seed=3)
    seen = []
    for ds in (s.train, s.val):
        for i in range(len(ds)):
            x, y = ds[i]
            key = x.numpy().tobytes()
            assert truth[key] == int(y)
            seen.append(key)
    assert len(seen) == len(set(seen)) == len(truth)  # disjoint and complete


def test_digits_image_form_is_reshaped_flat_form():
    flat = load_builtin("digits", seed=1)
    img = load_builtin("digits", seed=1, image=True)
    assert img.info.input_shape == (1, 8, 8)
    x_img, y_img = img.train[5]
    x_flat, y_flat = flat.train[5]
    assert x_img.shape == (1, 8, 8)
    assert torch.equal(x_img.reshape(64), x_flat) and torch.equal(y_img, y_flat)


def test_digits_stratified_val_has_all_classes_in_proportion():
    s = load_builtin("digits", val_fraction=0.1, seed=7)
    val_counts = torch.bincount(_stack(s.val, 1), minlength=10)
    assert (val_counts > 0).all()
    overall = np.bincount(load_digits().target, minlength=10)
    expected = overall * len(s.val) / overall.sum()
    assert np.abs(val_counts.numpy() - expected).max() <= 1.0


@pytest.mark.parametrize("name", ["digits", "diabetes", "pystdlib"])
def test_same_seed_same_split_different_seed_different_split(name):
    kw = {"max_corpus_bytes": 200_000} if name == "pystdlib" else {}
    a = load_builtin(name, seed=0, **kw)
    b = load_builtin(name, seed=0, **kw)
    c = load_builtin(name, seed=1, **kw)
    assert a.info.fingerprint == b.info.fingerprint
    assert len(a.info.fingerprint) == 64
    assert torch.equal(_stack(a.val, 0), _stack(b.val, 0))
    assert a.info.fingerprint != c.info.fingerprint
    assert fingerprint_dataset(a.val) != fingerprint_dataset(c.val)


def test_sample_caps_take_the_first_samples_of_the_split():
    full = load_builtin("digits", seed=2)
    capped = load_builtin("digits", seed=2, max_train_samples=100, max_val_samples=30)
    assert (len(capped.train), len(capped.val)) == (100, 30)
    assert (capped.info.num_train, capped.info.num_val) == (100, 30)
    assert torch.equal(_stack(capped.train, 0), _stack(full.train, 0)[:100])
    assert torch.equal(_stack(capped.val, 1), _stack(full.val, 1)[:30])


def test_tiny_val_fraction_that_cannot_be_stratified_is_a_data_error():
    with pytest.raises(DataError, match="cannot split 'digits'"):
        load_builtin("digits", val_fraction=0.001)


# ----------------------------------------------------------------------------- diabetes


def test_diabetes_shapes_and_standardized_train_targets():
    s = load_builtin("diabetes", seed=0)
    info = s.info
    assert (info.task_type, info.input_dim, info.input_shape, info.num_classes) == (
        "regression",
        10,
        (10,),
        None,
    )
    assert info.num_train + info.num_val == 442
    x, y = s.train[0]
    assert x.shape == (10,) and x.dtype == torch.float32
    assert y.shape == () and y.dtype == torch.float32  # 0-dim target per sample
    ys = _stack(s.train, 1).double()
    assert abs(ys.mean().item()) < 1e-5
    assert abs(ys.std(unbiased=False).item() - 1.0) < 1e-5


def test_diabetes_targets_unscale_to_the_original_values():
    s = load_builtin("diabetes", seed=4)
    bunch = load_diabetes()
    truth = {row.astype(np.float32).tobytes(): t for row, t in zip(bunch.data, bunch.target, strict=True)}
    mean, std = s.info.target_mean, s.info.target_std
    train_truth = []
    for ds, is_train in ((s.train, True), (s.val, False)):
        for i in range(len(ds)):
            x, y = ds[i]
            original = truth[x.numpy().tobytes()]
            assert abs(y.item() * std + mean - original) < 1e-3
            if is_train:
                train_truth.append(original)
    # The scaling statistics come from the training targets only.
    assert abs(np.mean(train_truth) - mean) < 1e-6
    assert abs(np.std(train_truth) - std) < 1e-6


# ----------------------------------------------------------------------------- pystdlib


def _stream(ds):
    """Rebuild the byte stream from consecutive windows (they share their boundary byte)."""
    x0 = ds[0][0]
    parts = [x0[:1]]
    for i in range(len(ds)):
        parts.append(ds[i][1])
    return torch.cat(parts)


def test_pystdlib_shapes_and_next_byte_labels():
    s = load_builtin("pystdlib", max_length=64, max_corpus_bytes=100_000)
    info = s.info
    assert (info.task_type, info.vocab_size, info.seq_len, info.input_shape) == (
        "language_modeling",
        256,
        64,
        (64,),
    )
    x, y = s.train[3]
    assert x.shape == y.shape == (64,)
    assert x.dtype == y.dtype == torch.int64
    assert torch.equal(x[1:], y[:-1])  # labels are inputs shifted by one
    x_next, _ = s.train[4]
    assert x_next[0] == y[-1]  # non-overlapping windows, stride T, shared boundary byte
    assert int(x.min()) >= 0 and int(x.max()) < 256


def test_pystdlib_respects_budget_and_window_count():
    budget, t = 50_000, 32
    s = load_builtin("pystdlib", max_length=t, max_corpus_bytes=budget, val_fraction=0.25)
    e = s.info.extra
    assert e["train_bytes"] + e["val_bytes"] <= budget
    assert e["train_bytes"] == round(budget * 0.75)
    assert len(s.train) == (e["train_bytes"] - 1) // t
    assert len(s.val) == (e["val_bytes"] - 1) // t


def test_pystdlib_splits_by_file_with_no_file_in_both():
    s = load_builtin("pystdlib", seed=0)
    train, val = s.info.extra["train_files"], s.info.extra["val_files"]
    assert train and val
    assert not set(train) & set(val)
    skip = {"site-packages", "test", "tests", "idlelib", "lib2to3"}
    for rel in train + val:
        assert rel.endswith(".py")
        assert not skip & set(rel.split("/")[:-1])
    other = load_builtin("pystdlib", seed=1)
    assert other.info.extra["val_files"] != val


def test_pystdlib_stream_is_the_stdlib_source_with_separators():
    s = load_builtin("pystdlib", max_length=16, max_corpus_bytes=300_000)
    root = s.info.extra["stdlib_root"]
    stream = _stream(s.train).to(torch.uint8).numpy().tobytes()
    first = s.info.extra["train_files"][0]
    with open(os.path.join(root, first), "rb") as fh:
        data = fh.read()
    assert stream.startswith(data[: len(stream)])
    if len(data) < len(stream):
        assert stream[len(data)] == 0  # separator byte after each file


def test_pystdlib_caps_windows():
    s = load_builtin("pystdlib", max_train_samples=10, max_val_samples=3)
    assert (len(s.train), len(s.val)) == (10, 3)
    assert (s.info.num_train, s.info.num_val) == (10, 3)


def test_pystdlib_budget_too_small_for_one_sample_is_a_data_error():
    with pytest.raises(DataError, match="max_corpus_bytes"):
        load_builtin("pystdlib", max_length=128, max_corpus_bytes=300)


# pystdlib's 2-second load budget is measured by `python benchmarks/budgets.py --cases pystdlib`.


# ----------------------------------------------------------------------------- leakage


@pytest.mark.parametrize("name", ["digits", "diabetes", "pystdlib"])
def test_builtin_splits_do_not_leak(name):
    s = load_builtin(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_overlap(s.train, s.val) == 0
