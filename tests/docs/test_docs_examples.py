"""The documentation's examples run as written, and the generated config reference is fresh.

For every ``docs/*.md`` page, its fenced blocks run in document order inside a temporary working
directory, sharing one namespace per page (a reader follows a page top to bottom):

* a ```` ```python ```` block is executed as is, unless the line before it (blank lines aside) is
  ``<!-- skip-test -->``; tracebacks point at the page's own line numbers;
* in a ```` ```bash ```` block, every line that starts with ``trainengine `` is run through
  ``trainengine.cli.main.main`` and must exit with 0 (or with N when the line ends in
  ``# exit N``, for documented errors). A line ending in ``# may fail`` is not run; a line ending
  in ``# slow`` runs in a separate test marked ``slow``; a line reading a config from
  ``configs/`` runs from the repository root (``train`` gets an ``--output-dir`` under the
  temporary directory).

Also checked: ``docs/config-reference.md`` equals a fresh ``python docs/_generate.py`` rendering,
relative links and anchors resolve, and every page has at least one runnable example.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from trainengine.cli.main import main

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
PAGES = sorted(DOCS.glob("*.md"))
SKIP_MARK = "<!-- skip-test -->"
_FENCE = re.compile(r"^```([\w+-]*)\s*$")


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    line: int  # 1-based line number of the block's first code line in the page
    skip: bool


def parse_blocks(path: Path) -> list[Block]:
    """Every fenced block of a page (fences start at column 0)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        prev = i - 1
        while prev >= 0 and not lines[prev].strip():
            prev -= 1
        skip = prev >= 0 and lines[prev].strip() == SKIP_MARK
        end = i + 1
        while end < len(lines) and lines[end].rstrip() != "```":
            end += 1
        if end == len(lines):
            raise AssertionError(f"{path.name}:{i + 1}: code fence is never closed")
        blocks.append(Block(match.group(1), "\n".join(lines[i + 1 : end]), i + 2, skip))
        i = end + 1
    return blocks


def commands(block: Block) -> list[tuple[int, str]]:
    """(line number, command) for each ``trainengine ...`` line of a bash block."""
    out: list[tuple[int, str]] = []
    pending, first = "", 0
    for offset, raw in enumerate(block.code.splitlines()):
        line = raw.strip()
        if not pending:
            first = block.line + offset
        if line.endswith("\\"):  # continuation line
            pending += line[:-1] + " "
            continue
        line, pending = (pending + line).strip(), ""
        if line.startswith("trainengine "):
            out.append((first, line))
    return out


def _is_slow(command: str) -> bool:
    return command.rstrip().endswith("# slow")


def _may_fail(command: str) -> bool:
    return command.rstrip().endswith("# may fail")


def _expected_exit(command: str) -> int:
    match = re.search(r"#\s*exit (\d+)\s*$", command)
    return int(match.group(1)) if match else 0


def _run_command(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    args = shlex.split(command, comments=True)[1:]
    cwd = Path.cwd()
    if any(arg.startswith("configs/") for arg in args):
        # The example configs live in the repository: read them from there, write runs to tmp.
        monkeypatch.chdir(REPO)
        if args and args[0] == "train" and "--output-dir" not in args:
            args += ["--output-dir", str(tmp_path / "runs")]
    try:
        code = main(args)
    finally:
        monkeypatch.chdir(cwd)
    out, err = capsys.readouterr()
    expected = _expected_exit(command)
    assert code == expected, (
        f"{where}: `{command}` exited with {code}, expected {expected}\nstdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}"
    )
    if expected == 2:
        # A documented user error: one line on stderr, never a traceback.
        assert "Traceback" not in err, f"{where}: `{command}` printed a traceback:\n{err}"


@pytest.fixture
def docs_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run examples in an empty folder; tempfile.mkdtemp() in an example also lands there.

    The registries an example may add to (models, schedules, trackers, export formats, ...) are
    copies for the test's duration, so a registration shown in the docs does not leak into other
    tests.
    """
    from trainengine import registries

    for registry in vars(registries).values():
        if isinstance(registry, registries.Registry):
            monkeypatch.setattr(registry, "_entries", dict(registry._entries))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_examples_run(
    page: Path, docs_tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    namespace: dict[str, object] = {"__name__": f"docs.{page.stem}"}
    for block in parse_blocks(page):
        if block.skip:
            continue
        if block.lang == "python":
            # Pad so that tracebacks show the line numbers of the Markdown page.
            source = "\n" * (block.line - 1) + block.code
            exec(compile(source, str(page), "exec"), namespace)
        elif block.lang == "bash":
            for line_no, command in commands(block):
                if _may_fail(command) or _is_slow(command):
                    continue
                _run_command(command, docs_tmp, monkeypatch, capsys, f"{page.name}:{line_no}")


SLOW_COMMANDS = [
    pytest.param(command, id=f"{page.name}:{line_no}")
    for page in PAGES
    for block in parse_blocks(page)
    if block.lang == "bash" and not block.skip
    for line_no, command in commands(block)
    if _is_slow(command) and not _may_fail(command)
]


@pytest.mark.slow
@pytest.mark.parametrize(
    "command", SLOW_COMMANDS or [pytest.param(None, marks=pytest.mark.skip(reason="no slow commands"))]
)
def test_slow_commands_run(
    command: str, docs_tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _run_command(command, docs_tmp, monkeypatch, capsys, "docs")


def test_every_page_has_a_runnable_example() -> None:
    # The generated reference is a table, not a capability.
    missing = []
    for page in PAGES:
        if page.name == "config-reference.md":
            continue
        blocks = [b for b in parse_blocks(page) if not b.skip]
        runnable = [b for b in blocks if b.lang == "python"] + [
            c for b in blocks if b.lang == "bash" for c in commands(b)
        ]
        if not runnable:
            missing.append(page.name)
    assert not missing, f"pages without a runnable example: {missing}"


def test_skip_marker_is_used_sparingly() -> None:
    skipped = [f"{p.name}:{b.line}" for p in PAGES for b in parse_blocks(p) if b.skip]
    total = sum(1 for p in PAGES for b in parse_blocks(p) if b.lang == "python")
    assert len(skipped) <= max(2, total // 10), f"too many skipped examples: {skipped}"


def _load_generator():
    spec = importlib.util.spec_from_file_location("docs_generate", DOCS / "_generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_config_reference_is_fresh() -> None:
    generator = _load_generator()
    committed = (DOCS / "config-reference.md").read_text(encoding="utf-8")
    assert committed == generator.render(), (
        "docs/config-reference.md is stale: run `python docs/_generate.py` (or `make docs`)"
    )


def test_config_reference_lists_every_field() -> None:
    from trainengine import TrainingConfig

    text = (DOCS / "config-reference.md").read_text(encoding="utf-8")
    missing = [row["path"] for row in TrainingConfig.explain() if f"| `{row['path']}` |" not in text]
    assert not missing, f"fields missing from the reference: {missing}"


def _slug(heading: str) -> str:
    """GitHub's heading anchor: lower-case, punctuation dropped, spaces to dashes."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    anchors: set[str] = set()
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            anchors.add(_slug(line.lstrip("#")))
    return anchors


def test_links_resolve() -> None:
    broken = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+://", target):
                continue
            file_part, _, anchor = target.partition("#")
            dest = (page.parent / file_part).resolve() if file_part else page
            if not dest.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_index_links_every_page() -> None:
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    unlinked = [p.name for p in PAGES if p.name != "index.md" and f"]({p.name})" not in index]
    assert not unlinked, f"pages not linked from docs/index.md: {unlinked}"
