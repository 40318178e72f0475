"""Bootstrap confidence intervals: 10k examples x 1,000 resamples, the issue's budget is < 2 s on CPU.

Each case times ``bootstrap_ci`` (one metric) or ``bootstrap_cis`` (all the task's metrics on one
set of resamples, what ``evaluate`` does) on synthetic data, median of ``--repeats`` runs.

Usage:
    python benchmarks/bootstrap.py                       # exit 1 when a budgeted case is over 2 s
    python benchmarks/bootstrap.py --n 10000 --resamples 1000 --json benchmarks/results/bootstrap.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from trainengine.evaluation import bootstrap_ci, bootstrap_cis, metrics_for

BUDGET_S = 2.0


def _classification(n: int, classes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, classes, n)
    logits = rng.normal(size=(n, classes)) + 1.5 * np.eye(classes)[labels]
    return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True), labels


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    binary, multi = _classification(args.n, 2, rng), _classification(args.n, 10, rng)
    targets = rng.normal(size=args.n)
    regression = (targets + rng.normal(scale=0.5, size=args.n), targets)
    cases = {
        # (callable, budgeted?)
        "accuracy (binary)": (lambda: bootstrap_ci("accuracy", *binary, n_bootstrap=args.resamples), True),
        "mse": (lambda: bootstrap_ci("mse", *regression, n_bootstrap=args.resamples), True),
        "f1_macro (10 classes)": (lambda: bootstrap_ci("f1_macro", *multi, n_bootstrap=args.resamples), True),
        "roc_auc (binary)": (lambda: bootstrap_ci("roc_auc", *binary, n_bootstrap=args.resamples), True),
        "all 11 classification metrics (binary)": (
            lambda: bootstrap_cis(metrics_for("classification", *binary), *binary, n_bootstrap=args.resamples),
            False,
        ),
        "all 5 regression metrics": (
            lambda: bootstrap_cis(metrics_for("regression", *regression), *regression, n_bootstrap=args.resamples),
            False,
        ),
        "roc_auc (10 classes, one-vs-rest)": (
            lambda: bootstrap_ci("roc_auc", *multi, n_bootstrap=args.resamples),
            False,
        ),
    }
    results, over = {}, []
    for name, (fn, budgeted) in cases.items():
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        results[name] = {"seconds": round(seconds, 3), "budget_s": BUDGET_S if budgeted else None}
        flag = "" if not budgeted else (" OK" if seconds < BUDGET_S else " OVER")
        print(f"{name:<42} {seconds:7.3f} s{flag}")
        if budgeted and seconds >= BUDGET_S:
            over.append(name)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"n": args.n, "resamples": args.resamples, "cases": results}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 1 if over else 0


if __name__ == "__main__":
    raise SystemExit(main())
