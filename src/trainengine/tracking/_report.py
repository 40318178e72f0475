"""A static, self-contained HTML report of one run: facts, config, results, curves, alerts, checkpoints."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any

from trainengine._io import atomic_write_text
from trainengine.errors import TrainEngineError
from trainengine.tracking._logger import read_jsonl

__all__ = ["build_report"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9rem; }
td, th { padding: 0.25rem 0.7rem; border-bottom: 1px solid #eee; text-align: left; }
pre { background: #f6f6f6; padding: 0.8rem; overflow-x: auto; font-size: 0.8rem; }
.curves { display: flex; flex-wrap: wrap; gap: 1rem; } .curves img { width: 520px; border: 1px solid #eee; }
.warning { color: #a60; } .critical, .failed { color: #b00; } .completed { color: #070; }
"""

_ALERT_TYPES = ("nonfinite", "rollback", "interrupt", "alert")


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return _esc(value)


def _num(value: Any) -> str:
    """A number for a sentence: 3 significant digits (``1.26``, ``0.000412``); other values as they are."""
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _incident_text(record: dict[str, Any]) -> str:
    """One sentence for an incident record: its own ``message`` when it has one (alerts, gradient checks)."""
    if record.get("message"):
        return str(record["message"])
    kind, step = record.get("type"), record.get("step")
    if kind == "nonfinite":
        return (
            f"Step {step}: the loss ({_num(record.get('loss'))}) or a gradient was not finite "
            f"({record.get('train/nonfinite_steps')} such steps so far; policy {record.get('policy')})."
        )
    if kind == "rollback":
        return (
            f"Rolled back to {record.get('checkpoint')} (step {step}) with the learning rate "
            f"\u00d7{_num(record.get('lr_factor'))} (rollback {record.get('rollbacks')})."
        )
    if kind == "interrupt":
        where = f"; emergency checkpoint {record['checkpoint']}" if record.get("checkpoint") else ""
        return f"Interrupted by signal {record.get('signal')} at step {step}{where}."
    if kind == "gradient":
        return f"Gradient norm {_num(record.get('train/grad_norm'))} at step {step} ({record.get('severity')})."
    skip = ("time", "step", "type", "epoch", "severity")
    return "; ".join(f"{k} {_num(v)}" for k, v in record.items() if k not in skip and v not in (None, ""))


def _curve_png(records: list[dict[str, Any]], metric: str) -> str | None:
    """A base64 PNG of ``metric`` against the step (raw faint, smoothed bold), or None."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [
        (r["step"], r[metric]) for r in records if isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric])
    ]
    if not points:
        return None
    steps, values = zip(*points, strict=True)
    smooth, acc = [], values[0]
    for v in values:
        acc = 0.6 * acc + 0.4 * v
        smooth.append(acc)
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    if len(steps) < 30:  # few points: show them as they are (smoothing would only lag)
        ax.plot(steps, values, color="C0", marker="o")
    else:
        ax.plot(steps, values, alpha=0.3, color="C0")
        ax.plot(steps, smooth, color="C0")
    ax.set_xlabel("step")
    ax.set_title(metric)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def build_report(run_dir: str | Path, output: str | Path | None = None) -> Path:
    """Write ``report.html`` (or ``output``) for a run directory and return its path.

    The page embeds its plots as data URIs, so the one file can be mailed or archived.
    All text from the run (config values, error messages) is HTML-escaped.

    Raises:
        TrainEngineError: ``run_dir`` is not a run directory.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "run.json").is_file():
        raise TrainEngineError(f"{run_dir} is not a run directory (no run.json)")
    facts = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    records = read_jsonl(run_dir / "logs.jsonl") if (run_dir / "logs.jsonl").is_file() else []
    config_text = (run_dir / "config.yaml").read_text(encoding="utf-8") if (run_dir / "config.yaml").is_file() else ""
    results = facts.get("results") or {}
    status = facts.get("status", "?")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>run {_esc(facts.get('experiment'))}/{_esc(facts.get('run_id'))}</title>"
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{_esc(facts.get('experiment'))} / {_esc(facts.get('run_id'))} — "
        f"<span class='{_esc(status)}'>{_esc(status)}</span></h1>",
        "<table>",
    ]
    for label, value in (
        ("started", facts.get("start_time")),
        ("ended", facts.get("end_time")),
        ("git commit", (facts.get("git") or {}).get("commit")),
        (
            "model",
            f"{(facts.get('model') or {}).get('class')} "
            f"({(facts.get('model') or {}).get('num_parameters')} parameters)",
        ),
        ("task", (facts.get("task") or {}).get("task_type")),
        ("device", (facts.get("runtime") or {}).get("device")),
        ("seed", facts.get("seed")),
        ("error", facts.get("error")),
    ):
        if value is not None:
            parts.append(f"<tr><th>{_esc(label)}</th><td>{_fmt(value)}</td></tr>")
    parts.append("</table><h2>Results</h2><table>")
    for key, value in results.items():
        # Empty fields (no tokens/s for a classifier, no stop reason) say nothing: leave them out.
        if value is not None and value != "" and not isinstance(value, (dict, list)):
            parts.append(f"<tr><th>{_esc(key)}</th><td>{_fmt(value)}</td></tr>")
    parts.append("</table><h2>Curves</h2><div class='curves'>")
    metrics = sorted(
        {
            k
            for r in records
            if r.get("type") in ("train", "eval")
            for k in r
            if "/" in k and not k.startswith("system/")
        }
    )
    for metric in ["train/loss", *[m for m in metrics if m.startswith("val/")], "lr"]:
        png = _curve_png(records, metric)
        if png:
            parts.append(f"<img alt='{_esc(metric)}' src='data:image/png;base64,{png}'>")
    parts.append("</div><h2>Evaluations</h2><table>")
    evals = [r for r in records if r.get("type") == "eval"]
    eval_cols = sorted({k for r in evals for k in r if k.startswith("val/")})
    parts.append("<tr><th>step</th>" + "".join(f"<th>{_esc(c)}</th>" for c in eval_cols) + "</tr>")
    for r in evals[-20:]:
        parts.append(
            f"<tr><td>{_fmt(r.get('step'))}</td>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in eval_cols) + "</tr>"
        )
    parts.append("</table><h2>Alerts and incidents</h2>")
    incidents = [
        r
        for r in records
        if r.get("type") in _ALERT_TYPES or (r.get("type") == "gradient" and r.get("severity") not in (None, "ok"))
    ]
    if incidents:
        parts.append("<table><tr><th>step</th><th>type</th><th>what happened</th></tr>")
        for r in incidents:
            details = _incident_text(r)
            parts.append(
                f"<tr class='{_esc(r.get('severity', 'warning'))}'><td>{_fmt(r.get('step'))}</td>"
                f"<td>{_esc(r.get('type'))}</td><td>{_esc(details)}</td></tr>"
            )
        parts.append("</table>")
    else:
        parts.append("<p>none</p>")
    parts.append("<h2>Checkpoints</h2>")
    ckpt_dir = run_dir / "checkpoints"
    if ckpt_dir.is_dir():
        from trainengine.checkpoint import CheckpointManager

        task = facts.get("task") or {}
        manager = CheckpointManager(
            ckpt_dir, monitor=task.get("monitor", "val/loss"), mode=task.get("monitor_mode", "min"), read_only=True
        )
        parts.append("<table><tr><th>name</th><th>step</th><th>epoch</th><th>metric</th><th>flags</th></tr>")
        for info in manager.list_checkpoints():
            flags = (
                " ".join(f for f, on in (("best", info.is_best), ("latest", info.is_latest)) if on)
                + " "
                + " ".join(info.tags)
            )
            parts.append(
                f"<tr><td>{_esc(info.name)}</td><td>{info.step}</td><td>{info.epoch}</td><td>{_fmt(info.metric)}</td><td>{_esc(flags.strip())}</td></tr>"
            )
        parts.append("</table>")
    else:
        parts.append("<p>none</p>")
    parts.append(f"<h2>Config</h2><pre>{_esc(config_text)}</pre>")
    # A browser check (tests) reads this flag: every plot image decoded.
    parts.append(
        "<script>window.addEventListener('load', function () { var ok = Array.prototype.every.call(document.images,"
        " function (i) { return i.complete && i.naturalWidth > 0; });"
        " document.body.setAttribute('data-images-ok', ok ? 'yes' : 'no');"
        " document.body.setAttribute('data-images', String(document.images.length)); });</script>"
    )
    parts.append("</body></html>")
    path = Path(output) if output is not None else run_dir / "report.html"
    atomic_write_text(path, "\n".join(parts))
    return path
