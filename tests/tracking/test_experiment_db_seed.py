"""Seed 000's ExperimentDB examples, run as written with only the import changed.

Where the seed trains (``trainer.train(...)``) the result is a number computed from the config,
so the best trial is known in advance.
"""

from __future__ import annotations

import math

from trainengine import TrainingConfigBuilder
from trainengine.tracking import ExperimentDB


def _fake_train(config) -> dict[str, float]:
    # A loss bowl with its minimum at lr = 10**-3.5, batch size 16: a stand-in for trainer.train(...).
    return {"best_val_loss": 0.3 + abs(math.log10(config.learning_rate) + 3.5) + abs(config.batch_size - 16) / 100}


def test_seed_log_hyperparameter_sweeps(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    grid = [(lr, bs) for lr in (1e-2, 10**-3.5, 1e-4, 1e-5) for bs in (8, 16, 32, 4, 24)]  # 20 trials

    # --- seed 000, "Log Hyperparameter Sweeps to ExperimentDB" ---
    db = ExperimentDB("experiments.db")

    for trial in range(20):
        config = (
            TrainingConfigBuilder.baseline()
            .with_training(learning_rate=grid[trial][0], batch_size=grid[trial][1])
            .build()
        )
        run_id = db.log_run(
            run_name=f"hparam-search-trial-{trial}",
            config=config.to_dict(),
            notes=f"LR={config.learning_rate}, BS={config.batch_size}",
        )

        results = _fake_train(config)

        db.log_metric(run_id, "val_loss", results["best_val_loss"])
        db.update_run_status(run_id, "completed")

    # Analysis
    best = db.get_best_run("val_loss", mode="min")
    print(f"Best: {best['run_name']}, loss={best['best_value']:.4f}")
    print(f"Config: {best['config']}")
    # --- end of seed code ---

    out = capsys.readouterr().out
    assert "Best: hparam-search-trial-6, loss=0.3000" in out  # grid[6] = (10**-3.5, 16), the bowl's bottom
    assert best["config"]["training"]["batch_size"] == 16
    assert math.isclose(best["config"]["training"]["learning_rate"], 10**-3.5)
    assert f"Config: {best['config']}" in out
    runs = db.list_runs()
    assert len(runs) == 20 and all(r["status"] == "completed" for r in runs)
    assert runs[-1]["notes"] == "LR=0.01, BS=8"
    assert (tmp_path / "experiments.db").exists()
    db.close()


def test_seed_document_experiment_results(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = TrainingConfigBuilder.baseline().build()
    losses = [0.52, 0.44, 0.39, 0.36, 0.35]  # what trainer.train would have reported per epoch

    # --- seed 000, "Document Experiment Results" ---
    db = ExperimentDB("experiments.db")

    run_id = db.log_run(
        run_name="baseline-v2-larger-model",
        config=config.to_dict(),
        notes="""
        Testing 24-layer model (vs 12-layer baseline).
        Hypothesis: larger model should improve val accuracy.
        Previous best: val_loss=0.38 (12-layer)
        Expected: val_loss=0.35 (24-layer)
        """,
    )

    # Log results
    for epoch, loss in enumerate(losses):
        db.log_metric(run_id, "val_loss", loss, epoch=epoch)

    # Document decision
    db.update_run_status(run_id, "completed")
    # Later: retrieve run and see full context
    # --- end of seed code ---

    db.close()
    with ExperimentDB(tmp_path / "experiments.db") as later:  # months later, another process
        run = later.get_run(run_id)
    assert run["run_name"] == "baseline-v2-larger-model" and run["status"] == "completed"
    assert "Hypothesis: larger model should improve val accuracy." in run["notes"]
    assert run["config"] == config.to_dict()
    assert [(p["epoch"], p["value"]) for p in run["metrics"]["val_loss"]] == list(enumerate(losses))
    assert run["end_time"] is not None
