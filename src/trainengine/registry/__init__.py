"""Model registry: versioned models with lineage, aliases, promotion gates, rollback and history.

``ModelRegistry`` keeps one row per ``name:version`` in SQLite (a file several processes may share)
or a SQL server, and a copy of each registered artifact (checkpoint folder, run directory,
``.safetensors`` / ``.pt`` file, export bundle, or a fitted scikit-learn pipeline's ``model/``
folder) under ``<artifact_root>/<name>/<version>/``, so that checkpoint rotation cannot delete a
registered model. Each version records its artifact's
SHA-256 (checked again before loading), metrics, tags, and lineage: run id, git commit, data
fingerprint, training config, task type and the model spec that rebuilds it.
``ModelRecord.load()`` gives back the model of any kind: a torch module, or for a ``sklearn``
artifact the fitted pipeline (loaded through skops' trusted-types check, never pickle).

Aliases (``production``, ``staging``, ...) point at one version per model name; promotions can be
gated on metrics (``{"production": {"val_loss": "<= 0.40"}}``), every move is recorded, and
``rollback`` gives an alias back to its previous holder.

Example:
    >>> import tempfile, torch
    >>> from trainengine.models import build_model
    >>> from trainengine.registry import ModelRegistry
    >>> folder = tempfile.mkdtemp()
    >>> net = build_model("mlp", input_dim=4, output_dim=2, hidden_dims=(8,))
    >>> torch.save(net.state_dict(), f"{folder}/weights.pt")
    >>> registry = ModelRegistry(f"{folder}/models.db", gates={"production": {"val_loss": "<= 0.40"}})
    >>> v1 = registry.register_model(
    ...     "tiny",
    ...     "1.0.0",
    ...     f"{folder}/weights.pt",
    ...     metrics={"val_loss": 0.38},
    ...     model_config={"architecture": "mlp", "kwargs": {"input_dim": 4, "output_dim": 2, "hidden_dims": [8]}},
    ... )
    >>> v2 = registry.register_model("tiny", "1.1.0", f"{folder}/weights.pt", metrics={"val_loss": 0.35})
    >>> _ = registry.promote_model(v1, "production")
    >>> _ = registry.promote_model(v2, "production")
    >>> registry.rollback("tiny", "production").model_id
    'tiny:1.0.0'
    >>> model = registry.resolve("tiny@production").load()  # hash checked, rebuilt from its spec, eval mode
    >>> type(model).__name__, model.training
    ('MLP', False)
    >>> registry.close()
"""

from trainengine.registry._artifacts import ArtifactStore
from trainengine.registry._errors import ModelNotFoundError, PromotionGateError, RegistryError, RegistryValueError
from trainengine.registry._gates import SignificanceRule, SignificanceTest, SignificanceVerdict
from trainengine.registry._record import ModelRecord
from trainengine.registry._refs import check_name, check_version, parse_model_ref
from trainengine.registry._registry import ModelRegistry

__all__ = [
    "ModelRegistry",
    "ArtifactStore",
    "ModelRecord",
    "PromotionGateError",
    "ModelNotFoundError",
    "RegistryError",
    "RegistryValueError",
    "parse_model_ref",
    "check_name",
    "check_version",
    "SignificanceRule",
    "SignificanceTest",
    "SignificanceVerdict",
]
