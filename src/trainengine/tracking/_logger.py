"""``TrainingLogger`` (seed 002): console lines for humans, JSON lines for machines.

One JSON object per line, one schema for every event::

    {
        "timestamp": "2026-11-22T03:15:02.123+00:00",
        "level": "INFO",
        "event": "metrics",
        "message": "step 100 | epoch 0 | train/loss=3.4200",
        "experiment": "exp",
        "step": 100,
        "epoch": 0,
        "metrics": {"train/loss": 3.42},
        "data": {},
    }

``event`` is one of ``start``, ``hyperparams``, ``system_info``, ``metrics``, ``checkpoint``,
``error``, ``end`` and ``log`` (a message from :meth:`TrainingLogger.info` / ``warning`` /
``error`` / ``debug``); ``metrics`` holds floats (tensors converted, NaN/inf as null) and ``data``
whatever else the event carries (the config, system facts, a checkpoint path, an error, the
keyword fields of a message).

:class:`JSONFormatter` writes records of the standard :mod:`logging` module in the same spirit:
one JSON object per record with ``timestamp``, ``level``, ``logger``, ``message`` and every
``extra=`` field.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from trainengine._io import validate_name

__all__ = ["TrainingLogger", "JSONFormatter", "system_info", "read_jsonl"]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _to_float(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        value = value.detach().float().item()
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    try:
        return _to_float(float(value))
    except (TypeError, ValueError):
        return None


def system_info() -> dict[str, Any]:
    """Python, torch, CUDA, GPUs (names and memory), CPU count, OS, git commit and dirty flag."""
    from trainengine.provenance import git_info

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cuda": torch.version.cuda,
        "cpu_count": os.cpu_count(),
        "os": platform.platform(),
        "hostname": platform.node(),
        "git": git_info(),
        "gpus": [],
    }
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            info["gpus"].append({"name": props.name, "memory_gib": round(props.total_memory / 2**30, 2)})
    return info


class TrainingLogger:
    """Structured training logger.

    Args:
        experiment_name: names the logger and the file (letters, digits, ``.``, ``_``, ``-``).
        log_dir: folder of the JSONL file ``<experiment>_<timestamp>.jsonl``.
        log_to_console: human-readable lines on standard output.
        log_to_file: JSON lines in ``log_dir``.
        level: lowest level of :meth:`debug` / :meth:`info` / :meth:`warning` / :meth:`error`
            messages recorded (``"DEBUG"``, ``"INFO"``, ``"WARNING"``, ``"ERROR"``); the
            ``log_*`` events are always recorded.

    Example:
        >>> import tempfile
        >>> logger = TrainingLogger("demo", log_dir=tempfile.mkdtemp(), log_to_console=False)
        >>> logger.log_metrics({"loss": 3.42}, step=100, prefix="train/")
        >>> logger.warning("loss spike", step=101, ratio=4.2)
        >>> logger.close()
        >>> read_jsonl(logger.log_file)[0]["metrics"]
        {'train/loss': 3.42}
        >>> {k: read_jsonl(logger.log_file)[1][k] for k in ("level", "message", "step", "data")}
        {'level': 'WARNING', 'message': 'loss spike', 'step': 101, 'data': {'ratio': 4.2}}
    """

    def __init__(
        self,
        experiment_name: str,
        log_dir: str | os.PathLike[str] = "logs",
        log_to_console: bool = True,
        log_to_file: bool = True,
        level: str | int = "INFO",
    ) -> None:
        self.experiment_name = validate_name(experiment_name, "experiment_name")
        self.level = _level_number(level)
        self.log_file: Path | None = None
        self._file = None
        if log_to_file:
            stamp = datetime.now().strftime("%Y%m%d_%H%M%S_%f")
            self.log_file = Path(log_dir) / f"{self.experiment_name}_{stamp}.jsonl"
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.log_file, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed by close()
        self._console: logging.Logger | None = None
        if log_to_console:
            self._console = logging.getLogger(f"trainengine.training.{self.experiment_name}")
            self._console.setLevel(min(self.level, logging.INFO))  # log_* events are INFO whatever ``level`` says
            self._console.propagate = False
            self._handler = logging.StreamHandler(sys.stdout)
            self._handler.setFormatter(
                logging.Formatter("%(asctime)s - %(levelname)s - %(message)s", datefmt="%Y-%m-%d %H:%M:%S")
            )
            self._console.addHandler(self._handler)

    # -- events --------------------------------------------------------------------------------
    def log_start(self, config: Any = None) -> None:
        """Record the start of the run with its config (a dict, a TrainingConfig, a dataclass)."""
        data = config.to_dict() if hasattr(config, "to_dict") else config
        self._emit("start", f"experiment {self.experiment_name} started", data={"config": data})

    def log_hyperparams(self, params: dict[str, Any]) -> None:
        self._emit(
            "hyperparams",
            "hyperparameters: " + ", ".join(f"{k}={v}" for k, v in params.items()),
            data={"hyperparams": params},
        )

    def log_system_info(self) -> dict[str, Any]:
        info = system_info()
        gpus = ", ".join(g["name"] for g in info["gpus"]) or "none"
        self._emit(
            "system_info",
            f"python {info['python']} | torch {info['torch']} | GPUs: {gpus} | CPUs: {info['cpu_count']} | "
            f"git {info['git']['commit']}",
            data=info,
        )
        return info

    def log_metrics(
        self, metrics: dict[str, Any], step: int | None = None, epoch: int | None = None, prefix: str = ""
    ) -> None:
        """Log metrics, namespaced with ``prefix`` (``train/``, ``val/``, ``system/``); tensors become floats."""
        values = {f"{prefix}{k}": _to_float(v) for k, v in metrics.items()}
        parts = [f"step {step}" if step is not None else "step ?"]
        if epoch is not None:
            parts.append(f"epoch {epoch}")
        parts += [f"{k}={v:.4f}" if v is not None else f"{k}=nan" for k, v in values.items()]
        self._emit("metrics", " | ".join(parts), step=step, epoch=epoch, metrics=values)

    def log_checkpoint(
        self, checkpoint_path: str | os.PathLike[str], step: int | None = None, metrics: dict[str, Any] | None = None
    ) -> None:
        values = {k: _to_float(v) for k, v in (metrics or {}).items()}
        self._emit(
            "checkpoint",
            f"checkpoint saved: {checkpoint_path}",
            step=step,
            metrics=values,
            data={"path": str(checkpoint_path)},
        )

    def log_error(self, error: BaseException, step: int | None = None) -> None:
        tb = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        self._emit(
            "error",
            f"{type(error).__name__}: {error}",
            step=step,
            level="ERROR",
            data={"type": type(error).__name__, "traceback": tb},
        )

    def log_end(self, final_metrics: dict[str, Any] | None = None) -> None:
        values = {k: _to_float(v) for k, v in (final_metrics or {}).items()}
        self._emit("end", f"experiment {self.experiment_name} finished", metrics=values)

    # -- messages (the standard logging methods, with structured fields) ----------------------
    def debug(self, message: str, **fields: Any) -> None:
        """Record a DEBUG message (only when ``level="DEBUG"``); see :meth:`info` for ``fields``."""
        self._message("DEBUG", message, fields)

    def info(self, message: str, **fields: Any) -> None:
        """Record a message with structured fields: ``logger.info("new best", step=500, val_loss=2.1)``.

        ``step``, ``epoch`` and ``metrics`` (a dict of numbers) fill the record's own columns;
        every other field goes into its ``data``. The console line shows the fields as ``k=v``.
        """
        self._message("INFO", message, fields)

    def warning(self, message: str, **fields: Any) -> None:
        """Record a WARNING message; see :meth:`info` for ``fields``."""
        self._message("WARNING", message, fields)

    def error(self, message: str, **fields: Any) -> None:
        """Record an ERROR message (an exception itself goes to :meth:`log_error`); see :meth:`info`."""
        self._message("ERROR", message, fields)

    def _message(self, level: str, message: str, fields: dict[str, Any]) -> None:
        if getattr(logging, level) < self.level:
            return
        step, epoch, metrics = fields.pop("step", None), fields.pop("epoch", None), fields.pop("metrics", None)
        values = {str(k): _to_float(v) for k, v in metrics.items()} if isinstance(metrics, dict) else {}
        if metrics is not None and not isinstance(metrics, dict):
            fields["metrics"] = metrics  # not a dict of numbers: kept as given
        shown = {k: v for k, v in {"step": step, "epoch": epoch, **values, **fields}.items() if v is not None}
        text = " | ".join(
            [str(message), *(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())]
        )
        self._emit(
            "log", str(message), step=step, epoch=epoch, metrics=values, data=fields, level=level, console_text=text
        )

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._console is not None:
            self._console.removeHandler(self._handler)
            self._console = None

    def __enter__(self) -> TrainingLogger:
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[1] is not None and isinstance(exc[1], Exception):
            self.log_error(exc[1])
        self.close()

    # -- plumbing ------------------------------------------------------------------------------
    def _emit(
        self,
        event: str,
        message: str,
        *,
        step: int | None = None,
        epoch: int | None = None,
        metrics: dict[str, Any] | None = None,
        data: Any = None,
        level: str = "INFO",
        console_text: str | None = None,
    ) -> None:
        if self._console is not None:
            self._console.log(getattr(logging, level), console_text if console_text is not None else message)
        if self._file is not None:
            record = {
                "timestamp": _now(),
                "level": level,
                "event": event,
                "message": message,
                "experiment": self.experiment_name,
                "step": step,
                "epoch": epoch,
                "metrics": metrics or {},
                "data": data if data is not None else {},
            }
            self._file.write(json.dumps(record, default=str) + "\n")


def _level_number(level: str | int) -> int:
    names = ("DEBUG", "INFO", "WARNING", "ERROR")
    if isinstance(level, str) and level.upper() in names:
        return int(getattr(logging, level.upper()))
    if isinstance(level, int) and not isinstance(level, bool):
        return level
    raise ValueError(f"invalid log level {level!r}: use one of {', '.join(names)} (or a logging level number)")


# Attributes every LogRecord has: what is left on a record beyond these came from ``extra=``.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


def _json_value(value: Any) -> Any:
    """A JSON-safe copy: tensors and numpy values as numbers or lists, NaN / inf as null, the rest by str."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        value = value.item() if value.numel() == 1 else value.tolist()
    elif hasattr(value, "tolist") and callable(value.tolist):  # numpy arrays and scalars
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_json_value(v) for v in value]
    return str(value)


class JSONFormatter(logging.Formatter):
    """A :class:`logging.Formatter` that writes each record as one JSON object (seed 002).

    Fields: ``timestamp`` (ISO-8601 UTC of the record), ``level``, ``logger``, ``message``, every
    field given with ``extra=`` (``metrics``, ``step``, ...; tensors become numbers, NaN/inf
    null), and ``exception`` / ``stack`` when the record carries them.

    Example:
        >>> import io, json, logging
        >>> stream = io.StringIO()
        >>> handler = logging.StreamHandler(stream)
        >>> handler.setFormatter(JSONFormatter())
        >>> log = logging.getLogger("jsonformatter.demo")
        >>> log.addHandler(handler)
        >>> log.warning("step done", extra={"metrics": {"loss": 3.42}, "step": 100})
        >>> {k: json.loads(stream.getvalue())[k] for k in ("level", "message", "step", "metrics")}
        {'level': 'WARNING', 'message': 'step done', 'step': 100, 'metrics': {'loss': 3.42}}
    """

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and not key.startswith("_"):
                doc[key] = _json_value(value)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, ensure_ascii=False)


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Parse a JSON-lines file, skipping a torn last line (a crash mid-write)."""
    records = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records
