"""TabularMLP: embeddings per category code, argument checks, the registry and ONNX export."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from trainengine.errors import ConfigError, DataError
from trainengine.models import TabularMLP, build_model, model_spec, rebuild_model


def test_embedding_sizes_follow_cardinalities() -> None:
    model = TabularMLP(dense_width=3, cardinalities=[4, 100, 7], output_dim=2, hidden_dims=(8,))
    # Default width min(16, (card + 1) // 2); the MLP sees dense + all embedding widths.
    assert [(e.num_embeddings, e.embedding_dim) for e in model.embeddings] == [(4, 2), (100, 16), (7, 4)]
    assert model.mlp.input_dim == 3 + 2 + 16 + 4
    fixed = TabularMLP(3, [4, 100], 2, hidden_dims=(8,), embedding_dim=5)
    assert [e.embedding_dim for e in fixed.embeddings] == [5, 5]


def test_codes_select_embedding_rows() -> None:
    torch.manual_seed(0)
    model = TabularMLP(dense_width=1, cardinalities=[5], output_dim=3, hidden_dims=(), dropout=0.0).eval()
    linear = model.mlp.net[0]
    emb = model.embeddings[0].weight  # (5, 3)
    x = torch.tensor([[0.5, 0.0], [0.5, 4.0], [-1.0, 2.0]])
    with torch.no_grad():
        # hidden_dims=() -> one Linear over [dense | embedding of the code]: compute it by hand.
        feats = torch.cat([x[:, :1], emb[x[:, 1].long()]], dim=1)
        torch.testing.assert_close(model(x), linear(feats))


def test_out_of_range_and_nan_codes_mean_other() -> None:
    model = TabularMLP(dense_width=0, cardinalities=[6], output_dim=2, hidden_dims=(4,)).eval()
    with torch.no_grad():
        other = model(torch.tensor([[1.0]]))
        for bad in (6.0, 100.0, -1.0, float("nan")):
            torch.testing.assert_close(model(torch.tensor([[bad]])), other)
        assert not torch.allclose(model(torch.tensor([[2.0]])), other)


def test_example_input_is_valid_and_deterministic() -> None:
    model = TabularMLP(dense_width=2, cardinalities=[3, 9], output_dim=1, hidden_dims=(4,))
    x = model.example_input(batch=64)
    assert x.shape == (64, 4) and x.dtype == torch.float32
    codes = x[:, 2:]
    assert torch.equal(codes, codes.round())
    assert (codes >= 0).all() and (codes[:, 0] < 3).all() and (codes[:, 1] < 9).all()
    assert len(set(codes[:, 1].tolist())) > 3  # spread over the codes, not always 0
    torch.testing.assert_close(model.example_input(64), x)
    assert model.example_input().shape == (1, 4)


def test_wrong_width_names_the_layout() -> None:
    model = TabularMLP(dense_width=3, cardinalities=[4], output_dim=2)
    with pytest.raises(DataError, match=r"\[B, 4\] \(3 dense features \+ 1 category codes\).*\(2, 5\)"):
        model(torch.zeros(2, 5))


def test_invalid_arguments_are_reported() -> None:
    with pytest.raises(ConfigError) as info:
        TabularMLP(-1, [4, 0], 2, embedding_dim=0)
    text = str(info.value)
    assert "dense_width" in text and "cardinalities[1]" in text and "embedding_dim" in text
    with pytest.raises(ConfigError, match="no input"):
        TabularMLP(0, [], 2)
    with pytest.raises(ConfigError, match="hidden_dims"):
        TabularMLP(2, [3], 2, hidden_dims=(8, -1))


def test_registry_builds_and_rebuilds_from_json_spec() -> None:
    import json

    model = build_model("tabular_mlp", dense_width=2, cardinalities=[4, 5], output_dim=3, hidden_dims=(8,))
    assert isinstance(model, TabularMLP)
    spec = json.loads(json.dumps(model_spec(model)))  # the spec travels as JSON (checkpoints, bundles)
    again = rebuild_model(spec)
    again.load_state_dict(model.state_dict())
    x = model.example_input(5)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x), model.eval()(x))


def test_trains_on_a_category_only_signal() -> None:
    # The label is a function of the category alone: only the embeddings can carry it.
    torch.manual_seed(0)
    codes = torch.randint(2, 8, (256,))
    x = torch.cat([torch.randn(256, 2), codes[:, None].float()], dim=1)
    y = (codes % 3).long()
    model = TabularMLP(2, [8], 3, hidden_dims=(16,), dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=5e-2)
    for _ in range(60):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    assert (model(x).argmax(1) == y).float().mean() > 0.95


def test_onnx_export_matches_pytorch(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = TabularMLP(dense_width=3, cardinalities=[5, 4], output_dim=2, hidden_dims=(8,)).eval()
    path = tmp_path / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (model.example_input(2),),
            str(path),
            input_names=["input"],
            output_names=["output"],
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},),
            dynamo=True,
            verbose=False,
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = model.example_input(7)  # another batch size: the batch axis is dynamic
    x[0, 3], x[1, 4] = 99.0, -1.0  # out-of-range codes behave as in PyTorch ("other")
    got = session.run(["output"], {"input": x.numpy()})[0]
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
