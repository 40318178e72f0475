"""FSDP2 under torchrun on the CPU (gloo): sharded training, sharded checkpoints, restarts, resharding.

Two torchrun launches (issue 18's budget is 8 in the suite): a 2-rank FSDP2 run with one
checkpoint per epoch, and a 2-rank run under ``--max-restarts 1`` whose rank 1 is killed. The
rest reads what they wrote, in this process.
"""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.timeout(240)

FSDP = {"STRATEGY": "fsdp2"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, script, one_process):
    folder = tmp_path_factory.mktemp("fsdp")
    shutil.copy(one_process / "one.json", folder / "one.json")  # the one-process reference, run once per session
    two = script.run(folder, "two", "16", "2", procs=2, env={**FSDP, "LOG_EVERY": "4"})  # like the reference
    assert two.returncode == 0, two.stderr[-3000:]
    return folder


def test_fsdp2_trains_like_one_process_and_writes_sharded_checkpoints(runs, script):
    a, b = script.result(runs, "one"), script.result(runs, "two")
    assert a["steps"] == b["steps"] == 6
    assert b["losses"] == pytest.approx(a["losses"], abs=1e-5)
    assert b["val"]["val/loss"] == pytest.approx(a["val"]["val/loss"], abs=1e-5)
    for name, w in a["weights"].items():  # gathered whole on rank 0 at the end
        np.testing.assert_allclose(b["weights"][name], w, atol=1e-5, err_msg=name)
    run_dir = Path(b["run_dir"])
    final = load_file(str(run_dir / "model.safetensors"))  # the run directory's final weights, whole
    np.testing.assert_array_equal(final["net.0.weight"].numpy(), np.asarray(b["weights"]["net.0.weight"]))
    checkpoint = Path(b["last_checkpoint"])
    shards = sorted(p.name for p in (checkpoint / "shards").iterdir())
    assert shards == [f"shard-0000{r}-model-00001-of-00001.safetensors" for r in (1, 2)]  # one file per rank
    listed = json.loads((checkpoint / "manifest.json").read_text())["files"]
    assert {f"shards/{s}" for s in shards} | {"ranks/rank-00000.json", "ranks/rank-00001.json"} <= set(listed)
    assert not list(checkpoint.rglob("*.metadata")) and "model.safetensors" not in listed  # no DCP pickle
    state = json.loads((checkpoint / "state.json").read_text())
    assert state["sharded"]["world_size"] == 2 and "param_groups" in json.dumps(state["sharded"]["optimizer_skeleton"])


@pytest.fixture(scope="module")
def killed(runs, script):
    # torchrun --max-restarts 1: rank 1 dies by SIGKILL at step 2 (no emergency save possible); torchrun
    # restarts both ranks and resume_from="auto" continues from the newest sharded checkpoint (one per step).
    env = {**FSDP, "CKPT_EVERY": "1", "KILL_AT_STEP": "2"}
    return script.run(runs, "killed", "16", "2", "-1", "0", "resume", procs=2, env=env, launch=("--max-restarts=1",))


def test_a_killed_worker_restarts_the_group_and_resumes_exactly(runs, killed, script):
    # The run ends with exactly the weights of the run that was never killed.
    assert killed.returncode == 0, killed.stderr[-3000:]
    assert "exitcode: -9" in killed.stderr or "SIGKILL" in killed.stderr  # the first attempt really lost a worker
    a, b = script.result(runs, "two"), script.result(runs, "killed")
    assert a["steps"] == b["steps"] == 6
    for name, w in a["weights"].items():
        assert np.array_equal(np.asarray(b["weights"][name]), np.asarray(w)), name


def test_a_sharded_checkpoint_resumes_on_another_world_size(runs, killed, tmp_path, script):
    # The killed run's step-2 checkpoint (2 ranks x 16) resumes in one process with micro-batch 32: DCP
    # assembles the shards, the position carries over in samples, and training ends where 2 ranks did.
    source = next(Path(script.result(runs, "killed")["run_dir"]).rglob("ckpt-000000002"))
    checkpoint = tmp_path / "checkpoints" / source.name
    shutil.copytree(source, checkpoint)
    run = script.run(tmp_path, "single", "32", "2", "-1", "0", str(checkpoint), procs=1)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "continues after 128 samples of epoch 0" in run.stderr  # 2 steps x 2 micro-batches x 2 ranks x 16
    a, b = script.result(runs, "two"), script.result(tmp_path, "single")
    assert b["steps"] == 6
    for name, w in a["weights"].items():
        np.testing.assert_allclose(b["weights"][name], w, atol=1e-5, err_msg=name)


def test_consolidate_then_export(runs, tmp_path, script):
    checkpoint = Path(script.result(runs, "two")["last_checkpoint"])
    cli = [sys.executable, "-m", "trainengine"]
    out = tmp_path / "consolidated"
    done = subprocess.run([*cli, "checkpoints", "consolidate", str(checkpoint), "--output", str(out)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    whole = out / checkpoint.name
    weights = load_file(str(whole / "model.safetensors"))  # one file: the whole weights
    final = load_file(str(Path(script.result(runs, "two")["run_dir"]) / "model.safetensors"))  # the last step's weights
    assert weights.keys() == final.keys()
    for key in final:
        assert torch.equal(weights[key], final[key]), key
    again = subprocess.run([*cli, "checkpoints", "consolidate", str(checkpoint), "--output", str(out)],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert again.returncode != 0 and "--overwrite" in again.stderr  # never replaced silently
    exported = subprocess.run([*cli, "export", "--checkpoint", str(whole), "--formats", "pytorch",
                               "--output-dir", str(tmp_path / "exports")], capture_output=True, text=True,
                              timeout=170)  # fmt: skip
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert list((tmp_path / "exports").rglob("model.pt*")) or list((tmp_path / "exports").rglob("*.safetensors"))


class _Planted:
    """Unpickling this writes a marker file: proof that a pickle was loaded."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path(self.marker).write_text, ("unpickled",))


def test_a_planted_pickle_is_never_loaded(runs, tmp_path, script):
    from trainengine.checkpoint import read_checkpoint, verify_checkpoint
    from trainengine.errors import CheckpointError

    marker = tmp_path / "unpickled.txt"
    bomb = pickle.dumps(_Planted(str(marker)))
    source = Path(script.result(runs, "two")["last_checkpoint"])
    # DCP's own metadata file name, planted next to the shards: not in the manifest, so refused.
    extra = tmp_path / "extra" / source.name
    shutil.copytree(source, extra)
    (extra / "shards" / ".metadata").write_bytes(bomb)
    assert any("unexpected file" in p for p in verify_checkpoint(extra))
    with pytest.raises(CheckpointError, match="corrupt"):
        read_checkpoint(extra)
    # A shard replaced by the pickle, the manifest re-hashed to match: still not a safetensors file.
    swapped = tmp_path / "swapped" / source.name
    shutil.copytree(source, swapped)
    shard = "shards/shard-00002-model-00001-of-00001.safetensors"
    (swapped / shard).write_bytes(bomb)
    manifest = json.loads((swapped / "manifest.json").read_text())
    import hashlib

    manifest["files"][shard] = {"size": len(bomb), "sha256": hashlib.sha256(bomb).hexdigest()}
    (swapped / "manifest.json").write_text(json.dumps(manifest))
    assert any(shard in p and "pickle" in p for p in verify_checkpoint(swapped))
    with pytest.raises(CheckpointError):
        read_checkpoint(swapped)
    with pytest.raises(CheckpointError):  # even unverified, the safetensors reader never unpickles
        read_checkpoint(swapped, verify=False)
    assert not marker.exists()


def test_fsdp_units_default_to_the_elements_of_module_lists():
    from trainengine.distributed import fsdp_units
    from trainengine.errors import ConfigError
    from trainengine.models import GPT, GPTConfig

    model = GPT(GPTConfig(vocab_size=32, max_seq_len=8, n_layers=3, n_heads=2, d_model=16))
    names = [name for name, _ in fsdp_units(model, [])]
    assert len(names) == 3 and all(".".join(n.split(".")[:-1]) == names[0].rsplit(".", 1)[0] for n in names)
    block = type(dict(model.named_modules())[names[0]]).__name__
    assert [n for n, _ in fsdp_units(model, [block])] == names  # the same units, named by class
    with pytest.raises(ConfigError, match="no module of class Nope; its classes are"):
        fsdp_units(model, ["Nope"])


def test_fsdp2_in_one_process_trains_alone():
    from trainengine.config import TrainingConfigBuilder
    from trainengine.distributed import make_runtime

    cfg = TrainingConfigBuilder().with_distributed(strategy="fsdp2").build()
    runtime = make_runtime("cpu", "fp32", cfg.distributed)
    assert runtime.world_size == 1 and runtime.checkpoint_io is None  # no torchrun: one process, whole checkpoints


@pytest.fixture
def fsdp_runtime(monkeypatch):
    """An FSDP2 runtime of one rank in this process (a real gloo group of world size 1)."""
    import socket

    from trainengine.config import TrainingConfigBuilder
    from trainengine.distributed import FSDPRuntime

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    runtime = FSDPRuntime("cpu", "fp32", TrainingConfigBuilder().with_distributed(strategy="fsdp2").build().distributed)
    yield runtime
    runtime.close()


def test_tied_weights_are_written_once_and_load_back_tied(fsdp_runtime, tmp_path):
    # GPT ties its embedding to the output layer: one tensor under two names, which DCP's safetensors
    # storage refuses to write twice. The checkpoint holds it once, with the other name as an alias.
    from trainengine.checkpoint import CheckpointManager, read_checkpoint
    from trainengine.distributed import load_sharded, save_sharded
    from trainengine.models import GPT, GPTConfig

    def build(seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(seed)
        model = fsdp_runtime.prepare_model(GPT(GPTConfig(vocab_size=32, max_seq_len=8, n_layers=2, n_heads=2,
                                                         d_model=16)))  # fmt: skip
        return model, torch.optim.AdamW(model.parameters(), lr=0.01)

    model, optimizer = build(0)
    tokens = torch.randint(0, 32, (4, 8))
    model(tokens).float().logsumexp(-1).mean().backward()
    optimizer.step()
    manager = CheckpointManager(tmp_path / "checkpoints")
    path = save_sharded(
        fsdp_runtime, directory=manager.checkpoint_dir, step=1, model=model, optimizer=optimizer, rank_state={},
        publish=lambda tmp, written, doc: manager.complete(
            tmp, written=written, state_extra={"sharded": {"world_size": 1, **doc}}, step=1, epoch=0
        ),
    )  # fmt: skip
    aliases = json.loads((path / "state.json").read_text())["sharded"]["aliases"]
    assert len(aliases) == 1
    ((alias, target),) = aliases.items()
    whole = read_checkpoint(path)  # one process, no group needed: the alias comes back as the same tensor
    assert whole.model_state[alias] is whole.model_state[target]
    assert whole.state["optimizer"]["state"]  # Adam's moments, in the one-process format
    fresh, fresh_optimizer = build(1)
    load_sharded(fsdp_runtime, path, fresh, fresh_optimizer)
    saved = {k: v.full_tensor() for k, v in model.state_dict().items()}
    loaded = {k: v.full_tensor() for k, v in fresh.state_dict().items()}
    for key in saved:
        assert torch.equal(saved[key], loaded[key]), key
    assert fresh.state_dict()[alias] is fresh.state_dict()[target] or torch.equal(loaded[alias], loaded[target])
    moments = fresh_optimizer.state_dict()["state"]
    assert moments and all("exp_avg" in s for s in moments.values())
