"""The configuration and training examples of seed 000, run with only their imports changed.

The seed writes fluent chains over several lines without parentheses (not valid Python as
printed); those are wrapped in parentheses here, nothing else is changed. The checkpoint
recovery example and the "Export Complete Bundle" example run here on a plain ``nn.Sequential``
with a user-built one-group optimizer (the GPT export is in test_seed_000_deploy.py); examples
whose capability arrives with a later issue (MetricsEngine, jobs, ...) are not here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainengine import GradientMonitor, TaskSpec, Trainer, TrainingConfig, TrainingConfigBuilder, get_loss_strategy
from trainengine.data import load_builtin
from trainengine.models import GPT, MLP, GPTConfig


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # config.save() and run directories land here


@pytest.fixture
def digits():
    splits = load_builtin("digits", max_train_samples=400, max_val_samples=200)
    return splits.train, splits.val


def _quiet(config: TrainingConfig) -> TrainingConfig:
    """Keep test output short (the seed's code is unchanged; this only mutes the console)."""
    config.tracking.progress = "off"
    return config


def test_configuration_best_practices():
    # 1. Use presets, not raw config — the anti-pattern still constructs (it is valid, just risky).
    config = TrainingConfig(
        learning_rate=5e-5,
        batch_size=4,
        epochs=10,
        warmup_ratio=0.1,
        weight_decay=0.01,
        max_grad_norm=1.0,
    )
    assert config.training.learning_rate == 5e-5 and config.scheduler.warmup_ratio == 0.1
    config = TrainingConfigBuilder.baseline().build()
    assert config.max_grad_norm == 1.0 and config.scheduler.warmup_ratio > 0 and config.optimizer.weight_decay > 0

    # 2. Customize via builder.
    config = (
        TrainingConfigBuilder.baseline()
        .with_training(learning_rate=1e-4, batch_size=8, epochs=20)
        .build()  # Validates automatically
    )
    assert (config.learning_rate, config.batch_size, config.epochs) == (1e-4, 8, 20)

    # 3. Match config to task complexity.
    config = TrainingConfigBuilder.quick_prototype().build()
    assert config.epochs == 3
    config = TrainingConfigBuilder.baseline().build()
    assert config.epochs == 10 and config.checkpointing.enabled
    config = TrainingConfigBuilder.production().with_training(deterministic=True).build()
    assert config.epochs == 20 and config.deterministic and config.export.enabled
    config = TrainingConfigBuilder.low_memory().build()
    assert config.batch_size == 2 and config.gradient_accumulation_steps == 8

    # 4. Validate configuration early.
    config = TrainingConfigBuilder.baseline().build()
    config.validate()  # Catches errors immediately
    messages = []
    try:
        config = TrainingConfig(learning_rate=-1, batch_size=0, epochs=0)
        config.validate()
    except ValueError as e:
        print(f"Config error: {e}")
        messages.append(str(e))
    assert all(p in messages[0] for p in ("training.learning_rate", "training.batch_size", "training.epochs"))

    # 5. Save configuration for reproducibility.
    config = TrainingConfigBuilder.baseline().build()
    config_path = config.save()  # Auto-generated timestamped filename
    print(f"Config saved: {config_path}")
    assert TrainingConfig.load(config_path) == config

    # Share configurations via git.
    config = TrainingConfigBuilder.baseline().build()
    config_path = config.save("configs/baseline_v1.json")
    config = TrainingConfig.load("configs/baseline_v1.json")
    assert json.loads(Path(config_path).read_text())["training"]["epochs"] == 10


def test_training_best_practices(digits):
    train_data, val_data = digits
    model = MLP(64, 10)
    model_config = None
    config = _quiet(TrainingConfigBuilder.quick_prototype().build())

    # 1. Use Trainer class.
    task_spec = TaskSpec.classification(name="digits", num_classes=10)
    trainer = Trainer(model=model, config=model_config, training_config=config, task_spec=task_spec)
    results = trainer.train(train_data, val_data)
    assert results["best_metric"] > 0.4  # well above chance (0.1) after 75 steps

    # 2. Specify task early.
    with pytest.raises(ValueError, match="TaskSpec"):
        trainer = Trainer(model, config, config, None)  # task_spec=None
    task_spec = TaskSpec.language_modeling(name="wikitext")
    task_spec = TaskSpec.classification(name="imdb", num_classes=2)
    task_spec = TaskSpec.vision_tiny()
    assert task_spec.task_type == "vision"

    # 4. Monitor gradient health.
    monitor = GradientMonitor(check_interval=10, norm_threshold_warning=1.0, norm_threshold_critical=10.0)
    task_spec = TaskSpec.classification(name="digits", num_classes=10)
    trainer = Trainer(
        model=model, config=model_config, training_config=config, task_spec=task_spec, gradient_monitor=monitor
    )
    # The seed trains the same `model` a second time: the engine says so (it continues from trained weights).
    with pytest.warns(UserWarning, match="already trained"):
        results = trainer.train(train_data, val_data)
    assert monitor.history, "the monitor was consulted during training"

    # 5. Gradient accumulation for effective batch sizes.
    config = (
        TrainingConfigBuilder.baseline()
        .with_optimizer(
            gradient_accumulation_steps=8  # Effective batch = 32
        )
        .build()
    )
    assert config.training.gradient_accumulation_steps == 8


def test_deterministic_mode_gives_identical_runs(digits):
    train_data, val_data = digits
    config = TrainingConfigBuilder.production().with_training(deterministic=True).build()
    config = _quiet(config)
    config.training.epochs = 2
    config.export.enabled = False
    runs = []
    for _ in range(2):
        import torch

        torch.manual_seed(0)
        trainer = Trainer(MLP(64, 10), None, config, TaskSpec.classification(name="digits", num_classes=10))
        results1 = trainer.train(train_data, val_data)
        runs.append([h["loss"] for h in results1["history"]["train"]])
    assert runs[0] == runs[1]


def test_language_model_with_model_config():
    splits = load_builtin("pystdlib", max_length=32, max_train_samples=64, max_val_samples=16)
    model_config = GPTConfig(vocab_size=256, max_seq_len=32, d_model=32, n_heads=2, n_layers=1)
    model = GPT(model_config)
    config = _quiet(TrainingConfigBuilder.quick_prototype().with_training(max_steps=4).build())
    task_spec = TaskSpec.language_modeling(name="wikitext")
    trainer = Trainer(model, model_config, config, task_spec)
    results = trainer.train(splits.train, splits.val)
    run = json.loads((Path(results["run_dir"]) / "run.json").read_text())
    assert run["model"]["config"]["d_model"] == 32


def test_troubleshooting_recipes(digits):
    import torch

    train_data, val_data = digits
    model = MLP(64, 10)
    task_spec = TaskSpec.classification(name="digits", num_classes=10)
    x, y = next(iter(torch.utils.data.DataLoader(train_data, batch_size=8)))
    torch.nn.functional.cross_entropy(model(x), y).backward()

    # 1. Check gradient health.
    monitor = GradientMonitor()
    health = monitor.check_step(model)
    if health.has_vanishing_gradients:
        print(f"Gradients too small: {health.min_norm:.6f}")
    if health.has_exploding_gradients:
        print(f"Gradients too large: {health.max_norm:.2f}")
    assert health.max_norm >= health.min_norm > 0

    # 2. Check loss strategy.
    logits, labels = model(x), y
    strategy = get_loss_strategy(task_spec.task_type)
    strategy.validate_inputs(logits, labels)
    with pytest.raises(ValueError, match=r"int64 labels \[B\]; got labels float32 \[8, 2\]"):
        strategy.validate_inputs(logits, torch.zeros(8, 2))

    # 4. Quick diagnostic training on 100 samples.
    train_list = [train_data[i] for i in range(len(train_data))]
    val_list = [val_data[i] for i in range(len(val_data))]
    config = _quiet(TrainingConfigBuilder.quick_prototype().build())
    trainer = Trainer(model, None, config, task_spec)
    results = trainer.train(train_list[:100], val_list[:100])  # 100 samples only
    assert results["history"]["train"][0]["loss"] > results["history"]["train"][-1]["loss"]

    # Checkpoint configuration builds (the CheckpointManager arrives with checkpoints).
    config = (
        TrainingConfigBuilder.baseline()
        .with_checkpointing(checkpoint_dir="./checkpoints", save_every_n_epochs=1)
        .build()
    )
    assert config.checkpointing.checkpoint_dir == "./checkpoints"


def _user_mlp():
    """What a user writes without the model zoo: a plain nn.Sequential (scaffolding)."""
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))


def test_checkpoint_and_recovery_best_practices(digits):
    import torch

    from trainengine.checkpoint import CheckpointManager

    train_data, val_data = digits
    model = _user_mlp()
    task_spec = TaskSpec.classification(name="digits", num_classes=10)

    # 1. Enable checkpoint management.
    config = (
        TrainingConfigBuilder.baseline()
        .with_checkpointing(checkpoint_dir="./checkpoints", save_every_n_epochs=1)
        .build()
    )
    config = _quiet(config)
    config.training.epochs = 2  # scaffolding: the seed's 10 epochs, shortened

    # seed: Trainer(..., training_config=config)
    trainer = Trainer(model=model, config=None, task_spec=task_spec, training_config=config)
    results = trainer.train(train_data, val_data)

    # 2. Resume from checkpoint, into an optimizer and scheduler the user built (one parameter
    # group; the engine trained with decay / no-decay groups).
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)  # the seed leaves it to the user
    user_lr = optimizer.param_groups[0]["lr"]

    checkpoint_manager = CheckpointManager("checkpoints")

    # Load best checkpoint
    best_path = checkpoint_manager.get_best_checkpoint()
    metadata = checkpoint_manager.load_checkpoint(path=best_path, model=model, optimizer=optimizer, scheduler=scheduler)

    # Resume at epoch after best
    start_epoch = metadata.epoch + 1

    infos = checkpoint_manager.list_checkpoints()
    print("checkpoints (step, epoch):", [(i.step, i.epoch) for i in infos], "start_epoch:", start_epoch)
    assert len(infos) == 2 and best_path == min(infos, key=lambda i: i.metrics["val/loss"]).path
    assert metadata.step == max(i.step for i in infos if i.path == best_path)
    assert len(trainer.optimizer.param_groups) == 2, "the engine's layout differs from the user's"
    for p in model.parameters():  # every parameter got its own moments (shapes prove the mapping)
        state = optimizer.state[p]
        assert float(state["step"]) == metadata.step and state["exp_avg"].shape == p.shape
    # Warmup + cosine: the schedule's position carries over onto the user's own base lr.
    assert scheduler.last_epoch == metadata.step and 0 < optimizer.param_groups[0]["lr"] < user_lr

    trainer = Trainer(model, None, config, task_spec)  # seed: Trainer(...)
    results = trainer.train(train_data, val_data)  # seed: trainer.train(...)
    assert results["history"]["train"]

    # 3. Monitor checkpoint disk usage.
    checkpoint_manager = CheckpointManager(
        "checkpoints",
        keep_best_k=3,  # Keep top 3 by metric
        keep_last_n=5,  # Keep last 5 regardless
        save_interval_epochs=5,  # Don't save every epoch
    )
    assert not checkpoint_manager.should_save(epoch_end=3) and checkpoint_manager.should_save(epoch_end=4)


def test_export_complete_bundle_of_a_plain_sequential():
    pytest.importorskip("onnxruntime")
    from pathlib import Path

    import numpy as np
    import onnxruntime

    from trainengine import create_export_bundle
    from trainengine.export import verify_bundle

    model = _user_mlp()
    model_config = None
    task_spec = TaskSpec.classification(name="digits", num_classes=10)
    config = TrainingConfigBuilder.baseline().build()

    export_dir = create_export_bundle(
        model=model,
        config=model_config,
        task_spec=task_spec,
        training_config=config,
        formats=["onnx", "torchscript", "pytorch"],
        output_dir="./exports",
    )

    names = {p.name for p in Path(export_dir).iterdir()}
    assert {
        "model.onnx",
        "model.torchscript.pt",
        "model.safetensors",
        "task_spec.json",
        "training_config.yaml",
        "inference.py",
        "Dockerfile",
        "README.md",
    } <= names
    assert verify_bundle(export_dir) == []
    manifest = json.loads((Path(export_dir) / "manifest.json").read_text())
    assert manifest["input"]["shape"] == [None, 64]  # read off the first nn.Linear
    import torch

    x = torch.randn(5, 64)  # a batch size the export never saw
    session = onnxruntime.InferenceSession(str(Path(export_dir) / "model.onnx"))
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(out, model(x).detach().numpy(), atol=1e-5)
