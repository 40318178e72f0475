"""Issue 10: registration verifies like ``checkpoints verify`` (item 5), reading creates nothing and a
refused write leaves nothing behind (item 11), and a refused pickle shows only our one line (item 12)."""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from pathlib import Path

import pytest
import torch

from trainengine.checkpoint import CheckpointManager, verify_checkpoint
from trainengine.cli.main import main
from trainengine.registry import ModelRegistry, PromotionGateError, RegistryError

PLANTED = "model.safetensors: not a safetensors file (it is a zip archive"


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRAINENGINE_REGISTRY", raising=False)
    monkeypatch.delenv("TRAINENGINE_REGISTRY_ARTIFACTS", raising=False)
    return tmp_path


def _tree(root: Path) -> list[str]:
    """Every path under ``root`` (relative), hidden ones included; [] when it does not exist."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) if root.exists() else []


def _rehash(folder: Path, name: str, manifest_files: dict) -> None:
    data = (folder / name).read_bytes()
    entry = manifest_files[name]
    if isinstance(entry, dict):  # a checkpoint's manifest: {"size", "sha256"}
        entry.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    else:  # a bundle's manifest: the sha256 alone
        manifest_files[name] = hashlib.sha256(data).hexdigest()


def _plant_pickle(folder: Path) -> None:
    """Replace model.safetensors by a torch.save pickle and re-hash the manifest, as an attacker would."""
    torch.save({"weight": torch.zeros(2)}, folder / "model.safetensors")
    manifest = json.loads((folder / "manifest.json").read_text())
    _rehash(folder, "model.safetensors", manifest["files"])
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture
def planted_checkpoint(tmp_path, make_mlp) -> Path:
    manager = CheckpointManager(tmp_path / "ck")
    path = manager.save(step=1, epoch=0, model=make_mlp(0), metrics={"val/loss": 0.1})
    _plant_pickle(path)
    return path


# ------------------------------------------------------------------------------------------ item 5
def test_a_pickle_planted_in_a_checkpoint_is_refused_with_the_checkpoints_verify_reason(
    open_registry, planted_checkpoint, tmp_path
):
    problems = verify_checkpoint(planted_checkpoint)  # what `trainengine checkpoints verify` prints
    assert len(problems) == 1 and problems[0].startswith(PLANTED)
    with open_registry() as reg:
        for copy in (True, False):
            with pytest.raises(RegistryError, match="failed verification and cannot be registered") as caught:
                reg.register_model("m", "1.0.0", planted_checkpoint, copy_artifact=copy)
            assert problems[0] in str(caught.value)
        assert reg.list_models() == []
    assert _tree(tmp_path / "models-artifacts") == []


def test_run_directories_and_bundles_get_the_same_format_check(
    open_registry, tmp_path, make_mlp, bundle_factory, mlp_spec
):
    from safetensors.torch import save_model

    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"run_id": "r1", "model": {"spec": mlp_spec}}))
    torch.save(make_mlp(0).state_dict(), run / "model.safetensors")  # a pickle under the safetensors name
    bundle = bundle_factory(tmp_path / "bundle", make_mlp(0))
    _plant_pickle(bundle)
    with open_registry() as reg:
        with pytest.raises(RegistryError, match=f"run .* cannot be registered: {re.escape(PLANTED)}"):
            reg.register_model("r", "1.0.0", run)
        with pytest.raises(RegistryError, match=f"bundle .* cannot be registered: {re.escape(PLANTED)}"):
            reg.register_model("b", "1.0.0", bundle_path=bundle)
        # A safetensors file cut short is caught from its header alone (no manifest to compare with).
        save_model(make_mlp(0), str(run / "model.safetensors"))
        data = (run / "model.safetensors").read_bytes()
        (run / "model.safetensors").write_bytes(data[:-4])
        with pytest.raises(RegistryError, match=r"model\.safetensors: not a valid safetensors file \(its header"):
            reg.register_model("r", "1.0.0", run)
        (run / "model.safetensors").write_bytes(data)
        assert reg.register_model("r", "1.0.0", run) == "r:1.0.0"  # the intact one registers
        assert [r.model_id for r in reg.list_models()] == ["r:1.0.0"]


def test_cli_register_of_a_planted_checkpoint_exits_2_and_nothing_can_be_promoted(in_tmp, planted_checkpoint, capsys):
    assert main(["registry", "register", "m", "1.0.0", "--checkpoint", str(planted_checkpoint)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: checkpoint ") and PLANTED in err and len(err.splitlines()) == 1, err
    assert main(["registry", "promote", "m:1.0.0", "production"]) == 2
    assert "no model named 'm'" in capsys.readouterr().err
    assert _tree(in_tmp / "models-artifacts") == []


# ------------------------------------------------------------------------------------------ item 11
@pytest.mark.parametrize("command", [["list"], ["show", "m"], ["history", "m"], ["list", "--json"]])
def test_reading_a_registry_that_does_not_exist_creates_nothing(in_tmp, capsys, command):
    assert main(["registry", *command, "--registry", "nosuchdir/x.db"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == "error: model registry 'nosuchdir/x.db' does not exist (nothing has been written there yet); check the path"
    )
    assert _tree(in_tmp) == []


def test_reading_never_writes_to_an_existing_file(in_tmp, capsys, weights_pt):
    (in_tmp / "other.db").write_bytes(b"")  # e.g. a typo'd name that exists, or another tool's database
    assert main(["registry", "list", "--registry", "other.db"]) == 2
    assert "has none of the tables of a model registry" in capsys.readouterr().err
    assert (in_tmp / "other.db").stat().st_size == 0
    assert main(["registry", "register", "m", "1.0.0", "--checkpoint", str(weights_pt)]) == 0
    before = {p: p.stat().st_mtime_ns for p in in_tmp.rglob("*") if p.is_file()}
    assert main(["registry", "list"]) == 0 and "m:1.0.0" in capsys.readouterr().out
    # No schema write, no WAL / shm files left next to the database.
    assert {p: p.stat().st_mtime_ns for p in in_tmp.rglob("*") if p.is_file()} == before


def test_a_read_only_registry_refuses_writes(open_registry, weights_pt, sql_db):
    with open_registry() as reg:
        reg.register_model("m", "1.0.0", weights_pt)
    kwargs = {} if sql_db.is_sqlite else {"artifact_root": Path(sql_db("models.db")).parent}
    with ModelRegistry(sql_db("models.db"), read_only=True, **kwargs) as reader:
        assert [r.model_id for r in reader.list_models()] == ["m:1.0.0"]
        with pytest.raises(RegistryError, match="opened read-only"):
            reader.promote_model("m:1.0.0", "production")
    if not sql_db.is_sqlite:
        with pytest.raises(RegistryError, match="has none of the tables of a model registry"):
            ModelRegistry(sql_db("fresh"), artifact_root="unused", read_only=True)


def test_every_refused_write_leaves_the_artifact_root_as_it_was(
    open_registry, tmp_path, weights_pt, planted_checkpoint
):
    root = tmp_path / "models-artifacts"
    with open_registry(gates={"production": {"val_loss": "<= 0.1"}}) as reg:
        refusals = [
            (lambda: reg.register_model("m", "bad", weights_pt), "invalid version"),
            (lambda: reg.register_model("m", "1.0.0", planted_checkpoint), "failed verification"),
        ]
        for refuse, message in refusals:  # into an empty store: not even the root is created
            with pytest.raises(RegistryError, match=message):
                refuse()
            assert _tree(root) == []
        reg.register_model("m", "1.0.0", weights_pt, metrics={"val_loss": 0.5})
        before = _tree(root)
        refusals = [
            (lambda: reg.register_model("m", "bad", weights_pt), "invalid version"),
            (lambda: reg.register_model("m", "1.0.0", weights_pt), "already registered"),
            (lambda: reg.register_model("n", "1.0.0", planted_checkpoint), "failed verification"),
            (lambda: reg.promote_model("m:1.0.0", "production"), "fails the gate"),
        ]
        for refuse, message in refusals:
            with pytest.raises((RegistryError, PromotionGateError), match=message):
                refuse()
            assert _tree(root) == before
        assert [r.model_id for r in reg.list_models()] == ["m:1.0.0"] and reg.history("m") == []


def test_cli_refusals_create_no_registry_and_checkpoint_commands_only_read(in_tmp, planted_checkpoint, capsys):
    assert main(["registry", "register", "m", "v1", "--checkpoint", "w.pt", "-r", "fresh/models.db"]) == 2
    assert "invalid version 'v1'" in capsys.readouterr().err
    assert not (in_tmp / "fresh").exists()  # the arguments are checked before the registry is opened
    for command in (["promote", "m:1.0.0", "production"], ["rollback", "m", "production"], ["archive", "m:1.0.0"]):
        assert main(["registry", *command, "-r", "fresh/models.db"]) == 2
        assert "model registry 'fresh/models.db' does not exist" in capsys.readouterr().err
    assert not (in_tmp / "fresh").exists()  # writes that need a registered version do not create one either
    folder = planted_checkpoint.parent
    (folder / "index.json").unlink(missing_ok=True)
    (folder / ".tmp-ckpt-000000002").mkdir()  # a write in progress (or a crashed one): not a reader's to remove
    before = _tree(folder)
    assert main(["checkpoints", "list", str(folder)]) == 0
    assert main(["checkpoints", "verify", str(folder)]) == 1
    assert _tree(folder) == before  # no index.json, no lock file, nothing cleaned up
    assert main(["checkpoints", "list", "nosuch"]) == 2
    assert main(["runs", "list", "--output-dir", "nosuch"]) == 0
    assert not (in_tmp / "nosuch").exists()


# ------------------------------------------------------------------------------------------ item 12
def test_a_refused_pickle_prints_only_our_one_line(in_tmp, capsys, recwarn):
    import pickle

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    with open(in_tmp / "plain.pt", "wb") as fh:  # protocol 4: torch warns before it refuses
        pickle.dump({"w": Payload()}, fh, protocol=4)
    torch.save({"w": torch.ones(1), "x": Payload()}, in_tmp / "evil.pt")
    for name, reason in (("plain.pt", "not a torch.save file of tensors"), ("evil.pt", "refers to 'print'")):
        with warnings.catch_warnings():
            warnings.simplefilter("always")  # a warning would show even where the suite filters them
            assert main(["registry", "register", "m", "1.0.0", "--checkpoint", name]) == 2
        captured = capsys.readouterr()
        assert captured.err.startswith(f"error: cannot read '{in_tmp / name}': it is") and reason in captured.err
        assert len(captured.err.strip().splitlines()) == 1, captured.err
        assert "weights_only=False" not in captured.err and "this must never run" not in captured.out
        assert not [w for w in recwarn if "pickle" in str(w.message).lower()], [str(w.message) for w in recwarn]
    assert _tree(in_tmp / "models-artifacts") == []
