"""ModelRegistry: registering every artifact kind, lineage, validation, lookups and safe loading.

Tests taking ``registry`` or ``open_registry`` run on SQLite and on a throwaway PostgreSQL database.
"""

from __future__ import annotations

import doctest
import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from trainengine.checkpoint import CheckpointManager
from trainengine.errors import RegistryError
from trainengine.models import GPTConfig, build_model
from trainengine.registry import ModelNotFoundError, ModelRecord, ModelRegistry, RegistryValueError, parse_model_ref

# Validation and file hashing that involve no SQL difference: one back-end is enough (keeps the
# PostgreSQL runs within their time budget).
SQLITE_ONLY = pytest.mark.parametrize("sql_db", ["sqlite"], indirect=True)


@pytest.fixture
def registry(open_registry):
    with open_registry("reg/models.db") as reg:
        yield reg


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module, dim: int) -> bool:
    x = torch.randn(5, dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


def _folder_sha(folder: Path, skip: tuple[str, ...] = ()) -> str:
    """The documented folder hash, computed independently: sha256 of sorted 'relpath\\tsha256\\n' lines."""
    lines = sorted(
        f"{p.relative_to(folder).as_posix()}\t{hashlib.sha256(p.read_bytes()).hexdigest()}\n"
        for p in folder.rglob("*")
        if p.is_file() and p.name not in skip
    )
    return hashlib.sha256("".join(lines).encode()).hexdigest()


# ------------------------------------------------------------------------------------------ kinds
def test_checkpoint_is_copied_with_its_lineage_and_loads_back_equal(registry, trained):
    mid = registry.register_model(
        "digits-mlp", "1.0.0", trained.checkpoint, metrics={"val_loss": 0.4}, tags=["baseline"]
    )
    assert mid == "digits-mlp:1.0.0"
    rec = registry.get_model("digits-mlp", "1.0.0")
    # Copied into <artifact_root>/<name>/<version>/ (default: models-artifacts next to models.db).
    assert rec.artifact_path == registry.artifact_root / "digits-mlp" / "1.0.0"
    assert registry.artifact_root.name == "models-artifacts" and registry.artifact_root.parent.name == "reg"
    assert sorted(p.name for p in rec.artifact_path.iterdir()) == sorted(p.name for p in trained.checkpoint.iterdir())
    assert rec.artifact_kind == "checkpoint" and rec.artifact_sha256 == _folder_sha(rec.artifact_path)
    # Lineage comes from the checkpoint metadata and the run it belongs to.
    facts = trained.run_facts
    assert rec.run_id == facts["run_id"]
    assert rec.data_fingerprint == facts["data"]["train_fingerprint"] and len(rec.data_fingerprint) == 64
    assert rec.task_type == "classification"
    assert rec.model_spec == facts["model"]["spec"] and rec.model_spec["architecture"] == "mlp"
    assert rec.config["model"]["hidden_dims"] == [16] and rec.config["training"]["max_steps"] == 5
    assert rec.metrics == {"val_loss": 0.4} and rec.tags == ("baseline",) and rec.status == "active"

    model = rec.load()
    reference = build_model("mlp", **rec.model_spec["kwargs"])
    CheckpointManager(trained.checkpoint.parent).load_checkpoint(trained.checkpoint, reference)
    assert not model.training and _same_outputs(model, reference, 64)


def test_run_directory_keeps_weights_config_and_facts_not_logs(registry, trained):
    registry.register_model("digits-mlp", "1.1.0", trained.run_dir)
    rec = registry.get_model("digits-mlp", "1.1.0")
    kept = sorted(p.name for p in rec.artifact_path.iterdir())
    assert "model.safetensors" in kept and "run.json" in kept and "config.yaml" in kept and "logs.jsonl" not in kept
    assert rec.artifact_kind == "run" and rec.run_id == trained.run_facts["run_id"]
    # Without metrics= the finite final metrics of the run are registered.
    final = trained.run_facts["results"]["final_metrics"]
    assert rec.metrics == {k: v for k, v in final.items() if k not in ("step", "epoch")} and "val/loss" in rec.metrics
    assert rec.config["data"]["dataset"] == "digits"
    from safetensors.torch import load_file

    loaded = rec.load()
    expected = load_file(str(trained.run_dir / "model.safetensors"))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in expected.items())


def test_torch_file_in_all_accepted_layouts(registry, tmp_path, make_mlp, mlp_spec):
    net = make_mlp(3)
    layouts = {
        "raw": net.state_dict(),
        "model_state_dict": {"model_state_dict": net.state_dict(), "epoch": 10},
        "state_dict": {"state_dict": net.state_dict()},
        "model": {"model": net.state_dict(), "step": 7},
    }
    for i, (label, obj) in enumerate(layouts.items()):
        path = tmp_path / f"{label}.pth"
        torch.save(obj, path)
        registry.register_model("mlp", f"1.{i}.0", path, model_config=mlp_spec)
        rec = registry.get_model("mlp", f"1.{i}.0")
        assert rec.artifact_kind == "torch" and rec.artifact_path.name == f"{label}.pth"
        assert rec.artifact_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()  # a file: sha256 of its bytes
        assert _same_outputs(rec.load(), net, 6), label


def test_torch_file_with_pickled_objects_is_refused(registry, tmp_path):
    path = tmp_path / "module.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, path)  # a whole module: needs unpickling arbitrary classes
    with pytest.raises(RegistryError, match=r"refers to 'torch\.nn\.modules\.linear\.Linear'.*only state dicts"):
        registry.register_model("bad", "1.0.0", path)
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "nostate.pt")
    with pytest.raises(RegistryError, match="holds no state dict.*'epoch', 'lr'"):
        registry.register_model("bad", "1.0.0", tmp_path / "nostate.pt")
    assert registry.list_models() == [] and not (registry.artifact_root / "bad" / "1.0.0").exists()


def test_safetensors_gpt_with_tied_weights_rebuilds_from_gpt_config(registry, tmp_path):
    from safetensors.torch import save_model

    cfg = GPTConfig(vocab_size=32, max_seq_len=8, d_model=16, n_heads=2, n_layers=1, tie_weights=True)
    torch.manual_seed(0)
    gpt = build_model(
        "gpt",
        **{k: getattr(cfg, k) for k in ("vocab_size", "max_seq_len", "d_model", "n_heads", "n_layers", "tie_weights")},
    ).eval()
    save_model(gpt, str(tmp_path / "gpt.safetensors"))  # stores the tied embedding/head once
    registry.register_model(
        "gpt", "0.1.0", tmp_path / "gpt.safetensors", task_type="language_modeling", model_config=cfg
    )
    rec = registry.get_model("gpt")
    assert (
        rec.artifact_kind == "safetensors"
        and rec.model_spec["architecture"] == "gpt"
        and rec.task_type == "language_modeling"
    )
    loaded = rec.load()
    tokens = torch.randint(0, 32, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(gpt(tokens), loaded(tokens))  # (B, T, V) logits, through the tied head


def test_bundle_hash_is_the_contract_hash_and_lineage_comes_from_the_manifest(
    registry, tmp_path, make_mlp, bundle_factory
):
    net = make_mlp(5)
    bundle = bundle_factory(tmp_path / "exports" / "model_20260101_000000", net)
    (bundle / "__pycache__").mkdir()  # left by running server.py in the bundle: not part of it
    (bundle / "__pycache__" / "inference.cpython-311.pyc").write_bytes(b"junk")
    registry.register_model("exported", "2.0.0", bundle_path=bundle)
    rec = registry.get_model("exported", "2.0.0")
    assert rec.artifact_kind == "bundle"
    assert not (rec.artifact_path / "__pycache__").exists() and (rec.artifact_path / "manifest.json").is_file()
    assert rec.artifact_sha256 == _folder_sha(rec.artifact_path, skip=("manifest.json",))
    manifest = json.loads((bundle / "manifest.json").read_text())
    lines = "".join(f"{k}\t{v}\n" for k, v in sorted(manifest["files"].items()))
    assert rec.artifact_sha256 == hashlib.sha256(lines.encode()).hexdigest()  # the same numbers as manifest["files"]
    try:
        from trainengine.export import bundle_sha256
    except ImportError:  # the export package is optional here
        bundle_sha256 = None
    if bundle_sha256 is not None:
        assert rec.artifact_sha256 == bundle_sha256(rec.artifact_path) == bundle_sha256(bundle)
    assert (rec.run_id, rec.git_commit, rec.data_fingerprint, rec.task_type) == (
        "run-42",
        "abc123",
        "fp-1",
        "classification",
    )
    assert rec.config == {"training": {"learning_rate": 0.01}}
    assert _same_outputs(rec.load(), net, 6)


def test_bundle_registered_in_place_refuses_unlisted_files(registry, tmp_path, make_mlp, bundle_factory):
    bundle = bundle_factory(tmp_path / "b", make_mlp(0))
    (bundle / "notes.txt").write_text("added after export")
    with pytest.raises(RegistryError, match=r"files its manifest does not list \(notes.txt\)"):
        registry.register_model("exported", "1.0.0", bundle_path=bundle, copy_artifact=False)
    (bundle / "notes.txt").unlink()
    (bundle / "__pycache__").mkdir()
    (bundle / "__pycache__" / "server.cpython-311.pyc").write_bytes(b"x")  # ignored, as by bundle_sha256
    registry.register_model("exported", "1.0.0", bundle_path=bundle, copy_artifact=False)
    rec = registry.get_model("exported")
    assert rec.artifact_path == bundle.resolve()
    (bundle / "__pycache__" / "inference.cpython-311.pyc").write_bytes(b"y")
    rec.verify()  # still the registered content


def test_bundle_without_manifest_or_with_a_changed_file_is_refused(registry, tmp_path, make_mlp, bundle_factory):
    incomplete = bundle_factory(tmp_path / "b1", make_mlp(0), with_manifest=False)
    with pytest.raises(RegistryError, match="no manifest.json: the export is incomplete"):
        registry.register_model("exported", "1.0.0", bundle_path=incomplete)
    tampered = bundle_factory(tmp_path / "b2", make_mlp(0))
    (tampered / "model_config.json").write_text('{"spec": null}')
    with pytest.raises(RegistryError, match="model_config.json: sha256 differs from the manifest"):
        registry.register_model("exported", "1.0.0", bundle_path=tampered)
    with pytest.raises(RegistryError, match="is an export bundle; register it with bundle_path="):
        registry.register_model("exported", "1.0.0", tampered)
    assert registry.list_models() == []
    assert not (registry.artifact_root / "exported").exists()  # temp copies and their folders cleaned up


def test_checkpoint_with_a_damaged_file_is_refused(registry, trained, tmp_path):
    damaged = tmp_path / "ckpt-000000005"
    shutil.copytree(trained.checkpoint, damaged)
    data = bytearray((damaged / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (damaged / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="model.safetensors: sha256 mismatch"):
        registry.register_model("digits-mlp", "1.0.0", damaged)
    (damaged / "manifest.json").unlink()
    with pytest.raises(RegistryError, match="no manifest.json"):
        registry.register_model("digits-mlp", "1.0.0", damaged)


def test_path_arguments_are_checked(registry, trained, tmp_path):
    with pytest.raises(RegistryError, match="exactly one of checkpoint_path"):
        registry.register_model("m", "1.0.0")
    with pytest.raises(RegistryError, match="exactly one of checkpoint_path"):
        registry.register_model("m", "1.0.0", trained.checkpoint, bundle_path=tmp_path)
    with pytest.raises(RegistryError, match="does not exist"):
        registry.register_model("m", "1.0.0", tmp_path / "missing.pt")
    (tmp_path / "weights.onnx").write_bytes(b"x")
    with pytest.raises(RegistryError, match=r"unknown file type '\.onnx'.*\.safetensors"):
        registry.register_model("m", "1.0.0", tmp_path / "weights.onnx")
    with pytest.raises(RegistryError, match="checkpoint directory holding 1 checkpoint.*ckpt-000000005"):
        registry.register_model("m", "1.0.0", trained.checkpoint.parent)


# ------------------------------------------------------------------------------------------ store
def test_registered_checkpoint_survives_rotation(registry, tmp_path, make_mlp, mlp_spec):
    manager = CheckpointManager(tmp_path / "ck", keep_last_n=1, keep_best_k=0)
    net = make_mlp(1)
    first = manager.save(step=1, epoch=0, model=net, meta={"model_spec": mlp_spec})
    registry.register_model("rotated", "1.0.0", first)
    expected = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    manager.save(step=2, epoch=0, model=net)
    assert not first.exists()  # rotation deleted the registered checkpoint's folder
    loaded = registry.get_model("rotated", "1.0.0").load()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in expected.items())


def test_copy_artifact_false_records_the_path_and_notices_its_deletion(registry, weights_pt, mlp_spec):
    registry.register_model("inplace", "1.0.0", weights_pt, model_config=mlp_spec, copy_artifact=False)
    rec = registry.get_model("inplace")
    assert rec.artifact_path == weights_pt.resolve() and not (registry.artifact_root / "inplace").exists()
    rec.load()
    weights_pt.unlink()
    with pytest.raises(RegistryError, match="artifact of inplace:1.0.0 is missing"):
        rec.load()


@pytest.mark.parametrize("kind", ["file", "folder"])
@SQLITE_ONLY
def test_one_changed_byte_makes_load_fail_before_reading_weights(registry, trained, weights_pt, mlp_spec, kind):
    if kind == "file":
        registry.register_model("m", "1.0.0", weights_pt, model_config=mlp_spec)
        target = registry.get_model("m").artifact_path
    else:
        registry.register_model("m", "1.0.0", trained.checkpoint)
        target = registry.get_model("m").artifact_path / "model.safetensors"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="artifact changed since registration"):
        registry.get_model("m").load()


def test_load_without_spec_needs_a_model(registry, weights_pt, make_mlp):
    registry.register_model("nospec", "1.0.0", weights_pt)
    rec = registry.get_model("nospec")
    assert rec.model_spec is None
    with pytest.raises(RegistryError, match="pass model="):
        rec.load()
    target = make_mlp(9)
    loaded = rec.load(model=target)
    assert loaded is target and not loaded.training and _same_outputs(loaded, make_mlp(0), 6)
    wrong = build_model("mlp", input_dim=6, output_dim=3, hidden_dims=[4])
    with pytest.raises(RegistryError, match="cannot load the weights of nospec:1.0.0"):
        rec.load(model=wrong)


def test_artifact_root_default_and_server_urls(tmp_path, weights_pt):
    with ModelRegistry(tmp_path / "team" / "registry.db") as reg:
        assert reg.artifact_root == (tmp_path / "team" / "registry-artifacts").resolve()
    with ModelRegistry(tmp_path / "x.db", artifact_root=tmp_path / "store") as reg:
        reg.register_model("m", "1.0.0", weights_pt)
        assert (tmp_path / "store" / "m" / "1.0.0" / "weights.pt").is_file()
    with pytest.raises(RegistryError, match="server database: give artifact_root="):
        ModelRegistry("postgresql://user@db.example.com/registry")
    with (
        ModelRegistry(":memory:") as reg,
        pytest.raises(RegistryError, match="in-memory registry has no artifact store"),
    ):
        reg.register_model("m", "1.0.0", weights_pt)


# ------------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("version", ["1.0.0", "0.9.5", "2.1.0-rc.1", "10.20.30", "1.0.0-alpha.beta.1"])
@SQLITE_ONLY
def test_semantic_versions_are_accepted(registry, weights_pt, version):
    assert registry.register_model("m", version, weights_pt) == f"m:{version}"


@pytest.mark.parametrize("version", ["v1", "1.0", "../x", "1.0.0/..", "01.0.0", "1.0.0+build.5", "", "1.0.0-", 1])
@SQLITE_ONLY
def test_bad_versions_are_refused(registry, weights_pt, version):
    with pytest.raises(RegistryValueError, match="semantic version"):
        registry.register_model("m", version, weights_pt)
    assert not (registry.artifact_root / "m").exists()


@pytest.mark.parametrize("name", ["../evil", "a/b", "..", ".hidden", "", "x" * 129, "name:1", "name@prod", "a b"])
@SQLITE_ONLY
def test_path_traversal_and_bad_names_are_refused(registry, weights_pt, tmp_path, name):
    with pytest.raises(RegistryValueError, match="invalid model name"):
        registry.register_model(name, "1.0.0", weights_pt)
    assert not (tmp_path / "evil").exists() and not (tmp_path / "reg" / "evil").exists()


def test_bad_tags_aliases_task_types_and_metrics_are_refused(registry, weights_pt):
    with pytest.raises(RegistryValueError, match="invalid tag '../t'"):
        registry.register_model("m", "1.0.0", weights_pt, tags=["../t"])
    with pytest.raises(RegistryValueError, match="tags must be a list"):
        registry.register_model("m", "1.0.0", weights_pt, tags="prod")
    with pytest.raises(RegistryValueError, match="unknown task_type 'lm' — valid: language_modeling, classification"):
        registry.register_model("m", "1.0.0", weights_pt, task_type="lm")
    for bad in (float("nan"), math.inf, "0.3", None, True):
        with pytest.raises(RegistryValueError, match="metric 'val_loss' must be a finite number"):
            registry.register_model("m", "1.0.0", weights_pt, metrics={"val_loss": bad})
    with pytest.raises(RegistryValueError, match="model_config must be a GPTConfig or a model spec"):
        registry.register_model("m", "1.0.0", weights_pt, model_config={"layers": 3})
    assert registry.list_models() == []
    # numpy / tensor scalars are numbers
    import numpy as np

    registry.register_model("m", "1.0.0", weights_pt, metrics={"a": np.float32(0.5), "b": torch.tensor(2)})
    assert registry.get_model("m").metrics == {"a": 0.5, "b": 2.0}


def test_an_existing_version_is_never_overwritten(registry, weights_pt, tmp_path):
    registry.register_model("m", "1.0.0", weights_pt, metrics={"acc": 0.9})
    stored = registry.get_model("m", "1.0.0").artifact_path
    before = stored.read_bytes()
    other = tmp_path / "other.pt"
    torch.save({"w": torch.zeros(3)}, other)
    with pytest.raises(RegistryError, match=r"m:1.0.0 is already registered .*never overwritten"):
        registry.register_model("m", "1.0.0", other, metrics={"acc": 0.1})
    rec = registry.get_model("m", "1.0.0")
    assert rec.metrics == {"acc": 0.9} and stored.read_bytes() == before
    assert sorted(p.name for p in (registry.artifact_root / "m").iterdir()) == ["1.0.0"]


def test_names_differing_only_in_case_are_refused(registry, weights_pt):
    # On case-insensitive file systems they would share <artifact_root>/<name>/<version>/.
    registry.register_model("Digits", "1.0.0", weights_pt)
    with pytest.raises(RegistryValueError, match="'digits' differs from the registered 'Digits' only in case"):
        registry.register_model("digits", "1.0.0", weights_pt)
    assert registry.get_model("Digits").verify() is None


def test_a_leftover_folder_from_a_crashed_registration_is_replaced(registry, weights_pt):
    leftover = registry.artifact_root / "m" / "1.0.0"
    leftover.mkdir(parents=True)
    (leftover / "half-written.pt").write_bytes(b"partial")
    registry.register_model("m", "1.0.0", weights_pt)
    assert sorted(p.name for p in leftover.iterdir()) == ["weights.pt"]
    registry.get_model("m").verify()


# ------------------------------------------------------------------------------------------ lookups
def test_semver_ordering_picks_the_latest_active_version(registry, weights_pt):
    for v in ["1.9.0", "1.10.0", "1.10.0-rc.1", "0.99.99", "1.2.0"]:
        registry.register_model("m", v, weights_pt)
    assert registry.get_model("m").version == "1.10.0"  # not "1.9.0" (string order would say so)
    assert [r.version for r in registry.list_models("m")] == ["1.10.0", "1.10.0-rc.1", "1.9.0", "1.2.0", "0.99.99"]
    registry.archive("m:1.10.0")
    assert registry.get_model("m").version == "1.10.0-rc.1"
    assert [r.version for r in registry.list_models("m")][:2] == ["1.10.0-rc.1", "1.9.0"]
    assert "1.10.0" in [r.version for r in registry.list_models("m", include_archived=True)]
    assert registry.get_model("m", "1.10.0").status == "archived"  # an explicit version finds archived ones


def test_get_model_by_tag_alias_and_version_alone(registry, weights_pt):
    registry.register_model("a", "1.0.0", weights_pt, tags=["baseline"])
    registry.register_model("a", "1.1.0", weights_pt, tags=["baseline", "candidate"])
    registry.register_model("b", "1.0.0", weights_pt, tags=["candidate"])
    registry.register_model("b", "2.0.0", weights_pt)
    assert registry.get_model(tag="baseline").model_id == "a:1.1.0"  # newest version carrying the tag
    assert registry.get_model(name="b", tag="candidate").model_id == "b:1.0.0"
    with pytest.raises(RegistryValueError, match=r"tag 'candidate' is carried by several models \(a, b\).*name="):
        registry.get_model(tag="candidate")
    registry.promote_model("b:2.0.0", "baseline")  # an alias wins over a tag of the same word
    assert registry.get_model(tag="baseline").model_id == "b:2.0.0"
    assert registry.get_model(alias="baseline").model_id == "b:2.0.0"
    assert registry.get_model(name="a", tag="baseline").model_id == "a:1.1.0"
    assert registry.get_model(version="2.0.0").model_id == "b:2.0.0"
    with pytest.raises(RegistryValueError, match=r"version '1.0.0' belongs to several models \(a, b\)"):
        registry.get_model(version="1.0.0")


def test_not_found_errors_list_what_exists(registry, weights_pt):
    with pytest.raises(ModelNotFoundError, match="the registry is empty"):
        registry.get_model("m")
    registry.register_model("mnist-mlp", "1.0.0", weights_pt, tags=["fast"])
    registry.register_model("mnist-mlp", "1.2.0", weights_pt)
    with pytest.raises(
        ModelNotFoundError, match=r"no model named 'mnist-mpl'.*did you mean 'mnist-mlp'.*registered: mnist-mlp"
    ):
        registry.get_model("mnist-mpl")
    with pytest.raises(
        ModelNotFoundError, match="no version '3.0.0' of model 'mnist-mlp' — registered versions: 1.2.0, 1.0.0"
    ):
        registry.get_model("mnist-mlp", "3.0.0")
    with pytest.raises(ModelNotFoundError, match="has no alias 'production'.*holds no alias yet"):
        registry.get_model("mnist-mlp", alias="production")
    with pytest.raises(ModelNotFoundError, match="no alias or tag 'prod'.*tags: fast"):
        registry.get_model(tag="prod")
    with pytest.raises(
        ModelNotFoundError, match=r"no model has version '9.9.9' — registered: mnist-mlp \(1.2.0, 1.0.0\)"
    ):
        registry.get_model(version="9.9.9")
    with pytest.raises(KeyError):  # also a KeyError, for dict-like callers
        registry.get_model("nothing")
    with pytest.raises(RegistryValueError, match="get_model needs"):
        registry.get_model()


def test_model_refs_parse_and_resolve(registry, weights_pt):
    assert parse_model_ref("gpt@production") == ("gpt", None, "production")
    assert parse_model_ref("gpt:2.1.0-rc.1") == ("gpt", "2.1.0-rc.1", None)
    assert parse_model_ref("gpt") == ("gpt", None, None)
    for bad in ("", "gpt:1.0", "gpt@../x", "gpt:1.0.0@prod", "../gpt"):
        with pytest.raises(RegistryValueError):
            parse_model_ref(bad)
    registry.register_model("gpt", "1.0.0", weights_pt)
    registry.register_model("gpt", "1.1.0", weights_pt)
    registry.promote_model("gpt:1.0.0", "production")
    assert registry.resolve("gpt@production").version == "1.0.0"
    assert registry.resolve("gpt").version == "1.1.0"
    assert registry.resolve("gpt:1.1.0").version == "1.1.0"


def test_record_is_frozen_and_to_dict_is_json(registry, trained):
    registry.register_model("m", "1.0.0", trained.checkpoint, description="first try")
    rec = registry.get_model("m")
    assert isinstance(rec, ModelRecord)
    with pytest.raises(AttributeError):
        rec.version = "2.0.0"  # type: ignore[misc] - assigning to a frozen field is the point of the test
    data = json.loads(json.dumps(rec.to_dict()))
    assert data["model_id"] == "m:1.0.0" and data["artifact_path"] == str(rec.artifact_path)
    assert data["description"] == "first try" and data["created_at"].endswith("+00:00")
    assert set(data) >= {
        "task_type",
        "metrics",
        "tags",
        "aliases",
        "artifact_kind",
        "artifact_sha256",
        "run_id",
        "git_commit",
        "data_fingerprint",
        "config",
        "model_spec",
        "status",
    }


def test_schema_has_the_documented_tables_and_constraints(open_registry, sql_db):
    open_registry("models.db").close()
    path = sql_db("models.db")
    if sql_db.is_sqlite:
        tables = {r[0] for r in sql_db.raw(path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert sql_db.raw(path, "PRAGMA journal_mode") == [("wal",)]
    else:
        tables = {r[0] for r in sql_db.raw(path, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {
        "registry_models",
        "registry_aliases",
        "registry_alias_history",
        "registry_model_tags",
        "registry_schema_version",
    } <= tables
    sql_db.raw(path, "UPDATE registry_schema_version SET version = 7")
    with pytest.raises(RegistryError, match="schema version 7, newer than this trainengine supports"):
        open_registry("models.db")


def test_closed_registry_says_so(tmp_path):
    reg = ModelRegistry(tmp_path / "models.db")
    reg.close()
    reg.close()
    with pytest.raises(RegistryError, match="is closed"):
        reg.list_models()
    assert "closed" in repr(reg)


def test_module_doctests_pass():
    import trainengine._sql as sql
    from trainengine import registry
    from trainengine.registry import _gates, _record, _refs, _registry, _schema

    for module in (registry, _registry, _record, _refs, _gates, _schema, sql):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, module.__name__
        assert result.attempted >= 1, module.__name__
