"""Sampling options of language-model predictions: runtime decoding and /predict's checks (422 naming the field)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from trainengine.serve import OnnxPredictor, create_app
from trainengine.serve._runtime import InputError, Sampling, _next_token, sampling_options

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's TestClient asks for httpx2; the serve extra installs httpx
    from fastapi.testclient import TestClient


def test_greedy_with_a_requested_length_equals_torch_generate(gpt_bundle) -> None:
    predictor = OnnxPredictor(gpt_bundle.path)
    got = predictor.predict(["def f(x):"], Sampling(max_new_tokens=5))[0]["completion"]
    ids = torch.tensor([list(b"def f(x):")])
    expected = gpt_bundle.model.generate(ids, max_new_tokens=5, temperature=0)[0, ids.shape[1] :].tolist()
    assert got == bytes(expected).decode("utf-8", errors="replace")


def test_seeded_sampling_is_reproducible_per_example_and_independent_of_batching(gpt_bundle) -> None:
    predictor = OnnxPredictor(gpt_bundle.path)
    prompts = ["import os", "def g(y):", "x = 1"]
    x = predictor.preprocess(prompts)
    s = Sampling(max_new_tokens=6, temperature=1.0, top_k=50, seed=11)
    whole = predictor.predict_array(x, sampling=s)
    # Chunks of one example each (the smallest budget that fits one): same draws for every example.
    chunked = predictor.predict_array(x, sampling=s, max_batch_tokens=predictor.context_width(9, 6))
    assert [p["completion"] for p in whole] == [p["completion"] for p in chunked]
    # Example 0 does not depend on what else is in the request.
    alone = predictor.predict(["import os", "zzz"], s)[0]["completion"]
    assert alone == whole[0]["completion"]
    other_seed = predictor.predict_array(x, sampling=Sampling(6, 1.0, 50, None, 12))
    assert [p["completion"] for p in other_seed] != [p["completion"] for p in whole]  # random, not greedy
    # The untrained model's greedy text differs from the sampled one: sampling really ran.
    assert predictor.predict_array(x, sampling=Sampling(6))[0]["completion"] != whole[0]["completion"]


def test_top_k_and_top_p_cut_the_same_tokens_as_the_torch_sampler() -> None:
    logits = np.log(np.array([0.05, 0.5, 0.15, 0.3]))
    rng = np.random.default_rng(0)

    def drawn(**options: float) -> set[int]:
        sampling = Sampling(1, **{"temperature": 1.0, **options})
        return {_next_token(logits, sampling, rng) for _ in range(400)}

    assert drawn(top_p=0.7) == {1, 3}  # 0.5 + 0.3 reach 0.7
    assert drawn(top_p=0.85) == {1, 2, 3}
    assert drawn(top_k=2) == {1, 3}
    assert drawn() == {0, 1, 2, 3}
    assert drawn(temperature=0.0) == {1}  # greedy: the argmax, no draw


@pytest.mark.parametrize(
    ("payload", "field", "words"),
    [
        ({"max_new_tokens": 9}, "max_new_tokens", "limit of 8"),
        ({"max_new_tokens": 0}, "max_new_tokens", "integer >= 1"),
        ({"temperature": -0.5}, "temperature", "[0, 10]"),
        ({"temperature": "hot"}, "temperature", "got str"),
        ({"top_k": 0}, "top_k", "integer >= 1"),
        ({"top_p": 1.5}, "top_p", "(0, 1]"),
        ({"seed": -1}, "seed", "[0, 2**63)"),
    ],
)
def test_sampling_options_out_of_range_name_the_field(payload: dict, field: str, words: str) -> None:
    with pytest.raises(InputError) as info:
        sampling_options(payload, max_new_tokens_limit=8)
    assert info.value.field == field and words in str(info.value)


def test_predict_accepts_sampling_options_within_the_server_limits(gpt_bundle, digits_bundle, digits_val) -> None:
    client = TestClient(create_app(gpt_bundle.path, max_new_tokens=8))
    body = {"inputs": ["def f(x):", "import"], "max_new_tokens": 4, "temperature": 0.9, "top_p": 0.9, "seed": 3}
    first = client.post("/predict", json=body)
    assert first.status_code == 200, first.text
    assert first.json()["predictions"] == client.post("/predict", json=body).json()["predictions"]
    greedy = client.post("/predict", json={"inputs": ["def f(x):"], "max_new_tokens": 4}).json()["predictions"][0]
    ids = torch.tensor([list(b"def f(x):")])
    expected = gpt_bundle.model.generate(ids, max_new_tokens=4, temperature=0)[0, ids.shape[1] :].tolist()
    assert greedy["completion"] == bytes(expected).decode("utf-8", errors="replace")

    too_many = client.post("/predict", json={"inputs": ["a"], "max_new_tokens": 9})
    assert too_many.status_code == 422 and too_many.json()["field"] == "max_new_tokens"
    assert "limit of 8" in too_many.json()["detail"]
    hot = client.post("/predict", json={"inputs": ["a"], "temperature": 50})
    assert hot.status_code == 422 and hot.json()["field"] == "temperature"

    classifier = TestClient(create_app(digits_bundle.path))
    refused = classifier.post("/predict", json={"inputs": [digits_val[0][0].tolist()], "temperature": 0.5})
    assert refused.status_code == 422 and refused.json()["field"] == "temperature"
    assert "language-model bundles" in refused.json()["detail"] and "classification" in refused.json()["detail"]
    assert classifier.post("/predict", json={"inputs": [digits_val[0][0].tolist()]}).status_code == 200
