"""The licence engine: three questions about adapters, answered from the catalogue with the clauses cited.

The rules are those of docs/licenses.md, "The model":

* P1: an adapter trained on a base is a derivative of it, so the base's restrictions always flow into the adapter.
* P2: the adapter's own licence (and the creator's Civitai permissions) can only add restrictions.
* A merge is a derivative of every input, so it must satisfy every input's licence and the base's.

Every verdict carries its reasons, each with the clause it rests on, because a verdict without its clause cannot
be checked by the user, and this is guidance, not legal advice. Whatever rests on unsettled law or an unverified
text is ``uncertain``, and ``forbidden`` wins over ``uncertain``, which wins over the two kinds of ``allowed``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from lorahub import errors
from lorahub.licenses.catalogue import UNKNOWN, CatalogueLicense, Term
from lorahub.licenses.terms import LicenseTerms

VerdictKind = Literal["allowed", "allowed-with-obligations", "forbidden", "uncertain"]
Use = Literal["commercial", "non-commercial", "research"]
Subject = Literal["outputs", "model"]
USES = ("commercial", "non-commercial", "research")
SUBJECTS = ("outputs", "model")

ATT_B = "Civitai Attachment B (model-version.service.ts)"
"""Where the creator permissions' legal wording comes from: Civitai appends it to the base licence
(``addAdditionalLicensePermissions`` in civitai/civitai's ``src/server/services/model-version.service.ts``)."""


@dataclass(frozen=True)
class Reason:
    """One step of the reasoning: what, on which clause, of which licence (or ``creator`` permissions)."""

    text: str
    clause: str
    license: str

    def as_dict(self) -> dict[str, str]:
        return {"text": self.text, "clause": self.clause, "license": self.license}


@dataclass(frozen=True)
class Verdict:
    """The answer to one question. ``effective_license`` lists the licences whose terms apply together."""

    verdict: VerdictKind
    reasons: list[Reason] = field(default_factory=list)
    obligations: list[str] = field(default_factory=list)
    effective_license: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "reasons": [reason.as_dict() for reason in self.reasons],
            "obligations": list(self.obligations),
            "effective_license": list(self.effective_license),
        }


@dataclass
class _Ledger:
    """Collects reasons and obligations while the rules run; the worst finding decides the verdict."""

    reasons: list[Reason] = field(default_factory=list)
    obligations: list[str] = field(default_factory=list)
    licenses: list[str] = field(default_factory=list)
    forbidden: bool = False
    uncertain: bool = False

    weight: dict[Reason, int] = field(default_factory=dict)

    def note(self, text: str, clause: str, license: str, weight: int = 0) -> None:
        reason = Reason(text, clause, license)
        if reason not in self.reasons:
            self.reasons.append(reason)
        self.weight[reason] = max(weight, self.weight.get(reason, 0))

    def forbid(self, text: str, clause: str, license: str) -> None:
        self.forbidden = True
        self.note(text, clause, license, weight=2)

    def doubt(self, text: str, clause: str, license: str) -> None:
        self.uncertain = True
        self.note(text, clause, license, weight=1)

    def oblige(self, text: str) -> None:
        if text not in self.obligations:
            self.obligations.append(text)

    def use(self, terms: LicenseTerms | None) -> None:
        if terms is not None and terms.id not in self.licenses:
            self.licenses.append(terms.id)

    def verdict(self) -> Verdict:
        kind: VerdictKind
        if self.forbidden:
            kind = "forbidden"
        elif self.uncertain:
            kind = "uncertain"
        elif self.obligations:
            kind = "allowed-with-obligations"
        else:
            kind = "allowed"
        # The reasons that decided the verdict come first (a stable sort keeps the order of the rules otherwise).
        reasons = sorted(self.reasons, key=lambda reason: -self.weight[reason])
        return Verdict(kind, reasons, list(self.obligations), list(self.licenses))


# --- small predicates ------------------------------------------------------------------------------------------


def _settled(term: Term, text: str) -> str:
    """Mark a reason that rests on an unverified text or a disputed reading."""
    return text if term.certain else f"{text} (not settled)"


def _non_commercial(lic: CatalogueLicense) -> bool:
    return lic.commercial_use_model.value == "no"


def _restrictive(lic: CatalogueLicense) -> bool:
    """Whether the licence imposes terms that a "no additional terms" licence could not carry."""
    return (
        lic.restrictions_travel.applies
        or lic.commercial_use_model.value != "yes"
        or lic.revenue_cap.applies
        or lic.share_alike.applies
    )


def _copyleft_free(lic: CatalogueLicense) -> bool:
    """Whether the licence forbids adding terms downstream (share-alike, or CC's "no downstream restrictions")."""
    return lic.share_alike.value == "yes" or lic.no_downstream_restrictions.value == "yes"


def _check_unknown(ledger: _Ledger, items: Sequence[LicenseTerms | None]) -> None:
    for terms in items:
        if terms is not None and terms.is_unknown:
            ledger.doubt(
                "the licence is unknown, so no use can be confirmed; find the licence text",
                "no licence text is known",
                UNKNOWN,
            )


# --- obligations of one licence --------------------------------------------------------------------------------


def _obligation(ledger: _Ledger, lic: CatalogueLicense, name: str, default: str) -> None:
    """Record the obligation of one term (attribution, notice, …) if it applies; an ``uncertain`` term doubts."""
    term = lic.term(name)
    if not term.applies:
        return
    if term.value == "uncertain":
        ledger.doubt(f"{name.replace('_', ' ')} under {lic.name} is not known", term.clause, lic.id)
        return
    ledger.oblige(f"{term.note or default} [{lic.id}: {term.clause}]")


def _distribution_obligations(ledger: _Ledger, terms: LicenseTerms) -> None:
    """What distributing a derivative under this licence requires."""
    lic = terms.license
    if lic.id == UNKNOWN:
        return
    _obligation(ledger, lic, "restrictions_travel", f"Carry the {lic.name} use restrictions to derivatives")
    _obligation(ledger, lic, "share_alike", f"License derivatives under {lic.id}")
    for term, text in (
        (lic.restrictions_travel, f"{lic.id}'s use restrictions travel to every derivative"),
        (lic.share_alike, f"{lic.id} is copyleft: derivatives stay under it"),
    ):
        if term.applies and term.value != "uncertain":
            ledger.note(_settled(term, text), term.clause, lic.id)
    _obligation(ledger, lic, "attribution", f"Give the attribution {lic.name} requires")
    _obligation(ledger, lic, "notice", f"Keep the notices {lic.name} requires")
    _obligation(ledger, lic, "revenue_cap", f"Commercial use only under the revenue cap ({lic.revenue_cap.value})")
    model = lic.commercial_use_model
    if model.value == "no":
        ledger.oblige(f"{model.note or 'Non-commercial use only'} [{lic.id}: {model.clause}]")
        ledger.note(_settled(model, "commercial use is not allowed"), model.clause, lic.id)
    elif model.value == "uncertain":
        ledger.doubt("whether commercial use is allowed is not known", model.clause, lic.id)
    if lic.derivatives_allowed.value == "uncertain":
        ledger.doubt("whether derivatives are allowed is not known", lic.derivatives_allowed.clause, lic.id)
    _creator_obligations(ledger, terms)


def _creator_obligations(ledger: _Ledger, terms: LicenseTerms) -> None:
    """The creator's Civitai permissions as obligations (Attachment B): each one missing adds a restriction."""
    if terms.credit_required:
        ledger.oblige(f"Credit the creator (model, creator and licence URLs) [{ATT_B}: allowNoCredit=false]")
    uses = terms.commercial_use
    if "none" in uses:
        ledger.oblige(f"No commercial use [{ATT_B}: allowCommercialUse=None]")
    elif uses:
        for needed, text in (
            ("image", "Do not sell or license images generated by the Model"),
            ("rent", "Do not use the Model on any service that monetizes image generation"),
            ("sell", "Do not sell or license the Model"),
        ):
            if needed not in uses:
                ledger.oblige(f"{text} [{ATT_B}: {needed} not in allowCommercialUse]")
    if terms.derivatives_allowed is False:
        ledger.oblige(f"Do not Share or make available a Merge [{ATT_B}: allowDerivatives=false]")


# --- clashes ---------------------------------------------------------------------------------------------------


def _absorbs(adapter: CatalogueLicense, base: CatalogueLicense) -> bool:
    """Whether the adapter's licence already carries every term of the base (FAIPL's Prohibited Uses are the
    Attachment A list of the Open RAIL licences: "designed to be compatible with Stable Diffusion's license")."""
    return (
        adapter.restrictions_travel.value == base.restrictions_travel.value
        and base.commercial_use_model.value == "yes"
        and not base.revenue_cap.applies
        and base.share_alike.value == "no"
    )


def _adapter_on_base_clash(ledger: _Ledger, adapter: CatalogueLicense, base: CatalogueLicense) -> None:
    """An adapter licence that forbids added terms meets a base whose terms must be added."""
    if adapter.id == base.id or UNKNOWN in (adapter.id, base.id):
        return
    if adapter.share_alike.value == "yes" and base.share_alike.value == "yes":
        text = f"two copyleft licences ({adapter.id}, {base.id}) each claim the adapter"
        ledger.doubt(text, adapter.share_alike.clause, adapter.id)
        ledger.note("the base's copyleft", base.share_alike.clause, base.id)
    elif _copyleft_free(adapter) and _restrictive(base):
        if _absorbs(adapter, base):
            text = f"{adapter.id} already carries {base.id}'s use restrictions ({base.restrictions_travel.value})"
            ledger.note(text, adapter.restrictions_travel.clause, adapter.id)
            return
        term = adapter.share_alike if adapter.share_alike.value == "yes" else adapter.no_downstream_restrictions
        text = f"{adapter.id} forbids adding terms, but {base.id}'s terms must travel with the adapter"
        ledger.doubt(text, term.clause, adapter.id)
        ledger.note("the base's terms bind its derivatives", base.restrictions_travel.clause, base.id)


def _widening(ledger: _Ledger, adapter: CatalogueLicense, base: CatalogueLicense) -> None:
    """P2: explain why a permissive adapter label does not widen what the base allows."""
    if _non_commercial(base) and not _non_commercial(adapter):
        ledger.note(
            f"the adapter is a derivative of the base; {adapter.id} cannot grant commercial use {base.id} withholds",
            base.restrictions_travel.clause,
            base.id,
        )


def _merge_clash(ledger: _Ledger, a: CatalogueLicense, b: CatalogueLicense) -> None:
    """Whether two licences can both hold over one merged file."""
    if a.id == b.id or UNKNOWN in (a.id, b.id):
        return
    for first, second in ((a, b), (b, a)):
        if first.share_alike.value != "yes":
            continue
        if second.share_alike.value == "yes":
            ledger.forbid(
                f"two incompatible copyleft licences ({first.id}, {second.id})", first.share_alike.clause, first.id
            )
            return
        if _non_commercial(second):
            ledger.forbid(
                f"{first.id} requires a licence that allows everything it allows; {second.id} removes commercial use",
                first.share_alike.clause,
                first.id,
            )
            return
        if second.restrictions_travel.applies and second.restrictions_travel.value != first.restrictions_travel.value:
            ledger.doubt(
                f"{first.id}'s copyleft against {second.id}'s use restrictions", first.share_alike.clause, first.id
            )
            return
    for first, second in ((a, b), (b, a)):
        if first.no_downstream_restrictions.value == "yes" and _restrictive(second):
            ledger.doubt(
                f"{first.id} forbids adding terms, but {second.id}'s terms must hold over the merge",
                first.no_downstream_restrictions.clause,
                first.id,
            )
            return


# --- the three questions ---------------------------------------------------------------------------------------


def effective(adapter: LicenseTerms, base: LicenseTerms | None) -> Verdict:
    """May this adapter be used and shared on this base, and under which terms? The base's restrictions always
    flow into the adapter (P1); the adapter's licence and creator permissions only add (P2)."""
    ledger = _Ledger()
    ledger.use(base)
    ledger.use(adapter)
    _check_unknown(ledger, [adapter, base])
    if base is not None:
        lic = base.license
        ledger.note(
            f"the adapter is a derivative of the base, so {lic.id}'s restrictions flow into it",
            lic.derivatives_allowed.clause,
            lic.id,
        )
        if lic.derivatives_allowed.value == "no":
            ledger.forbid("the base's licence does not allow derivatives", lic.derivatives_allowed.clause, lic.id)
        _distribution_obligations(ledger, base)
        _adapter_on_base_clash(ledger, adapter.license, lic)
        _widening(ledger, adapter.license, lic)
    _distribution_obligations(ledger, adapter)
    return ledger.verdict()


def merge(parts: list[LicenseTerms], base: LicenseTerms | None) -> Verdict:
    """May these adapters be merged into one file and distributed, and under which terms? A merge is a derivative
    of every input (Civitai Att. B "Merge"; FAIPL "combine a model with another model"), so every input's licence,
    every creator's permissions and the base's licence must all hold over it."""
    if not parts:
        raise errors.MissingArgumentError(
            "a merge needs at least one adapter", hint="Give the licences of the adapters to merge."
        )
    ledger = _Ledger()
    ledger.use(base)
    for part in parts:
        ledger.use(part)
    _check_unknown(ledger, [*parts, base])
    ledger.note(
        "a merge is a derivative of every input, so it must satisfy all their licences",
        'Civitai Att. B: "A Derivative of the Model will be understood to include Merges"',
        "creator",
    )
    if base is not None:
        lic = base.license
        text = f"the merge is a derivative of the base, so {lic.id}'s restrictions flow into it"
        ledger.note(text, lic.derivatives_allowed.clause, lic.id)
        _distribution_obligations(ledger, base)
    for part in parts:
        _merge_part(ledger, part, base)
    for i, first in enumerate(parts):
        for second in parts[i + 1 :]:
            _merge_clash(ledger, first.license, second.license)
    _merged_commercial_use(ledger, parts)
    return ledger.verdict()


def _merge_part(ledger: _Ledger, part: LicenseTerms, base: LicenseTerms | None) -> None:
    lic = part.license
    if lic.derivatives_allowed.value == "no":
        ledger.forbid(f"{lic.id} does not allow derivatives", lic.derivatives_allowed.clause, lic.id)
    if part.derivatives_allowed is False:
        ledger.forbid(
            'the creator does not allow merges: "Do not Share or make available a Merge"',
            f"{ATT_B}: allowDerivatives=false",
            "creator",
        )
    if part.different_license_allowed is False:
        ledger.oblige(f"The merge must keep the {lic.id} creator's permissions [{ATT_B}: allowDifferentLicense=false]")
    ledger.note(f"{lic.id}'s terms hold over the merge", lic.derivatives_allowed.clause, lic.id)
    _distribution_obligations(ledger, part)
    if base is not None:
        _adapter_on_base_clash(ledger, lic, base.license)


def _merged_commercial_use(ledger: _Ledger, parts: list[LicenseTerms]) -> None:
    """The merge's Civitai commercial-use permissions are the intersection of the stated sources'."""
    stated = [part.commercial_use for part in parts if part.commercial_use]
    if len(stated) < 2:
        return
    common = frozenset.intersection(*stated) - {"none"}
    shown = ", ".join(sorted(common)) or "none"
    ledger.oblige(f"The merge's commercial-use permissions are the intersection of its sources': {shown} [{ATT_B}]")


def use(parts: list[LicenseTerms], base: LicenseTerms | None, use: Use, *, subject: Subject = "outputs") -> Verdict:
    """May the outputs (images) of this base with these adapters be used this way? With ``subject="model"`` the
    question is the use of the model itself (running it for revenue), which several licences answer differently
    from the use of its outputs (FLUX.1 [dev] §2(a) vs §2(d))."""
    if use not in USES:
        raise errors.UnknownChoiceError(f"unknown use {use!r}", hint=f"Use one of {list(USES)}.")
    if subject not in SUBJECTS:
        raise errors.UnknownChoiceError(f"unknown subject {subject!r}", hint=f"Use one of {list(SUBJECTS)}.")
    ledger = _Ledger()
    items = [t for t in (base, *parts) if t is not None]
    if not items:
        raise errors.MissingArgumentError("nothing to judge", hint="Give a base licence, adapter licences, or both.")
    for terms in items:
        ledger.use(terms)
    _check_unknown(ledger, items)
    for terms in items:
        if terms.is_unknown:
            continue
        _use_restrictions(ledger, terms.license)
        if use == "commercial":
            _commercial(ledger, terms, subject)
        else:
            ledger.note(f"{use} use is within the licence", terms.license.commercial_use_model.clause, terms.id)
    return ledger.verdict()


def _use_restrictions(ledger: _Ledger, lic: CatalogueLicense) -> None:
    term = lic.restrictions_travel
    if term.value == "uncertain":
        ledger.doubt("the use restrictions are not known", term.clause, lic.id)
    elif term.applies:
        ledger.oblige(f"Use within the {lic.name} use restrictions ({term.value}) [{lic.id}: {term.clause}]")


def _commercial(ledger: _Ledger, terms: LicenseTerms, subject: Subject) -> None:
    lic = terms.license
    term = lic.commercial_use_outputs if subject == "outputs" else lic.commercial_use_model
    what = "outputs" if subject == "outputs" else "the model"
    if term.value == "no":
        ledger.forbid(_settled(term, f"commercial use of {what} is not allowed"), term.clause, lic.id)
    elif term.value == "uncertain":
        ledger.doubt(f"commercial use of {what} is disputed or unknown", term.clause, lic.id)
    else:
        ledger.note(_settled(term, f"commercial use of {what} is allowed"), term.clause, lic.id)
    _obligation(ledger, lic, "revenue_cap", f"Commercial use only under the revenue cap ({lic.revenue_cap.value})")
    model = lic.commercial_use_model
    if subject == "outputs" and model.note and model.value == "yes":
        ledger.oblige(f"{model.note} [{lic.id}: {model.clause}]")
    _creator_commercial(ledger, terms, subject)


def _creator_commercial(ledger: _Ledger, terms: LicenseTerms, subject: Subject) -> None:
    """The creator's ``allowCommercialUse`` (Attachment B): ``none`` forbids all; a missing value forbids its use."""
    uses = terms.commercial_use
    if not uses:
        return
    if "none" in uses:
        ledger.forbid("the creator allows no commercial use", f"{ATT_B}: allowCommercialUse=None", "creator")
        return
    needed, text = (
        ("image", "Do not sell or license images generated by the Model")
        if subject == "outputs"
        else ("rent", "Do not use the Model on any service that monetizes image generation")
    )
    if needed not in uses:
        ledger.forbid(f'the creator withholds it: "{text}"', f"{ATT_B}: {needed} not in allowCommercialUse", "creator")
