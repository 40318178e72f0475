"""Interrupts and faults: signals, corrupt checkpoints, out-of-memory, non-finite policies, disk full."""

from __future__ import annotations

import errno
import json
import os
import signal
from pathlib import Path

import pytest
import torch
from torch import nn

from trainengine import CheckpointError, TaskSpec, TrainEngineError, Trainer
from trainengine.engine import TrainingInterrupted
from trainengine.models import MLP

CLS3 = TaskSpec.classification("blobs", num_classes=3)


def _ckpt_cfg(make_config, **training):
    return make_config(**training).with_checkpointing(save_every_n_steps=4, save_every_n_epochs=None)


class SendSignal:
    def __init__(self, at_step: int, signum: int = signal.SIGINT, times: int = 1) -> None:
        self.at_step, self.signum, self.times = at_step, signum, times

    def on_step_end(self, trainer, output):
        if trainer.state.step == self.at_step:
            for _ in range(self.times):
                os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_finishes_the_step_saves_and_stops(make_config, blobs, signum, code):
    cfg = make_config(max_steps=30).with_tracking(run_name="sig").build()
    with pytest.raises(TrainingInterrupted) as info:
        Trainer(MLP(4, 3), None, cfg, CLS3, callbacks=[SendSignal(6, signum)]).train(blobs[0], blobs[1])
    exc = info.value
    assert exc.exit_code == code and exc.step == 6
    assert exc.checkpoint_path is not None and exc.checkpoint_path.name.endswith("000000006")
    run_dir = exc.checkpoint_path.parent.parent
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"
    lines = [json.loads(x) for x in (run_dir / "logs.jsonl").read_text().splitlines()]
    assert any(r["type"] == "interrupt" and r["checkpoint"] for r in lines)
    # The emergency checkpoint resumes the run at step 6 and it completes.
    results = Trainer(MLP(4, 3), None, cfg, CLS3).train(blobs[0], blobs[1], resume_from=run_dir)
    assert results["steps"] == 30
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"


def test_second_ctrl_c_aborts_at_once(make_config, blobs):
    cfg = make_config(max_steps=30).with_tracking(run_name="twice").build()
    before = signal.getsignal(signal.SIGINT)  # default_int_handler; SIG_IGN under a background `make test &`
    with pytest.raises(KeyboardInterrupt) as info:
        Trainer(MLP(4, 3), None, cfg, CLS3, callbacks=[SendSignal(3, times=2)]).train(blobs[0], blobs[1])
    assert not isinstance(info.value, TrainingInterrupted)
    assert not list(Path(cfg.tracking.output_dir).glob("default/twice/checkpoints/ckpt-*"))
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored


def test_signal_during_evaluation_stops_after_the_step(make_config, blobs):
    class SignalOnRead(torch.utils.data.Dataset):
        """Sends SIGINT when the first evaluation reads its first sample (once armed)."""

        def __init__(self, x, y):
            self.x, self.y, self.armed, self.reads = x, y, False, 0

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            if self.armed:
                self.reads += 1
                if self.reads == 1:
                    os.kill(os.getpid(), signal.SIGINT)
            return self.x[i], self.y[i]

    class Arm:
        def on_train_start(self, trainer):
            val.armed = True

    cfg = make_config(max_steps=30, eval_interval_steps=5, eval_batch_size=4).with_tracking(run_name="evalsig").build()
    val = SignalOnRead(*blobs[1])
    with pytest.raises(TrainingInterrupted) as info:
        Trainer(MLP(4, 3), None, cfg, CLS3, callbacks=[Arm()]).train(blobs[0], val)
    assert info.value.step == 5  # the checkpoint is of step 5
    assert val.reads < len(val)  # the evaluation was abandoned after its first batch


def test_resume_skips_a_corrupt_newest_checkpoint(make_config, blobs, caplog):
    cfg = _ckpt_cfg(make_config, max_steps=12).with_tracking(run_name="c").build()
    Trainer(MLP(4, 3), None, cfg, CLS3).train(blobs[0], blobs[1])
    ckpt_dir = Path(cfg.tracking.output_dir) / "default" / "c" / "checkpoints"
    newest = sorted(p for p in ckpt_dir.iterdir() if p.name.startswith("ckpt-"))[-1]
    target = newest / "model.safetensors"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit pattern in the last byte
    target.write_bytes(bytes(data))
    cfg.training.max_steps = 16
    with caplog.at_level("WARNING", logger="trainengine"):
        results = Trainer(MLP(4, 3), None, cfg, CLS3).train(blobs[0], blobs[1], resume_from="auto")
    assert any(newest.name in r.getMessage() and "corrupt" in r.getMessage() for r in caplog.records)
    run = json.loads((ckpt_dir.parent / "run.json").read_text())
    assert run["resumes"][0]["step"] == 8  # 12 was corrupt: resumed from 8
    assert results["steps"] == 16


class OOMAbove(nn.Module):
    """A linear model that runs out of memory on micro-batches larger than ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(4, 3)
        self.limit = limit

    def forward(self, x):
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return self.linear(x)


def test_oom_split_keeps_the_gradients_of_the_full_batch(make_config, blobs):
    base = {"epochs": 1, "batch_size": 16, "max_grad_norm": None}
    cfg_split = (
        make_config(**base, oom_policy="split").with_data(shuffle=False).with_tracking(write_run_dir=False).build()
    )
    split_model = OOMAbove(limit=4)
    results = Trainer(split_model, None, cfg_split, CLS3).train(blobs[0])
    assert results["steps"] == 10
    reference = OOMAbove(limit=1000)
    cfg_ref = make_config(**base).with_data(shuffle=False).with_tracking(write_run_dir=False).build()
    Trainer(reference, None, cfg_ref, CLS3).train(blobs[0])
    for a, b in zip(split_model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_oom_skip_drops_the_batch_and_counts_it(make_config, blobs, caplog):
    cfg = make_config(epochs=1, batch_size=16, oom_policy="skip").with_tracking(write_run_dir=False).build()
    x, y = blobs[0]
    x, y = x[:146], y[:146]  # 9 batches of 16, then one of 2
    model = OOMAbove(limit=2)  # every full batch of 16 runs out of memory
    with caplog.at_level("WARNING", logger="trainengine"):
        results = Trainer(model, None, cfg, CLS3).train((x, y))
    assert results["steps"] == 1  # only the small last batch made a step
    assert sum("batch skipped" in r.getMessage() for r in caplog.records) == 9


def test_oom_raise_explains_the_options(make_config, blobs):
    cfg = make_config(max_steps=2).with_tracking(write_run_dir=False).build()
    with pytest.raises(torch.OutOfMemoryError, match="oom_policy to split or skip"):
        Trainer(OOMAbove(limit=4), None, cfg, CLS3).train(blobs[0])


class NaNOnce(nn.Module):
    """Linear; returns NaN on the given forward calls (counted across the run)."""

    def __init__(self, bad_calls: set[int]) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.bad_calls, self.calls = bad_calls, 0

    def forward(self, x):
        self.calls += 1
        out = self.linear(x)
        return out * float("nan") if self.calls in self.bad_calls and self.training else out


def test_nonfinite_halt_saves_the_last_good_state_and_stops(make_config, blobs):
    cfg = make_config(max_steps=20, nonfinite_policy="halt", max_grad_norm=None).with_tracking(run_name="halt").build()
    model = NaNOnce({7})
    with pytest.raises(TrainEngineError, match=r"non-finite .* at step 7 .*halted.*emergency checkpoint"):
        Trainer(model, None, cfg, CLS3).train(blobs[0], blobs[1])
    saved = [p.name for p in (Path(cfg.tracking.output_dir) / "default" / "halt" / "checkpoints").glob("ckpt-*")]
    assert saved == ["ckpt-000000006"]  # the last good state
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_nonfinite_rollback_reloads_lowers_lr_and_continues(make_config, blobs):
    cfg = (
        _ckpt_cfg(
            make_config,
            max_steps=20,
            nonfinite_policy="rollback",
            rollback_lr_factor=0.5,
            max_grad_norm=None,
            log_interval_steps=1,
        )
        .with_tracking(run_name="rb")
        .build()
    )
    model = NaNOnce({10})
    results = Trainer(model, None, cfg, CLS3).train(blobs[0], blobs[1])
    assert results["steps"] == 20
    lines = [json.loads(x) for x in Path(f"{results['run_dir']}/logs.jsonl").read_text().splitlines()]
    rollbacks = [r for r in lines if r["type"] == "rollback"]
    assert len(rollbacks) == 1 and rollbacks[0]["step"] == 8 and rollbacks[0]["lr_factor"] == 0.5
    bad = [r for r in lines if r["type"] == "nonfinite"]
    assert len(bad) == 1 and bad[0]["step"] == 10 and bad[0]["policy"] == "rollback"
    assert results["nonfinite_steps"] == 1  # counted, not hidden by the reload
    # After the rollback the learning rate is half of the constant schedule's.
    train = [r for r in lines if r["type"] == "train"]
    assert train[-1]["lr"] == pytest.approx(0.5 * cfg.training.learning_rate)


def test_nonfinite_rollback_gives_up_after_max_rollbacks(make_config, blobs):
    cfg = (
        _ckpt_cfg(make_config, max_steps=20, nonfinite_policy="rollback", max_rollbacks=2, max_grad_norm=None)
        .with_tracking(run_name="rb2")
        .build()
    )
    model = NaNOnce(set(range(6, 1000)))  # every step from the 6th on is bad
    with pytest.raises(TrainEngineError, match="after 2 rollbacks"):
        Trainer(model, None, cfg, CLS3).train(blobs[0], blobs[1])


def _fail_second_save(monkeypatch):
    from trainengine.checkpoint import CheckpointManager

    real = CheckpointManager.save
    calls = {"n": 0}

    def save(self, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise CheckpointError(
                f"cannot write checkpoint: {os.strerror(errno.ENOSPC)} — previous checkpoints are intact"
            )
        return real(self, **kwargs)

    monkeypatch.setattr(CheckpointManager, "save", save)


def test_disk_full_stops_cleanly_and_keeps_earlier_checkpoints(make_config, blobs, monkeypatch):
    _fail_second_save(monkeypatch)
    cfg = _ckpt_cfg(make_config, max_steps=20).with_tracking(run_name="full").build()
    with pytest.raises(CheckpointError, match="No space left on device.*earlier checkpoints are intact"):
        Trainer(MLP(4, 3), None, cfg, CLS3).train(blobs[0], blobs[1])
    run_dir = Path(cfg.tracking.output_dir) / "default" / "full"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    from trainengine.checkpoint import CheckpointManager

    manager = CheckpointManager(run_dir / "checkpoints")
    assert [c.step for c in manager.list_checkpoints()] == [4]
    assert manager.verify(manager.get_latest_checkpoint()) == []


def test_disk_full_can_be_configured_to_continue(make_config, blobs, monkeypatch):
    _fail_second_save(monkeypatch)
    cfg = (
        _ckpt_cfg(make_config, max_steps=20)
        .with_checkpointing(on_save_error="continue")
        .with_tracking(run_name="cont")
        .build()
    )
    results = Trainer(MLP(4, 3), None, cfg, CLS3).train(blobs[0], blobs[1])
    assert results["steps"] == 20


def test_async_checkpoints_are_complete_and_resumable(make_config, blobs):
    from trainengine.checkpoint import CheckpointManager

    cfg = (
        _ckpt_cfg(make_config, max_steps=12).with_checkpointing(async_save=True).with_tracking(run_name="async").build()
    )
    results = Trainer(MLP(4, 3), None, cfg, CLS3).train(blobs[0], blobs[1])
    assert len(results["checkpoint_stall_seconds"]) == 3 and all(s > 0 for s in results["checkpoint_stall_seconds"])
    manager = CheckpointManager(Path(results["run_dir"]) / "checkpoints")
    assert [c.step for c in manager.list_checkpoints()] == [4, 8, 12]
    assert all(manager.verify(c.path) == [] for c in manager.list_checkpoints())
    assert results["last_checkpoint"].endswith("ckpt-000000012")
    cfg.training.max_steps = 16
    resumed = Trainer(MLP(4, 3), None, cfg, CLS3).train(blobs[0], blobs[1], resume_from=results["run_dir"])
    assert resumed["steps"] == 16


def test_a_signal_at_an_epochs_last_batch_resumes_into_the_next_epoch(make_config, blobs):
    # 160 samples / 16 = 10 batches per epoch: the emergency checkpoint at step 10 holds a consumed
    # epoch; the resumed run ends that epoch and goes on (it used to stop: "produced no batches").
    cfg = make_config(max_steps=20, epochs=2).with_tracking(run_name="edge").build()
    with pytest.raises(TrainingInterrupted) as info:
        Trainer(MLP(4, 3), None, cfg, CLS3, callbacks=[SendSignal(10, signal.SIGTERM)]).train(blobs[0], blobs[1])
    assert info.value.step == 10
    run_dir = info.value.checkpoint_path.parent.parent
    results = Trainer(MLP(4, 3), None, cfg, CLS3).train(blobs[0], blobs[1], resume_from=run_dir)
    assert results["steps"] == 20 and results["epochs"] == 2
