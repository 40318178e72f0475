"""MetricsEngine: one place that records epoch/step metrics, derives more, and raises alerts.

:class:`MetricsEngine` turns the numbers of an epoch into one flat, namespaced record
(``train/loss``, ``val/accuracy``, ``lr``, ``grad_norm``, ``epoch_duration``, derived
``val/perplexity``, ``drift/js_divergence``), keeps it in :attr:`MetricsEngine.history`, sends it
to its back-ends (anything with ``log_metrics(metrics, step)``: an
:class:`~trainengine.tracking.ExperimentTracker` or one of its back-ends; ``use_wandb=True`` adds
the W&B tracker, attached to the active run), and evaluates the :class:`~trainengine.monitoring.AlertConfig`
rules. New alerts go to the configured actions (log, callback, stop training, webhook).

:class:`MetricsEngineCallback` plugs an engine into :class:`trainengine.Trainer` as a callback.

Why one module of this length: MetricsEngine is one seed-000 class (records, derived metrics, alert
rules, history, back-ends) plus the callback that feeds it from the Trainer.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from trainengine.errors import ConfigError, DataError
from trainengine.monitoring._alerts import Alert, AlertConfig, AlertKind, AlertSeverity, StopTrainingAlert
from trainengine.probes._drift import DatasetProfile, DriftReport, compare_profiles

__all__ = ["MetricsBackend", "MetricsEngine", "MetricsEngineCallback", "MetricsTracker"]

logger = logging.getLogger("trainengine.alerts")

_FIX_DIVERGED = (
    "lower the learning rate, enable gradient clipping (training.max_grad_norm), or check the data for NaN/Inf"
)


@runtime_checkable
class MetricsBackend(Protocol):
    """Anything that receives metric records: ``log_metrics(metrics, step)``."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...


def _to_float(name: str, value: Any) -> float:
    """A metric value as a Python float (tensors and numpy scalars read back once, here)."""
    if isinstance(value, bool):
        raise DataError(f"metric {name!r} must be a number, got the bool {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    numel = getattr(value, "numel", None) or getattr(value, "size", None)
    count = numel() if callable(numel) else numel
    if count == 1 and hasattr(value, "item"):
        # Epoch/log-interval path: one read-back per metric is fine here (not per step).
        return float(value.item())
    raise DataError(
        f"metric {name!r} must be a number or a one-element tensor/array, got {type(value).__name__} {value!r:.80}"
    )


def _check_index(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise DataError(f"{name} must be an integer >= 0, got {value!r}")


def _safe_exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


class MetricsEngine:
    """Record epoch and step metrics, derive perplexity and drift, and raise alerts.

    Args:
        use_wandb: Also send every record to Weights & Biases (a run is started with
            ``wandb.init(**wandb_init)`` on the first record if none is active). Needs the
            ``track`` extra.
        backends: Objects with ``log_metrics(metrics: dict, step: int)`` that receive every
            record (an experiment tracker, a logger, a test double). A back-end that raises is
            logged and skipped: monitoring never stops training.
        alert_config: Alert thresholds and actions; default ``AlertConfig()``.
        wandb_init: Keyword arguments for ``wandb.init`` (project, name, mode, ...).
        derive_perplexity: Add ``<split>/perplexity = exp(<split>/loss)`` when a split has a
            loss but no perplexity. Turn off for regression, where exp(MSE) means nothing.
        max_step_history: Step records kept in :attr:`step_history` (oldest dropped).

    Raises:
        MissingExtraError: ``use_wandb=True`` without the ``wandb`` package.
        ConfigError: A back-end without ``log_metrics``, or a bad ``alert_config``.

    Attributes:
        history: One record per :meth:`log_epoch` call, in order.
        step_history: The last ``max_step_history`` records of :meth:`log_step`.
        last_drift_report: The latest :class:`DriftReport`, or ``None``.
        last_alerts: The alerts raised by the latest call.

    Example:
        >>> engine = MetricsEngine(alert_config=AlertConfig(patience_epochs=1, actions=[]))
        >>> record = engine.log_epoch(0, train_metrics={"loss": 1.0}, val_metrics={"loss": 1.0})
        >>> round(record["val/perplexity"], 4)
        2.7183
        >>> _ = engine.log_epoch(1, val_metrics={"loss": 1.5})  # 50% above the best: a spike
        >>> [(a["kind"], a["severity"], a["epoch"]) for a in engine.get_alerts()]
        [('val_loss_spike', 'critical', 1)]
    """

    def __init__(
        self,
        use_wandb: bool = False,
        backends: list[Any] | None = None,
        alert_config: AlertConfig | None = None,
        *,
        wandb_init: Mapping[str, Any] | None = None,
        derive_perplexity: bool = True,
        max_step_history: int = 10_000,
    ) -> None:
        if alert_config is None:
            alert_config = AlertConfig()
        if not isinstance(alert_config, AlertConfig):
            raise ConfigError(
                f"alert_config must be an AlertConfig, got {type(alert_config).__name__}",
                prefix="invalid MetricsEngine settings",
            )
        problems = []
        backends = list(backends or [])
        for i, backend in enumerate(backends):
            if not callable(getattr(backend, "log_metrics", None)):
                problems.append(f"backends[{i}] ({type(backend).__name__}) has no log_metrics(metrics, step) method")
        if not isinstance(max_step_history, int) or max_step_history < 1:
            problems.append(f"max_step_history must be an integer >= 1, got {max_step_history!r}")
        if problems:
            raise ConfigError(problems, prefix="invalid MetricsEngine settings")
        self.alert_config = alert_config
        self.backends: list[Any] = backends
        self.use_wandb = bool(use_wandb)
        self._owned: list[Any] = []  # back-ends this engine made, finished by close()
        if self.use_wandb:
            # W&B goes through the trackers' one integration (trainengine.tracking.WandbTracker),
            # imported only here: a plain MetricsEngine never touches tracking or wandb.
            from trainengine.tracking._tracker import WandbTracker

            wandb_tracker = WandbTracker.attach(wandb_init, feature="MetricsEngine(use_wandb=True)")
            self.backends.append(wandb_tracker)
            self._owned.append(wandb_tracker)
        self.derive_perplexity = derive_perplexity
        self.max_step_history = max_step_history
        self.history: list[dict[str, float]] = []
        self.step_history: list[dict[str, float]] = []
        self.last_drift_report: DriftReport | None = None
        self.last_alerts: list[Alert] = []
        self._alerts: list[Alert] = []
        self._streaks: dict[str, int] = {}
        self._best_loss: float | None = None
        self._best_accuracy: float | None = None
        self._backend_failures: dict[int, int] = {}

    # ------------------------------------------------------------------ recording
    def log_epoch(
        self,
        epoch: int,
        train_metrics: Mapping[str, Any] | None = None,
        val_metrics: Mapping[str, Any] | None = None,
        learning_rate: float | None = None,
        gradient_norm: float | None = None,
        epoch_duration: float | None = None,
        reference_profile: DatasetProfile | None = None,
        current_profile: DatasetProfile | None = None,
        step: int | None = None,
    ) -> dict[str, float]:
        """Record one epoch, send it to the back-ends and evaluate the alert rules.

        Metric names without a ``/`` get the split prefix (``loss`` -> ``train/loss``); names
        with one are kept. Values may be numbers or one-element tensors/arrays.

        Args:
            epoch: Epoch number (stored as ``epoch`` in the record).
            train_metrics: Training metrics of the epoch, e.g. ``{"loss": 0.42}``.
            val_metrics: Validation metrics, e.g. ``{"loss": 0.38, "accuracy": 0.87}``.
            learning_rate: Stored as ``lr``.
            gradient_norm: Stored as ``grad_norm`` (checked against the gradient-norm rule).
            epoch_duration: Seconds, stored as ``epoch_duration``.
            reference_profile: Profile of the reference (training) data; with
                ``current_profile``, the drift is computed and stored as
                ``drift/js_divergence`` (and ``drift/labels_js`` when both have labels).
            current_profile: Profile of the data to check against the reference.
            step: Step passed to the back-ends; default ``epoch``. Pass the global step when
                :meth:`log_step` records go to the same back-end (W&B needs rising steps).

        Returns:
            The flat record that was logged.

        Raises:
            DataError: A metric that is not a number, a negative or non-integer epoch/step,
                or only one of the two profiles.
        """
        _check_index("epoch", epoch)
        if step is not None:
            _check_index("step", step)
        if (reference_profile is None) != (current_profile is None):
            given = "reference_profile" if reference_profile is not None else "current_profile"
            raise DataError(f"drift needs both reference_profile and current_profile; only {given} was given")
        record: dict[str, float] = {"epoch": epoch}
        for split, metrics in (("train", train_metrics), ("val", val_metrics)):
            for name, value in (metrics or {}).items():
                key = name if "/" in name else f"{split}/{name}"
                record[key] = _to_float(key, value)
        for key, value in (("lr", learning_rate), ("grad_norm", gradient_norm), ("epoch_duration", epoch_duration)):
            if value is not None:
                record[key] = _to_float(key, value)
        inputs = [k for k in record if k != "epoch"]  # what the nonfinite rule looks at
        if self.derive_perplexity:
            for split in ("train", "val"):
                loss = record.get(f"{split}/loss")
                if loss is not None and f"{split}/perplexity" not in record:
                    record[f"{split}/perplexity"] = _safe_exp(loss)
        report: DriftReport | None = None
        if reference_profile is not None and current_profile is not None:
            report = compare_profiles(reference_profile, current_profile)
            self.last_drift_report = report
            record["drift/js_divergence"] = report.overall
            if report.labels is not None:
                record["drift/labels_js"] = report.labels
        self.history.append(dict(record))
        self._emit(record, epoch if step is None else step)

        self.last_alerts = []
        self._check_nonfinite("epoch", record, inputs, epoch=epoch, step=step)
        self._check_loss_spike(record, epoch, step)
        self._check_accuracy_drop(record, epoch, step)
        self._check_gradient_norm(record, epoch, step)
        if report is not None:
            self._check_drift(report, epoch, step)
        return record

    def log_step(self, step: int, metrics: Mapping[str, Any]) -> dict[str, float]:
        """Record per-step metrics (at the logging interval) and check them for NaN/Inf.

        Names are kept as given (``train/loss``, ``lr``, ``system/...``). Values are read back
        as floats here, so call this at the logging interval, not every step.

        Args:
            step: Global optimizer step (the back-ends' step).
            metrics: Metric name -> number or one-element tensor.

        Returns:
            ``{"step": step, **metrics}`` as floats (also appended to :attr:`step_history`).

        Raises:
            DataError: A metric that is not a number.
        """
        _check_index("step", step)
        values = {name: _to_float(name, v) for name, v in metrics.items()}
        record = {"step": step, **values}
        self.step_history.append(record)
        if len(self.step_history) > self.max_step_history:
            del self.step_history[: len(self.step_history) - self.max_step_history]
        self._emit(values, step)
        self.last_alerts = []
        self._check_nonfinite("step", values, list(values), epoch=None, step=step)
        return record

    def check_gradient_health(self, health: Any, *, log: bool = True, epoch: int | None = None) -> list[Alert]:
        """Turn a :class:`~trainengine.monitoring.GradientHealth` into alerts (and metrics).

        Non-finite gradients give a ``nonfinite`` alert; exploding gradients (the monitor's
        critical threshold, or a total norm above ``gradient_norm_threshold``) a
        ``gradient_norm`` alert, ``critical`` when the monitor says so or the norm exceeds
        ``critical_factor`` thresholds. Like the epoch rules, each fires once per run of
        unhealthy checks and re-arms on a healthy one.

        Args:
            health: The result of ``GradientMonitor.check_step``.
            log: Also record ``grad/total_norm``, ``grad/max_norm``, ``grad/min_norm`` and
                ``grad/num_nonfinite`` at ``health.step`` (history and back-ends).
            epoch: Epoch to put on the alerts, if known.

        Returns:
            The alerts raised by this check.
        """
        missing = [
            a for a in ("step", "total_norm", "has_exploding_gradients", "num_nonfinite") if not hasattr(health, a)
        ]
        if missing:
            raise DataError(
                f"check_gradient_health needs a GradientHealth (from GradientMonitor.check_step); "
                f"{type(health).__name__} lacks {', '.join(missing)}"
            )
        cfg = self.alert_config
        self.last_alerts = []
        step, total = int(health.step), float(health.total_norm)
        nonfinite = health.num_nonfinite > 0 or not math.isfinite(total)
        if self._streak("grad:nonfinite", nonfinite, 1):
            self._raise(
                kind="nonfinite",
                severity="critical" if cfg.nonfinite_is_critical else "warning",
                metric="grad/total_norm",
                value=total,
                threshold=None,
                epoch=epoch,
                step=step,
                message=(
                    f"non-finite gradients at step {step}: {health.num_nonfinite} parameter(s) "
                    f"(largest: {getattr(health, 'max_norm_param', '?')!r}); {_FIX_DIVERGED}"
                ),
                details={"num_nonfinite": int(health.num_nonfinite)},
            )
        exploding = not nonfinite and (bool(health.has_exploding_gradients) or total > cfg.gradient_norm_threshold)
        if self._streak("grad:exploding", exploding, 1):
            critical = bool(health.has_exploding_gradients) or total > cfg.critical_factor * cfg.gradient_norm_threshold
            self._raise(
                kind="gradient_norm",
                severity="critical" if critical else "warning",
                metric="grad/total_norm",
                value=total,
                threshold=cfg.gradient_norm_threshold,
                epoch=epoch,
                step=step,
                message=(
                    f"exploding gradients at step {step}: total norm {total:.4g} "
                    f"(alert threshold {cfg.gradient_norm_threshold:g}; largest: "
                    f"{getattr(health, 'max_norm_param', '?')!r}); lower the learning rate or set "
                    "training.max_grad_norm"
                ),
            )
        if log:
            values = {
                "grad/total_norm": total,
                "grad/max_norm": float(getattr(health, "max_norm", total)),
                "grad/min_norm": float(getattr(health, "min_norm", total)),
                "grad/num_nonfinite": float(health.num_nonfinite),
            }
            self.step_history.append({"step": step, **values})
            if len(self.step_history) > self.max_step_history:
                del self.step_history[: len(self.step_history) - self.max_step_history]
            self._emit(values, step)
        return list(self.last_alerts)

    # ------------------------------------------------------------------ alerts
    def has_alerts(self, severity: AlertSeverity | None = None) -> bool:
        """True when any alert (of ``severity``, if given) was raised since the last clear."""
        return bool(self.get_alerts(severity))

    def get_alerts(self, severity: AlertSeverity | None = None, kind: AlertKind | None = None) -> list[Alert]:
        """Alerts raised since the last :meth:`clear_alerts`, oldest first.

        Args:
            severity: Only alerts of this severity (``"warning"`` or ``"critical"``).
            kind: Only alerts of this rule.

        Raises:
            ConfigError: For an unknown severity.
        """
        if severity is not None and severity not in ("warning", "critical"):
            raise ConfigError(
                f"severity must be 'warning', 'critical' or None, got {severity!r}",
                prefix="invalid get_alerts argument",
            )
        return [
            a for a in self._alerts if (severity is None or a.severity == severity) and (kind is None or a.kind == kind)
        ]

    def clear_alerts(self) -> None:
        """Forget the stored alerts (rule state — best values, streaks — is kept)."""
        self._alerts.clear()

    @property
    def should_stop(self) -> bool:
        """True when a :class:`StopTrainingAlert` action has fired."""
        return any(isinstance(a, StopTrainingAlert) and a.should_stop for a in self.alert_config.actions)

    def bind_trainer(self, trainer: Any) -> None:
        """Give every :class:`StopTrainingAlert` action without a trainer this one."""
        for action in self.alert_config.actions:
            if isinstance(action, StopTrainingAlert) and action.trainer is None:
                action.bind(trainer)

    def metric_history(self, name: str) -> list[float]:
        """The values of one metric over the logged epochs (epochs without it skipped)."""
        return [r[name] for r in self.history if name in r]

    def close(self) -> None:
        """Finish the W&B run this engine started, if any (back-ends passed in are left open)."""
        for backend in self._owned:
            backend.finish()

    # ------------------------------------------------------------------ internals
    def _emit(self, record: dict[str, float], step: int) -> None:
        for i, backend in enumerate(self.backends):
            try:
                backend.log_metrics(dict(record), step)
            except Exception:  # a broken back-end must not stop training (logged below)
                n = self._backend_failures.get(i, 0) + 1
                self._backend_failures[i] = n
                if n == 1 or n % 100 == 0:
                    logger.exception(
                        "metrics back-end %s failed to log step %s (failure %d; training continues)",
                        type(backend).__name__,
                        step,
                        n,
                    )

    def _streak(self, key: str, condition: bool, required: int) -> bool:
        """Advance a rule's streak; True exactly when it reaches ``required`` (once per streak)."""
        if not condition:
            self._streaks[key] = 0
            return False
        self._streaks[key] = self._streaks.get(key, 0) + 1
        return self._streaks[key] == required

    def _raise(
        self,
        *,
        kind: AlertKind,
        severity: AlertSeverity,
        metric: str,
        value: float | None,
        threshold: float | None,
        epoch: int | None,
        step: int | None,
        message: str,
        details: dict[str, Any] | None = None,
    ) -> Alert:
        alert = Alert(
            message=message,
            severity=severity,
            metric=metric,
            value=value,
            threshold=threshold,
            epoch=epoch,
            step=step,
            kind=kind,
            time=time.time(),
            details=details or {},
        )
        self._alerts.append(alert)
        self.last_alerts.append(alert)
        for action in self.alert_config.actions:
            try:
                action(alert)
            except Exception:  # a failing action must not stop training (logged)
                logger.exception("alert action %r failed for alert: %s", action, alert.message)
        return alert

    def _check_nonfinite(
        self, scope: str, record: Mapping[str, float], names: list[str], *, epoch: int | None, step: int | None
    ) -> None:
        bad = [n for n in names if not math.isfinite(record[n])]
        if not self._streak(f"{scope}:nonfinite", bool(bad), 1):
            return
        where = f"epoch {epoch}" if epoch is not None else f"step {step}"
        listed = ", ".join(f"{n}={record[n]}" for n in bad)
        self._raise(
            kind="nonfinite",
            severity="critical" if self.alert_config.nonfinite_is_critical else "warning",
            metric=bad[0],
            value=record[bad[0]],
            threshold=None,
            epoch=epoch,
            step=step,
            message=f"non-finite metric(s) at {where}: {listed}; {_FIX_DIVERGED}",
            details={"metrics": bad},
        )

    def _check_loss_spike(self, record: Mapping[str, float], epoch: int, step: int | None) -> None:
        cfg = self.alert_config
        loss = record.get(cfg.loss_metric)
        if loss is None or not math.isfinite(loss):
            return  # absent: streak unchanged; non-finite: the nonfinite rule reports it
        best = self._best_loss
        threshold = cfg.val_loss_spike_threshold
        spiking = best is not None and loss - best > threshold * abs(best)
        if self._streak("val_loss_spike", spiking, cfg.patience_epochs) and best is not None:
            rise = (loss - best) / abs(best) if best != 0 else math.inf
            critical = loss - best > cfg.critical_factor * threshold * abs(best)
            self._raise(
                kind="val_loss_spike",
                severity="critical" if critical else "warning",
                metric=cfg.loss_metric,
                value=loss,
                threshold=threshold,
                epoch=epoch,
                step=step,
                message=(
                    f"{cfg.loss_metric} spiked at epoch {epoch}: {loss:.4g} is {rise:.0%} above the best "
                    f"{best:.4g} (threshold {threshold:.0%}) for {cfg.patience_epochs} epoch(s); check the "
                    "learning rate and gradient norms, or restore the best checkpoint"
                ),
                details={"best": best, "relative_increase": rise, "epochs": cfg.patience_epochs},
            )
        self._best_loss = loss if best is None else min(best, loss)

    def _check_accuracy_drop(self, record: Mapping[str, float], epoch: int, step: int | None) -> None:
        cfg = self.alert_config
        acc = record.get(cfg.accuracy_metric)
        if acc is None or not math.isfinite(acc):
            return
        best = self._best_accuracy
        threshold = cfg.accuracy_drop_threshold
        dropping = best is not None and best - acc > threshold
        if self._streak("accuracy_drop", dropping, cfg.patience_epochs) and best is not None:
            drop = best - acc
            self._raise(
                kind="accuracy_drop",
                severity="critical" if drop > cfg.critical_factor * threshold else "warning",
                metric=cfg.accuracy_metric,
                value=acc,
                threshold=threshold,
                epoch=epoch,
                step=step,
                message=(
                    f"{cfg.accuracy_metric} dropped at epoch {epoch}: {acc:.4g} is {drop:.4g} below the "
                    f"best {best:.4g} (threshold {threshold:g}) for {cfg.patience_epochs} epoch(s); the "
                    "model may be overfitting or the learning rate is too high"
                ),
                details={"best": best, "drop": drop, "epochs": cfg.patience_epochs},
            )
        self._best_accuracy = acc if best is None else max(best, acc)

    def _check_gradient_norm(self, record: Mapping[str, float], epoch: int, step: int | None) -> None:
        cfg = self.alert_config
        norm = record.get("grad_norm")
        if norm is None or not math.isfinite(norm):
            return
        threshold = cfg.gradient_norm_threshold
        if self._streak("gradient_norm", norm > threshold, cfg.patience_epochs):
            self._raise(
                kind="gradient_norm",
                severity="critical" if norm > cfg.critical_factor * threshold else "warning",
                metric="grad_norm",
                value=norm,
                threshold=threshold,
                epoch=epoch,
                step=step,
                message=(
                    f"gradient norm {norm:.4g} at epoch {epoch} is above {threshold:g} for "
                    f"{cfg.patience_epochs} epoch(s); lower the learning rate or set training.max_grad_norm"
                ),
                details={"epochs": cfg.patience_epochs},
            )

    def _check_drift(self, report: DriftReport, epoch: int, step: int | None) -> None:
        cfg = self.alert_config
        threshold = cfg.drift_threshold
        checks = [("drift/js_divergence", report.overall, "features")]
        if report.labels is not None:
            checks.append(("drift/labels_js", report.labels, "labels"))
        for metric, value, what in checks:
            if not self._streak(metric, value > threshold, 1):
                continue
            top = ", ".join(f"{n}={v:.3f}" for n, v in report.top_features(3))
            self._raise(
                kind="drift",
                severity="critical" if value > cfg.critical_factor * threshold else "warning",
                metric=metric,
                value=value,
                threshold=threshold,
                epoch=epoch,
                step=step,
                message=(
                    f"data drift in the {what} at epoch {epoch}: JS divergence {value:.3f} > {threshold:g}"
                    + (f" (most changed: {top})" if what == "features" and top else "")
                    + "; the current data no longer looks like the reference — check the data "
                    "pipeline, or retrain on recent data"
                ),
                details={"report": report.to_dict()} if what == "features" else {"labels_js": value},
            )

    def __repr__(self) -> str:
        return (
            f"MetricsEngine(backends={[type(b).__name__ for b in self.backends]}, "
            f"epochs={len(self.history)}, alerts={len(self._alerts)})"
        )


class MetricsEngineCallback:
    """Feed a :class:`MetricsEngine` from :class:`trainengine.Trainer` events.

    At every epoch end it logs one record: ``train/loss`` (mean of the epoch's logged train
    losses), the epoch's last evaluation (``val/...``), ``lr``, the gradient norm of the
    trainer's gradient monitor (if any), the epoch duration and, with both profiles, drift.
    Gradient checks of the monitor are turned into alerts as they happen.
    :class:`StopTrainingAlert` actions without a trainer are bound to this trainer, so a
    critical alert stops the run after the current step.

    Args:
        engine: The engine to feed.
        reference_profile: Optional reference data profile for drift checks.
        current_profile: Optional current data profile (both or neither).

    Example:
        >>> engine = MetricsEngine(alert_config=AlertConfig(actions=[StopTrainingAlert()]))
        >>> callback = MetricsEngineCallback(engine)  # Trainer(..., callbacks=[callback])
    """

    rank_zero_only = True

    def __init__(
        self,
        engine: MetricsEngine,
        reference_profile: DatasetProfile | None = None,
        current_profile: DatasetProfile | None = None,
    ) -> None:
        if not isinstance(engine, MetricsEngine):
            raise ConfigError(
                f"MetricsEngineCallback needs a MetricsEngine, got {type(engine).__name__}",
                prefix="invalid callback",
            )
        if (reference_profile is None) != (current_profile is None):
            raise ConfigError("pass both reference_profile and current_profile, or neither", prefix="invalid callback")
        self.engine = engine
        self.reference_profile = reference_profile
        self.current_profile = current_profile
        self._reset_epoch()
        self._last_health: Any = None

    def _reset_epoch(self) -> None:
        self._loss_sum = 0.0
        self._loss_count = 0
        self._val: dict[str, float] = {}
        self._lr: float | None = None
        self._epoch_start = time.perf_counter()

    def on_train_start(self, trainer: Any) -> None:
        self.engine.bind_trainer(trainer)
        self._reset_epoch()

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        self._reset_epoch()

    def on_log(self, trainer: Any, record: dict[str, Any]) -> None:
        kind = record.get("type")
        if kind == "train":
            loss = record.get("train/loss")
            if loss is not None:
                self._loss_sum += float(loss)
                self._loss_count += 1
            if record.get("lr") is not None:
                self._lr = float(record["lr"])
            self._check_monitor(trainer)
        elif kind == "eval":
            self._val = {k: v for k, v in record.items() if k.startswith("val/")}

    def _check_monitor(self, trainer: Any) -> None:
        monitor = getattr(trainer, "gradient_monitor", None)
        health = getattr(monitor, "last_health", None)
        if health is not None and health is not self._last_health:
            self._last_health = health
            self.engine.check_gradient_health(health, log=False, epoch=getattr(trainer.state, "epoch", None))

    def on_epoch_end(self, trainer: Any, epoch: int) -> None:
        self._check_monitor(trainer)
        train = {"loss": self._loss_sum / self._loss_count} if self._loss_count else None
        health = self._last_health
        self.engine.log_epoch(
            epoch,
            train_metrics=train,
            val_metrics=self._val or None,
            learning_rate=self._lr,
            gradient_norm=None if health is None else float(health.total_norm),
            epoch_duration=time.perf_counter() - self._epoch_start,
            reference_profile=self.reference_profile,
            current_profile=self.current_profile,
            step=int(trainer.state.step),
        )
        self._reset_epoch()


#: The name seed 000 uses for :class:`MetricsEngine` (``MetricsTracker(use_wandb=True)``).
MetricsTracker = MetricsEngine
