"""The licence catalogue: what each licence permits and requires, each fact with the clause it rests on.

The facts live in ``catalogue.toml`` (package data) rather than in code so that a reviewer can check a clause
against the licence text without reading Python, and so that a correction is a data change. The file is validated
strictly at load: a misspelt field or a value outside the allowed set would otherwise silently change a verdict.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from lorahub import errors

UNKNOWN = "unknown"
"""The id of the catalogue entry for a licence lorahub cannot identify; it never yields ``allowed``."""

VALUES = ("yes", "no", "uncertain", "n/a")
"""The values of a yes/no term. ``uncertain`` is kept where the law or the text is unsettled."""

ENUM_TERMS = (
    "commercial_use_model",
    "commercial_use_outputs",
    "derivatives_allowed",
    "share_alike",
    "no_downstream_restrictions",
)
"""Terms whose value must be one of ``VALUES``."""

TEXT_TERMS = ("restrictions_travel", "attribution", "notice", "revenue_cap")
"""Terms whose value is one of ``VALUES`` or a short string (a restriction-set slug, a revenue threshold)."""

TERMS = ENUM_TERMS + TEXT_TERMS
ENTRY_KEYS = frozenset({"id", "name", "aliases", "families", "url", "sha256", "spdx", *TERMS})
REQUIRED_KEYS = frozenset({"id", "name", "aliases", "families", *TERMS})
TERM_KEYS = frozenset({"value", "clause", "certain", "note"})
SHA256 = re.compile(r"^[0-9a-f]{64}$")
SLUG = re.compile(r"^[a-z0-9][a-z0-9-]*$")

UNKNOWN_HINT = "Run `lorahub license list` to see the known licences and their aliases."


@dataclass(frozen=True)
class Term:
    """One permission or obligation of a licence, with the clause it rests on and whether the reading is settled."""

    value: str
    clause: str
    certain: bool
    note: str | None = None

    @property
    def applies(self) -> bool:
        """Whether the term imposes something (anything but ``no`` / ``n/a``); ``uncertain`` counts."""
        return self.value not in ("no", "n/a")

    def as_dict(self) -> dict[str, Any]:
        return {"value": self.value, "clause": self.clause, "certain": self.certain, "note": self.note}


@dataclass(frozen=True)
class CatalogueLicense:
    """A licence of the catalogue. ``families`` are the base-model families it usually governs."""

    id: str
    name: str
    aliases: tuple[str, ...]
    families: tuple[str, ...]
    url: str | None
    sha256: str | None
    spdx: bool
    commercial_use_model: Term
    commercial_use_outputs: Term
    derivatives_allowed: Term
    share_alike: Term
    no_downstream_restrictions: Term
    restrictions_travel: Term
    attribution: Term
    notice: Term
    revenue_cap: Term

    def term(self, name: str) -> Term:
        """The term called ``name`` (one of ``TERMS``)."""
        if name not in TERMS:
            raise KeyError(name)
        term: Term = getattr(self, name)
        return term

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "aliases": list(self.aliases),
            "families": list(self.families),
            "url": self.url,
            "sha256": self.sha256,
            "spdx": self.spdx,
            **{name: self.term(name).as_dict() for name in TERMS},
        }


# --- validation ------------------------------------------------------------------------------------------------


def _fail(source: str, label: str, problem: str) -> errors.LicenseCatalogueError:
    return errors.LicenseCatalogueError(f"{source}: licence entry {label}: {problem}")


def _string(value: Any, source: str, label: str, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(source, label, f"{field} must be a non-empty string")
    return value


def _strings(value: Any, source: str, label: str, field: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _fail(source, label, f"{field} must be a list of strings")
    return tuple(_string(item, source, label, f"{field}[{i}]") for i, item in enumerate(value))


def _term(data: Any, source: str, label: str, name: str) -> Term:
    if not isinstance(data, Mapping):
        raise _fail(source, label, f"{name} must be a table with value, clause and certain")
    unknown = sorted(set(data) - TERM_KEYS)
    if unknown:
        raise _fail(source, label, f"{name} has unknown keys {unknown}")
    missing = sorted({"value", "clause", "certain"} - set(data))
    if missing:
        raise _fail(source, label, f"{name} is missing {missing}")
    value = _string(data["value"], source, label, f"{name}.value")
    if name in ENUM_TERMS and value not in VALUES:
        raise _fail(source, label, f"{name}.value {value!r} is not one of {list(VALUES)}")
    if name == "restrictions_travel" and value not in VALUES and not SLUG.match(value):
        raise _fail(source, label, f"{name}.value {value!r} must be one of {list(VALUES)} or a slug")
    if not isinstance(data["certain"], bool):
        raise _fail(source, label, f"{name}.certain must be true or false")
    note = data.get("note")
    return Term(
        value=value,
        clause=_string(data["clause"], source, label, f"{name}.clause"),
        certain=data["certain"],
        note=None if note is None else _string(note, source, label, f"{name}.note"),
    )


def _optional_fields(data: Mapping[str, Any], source: str, label: str) -> tuple[str | None, str | None, bool]:
    url = data.get("url")
    if url is not None and not _string(url, source, label, "url").startswith("https://"):
        raise _fail(source, label, "url must start with https://")
    sha256 = data.get("sha256")
    if sha256 is not None and (not isinstance(sha256, str) or not SHA256.match(sha256)):
        raise _fail(source, label, "sha256 must be 64 lower-case hex digits")
    spdx = data.get("spdx", False)
    if not isinstance(spdx, bool):
        raise _fail(source, label, "spdx must be true or false")
    return url, sha256, spdx


def _entry(data: Any, source: str, index: int) -> CatalogueLicense:
    """One ``[[license]]`` table, checked field by field; errors name the entry by id (or position)."""
    if not isinstance(data, Mapping):
        raise _fail(source, f"#{index + 1}", "must be a table")
    label = repr(data["id"]) if isinstance(data.get("id"), str) else f"#{index + 1}"
    unknown = sorted(set(data) - ENTRY_KEYS)
    if unknown:
        raise _fail(source, label, f"unknown keys {unknown}")
    missing = sorted(REQUIRED_KEYS - set(data))
    if missing:
        raise _fail(source, label, f"missing fields {missing}")
    url, sha256, spdx = _optional_fields(data, source, label)
    terms = {name: _term(data[name], source, label, name) for name in TERMS}
    return CatalogueLicense(
        id=_string(data["id"], source, label, "id"),
        name=_string(data["name"], source, label, "name"),
        aliases=_strings(data["aliases"], source, label, "aliases"),
        families=_strings(data["families"], source, label, "families"),
        url=url,
        sha256=sha256,
        spdx=spdx,
        **terms,
    )


def _check_unique(entries: list[CatalogueLicense], source: str) -> None:
    """Ids and aliases must resolve to exactly one licence, ignoring case, or resolution would be order-dependent.
    An alias may repeat its own id in another case (HF writes ``apache-2.0`` for SPDX ``Apache-2.0``)."""
    seen: dict[str, str] = {}
    for entry in entries:
        for name in (entry.id, *entry.aliases):
            key = name.casefold()
            if seen.get(key, entry.id) != entry.id:
                raise _fail(source, repr(entry.id), f"id or alias {name!r} is already used by {seen[key]!r}")
            seen[key] = entry.id
    if UNKNOWN not in seen:
        raise errors.LicenseCatalogueError(f"{source}: the catalogue has no {UNKNOWN!r} entry")


def parse_catalogue(text: str, source: str = "catalogue.toml") -> tuple[CatalogueLicense, ...]:
    """Parse and validate catalogue text; raise ``LicenseCatalogueError`` naming the entry at the first problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise errors.LicenseCatalogueError(f"{source}: not valid TOML: {exc}") from exc
    extra = sorted(set(data) - {"license"})
    if extra:
        raise errors.LicenseCatalogueError(f"{source}: unknown top-level keys {extra}")
    raw = data.get("license")
    if not isinstance(raw, list) or not raw:
        raise errors.LicenseCatalogueError(f"{source}: no [[license]] entries")
    entries = [_entry(item, source, i) for i, item in enumerate(raw)]
    _check_unique(entries, source)
    return tuple(entries)


def load_catalogue(path: Path | None = None) -> tuple[CatalogueLicense, ...]:
    """Load a catalogue file, or the packaged one when ``path`` is ``None``."""
    if path is None:
        return _packaged()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise errors.FileReadError(f"cannot read the licence catalogue {path}: {exc}") from exc
    return parse_catalogue(text, str(path))


@functools.cache
def _packaged() -> tuple[CatalogueLicense, ...]:
    """The packaged catalogue, parsed once: it is immutable for the life of the process."""
    text = resources.files("lorahub.licenses").joinpath("catalogue.toml").read_text(encoding="utf-8")
    return parse_catalogue(text, "lorahub/licenses/catalogue.toml")


@functools.cache
def _index() -> dict[str, CatalogueLicense]:
    return {name.casefold(): entry for entry in _packaged() for name in (entry.id, *entry.aliases)}


# --- look-up ---------------------------------------------------------------------------------------------------


def list_licenses() -> list[CatalogueLicense]:
    """Every licence of the packaged catalogue, in catalogue order."""
    return list(_packaged())


def get_license(id_or_alias: str) -> CatalogueLicense:
    """The licence with this id or alias (case-insensitive: SPDX ids, HF ids and Civitai names all appear in the
    wild with varying case). An unknown name is an error rather than ``unknown``, so that a typo is not silently
    read as "terms not known"; ask for ``unknown`` explicitly for that."""
    entry = _index().get(id_or_alias.strip().casefold())
    if entry is None:
        raise errors.UnknownLicenseError(f"unknown licence id {id_or_alias!r}", hint=UNKNOWN_HINT)
    return entry
