"""``python -m trainengine``."""

from trainengine.cli.main import _entry

_entry()
