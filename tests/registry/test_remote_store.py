"""The registry's artifact store at an fsspec URL: fsspec's in-memory and local (file://) file systems.

Round trips (register -> list -> load), what a URL store writes (a prefix per registration, no
staging rename), verification of the bytes read back (a modified or deleted object is refused),
registrations that fail leaving nothing behind, and checkpoint folders refusing URLs.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import fsspec
import pytest
import torch

from trainengine.config import TrainingConfig
from trainengine.errors import ConfigError, RegistryError
from trainengine.registry import ModelRegistry


@pytest.fixture
def memory_url():
    """A fresh folder of fsspec's process-wide in-memory file system, removed afterwards."""
    url = f"memory://te-tests-{uuid.uuid4().hex[:8]}/models"
    yield url
    fs = fsspec.filesystem("memory")
    root = url.split("://", 1)[1].split("/")[0]
    if fs.exists(f"/{root}"):
        fs.rm(f"/{root}", recursive=True)


@pytest.fixture(params=["memory", "file"])
def store_url(request, memory_url, tmp_path) -> str:
    if request.param == "memory":
        return memory_url
    return (tmp_path / "bucket" / "models").as_uri()  # file:///.../bucket/models


def test_round_trip_through_a_url_store(store_url, tmp_path, make_mlp, mlp_spec, bundle_factory) -> None:
    src = tmp_path / "w.pt"
    torch.save(make_mlp(0).state_dict(), src)
    bundle = bundle_factory(tmp_path / "bundle", make_mlp(1))
    cache = tmp_path / "cache"
    with ModelRegistry(tmp_path / "models.db", artifact_root=store_url, cache_dir=cache) as reg:
        assert reg.artifact_root == store_url and "ArtifactStore('" in repr(reg.store)
        reg.register_model("tiny", "1.0.0", src, model_config=mlp_spec, metrics={"acc": 0.5})
        reg.register_model("tiny", "1.1.0", bundle_path=bundle)
    src.unlink()  # nothing local is needed any more: the store holds the artifacts

    with ModelRegistry(tmp_path / "models.db", artifact_root=store_url, cache_dir=cache) as reg:
        weights, folder = reg.get_model("tiny", "1.0.0"), reg.get_model("tiny", "1.1.0")
    assert weights.artifact_url.startswith(store_url.split("://")[0] + "://")
    assert weights.artifact_url.endswith("/tiny/1.0.0/" + weights.artifact_url.split("/")[-2] + "/w.pt")
    assert not weights.artifact_path.exists()  # downloaded on first use, not when listed
    x = torch.randn(4, 6)
    assert torch.equal(weights.load()(x), make_mlp(0)(x))
    assert weights.artifact_path == cache / weights.artifact_sha256 / "w.pt" and weights.artifact_path.is_file()
    assert torch.equal(folder.load()(x), make_mlp(1)(x))
    assert sorted(p.name for p in folder.fetch().iterdir()) == sorted(folder.artifact_files)
    assert weights.to_dict()["artifact_url"] == weights.artifact_url

    fs, root = fsspec.core.url_to_fs(store_url)
    stored = sorted(Path(p).relative_to(root).as_posix() for p in fs.find(root))
    assert len(stored) == 1 + len(folder.artifact_files) and not any(".tmp" in p for p in stored)


def test_what_is_read_back_is_verified(memory_url, tmp_path, make_mlp, mlp_spec) -> None:
    src = tmp_path / "w.pt"
    torch.save(make_mlp(0).state_dict(), src)
    with ModelRegistry(tmp_path / "models.db", artifact_root=memory_url, cache_dir=tmp_path / "cache") as reg:
        reg.register_model("tiny", "1.0.0", src, model_config=mlp_spec)
        record = reg.get_model("tiny", "1.0.0")
    fs = fsspec.filesystem("memory")
    remote = record.artifact_url.split("://", 1)[1]
    fs.pipe_file(remote, b"not the registered weights")  # modified in the bucket
    with pytest.raises(RegistryError, match="artifact changed since registration: tiny:1.0.0 at 'memory://"):
        record.load()
    assert not record.artifact_path.exists()  # a bad download never reaches the cache

    fs.rm(remote)
    with pytest.raises(RegistryError, match="artifact of tiny:1.0.0 is missing"):
        record.verify()


def test_a_damaged_cached_copy_is_fetched_again(memory_url, tmp_path, make_mlp, mlp_spec) -> None:
    src = tmp_path / "w.pt"
    torch.save(make_mlp(0).state_dict(), src)
    with ModelRegistry(tmp_path / "models.db", artifact_root=memory_url, cache_dir=tmp_path / "cache") as reg:
        reg.register_model("tiny", "1.0.0", src, model_config=mlp_spec)
        record = reg.get_model("tiny", "1.0.0")
    record.verify()
    record.artifact_path.write_bytes(b"damaged on local disk")
    record.verify()  # the store's copy is still good: fetched again
    assert record.artifact_path.read_bytes() == src.read_bytes()


def test_a_refused_registration_leaves_nothing_in_the_store(memory_url, tmp_path, bundle_factory, make_mlp) -> None:
    bundle = bundle_factory(tmp_path / "bundle", make_mlp(0))
    (bundle / "model_config.json").write_text("{}")  # no longer what its manifest lists
    with ModelRegistry(tmp_path / "models.db", artifact_root=memory_url) as reg:
        with pytest.raises(RegistryError, match="failed verification"):
            reg.register_model("tiny", "1.0.0", bundle_path=bundle)
        assert reg.list_models() == []
    fs = fsspec.filesystem("memory")
    root = memory_url.split("://", 1)[1]
    assert not fs.exists(f"{root}/tiny/1.0.0") or fs.find(f"{root}/tiny/1.0.0") == []


def test_unusable_urls_are_refused_with_the_reason(tmp_path) -> None:
    with pytest.raises(RegistryError, match="cannot use the artifact store 'nosuchproto://x'"):
        ModelRegistry(tmp_path / "models.db", artifact_root="nosuchproto://x")


def test_checkpoint_folders_refuse_urls() -> None:
    with pytest.raises(
        ConfigError, match="checkpointing.checkpoint_dir must be a local or mounted folder, not the URL"
    ):
        TrainingConfig(checkpointing={"enabled": True, "checkpoint_dir": "s3://bucket/ckpt"})
    assert TrainingConfig(registry={"artifact_root": "s3://bucket/models"}).registry.artifact_root.startswith("s3://")
