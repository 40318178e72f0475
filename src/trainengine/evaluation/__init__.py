"""Evaluation you can trust: metrics with bootstrap confidence intervals, calibration, segments,
error analysis, and the paired significance test behind significance-gated promotion.

Example:
    See docs/evaluation.md.
"""

from trainengine.evaluation._bootstrap import (
    ConfidenceInterval,
    PairedBootstrapResult,
    WeightedMetric,
    bootstrap_ci,
    bootstrap_cis,
    bootstrap_weights,
    from_unweighted,
    paired_bootstrap,
)
from trainengine.evaluation._evaluate import (
    LoadedModel,
    evaluate,
    load_model_source,
    report_from_predictions,
    tune_threshold,
)
from trainengine.evaluation._groups import GROUP_SUMMARY_SCHEMA_VERSION, GroupSummary, MetricSummary, summarize_metric
from trainengine.evaluation._metrics import (
    compute_metrics,
    confusion_matrix,
    get_weighted_metric,
    higher_is_better,
    list_metrics,
    metrics_for,
)
from trainengine.evaluation._predict import Predictions, predict
from trainengine.evaluation._report import EVAL_SCHEMA_VERSION, EvaluationReport
from trainengine.evaluation._significance import (
    HEADLINE_METRICS,
    SignificanceCheck,
    SignificanceResult,
    compare_models,
    headline_metric,
)

__all__: list[str] = [
    "GROUP_SUMMARY_SCHEMA_VERSION",
    "GroupSummary",
    "MetricSummary",
    "summarize_metric",
    "EVAL_SCHEMA_VERSION",
    "ConfidenceInterval",
    "EvaluationReport",
    "LoadedModel",
    "PairedBootstrapResult",
    "Predictions",
    "WeightedMetric",
    "bootstrap_ci",
    "bootstrap_cis",
    "bootstrap_weights",
    "compute_metrics",
    "confusion_matrix",
    "evaluate",
    "from_unweighted",
    "get_weighted_metric",
    "higher_is_better",
    "list_metrics",
    "load_model_source",
    "metrics_for",
    "paired_bootstrap",
    "predict",
    "report_from_predictions",
    "tune_threshold",
    "HEADLINE_METRICS",
    "SignificanceCheck",
    "SignificanceResult",
    "compare_models",
    "headline_metric",
]
