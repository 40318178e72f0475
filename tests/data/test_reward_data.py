"""Reasoning-step data for process reward models: readers, tokenization, splits, batches (issue 15)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from trainengine.config import TrainingConfig
from trainengine.data import build_dataloader
from trainengine.data._reward import LABEL_PAD, RewardDataset, load_prm, split_reward_examples
from trainengine.data._reward_readers import ReadReport, RewardExample, read_eqasc, read_prm800k, read_reveal
from trainengine.data._reward_tokenize import (
    StepTokenizer,
    assemble,
    build_step_tokenizer,
    encode_steps,
    load_step_tokenizer,
)
from trainengine.errors import ConfigError, DataError

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "reward"
PRM = FIX / "prm800k"
BAD = FIX / "bad"


def _config(**data: Any) -> TrainingConfig:
    model = data.pop("model", None)
    raw: dict[str, Any] = {"data": {"dataset": "prm", **data}}
    if model:
        raw["model"] = model
    return TrainingConfig.model_validate(raw)


def _all_sources(**extra: Any) -> TrainingConfig:
    return _config(
        prm800k_path=str(PRM), reveal_path=str(FIX / "reveal.csv"), eqasc_path=str(FIX / "eqasc.jsonl"), **extra
    )


# ----------------------------------------------------------------------------- readers
def test_prm800k_maps_chosen_human_and_final_completions() -> None:
    report = ReadReport()
    exs = read_prm800k([PRM / "phase1_train.jsonl"], report=report)
    assert [e.id for e in exs] == ["phase1_train.jsonl:1", "phase1_train.jsonl:2", "phase1_train.jsonl:4"]
    a, b, c = exs
    assert a.problem == "What is 2 + 2?"
    assert a.steps == ["2 + 2 = 4.", "So the answer is probably 4.", "The answer is 4."]
    assert a.targets == [1.0, 0.5, 1.0]  # ratings 1, 0, 1 of the chosen completions
    assert (a.source, a.phase, a.meta["finish_reason"]) == ("prm800k", 1, "solution")
    # human completion (rating null -> 1.0), then the solution ends at the first rated completion
    assert b.steps == ["3 * 3 = 9.", "Then 9 - 1 = 8."] and b.targets == [1.0, 0.0]
    assert b.meta["finish_reason"] == "found_error"
    assert c.targets == [1.0]
    assert dict(report.excluded) == {"bad_problem": 1} and report.skipped == 0
    phase2 = read_prm800k([PRM / "phase2_train.jsonl"])
    assert [e.phase for e in phase2] == [2, 2, 2]
    assert [e.targets for e in phase2] == [[1.0, 1.0], [1.0, 0.0], [1.0, 0.5]]


def test_reveal_groups_rows_into_ordered_chains() -> None:
    report = ReadReport()
    exs = read_reveal([FIX / "reveal.csv"], report=report)
    assert [e.id for e in exs] == ["r1", "r2"]
    r1, r2 = exs
    # rows out of order and a repeated step (one row per evidence): ordered by step_idx, first row kept
    assert r1.steps == ["Penguins are birds.", "Penguins cannot fly.", "So no."]
    assert r1.targets == [1.0, 1.0, 1.0]
    assert r1.problem == "Can a penguin fly?" and r1.meta["full_answer"].startswith("Penguins are birds.")
    # empty correctness falls back to attribution (Partially -> 0.5); Incorrect -> 0.0
    assert r2.targets == [0.5, 0.0] and r2.problem == "Who wrote the book, and when?"
    assert r2.meta["attribution"] == ["Partially", ""]
    assert dict(report.excluded) == {"no_labelled_step": 1}  # r3 has no label at all


def test_eqasc_chains_become_examples_with_the_chain_label_on_every_fact() -> None:
    report = ReadReport()
    exs = read_eqasc([FIX / "eqasc.jsonl"], report=report)
    assert [e.id for e in exs] == ["q1_a1", "q1_a2", "q2_a1", "q3_a1", "q3_a2", "q4_a1"]
    first, invalid = exs[0], exs[1]
    assert first.problem == "What can cause a forest fire?\nAnswer: static electricity"
    assert first.steps == ["Static electricity can cause sparks.", "Sparks can start a forest fire."]
    assert first.targets == [1.0, 1.0] and invalid.targets == [0.0, 0.0]
    assert dict(report.excluded) == {"unlabelled_chain": 1}


@pytest.mark.parametrize(
    ("reader", "path", "where"),
    [
        (read_prm800k, BAD / "prm800k_bad.jsonl", "prm800k_bad.jsonl:2"),
        (read_reveal, BAD / "reveal_bad.csv", "reveal_bad.csv:3"),
        (read_eqasc, BAD / "eqasc_bad.jsonl", "eqasc_bad.jsonl:3"),
    ],
)
def test_a_malformed_line_names_file_and_line(reader: Any, path: Path, where: str) -> None:
    with pytest.raises(DataError, match=rf"^{where}: .*data.bad_rows: skip"):
        reader([path])


def test_bad_rows_skip_counts_and_keeps_the_rest() -> None:
    rep = ReadReport()
    exs = read_prm800k([BAD / "prm800k_bad.jsonl"], bad_rows="skip", report=rep)
    assert rep.skipped == 2 and [e.id for e in exs] == ["prm800k_bad.jsonl:1", "prm800k_bad.jsonl:4"]
    assert rep.skipped_at[1].startswith("prm800k_bad.jsonl:3: step 0 rating must be -1, 0, 1")
    rep = ReadReport()
    exs = read_reveal([BAD / "reveal_bad.csv"], bad_rows="skip", report=rep)
    assert rep.skipped == 3 and [(e.id, e.steps) for e in exs] == [("b1", ["Step one."]), ("b4", ["Step z."])]
    rep = ReadReport()
    assert len(read_eqasc([BAD / "eqasc_bad.jsonl"], bad_rows="skip", report=rep)) == 3 and rep.skipped == 1


def test_skipped_rows_reach_the_dataset_info(tmp_path: Path) -> None:
    eq = tmp_path / "eqasc.jsonl"
    eq.write_text((FIX / "eqasc.jsonl").read_text() + "{not json\n")
    with pytest.raises(DataError, match="eqasc.jsonl:5"):
        load_prm(config=_config(eqasc_path=str(eq)))
    splits = load_prm(config=_config(eqasc_path=str(eq), bad_rows="skip"))
    assert splits.info.extra["skipped_rows"] == {"eqasc": 1}
    assert splits.train.data_record is not None and splits.train.data_record["skipped_rows"] == {"eqasc": 1}


def test_source_fields_rename_columns_and_reject_unknown_keys(tmp_path: Path) -> None:
    text = (FIX / "reveal.csv").read_text().replace(",step,", ",step_text,", 1)
    csv_path = tmp_path / "renamed.csv"
    csv_path.write_text(text)
    with pytest.raises(DataError, match=r"\['step'\] are missing.*data.source_fields.reveal"):
        read_reveal([csv_path])
    cfg = _config(
        eqasc_path=str(FIX / "eqasc.jsonl"), reveal_path=str(csv_path), source_fields={"reveal": {"step": "step_text"}}
    )
    splits = load_prm(config=cfg)
    assert splits.test is not None and splits.test.example(0).steps[0] == "Penguins are birds."
    with pytest.raises(ConfigError, match="unknown key.*'stp'.*step_index"):
        load_prm(config=_config(eqasc_path=str(FIX / "eqasc.jsonl"), source_fields={"reveal": {"stp": "x"}}))


# ----------------------------------------------------------------------------- load_prm
def test_sources_phases_and_reveal_is_test_only_by_default() -> None:
    splits = load_prm(config=_all_sources())
    info = splits.info
    assert (info.name, info.task_type, info.vocab_size, info.seq_len) == ("prm", "reward", 256, 128)
    assert info.input_shape == (128,) and info.num_train == len(splits.train) and info.num_val == len(splits.val)
    counts = info.extra["counts"]
    assert "reveal" not in counts["train"] and "reveal" not in counts["val"]
    assert counts["test"] == {"prm800k": 1, "reveal": 2}  # phase2_test.jsonl + REVEAL
    assert info.extra["reveal_test_only"] is True
    assert splits.train.sources == splits.val.sources == ("prm800k", "reveal", "eqasc")
    assert splits.train.mixing_weights == {"prm800k": pytest.approx(2 / 3), "eqasc": pytest.approx(1 / 3)}
    assert splits.val.mixing_weights is None
    mixed = load_prm(config=_all_sources(reveal_for_training=True))
    train_val = {**mixed.info.extra["counts"]["train"], **mixed.info.extra["counts"]["val"]}
    assert "reveal" in train_val
    assert mixed.train.mixing_weights is not None and set(mixed.train.mixing_weights) == {"prm800k", "reveal", "eqasc"}

    one = load_prm(config=_config(prm800k_path=str(PRM), prm800k_phase=1))
    assert set(one.train.example_fields()["phase"]) | set(one.val.example_fields()["phase"]) == {1}
    assert one.test is None and one.train.mixing_weights is None  # phase2_test left out; one source
    two = load_prm(config=_config(prm800k_path=str(PRM), prm800k_phase=2))
    assert two.test is not None and set(two.test.example_fields()["phase"]) == {2}
    with pytest.raises(DataError, match="prm800k_phase: 1 matches none"):
        load_prm(config=_config(prm800k_path=str(PRM / "phase2_train.jsonl"), prm800k_phase=1))


def test_source_selection_errors() -> None:
    with pytest.raises(ConfigError, match="data.prm800k_path, data.reveal_path or data.eqasc_path"):
        load_prm(config=_config())
    with pytest.raises(ConfigError, match="data.prm800k_path"):
        load_prm(config=_config(eqasc_path=str(FIX / "eqasc.jsonl"), use_eqasc=False))
    with pytest.raises(DataError, match="no training examples.*reveal_for_training"):
        load_prm(config=_config(reveal_path=str(FIX / "reveal.csv")))
    only_reveal = load_prm(config=_config(reveal_path=str(FIX / "reveal.csv")), evaluation_only=True)
    assert len(only_reveal.train) == 0 and only_reveal.test is not None and len(only_reveal.test) == 2
    with pytest.raises(DataError, match="data.eqasc_path: .* does not exist"):
        load_prm(config=_config(eqasc_path="/no/such/eqasc.jsonl"))


def test_split_is_deterministic_grouped_by_problem_and_capped() -> None:
    a, b = load_prm(config=_all_sources()), load_prm(config=_all_sources())
    assert a.info.fingerprint == b.info.fingerprint
    train_problems = {a.train.example(i).problem for i in range(len(a.train))}
    val_problems = {a.val.example(i).problem for i in range(len(a.val))}
    assert not train_problems & val_problems  # every solution of a problem on one side
    exs = [RewardExample(str(i), f"p{i % 7}", ["s"], [1.0], "prm800k" if i % 2 else "eqasc") for i in range(40)]
    tr, va = split_reward_examples(exs, 0.3, seed=3)
    assert (tr, va) == split_reward_examples(exs, 0.3, seed=3) and sorted(tr + va) == list(range(40))
    assert {exs[i].source for i in va} == {"prm800k", "eqasc"}  # stratified by source
    capped = load_prm(config=_all_sources(max_train_samples=4, max_val_samples=1))
    assert (len(capped.train), len(capped.val)) == (4, 1)


# ----------------------------------------------------------------------------- encoding
def _a(*x: int) -> np.ndarray:
    return np.asarray(x, dtype=np.int64)


def test_truncation_keeps_whole_steps_and_cuts_the_problem_from_the_left() -> None:
    problem, steps, sep = _a(1, 2, 3, 4), [_a(5, 6), _a(7, 8, 9), _a(10)], _a(0)
    full = assemble([], problem, steps, sep, max_length=100, max_steps=10)
    assert full.input_ids.tolist() == [1, 2, 3, 4, 0, 5, 6, 0, 7, 8, 9, 0, 10, 0]
    assert full.step_positions.tolist() == [7, 11, 13] and full.num_steps == 3
    cut = assemble([], problem, steps, sep, max_length=12, max_steps=10)  # third step does not fit: dropped whole
    assert cut.input_ids.tolist() == [1, 2, 3, 4, 0, 5, 6, 0, 7, 8, 9, 0] and cut.num_steps == 2
    capped = assemble([], problem, steps, sep, max_length=100, max_steps=1)
    assert capped.num_steps == 1 and capped.input_ids.tolist() == [1, 2, 3, 4, 0, 5, 6, 0]
    left = assemble([99], problem, steps, sep, max_length=6, max_steps=10)  # problem + first step do not fit
    assert left.input_ids.tolist() == [99, 4, 0, 5, 6, 0] and left.problem_truncated
    assert left.step_positions.tolist() == [5]
    tiny = assemble([], problem, [_a(5, 6, 7, 8)], sep, max_length=3, max_steps=10)
    assert tiny.input_ids.tolist() == [7, 8, 0] and tiny.step_positions.tolist() == [2]


def test_items_collate_and_step_positions_point_at_separators() -> None:
    splits = load_prm(config=_all_sources(max_steps_per_example=2, step_separator=" ||"))
    ds = splits.train
    sep = ds.tokenizer.encode([" ||"])[0].tolist()
    items = [ds[i] for i in range(len(ds))]
    batch = ds.collate_fn(items)
    b = len(items)
    longest = max(len(it["input_ids"]) for it in items)
    t = min(-(-longest // 64) * 64, ds.max_length)  # padded to a multiple of 64, at most max_length
    assert batch["input_ids"].shape == (b, t) and batch["attention_mask"].shape == (b, t)
    assert int(batch["attention_mask"].sum(1).max()) == longest
    assert batch["step_positions"].shape == batch["labels"].shape == batch["step_mask"].shape == (b, 2)
    assert batch["labels"].dtype == torch.float32 and batch["step_mask"].dtype == torch.bool
    assert batch["source_ids"].tolist() == [it["source_id"] for it in items]
    for i, it in enumerate(items):
        n, k = len(it["input_ids"]), len(it["step_positions"])
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (t - n)
        assert batch["input_ids"][i, n:].eq(ds.tokenizer.pad_id).all()
        assert batch["labels"][i, k:].eq(LABEL_PAD).all() and not batch["step_mask"][i, k:].any()
        assert batch["step_positions"][i, k:].eq(0).all()
        for p in it["step_positions"].tolist():
            assert it["input_ids"][p - len(sep) + 1 : p + 1].tolist() == sep  # each step ends with " ||"
        example = ds.example(i)
        assert it["labels"].tolist() == example.targets[:k]
    assert max(len(ds.example(i).steps) for i in range(len(ds))) > 2  # the cap did something
    # an unlabelled (NaN) step is masked in the labels but still a step
    nan_item = {**items[0], "labels": torch.tensor([float("nan")] * len(items[0]["step_positions"]))}
    nb = ds.collate_fn([nan_item])
    assert nb["labels"].eq(LABEL_PAD).all() and nb["step_mask"].all()
    loader = build_dataloader(ds, batch_size=4, shuffle=False, seed=0)
    assert set(next(iter(loader))) == set(batch)  # build_dataloader picks up ds.collate_fn


def test_getitem_with_a_length_cap_and_example_fields() -> None:
    ds = load_prm(config=_config(prm800k_path=str(PRM), max_length=64)).train
    fields = ds.example_fields()
    assert set(fields) == {"source", "phase", "num_steps", "length", "mean_target"}
    assert all(len(v) == len(ds) for v in fields.values())
    i = int(np.argmax(fields["num_steps"]))
    full = ds[i]
    assert len(full["input_ids"]) == fields["length"][i] <= 64
    assert len(full["step_positions"]) == fields["num_steps"][i]
    short = ds[(i, int(full["step_positions"][0]) + 1)]  # room for exactly the first step
    assert short["input_ids"].tolist() == full["input_ids"][: len(short["input_ids"])].tolist()
    assert short["step_positions"].tolist() == full["step_positions"][:1].tolist()
    assert ds[(i, 10_000)]["input_ids"].tolist() == full["input_ids"].tolist()  # never above max_length
    ex = ds.example(i)
    assert fields["mean_target"][i] == pytest.approx(np.mean(ex.targets[: fields["num_steps"][i]]))
    assert fields["source"][i] == "prm800k" and fields["phase"][i] == ex.phase


# ----------------------------------------------------------------------------- tokenizers
def test_byte_and_bpe_tokenizers(tmp_path: Path) -> None:
    byte = load_prm(config=_all_sources())
    assert byte.info.extra["tokenizer"]["source"] == "byte" and byte.info.vocab_size == 256
    assert byte.train[0]["input_ids"].max() < 256
    bpe = load_prm(config=_all_sources(tokenizer="bpe:300"))
    tok = bpe.train.tokenizer
    info = bpe.info.extra["tokenizer"]
    assert info["source"] == "bpe" and info["kind"] == "hf" and bpe.info.vocab_size == tok.vocab_size <= 300
    assert tok.vocab_size > 256  # merges learned from the training texts
    ids = bpe.train[0]["input_ids"]
    assert len(ids) < len(byte.train[0]["input_ids"]) and int(ids.max()) < tok.vocab_size
    assert tok.sha256 == load_prm(config=_all_sources(tokenizer="bpe:300")).train.tokenizer.sha256  # deterministic
    tok.save(tmp_path / "tok")
    again = load_step_tokenizer(tmp_path / "tok")
    assert (again.source, again.pad_id, again.sha256) == ("bpe", tok.pad_id, tok.sha256)
    ex = bpe.train.example(0)
    enc = encode_steps(again, ex.problem, ex.steps, separator="\n", max_length=128, max_steps=10)
    assert enc.input_ids.tolist() == ids.tolist()  # evaluation / serving encode exactly as training
    assert build_step_tokenizer(str(tmp_path / "tok")).to_dict()["source"] == "file"


def test_backbone_tokenizer_from_a_local_folder(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    text_words = {w.strip('",.:{}[]?') for w in (FIX / "eqasc.jsonl").read_text().split()}
    words = ["<pad>", "<s>", "</s>", "[UNK]", "<sep>", *sorted(w for w in text_words if w)]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    raw.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=raw, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="[UNK]"
    )
    folder = tmp_path / "backbone"
    fast.save_pretrained(str(folder))
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    cfg = _config(eqasc_path=str(FIX / "eqasc.jsonl"), step_separator=" <sep>", model={"name_or_path": str(folder)})
    splits = load_prm(config=cfg)
    info = splits.info.extra["tokenizer"]
    assert info["source"] == "backbone" and info["pad_id"] == 0 and info["prefix_ids"] == [1]
    assert splits.info.vocab_size == len(vocab)
    item = splits.train[0]
    assert item["input_ids"][0] == 1  # the backbone's BOS first
    batch = splits.train.collate_fn([splits.train[0], splits.train[1]])
    assert batch["input_ids"][batch["attention_mask"] == 0].eq(0).all()  # padded with <pad>
    assert all(int(item["input_ids"][p]) == vocab["<sep>"] for p in item["step_positions"].tolist())
    no_tok = tmp_path / "weights_only"
    no_tok.mkdir()
    other = load_prm(config=_config(eqasc_path=str(FIX / "eqasc.jsonl"), model={"name_or_path": str(no_tok)}))
    assert other.info.extra["tokenizer"]["source"] == "byte"  # no tokenizer files: built locally
    shutil.rmtree(folder)


def test_step_tokenizer_protocol_bits() -> None:
    tok = build_step_tokenizer("byte")
    assert isinstance(tok, StepTokenizer) and tok.to_json() is None and tok.pad_id == 0
    with pytest.raises(DataError, match="bpe:<vocabulary size>"):
        build_step_tokenizer("bpe:12")
    ds = RewardDataset(
        [RewardExample("x", "q", ["a"], [math.nan], "eqasc")],
        tok,
        sources=("eqasc",),
        separator="\n",
        max_length=8,
        max_steps=4,
    )
    assert math.isnan(ds.example_fields()["mean_target"][0])
    with pytest.raises(DataError, match="encodes to no tokens"):
        RewardDataset([], tok, sources=("eqasc",), separator="", max_length=8, max_steps=4)
