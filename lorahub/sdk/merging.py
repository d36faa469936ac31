"""``lorahub merge`` / ``Hub.merge``: licence check first, then family check, then the maths, then a signed version.

The merged card says what its parents said, combined the way a derivative of all of them must: every licence
applies (``A AND B``), credit is required if any parent requires it, commercial uses are those every parent allows,
consent is the worst of the parents', trigger words are all of theirs. Its lineage lists each parent's digest with
its weight and the method.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorahub import errors

if TYPE_CHECKING:
    from lorahub.merge.combine import MergeReport, Method
    from lorahub.sdk.adding import AddResult
    from lorahub.sdk.hub import Hub
    from lorahub.signing.card import Card, Consent, License

CONSENT_ORDER = ("opted-out", "unknown", "mixed", "opt-out-checked", "licensed", "consented", "public-domain")
"""Worst first: a merge is no better consented than its least consented parent."""


@dataclass
class MergeResult:
    """The new signed version :meth:`Hub.merge` catalogued, the merge report (method, ranks, per-module
    errors) and the licence verdict the merge was allowed under."""

    added: AddResult
    report: MergeReport
    verdict: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.added.name,
            "version": self.added.version,
            "content_digest": self.added.content_digest,
            "merge": self.report.as_dict(),
            "license_verdict": self.verdict,
        }


def _all_of(values: Sequence[bool | None]) -> bool | None:
    return None if any(v is None for v in values) else all(values)


def merged_license(licenses: Sequence[License]) -> License:
    from lorahub.signing.card import License

    ids = list(dict.fromkeys(lic.id for lic in licenses))
    uses = [set(lic.commercial_use) for lic in licenses]
    credits = [lic.credit_required for lic in licenses]
    common = set.intersection(*uses) if all(uses) else set()
    return License(
        id=" AND ".join(ids) if len(ids) > 1 else ids[0],
        credit_required=True if any(credits) else _all_of(credits),
        commercial_use=tuple(sorted(common)),
        derivatives_allowed=_all_of([lic.derivatives_allowed for lic in licenses]),
        different_license_allowed=_all_of([lic.different_license_allowed for lic in licenses]),
    )


def merged_consent(consents: Sequence[Consent]) -> Consent:
    from lorahub.signing.card import Consent

    statuses = {c.status for c in consents}
    if len(statuses) == 1:
        return Consent(status=statuses.pop())
    worst = min(statuses, key=lambda s: CONSENT_ORDER.index(s) if s in CONSENT_ORDER else 0)
    return Consent(status=worst if worst in ("opted-out", "unknown") else "mixed")


def _combined_card(cards: Sequence[Card]) -> Card:
    first = cards[0]
    names = {c.base_model.name for c in cards}
    base = first.base_model if len(names) == 1 else dataclasses.replace(first.base_model, name=None)
    return dataclasses.replace(
        first,
        base_model=base,
        license=merged_license([c.license for c in cards]),
        consent=merged_consent([c.consent for c in cards]),
        trigger_words=tuple(dict.fromkeys(w for c in cards for w in c.trigger_words)),
        description="Merged from " + ", ".join(f"{c.name}@{c.version}" for c in cards),
        tags=tuple(dict.fromkeys(t for c in cards for t in c.tags)),
    )


def merge(
    hub: Hub,
    specs: Sequence[str],
    *,
    out: str,
    method: Method = "cat",
    rank: int | None = None,
    use: str | None = None,
    accept_uncertain: bool = False,
    dtype: str | None = None,
) -> MergeResult:
    from lorahub.adapters.names import FAMILIES
    from lorahub.adapters.writers import write_adapter
    from lorahub.merge.combine import merge_adapters
    from lorahub.sdk.adding import AddOptions
    from lorahub.sdk.derive import add_derived
    from lorahub.sdk.licensing import require_license
    from lorahub.sdk.loading import resolve, settle_family
    from lorahub.sdk.refs import check_name, parse_weighted

    check_name(out)
    pairs = [parse_weighted(spec) for spec in specs]
    if len(pairs) < 2:
        raise errors.MissingArgumentError(
            "a merge needs at least two adapters", hint="lorahub merge A:0.7 B:0.5 --out C"
        )
    refs = [ref for ref, _ in pairs]
    verdict = require_license(hub, refs, use=use, merge=True, accept_uncertain=accept_uncertain, action="merge")
    verified = [(resolve(hub, ref), weight) for ref, weight in pairs]
    for item, _ in verified:
        settle_family(item, FAMILIES)
    missing = [v.ref for v, _ in verified if v.version is None or v.signed is None]
    if missing:
        raise errors.NotCataloguedError(
            f"merge takes catalogued adapters; not catalogued: {', '.join(missing)}",
            hint="Add them first (lorahub add FILE), so the merge's lineage can name them.",
        )
    merged, report = merge_adapters([(v.adapter, w) for v, w in verified], method=method, rank=rank)
    parameters = {"method": method} | ({"rank": rank} if rank else {})
    parents = [(v.version, {"weight": repr(w), **parameters}) for v, w in verified if v.version is not None]
    cards = [v.signed.card for v, _ in verified if v.signed is not None]
    with tempfile.TemporaryDirectory(dir=hub.settings.home) as scratch:
        path = Path(scratch) / f"{out}.safetensors"
        write_adapter(merged, path, to="kohya", dtype=dtype)  # type: ignore[arg-type]
        added = add_derived(
            hub,
            path,
            parents,
            relation="merged-from",
            action="merge",
            options=AddOptions(name=out, inherit=_combined_card(cards)),
            details={"method": method, "rank": rank, "report": report.as_dict(), "license": verdict.verdict},
        )
    return MergeResult(added=added, report=report, verdict=verdict.as_dict())
