"""Export bundles: the model in verified formats plus everything needed to run and serve it.

:func:`create_export_bundle` writes ``exports/<name>_<timestamp>/`` with ONNX / TorchScript /
torch.export / safetensors files (each checked against PyTorch at export time), the task spec,
training config, monitoring thresholds (and ``prometheus/alerts.yml``, Prometheus alerting rules
with them: :func:`prometheus_rules`), a drift reference profile, a standalone
``inference.py`` (numpy + onnxruntime), ``server.py``, a ``Dockerfile``, a ``README.md`` and a
``manifest.json`` holding the SHA-256 of every file. :func:`export_checkpoint` does the same
from a checkpoint or run directory, :func:`verify_bundle` re-checks a bundle's files.

Example:
    >>> import tempfile
    >>> from trainengine.models import build_model
    >>> from trainengine.tasks import TaskSpec
    >>> bundle = create_export_bundle(
    ...     build_model("mlp", input_dim=4, output_dim=2, hidden_dims=(8,)),
    ...     task_spec=TaskSpec.classification("toy", 2),
    ...     formats=["pytorch"],
    ...     output_dir=tempfile.mkdtemp(),
    ... )
    >>> verify_bundle(bundle)
    []
"""

from trainengine.export._bundle import QUANTIZATION_METHODS, create_export_bundle
from trainengine.export._files import bundle_sha256, verify_bundle
from trainengine.export._formats import FORMATS, ExportContext
from trainengine.export._prometheus import prometheus_rules, prometheus_rules_yaml
from trainengine.export._sources import export_checkpoint, export_registered
from trainengine.registries import register_export_format

__all__ = [
    "create_export_bundle",
    "export_checkpoint",
    "export_registered",
    "verify_bundle",
    "bundle_sha256",
    "FORMATS",
    "ExportContext",
    "register_export_format",
    "QUANTIZATION_METHODS",
    "prometheus_rules",
    "prometheus_rules_yaml",
]
