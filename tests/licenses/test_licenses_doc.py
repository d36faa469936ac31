"""docs/licenses.md shows the verdicts the engine really gives: its table is regenerated and compared."""

from __future__ import annotations

from pathlib import Path

from lorahub.licenses.report import CASES, verdict_table

DOC = Path(__file__).resolve().parents[2] / "docs" / "licenses.md"


def _table_in_doc() -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index("<!-- verdicts:start -->\n") + len("<!-- verdicts:start -->\n")
    return text[start : text.index("<!-- verdicts:end -->")]


def test_doc_table_is_up_to_date() -> None:
    assert _table_in_doc() == verdict_table(), "regenerate with lorahub.licenses.report.verdict_table()"


def test_doc_states_it_is_not_legal_advice() -> None:
    assert "not legal advice" in DOC.read_text(encoding="utf-8")


def test_table_has_one_row_per_case() -> None:
    assert len(verdict_table().strip().splitlines()) == len(CASES) + 2
