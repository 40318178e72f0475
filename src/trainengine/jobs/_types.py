"""The built-in job types: what a job's process runs (training, retraining, evaluation, export, tune).

A runner is ``runner(config: dict, context: JobContext) -> dict``: it runs in the job's own
process (a crash or an out-of-memory kill ends only that job), and its result dict is kept on the
job record (``run_id`` / ``run_dir`` in it link the job to the run it produced). User job types
are registered with :func:`trainengine.registries.register_job_type`.

Training jobs resume. A ``training`` or ``retraining`` job trains into a run named after the job
(``<run_name or "job">-<job id>``) with ``resume_from="auto"``: when its worker died or was
stopped, the next attempt continues from that run's newest checkpoint instead of starting over.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainengine.jobs._store import JobError

__all__ = ["JobContext", "run_training_job", "run_evaluation_job", "run_export_job", "run_tune_job"]


@dataclass
class JobContext:
    """What a runner knows about its job.

    Attributes:
        job_id: The job's id in the queue.
        attempt: 1 for the first run, 2 after one failure or lost worker, ...
        work_dir: A folder of this job's own (its log lives here) for files the runner writes.
    """

    job_id: int
    attempt: int
    work_dir: Path

    @property
    def run_name(self) -> str:
        return f"job-{self.job_id}"


def _training_config(config: dict[str, Any]) -> Any:
    from trainengine.config import TrainingConfig

    if "training_config" in config:
        raw = config["training_config"]
        if not isinstance(raw, dict):
            raise JobError("config['training_config'] must be a dict: config.to_dict() of a TrainingConfig")
        return TrainingConfig.from_dict(raw)
    if "config_path" in config:
        return TrainingConfig.load(config["config_path"])
    raise JobError(
        "a training job needs config['training_config'] (TrainingConfig.to_dict()) or config['config_path'] "
        "(a YAML file)"
    )


def run_training_job(config: dict[str, Any], context: JobContext) -> dict[str, Any]:
    """Train (or retrain) from ``config["training_config"]``; a repeated attempt resumes the job's run."""
    import torch

    from trainengine.assembly import Trainer
    from trainengine.engine import build_from_config

    cfg = _training_config(config)
    name = f"{cfg.tracking.run_name or 'job'}-{context.job_id}"
    cfg = cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update={"run_name": name})})
    torch.manual_seed(cfg.training.seed)
    built = build_from_config(cfg)
    trainer = Trainer(built.model, built.model_config, cfg, built.task_spec)
    results = trainer.train(built.splits.train, built.splits.val, test_data=built.splits.test, resume_from="auto")
    run_dir = results.get("run_dir")
    keep = ("best_metric", "best_metric_name", "best_val_loss", "steps", "epochs", "stop_reason", "last_checkpoint")
    out = {k: results.get(k) for k in keep}
    out.update(run_dir=run_dir, run_id=Path(run_dir).name if run_dir else None)
    out["resumed_from"] = str(trainer.resume_from) if trainer.resume_from is not None else None
    return out


def run_evaluation_job(config: dict[str, Any], context: JobContext) -> dict[str, Any]:
    """Evaluate ``config["checkpoint"]`` (a checkpoint or run directory) on ``config.get("data")`` files."""
    from trainengine.evaluation import evaluate

    if "checkpoint" not in config:
        raise JobError("an evaluation job needs config['checkpoint']: a ckpt-* folder or a run directory")
    output_dir = Path(config.get("output_dir") or context.work_dir / "evaluation")
    files = config.get("data")
    report = evaluate(
        Path(config["checkpoint"]),
        [str(f) for f in files] if files else None,
        output_dir=output_dir,
        **{k: config[k] for k in ("n_bootstrap", "confidence", "seed", "device") if k in config},
    )
    return {"metrics": dict(report.overall), "n": report.n, "output_dir": str(output_dir)}


def run_export_job(config: dict[str, Any], context: JobContext) -> dict[str, Any]:
    """Export ``config["checkpoint"]`` as a bundle (``formats``, ``output_dir``)."""
    from trainengine.export import export_checkpoint

    if "checkpoint" not in config:
        raise JobError("an export job needs config['checkpoint']: a ckpt-* folder or a run directory")
    keys = ("formats", "output_dir", "name", "tolerance", "quantize", "monitoring_config")
    options = {k: config[k] for k in keys if k in config}
    options.setdefault("output_dir", str(context.work_dir / "exports"))
    bundle = export_checkpoint(Path(config["checkpoint"]), **options)
    return {"bundle": str(bundle)}


def run_tune_job(config: dict[str, Any], context: JobContext) -> dict[str, Any]:
    """An Optuna study: ``training_config``, ``space`` (dict or file), ``n_trials`` and ``tune``'s options."""
    from trainengine.tune import tune

    if "space" not in config or "n_trials" not in config:
        raise JobError("a tune job needs config['space'] (a search space) and config['n_trials']")
    keys = ("direction", "sampler", "pruner", "storage", "study_name", "seed", "timeout")
    options: dict[str, Any] = {k: config[k] for k in keys if k in config}
    options.setdefault("output_dir", str(context.work_dir / "tune"))
    result = tune(_training_config(config), config["space"], int(config["n_trials"]), **options)
    best = getattr(result, "best_params", None)
    return {"best_params": best, "best_value": getattr(result, "best_value", None)}
