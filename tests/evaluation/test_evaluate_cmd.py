"""``trainengine evaluate`` on a real trained run: one checkpoint, several (comparison), --run, --model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from trainengine.cli._evaluate_cmd import evaluate_command

pytestmark = pytest.mark.slow  # one real (short) training run


def _app() -> typer.Typer:
    # The command on its own app: what main.py registers as `trainengine evaluate`.
    app = typer.Typer()
    app.command("evaluate")(evaluate_command)
    app.command("noop")(lambda: None)  # two commands: typer keeps the sub-command name
    return app


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    from trainengine.cli._train import run_training
    from trainengine.config import TrainingConfigBuilder

    root = tmp_path_factory.mktemp("eval_run")
    config = (
        TrainingConfigBuilder.quick_prototype()
        .with_data(dataset="digits")
        .with_model(architecture="mlp", hidden_dims=[32])
        .with_training(max_steps=40, batch_size=32, learning_rate=3e-3, seed=0)
        .with_checkpointing(enabled=True, save_every_n_steps=10, save_every_n_epochs=None)
        .with_tracking(experiment_name="digits", output_dir=str(root / "runs"), progress="off", experiment_db=False)
        .build()
    )
    return Path(run_training(config)["run_dir"])


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(_app(), ["evaluate", *args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def test_several_checkpoints_give_a_comparison_naming_the_best(digits_run, tmp_path) -> None:
    ckpts = sorted((digits_run / "checkpoints").glob("ckpt-*"))
    first, last = ckpts[0], ckpts[-1]
    out = _invoke(
        "--checkpoint", str(first), "--checkpoint", str(last), "--n-bootstrap", "100", "--output-dir", str(tmp_path)
    )
    a = json.loads((tmp_path / first.name / "eval_metrics.json").read_text())
    b = json.loads((tmp_path / last.name / "eval_metrics.json").read_text())
    assert a["checkpoint"] == str(first) and a["n"] == b["n"] > 0
    best = first.name if a["overall"]["accuracy"] > b["overall"]["accuracy"] else last.name
    assert f"best by accuracy: {best}" in out
    assert json.loads((tmp_path / "comparison.json").read_text())["best"] == best
    assert (tmp_path / last.name / "reliability.png").is_file() and (tmp_path / last.name / "worst.jsonl").is_file()


def test_run_directory_and_registry_version_evaluate_the_same_weights(digits_run, tmp_path) -> None:
    from trainengine.registry import ModelRegistry

    _invoke("--run", str(digits_run), "--n-bootstrap", "50", "--output-dir", str(tmp_path / "run"))
    by_run = json.loads((tmp_path / "run" / "eval_metrics.json").read_text())
    with ModelRegistry(tmp_path / "models.db") as reg:
        reg.register_model("digits", "1.0.0", digits_run)
        reg.promote_model(reg.get_model("digits", "1.0.0"), "production")
    _invoke("--model", "digits@production", "--registry", str(tmp_path / "models.db"), "--n-bootstrap", "50",
            "--output-dir", str(tmp_path / "reg"))  # fmt: skip
    by_ref = json.loads((tmp_path / "reg" / "eval_metrics.json").read_text())
    assert by_ref["overall"] == by_run["overall"] and by_ref["data_fingerprint"] == by_run["data_fingerprint"]


def test_refuses_no_source_or_two(tmp_path) -> None:
    result = CliRunner().invoke(_app(), ["evaluate", "--output-dir", str(tmp_path)])
    assert result.exit_code != 0
    assert "give exactly one of --checkpoint PATH (repeatable), --run RUN or --model NAME@ALIAS" in str(
        result.exception
    )


def test_data_files_with_a_segment_column(tmp_path) -> None:
    # A CSV-trained run evaluated on a held-out CSV: the run's own reader and preprocessing, the
    # threshold tuned on the run's validation file, metrics per value of the `source` column.
    import numpy as np

    from trainengine.cli._train import run_training
    from trainengine.config import TrainingConfigBuilder

    rng = np.random.default_rng(0)

    def write(name: str, n: int) -> list[str]:
        x1, x2 = rng.normal(size=n), rng.normal(size=n)
        y = (x1 + 0.5 * x2 > 0).astype(int)
        source = np.where(rng.random(n) < 0.3, "web", "app")
        rows = [f"{a:.4f},{b:.4f},{s},{t}" for a, b, s, t in zip(x1, x2, source, y, strict=True)]
        (tmp_path / name).write_text("x1,x2,source,y\n" + "\n".join(rows) + "\n")
        return list(source)

    write("train.csv", 200)
    write("val.csv", 60)
    source = write("test.csv", 90)
    config = (
        TrainingConfigBuilder.quick_prototype()
        .with_data(
            train_file=str(tmp_path / "train.csv"),
            val_file=str(tmp_path / "val.csv"),
            feature_columns=["x1", "x2"],
            label_column="y",
        )
        .with_model(architecture="mlp", hidden_dims=[8])
        .with_training(max_steps=10, batch_size=32, seed=0)
        .with_tracking(experiment_name="csv", output_dir=str(tmp_path / "runs"), progress="off", experiment_db=False)
        .build()
    )
    run_dir = run_training(config)["run_dir"]
    out = tmp_path / "eval"
    _invoke("--run", run_dir, "--data", str(tmp_path / "test.csv"), "--segment-key", "source", "--n-bootstrap", "50",
            "--output-dir", str(out))  # fmt: skip
    saved = json.loads((out / "eval_metrics.json").read_text())
    assert saved["n"] == 90
    assert {k: v["n"] for k, v in saved["per_segment"].items()} == {s: source.count(s) for s in ("app", "web")}
    assert saved["threshold"]["tuned_on"] == "threshold_data"
    worst = [json.loads(line) for line in (out / "worst.jsonl").read_text().splitlines()]
    assert all(source[row["index"]] == row["segment"] for row in worst)  # indices are rows of test.csv
