"""Is this dataset fit to train on? Opt-outs and people without a likeness release block; unknowns are reported
but do not block (a card then says ``unknown``, which is honest rather than wrong)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lorahub.consent.manifest import Item, Manifest
from lorahub.consent.sources import MINOR, NO_PEOPLE, REAL_PERSON


@dataclass(frozen=True)
class OptedOut:
    """An opted-out image and why: the embedded signals that say so, or ``declared`` when only the sources file
    does."""

    path: str
    sha256: str
    reasons: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "reasons": list(self.reasons)}


@dataclass(frozen=True)
class PeopleFlag:
    """An image showing a minor or a real person (named or by pseudonymous reference) with no likeness release."""

    path: str
    people: tuple[str, ...]
    problem: str

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "people": list(self.people), "problem": self.problem}


@dataclass(frozen=True)
class ConsentReport:
    counts: dict[str, int]
    card_status: str
    manifest_digest: str
    opted_out: tuple[OptedOut, ...]
    unknown: tuple[str, ...]
    people: tuple[PeopleFlag, ...]
    unmatched_sources: tuple[str, ...]
    notes: tuple[str, ...] = ()
    """What could not be read (a damaged C2PA manifest, a non-UTF-8 caption): not blocking, worth a look."""

    @property
    def ok(self) -> bool:
        return not self.opted_out and not self.people

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "card_status": self.card_status,
            "manifest_digest": self.manifest_digest,
            "counts": dict(self.counts),
            "opted_out": [o.as_dict() for o in self.opted_out],
            "unknown": list(self.unknown),
            "people": [p.as_dict() for p in self.people],
            "unmatched_sources": list(self.unmatched_sources),
            "notes": list(self.notes),
        }


def check(manifest: Manifest) -> ConsentReport:
    return ConsentReport(
        counts=manifest.summary(),
        card_status=manifest.card_status(),
        manifest_digest=manifest.digest,
        opted_out=tuple(_opted_out(item) for item in manifest.items if item.status == "opted-out"),
        unknown=tuple(item.path for item in manifest.items if item.status == "unknown"),
        people=tuple(flag for item in manifest.items if (flag := _people_flag(item)) is not None),
        unmatched_sources=manifest.unmatched_sources,
        notes=tuple(f"{item.path}: {note}" for item in manifest.items for note in item.notes),
    )


def _opted_out(item: Item) -> OptedOut:
    reasons = [f"{s.kind} {s.where}={s.value}" + (f" ({s.detail})" if s.detail else "") for s in item.opt_outs]
    if item.declared_status == "opted-out":
        reasons.append("declared opted-out in the sources file")
    return OptedOut(item.path, item.sha256, tuple(reasons))


def _people_flag(item: Item) -> PeopleFlag | None:
    """A pseudonymous reference stands for an identifiable person, so it needs a release like ``real-person``."""
    depicted = [p for p in item.people if p != NO_PEOPLE]
    if not depicted or item.likeness_release:
        return None
    if MINOR in depicted:
        return PeopleFlag(item.path, item.people, "minor depicted without a likeness release")
    kind = "real person" if REAL_PERSON in depicted else "referenced person"
    return PeopleFlag(item.path, item.people, f"{kind} depicted without a likeness release")
