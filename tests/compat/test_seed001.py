"""Seed 001's workflow as written: get_lora_config, its attribute spellings, config.save, the
train_lora.py flags (one iteration of the learning-rate and LoRA-rank loops), evaluate.py on a
checkpoint_step_<N> folder and the "compare results" snippet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainengine.cli.main import main
from trainengine.compat.seed001 import get_frozen_backbone_config, get_full_finetune_config, get_lora_config
from trainengine.config import TrainingConfig
from trainengine.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "reward"
TINY_LLAMA = {
    "model_type": "llama",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 512,
}


def test_get_lora_config_has_seed_001_defaults():
    config = get_lora_config()
    assert (config.lora.enabled, config.lora.lora_r, config.lora.lora_alpha, config.lora.lora_dropout) == (
        True,
        16,
        32,
        0.1,
    )
    assert config.training.learning_rate == 1e-4
    assert config.model.mlp_hidden_dims == [1024, 256] and config.model.mlp_dropout == 0.1
    assert config.training.lr_scheduler_type == "cosine" and config.training.warmup_steps == 500
    assert config.training.weight_decay == 0.01 and config.training.max_grad_norm == 1.0
    assert config.training.eval_steps == 100
    assert config.data.max_length == 2048 and config.data.max_steps_per_example == 10
    effective = config.training.per_device_train_batch_size * config.training.gradient_accumulation_steps
    assert effective == 16
    assert config.model.name_or_path is None  # left for the user
    assert (
        get_full_finetune_config().lora.enabled is False and get_full_finetune_config().training.learning_rate == 2e-5
    )
    assert get_frozen_backbone_config().model.freeze_backbone is True


def test_seed_001_attribute_spellings_and_json_round_trip(tmp_path):
    config = get_lora_config()
    # The "Progressive Training", "Batch Size Strategy", "Dataset Selection" and "MLP Head" lines.
    config.experiment_name = "quick_exp"
    config.training.max_steps = 2000
    config.data.max_train_samples = 5000
    config.training.per_device_train_batch_size = 8
    config.training.gradient_accumulation_steps = 2
    config.training.warmup_ratio = 0.1
    config.training.eval_steps = 50
    config.model.mlp_hidden_dims = [2048, 1024, 512]
    config.model.mlp_dropout = 0.15
    config.lora.lora_r, config.lora.lora_alpha = 32, 64
    config.data.use_prm800k, config.data.use_reveal, config.data.use_eqasc = False, True, True
    config.data.reveal_weight, config.data.eqasc_weight = 0.5, 0.5
    config.data.prm800k_phase = 2
    config.training.seed = 42
    path = tmp_path / "quick_exp.json"
    config.save(str(path))
    again = TrainingConfig.load(path)
    assert again == config
    assert again.tracking.experiment_name == "quick_exp" and again.training.batch_size == 8
    assert again.scheduler.warmup_ratio == 0.1 and again.training.eval_interval_steps == 50
    assert json.loads(path.read_text())["lora"]["lora_r"] == 32  # the engine's own names on disk


def test_lora_without_a_backbone_names_the_field(tmp_path):
    config = get_lora_config()
    config.data.prm800k_path = str(FIXTURES / "prm800k")
    config.tracking.output_dir = str(tmp_path)
    from trainengine.engine import build_from_config

    with pytest.raises(ConfigError, match=r"model\.name_or_path"):
        build_from_config(config)
    config.model.architecture = "mlp"
    with pytest.raises(ConfigError, match="lora.enabled"):
        build_from_config(config)


def _tiny_config(path: Path) -> Path:
    config = get_lora_config()
    config.model.backbone_config = TINY_LLAMA
    config.model.mlp_hidden_dims = [16]
    config.data.prm800k_path = str(FIXTURES / "prm800k")
    config.data.reveal_path = str(FIXTURES / "reveal.csv")
    config.data.eqasc_path = str(FIXTURES / "eqasc.jsonl")
    config.data.max_length = 256
    config.training.per_device_train_batch_size = 4
    config.training.gradient_accumulation_steps = 1
    config.training.warmup_steps = 0
    config.training.eval_steps = 4
    config.checkpointing.save_every_n_steps = 4
    config.tracking.progress = "off"
    config.save(str(path))
    return path


def test_seed_001_loops_train_evaluate_and_compare(tmp_path, capsys):
    config = _tiny_config(tmp_path / "quick_exp.json")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    # `for lr in 5e-5 1e-4 5e-4; do python train_lora.py --experiment_name lr_${lr} --learning_rate ${lr}
    #  --max_steps 2000; done` — one iteration, as a fresh process the way the loop runs it.
    lr = "5e-4"
    subprocess.run(
        [sys.executable, "-m", "trainengine", "train-lora", "--config", str(config), "--experiment_name",
         f"lr_{lr}", "--learning_rate", lr, "--max_steps", "8"],
        cwd=tmp_path, env=env, check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    run = tmp_path / "outputs" / f"lr_{lr}"
    assert (run / "checkpoint_step_8").is_dir() and (run / "checkpoint_step_4").is_dir()
    facts = json.loads(next(run.glob("*/run.json")).read_text())
    assert facts["config"]["training"]["learning_rate"] == 5e-4 if "config" in facts else True
    trained = facts["model"]
    assert trained["num_trainable_parameters"] < trained["num_parameters"] / 2  # adapters + head only

    # `for r in 8 16 32; do python train_lora.py --experiment_name hparam_r_${r} --lora_r ${r}
    #  --lora_alpha $((r * 2)) --max_steps 3000; done` — one iteration, in process.
    os.chdir(tmp_path)
    code = main(["train-lora", "--config", str(config), "--experiment_name", "hparam_r_8", "--lora_r", "8",
                 "--lora_alpha", "16", "--max_steps", "4"])  # fmt: skip
    assert code == 0
    rank_run = next((tmp_path / "outputs" / "hparam_r_8").glob("*/run.json"))
    assert json.loads(rank_run.read_text())["model"]["spec"]["kwargs"]["lora"]["r"] == 8

    # `python evaluate.py --checkpoint outputs/exp/checkpoint_step_N --output_dir outputs/eval_...`
    for name, ckpt in ((f"eval_lr_{lr}", run / "checkpoint_step_8"), ("eval_r_8", None)):
        ckpt = ckpt or next((tmp_path / "outputs" / "hparam_r_8").glob("checkpoint_step_*"))
        assert main(["evaluate", "--checkpoint", str(ckpt), "--output_dir", f"outputs/{name}",
                     "--n-bootstrap", "50"]) == 0  # fmt: skip
    metrics = json.loads((tmp_path / "outputs" / f"eval_lr_{lr}" / "eval_metrics.json").read_text())
    assert set(metrics["overall"]) >= {"mse", "mae", "r2", "ece"}
    # Per data set: validation (PRM800K, EQASC) and the test-only REVEAL split.
    assert set(metrics["per_dataset"]) == {"prm800k", "eqasc", "reveal"}
    assert sum(d["n"] for d in metrics["per_dataset"].values()) == metrics["n"]
    assert (tmp_path / "outputs" / f"eval_lr_{lr}" / "reliability.png").is_file()

    # The "Compare results" snippet, as written (with the two evaluations made above).
    results = {}
    for key in [f"lr_{lr}", "r_8"]:
        with open(f"outputs/eval_{key}/eval_metrics.json") as f:
            results[key] = json.load(f)
    best = min(results.keys(), key=lambda k: results[k]["overall"]["mse"])
    assert best in results and all(0 <= r["overall"]["mse"] <= 1 for r in results.values())

    # Several checkpoints at once: the best is named.
    capsys.readouterr()
    both = ["--checkpoint", str(run / "checkpoint_step_4"), "--checkpoint", str(run / "checkpoint_step_8")]
    assert main(["evaluate", *both, "--output_dir", "outputs/compare", "--n-bootstrap", "50"]) == 0
    comparison = json.loads((tmp_path / "outputs" / "compare" / "comparison.json").read_text())
    assert comparison["best"] in {"checkpoint_step_4", "checkpoint_step_8"}
    assert "best by" in capsys.readouterr().out


def test_the_shipped_prm_lora_config_validates():
    config = TrainingConfig.load(REPO / "configs" / "prm_lora.yaml")
    assert config.lora.enabled and config.model.architecture == "reward_model"
    assert config.data.dataset == "prm" and config.export.formats == ["pytorch"]
