"""Wall-clock budgets the README promises, measured here instead of asserted in unit tests.

Unit tests check what a run reaches (accuracy, loss drop) by steps; how long it takes depends on
the machine and its load, so the time budgets live here:

* ``quickstart``: `make demo` (digits MLP, >= 0.95 validation accuracy) within 180 s on 2 cores;
* ``lm_tiny``: configs/lm_tiny.yaml, validation loss 40% below its step-0 value within 120 s;
* ``pystdlib``: building the pystdlib corpus within 2 s.

Usage:
    python benchmarks/budgets.py                         # all three; exit 1 when one is over
    python benchmarks/budgets.py --cases pystdlib --json benchmarks/results/budgets.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def quickstart(tmp: Path) -> dict[str, object]:
    from trainengine.cli._quickstart import quickstart_config
    from trainengine.cli._train import run_training

    config = quickstart_config(output_dir=str(tmp))
    config.tracking.progress = "off"
    results = run_training(config)
    return {"budget_s": 180.0, "reached": results["best_metric"] >= 0.95, "best_metric": results["best_metric"]}


def lm_tiny(tmp: Path) -> dict[str, object]:
    from trainengine import Trainer, TrainingConfig
    from trainengine.engine import build_from_config

    config = TrainingConfig.load(REPO / "configs" / "lm_tiny.yaml")
    config.tracking.output_dir = str(tmp)
    config.tracking.progress = "off"
    config.training.max_steps = 150
    config.training.eval_interval_steps = 50
    built = build_from_config(config)
    results = Trainer(built.model, built.model_config, config, built.task_spec).train(
        built.splits.train, built.splits.val
    )
    evals = results["history"]["val"]
    first = evals[0]["val/loss"]
    return {
        "budget_s": 120.0,
        "reached": any(r["val/loss"] <= 0.6 * first for r in evals),
        "val_loss": [r["val/loss"] for r in evals],
    }


def pystdlib(tmp: Path) -> dict[str, object]:
    from trainengine.data import load_builtin

    load_builtin("pystdlib")
    return {"budget_s": 2.0, "reached": True}


CASES = {"quickstart": quickstart, "lm_tiny": lm_tiny, "pystdlib": pystdlib}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"Comma-separated, from: {', '.join(CASES)}.")
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    args = parser.parse_args()
    rows, failed = {}, False
    for name in [c.strip() for c in args.cases.split(",") if c.strip()]:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            row = CASES[name](Path(tmp))
            row["seconds"] = time.perf_counter() - start
        ok = row["reached"] and row["seconds"] <= row["budget_s"]
        failed |= not ok
        verdict = "ok" if ok else "OVER BUDGET OR NOT REACHED"
        print(f"{name:<11} {row['seconds']:7.1f} s (budget {row['budget_s']:.0f} s)  {verdict}")
        rows[name] = row
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
