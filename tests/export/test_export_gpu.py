"""A model trained on a GPU (bf16 autocast, torch.compile) exports to CPU formats that match it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from trainengine import Trainer, TrainingConfigBuilder
from trainengine.data import load_builtin
from trainengine.export import create_export_bundle, verify_bundle
from trainengine.models import build_model
from trainengine.tasks import TaskSpec

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
ort = pytest.importorskip("onnxruntime")


def test_compiled_bf16_gpu_model_exports_and_stays_on_gpu(tmp_path):
    config = (
        TrainingConfigBuilder.quick_prototype()
        .with_training(max_steps=60, device="cuda", precision="bf16", compile=True, learning_rate=3e-3)
        .with_tracking(output_dir=str(tmp_path / "runs"), progress="off", experiment_db=False)
        .build()
    )
    splits = load_builtin("digits")
    model = build_model("mlp", input_dim=64, output_dim=10, hidden_dims=(64,))
    trainer = Trainer(model, None, config, TaskSpec.classification("digits", 10))
    trainer.train(splits.train, splits.val)
    trained = trainer.model.eval()  # compiled wrapper on the GPU; eval: no dropout
    assert next(trained.parameters()).device.type == "cuda"
    bundle = create_export_bundle(
        trained,
        task_spec=TaskSpec.classification("digits", 10),
        formats=["onnx", "torchscript", "pytorch"],
        output_dir=tmp_path / "exports",
        reference_data=splits.train,
    )
    assert verify_bundle(bundle) == []
    assert next(trained.parameters()).device.type == "cuda"  # the trained model was not moved
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["formats"]["onnx"]["max_abs_diff"] < 1e-4
    x = torch.stack([splits.val[i][0] for i in range(32)])
    with torch.no_grad():
        gpu_logits = trained(x.cuda()).float().cpu().numpy()  # fp32 eval on the GPU
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    cpu_logits = session.run(None, {"input": x.numpy()})[0]
    assert np.abs(cpu_logits - gpu_logits).max() < 1e-3  # GPU vs CPU kernels (TF32 off by default)
    assert (cpu_logits.argmax(1) == gpu_logits.argmax(1)).all()
