"""scikit-learn estimators and Pipelines as trainengine models: cross-validated, tracked, evaluated,
tuned, saved safely (skops, ONNX) and registered.

Example:
    See docs/sklearn.md.
"""

from trainengine.sklearn._bundle import export_pipeline_bundle
from trainengine.sklearn._data import TabularData, resolve_data
from trainengine.sklearn._evaluate import evaluate_estimator, evaluate_saved_pipeline, fold_metrics, predictions_of
from trainengine.sklearn._onnx import ONNX_FILE, OnnxExport, convert_to_onnx, onnx_feeds, run_onnx
from trainengine.sklearn._params import describe_estimator, estimator_params, seed_estimator
from trainengine.sklearn._persist import (
    SKOPS_FILE,
    TRUSTED_MODULES,
    UntrustedModelError,
    check_trusted,
    load_pipeline,
    save_pipeline,
)
from trainengine.sklearn._registry import is_sklearn_model, load_registered_pipeline, model_folder, register_pipeline
from trainengine.sklearn._trainer import MODEL_DIR, MODEL_FORMAT, MODEL_INFO, Problem, SklearnTrainer
from trainengine.sklearn._tune import PipelineTuneResult, load_pipeline_space, tune_pipeline

__all__: list[str] = [
    "SklearnTrainer",
    "Problem",
    "tune_pipeline",
    "load_pipeline_space",
    "PipelineTuneResult",
    "register_pipeline",
    "export_pipeline_bundle",
    "load_registered_pipeline",
    "model_folder",
    "is_sklearn_model",
    "evaluate_estimator",
    "evaluate_saved_pipeline",
    "save_pipeline",
    "load_pipeline",
    "check_trusted",
    "UntrustedModelError",
    "TRUSTED_MODULES",
    "convert_to_onnx",
    "OnnxExport",
    "run_onnx",
    "onnx_feeds",
    "estimator_params",
    "describe_estimator",
    "seed_estimator",
    "resolve_data",
    "TabularData",
    "predictions_of",
    "fold_metrics",
    "MODEL_DIR",
    "MODEL_FORMAT",
    "MODEL_INFO",
    "SKOPS_FILE",
    "ONNX_FILE",
]
