"""Render ``docs/config-reference.md`` from the config fields' own descriptions.

Every field of :class:`trainengine.config.TrainingConfig` carries a type, a default, bounds and a
one-line description; this script turns :meth:`TrainingConfig.explain` into one Markdown table
per section, so the reference can never drift from the code.

Run it after changing a field:

    python docs/_generate.py          # rewrite docs/config-reference.md
    python docs/_generate.py --check  # exit 1 when the committed file is stale

``make docs`` runs the first form; ``tests/docs/test_docs_examples.py`` fails while the committed
file differs from a fresh rendering.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

from trainengine.config import SECTION_TYPES, TrainingConfig

__all__ = ["REFERENCE", "render"]

REFERENCE = Path(__file__).resolve().parent / "config-reference.md"

_LITERAL = re.compile(r"^(?P<outer>list\[)?Literal\[(?P<choices>.*)\](?(outer)\])(?P<opt> \| None)?$")


def _cell(text: str) -> str:
    """Escape a value for a Markdown table cell (pipes would split the cell)."""
    return text.replace("|", "\\|").replace("\n", " ")


def _type_and_choices(type_name: str) -> tuple[str, list[str]]:
    """``Literal['a', 'b']`` -> (``choice``, [a, b]); ``list[Literal[...]]`` -> (``list of choices``, ...)."""
    match = _LITERAL.match(type_name)
    if match is None:
        return type_name, []
    try:
        choices = ast.literal_eval("[" + match.group("choices") + "]")
    except (SyntaxError, ValueError):
        return type_name, []
    kind = "list of choices" if match.group("outer") else "choice"
    if match.group("opt"):
        kind += " | None"
    return kind, [str(c) for c in choices]


def _allowed(bounds: str, choices: list[str]) -> str:
    parts = []
    if choices:
        parts.append("one of " + ", ".join(f"`{c}`" for c in choices))
    if bounds:
        # A regex reads better as code: "matching `^(auto|cpu)$`".
        parts.append(re.sub(r"matching (\S+)", r"matching `\1`", bounds))
    return "; ".join(parts)


def render() -> str:
    """The full Markdown text of the config reference."""
    # Built-in names only: the reference must not depend on what this process has registered.
    rows = TrainingConfig.explain(builtin_only=True)
    lines = [
        "<!-- GENERATED FILE: do not edit. Source: the field descriptions in",
        "     src/trainengine/config/_sections.py. Regenerate: python docs/_generate.py (or: make docs) -->",
        "",
        "# Configuration reference",
        "",
        "Generated from `TrainingConfig.explain()`: every field of every section with its type, default,",
        "allowed values and description. Regenerate with `python docs/_generate.py` (`make docs` runs it);",
        "a test fails while this file is stale. The same information is printed by",
        "`trainengine config show --explain`. How to set these fields: [config.md](config.md).",
        "",
        "Sections: " + ", ".join(f"[{name}](#{name})" for name in SECTION_TYPES) + ".",
    ]
    for section, model in SECTION_TYPES.items():
        doc = (model.__doc__ or "").strip().splitlines()[0]
        lines += ["", f"## {section}", "", doc, "", "| field | type | default | allowed | description |", "| --- | --- | --- | --- | --- |"]
        for row in rows:
            head, _, field = row["path"].partition(".")
            if head != section:
                continue
            type_name, choices = _type_and_choices(row["type"])
            cells = [
                f"`{row['path']}`",
                _cell(type_name),
                f"`{_cell(row['default'])}`",
                _cell(_allowed(row["bounds"], choices)),
                _cell(row["description"]),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    top = [row for row in rows if "." not in row["path"]]
    if top:
        lines += ["", "## top level", "", "Fields outside the sections.", "", "| field | type | default | allowed | description |", "| --- | --- | --- | --- | --- |"]
        for row in top:
            type_name, choices = _type_and_choices(row["type"])
            cells = [f"`{row['path']}`", _cell(type_name), f"`{_cell(row['default'])}`", _cell(_allowed(row["bounds"], choices)), _cell(row["description"])]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = render()
    if "--check" in args:
        current = REFERENCE.read_text(encoding="utf-8") if REFERENCE.exists() else ""
        if current != text:
            print(f"{REFERENCE} is stale: run python docs/_generate.py", file=sys.stderr)
            return 1
        print(f"{REFERENCE} is up to date")
        return 0
    REFERENCE.write_text(text, encoding="utf-8")
    print(f"wrote {REFERENCE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
