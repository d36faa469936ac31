"""The repository stands alone: nothing in it reads or cites the team's reference shelf beside the clone.

A user's clone has nothing beside it; CI's checkout has the team's reference shelf next to it, so a path into the
shelf would pass there and fail for users. CI also runs the demo and the tests in a clone whose parent folder holds
nothing else (``.ci/run``). Its notes are not cited either (``formats.md §2.2``, ``DESIGN decision 1``): a reader
cannot open them, so a comment points at a page under docs/ or at the upstream source instead.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ("lorahub", "tests", "docs", "examples", "benchmarks", "requirements")
ROOT_FILES = ("README.md", "Makefile", "pyproject.toml", "mkdocs.yml", ".ci/run")
SHELF_NAME = "shared"
"""The shelf's folder name, kept out of this file's own text so that the check does not find itself."""
NOTES = r"(formats|merge-and-train|licensing-and-registry|provenance|code-style)"
SHELF = re.compile(
    rf"\.\./{SHELF_NAME}\b|/work/{SHELF_NAME}\b|\b{SHELF_NAME}/(fixtures|reference|background)\b"
    rf"|LORAHUB_{SHELF_NAME.upper()}"
    # citations of the team's reference notes; docs/…md pages (docs/provenance.md, …) are the repository's own
    rf"|(?<![\w/.-]){NOTES}(\.md)?`*\s*§"
    r"|(?<![\w/.-])(merge-and-train|licensing-and-registry|code-style)\.md\b|(?<![\w/.(-])formats\.md\b"
    r"|\bDESIGN(\.md\b|\s+decision\b|\s+\")|\blicensing reference\b|\breference (provenance\.md|notes)\b"
    r"|§\s*\d+(\.\d+)*\s+trap\b|\b[Mm]atrix\s+§|\(§\s*\d+\.\d+"
)
TEXT_SUFFIXES = {".py", ".md", ".sh", ".toml", ".yml", ".yaml", ".json", ".txt", ".cfg", ".ini", ""}


def repository_files() -> list[Path]:
    files = [ROOT / name for name in ROOT_FILES]
    for folder in CHECKED:
        files += [path for path in (ROOT / folder).rglob("*") if path.is_file() and "__pycache__" not in path.parts]
    return [path for path in files if path.suffix in TEXT_SUFFIXES and path.resolve() != Path(__file__).resolve()]


def test_no_file_points_at_the_reference_shelf() -> None:
    offenders = []
    for path in repository_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        offenders += [
            f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, match.start()) + 1}: {match.group(0)}"
            for match in SHELF.finditer(text)
        ]
    message = "the repository must stand alone (vendor into tests/fixtures/; cite docs/ or the upstream source):\n"
    assert not offenders, message + "\n".join(offenders)


def test_vendored_fixtures_carry_their_licences() -> None:
    fixtures = ROOT / "tests" / "fixtures"
    for folder in ("real", "keylists"):
        assert list((fixtures / folder).glob("LICENSE-*")), f"tests/fixtures/{folder} has no licence file"
    assert (fixtures / "README.md").is_file(), "tests/fixtures/README.md gives each file's origin and licence"
