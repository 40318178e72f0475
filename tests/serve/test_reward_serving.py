"""Serving a LoRA process reward model: trained through the Trainer, exported at train end, served.

The bundle carries the step tokenizer and the step encoding of training (separator, max_length,
max_steps_per_example); ``POST /predict`` takes problems with their steps and answers one score per
step, equal to the trained model's scores on the training encoding of the same text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("fastapi")

from fastapi.testclient import TestClient

from trainengine import Trainer
from trainengine.config import TrainingConfig
from trainengine.data._reward_tokenize import assemble, encode_steps
from trainengine.engine import build_from_config
from trainengine.errors import ExportError
from trainengine.export import create_export_bundle, verify_bundle
from trainengine.serve import create_app
from trainengine.serve._runtime import assemble_steps
from trainengine.serve._torch import TorchPredictor

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "reward"
TINY_LLAMA = {
    "model_type": "llama",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 512,
}
MAX_LENGTH, MAX_STEPS, SEPARATOR = 96, 3, " ||\n"


@dataclass
class Trained:
    bundle: Path
    model: torch.nn.Module  # the trained LoRA model (not merged), eval mode
    train: Any  # the training RewardDataset (its tokenizer)
    config: TrainingConfig


def _config(out: Path) -> TrainingConfig:
    return TrainingConfig.model_validate(
        {
            "model": {"architecture": "reward_model", "backbone_config": TINY_LLAMA, "mlp_hidden_dims": [16]},
            "lora": {"enabled": True, "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0},
            "data": {
                "dataset": "prm",
                "prm800k_path": str(FIXTURES / "prm800k"),
                "eqasc_path": str(FIXTURES / "eqasc.jsonl"),
                "use_reveal": False,
                "tokenizer": "bpe:300",  # a trained tokenizer: the bundle must carry its tokenizer.json
                "max_length": MAX_LENGTH,
                "max_steps_per_example": MAX_STEPS,
                "step_separator": SEPARATOR,
            },
            "training": {
                "max_steps": 3,
                "batch_size": 4,
                "learning_rate": 2e-2,
                "device": "cpu",
                "eval_interval_steps": 100,
            },
            "scheduler": {"name": "constant"},
            "export": {"enabled": True, "formats": ["pytorch"], "output_dir": str(out / "exports")},
            "tracking": {"output_dir": str(out / "runs"), "progress": "off"},
        }
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    out = tmp_path_factory.mktemp("reward")
    config = _config(out)
    built = build_from_config(config)
    trainer = Trainer(built.model, built.model_config, config, built.task_spec)
    results = trainer.train(built.splits.train, built.splits.val)
    assert "export_error" not in results, results.get("export_error")
    built.model.eval()
    adapters = [p for n, p in built.model.named_parameters() if "lora_B" in n]
    assert adapters and any(p.abs().sum() > 0 for p in adapters)  # trained: the merged export differs from the base
    return Trained(Path(results["export_dir"]), built.model, built.splits.train, config)


def _training_scores(trained: Trained, problem: str, steps: list[str]) -> tuple[np.ndarray, int]:
    """The trained model's scores on the training encoding of the text (and the steps kept)."""
    enc = encode_steps(
        trained.train.tokenizer, problem, steps, separator=SEPARATOR, max_length=MAX_LENGTH, max_steps=MAX_STEPS
    )
    with torch.no_grad():
        scores = trained.model(
            input_ids=torch.from_numpy(enc.input_ids)[None],
            attention_mask=torch.ones(1, len(enc.input_ids), dtype=torch.long),
            step_positions=torch.from_numpy(enc.step_positions)[None],
        )
    return scores[0].numpy().astype(np.float64), enc.num_steps


def test_served_scores_equal_the_trained_models_scores(trained: Trained) -> None:
    manifest = json.loads((trained.bundle / "manifest.json").read_text())
    assert manifest["reward"]["step_separator"] == SEPARATOR
    assert (manifest["reward"]["max_length"], manifest["reward"]["max_steps_per_example"]) == (MAX_LENGTH, MAX_STEPS)
    assert manifest["tokenizer"]["file"] == "tokenizer.json" and (trained.bundle / "tokenizer.json").is_file()
    assert verify_bundle(trained.bundle) == []

    client = TestClient(create_app(trained.bundle, runtime="torch"))
    short = {"problem": "What is 7 * 6?", "steps": ["7 * 6 = 42.", "The answer is 42."]}
    many = {"problem": "Add 1, 2, 3, 4 and 5.", "steps": ["1 + 2 = 3", "3 + 3 = 6", "6 + 4 = 10", "10 + 5 = 15"]}
    long_text = {"problem": "Count. " * 4, "steps": ["one two three four five six " * 3] * 3}  # beyond max_length

    one = client.post("/predict", json=short)  # a single object
    assert one.status_code == 200, one.text
    expected, kept = _training_scores(trained, **short)
    prediction = one.json()["predictions"][0]
    assert np.allclose(prediction["scores"], expected, atol=1e-5, rtol=1e-5)
    assert prediction["steps_scored"] == kept == 2 and prediction["truncated"] is False

    both = client.post("/predict", json={"inputs": [many, short, long_text]})  # different lengths, one batch
    assert both.status_code == 200, both.text
    got = both.json()["predictions"]
    for example, answer in zip((many, short, long_text), got, strict=True):
        expected, kept = _training_scores(trained, **example)
        assert np.allclose(answer["scores"], expected, atol=1e-5, rtol=1e-5)
        assert answer["steps_scored"] == kept == len(answer["scores"])
        assert answer["num_steps"] == len(example["steps"])
    assert got[0]["truncated"] is True and got[0]["steps_scored"] == MAX_STEPS  # 4 steps, 3 scored
    assert got[2]["truncated"] is True and got[2]["steps_scored"] < 3  # steps past max_length are left out
    assert client.post("/predict", json=[short]).json()["predictions"][0]["scores"] == prediction["scores"]

    # Clients that tokenize themselves: ids + each step's last token.
    enc = encode_steps(
        trained.train.tokenizer, short["problem"], short["steps"], separator=SEPARATOR,
        max_length=MAX_LENGTH, max_steps=MAX_STEPS,
    )  # fmt: skip
    ids = client.post(
        "/predict", json={"input_ids": enc.input_ids.tolist(), "step_positions": enc.step_positions.tolist()}
    )
    assert ids.status_code == 200, ids.text
    assert np.allclose(ids.json()["predictions"][0]["scores"], prediction["scores"], atol=1e-6)
    assert "trainengine_serve_step_score_count" in client.get("/metrics").text


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"problem": "p"}, "inputs[0].steps", "missing"),
        ({"problem": "p", "steps": []}, "inputs[0].steps", "non-empty list"),
        ({"problem": "p", "steps": "one step"}, "inputs[0].steps", "non-empty list"),
        ({"problem": "p", "steps": ["ok", 3]}, "inputs[0].steps[1]", "string"),
        ({"problem": "p", "steps": ["ok", ""]}, "inputs[0].steps[1]", "empty step"),
        ({"problem": 5, "steps": ["ok"]}, "inputs[0].problem", "string"),
        ({"problem": "p", "steps": ["ok"], "step": ["x"]}, "inputs[0].step", "unknown field"),
        ({"inputs": ["just text"]}, "inputs[0]", "expected"),
        ({"inputs": []}, "inputs", "empty batch"),
        ({"text": "p"}, "inputs", "missing"),
        ({"input_ids": [1, 2, 3], "step_positions": [3]}, "inputs[0].step_positions[0]", "token index"),
        ({"input_ids": [1, 2, 99999], "step_positions": [2]}, "inputs[0].input_ids[2]", "out of range"),
        ({"problem": "p", "steps": ["ok"], "temperature": 0.5}, "temperature", "language-model"),
    ],
)
def test_invalid_reward_requests_are_422_naming_the_field(trained: Trained, body: Any, field: str, words: str) -> None:
    client = _client(trained.bundle)
    response = client.post("/predict", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field and words in response.json()["detail"]


_CLIENTS: dict[Path, TestClient] = {}


def _client(bundle: Path) -> TestClient:
    if bundle not in _CLIENTS:
        _CLIENTS[bundle] = TestClient(create_app(bundle, runtime="torch"))
    return _CLIENTS[bundle]


def test_examples_json_holds_problems_and_the_scores_the_bundle_gives(trained: Trained) -> None:
    examples = json.loads((trained.bundle / "examples.json").read_text())
    assert examples["inputs"] and all(set(x) == {"problem", "steps"} for x in examples["inputs"])
    again = TorchPredictor(trained.bundle).predict(examples["inputs"])
    for got, want in zip(again, examples["predictions"], strict=True):
        assert np.allclose(got["scores"], want["scores"], atol=1e-6) and got["steps_scored"] == want["steps_scored"]
    first = examples["inputs"][0]
    expected, _ = _training_scores(trained, first["problem"], first["steps"])
    assert np.allclose(examples["predictions"][0]["scores"], expected, atol=1e-5)
    assert '"steps"' in (trained.bundle / "README.md").read_text()


def test_a_reward_bundle_without_its_tokenizer_serves_token_ids_only(
    trained: Trained, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from trainengine.tasks import TaskSpec

    with caplog.at_level("WARNING"):  # a bpe run without tokenizer_dir: bytes would be other token ids
        bundle = create_export_bundle(trained.model, task_spec=TaskSpec.reward("prm"), training_config=trained.config,
                                      formats=["pytorch"], output_dir=tmp_path)  # fmt: skip
    assert "token ids only" in caplog.text and "tokenizer_dir" in caplog.text
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["reward"]["text_inputs"] is False and "tokenizer" not in manifest
    examples = json.loads((bundle / "examples.json").read_text())
    assert set(examples["inputs"][0]) == {"input_ids", "step_positions"}
    client = TestClient(create_app(bundle, runtime="torch"))
    text = client.post("/predict", json={"problem": "p", "steps": ["s"]})
    assert text.status_code == 422 and "token ids only" in text.json()["detail"]
    ids = client.post("/predict", json={"inputs": examples["inputs"]})
    assert ids.status_code == 200, ids.text
    for got, want in zip(ids.json()["predictions"], examples["predictions"], strict=True):
        assert np.allclose(got["scores"], want["scores"], atol=1e-6)
    with pytest.raises(ExportError, match="raw_examples hold problem/steps text"):
        create_export_bundle(trained.model, task_spec=TaskSpec.reward("prm"), formats=["pytorch"],
                             raw_examples=[{"problem": "p", "steps": ["s"]}], output_dir=tmp_path / "x")  # fmt: skip


def test_serving_assembles_steps_exactly_as_training() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        prefix = rng.integers(1, 9, size=int(rng.integers(0, 2)))
        problem = rng.integers(1, 50, size=int(rng.integers(0, 12)))
        steps = [rng.integers(1, 50, size=int(rng.integers(0, 9))) for _ in range(int(rng.integers(1, 6)))]
        sep = rng.integers(50, 60, size=int(rng.integers(1, 3)))
        max_length = int(rng.integers(len(prefix) + len(sep), 40))
        max_steps = int(rng.integers(1, 6))
        want = assemble(prefix, problem, steps, sep, max_length=max_length, max_steps=max_steps)
        ids, positions, kept, cut = assemble_steps(prefix, problem, steps, sep, max_length=max_length,
                                                   max_steps=max_steps)  # fmt: skip
        assert ids.tolist() == want.input_ids.tolist() and positions.tolist() == want.step_positions.tolist()
        assert (kept, cut) == (want.num_steps, want.problem_truncated)
