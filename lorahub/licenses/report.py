"""The table of verdicts for common combinations, generated from the engine so the documentation cannot drift
from what the engine says (``tests/licenses`` checks ``docs/licenses.md`` against it)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from lorahub.licenses.engine import Use, Verdict, effective, merge, use
from lorahub.licenses.terms import terms_for

ORM = "LicenseRef-CreativeML-OpenRAIL-M"
ORPP = "LicenseRef-CreativeML-OpenRAIL-PP-M"
SCL = "LicenseRef-Stability-AI-Community"
FDNC = "LicenseRef-FLUX-1-dev-Non-Commercial"
F9NC = "LicenseRef-FLUX-2-klein-Non-Commercial"
APL = "Apache-2.0"
FAIPL = "LicenseRef-FAIPL-1.0-SD"
NOOB = "LicenseRef-NoobAI"


@dataclass(frozen=True)
class Case:
    """One row: a question (``effective``, ``merge`` or ``use:<use>``), the adapter licences and the base."""

    question: str
    parts: tuple[str, ...]
    base: str | None

    def run(self) -> Verdict:
        parts = [terms_for(p) for p in self.parts]
        base = None if self.base is None else terms_for(self.base)
        if self.question == "effective":
            return effective(parts[0], base)
        if self.question == "merge":
            return merge(parts, base)
        kind: Use = "commercial" if self.question == "use:commercial" else "non-commercial"
        return use(parts, base, kind)


CASES = (
    Case("effective", ("MIT",), ORM),
    Case("effective", ("MIT",), ORPP),
    Case("effective", ("MIT",), SCL),
    Case("effective", ("MIT",), FDNC),
    Case("effective", ("MIT",), APL),
    Case("effective", ("MIT",), FAIPL),
    Case("effective", ("CC-BY-4.0",), ORM),
    Case("effective", ("CC-BY-4.0",), APL),
    Case("effective", ("CC-BY-SA-4.0",), FAIPL),
    Case("effective", ("CC-BY-NC-4.0",), ORPP),
    Case("effective", ("unknown",), ORM),
    Case("merge", (ORM, ORM), ORM),
    Case("merge", (ORM, FAIPL), ORPP),
    Case("merge", (ORM, "MIT"), ORM),
    Case("merge", (ORM, "CC-BY-SA-4.0"), ORM),
    Case("merge", (FAIPL, "CC-BY-NC-4.0"), FAIPL),
    Case("merge", (FAIPL, "CC-BY-SA-4.0"), FAIPL),
    Case("merge", (FAIPL, "MIT"), FAIPL),
    Case("merge", (FDNC, "MIT"), FDNC),
    Case("use:commercial", (), ORM),
    Case("use:commercial", (), SCL),
    Case("use:commercial", (), FDNC),
    Case("use:commercial", (), F9NC),
    Case("use:commercial", ("MIT",), APL),
    Case("use:commercial", (), FAIPL),
    Case("use:commercial", (), NOOB),
    Case("use:commercial", ("CC-BY-NC-4.0",), ORPP),
    Case("use:non-commercial", ("CC-BY-NC-4.0",), FDNC),
)


def _short(license_id: str) -> str:
    return license_id.removeprefix("LicenseRef-")


def _clauses(verdict: Verdict) -> str:
    """The first few clause citations, trimmed: enough to find the clause, not to quote it."""
    cited = []
    for reason in verdict.reasons:
        if reason.license == "creator" and verdict.verdict != "forbidden":
            continue
        text = re.split(r'[":;]', reason.clause, maxsplit=1)[0].strip()[:48]
        entry = f"{_short(reason.license)} {text}"
        if entry not in cited:
            cited.append(entry)
    return "; ".join(cited[:3]).replace("|", "\\|")


def verdict_table() -> str:
    """The Markdown table of ``CASES`` with the engine's verdicts."""
    lines = ["| Question | Adapter(s) | Base | Verdict | Rests on |", "|---|---|---|---|---|"]
    for case in CASES:
        verdict = case.run()
        parts = " + ".join(_short(p) for p in case.parts) or "—"
        base = "—" if case.base is None else _short(case.base)
        lines.append(f"| {case.question} | {parts} | {base} | {verdict.verdict} | {_clauses(verdict)} |")
    return "\n".join(lines) + "\n"
