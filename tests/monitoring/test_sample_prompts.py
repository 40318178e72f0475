"""monitoring.sample_prompts: completions logged at each evaluation as logs.jsonl records of type "samples"."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from trainengine import TaskSpec, Trainer, TrainingConfig
from trainengine.data import ByteTokenizer, TokenWindowDataset
from trainengine.errors import ConfigError
from trainengine.models import GPT, GPTConfig
from trainengine.models._gpt import generate_text
from trainengine.monitoring._samples import SamplePrompts, build_sample_prompts

PROMPTS = ["def ", "import "]


def _config(tmp_path: Path, **monitoring: object) -> TrainingConfig:
    return TrainingConfig.from_dict(
        {
            "training": {
                "max_steps": 4,
                "batch_size": 8,
                "eval_interval_steps": 2,
                "eval_every_epoch": False,
                "log_interval_steps": 2,
            },
            "monitoring": {"sample_prompts": PROMPTS, "sample_max_new_tokens": 6, **monitoring},
            "tracking": {"output_dir": str(tmp_path), "progress": "off", "experiment_db": False},
        }
    )


def _byte_windows(text: bytes, seq_len: int = 16) -> TokenWindowDataset:
    return TokenWindowDataset.from_stream(torch.tensor(list(text), dtype=torch.uint8), seq_len=seq_len)


def test_each_evaluation_logs_the_greedy_completion_of_every_prompt(tmp_path: Path) -> None:
    config = _config(tmp_path)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=256, max_seq_len=16, d_model=32, n_heads=2, n_layers=1))
    text = b"def f(x):\n    return x\nimport os\n" * 20
    callback = build_sample_prompts(config)
    assert isinstance(callback, SamplePrompts) and callback.max_new_tokens == 6
    # The public Trainer adds the callback itself from monitoring.sample_prompts.
    trainer = Trainer(model, None, config, TaskSpec.language_modeling("bytes"))
    results = trainer.train(_byte_windows(text), _byte_windows(text[:200]))
    logs = Path(results["run_dir"]) / "logs.jsonl"
    records = [json.loads(line) for line in logs.read_text().splitlines()]
    samples = [r for r in records if r["type"] == "samples"]
    evals = [r for r in records if r["type"] == "eval"]
    assert [r["step"] for r in samples] == [r["step"] for r in evals] and len(samples) >= 2
    assert [s["prompt"] for s in samples[-1]["samples"]] == PROMPTS
    # The last evaluation saw the final weights: its samples are the final model's greedy completions.
    expected = [generate_text(model, ByteTokenizer(), p, max_new_tokens=6, temperature=0) for p in PROMPTS]
    assert [s["completion"] for s in samples[-1]["samples"]] == expected
    assert all(len(s["completion"].encode("utf-8", "replace")) > 0 for s in samples[-1]["samples"])


def test_a_model_without_generate_is_skipped_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    class Run:  # what on_eval_end reads of a trainer; a classifier cannot generate
        model = torch.nn.Linear(4, 2)
        task_spec = TaskSpec.classification("x", 2)

    callback = SamplePrompts(["a"])
    with caplog.at_level(logging.WARNING, logger="trainengine"):
        callback.on_eval_end(Run(), {})
        callback.on_eval_end(Run(), {})
    warnings = [r for r in caplog.records if "sample_prompts" in r.getMessage()]
    assert len(warnings) == 1 and "cannot generate text" in warnings[0].getMessage()


def test_config_fields_default_off_and_refuse_empty_prompts() -> None:
    assert build_sample_prompts(TrainingConfig()) is None
    with pytest.raises(ConfigError, match=r"monitoring.sample_prompts: prompts \[1\] are empty strings"):
        TrainingConfig.from_dict({"monitoring": {"sample_prompts": ["ok", ""]}})
    with pytest.raises(ConfigError, match="monitoring.sample_max_new_tokens"):
        TrainingConfig.from_dict({"monitoring": {"sample_max_new_tokens": 0}})
    with pytest.raises(ValueError, match="non-empty list of non-empty strings"):
        SamplePrompts([])
