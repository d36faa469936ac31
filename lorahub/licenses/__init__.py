"""Licences of LoRA adapters and their base models: a catalogue of facts with clauses, and an engine that answers
three questions (the effective licence of an adapter on a base, whether adapters may be merged, whether outputs may
be used commercially). Guidance with citations, not legal advice: see docs/licenses.md.
"""

from __future__ import annotations

from lorahub.licenses.catalogue import UNKNOWN, CatalogueLicense, Term, get_license, list_licenses, load_catalogue
from lorahub.licenses.engine import Reason, Verdict, effective, merge, use
from lorahub.licenses.terms import LicenseTerms, from_card_license, from_card_licenses, terms_for

__all__ = [
    "UNKNOWN",
    "CatalogueLicense",
    "LicenseTerms",
    "Reason",
    "Term",
    "Verdict",
    "effective",
    "from_card_license",
    "from_card_licenses",
    "get_license",
    "list_licenses",
    "load_catalogue",
    "merge",
    "terms_for",
    "use",
]
