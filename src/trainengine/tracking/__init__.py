"""Run records and console output: the run directory writer and the progress display."""

from trainengine.tracking._console import ConsoleProgress, format_duration
from trainengine.tracking._run_dir import RunDirectory, git_info, library_versions, new_run_id, save_weights

__all__ = ["RunDirectory", "ConsoleProgress", "format_duration", "git_info", "library_versions", "new_run_id", "save_weights"]
