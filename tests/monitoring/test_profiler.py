"""monitoring.profile_steps / trainengine train --profile N: a trace and the top operators of N steps."""

from __future__ import annotations

import json
from pathlib import Path

from trainengine import TaskSpec, Trainer, TrainingConfigBuilder
from trainengine.cli.main import main
from trainengine.data import load_builtin
from trainengine.models import MLP


def test_profiles_the_steps_after_warm_up_and_writes_trace_and_summary(tmp_path):
    config = (
        TrainingConfigBuilder.quick_prototype()
        .with_training(max_steps=8, batch_size=16, eval_every_epoch=False)
        .with_tracking(output_dir=str(tmp_path), progress="off", experiment_db=False)
        .with_monitoring(profile_steps=3, profile_warmup_steps=2)
        .build()
    )
    splits = load_builtin("digits", max_train_samples=256, max_val_samples=32)
    results = Trainer(MLP(64, 10), None, config, TaskSpec.classification("digits", 10)).train(splits.train)
    assert results["steps"] == 8  # profiling does not cut the run short
    folder = Path(results["run_dir"]) / "profile"
    traces = list(folder.glob("*.pt.trace.json"))
    assert len(traces) == 1
    events = json.loads(traces[0].read_text())["traceEvents"]
    steps = {e["name"] for e in events if str(e.get("name", "")).startswith("ProfilerStep#")}
    # The profiler numbers its steps from 0: #2-#4 are optimizer steps 3-5, after 2 warm-up steps.
    assert steps == {"ProfilerStep#2", "ProfilerStep#3", "ProfilerStep#4"}
    summary = json.loads((folder / "profile_summary.json").read_text())
    assert summary["steps"] == 3 and summary["device"] == "cpu"
    names = [row["name"] for row in summary["rows"]]
    assert any(n in ("aten::addmm", "aten::mm", "aten::linear") for n in names)
    assert all(row["calls"] >= 1 and row["self_ms"] >= 0 for row in summary["rows"])
    text = (folder / "profile_summary.txt").read_text()
    assert "self_cpu_time_total" in text and "self_cpu_memory_usage" in text


def test_the_cli_flag_profiles_and_a_short_run_says_nothing_was_recorded(tmp_path, caplog):
    code = main(["train", "--preset", "quick_prototype", "--dataset", "digits", "--max-steps", "4",
                 "--output-dir", str(tmp_path), "--run-name", "p", "--profile", "2",
                 "--set", "monitoring.profile_warmup_steps=1", "--set", "tracking.progress=off"])  # fmt: skip
    assert code == 0
    summary = json.loads((tmp_path / "default" / "p" / "profile" / "profile_summary.json").read_text())
    assert summary["steps"] == 2 and summary["warmup_steps"] == 1
    code = main(["train", "--preset", "quick_prototype", "--dataset", "digits", "--max-steps", "2",
                 "--output-dir", str(tmp_path), "--run-name", "q", "--profile", "2",
                 "--set", "tracking.progress=off"])  # fmt: skip
    assert code == 0 and "nothing was recorded" in caplog.text
    assert not (tmp_path / "default" / "q" / "profile" / "profile_summary.json").exists()
