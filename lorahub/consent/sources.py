"""The sources file: what the dataset's curator knows about each image (where it came from, who made it, under
which licence, what consent, who is in it). A CSV with a header row or a JSON list of objects.

Strict on purpose: a misspelt column or status would otherwise turn a curator's record into silent ``unknown``s.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorahub import errors

STATUSES = ("explicit-opt-in", "licensed", "public-domain", "opt-out-checked-clear", "opted-out", "unknown")
"""Per-image consent statuses (docs/consent.md), written with hyphens; underscores are accepted."""

NO_PEOPLE = "none"
REAL_PERSON = "real-person"
MINOR = "minor"
PERSON_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
"""A pseudonymous reference to a depicted person (``person:0042``): never a name, so the manifest can travel."""

KEYS = ("path", "file", "sha256")
FIELDS = ("source", "author", "license", "consent", "people", "likeness_release")
ALIASES = {
    "name": "file",
    "filename": "file",
    "url": "source",
    "source_url": "source",
    "licence": "license",
    "status": "consent",
    "consent_status": "consent",
    "release": "likeness_release",
}
SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_SOURCES_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class SourceEntry:
    """One row: ``key`` (relative path, file name or sha256, as ``key_kind`` says) and what the curator knows."""

    key_kind: str
    key: str
    source: str | None = None
    author: str | None = None
    license: str | None = None
    consent: str = "unknown"
    people: tuple[str, ...] = ()
    likeness_release: str | None = None


def _bad(path: Path, where: str, problem: str) -> errors.InvalidFileError:
    return errors.InvalidFileError(
        f"sources file {path}: {where}: {problem}",
        hint=(
            "The sources file is a CSV with a header row or a JSON list of objects, keyed by one of "
            f"{', '.join(KEYS)}, with the columns {', '.join(FIELDS)}; consent is one of {', '.join(STATUSES)}."
        ),
    )


def read_sources(path: Path) -> list[SourceEntry]:
    """Parse ``path`` (``.json`` as JSON, anything else as CSV) into entries; any problem is an InvalidFileError
    naming the row."""
    if not path.is_file():
        raise errors.PathNotFoundError(f"sources file not found: {path}")
    raw = path.read_bytes()
    if len(raw) > MAX_SOURCES_BYTES:
        raise _bad(path, "file", f"larger than {MAX_SOURCES_BYTES} bytes")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _bad(path, "file", f"not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    rows = _json_rows(path, text) if path.suffix.lower() == ".json" else _csv_rows(path, text)
    entries = [_entry(path, f"row {n}", row) for n, row in enumerate(rows, start=1)]
    _no_duplicates(path, entries)
    return entries


def _json_rows(path: Path, text: str) -> Sequence[Mapping[str, Any]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _bad(path, f"line {exc.lineno}", f"not JSON ({exc.msg})") from exc
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise _bad(path, "top level", "expected a JSON list of objects")
    return data


def _csv_rows(path: Path, text: str) -> Sequence[Mapping[str, Any]]:
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
        rows = list(reader)
    except csv.Error as exc:
        raise _bad(path, "CSV", str(exc)) from exc
    if not reader.fieldnames:
        raise _bad(path, "header", "the file is empty: expected a header row")
    for n, row in enumerate(rows, start=1):
        if None in row or any(value is None for value in row.values()):
            raise _bad(path, f"row {n}", "has a different number of cells than the header")
    return rows


def _entry(path: Path, where: str, row: Mapping[str, Any]) -> SourceEntry:
    fields = _canonical(path, where, row)
    keys = [k for k in KEYS if fields.get(k)]
    if len(keys) != 1:
        raise _bad(path, where, f"needs exactly one of {', '.join(KEYS)} (found {', '.join(keys) or 'none'})")
    key_kind = keys[0]
    key = fields[key_kind]
    if key_kind == "sha256" and not SHA256.match(key.lower()):
        raise _bad(path, where, f"sha256 {key!r} is not 64 hex digits")
    return SourceEntry(
        key_kind=key_kind,
        key=key.lower() if key_kind == "sha256" else key.replace("\\", "/").removeprefix("./"),
        source=fields.get("source") or None,
        author=fields.get("author") or None,
        license=fields.get("license") or None,
        consent=_consent(path, where, fields.get("consent", "")),
        people=_people(path, where, fields.get("people", "")),
        likeness_release=fields.get("likeness_release") or None,
    )


def _canonical(path: Path, where: str, row: Mapping[str, Any]) -> dict[str, str]:
    """Column names folded to the canonical ones; values as stripped strings (JSON lists of people joined)."""
    fields: dict[str, str] = {}
    for column, value in row.items():
        name = ALIASES.get(str(column).strip().lower(), str(column).strip().lower())
        if name not in KEYS + FIELDS:
            raise _bad(path, where, f"unknown column {column!r}")
        if name in fields:
            raise _bad(path, where, f"column {name!r} given twice (through an alias)")
        fields[name] = _text(path, f"{where}.{name}", value)
    return fields


def _text(path: Path, where: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ";".join(v.strip() for v in value)
    raise _bad(path, where, f"expected text, got {type(value).__name__}")


def _consent(path: Path, where: str, value: str) -> str:
    status = value.strip().lower().replace("_", "-") or "unknown"
    if status not in STATUSES:
        raise _bad(path, f"{where}.consent", f"{value!r} is not one of {', '.join(STATUSES)}")
    return status


def _people(path: Path, where: str, value: str) -> tuple[str, ...]:
    """``;``-separated: ``none``, ``real-person``, ``minor`` and/or pseudonymous references; empty = not recorded."""
    people = tuple(sorted({p.strip() for p in re.split(r"[;|]", value) if p.strip()}))
    for person in people:
        if person.lower() in (NO_PEOPLE, REAL_PERSON, MINOR):
            continue
        if not PERSON_REF.match(person):
            raise _bad(path, f"{where}.people", f"{person!r} is not none, real-person, minor or a reference")
    people = tuple(p.lower() if p.lower() in (NO_PEOPLE, REAL_PERSON, MINOR) else p for p in people)
    if NO_PEOPLE in people and len(people) > 1:
        raise _bad(path, f"{where}.people", "'none' cannot be combined with people")
    return people


def _no_duplicates(path: Path, entries: Sequence[SourceEntry]) -> None:
    seen: set[tuple[str, str]] = set()
    for entry in entries:
        if (entry.key_kind, entry.key) in seen:
            raise _bad(path, f"{entry.key_kind} {entry.key!r}", "listed twice")
        seen.add((entry.key_kind, entry.key))
