"""Source mixing and curricula: what the loader yields at given steps, and exact resume through the Trainer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from trainengine import ConfigError, TaskSpec, Trainer, TrainingConfigBuilder
from trainengine.data import InMemoryDataset
from trainengine.data._curriculum import CurriculumBatchSampler, score_by_loss, smooth_weighted_round_robin
from trainengine.tasks import get_loss_strategy

FEATURES = 8


class Toy(Dataset):
    """``n`` regression examples from sources a/b/c with a difficulty field; keys may be ``(index, max_length)``.

    A ``(i, L)`` key zeroes the features past ``L`` (the dataset "truncates"). Each sample carries
    its index and length cap so the model can record exactly what it trained on.
    """

    def __init__(self, n: int = 40, weights: dict[str, float] | None = None, hard: int | None = None) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, FEATURES, generator=g)
        self.y = self.x[:, :3].sum(1)
        if hard is not None:
            self.y[hard] = 100.0  # an example no starting model gets right
        self.source = np.array(["abc"[i % 3] for i in range(n)])
        self.difficulty = (np.arange(n) * 7) % n  # a permutation: 0 easiest
        self.mixing_weights = weights

    def __len__(self) -> int:
        return len(self.y)

    def example_fields(self) -> dict[str, np.ndarray]:
        return {"source": self.source, "difficulty": self.difficulty, "phase": (np.arange(len(self.y)) // 3) % 2}

    def __getitem__(self, key):
        i, cap = key if isinstance(key, tuple) else (key, FEATURES)
        x = self.x[i].clone()
        x[cap:] = 0.0
        return {"x": x, "idx": torch.tensor(i), "cap": torch.tensor(cap), "labels": self.y[i]}


class Recorder(nn.Module):
    """A linear regressor that records the (index, cap) of every training example it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(FEATURES, 1)
        self.seen: list[tuple[int, int]] = []

    def forward(self, x, idx, cap):
        if self.training:
            self.seen.extend(zip(idx.tolist(), cap.tolist(), strict=True))
        return self.lin(x).squeeze(-1)


def _sources(ds: Toy, keys) -> list[str]:
    return [str(ds.source[k[0] if isinstance(k, tuple) else k]) for k in keys]


def _flat(sampler: CurriculumBatchSampler, epochs: int) -> list:
    out = []
    for e in range(epochs):
        sampler.set_epoch(e)
        out.extend(k for b in sampler for k in b)
    return out


# ---------------------------------------------------------------------------- mixing
def test_swrr_nginx_sequence_and_shares_over_every_window():
    assert smooth_weighted_round_robin([5, 1, 1], 7).tolist() == [0, 0, 1, 0, 2, 0, 0]
    weights = {"a": 0.5, "b": 0.3, "c": 0.2}
    ds = Toy(40, weights)
    sampler = CurriculumBatchSampler(ds, batch_size=6, seed=1)
    assert len(sampler) == 7  # ceil(40 / 6): the plain loader's batch count
    keys = _flat(sampler, 3)  # 120 picks, across epoch boundaries
    assert len(keys) == 120
    src = np.array(_sources(ds, keys))
    for name, w in weights.items():
        c = np.concatenate([[0], np.cumsum(src == name)])
        k = np.arange(len(c))
        assert np.abs(c - k * w).max() < 1  # every prefix: within one example
        for length in range(1, 60):
            window = c[length:] - c[:-length]
            assert np.abs(window - length * w).max() < 2  # every window: the nearest counts, +-1
    # Within a source, a seeded shuffled order that cycles: the first len(pool) picks are all distinct.
    a_keys = [k for k, s in zip(keys, src, strict=True) if s == "a"]
    pool = np.flatnonzero(ds.source == "a").tolist()
    assert sorted(a_keys[: len(pool)]) == pool and a_keys[: len(pool)] != pool
    assert sorted(a_keys[len(pool) : 2 * len(pool)]) == pool  # the next pass: reshuffled


def test_two_sources_any_window_within_one_example():
    ds = Toy(40, {"a": 0.7, "b": 0.3})
    src = np.array(_sources(ds, _flat(CurriculumBatchSampler(ds, batch_size=8, seed=0), 2)))
    c = np.concatenate([[0], np.cumsum(src == "b")])
    for length in range(1, 80):
        assert np.abs((c[length:] - c[:-length]) - 0.3 * length).max() < 1


def test_mixing_needs_a_source_field():
    class NoSource(Toy):
        def example_fields(self):
            return {"difficulty": self.difficulty}

    with pytest.raises(ConfigError, match="no 'source' field"):
        CurriculumBatchSampler(NoSource(8, {"a": 1.0}), batch_size=2, seed=0)


# ---------------------------------------------------------------------------- phases
def test_phase_switch_at_until_step_filters_and_weights():
    ds = Toy(40, {"a": 0.5, "b": 0.25, "c": 0.25})
    phases = [
        {"until_step": 3, "weights": {"a": 1.0}, "filter": {"difficulty": {"max": 9}}},
        {"until_step": 5, "filter": {"source": ["b", "c"], "phase": 1}},
    ]
    s = CurriculumBatchSampler(ds, batch_size=4, seed=0, accumulation_steps=2, phases=phases)
    # 10 batches per epoch, 5 steps per epoch: micro-batch p of epoch e is step 5e + p // 2.
    by_step: dict[int, list[int]] = {}
    for e in range(2):
        for p in range(len(s)):
            by_step.setdefault(s.step_of(e, p), []).extend(s.batch(e, p))
    for step in (0, 1, 2):  # phase 0: only source a, only difficulty <= 9
        assert set(_sources(ds, by_step[step])) == {"a"}
        assert all(ds.difficulty[k] <= 9 for k in by_step[step])
    for step in (3, 4):  # phase 1: b and c with phase == 1, by the data's weights (equal here)
        assert set(_sources(ds, by_step[step])) <= {"b", "c"}
        assert all(ds.example_fields()["phase"][k] == 1 for k in by_step[step])
    later = [k for step in range(5, 10) for k in by_step[step]]  # after the phases: all data, data's weights
    assert _sources(ds, later).count("a") == 20 and set(_sources(ds, later)) == {"a", "b", "c"}
    assert any(ds.difficulty[k] > 9 for k in later)


def test_phase_config_errors_name_the_fields_and_sources():
    ds = Toy(16, {"a": 1.0})
    with pytest.raises(ConfigError, match=r"phases\[0\]\.filter\.level.*difficulty, phase, source"):
        CurriculumBatchSampler(ds, batch_size=4, seed=0, phases=[{"until_step": 2, "filter": {"level": 1}}])
    with pytest.raises(ConfigError, match=r"source\(s\) \['z'\].*a, b, c"):
        CurriculumBatchSampler(ds, batch_size=4, seed=0, phases=[{"until_step": 2, "weights": {"z": 1.0}}])
    with pytest.raises(ConfigError, match="keeps no example"):
        CurriculumBatchSampler(ds, batch_size=4, seed=0, phases=[{"until_step": 2, "filter": {"difficulty": 99}}])
    plain = InMemoryDataset((torch.zeros(8, 2), torch.zeros(8)))
    with pytest.raises(ConfigError, match="no example_fields"):
        CurriculumBatchSampler(plain, batch_size=4, seed=0, phases=[{"until_step": 2, "filter": {"x": 1}}])


# ---------------------------------------------------------------------------- difficulty
def test_difficulty_pacing_eligible_set_grows_to_all_data():
    ds = Toy(40)
    s = CurriculumBatchSampler(
        ds, batch_size=8, seed=0, difficulty="field", start_fraction=0.25, full_data_step=4, total_steps=20
    )
    easiest = set(np.argsort(ds.difficulty)[:10].tolist())  # ceil(0.25 * 40)
    assert s.fraction_at(0) == 0.25 and s.fraction_at(2) == 0.625 and s.fraction_at(4) == s.fraction_at(9) == 1.0
    assert set(s.batch(0, 0)) <= easiest  # step 0 draws only from the easiest quarter
    mid = {k for e in range(3) for p in range(len(s)) if s.step_of(e, p) == 2 for k in s.batch(e, p)}
    assert mid <= set(np.argsort(ds.difficulty)[:25].tolist())
    full = {k for e in range(1, 4) for k in _flat_epoch(s, e)}  # steps 5..19 >= full_data_step
    assert len(full - easiest) > 15  # hard examples are drawn once all data is eligible
    assert s.batch(2, 3) == s.batch(2, 3)  # a pure function of (epoch, position)


def _flat_epoch(s: CurriculumBatchSampler, epoch: int) -> list:
    return [k for p in range(len(s)) for k in s.batch(epoch, p)]


def test_difficulty_and_length_need_capable_data():
    plain = InMemoryDataset((torch.zeros(8, 2), torch.zeros(8)))
    with pytest.raises(ConfigError, match="difficulty_field 'difficulty'.*example_fields.*difficulty: loss"):
        CurriculumBatchSampler(plain, batch_size=4, seed=0, difficulty="field", total_steps=4)
    with pytest.raises(ConfigError, match=r"\(index, max_length\) keys"):
        CurriculumBatchSampler(plain, batch_size=4, seed=0, start_length=2, max_length=8, total_steps=4)
    # Loss-based difficulty works on any map-style data (no example fields needed).
    s = CurriculumBatchSampler(plain, batch_size=4, seed=0, difficulty="loss", total_steps=4)
    with pytest.raises(ConfigError, match="scoring pass"):
        next(iter(s))
    s.set_scores(np.arange(8.0))
    assert set(s.batch(0, 0)) <= {0, 1, 2}  # ceil(0.3 * 8) easiest


def test_score_by_loss_ranks_a_clearly_hard_example_last():
    torch.manual_seed(0)
    x = torch.randn(30, 4)
    y = x.sum(1)
    y[17] = 50.0
    model = nn.Sequential(nn.Linear(4, 1), nn.Flatten(0))
    model.train()
    scores = score_by_loss(model, InMemoryDataset((x, y)), get_loss_strategy("regression"), batch_size=8)
    assert scores.shape == (30,) and int(np.argmax(scores)) == 17
    assert model.training  # the mode is restored


# ---------------------------------------------------------------------------- length, epochs
def test_length_cap_grows_linearly_to_max_length():
    ds = Toy(32)
    s = CurriculumBatchSampler(ds, batch_size=4, seed=0, start_length=2, max_length=8, full_length_step=4)
    caps = {s.step_of(e, p): s.batch(e, p)[0][1] for e in range(2) for p in range(len(s))}
    assert [caps[t] for t in range(8)] == [2, 3, 5, 6, 8, 8, 8, 8]
    assert all(isinstance(k, tuple) and k[1] == caps[0] for k in s.batch(0, 0))


def test_set_epoch_changes_the_order_deterministically():
    ds = Toy(24)
    s = CurriculumBatchSampler(ds, batch_size=5, seed=3, start_length=4, max_length=8, full_length_step=3)
    s.set_epoch(0)
    e0 = [k[0] for b in s for k in b]
    s.set_epoch(1)
    e1 = [k[0] for b in s for k in b]
    assert sorted(e0) == sorted(e1) == list(range(24))  # each epoch: every example once
    assert e0 != e1
    s.set_epoch(1)
    assert [k[0] for b in s for k in b] == e1
    other = CurriculumBatchSampler(ds, batch_size=5, seed=4, start_length=4, max_length=8, full_length_step=3)
    assert [k[0] for b in other for k in b] != e0  # the seed matters


# ---------------------------------------------------------------------------- the Trainer, exact resume
class StopAt:
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer, output):
        if trainer.state.step == self.step:
            trainer.request_stop("test")


def _config(tmp_path: Path, name: str, **curriculum):
    return (
        TrainingConfigBuilder()
        .with_training(
            max_steps=14, batch_size=4, gradient_accumulation_steps=2, learning_rate=1e-2, device="cpu", seed=5
        )
        .with_scheduler(name="constant")
        .with_data(max_length=FEATURES)
        .with_section("curriculum", **curriculum)
        .with_checkpointing(save_every_n_steps=3, save_every_n_epochs=None, keep_last_n=10)
        .with_tracking(output_dir=str(tmp_path / "runs"), run_name=name, progress="off")
        .build()
    )


def _train(config, data, *, stop_at=None, resume_from=None):
    torch.manual_seed(0)
    model = Recorder()
    callbacks = [StopAt(stop_at)] if stop_at else []
    trainer = Trainer(model, None, config, TaskSpec.regression("toy"), callbacks=callbacks)
    results = trainer.train(data, None, resume_from=resume_from)
    return model, trainer, results


CASES = {
    "mixing+phases+length": (
        {"a": 0.5, "b": 0.3, "c": 0.2},
        None,
        {
            "phases": [{"until_step": 4, "weights": {"a": 1.0, "b": 1.0}, "filter": {"phase": 0}}],
            "start_length": 3,
            "full_length_step": 10,
        },
    ),
    "loss difficulty+length": (None, 9, {"difficulty": "loss", "start_fraction": 0.5, "start_length": 4}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_trainer_resumes_mid_epoch_exactly(tmp_path, case):
    weights, hard, curriculum = CASES[case]
    data = Toy(40, weights, hard=hard)  # 10 micro-batches = 5 steps per epoch; 14 steps ~ 3 epochs
    straight, trainer, _ = _train(_config(tmp_path, "straight", **curriculum), data)
    sampler = trainer.train_loader.batch_sampler
    assert isinstance(sampler, CurriculumBatchSampler) and len(trainer.train_loader) == 10
    assert len(straight.seen) == 14 * 2 * 4

    # The schedule is visible in what the model trained on.
    caps = [cap for _, cap in straight.seen]
    assert caps[0] < caps[-1] == FEATURES and caps == sorted(caps)
    first_steps = [i for i, _ in straight.seen[: 4 * 2 * 4]]
    if weights is not None:  # phase 0: sources a and b only, phase-0 examples only
        assert set(_sources(data, first_steps)) == {"a", "b"} and all((i // 3) % 2 == 0 for i in first_steps)
        assert "c" in _sources(data, [i for i, _ in straight.seen[4 * 8 :]])
    else:  # the scoring pass ranked the hard example last: not eligible early on
        assert int(np.argmax(sampler.scores)) == hard and hard not in first_steps
        assert hard in [i for i, _ in straight.seen]

    cfg = _config(tmp_path, "resumed", **curriculum)
    first, _, _ = _train(cfg, data, stop_at=7)
    checkpoint = tmp_path / "runs" / "default" / "resumed" / "checkpoints" / "ckpt-000000006"
    assert checkpoint.is_dir()  # step 6 = epoch 1, micro-batch 2: mid-epoch
    resumed, trainer2, results = _train(cfg, data, resume_from=checkpoint)
    assert results["steps"] == 14
    assert first.seen[: 6 * 8] + resumed.seen == straight.seen
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    if hard is not None:  # the scores came from the checkpoint (the starting model's), not a rescoring
        assert np.array_equal(trainer2.train_loader.batch_sampler.scores, sampler.scores)


def test_curriculum_with_a_dataloader_is_refused(tmp_path):
    loader = torch.utils.data.DataLoader(Toy(8), batch_size=2)
    config = _config(tmp_path, "dl", start_length=3)
    with pytest.raises(ConfigError, match="DataLoader"):
        Trainer(Recorder(), None, config, TaskSpec.regression("toy")).train(loader, None)
