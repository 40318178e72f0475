"""`trainengine train --seeds` / `--cv`: a group of real tiny runs as one result, on disk and in the DB."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from trainengine.cli._groups import parse_seeds
from trainengine.cli.main import main
from trainengine.data._folds import make_folds
from trainengine.errors import DataError
from trainengine.tracking import ExperimentDB

TINY = [
    "--dataset",
    "digits",
    "--max-steps",
    "4",
    "--output-dir",
    "runs",
    "--set",
    "tracking.progress=off",
    "--set",
    "monitoring.profile_data=false",
    "--set",
    "data.max_train_samples=150",
    "--set",
    "data.max_val_samples=60",
]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_seeds_group_summarises_real_children_and_links_them(in_tmp, capsys):
    assert main(["train", *TINY, "--seeds", "0,1", "--run-name", "grp"]) == 0
    out = capsys.readouterr().out
    group = in_tmp / "runs" / "default" / "grp"
    assert (
        "seeds group grp: 2 runs" in out
        and "val/accuracy" in out
        and f"group directory: {Path('runs/default/grp')}" in out
    )

    # Each child is an ordinary, complete run directory inside the group's, trained with its seed.
    children = [group / "seed-0", group / "seed-1"]
    facts = [_json(c / "run.json") for c in children]
    assert [f["seed"] for f in facts] == [0, 1] and all(f["status"] == "completed" for f in facts)
    assert all((c / "model.safetensors").is_file() for c in children)
    finals = [f["results"]["final_metrics"] for f in facts]
    assert finals[0]["val/loss"] != finals[1]["val/loss"]  # the seeds really differ

    # The summary is the arithmetic of what the children recorded themselves.
    summary = _json(group / "seeds_summary.json")
    assert (summary["schema_version"], summary["kind"], summary["num_children"]) == (1, "seeds", 2)
    loss = summary["metrics"]["val/loss"]
    assert loss["values"] == [finals[0]["val/loss"], finals[1]["val/loss"]]
    assert loss["mean"] == pytest.approx(np.mean(loss["values"]))
    assert loss["std"] == pytest.approx(np.std(loss["values"], ddof=1))
    assert loss["ci"][0] < loss["mean"] < loss["ci"][1]
    best = summary["metrics"]["best/val/accuracy"]["values"]
    assert best == [f["results"]["best_metric"] for f in facts]

    parent = _json(group / "run.json")
    assert parent["status"] == "completed" and parent["end_time"] is not None
    assert parent["group"]["kind"] == "seeds" and [c["name"] for c in parent["group"]["children"]] == [
        "seed-0",
        "seed-1",
    ]
    assert parent["results"]["best_metric"] == pytest.approx(np.mean(best))
    assert "--seeds 0,1" in (group / "config.yaml").read_text(encoding="utf-8")  # how to re-run the group

    # The database: one parent row of kind seeds, its children pointing at it, one experiment.
    with ExperimentDB(in_tmp / "runs" / "experiments.db") as db:
        (row,) = db.list_runs({"group_kind": "seeds"})
        assert (row["run_name"], row["status"], row["num_children"], row["experiment"]) == (
            "grp",
            "completed",
            2,
            "default",
        )
        kids = db.get_children(row["run_id"])
        assert [k["run_name"] for k in kids] == ["seed-0", "seed-1"]
        assert {k["experiment"] for k in kids} == {"default"} and all(k["status"] == "completed" for k in kids)
        assert db.get_run(row["run_id"])["metrics"]["val/loss/mean"][0]["value"] == pytest.approx(loss["mean"])

    # runs list shows the group as one row with its kind and child count.
    assert main(["runs", "list"]) == 0
    listing = capsys.readouterr().out
    assert "default/grp" in listing and "seeds x2" in listing and "seed-0" not in listing
    assert main(["runs", "show", "default/grp/seed-1"]) == 0  # a child is reachable as <exp>/<group>/<child>

    # A child is exactly `train --seed S`: same split, same initial weights, same result.
    assert main(["train", *TINY, "--seed", "1", "--run-name", "solo"]) == 0
    solo = _json(in_tmp / "runs" / "default" / "solo" / "run.json")["results"]["final_metrics"]
    assert solo["val/loss"] == pytest.approx(finals[1]["val/loss"], abs=1e-6)


def test_cv_group_trains_one_child_per_fold_of_the_training_split(in_tmp, capsys):
    assert main(["train", *TINY, "--cv", "3", "--run-name", "cv"]) == 0
    capsys.readouterr()
    group = in_tmp / "runs" / "default" / "cv"
    summary = _json(group / "cv_summary.json")
    details = summary["details"]
    assert (details["splitter"], details["k"], details["num_samples"]) == ("StratifiedKFold", 3, 150)
    assert sum(details["fold_sizes"]) == 150
    facts = [_json(group / f"fold-{i}" / "run.json") for i in range(3)]
    # Fold i validates on fold i and trains on the rest: sizes add up, and the folds' validation
    # data really differ (their fingerprints are computed by the trainer from the data it got).
    assert [f["data"]["num_val_samples"] for f in facts] == details["fold_sizes"]
    assert all(f["data"]["num_train_samples"] + f["data"]["num_val_samples"] == 150 for f in facts)
    assert len({f["data"]["val_fingerprint"] for f in facts}) == 3
    assert summary["metrics"]["val/accuracy"]["values"] == [
        f["results"]["final_metrics"]["val/accuracy"] for f in facts
    ]
    with ExperimentDB(in_tmp / "runs" / "experiments.db") as db:
        (row,) = db.list_runs({"group_kind": "cv"})
        assert [k["run_name"] for k in db.get_children(row["run_id"])] == ["fold-0", "fold-1", "fold-2"]


def test_folds_are_stratified_disjoint_and_cover_the_data():
    labels = np.array([0] * 30 + [1] * 12 + [2] * 6)
    folds, how = make_folds(len(labels), 3, "classification", seed=0, labels=labels)
    assert how["splitter"] == "StratifiedKFold"
    val = np.concatenate([va for _, va in folds])
    assert sorted(val.tolist()) == list(range(48))  # every sample validated exactly once
    for train_idx, val_idx in folds:
        assert not set(train_idx) & set(val_idx)
        assert np.bincount(labels[val_idx], minlength=3).tolist() == [10, 4, 2]  # class shares kept
    lm, how = make_folds(10, 2, "language_modeling", seed=0)
    assert how["shuffle"] is False and lm[0][1].tolist() == [0, 1, 2, 3, 4]  # contiguous: windows overlap in text
    with pytest.raises(
        DataError, match="--cv 7: the smallest class of the training data has 6 samples, fewer than the 7 folds"
    ):
        make_folds(len(labels), 7, "classification", seed=0, labels=labels, option="--cv {k}")
    with pytest.raises(DataError, match="only 10 samples; use at most 10 folds"):
        make_folds(10, 11, "regression", seed=0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds", "0,1", "--resume", "auto"], "--resume cannot be combined with --seeds"),
        (["--cv", "3", "--resume", "auto"], "--resume cannot be combined with --cv"),
        (["--seeds", "0,1", "--cv", "3"], "--seeds and --cv together"),
        (["--seeds", "0"], "names one seed; a group needs at least two"),
        (["--seeds", "0,x"], "'x' is not a non-negative integer or a range"),
        (["--seeds", "1,0-2"], "repeats seed 1"),
        (["--cv", "1"], "needs at least 2 folds"),
    ],
)
def test_bad_group_flags_are_refused_before_anything_runs(in_tmp, capsys, args, message):
    assert main(["train", *TINY, *args]) == 2
    assert message in capsys.readouterr().err
    assert not (in_tmp / "runs").exists()


def test_a_failing_child_fails_the_group_with_its_reason(in_tmp, capsys):
    bad = ["--train-file", "missing.csv", *TINY[2:]]
    assert main(["train", *bad, "--seeds", "0,1", "--run-name", "broken"]) == 2
    assert "missing.csv" in capsys.readouterr().err
    parent = _json(in_tmp / "runs" / "default" / "broken" / "run.json")
    assert parent["status"] == "failed" and parent["error"].startswith("child seed-0: DataError")
    assert [c["status"] for c in parent["group"]["children"]] == ["failed"]  # stopped at the first failure
    with ExperimentDB(in_tmp / "runs" / "experiments.db") as db:
        (row,) = db.list_runs({"group_kind": "seeds"})
        assert row["status"] == "failed" and "missing.csv" in row["error"]


def test_parse_seeds_ranges():
    assert parse_seeds("0-2,7") == [0, 1, 2, 7]
