"""Seed 000's model-registry examples, run with only their imports changed.

"Use Model Registry for Versioning" runs verbatim. Its last line looks up version 0.9.5, the
version the example rolls back to, so the registry holds a 0.9.5 registered earlier (the setup
below). "Use Model Registry for Shared Models" names ``/shared/models.db``: the one change is that
path, to a temporary folder (``/shared`` is not writable in tests).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainengine.models import GPT, GPTConfig
from trainengine.registry import ModelRegistry

GPT_CONFIG = GPTConfig(vocab_size=64, max_seq_len=16, d_model=16, n_heads=2, n_layers=1)


@pytest.fixture
def seed_dir(tmp_path, monkeypatch):
    """checkpoints/epoch_5.pt and checkpoints/epoch_10.pt: state dicts of a real (tiny) GPT."""
    monkeypatch.chdir(tmp_path)
    Path("checkpoints").mkdir()
    models = {}
    for epoch in (5, 10):
        torch.manual_seed(epoch)
        models[epoch] = GPT(GPT_CONFIG).eval()
        torch.save(models[epoch].state_dict(), f"checkpoints/epoch_{epoch}.pt")
    return models


def test_use_model_registry_for_versioning(seed_dir):
    with ModelRegistry("models.db") as earlier:  # the version an earlier release registered
        earlier.register_model(
            "transformer-gpt",
            "0.9.5",
            "checkpoints/epoch_5.pt",
            task_type="language_modeling",
            metrics={"val_loss": 0.45, "perplexity": 1.57},
        )

    # --- seed 000, "2. Use Model Registry for Versioning", verbatim -------------------------
    registry = ModelRegistry("models.db")

    model_id = registry.register_model(
        name="transformer-gpt",
        version="1.0.0",
        checkpoint_path="checkpoints/epoch_10.pt",
        task_type="language_modeling",
        metrics={"val_loss": 0.38, "perplexity": 1.46},
    )

    # Tag for deployment
    registry.promote_model(model_id, "production")
    registry.promote_model(model_id, "staging")

    # Load production model
    prod_model = registry.get_model(tag="production")

    # Rollback if needed
    old_model = registry.get_model(version="0.9.5")
    # -----------------------------------------------------------------------------------------

    assert model_id == "transformer-gpt:1.0.0"
    assert prod_model.model_id == model_id and prod_model.aliases == ("production", "staging")
    assert prod_model.metrics == {"val_loss": 0.38, "perplexity": 1.46} and prod_model.task_type == "language_modeling"
    assert old_model.version == "0.9.5" and old_model.aliases == ()
    # The registered copy survives the training run's checkpoint rotation.
    Path("checkpoints/epoch_10.pt").unlink()
    tokens = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
    loaded = prod_model.load(model=GPT(GPT_CONFIG))
    with torch.no_grad():
        assert torch.equal(loaded(tokens), seed_dir[10](tokens))  # (B, T, V) logits
    # And rolling production back goes to the previous holder once there is one.
    registry.promote_model("transformer-gpt:0.9.5", "production")
    assert registry.rollback("transformer-gpt", "production").model_id == model_id
    registry.close()


def test_use_model_registry_for_shared_models(seed_dir, tmp_path):
    shared = str(tmp_path / "shared" / "models.db")  # seed: '/shared/models.db'

    # --- seed 000, "1. Use Model Registry for Shared Models" (path changed only) ---------------
    # Centralized registry accessible to team
    registry = ModelRegistry(shared)

    # Alice: Register her best model
    registry.register_model(
        name="transformer-gpt", version="1.0.0", checkpoint_path="./checkpoints/epoch_10.pt", metrics={"val_loss": 0.38}
    )

    # Bob: Load Alice's model
    bob_registry = ModelRegistry(shared)
    model = bob_registry.get_model(name="transformer-gpt", version="1.0.0")
    # -----------------------------------------------------------------------------------------

    assert model.model_id == "transformer-gpt:1.0.0" and model.metrics == {"val_loss": 0.38}
    assert model.artifact_path.is_relative_to(tmp_path / "shared" / "models-artifacts")  # next to the shared DB
    weights = model.load(model=GPT(GPT_CONFIG)).state_dict()
    assert all(torch.equal(weights[k], v) for k, v in seed_dir[10].state_dict().items())
    registry.close(), bob_registry.close()
