"""Trainer behaviour: results, evaluation cadence, early stopping, non-finite steps, determinism."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_model
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from trainengine import GradientMonitor, TaskError, TaskSpec, Trainer, TrainingConfig
from trainengine.data import DataLeakageWarning
from trainengine.models import MLP

CLS3 = TaskSpec.classification("blobs", num_classes=3)


def test_train_returns_documented_results_and_learns(make_config, blobs):
    cfg = make_config(epochs=3).build()
    model = MLP(4, 3, hidden_dims=(16,), dropout=0.0)
    results = Trainer(model, None, cfg, CLS3).train(blobs[0], blobs[1])
    for key in (
        "best_val_loss",
        "best_metric",
        "history",
        "steps",
        "epochs",
        "stopped_early",
        "run_dir",
        "samples_per_second",
    ):
        assert key in results
    assert results["steps"] == 3 * math.ceil(160 / 16)
    assert results["epochs"] == 3
    assert results["best_metric_name"] == "val/accuracy"
    assert results["best_metric"] >= 0.9
    assert results["stopped_early"] is False
    assert results["samples_per_second"] > 0
    # One evaluation per epoch, at the epoch's last step.
    assert [r["step"] for r in results["history"]["val"]] == [10, 20, 30]
    assert results["best_val_loss"] == min(r["val/loss"] for r in results["history"]["val"])


def test_task_spec_is_required():
    with pytest.raises(TaskError, match=r"TaskSpec\.classification.*TaskSpec\.language_modeling.*vision_tiny"):
        Trainer(MLP(4, 3), None, TrainingConfig(), None)


def test_positional_seed_call_without_model_config(make_config, blobs):
    cfg = make_config(max_steps=2).with_tracking(write_run_dir=False).build()
    trainer = Trainer(MLP(4, 3), cfg, task_spec=CLS3)  # Trainer(model, training_config, ...)
    assert trainer.config is cfg


def test_eval_interval_and_max_steps(make_config, blobs):
    cfg = make_config(max_steps=12, eval_interval_steps=4, eval_every_epoch=False).build()
    results = Trainer(MLP(4, 3), None, cfg, CLS3).train(blobs[0], blobs[1])
    assert results["steps"] == 12
    assert [r["step"] for r in results["history"]["val"]] == [4, 8, 12]
    # 12 steps of 10 per epoch: the second epoch is partly done.
    assert results["epochs"] == pytest.approx(1.2)


def test_early_stopping_stops_when_metric_does_not_improve(make_config, blobs):
    # A learning rate of ~0 keeps the metric flat, so patience runs out.
    cfg = (
        make_config(epochs=50, learning_rate=1e-12, early_stopping_patience=2).with_training(monitor="val/loss").build()
    )
    results = Trainer(MLP(4, 3), None, cfg, CLS3).train(blobs[0], blobs[1])
    assert results["stopped_early"] is True
    assert "early stopping" in results["stop_reason"]
    assert len(results["history"]["val"]) == 3  # the first sets the best, two more without improvement
    assert results["steps"] == 30


def test_accepts_dataloader_tensors_and_lists(make_config, blobs):
    (xt, yt), (xv, yv) = blobs
    cfg = make_config(max_steps=3).with_tracking(write_run_dir=False).build()
    for train, val in [
        (DataLoader(TensorDataset(xt, yt), batch_size=8), TensorDataset(xv, yv)),
        ((xt, yt), (xv, yv)),
        ([(x, y) for x, y in zip(xt, yt, strict=True)], [(x, y) for x, y in zip(xv, yv, strict=True)]),
        ((xt.numpy(), yt.numpy()), None),
    ]:
        results = Trainer(MLP(4, 3), None, cfg, CLS3).train(train, val)
        assert results["steps"] == 3


def test_leakage_between_train_and_val_warns(make_config, blobs):
    cfg = make_config(max_steps=1).with_tracking(write_run_dir=False).build()
    with pytest.warns(DataLeakageWarning):
        Trainer(MLP(4, 3), None, cfg, CLS3).train(blobs[0], (blobs[0][0][:10], blobs[0][1][:10]))


class NaNOnMarkedInputs(nn.Module):
    """A linear model whose loss becomes NaN for samples whose first feature is 999."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x):
        out = self.linear(x)
        return torch.where(x[:, :1] == 999, float("nan"), out)


@pytest.mark.parametrize("check_on_host", [True, False], ids=["cpu-host-check", "device-flag"])
def test_nonfinite_steps_are_skipped_counted_logged_and_training_continues(make_config, blobs, check_on_host):
    (xt, yt), val = blobs
    xt = xt.clone()
    xt[16:32, 0] = 999.0  # the whole second batch (shuffle off) is poisoned
    cfg = make_config(epochs=2, log_interval_steps=1).with_data(shuffle=False).with_training(max_grad_norm=None).build()
    model = NaNOnMarkedInputs()
    seen = {}

    class Snapshot:
        def on_train_start(self, trainer):
            trainer.step_runner.check_on_host = check_on_host

        def on_step_end(self, trainer, output):
            seen[trainer.state.step] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    results = Trainer(model, None, cfg, CLS3, callbacks=[Snapshot()]).train((xt, yt), val)
    assert results["nonfinite_steps"] == 2  # once per epoch
    assert results["steps"] == 20  # training went on
    # The poisoned step (step 2) left the weights exactly as step 1 did.
    for key in seen[1]:
        assert torch.equal(seen[1][key], seen[2][key])
        assert not torch.equal(seen[2][key], seen[3][key])
    assert all(torch.isfinite(p).all() for p in model.parameters())
    lines = [json.loads(x) for x in Path(f"{results['run_dir']}/logs.jsonl").read_text().splitlines()]
    counts = [r["train/nonfinite_steps"] for r in lines if r.get("type") == "train"]
    assert counts[0] == 0 and counts[1] == 1 and counts[-1] == 2


def test_deterministic_runs_are_identical(make_config, blobs):
    def run():
        cfg = make_config(epochs=2, deterministic=True, log_interval_steps=1).with_model(dropout=0.1).build()
        torch.manual_seed(123)  # model init differs from the run seed on purpose
        model = MLP(4, 3, hidden_dims=(16,), dropout=0.2)
        results = Trainer(model, None, cfg, CLS3).train(blobs[0], blobs[1])
        return results, model

    (r1, m1), (r2, m2) = run(), run()
    assert [h["loss"] for h in r1["history"]["train"]] == [h["loss"] for h in r2["history"]["train"]]
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not torch.are_deterministic_algorithms_enabled()  # restored after training


def test_callbacks_receive_events_in_order(make_config, blobs):
    events = []

    class Recorder:
        def on_train_start(self, trainer):
            events.append("train_start")

        def on_epoch_start(self, trainer, epoch):
            events.append(f"epoch_start{epoch}")

        def on_before_optimizer_step(self, trainer, step):
            events.append("before_opt")

        def on_step_end(self, trainer, output):
            events.append("step")

        def on_eval_end(self, trainer, metrics):
            events.append("eval")

        def on_epoch_end(self, trainer, epoch):
            events.append(f"epoch_end{epoch}")

        def on_train_end(self, trainer, results):
            events.append("train_end")

    cfg = make_config(epochs=1, batch_size=80).with_tracking(write_run_dir=False).build()
    Trainer(MLP(4, 3), None, cfg, CLS3, callbacks=[Recorder()]).train(blobs[0], blobs[1])
    assert events == [
        "train_start",
        "epoch_start0",
        "before_opt",
        "step",
        "before_opt",
        "step",
        "eval",
        "epoch_end0",
        "train_end",
    ]


def test_unknown_callback_event_is_refused(make_config, blobs):
    class Typo:
        def on_step_ended(self, trainer, output):
            pass

    cfg = make_config(max_steps=1).with_tracking(write_run_dir=False).build()
    with pytest.raises(ValueError, match="unknown event.*on_step_ended"):
        Trainer(MLP(4, 3), None, cfg, CLS3, callbacks=[Typo()]).train(blobs[0], blobs[1])


def test_gradient_monitor_is_called_on_its_interval(make_config, blobs):
    monitor = GradientMonitor(check_interval=3)
    cfg = make_config(max_steps=9).with_tracking(write_run_dir=False).build()
    Trainer(MLP(4, 3), None, cfg, CLS3, gradient_monitor=monitor).train(blobs[0], blobs[1])
    assert len(monitor.history) == 3
    assert all(h.total_norm > 0 for h in monitor.history)


def test_run_directory_records_the_run(make_config, blobs):
    cfg = make_config(epochs=2).with_tracking(experiment_name="exp1", run_name="r1").build()
    model = MLP(4, 3, hidden_dims=(8,))
    results = Trainer(model, None, cfg, CLS3).train(blobs[0], blobs[1])
    run_dir = results["run_dir"]
    assert run_dir.endswith("exp1/r1")
    rerun = TrainingConfig.load(f"{run_dir}/config.yaml")
    assert rerun.tracking.run_name is None  # a re-run as is gets a fresh run directory
    rerun.tracking.run_name = "r1"
    assert rerun == cfg
    facts = json.loads(Path(f"{run_dir}/run.json").read_text())
    assert facts["status"] == "completed" and facts["end_time"] and facts["seed"] == cfg.training.seed
    assert facts["versions"]["torch"] == torch.__version__
    assert len(facts["data"]["train_fingerprint"]) == 64
    assert facts["results"]["steps"] == results["steps"]
    lines = [json.loads(x) for x in Path(f"{run_dir}/logs.jsonl").read_text().splitlines()]
    assert lines[0]["type"] == "start" and lines[-1]["type"] == "end"
    assert sum(1 for r in lines if r["type"] == "eval") == 2
    assert all("time" in r for r in lines)
    fresh = MLP(4, 3, hidden_dims=(8,))
    load_model(fresh, f"{run_dir}/model.safetensors")
    x = blobs[1][0]
    assert torch.equal(fresh.eval()(x), model.eval()(x))


def test_failed_run_is_marked_failed(make_config, blobs):
    class Boom:
        def on_step_end(self, trainer, output):
            if trainer.state.step == 2:
                raise RuntimeError("boom at step 2")

    cfg = make_config(max_steps=5).with_tracking(run_name="bad").build()
    with pytest.raises(RuntimeError, match="boom"):
        Trainer(MLP(4, 3), None, cfg, CLS3, callbacks=[Boom()]).train(blobs[0], blobs[1])
    facts = json.loads(Path(cfg.tracking.output_dir + "/default/bad/run.json").read_text())
    assert facts["status"] == "failed"
    assert "boom at step 2" in facts["error"] and facts["step"] == 2
    # Every log line written before the failure reached the file (the writer thread drains on error).
    lines = [json.loads(x) for x in Path(cfg.tracking.output_dir + "/default/bad/logs.jsonl").read_text().splitlines()]
    assert lines[0]["type"] == "start"
    assert lines[-1]["type"] == "end" and lines[-1]["status"] == "failed" and "boom" in lines[-1]["error"]


def test_existing_run_name_is_refused(make_config, blobs):
    from trainengine import TrainEngineError

    cfg = make_config(max_steps=1).with_tracking(run_name="same").build()
    Trainer(MLP(4, 3), None, cfg, CLS3).train(blobs[0], blobs[1])
    with pytest.raises(TrainEngineError, match="already exists"):
        Trainer(MLP(4, 3), None, cfg, CLS3).train(blobs[0], blobs[1])


def test_lr_follows_the_configured_schedule(make_config, blobs):
    cfg = (
        make_config(max_steps=10, log_interval_steps=1)
        .with_scheduler(name="linear", warmup_steps=0, min_lr_ratio=0.0)
        .with_tracking(write_run_dir=False)
        .build()
    )
    results = Trainer(MLP(4, 3), None, cfg, CLS3).train(blobs[0], blobs[1])
    lrs = [h["lr"] for h in results["history"]["train"]]
    # After step s (1-based) the scheduler has moved to the lr of update s: 1e-2 * (1 - s/9).
    assert lrs == pytest.approx([1e-2 * max(0.0, 1 - s / 9) for s in range(1, 11)], abs=1e-9)


def test_regression_and_language_modeling_builtins(tmp_path):
    from trainengine import TrainingConfigBuilder
    from trainengine.engine import build_from_config

    for dataset, metric in (("diabetes", "val/r2"), ("pystdlib", "val/perplexity")):
        cfg = (
            TrainingConfigBuilder()
            .with_data(dataset=dataset, max_train_samples=64, max_val_samples=32, max_length=32)
            .with_model(d_model=32, n_heads=2, max_seq_len=32)
            .with_training(max_steps=4, batch_size=8)
            .with_tracking(output_dir=str(tmp_path), progress="off")
            .build()
        )
        built = build_from_config(cfg)
        results = Trainer(built.model, built.model_config, cfg, built.task_spec).train(
            built.splits.train, built.splits.val
        )
        assert metric in results["final_metrics"]
        assert results["best_metric_name"] == "val/loss"
        if dataset == "pystdlib":
            assert results["tokens_per_second"] == pytest.approx(results["samples_per_second"] * 32)


def test_fp16_on_cpu_is_refused_with_a_fix(make_config, blobs):
    from trainengine import ConfigError

    with pytest.raises(ConfigError, match="fp16 is not supported on the CPU — use bf16 or fp32"):
        make_config(max_steps=1, precision="fp16").build()  # device cpu: caught by the config


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_fp16_with_auto_device_and_no_cuda_is_refused_at_train(make_config, blobs):
    from trainengine import ConfigError

    cfg = make_config(max_steps=1, precision="fp16", device="auto").build()
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device.*bf16 or fp32"):
        Trainer(MLP(4, 3), None, cfg, CLS3).train(blobs[0], blobs[1])


def test_bf16_autocast_on_cpu_trains(make_config, blobs):
    cfg = make_config(epochs=2, precision="bf16").with_tracking(write_run_dir=False).build()
    results = Trainer(MLP(4, 3, hidden_dims=(16,)), None, cfg, CLS3).train(blobs[0], blobs[1])
    assert results["precision"] == "bf16"
    assert results["best_metric"] > 0.8


@pytest.mark.slow
def test_compile_opt_in_trains_and_saves_canonical_keys(make_config, blobs):
    cfg = make_config(max_steps=4, compile=True).build()
    model = MLP(4, 3, hidden_dims=(8,))
    results = Trainer(model, None, cfg, CLS3).train(blobs[0], blobs[1])
    from safetensors import safe_open

    with safe_open(f"{results['run_dir']}/model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert keys and not any(k.startswith("_orig_mod") for k in keys)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_training(make_config, blobs):
    cfg = make_config(epochs=2, device="auto").with_tracking(write_run_dir=False).build()
    results = Trainer(MLP(4, 3, hidden_dims=(16,)), None, cfg, CLS3).train(blobs[0], blobs[1])
    assert results["device"].startswith("cuda") and results["precision"] == "bf16"
    assert results["best_metric"] > 0.8


def test_config_label_smoothing_reaches_the_loss(make_config, blobs):
    from trainengine import ConfigError

    cfg = make_config(max_steps=1, label_smoothing=0.2).with_tracking(write_run_dir=False).build()
    trainer = Trainer(MLP(4, 3), None, cfg, CLS3)
    assert trainer.task_spec.label_smoothing == 0.2
    assert trainer.task_spec.loss_strategy.label_smoothing == 0.2
    with pytest.raises(ConfigError, match="regression"):
        Trainer(MLP(4, 1), None, cfg, TaskSpec.regression("r"))
    with pytest.raises(ConfigError, match="differs"):
        Trainer(MLP(4, 3), None, cfg, TaskSpec.classification("c", 3, label_smoothing=0.1))


def test_train_state_snapshot_restores_fields_and_rng():
    import random

    import numpy as np

    from trainengine import TrainState

    state = TrainState(step=7, epoch=1, batch_in_epoch=3, best_metric=0.5)
    snap = state.snapshot()
    expected = (random.random(), np.random.rand(), torch.rand(1))
    other = TrainState()
    other.restore(snap)
    assert other == state
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(1), expected[2])


def test_monitor_must_be_a_metric_of_the_task(make_config):
    from trainengine import ConfigError

    cfg = make_config(max_steps=1).with_training(monitor="val/accuracy").build()
    with pytest.raises(ConfigError, match="val/accuracy.*available: val/loss, val/mse"):
        Trainer(MLP(4, 1), None, cfg, TaskSpec.regression("r"))


def test_early_stopping_without_validation_data_is_refused(make_config, blobs):
    from trainengine import ConfigError

    cfg = make_config(max_steps=3, early_stopping_patience=2).build()
    with pytest.raises(ConfigError, match="need validation data"):
        Trainer(MLP(4, 3), None, cfg, CLS3).train(blobs[0])


def test_a_one_shot_iterable_does_not_loop_forever(make_config, blobs):
    from torch.utils.data import IterableDataset

    from trainengine import DataError

    class Once(IterableDataset):
        def __init__(self):
            self.used = False

        def __iter__(self):
            if not self.used:
                self.used = True
                yield from zip(blobs[0][0][:32], blobs[0][1][:32], strict=True)

    cfg = (
        make_config(max_steps=100, eval_every_epoch=False)
        .with_data(shuffle=False, check_overlap=False)
        .with_tracking(write_run_dir=False)
        .build()
    )
    with pytest.raises(DataError, match="no batches in epoch 1"):
        Trainer(MLP(4, 3), None, cfg, CLS3).train(DataLoader(Once(), batch_size=16))


def test_keyboard_interrupt_marks_the_run_interrupted(make_config, blobs):
    class CtrlC:
        def on_step_end(self, trainer, output):
            if trainer.state.step == 3:
                raise KeyboardInterrupt

    cfg = make_config(max_steps=10).with_tracking(run_name="ctrlc").build()
    with pytest.raises(KeyboardInterrupt):
        Trainer(MLP(4, 3), None, cfg, CLS3, callbacks=[CtrlC()]).train(blobs[0], blobs[1])
    facts = json.loads(Path(cfg.tracking.output_dir + "/default/ctrlc/run.json").read_text())
    assert facts["status"] == "interrupted" and facts["step"] == 3


def test_auto_monitor_mode_follows_the_monitored_metric(make_config):
    cfg = make_config(max_steps=1).with_training(monitor="val_loss").build()
    trainer = Trainer(MLP(4, 3), None, cfg, CLS3)
    assert (trainer.monitor, trainer.monitor_mode) == ("val/loss", "min")  # not the task's "max"
    cfg = make_config(max_steps=1).with_training(monitor="val/r2").build()
    assert Trainer(MLP(4, 1), None, cfg, TaskSpec.regression("r")).monitor_mode == "max"


def test_trackers_and_system_metrics_follow_the_run(make_config, blobs, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from trainengine.tracking import read_jsonl

    cfg = make_config(max_steps=10).with_tracking(backends=["tensorboard", "jsonl"], run_name="tracked").build()
    results = Trainer(MLP(4, 3), None, cfg, CLS3).train(blobs[0], blobs[1])
    run_dir = results["run_dir"]
    acc = EventAccumulator(f"{run_dir}/tensorboard")
    acc.Reload()
    assert [s.step for s in acc.Scalars("train/loss")] == [5, 10]
    assert [s.step for s in acc.Scalars("val/accuracy")] == [10]
    tracked = [r for r in read_jsonl(f"{run_dir}/tracker.jsonl") if r["type"] == "metrics"]
    assert tracked[0]["metrics"]["train/loss"] == pytest.approx(results["history"]["train"][0]["loss"])
    logged = [r for r in read_jsonl(f"{run_dir}/logs.jsonl") if r["type"] == "train"]
    for key in ("system/step_time_ms", "system/data_wait_fraction", "system/rss_mib", "train/samples_per_second"):
        assert logged[0][key] > 0 or key == "system/data_wait_fraction"
    assert 0 <= logged[0]["system/data_wait_fraction"] <= 1


def test_every_run_records_itself_in_the_experiment_db(make_config, blobs):
    from trainengine.tracking import ExperimentDB

    cfg = make_config(max_steps=10).with_tracking(run_name="db-ok").build()
    Trainer(MLP(4, 3), None, cfg, CLS3).train(blobs[0], blobs[1])

    class Boom:
        def on_step_end(self, trainer, output):
            if trainer.state.step == 3:
                raise RuntimeError("exploded at step 3")

    bad = make_config(max_steps=10).with_tracking(run_name="db-bad").build()
    with pytest.raises(RuntimeError):
        Trainer(MLP(4, 3), None, bad, CLS3, callbacks=[Boom()]).train(blobs[0], blobs[1])
    with ExperimentDB(f"{cfg.tracking.output_dir}/experiments.db") as db:
        runs = {r["run_name"]: r for r in db.list_runs()}
        ok = db.get_run(runs["db-ok"]["run_id"])
        assert ok["status"] == "completed" and ok["end_time"]
        assert [m["step"] for m in ok["metrics"]["train/loss"]] == [5, 10]
        assert ok["metrics"]["val/accuracy"][-1]["step"] == 10
        assert ok["config"]["training"]["max_steps"] == 10
        failed = db.get_run(runs["db-bad"]["run_id"])
        assert failed["status"] == "failed" and "exploded at step 3" in failed["error"]
        best = db.get_best_run("val/accuracy", mode="max")
        assert best["run_name"] == "db-ok"


def test_gradient_findings_are_logged_metrics(make_config, blobs):
    from trainengine.tracking import read_jsonl

    monitor = GradientMonitor(check_interval=4)
    cfg = make_config(max_steps=8).with_tracking(run_name="grads").build()
    results = Trainer(MLP(4, 3), None, cfg, CLS3, gradient_monitor=monitor).train(blobs[0], blobs[1])
    grads = [r for r in read_jsonl(f"{results['run_dir']}/logs.jsonl") if r["type"] == "gradient"]
    assert [r["step"] for r in grads] == [1, 5]
    assert grads[0]["train/grad_norm"] == pytest.approx(monitor.history[0].total_norm)
    assert grads[0]["severity"] in ("ok", "warning", "critical")


def test_run_saves_a_data_profile_for_drift_checks(make_config, blobs):
    from trainengine.monitoring import DatasetProfile, compare_profiles, profile_dataset

    cfg = make_config(max_steps=2).with_tracking(run_name="prof").build()
    results = Trainer(MLP(4, 3), None, cfg, CLS3).train(blobs[0], blobs[1])
    saved = DatasetProfile.load(f"{results['run_dir']}/data_profile.json")
    shifted = (blobs[1][0] + 3.0, blobs[1][1])
    from trainengine.data import to_dataset

    report = compare_profiles(saved, profile_dataset(to_dataset(shifted), CLS3, reference=saved))
    assert report.is_drift(0.2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fp16_with_grad_scaler_trains_checkpoints_and_resumes(make_config, blobs):
    cfg = (
        make_config(max_steps=12, device="auto", precision="fp16")
        .with_checkpointing(save_every_n_steps=6, save_every_n_epochs=None)
        .with_tracking(run_name="fp16")
        .build()
    )
    results = Trainer(MLP(4, 3, hidden_dims=(16,)), None, cfg, CLS3).train(blobs[0], blobs[1])
    assert results["precision"] == "fp16" and results["steps"] == 12
    assert results["best_metric"] > 0.5
    cfg.training.max_steps = 18
    resumed = Trainer(MLP(4, 3, hidden_dims=(16,)), None, cfg, CLS3).train(
        blobs[0], blobs[1], resume_from=results["run_dir"]
    )
    assert resumed["steps"] == 18
