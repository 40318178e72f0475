"""Built-in models and the model registry.

``build_model("mlp" | "cnn" | "gpt", **kwargs)`` constructs a model by name; new
architectures join with :func:`register_model`.

Example:
    >>> from trainengine.models import build_model, count_parameters
    >>> model = build_model("mlp", input_dim=64, output_dim=10, hidden_dims=(32,))
    >>> count_parameters(model)
    2410
"""

from trainengine.models._cnn import SmallCNN
from trainengine.models._common import count_parameters
from trainengine.models._gpt import GPT, GPTConfig, check_sampling, generate_text, sample_next_token
from trainengine.models._lora import apply_lora, default_target_modules, parameter_counts
from trainengine.models._mlp import MLP
from trainengine.models._registry import ModelBuilder, build_model, list_models, rebuild_model, register_model
from trainengine.models._reward import RewardModel, build_reward_model
from trainengine.models._spec import model_spec, unwrap_model
from trainengine.models._tabular import TabularMLP

__all__ = [
    "generate_text",
    "sample_next_token",
    "check_sampling",
    "MLP",
    "TabularMLP",
    "SmallCNN",
    "GPTConfig",
    "GPT",
    "ModelBuilder",
    "register_model",
    "list_models",
    "build_model",
    "count_parameters",
    "model_spec",
    "rebuild_model",
    "unwrap_model",
    "RewardModel",
    "build_reward_model",
    "apply_lora",
    "default_target_modules",
    "parameter_counts",
]
