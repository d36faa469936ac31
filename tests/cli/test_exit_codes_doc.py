"""The error codes, the exit statuses the CLI gives them and docs/reference/exit-codes.md must agree: scripts
branch on what the doc promises, so a class added or remapped without its row is a broken promise."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from lorahub import errors
from lorahub.cli import exits

DOC = Path(__file__).parents[2] / "docs" / "reference" / "exit-codes.md"
KEBAB = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
CLI_ONLY_CODES = {"internal": exits.EXIT_INTERNAL}
"""Codes the CLI funnel prints for something that is not a lorahub error (an unexpected exception)."""


def error_classes() -> list[type[errors.LorahubError]]:
    def walk(cls: type[errors.LorahubError]) -> Iterator[type[errors.LorahubError]]:
        yield cls
        for sub in cls.__subclasses__():
            yield from walk(sub)

    found = dict.fromkeys(c for c in walk(errors.LorahubError) if c.__module__ == errors.__name__)
    return list(found)


def exit_for(cls: type[errors.LorahubError]) -> int:
    """The CLI's exit status for an instance; built without ``__init__``, which some classes extend."""
    return exits.exit_code_for(cls.__new__(cls))


def doc_table(heading: str) -> list[list[str]]:
    """The body rows of the first table under ``## heading``, cells stripped."""
    section = DOC.read_text(encoding="utf-8").split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    assert len(rows) > 2, f"no table under {heading!r}"
    return [[cell.strip() for cell in row.strip().strip("|").split("|")] for row in rows[2:]]


def documented_codes() -> dict[str, int]:
    codes: dict[str, int] = {}
    for row in doc_table("Error codes"):
        assert len(row) == 3, f"an Error codes row is | `code` | exit | when |: {row}"
        match = re.fullmatch(r"`([^`]+)`", row[0])
        assert match, f"the first cell names one code in backticks: {row}"
        assert match.group(1) not in codes, f"{match.group(1)} has two rows"
        codes[match.group(1)] = int(row[1])
    return codes


def test_every_class_has_a_kebab_case_code_of_its_own() -> None:
    by_code: dict[str, list[type[errors.LorahubError]]] = {}
    for cls in error_classes():
        assert KEBAB.match(cls.code), f"{cls.__name__}.code {cls.code!r} is not kebab-case"
        by_code.setdefault(cls.code, []).append(cls)
    for code, classes in by_code.items():
        # a subclass may keep its parent's code when it only refines the same meaning (e.g. near matches)
        root = classes[0]
        assert all(issubclass(c, root) for c in classes), f"{code!r} names unrelated classes: {classes}"
        assert len({exit_for(c) for c in classes}) == 1, f"{code!r} exits differently by class: {classes}"


def test_the_doc_lists_exactly_the_codes_errors_py_defines() -> None:
    defined = {cls.code for cls in error_classes()} | set(CLI_ONLY_CODES)
    documented = set(documented_codes())
    assert sorted(defined - documented) == [], "codes missing from docs/reference/exit-codes.md"
    assert sorted(documented - defined) == [], "codes in docs/reference/exit-codes.md that errors.py does not define"


@pytest.mark.parametrize("cls", error_classes(), ids=lambda cls: cls.__name__)
def test_the_doc_gives_each_code_the_exit_status_the_cli_gives(cls: type[errors.LorahubError]) -> None:
    assert documented_codes()[cls.code] == exit_for(cls), f"{cls.code}: the doc and lorahub/cli/exits.py disagree"


def test_cli_only_codes_and_every_status_are_documented() -> None:
    documented = documented_codes()
    for code, status in CLI_ONLY_CODES.items():
        assert documented[code] == status
    statuses = {int(row[0]) for row in doc_table("Exit statuses")}
    assert set(documented.values()) <= statuses, "an exit status used by a code has no row under Exit statuses"
    assert {exits.EXIT_OK, exits.EXIT_USAGE, exits.EXIT_INTERNAL} <= statuses
