"""Entry point of the ``trainengine`` command.

User errors (bad config, bad data, unknown names) exit with code 2 and one line on standard
error; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys

import typer

try:  # typer >= 0.20 vendors click; older releases use the click package
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import ClickException  # type: ignore[assignment]  # same class, typed by another package

from trainengine.cli._checkpoints_cmd import checkpoints_app, resume_command
from trainengine.cli._common import STATE
from trainengine.cli._config_cmd import config_app
from trainengine.cli._evaluate_cmd import evaluate_command
from trainengine.cli._export_cmd import export_command
from trainengine.cli._generate_cmd import generate_command
from trainengine.cli._jobs_cmd import jobs_app
from trainengine.cli._logs_cmd import logs_command
from trainengine.cli._lr_find_cmd import lr_find_command
from trainengine.cli._quickstart import quickstart_command
from trainengine.cli._registry_cmd import registry_app
from trainengine.cli._runs_cmd import runs_app
from trainengine.cli._serve_cmd import serve_command
from trainengine.cli._train import train_command
from trainengine.cli._train_lora_cmd import train_lora_command
from trainengine.cli._tune_cmd import tune_command
from trainengine.errors import TrainEngineError

__all__ = ["app", "main"]

app = typer.Typer(
    name="trainengine",
    help="A production training engine for PyTorch.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("train")(train_command)
app.command("train-lora")(train_lora_command)
app.command("quickstart")(quickstart_command)
app.command("resume")(resume_command)
app.command("logs")(logs_command)
app.command("serve")(serve_command)
app.command("export")(export_command)
app.command("generate")(generate_command)
app.command("evaluate")(evaluate_command)
app.command("tune")(tune_command)
app.command("lr-find")(lr_find_command)
app.add_typer(config_app, name="config")
app.add_typer(checkpoints_app, name="checkpoints")
app.add_typer(runs_app, name="runs")
app.add_typer(registry_app, name="registry")
app.add_typer(jobs_app, name="jobs")


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors.")) -> None:
    STATE["debug"] = debug


@app.command("version")
def version() -> None:
    """Print the trainengine and torch versions."""
    import torch

    import trainengine

    typer.echo(f"trainengine {trainengine.__version__} (torch {torch.__version__})")


def _one_line(exc: BaseException) -> str:
    # Every problem is collapsed to one line too: a multi-line problem (a parser message) must
    # not break the "one clear line on stderr" promise.
    problems = getattr(exc, "problems", None)
    if problems:
        head = str(exc).splitlines()[0].rstrip(":")
        body = "; ".join(" ".join(str(p).split()) for p in problems)
        if len(problems) == 1:
            # "invalid configuration (1 problem)" adds nothing; "... from run.yaml" does.
            head = head.removesuffix(" (1 problem)")
            return body if head == "invalid configuration" else f"{head}: {body}"
        return f"{head}: {body}"
    return " ".join(str(exc).split())


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (also used by ``python -m trainengine``)."""
    args = sys.argv[1:] if argv is None else argv
    STATE["debug"] = "--debug" in args
    STATE["argv"] = list(args)
    try:
        # Without standalone mode, click returns a command's typer.Exit code instead of exiting.
        code = app(args=args, prog_name="trainengine", standalone_mode=False)
    except typer.Exit as exc:
        cause = exc.__cause__
        if isinstance(cause, KeyboardInterrupt):  # typer turns Ctrl+C into Exit(130)
            typer.echo(f"interrupted: {cause}" if str(cause) else "interrupted", err=True)
            return getattr(cause, "exit_code", 130)  # TrainingInterrupted: 143 for SIGTERM
        return exc.exit_code
    except ClickException as exc:
        exc.show()
        return exc.exit_code
    except (KeyboardInterrupt, typer.Abort) as exc:
        # click turns KeyboardInterrupt into Abort; TrainingInterrupted (the cause) carries
        # 130 for SIGINT or 143 for SIGTERM and the emergency checkpoint's path.
        cause = exc if isinstance(exc, KeyboardInterrupt) else (exc.__cause__ or exc.__context__)
        typer.echo(f"interrupted: {cause}" if cause is not None and str(cause) else "interrupted", err=True)
        return getattr(cause, "exit_code", 130)
    except TrainEngineError as exc:
        if STATE["debug"]:
            raise
        typer.echo(f"error: {_one_line(exc)}", err=True)
        return 2
    return code if isinstance(code, int) else 0


def _entry() -> None:
    sys.exit(main())
