"""Seed 001's configuration API: ``get_lora_config()`` and friends, over :class:`TrainingConfig`.

Seed 001 fine-tunes a process reward model with LoRA and writes its workflow as::

    from config import get_lora_config

    config = get_lora_config()
    config.experiment_name = "quick_exp"
    config.training.max_steps = 2000
    config.save("quick_exp.json")

With ``from trainengine.compat.seed001 import get_lora_config`` the same lines give a validated
:class:`~trainengine.config.TrainingConfig` (the ``prm_lora`` preset). Seed 001's attribute
spellings (``config.training.per_device_train_batch_size``, ``config.training.eval_steps``,
``config.training.lr_scheduler_type``, ``config.training.warmup_steps``, ...) are the config
alias table's; ``config.model.mlp_hidden_dims``, ``config.lora.lora_r`` and
``config.data.use_prm800k`` are the engine's own fields. ``trainengine train-lora --config
quick_exp.json`` trains it and ``trainengine evaluate --checkpoint
outputs/quick_exp/checkpoint_step_2000 --output_dir outputs/eval_quick`` evaluates it.
"""

from __future__ import annotations

from trainengine.config import TrainingConfig, get_preset

__all__ = ["get_lora_config", "get_full_finetune_config", "get_frozen_backbone_config"]


def get_lora_config() -> TrainingConfig:
    """Seed 001's LoRA defaults: lr 1e-4, r 16, alpha 32, dropout 0.1, MLP ``[1024, 256]`` with
    dropout 0.1, cosine with 500 warmup steps, weight decay 0.01, ``max_grad_norm`` 1.0,
    evaluation every 100 steps, ``max_length`` 2048, 10 steps per example, effective batch 16.

    ``model.name_or_path`` (the backbone) and the data paths are left for you to set.

    Example:
        >>> config = get_lora_config()
        >>> config.lora.lora_r, config.training.learning_rate, config.training.per_device_train_batch_size
        (16, 0.0001, 4)
    """
    return TrainingConfig(**get_preset("prm_lora"))


def get_full_finetune_config() -> TrainingConfig:
    """The same run fine-tuning every backbone weight: LoRA off, seed 001's full fine-tuning lr 2e-5.

    Example:
        >>> config = get_full_finetune_config()
        >>> config.lora.enabled, config.training.learning_rate
        (False, 2e-05)
    """
    config = get_lora_config()
    config.lora.enabled = False
    config.training.learning_rate = 2e-5
    config.tracking.experiment_name = "prm_full"
    return config


def get_frozen_backbone_config() -> TrainingConfig:
    """The head alone on a frozen backbone (feature extraction): lr 1e-3.

    Example:
        >>> config = get_frozen_backbone_config()
        >>> config.model.freeze_backbone, config.lora.enabled
        (True, False)
    """
    config = get_lora_config()
    config.lora.enabled = False
    config.model.freeze_backbone = True
    config.training.learning_rate = 1e-3
    config.tracking.experiment_name = "prm_frozen"
    return config
