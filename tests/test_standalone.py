"""The repository stands alone: nothing in it reads or cites the team's reference shelf beside the clone.

A user's clone has no ``../shared``; CI's has one, so a path into it would pass there and fail for users. CI also
runs the demo and the tests in a clone placed where no ``../shared`` exists (``.ci/run``), which is the one file
allowed to name it.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ("lorahub", "tests", "docs", "examples", "benchmarks", "requirements")
ROOT_FILES = ("README.md", "Makefile", "pyproject.toml", "mkdocs.yml")
ALLOWED = {ROOT / ".ci" / "run", Path(__file__).resolve()}
SHELF = re.compile(r"\.\./shared\b|/work/shared\b|\bshared/(fixtures|reference|background)\b|LORAHUB_SHARED")
TEXT_SUFFIXES = {".py", ".md", ".sh", ".toml", ".yml", ".yaml", ".json", ".txt", ".cfg", ".ini", ""}


def repository_files() -> list[Path]:
    files = [ROOT / name for name in ROOT_FILES]
    for folder in CHECKED:
        files += [path for path in (ROOT / folder).rglob("*") if path.is_file() and "__pycache__" not in path.parts]
    return [path for path in files if path.suffix in TEXT_SUFFIXES and path.resolve() not in ALLOWED]


def test_no_file_points_at_the_reference_shelf() -> None:
    offenders = []
    for path in repository_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        offenders += [
            f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, match.start()) + 1}: {match.group(0)}"
            for match in SHELF.finditer(text)
        ]
    assert not offenders, "the repository must stand alone (vendor into tests/fixtures/):\n" + "\n".join(offenders)


def test_vendored_fixtures_carry_their_licences() -> None:
    fixtures = ROOT / "tests" / "fixtures"
    for folder in ("real", "keylists"):
        assert list((fixtures / folder).glob("LICENSE-*")), f"tests/fixtures/{folder} has no licence file"
    assert (fixtures / "README.md").is_file(), "tests/fixtures/README.md gives each file's origin and licence"
