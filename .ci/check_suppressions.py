"""Every ``# noqa`` and ``# type: ignore`` names its codes and says why (part of ``make lint``).

ruff (``PGH004``) and mypy (``ignore-without-code``) check that a suppression names its
codes; neither can check that a reason follows. This script does: a suppression must be
followed by text on the same line, e.g.
``except Exception:  # noqa: BLE001 - a broken back-end must not stop training``.

Usage:
    python .ci/check_suppressions.py src tests    # exit 1 listing every bare suppression
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

# A bare noqa or one with codes (E501,F401), a bare type-ignore or one with codes in brackets;
# then the rest of the line, which must hold the reason.
_SUPPRESSION = re.compile(
    r"#\s*(?P<kind>noqa(?::\s*[A-Z]+[0-9]+(?:\s*,\s*[A-Z]+[0-9]+)*)?|type:\s*ignore(?:\[[^\]]*\])?)(?P<rest>.*)$"
)


def bare_suppressions(path: Path) -> list[tuple[int, str]]:
    """(line number, line) of each suppression in ``path`` with no reason after it."""
    found = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = _SUPPRESSION.search(line)
        if match is None:
            continue
        # The reason may follow a separator ("- why", "— why", "; why", "# why") or directly.
        reason = match.group("rest").strip().lstrip("-—:;#").strip()
        if not reason:
            found.append((number, line.strip()))
    return found


def main(argv: list[str]) -> int:
    roots = [Path(a) for a in argv] or [Path("src"), Path("tests")]
    problems = []
    for root in roots:
        files = [root] if root.is_file() else sorted(root.rglob("*.py"))
        for path in files:
            problems += [f"{path}:{n}: {line}" for n, line in bare_suppressions(path)]
    if problems:
        print("\n".join(problems))
        print(
            f"{len(problems)} suppression(s) without a reason: add why after the codes, "
            "e.g. `# noqa: BLE001 - a broken back-end must not stop training`",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
