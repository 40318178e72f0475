"""The PyTorch runtime of ``trainengine serve --runtime torch``: the bundle's weights in the model class.

The model is rebuilt from ``model_config.json["spec"]`` (:func:`trainengine.models.rebuild_model`)
and loaded from ``model.safetensors`` (:func:`trainengine.checkpoint.load_model_state`); inputs
and outputs go through the same :class:`~trainengine.serve._runtime.Predictor` checks and
formatting as the ONNX runtime, so both answer alike (within float tolerance).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from trainengine.errors import ExportError
from trainengine.serve._runtime import MAX_NEW_TOKENS, BundleError, Predictor, load_bundle

__all__ = ["TorchPredictor"]


class TorchPredictor(Predictor):
    """Predictions from a bundle's ``model.safetensors`` + ``model_config.json`` in PyTorch (CPU).

    Args:
        bundle_dir: The bundle's folder; every file is verified against the manifest first.
        device: Where the model runs (default CPU).
        max_new_tokens: Completion length of language-model predictions.
        num_threads: ``torch.set_num_threads`` for the process (None: torch's default).

    Raises:
        ExportError: The bundle has no PyTorch weights or no model spec to rebuild the model from,
            or fails verification.

    Example:
        >>> predictor = TorchPredictor("bundle/")  # doctest: +SKIP
        >>> predictor.predict([[0.0] * 64])[0]["class"]  # doctest: +SKIP
        3
    """

    runtime = "torch"

    def __init__(
        self,
        bundle_dir: str | os.PathLike[str],
        *,
        device: str | torch.device = "cpu",
        max_new_tokens: int = MAX_NEW_TOKENS,
        num_threads: int | None = None,
    ) -> None:
        from safetensors.torch import load_file

        from trainengine.checkpoint import load_model_state
        from trainengine.checkpoint._keys import model_tensors
        from trainengine.models import rebuild_model

        try:
            bundle = load_bundle(bundle_dir)
        except BundleError as exc:
            raise ExportError(str(exc)) from None
        super().__init__(bundle, max_new_tokens=max_new_tokens)
        listed = set(self.manifest.get("files") or {})
        missing = [f for f in ("model.safetensors", "model_config.json") if f not in listed]
        if missing:
            raise ExportError(
                f"bundle {bundle.path} has no {' and '.join(missing)}: runtime 'torch' needs the 'pytorch' "
                "format; re-export with formats including 'pytorch' or serve with runtime 'onnx'"
            )
        config = json.loads((bundle.path / "model_config.json").read_text(encoding="utf-8"))
        spec = config.get("spec") or self.manifest.get("model_spec")
        if not spec:
            raise ExportError(
                f'bundle {bundle.path} has no model spec (model_config.json "spec" is null), so the model '
                "class cannot be rebuilt; serve it with runtime 'onnx'"
            )
        _load_training_plugins(bundle.path)
        self.model = rebuild_model(spec)
        state = load_file(str(bundle.path / "model.safetensors"))
        # Tied weights (a GPT's embedding and head) may be stored once: fill in the other name.
        _, aliases = model_tensors(self.model)
        for name, original in aliases.items():
            if name not in state and original in state:
                state[name] = state[original]
        load_model_state(self.model, state)
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        self.device = torch.device(device)
        self.model.to(self.device).eval()

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Run the model without gradients; returns float32 numpy outputs."""
        with torch.inference_mode():
            out = self.model(torch.from_numpy(np.ascontiguousarray(x)).to(self.device))
        return out.float().cpu().numpy()


def _load_training_plugins(bundle_path: Path) -> None:
    """Import the plugins the bundle's training config names: a model they register is rebuilt
    from its spec (entry-point plugins load by themselves)."""
    from trainengine.config import load_yaml
    from trainengine.registries import load_plugins

    path = bundle_path / "training_config.yaml"
    data = load_yaml(path.read_text(encoding="utf-8")) if path.is_file() else None
    plugins = data.get("plugins") if isinstance(data, dict) else None
    if isinstance(plugins, list) and plugins:
        load_plugins(plugins)
