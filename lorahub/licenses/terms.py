"""A licence as it applies to one adapter: the catalogue entry plus the creator's Civitai-style permissions.

Civitai's permission fields (their legal wording is Civitai's "Attachment B") supplement the licence and only ever add
restrictions, so they are kept beside the catalogue entry rather than folded into it: the engine can then cite
each restriction to the licence clause or to the creator's flag it came from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lorahub import errors
from lorahub.licenses.catalogue import UNKNOWN, CatalogueLicense, get_license

if TYPE_CHECKING:
    from lorahub.signing.card import License as CardLicense

COMMERCIAL_USES = frozenset({"none", "image", "rent", "sell"})
"""Civitai's ``allowCommercialUse`` values as lorahub cards record them (``rentcivit`` is one site's service)."""


@dataclass(frozen=True)
class LicenseTerms:
    """A catalogue licence plus optional creator permissions; ``None`` / an empty set mean "not stated"."""

    license: CatalogueLicense
    credit_required: bool | None = None
    commercial_use: frozenset[str] = frozenset()
    derivatives_allowed: bool | None = None
    different_license_allowed: bool | None = None

    @property
    def id(self) -> str:
        return self.license.id

    @property
    def is_unknown(self) -> bool:
        return self.license.id == UNKNOWN


def _commercial_use(values: Iterable[str]) -> frozenset[str]:
    """Checked because a misspelt permission (``images``) would otherwise read as "selling images not allowed"."""
    found = frozenset(v.strip().lower() for v in values)
    bad = sorted(found - COMMERCIAL_USES)
    if bad:
        raise errors.UnknownChoiceError(
            f"unknown commercial-use permission {bad}", hint=f"Use some of {sorted(COMMERCIAL_USES)}."
        )
    if "none" in found and len(found) > 1:
        raise errors.ConflictingArgumentsError(
            "commercial-use permission 'none' cannot be combined with others",
            hint="'none' means no commercial use at all; give it alone.",
        )
    return found


def terms_for(
    id_or_alias: str,
    *,
    credit_required: bool | None = None,
    commercial_use: Iterable[str] = (),
    derivatives_allowed: bool | None = None,
    different_license_allowed: bool | None = None,
) -> LicenseTerms:
    """The terms of a catalogue licence (by id or alias, any case) with the creator's permissions added."""
    return LicenseTerms(
        license=get_license(id_or_alias),
        credit_required=credit_required,
        commercial_use=_commercial_use(commercial_use),
        derivatives_allowed=derivatives_allowed,
        different_license_allowed=different_license_allowed,
    )


CONJUNCTION = " AND "
"""SPDX's conjunction: a merge's card names every parent's licence (``MIT AND CC-BY-4.0``), all of which apply."""


def from_card_licenses(card_license: CardLicense, *, strict: bool = True) -> list[LicenseTerms]:
    """The terms of every licence a card names: one, or each part of an SPDX ``A AND B`` conjunction (what a merge
    writes), each with the card's permissions."""
    ids = card_license.id.split(CONJUNCTION) if CONJUNCTION in card_license.id else [card_license.id]
    return [from_card_license(dataclasses.replace(card_license, id=i.strip()), strict=strict) for i in ids]


def from_card_license(card_license: CardLicense, *, strict: bool = True) -> LicenseTerms:
    """The terms a signed card declares. With ``strict=False`` an id outside the catalogue reads as ``unknown``
    (its terms are not known), which is what a reader of third-party cards usually wants."""
    try:
        entry = get_license(card_license.id)
    except errors.LorahubError:
        if strict:
            raise
        entry = get_license(UNKNOWN)
    return LicenseTerms(
        license=entry,
        credit_required=card_license.credit_required,
        commercial_use=_commercial_use(card_license.commercial_use),
        derivatives_allowed=card_license.derivatives_allowed,
        different_license_allowed=card_license.different_license_allowed,
    )
