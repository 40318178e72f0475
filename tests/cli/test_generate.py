"""``trainengine generate``: completions from a checkpoint / run directory / registry version with its own tokenizer."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from trainengine import Trainer, TrainingConfig
from trainengine.checkpoint import CheckpointManager, load_model_state
from trainengine.cli.main import main
from trainengine.engine import build_from_config
from trainengine.models import rebuild_model

WORDS = ["the", "cat", "sat", "on", "the", "mat", "and", "the", "dog", "ran", "to", "the", "cat"]


def _train(tmp: Path, data: dict[str, Any], model: dict[str, Any]) -> Path:
    config = TrainingConfig.from_dict(
        {
            "seed": 0,
            "training": {"max_steps": 2, "batch_size": 4, "eval_interval_steps": 2, "eval_every_epoch": False},
            "data": {"task": "language_modeling", "max_length": 16, "check_overlap": False, **data},
            "model": {"architecture": "gpt", "max_seq_len": 16, "d_model": 16, "n_heads": 2, "n_layers": 1, **model},
            "checkpointing": {"enabled": True, "save_every_n_steps": 2, "async_save": False},
            "tracking": {"output_dir": str(tmp / "runs"), "progress": "off", "experiment_db": False},
            "monitoring": {"profile_data": False},
        }
    )
    built = build_from_config(config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = Trainer(built.model, built.model_config, config, built.task_spec).train(
            built.splits.train, built.splits.val
        )
    return Path(results["run_dir"])


@pytest.fixture(scope="module")
def word_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GPT trained 2 steps on a text file with a 15-token word-level Hugging Face tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tmp = tmp_path_factory.mktemp("word")
    text = "\n".join(" ".join(WORDS[(i + j) % len(WORDS)] for j in range(12)) for i in range(100))
    (tmp / "corpus.txt").write_text(text)
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([text], trainers.WordLevelTrainer(special_tokens=["[UNK]", "</s>"]))
    (tmp / "tok").mkdir()
    tok.save(str(tmp / "tok" / "tokenizer.json"))
    run = _train(tmp, {"train_file": str(tmp / "corpus.txt"), "tokenizer": str(tmp / "tok")}, {"vocab_size": 16})
    (tmp / "tok" / "tokenizer.json").unlink()  # generate must use the copy kept in the checkpoint
    return run


def _generate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["generate", *args])
    out = capsys.readouterr()
    return code, out.out.rstrip("\n"), out.err


def _greedy_reference(run: Path, prompt: str, n: int) -> str:
    """Greedy decoding by hand: the checkpoint's weights, the tokenizer text from its metadata, no KV cache."""
    from tokenizers import Tokenizer

    ckpt = sorted((run / "checkpoints").glob("ckpt-*"))[-1]
    loaded = CheckpointManager(ckpt.parent, read_only=True).read(ckpt)
    model = rebuild_model(loaded.meta.extra["model_spec"]).eval()
    load_model_state(model, loaded.model_state)
    tok = Tokenizer.from_str(loaded.meta.extra["data"]["tokenizer_json"])
    ids = torch.tensor([tok.encode(prompt, add_special_tokens=False).ids])
    with torch.no_grad():
        for _ in range(n):
            ids = torch.cat([ids, model(ids[:, -16:])[:, -1].argmax(-1, keepdim=True)], dim=1)
    whole, head = tok.decode(ids[0].tolist()), tok.decode(ids[0, :2].tolist())
    return whole[len(head) :]


def test_greedy_completion_uses_the_checkpoint_tokenizer(word_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _generate(capsys, "--checkpoint", str(word_run), "--prompt", "the cat", "-n", "10", "-t", "0")
    assert code == 0, err
    assert out == _greedy_reference(word_run, "the cat", 10)
    # Word-level: every generated token is one of the corpus words (byte-level ids would not even fit 16).
    assert out.split() and set(out.split()) <= set(WORDS)
    code, with_prompt, _ = _generate(
        capsys, "--checkpoint", str(word_run), "--prompt", "the cat", "-n", "10", "-t", "0", "--with-prompt"
    )
    assert with_prompt == "the cat" + out


def test_same_seed_same_text_and_the_seed_matters(word_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--checkpoint", str(word_run), "--prompt", "the dog", "-n", "12", "--temperature", "1.5", "--top-p", "0.99"]
    texts = [_generate(capsys, *args, "--seed", seed)[1] for seed in ("1", "1", "2")]
    assert texts[0] == texts[1]
    assert texts[0] != texts[2]


def test_model_alias_resolves_through_the_registry(
    word_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from trainengine.registry import ModelRegistry

    db = tmp_path / "models.db"
    ckpt = sorted((word_run / "checkpoints").glob("ckpt-*"))[-1]
    with ModelRegistry(db) as registry:
        registry.promote_model(registry.register_model("words", "1.0.0", ckpt), "production")
    common = ["--prompt", "the mat", "-n", "12", "-t", "0"]
    code, via_registry, err = _generate(capsys, "--model", "words@production", "--registry", str(db), *common)
    assert code == 0, err
    assert via_registry == _generate(capsys, "--checkpoint", str(ckpt), *common)[1] != ""


def test_byte_level_run_without_a_tokenizer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "code.txt"
    corpus.write_text("def add(a, b):\n    return a + b\n" * 40)
    run = _train(tmp_path, {"train_file": str(corpus), "tokenizer": "byte"}, {"vocab_size": 256})
    code, out, err = _generate(
        capsys, "--checkpoint", str(run), "--prompt", "def ", "-n", "8", "-t", "0", "--seed", "3"
    )
    assert code == 0, err
    assert out == _generate(capsys, "--checkpoint", str(run), "--prompt", "def ", "-n", "8", "-t", "0")[1]
    assert len(out.encode("utf-8", "replace")) >= 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prompt", "x"], "give exactly one of --checkpoint PATH or --model NAME@ALIAS"),
        (["--prompt", "x", "--checkpoint", "nowhere/ckpt-1"], "nowhere/ckpt-1: it does not exist"),
        (["--prompt", "x", "--model", "m@prod", "--registry", "missing.db"], "no model registry at missing.db"),
        (["--prompt", "x", "--checkpoint", "c", "--top-p", "0"], "top_p must be in (0, 1]"),
    ],
)
def test_user_errors_exit_2_with_the_reason(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = _generate(capsys, *args)
    assert code == 2 and message in err
