"""Median pruning against no pruning: the same 12-trial learning-rate x batch-size sweep on digits.

Both sweeps run ``trainengine.tune.tune`` on the ``baseline()`` preset (digits, MLP 64-256-256-10,
10 epochs, evaluation every epoch) over the same space with the same TPE sampler seed; the only
difference is ``pruner="median"`` vs ``pruner="none"``. Measured:

* total optimizer steps of each sweep (from every trial's run record), and the saving
  (target: >= 30% fewer steps with pruning);
* the best objective value of each sweep (the task's monitored metric: ``val/accuracy`` for
  digits), against the noise of one configuration trained with different seeds (target: the
  same best value within that noise);
* the ``baseline()`` preset itself (lr 1e-3, batch 32) against the best configuration found
  (target: the best configuration beats it), each trained with the same seeds.

Usage:
    python benchmarks/tune_pruning.py                          # about 5 minutes on 2 (shared) CPU cores
    python benchmarks/tune_pruning.py --json benchmarks/results/tune_pruning.json
    python benchmarks/tune_pruning.py --pruner-startup 3       # MedianPruner(n_startup_trials=3)
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

SPACE: dict[str, dict[str, Any]] = {
    "training.learning_rate": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
    "training.batch_size": {"type": "categorical", "choices": [16, 32, 64, 128]},
}


def base_config(output_dir: Path, epochs: int, overrides: dict[str, Any] | None = None) -> Any:
    """The ``baseline()`` preset on digits, with the quickstart's MLP; no checkpoints (not measured here).

    ``overrides``: dotted keys (``{"training.learning_rate": 3e-3}``), as a sweep's best params.
    """
    from trainengine import TrainingConfigBuilder

    nested: dict[str, dict[str, Any]] = {}
    for key, value in (overrides or {}).items():
        section, field = key.split(".", 1)
        nested.setdefault(section, {})[field] = value
    return (
        TrainingConfigBuilder.baseline()
        .with_data(dataset="digits")
        .with_model(architecture="mlp", hidden_dims=[256, 256], dropout=0.1)
        .with_training(epochs=epochs)
        .with_checkpointing(enabled=False)
        .with_tracking(experiment_name="tune_pruning", output_dir=str(output_dir), progress="off")
        .with_overrides(nested)
        .build()
    )


def sweep(pruner: str, trials: int, epochs: int, seed: int, workdir: Path, startup: int | None) -> dict[str, Any]:
    """One sweep; returns its best value, total optimizer steps and per-trial rows.

    ``startup``: the median pruner's ``n_startup_trials`` (None = ``tune``'s own ``"median"``).
    """
    import optuna

    from trainengine.tune import tune

    out = workdir / f"sweep_{pruner}"
    the_pruner: Any = pruner
    if pruner == "median" and startup is not None:
        the_pruner = optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=1)
    start = time.perf_counter()
    result = tune(
        base_config(out, epochs), SPACE, trials, sampler="tpe", pruner=the_pruner, seed=seed, output_dir=str(out)
    )
    seconds = time.perf_counter() - start
    study = result.study
    rows = []
    for t in study.trials:
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "params": t.params,
                "value": t.value,
                "last_reported": t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None,
                "steps": _steps_of(t),
            }
        )
    total = sum(r["steps"] for r in rows)
    if total != result.total_steps:  # the run records and tune()'s own count must agree
        raise RuntimeError(f"run records count {total} steps, tune() reports {result.total_steps}")
    return {
        "pruner": pruner,
        "seconds": seconds,
        "total_steps": total,
        "num_pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
        "num_complete": sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials),
        "objective": result.objectives[0],
        "direction": result.directions[0],
        "best_value": result.best_value,
        "best_params": result.best_params,
        "trials": rows,
    }


def _steps_of(trial: Any) -> int:
    """Optimizer steps a trial took, from its run directory's run.json (``results.steps``)."""
    run_dir = trial.user_attrs.get("run_dir")
    if run_dir is None:
        raise RuntimeError(f"trial {trial.number} records no run_dir: {trial.user_attrs}")
    facts = json.loads((Path(run_dir) / "run.json").read_text())
    steps = (facts.get("results") or {}).get("steps", facts.get("step"))
    if steps is None:
        raise RuntimeError(f"{run_dir}/run.json records no step count (status {facts.get('status')})")
    return int(steps)


def train_fixed(overrides: dict[str, Any], seeds: list[int], epochs: int, workdir: Path) -> dict[str, Any]:
    """The best monitored metric of one configuration trained once per seed."""
    from trainengine.cli._train import run_training

    values = []
    for seed in seeds:
        config = base_config(workdir / "fixed", epochs, {**overrides, "training.seed": seed})
        results = run_training(config)
        values.append(results["best_metric"])
    return {
        "metric": results["best_metric_name"],
        "overrides": overrides,
        "values": values,
        "mean": statistics.fmean(values),
        "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12, help="Trials per sweep.")
    parser.add_argument("--epochs", type=int, default=10, help="Epochs per trial (the baseline preset's 10).")
    parser.add_argument("--seed", type=int, default=0, help="Sampler seed, the same for both sweeps.")
    parser.add_argument("--noise-seeds", type=int, default=3, help="Training seeds for the noise estimate.")
    parser.add_argument(
        "--pruner-startup",
        type=int,
        default=None,
        help="The median pruner's n_startup_trials (default: tune()'s pruner='median', which waits for 5).",
    )
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    args = parser.parse_args()

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pruned = sweep("median", args.trials, args.epochs, args.seed, work, args.pruner_startup)
        full = sweep("none", args.trials, args.epochs, args.seed, work, None)
        seeds = list(range(args.noise_seeds))
        sign = 1 if pruned["direction"] == "maximize" else -1
        best = max((pruned, full), key=lambda s: sign * s["best_value"])
        best_cfg = train_fixed(best["best_params"], seeds, args.epochs, work)
        baseline = train_fixed({}, seeds, args.epochs, work)

    saving = 1 - pruned["total_steps"] / full["total_steps"]
    gap = pruned["best_value"] - full["best_value"]
    noise = max(best_cfg["stdev"], baseline["stdev"])
    summary = {
        "pruner_startup_trials": args.pruner_startup if args.pruner_startup is not None else "tune() default (5)",
        "objective": f"{pruned['objective']} ({pruned['direction']})",
        "steps_pruned": pruned["total_steps"],
        "steps_unpruned": full["total_steps"],
        "step_saving": saving,
        "best_pruned": pruned["best_value"],
        "best_unpruned": full["best_value"],
        "best_gap": gap,
        "noise_stdev": noise,
        "best_config_mean": best_cfg["mean"],
        "baseline_mean": baseline["mean"],
        "targets": {
            ">=30% fewer steps": saving >= 0.30,
            "same best value within noise (|gap| <= 2 stdev)": abs(gap) <= 2 * noise,
            "best config beats baseline()": sign * (best_cfg["mean"] - baseline["mean"]) > 0,
        },
    }
    for s in (pruned, full):
        print(
            f"pruner={s['pruner']:<6} trials={len(s['trials'])} pruned={s['num_pruned']} "
            f"steps={s['total_steps']} best {s['objective']}={s['best_value']:.4f} {s['best_params']} "
            f"({s['seconds']:.0f} s)"
        )
    print(f"step saving with pruning: {saving:.1%} (target >= 30%)")
    print(f"best value gap (pruned - unpruned): {gap:+.4f}; seed noise stdev {noise:.4f}")
    print(
        f"best config {best['best_params']}: {best_cfg['metric']} {best_cfg['mean']:.4f} +- {best_cfg['stdev']:.4f} "
        f"vs baseline() {baseline['mean']:.4f} +- {baseline['stdev']:.4f} over {len(seeds)} seeds"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"summary": summary, "sweeps": [pruned, full], "best_config": best_cfg, "baseline": baseline}
        args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return 0 if all(summary["targets"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
