"""The checkpoint folder: contents, exact resume, canonical keys, tied weights, pickle refusal."""

from __future__ import annotations

import hashlib
import json
import pickle
import random

import numpy as np
import pytest
import safetensors.torch
import torch
from torch import nn

from trainengine.checkpoint import CheckpointManager, canonical_keys, read_checkpoint, verify_checkpoint
from trainengine.errors import CheckpointError
from trainengine.models import GPT, GPTConfig


def _rng_state():
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _restore_rng(state):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def test_folder_layout_manifest_and_meta(ckpt_dir):
    model = nn.Linear(3, 2)
    manager = CheckpointManager(ckpt_dir)
    path = manager.save(
        step=42,
        epoch=3,
        model=model,
        state={"note": "x", "w": torch.ones(2)},
        metrics={"val/loss": 0.5, "val/acc": float("nan")},
        meta={"git_commit": "abc123", "config": {"lr": 0.1, "betas": (0.9, 0.99)}},
        tags=["emergency"],
    )
    assert path == ckpt_dir / "ckpt-000000042"
    names = sorted(p.name for p in path.iterdir())
    assert names == ["manifest.json", "meta.json", "model.safetensors", "state.json", "state.safetensors"]
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format_version"] == 1 and set(manifest["files"]) == set(names) - {"manifest.json"}
    for name, entry in manifest["files"].items():
        data = (path / name).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    meta = json.loads((path / "meta.json").read_text())  # strict JSON: NaN would not parse in other readers
    assert meta["step"] == 42 and meta["epoch"] == 3 and meta["tags"] == ["emergency"] and meta["format_version"] == 1
    assert meta["meta"]["git_commit"] == "abc123" and meta["meta"]["config"]["betas"] == [0.9, 0.99]
    assert {"torch", "numpy", "safetensors", "python"} <= set(meta["library_versions"])
    assert sorted(safetensors.torch.load_file(str(path / "model.safetensors"))) == ["bias", "weight"]
    assert not list(ckpt_dir.glob(".tmp-*"))
    loaded = read_checkpoint(path)
    assert loaded.meta.step == 42 and loaded.meta.git_commit == "abc123" and loaded.meta.tags == ["emergency"]
    assert loaded.meta.metrics["val/loss"] == 0.5 and np.isnan(loaded.meta.metrics["val/acc"])
    assert loaded.state["note"] == "x" and torch.equal(loaded.state["w"], torch.ones(2))


def test_resume_gives_bit_identical_params_to_an_uninterrupted_run(ckpt_dir, h):
    # Uninterrupted: 3 steps, checkpoint, 3 more.
    model, opt, sched = h.make_training(seed=0)
    h.train_steps(model, opt, sched, 3, start=0)
    manager = CheckpointManager(ckpt_dir)
    path = manager.save(
        step=3,
        epoch=0,
        model=model,
        state={"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": _rng_state()},
    )
    lr_at_save = sched.get_last_lr()
    losses_a = h.train_steps(model, opt, sched, 3, start=3)
    params_a = {k: v.clone() for k, v in model.state_dict().items()}

    # Resumed: a differently initialised model, RNG elsewhere, everything loaded from the checkpoint.
    model_b, opt_b, sched_b = h.make_training(seed=123)
    torch.rand(100)
    meta = CheckpointManager(ckpt_dir).load_checkpoint(path, model_b, opt_b, sched_b)
    _restore_rng(read_checkpoint(path).state["rng"])
    assert meta.step == 3 and meta.epoch == 0
    assert sched_b.get_last_lr() == lr_at_save and sched_b.last_epoch == 3
    losses_b = h.train_steps(model_b, opt_b, sched_b, 3, start=3)
    assert losses_a == losses_b
    for k, v in model_b.state_dict().items():
        assert h.bit_equal(v, params_a[k]), k
    for (k, a), b in zip(opt.state_dict()["state"].items(), opt_b.state_dict()["state"].values(), strict=True):
        assert h.bit_equal(a["exp_avg_sq"], b["exp_avg_sq"]), k


def test_without_rng_restore_the_resumed_run_differs(ckpt_dir, h):
    """Guards the test above: dropout really does make the RNG state matter."""
    model, opt, sched = h.make_training(seed=0)
    path = CheckpointManager(ckpt_dir).save(
        step=1, epoch=0, model=model, state={"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
    )
    ref = h.train_steps(model, opt, sched, 2, start=0)
    model_b, opt_b, sched_b = h.make_training(seed=5)
    CheckpointManager(ckpt_dir).load_checkpoint(path, model_b, opt_b, sched_b)
    assert h.train_steps(model_b, opt_b, sched_b, 2, start=0) != ref


@pytest.mark.parametrize(
    ("save_attr", "load_attr"),
    [("module", None), ("_orig_mod", None), (None, "module"), (None, "_orig_mod"), ("module", "_orig_mod")],
)
def test_wrapper_prefixes_are_canonical_both_ways(ckpt_dir, h, save_attr, load_attr):
    torch.manual_seed(0)
    src = h.TinyNet()
    saved = h.Wrapper(src, save_attr) if save_attr else src
    path = CheckpointManager(ckpt_dir).save(step=1, epoch=0, model=saved)
    assert sorted(safetensors.torch.load_file(str(path / "model.safetensors"))) == [
        "fc1.bias",
        "fc1.weight",
        "fc2.bias",
        "fc2.weight",
    ]
    torch.manual_seed(1)
    dst = h.TinyNet()
    target = h.Wrapper(dst, load_attr) if load_attr else dst
    CheckpointManager(ckpt_dir).load_checkpoint(path, target)
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v)


def test_real_torch_compile_wrapper_loads_into_plain_model(ckpt_dir, h):
    torch.manual_seed(0)
    src = h.TinyNet()
    compiled = torch.compile(src)  # lazy: nothing compiles until a forward
    assert next(iter(compiled.state_dict())).startswith("_orig_mod.")
    path = CheckpointManager(ckpt_dir).save(step=1, epoch=0, model=compiled)
    torch.manual_seed(1)
    dst = h.TinyNet()
    CheckpointManager(ckpt_dir).load_checkpoint(path, dst)
    assert torch.equal(dst.fc1.weight, src.fc1.weight)


def test_canonical_keys_rules():
    assert canonical_keys(["module.a.weight", "module.b"]) == {"module.a.weight": "a.weight", "module.b": "b"}
    assert canonical_keys(["enc._orig_mod.w", "head.w"]) == {"enc._orig_mod.w": "enc.w", "head.w": "head.w"}
    # Only a prefix every key shares is a wrapper: a submodule named "module" beside others stays.
    assert canonical_keys(["module.w", "other.w"]) == {"module.w": "module.w", "other.w": "other.w"}
    with pytest.raises(CheckpointError, match="both become"):
        canonical_keys(["a._orig_mod.w", "a.w"])


def test_tied_weights_are_stored_once_and_stay_tied(ckpt_dir):
    cfg = GPTConfig(vocab_size=64, max_seq_len=16, d_model=32, n_layers=1, n_heads=2)
    torch.manual_seed(0)
    src = GPT(cfg)
    assert src.lm_head.weight is src.transformer.wte.weight
    path = CheckpointManager(ckpt_dir).save(step=1, epoch=0, model=src)
    stored = safetensors.torch.load_file(str(path / "model.safetensors"))
    assert len(stored) == len(src.state_dict()) - 1  # one of the two tied names
    torch.manual_seed(1)
    dst = GPT(cfg)
    CheckpointManager(ckpt_dir).load_checkpoint(path, dst)  # strict: both names must be served
    assert dst.lm_head.weight is dst.transformer.wte.weight
    assert torch.equal(dst.lm_head.weight, src.lm_head.weight)
    loaded = read_checkpoint(path)
    assert loaded.model_state["lm_head.weight"] is loaded.model_state["transformer.wte.weight"]


def test_shape_or_key_mismatch_is_a_clear_error(ckpt_dir):
    path = CheckpointManager(ckpt_dir).save(step=1, epoch=0, model=nn.Linear(3, 2))
    with pytest.raises(CheckpointError, match="do not fit the model"):
        CheckpointManager(ckpt_dir).load_checkpoint(path, nn.Linear(4, 2))
    with pytest.raises(CheckpointError, match=r"missing from the checkpoint: 0.weight"):
        CheckpointManager(ckpt_dir).load_checkpoint(path, nn.Sequential(nn.Linear(3, 2)))
    opt_state = CheckpointManager(ckpt_dir).save(
        step=2,
        epoch=0,
        model=nn.Linear(3, 2),
        state={"optimizer": torch.optim.SGD(nn.Linear(3, 2).parameters(), lr=1).state_dict()},
    )
    two_groups = torch.optim.SGD(
        [{"params": [nn.Parameter(torch.ones(1))]}, {"params": [nn.Parameter(torch.ones(1))]}], lr=1
    )
    with pytest.raises(
        CheckpointError, match=r"saved optimizer has parameter groups of sizes \[2\], the SGD given has \[1, 1\]"
    ):
        CheckpointManager(ckpt_dir).load_checkpoint(opt_state, nn.Linear(3, 2), two_groups)


def test_gradscaler_state_round_trips(ckpt_dir):
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=7)
    path = CheckpointManager(ckpt_dir).save(
        step=1, epoch=0, model=nn.Linear(1, 1), state={"scaler": scaler.state_dict()}
    )
    other = torch.amp.GradScaler("cpu")
    CheckpointManager(ckpt_dir).load_checkpoint(path, nn.Linear(1, 1), scaler=other)
    assert other.state_dict()["scale"] == 1024.0 and other.state_dict()["growth_interval"] == 7


# --------------------------------------------------------------------------- pickle refusal


class _Evil:
    """Unpickling this opens (creates) the marker file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant(path, name, data, *, fix_manifest):
    (path / name).write_bytes(data)
    if fix_manifest:  # an attacker who also rewrites the manifest: only the format check is left
        manifest = json.loads((path / "manifest.json").read_text())
        manifest["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        (path / "manifest.json").write_text(json.dumps(manifest))


def test_the_evil_pickle_really_runs_code_when_unpickled(tmp_path):
    marker = tmp_path / "control"
    pickle.loads(pickle.dumps(_Evil(marker))).close()
    assert marker.exists()


@pytest.mark.parametrize("fix_manifest", [True, False])
@pytest.mark.parametrize("name", ["model.safetensors", "state.safetensors"])
@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_planted_code_running_pickle_is_refused_and_never_runs(ckpt_dir, tmp_path, name, fix_manifest, protocol):
    path = CheckpointManager(ckpt_dir).save(step=1, epoch=0, model=nn.Linear(2, 2), state={"w": torch.ones(1)})
    marker = tmp_path / "pwned"
    _plant(path, name, pickle.dumps(_Evil(marker), protocol=protocol), fix_manifest=fix_manifest)
    manager = CheckpointManager(ckpt_dir)
    with pytest.raises(CheckpointError) as info:
        manager.load_checkpoint(path, nn.Linear(2, 2))
    message = str(info.value)
    assert name in message and "not a safetensors file" in message and "can run arbitrary code" in message
    assert any("not a safetensors file" in p for p in manager.verify(path))
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        read_checkpoint(path, verify=False)  # even without the manifest check
    assert not marker.exists()


def test_torch_save_file_in_place_of_weights_is_refused_as_pickle(ckpt_dir, tmp_path):
    path = CheckpointManager(ckpt_dir).save(step=1, epoch=0, model=nn.Linear(2, 2))
    torch.save({"weight": torch.ones(2, 2), "bias": torch.ones(2)}, tmp_path / "w.pt")
    _plant(path, "model.safetensors", (tmp_path / "w.pt").read_bytes(), fix_manifest=True)
    assert verify_checkpoint(path) == [
        "model.safetensors: not a safetensors file "
        "(it is a zip archive, which is what torch.save writes around a pickle); "
        "pickle and torch.save files are refused because unpickling one can run arbitrary code"
    ]
    with pytest.raises(CheckpointError, match=r"model.safetensors: not a safetensors file \(it is a zip archive"):
        read_checkpoint(path)


def test_a_safetensors_header_whose_length_looks_like_a_pickle_opcode_is_read(tmp_path):
    """A header of 896 bytes starts the file with 0x80 0x03, a pickle's protocol-3 opcode: it is a
    valid safetensors file all the same (resume used to refuse such checkpoints as pickles)."""
    import json as _json

    import safetensors.torch
    import torch

    from trainengine.checkpoint import sniff_safetensors

    header = _json.dumps({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    header += b" " * (896 - len(header))
    path = tmp_path / "model.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + torch.tensor([1.5]).numpy().tobytes())
    assert path.read_bytes()[:2] == b"\x80\x03"
    assert sniff_safetensors(path) is None
    assert float(safetensors.torch.load_file(str(path))["x"]) == 1.5
    pickled = tmp_path / "model.pt"
    torch.save({"x": torch.zeros(1)}, pickled)
    assert "pickle" in (sniff_safetensors(pickled) or "")
