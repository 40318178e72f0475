"""Fixtures shared by the whole suite.

The PostgreSQL fixtures live in tests/_postgres.py (read its docstring): ``postgres_server``
(session), ``postgres_url`` (a fresh database per test), ``postgres_raw`` and ``sql_db`` (a test
using it runs on SQLite and on PostgreSQL). The suite runs with
``--import-mode=importlib``, so test modules cannot import helpers by module name; that module is
loaded here by path and its fixtures registered for every test.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def _load(name: str, path: Path):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None  # a file next to this one, always present
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before exec: dataclasses / pickling look the module up by name
    spec.loader.exec_module(module)
    return module


_postgres = _load("trainengine_tests_postgres", Path(__file__).with_name("_postgres.py"))

postgres_server = _postgres.postgres_server
postgres_url = _postgres.postgres_url
postgres_raw = _postgres.postgres_raw
sql_db = _postgres.sql_db

# Folder permissions that bind root too (tests/_permissions.py): permission tests run in CI as root.
permissions_enforced = _load(
    "trainengine_tests_permissions", Path(__file__).with_name("_permissions.py")
).permissions_enforced
