"""Layering of the package, read from the source: lower layers never import higher ones.

Every module of ``src/trainengine`` is parsed with :mod:`ast` and every ``import`` in it is
collected — module level, inside functions and under ``if TYPE_CHECKING`` alike (a lazy import is
still a dependency). Each top-level part of the package (``engine``, ``_sql``, ...) has a layer:

    0  errors, _io, _sql, _hashing, _numeric, _preprocess, _alerting, _storage, _skops, provenance, registries
    1  config
    2  tasks, data, models
    3  checkpoint, probes
    4  engine
    5  tracking, monitoring, evaluation, export, registry, distributed
    6  serve, jobs, assembly, tune, sklearn
    7  cli, __main__, and the package facade (``trainengine/__init__.py``)

A part may import any part of a lower layer, and a part of its own layer only along an edge of
:data:`SAME_LAYER` (each with its reason; the edges must not form a cycle). The facade re-exports
everything, so nothing inside the package imports from it except ``__version__``. Inside
``models`` the modules import each other without a cycle. The bundle's standalone code
(``serve/_runtime.py`` copied as ``inference.py``, with ``_hashing.py``, ``_numeric.py`` and
``_preprocess.py``; ``serve/_alerting.py`` copied as ``alerting.py`` with ``_alerting.py``) imports nothing
from trainengine but those modules.

A failure lists every offending import as ``file:line``. The same contract is written out for
people in docs/architecture.md.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "trainengine"
ROOT = "<facade>"  # trainengine/__init__.py

LAYERS: list[tuple[str, ...]] = [
    (
        "errors",
        "_io",
        "_sql",
        "_hashing",
        "_numeric",
        "_preprocess",
        "_liveness",
        "_alerting",
        "_storage",
        "_skops",
        "provenance",
        "registries",
    ),
    ("config",),
    ("tasks", "data", "models"),
    ("checkpoint", "probes"),
    ("engine",),
    ("tracking", "monitoring", "evaluation", "export", "registry", "distributed"),
    ("serve", "jobs", "assembly", "tune", "sklearn"),
    ("cli", "compat", "__main__", ROOT),
]
LAYER_OF = {part: i for i, parts in enumerate(LAYERS) for part in parts}

# Imports between two parts of one layer that are allowed, and why. Everything else in a layer
# is independent of its neighbours.
SAME_LAYER: dict[tuple[str, str], str] = {
    ("_sql", "errors"): "SQL errors derive from TrainEngineError",
    ("_io", "errors"): "file helpers raise the package's errors",
    ("_liveness", "errors"): "a locked run directory is a TrainEngineError (exit 2)",
    ("registries", "errors"): "an unknown name raises ConfigError",
    ("_alerting", "errors"): "invalid alert settings raise ConfigError (a bundle's copy defines its own)",
    ("_storage", "errors"): "an unusable storage location raises ConfigError",
    ("provenance", "errors"): "provenance helpers may raise the package's errors",
    ("_skops", "errors"): "an untrusted .skops file is a TrainEngineError; a missing skops a MissingExtraError",
    ("_skops", "_hashing"): "a scikit-learn model folder is checked against its manifest before skops reads it",
    ("monitoring", "tracking"): "MetricsEngine(use_wandb=True) logs through the W&B tracker",
    ("export", "tracking"): "export reads run directories written by tracking",
    ("__main__", "cli"): "python -m trainengine runs the CLI",
    ("tune", "assembly"): "each trial trains with the public Trainer and the config's default callbacks",
    ("jobs", "assembly"): "a training job trains with the public Trainer, as trainengine train does",
    ("jobs", "tune"): "a tune job runs tune() in the job's own process",
    ("sklearn", "tune"): "pipeline searches reuse tune's search-space types, storage, samplers, pruners and report",
    ("serve", "sklearn"): "trainengine serve serves scikit-learn bundles with the skops loader's trusted-types check",
    ("cli", "compat"): "seed-shaped CLI spellings (checkpoints import) reuse the compat adapters",
    ("cli", ROOT): "trainengine version prints trainengine.__version__",
}

# The bundle's standalone code: trainengine modules each may import (nothing else of the package).
STANDALONE: dict[str, set[str]] = {
    "trainengine.serve._runtime": {"trainengine._hashing", "trainengine._numeric", "trainengine._preprocess"},
    "trainengine._hashing": set(),
    "trainengine._numeric": set(),
    "trainengine._preprocess": set(),
    # In the package it raises trainengine's ConfigError; a bundle's _alerting.py defines a stand-in.
    "trainengine._alerting": {"trainengine.errors"},
    "trainengine.serve._alerting": {"trainengine._alerting"},
}


@dataclass(frozen=True)
class Import:
    source: str  # importing module, dotted
    target: str  # imported trainengine module (or the package itself), dotted
    names: tuple[str, ...]  # names taken from the package itself by ``from trainengine import ...``
    where: str  # "src/trainengine/x.py:12"


def module_files(src: Path = SRC) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``src/trainengine``."""
    out = {}
    for path in sorted((src / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports_of(module: str, source: str, known: set[str], *, is_package: bool, where: str) -> Iterator[Import]:
    """Every trainengine import in one module's source (any depth: functions, ``if`` blocks)."""
    package = module if is_package else module.rsplit(".", 1)[0]
    nodes = [n for n in ast.walk(ast.parse(source)) if isinstance(n, (ast.Import, ast.ImportFrom))]
    for node in sorted(nodes, key=lambda n: (n.lineno, n.col_offset)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    yield Import(module, alias.name, (), f"{where}:{node.lineno}")
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not (target == PACKAGE or target.startswith(PACKAGE + ".")):
                continue
            plain = []
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in known:  # ``from trainengine import _numeric``: the submodule itself
                    yield Import(module, sub, (), f"{where}:{node.lineno}")
                else:
                    plain.append(alias.name)
            if plain:
                yield Import(module, target, tuple(plain), f"{where}:{node.lineno}")


def part_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def all_imports(src: Path = SRC) -> list[Import]:
    files = module_files(src)
    known = set(files)
    out: list[Import] = []
    for module, path in files.items():
        where = path.relative_to(src.parent).as_posix()
        out += imports_of(
            module, path.read_text(encoding="utf-8"), known, is_package=path.name == "__init__.py", where=where
        )
    return out


def violations(imports: list[Import]) -> list[str]:
    """One line per import that breaks the layering, ``file:line: why``."""
    problems = []
    for imp in imports:
        src_part, dst_part = part_of(imp.source), part_of(imp.target)
        if src_part == dst_part:
            continue
        if dst_part == ROOT and src_part != "cli":
            if set(imp.names) <= {"__version__"}:
                continue
            problems.append(
                f"{imp.where}: {imp.source} imports {', '.join(imp.names) or 'trainengine'} from the package facade "
                "(it re-exports everything: a cycle); import from the module that defines it"
            )
            continue
        if src_part not in LAYER_OF or dst_part not in LAYER_OF:
            continue  # reported by test_every_part_of_the_package_has_a_layer
        low, high = LAYER_OF[dst_part], LAYER_OF[src_part]
        if low > high:
            problems.append(
                f"{imp.where}: {imp.source} (layer {high}, {src_part}) imports {imp.target} (layer {low}, {dst_part}): "
                "a lower layer must not import a higher one"
            )
        elif low == high and (src_part, dst_part) not in SAME_LAYER:
            problems.append(
                f"{imp.where}: {imp.source} imports {imp.target}: {src_part} -> {dst_part} within layer {low} is "
                "not an allowed same-layer import (tests/test_layering.py SAME_LAYER)"
            )
    return problems


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Elementary cycles found by depth-first search (one per back edge), each as a closed path."""
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                found.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


# ----------------------------------------------------------------------------- the contract
def test_every_part_of_the_package_has_a_layer() -> None:
    parts = {part_of(m) for m in module_files()}
    missing = sorted(parts - set(LAYER_OF))
    assert not missing, f"give these parts of trainengine a layer in tests/test_layering.py LAYERS: {missing}"


def test_lower_layers_never_import_higher_ones() -> None:
    problems = violations(all_imports())
    assert not problems, f"{len(problems)} import(s) break the layering:\n" + "\n".join(problems)


def test_allowed_same_layer_imports_form_no_cycle() -> None:
    edges: dict[str, set[str]] = {}
    for a, b in SAME_LAYER:
        assert LAYER_OF[a] == LAYER_OF[b], f"SAME_LAYER lists {a} -> {b}, which are in different layers"
        edges.setdefault(a, set()).add(b)
    assert not cycles(edges)


def test_no_import_cycle_inside_models() -> None:
    files = module_files()
    edges: dict[str, set[str]] = {}
    for imp in all_imports():
        if (
            imp.source.startswith("trainengine.models")
            and imp.target.startswith("trainengine.models")
            and imp.source != imp.target
        ):
            # ``from trainengine.models import x`` runs models/__init__: an edge to the package.
            edges.setdefault(imp.source, set()).add(imp.target)
    found = cycles(edges)
    assert not found, "import cycles inside trainengine.models:\n" + "\n".join(" -> ".join(c) for c in found)
    assert any(m.startswith("trainengine.models.") for m in files)  # the check saw the package


def test_bundle_code_imports_nothing_else_from_trainengine() -> None:
    by_module: dict[str, set[str]] = {m: set() for m in STANDALONE}
    where: dict[str, list[str]] = {}
    for imp in all_imports():
        if imp.source in STANDALONE:
            by_module[imp.source].add(imp.target)
            where.setdefault(imp.source, []).append(f"{imp.where} ({imp.target})")
    for module, allowed in STANDALONE.items():
        extra = by_module[module] - allowed
        assert not extra, f"{module} is copied into bundles and must not import {sorted(extra)}: " + "; ".join(
            where[module]
        )


# ----------------------------------------------------------------------------- the checker itself
def _check(module: str, source: str, known: set[str] | None = None) -> list[str]:
    known = known or {"trainengine.tracking", "trainengine.engine", "trainengine.errors", "trainengine._numeric"}
    return violations(list(imports_of(module, source, known, is_package=False, where="x.py")))


def test_checker_reports_upward_imports_at_any_depth_with_their_line() -> None:
    source = (
        "import os\n"
        "from trainengine.errors import ConfigError\n"  # downward: fine
        "def f():\n"
        "    if True:\n"
        "        from trainengine.tracking import ExperimentDB\n"  # upward, inside a function
        "    import trainengine.serve._runtime\n"  # upward, plain import
    )
    problems = _check("trainengine.engine._x", source)
    assert [p.split(":")[1] for p in problems] == ["5", "6"]
    assert "engine) imports trainengine.tracking (layer 5, tracking)" in problems[0]


def test_checker_resolves_relative_and_facade_imports() -> None:
    assert _check("trainengine.probes._x", "from .. import _numeric\n") == []  # trainengine._numeric: lower
    assert _check("trainengine.probes._x", "from ..tracking import x\n")  # trainengine.tracking: higher
    assert _check("trainengine.provenance", "from trainengine import __version__\n") == []
    (problem,) = _check("trainengine.engine._x", "from trainengine import Trainer\n")
    assert "imports Trainer from the package facade" in problem


def test_checker_refuses_undeclared_same_layer_imports() -> None:
    (problem,) = _check("trainengine.tracking._x", "from trainengine.registry import ModelRegistry\n")
    assert "tracking -> registry within layer 5 is not an allowed same-layer import" in problem
    assert _check("trainengine.monitoring._x", "from trainengine.tracking import ExperimentTracker\n") == []


def test_cycle_finder_finds_a_cycle_and_only_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b", "c"}, "b": {"c"}}) == []
