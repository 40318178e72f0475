"""The ``trainengine`` command line (typer): one module per sub-command."""

from trainengine.cli.main import app, main

__all__ = ["app", "main"]
