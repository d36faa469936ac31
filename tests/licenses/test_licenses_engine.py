"""The engine against a draft licence compatibility matrix: (a) an adapter on a base, (b) a merge, (c) a use;
docs/licenses.md says where the engine departs from it.

Each row names the expected verdict and a clause fragment that must appear among the reasons' clauses, so a row
fails if either the verdict or the rule it rests on changes.
"""

from __future__ import annotations

import pytest

from lorahub import errors
from lorahub.licenses import Verdict, effective, from_card_license, merge, terms_for, use
from lorahub.signing.card import License as CardLicense

ORM = "creativeml-openrail-m"
ORPP = "openrail++"
SCL = "LicenseRef-Stability-AI-Community"
FDNC = "flux-1-dev-non-commercial-license"
F9NC = "LicenseRef-FLUX-2-klein-Non-Commercial"
APL = "apache-2.0"
FAIPL = "faipl-1.0-sd"


def _clauses(verdict: Verdict) -> str:
    return " | ".join(reason.clause for reason in verdict.reasons)


def _check(verdict: Verdict, expected: str, clause: str) -> None:
    assert verdict.verdict == expected, verdict.as_dict()
    assert clause in _clauses(verdict), _clauses(verdict)


# (a) adapter X on base Y: the effective licence of the adapter.
EFFECTIVE = [
    ("MIT", ORM, "allowed-with-obligations", "§4(a)"),
    ("MIT", ORPP, "allowed-with-obligations", "§4(a)"),
    ("Apache-2.0", SCL, "allowed-with-obligations", "low-rank adaptation"),
    ("MIT", FDNC, "allowed-with-obligations", "§2(a)"),
    ("MIT", APL, "allowed-with-obligations", "§2, §4"),
    ("MIT", FAIPL, "allowed-with-obligations", "combine a model with another model"),
    ("CC-BY-4.0", ORM, "uncertain", "§2(a)(5)(B)"),
    ("CC-BY-4.0", ORPP, "uncertain", "§2(a)(5)(B)"),
    ("CC-BY-4.0", SCL, "uncertain", "§2(a)(5)(B)"),
    ("CC-BY-4.0", FDNC, "uncertain", "§2(a)(5)(B)"),
    ("CC-BY-4.0", APL, "allowed-with-obligations", "§2, §4"),
    ("CC-BY-4.0", FAIPL, "uncertain", "§2(a)(5)(B)"),
    ("CC-BY-SA-4.0", ORM, "uncertain", "§3(b)(1)"),
    ("CC-BY-SA-4.0", FDNC, "uncertain", "§3(b)(1)"),
    ("CC-BY-SA-4.0", APL, "allowed-with-obligations", "§2, §4"),
    ("CC-BY-SA-4.0", FAIPL, "uncertain", "§3(b)(1)"),
    ("CC-BY-NC-4.0", APL, "allowed-with-obligations", "NonCommercial purposes only"),
    # The matrix says OK* (non-commercial) here; CC BY-NC 4.0 has the same "no downstream restrictions" clause as
    # CC BY, so the engine keeps the clash uncertain rather than follow the draft.
    ("CC-BY-NC-4.0", FDNC, "uncertain", "§2(a)(5)(B)"),
    ("CC-BY-NC-4.0", ORM, "uncertain", "§2(a)(5)(B)"),
    (ORM, ORM, "allowed-with-obligations", "§4(a)"),
    (APL, APL, "allowed-with-obligations", "§2, §4"),
    (FAIPL, FAIPL, "allowed-with-obligations", "combine a model"),
    ("unknown", ORM, "uncertain", "no licence text is known"),
    ("MIT", "unknown", "uncertain", "no licence text is known"),
]


@pytest.mark.parametrize(("adapter", "base", "expected", "clause"), EFFECTIVE)
def test_effective_matrix_a(adapter: str, base: str, expected: str, clause: str) -> None:
    _check(effective(terms_for(adapter), terms_for(base)), expected, clause)


def test_openrail_base_obligation_is_attachment_a() -> None:
    verdict = effective(terms_for("MIT"), terms_for(ORM))
    assert any("Attachment A use restrictions" in o for o in verdict.obligations)
    assert verdict.effective_license == ["LicenseRef-CreativeML-OpenRAIL-M", "MIT"]


def test_fdnc_base_makes_adapter_non_commercial() -> None:
    verdict = effective(terms_for("MIT"), terms_for(FDNC))
    assert any(o.startswith("Non-commercial use only") for o in verdict.obligations)
    assert any("cannot grant commercial use" in r.text for r in verdict.reasons)


def test_effective_without_base_is_the_adapter_licence() -> None:
    assert effective(terms_for("CC0-1.0"), None).verdict == "allowed"


# (b) merging adapters X and Y on one base.
MERGE = [
    ([ORM, ORM], ORM, "allowed-with-obligations", "§4(a)"),
    ([ORM, FAIPL], ORPP, "allowed-with-obligations", "Prohibited Uses"),
    ([ORM, "CC-BY-NC-4.0"], APL, "uncertain", "§2(a)(5)(B)"),  # matrix: OK*; see the CC-BY-NC note above
    (["MIT", "CC-BY-NC-4.0"], APL, "allowed-with-obligations", "NonCommercial purposes only"),
    ([ORM, "CC-BY-SA-4.0"], ORM, "uncertain", "§3(b)(1)"),
    ([ORM, "MIT"], ORM, "allowed-with-obligations", "§4(a)"),
    ([FAIPL, FAIPL], FAIPL, "allowed-with-obligations", "all modifications must be provided under this license"),
    ([FAIPL, "CC-BY-NC-4.0"], FAIPL, "forbidden", "all modifications must be provided under this license"),
    ([FAIPL, "CC-BY-NC-4.0"], None, "forbidden", "all modifications must be provided under this license"),
    ([FAIPL, "CC-BY-SA-4.0"], FAIPL, "forbidden", "§3(b)(1)"),
    ([FAIPL, "MIT"], FAIPL, "allowed-with-obligations", "combine a model"),
    ([FDNC, FDNC], FDNC, "allowed-with-obligations", "§2(a)"),
    ([FDNC, "CC-BY-NC-4.0"], FDNC, "uncertain", "§2(a)(5)(B)"),  # matrix: OK*; see the CC-BY-NC note above
    ([FDNC, "CC-BY-SA-4.0"], FDNC, "forbidden", "§3(b)(1)"),
    ([FDNC, "MIT"], FDNC, "allowed-with-obligations", "§2(a)"),
    (["unknown", "MIT"], None, "uncertain", "no licence text is known"),
]


@pytest.mark.parametrize(("parts", "base", "expected", "clause"), MERGE)
def test_merge_matrix_b(parts: list[str], base: str | None, expected: str, clause: str) -> None:
    verdict = merge([terms_for(p) for p in parts], None if base is None else terms_for(base))
    _check(verdict, expected, clause)


def test_merge_obligations_name_the_governing_licence() -> None:
    verdict = merge([terms_for(FAIPL), terms_for("MIT")], terms_for(FAIPL))
    assert any("under FAIPL-1.0-SD" in o for o in verdict.obligations)
    verdict = merge([terms_for(FDNC), terms_for("MIT")], terms_for(FDNC))
    assert any("Non-commercial use only" in o for o in verdict.obligations)


def test_creator_forbids_merges() -> None:
    verdict = merge([terms_for("MIT", derivatives_allowed=False), terms_for("MIT")], terms_for(APL))
    _check(verdict, "forbidden", "allowDerivatives=false")
    assert any("Do not Share or make available a Merge" in r.text for r in verdict.reasons)


def test_creator_permissions_only_add() -> None:
    verdict = merge(
        [
            terms_for("MIT", commercial_use=["image", "rent", "sell"], different_license_allowed=False),
            terms_for("MIT", commercial_use=["image"]),
        ],
        terms_for(APL),
    )
    assert verdict.verdict == "allowed-with-obligations"
    assert any("intersection of its sources': image" in o for o in verdict.obligations)
    assert any("allowDifferentLicense=false" in o for o in verdict.obligations)


def test_merge_needs_parts() -> None:
    with pytest.raises(errors.LorahubError):
        merge([], terms_for(ORM))


# (c) commercial use of outputs (and, with subject="model", of the model itself).
USE = [
    ([], ORM, "commercial", "allowed-with-obligations", "§6"),
    ([], ORPP, "commercial", "allowed-with-obligations", "§6"),
    ([], SCL, "commercial", "allowed-with-obligations", "§IV(c)(iii)"),
    ([], FDNC, "commercial", "uncertain", "§2(d)"),
    (["MIT"], FDNC, "commercial", "uncertain", "§4(a)"),
    ([], F9NC, "commercial", "uncertain", "§2(d)"),
    (["MIT"], APL, "commercial", "allowed", "Apache-2.0 has no output clause"),
    ([], FAIPL, "commercial", "allowed-with-obligations", "The output of this software is not covered"),
    ([], "LicenseRef-NoobAI", "commercial", "forbidden", "Commercial Prohibition"),
    (["CC-BY-NC-4.0"], None, "commercial", "forbidden", "NonCommercial purposes only"),
    (["CC-BY-NC-4.0"], APL, "commercial", "forbidden", "NonCommercial purposes only"),
    (["CC-BY-NC-4.0"], APL, "non-commercial", "allowed", "NonCommercial purposes only"),
    (["MIT"], FDNC, "non-commercial", "allowed-with-obligations", "§2(a)"),
    (["MIT"], FDNC, "research", "allowed-with-obligations", "§2(a)"),
    (["unknown"], APL, "non-commercial", "uncertain", "no licence text is known"),
    ([], "unknown", "commercial", "uncertain", "no licence text is known"),
]


@pytest.mark.parametrize(("parts", "base", "kind", "expected", "clause"), USE)
def test_use_matrix_c(parts: list[str], base: str | None, kind: str, expected: str, clause: str) -> None:
    verdict = use([terms_for(p) for p in parts], None if base is None else terms_for(base), kind)  # type: ignore[arg-type]
    _check(verdict, expected, clause)


def test_mit_adapter_on_flux_dev_commercial_model_use_is_forbidden() -> None:
    verdict = use([terms_for("MIT")], terms_for(FDNC), "commercial", subject="model")
    _check(verdict, "forbidden", "solely for your Non-Commercial Purposes")


def test_scl_commercial_use_carries_the_revenue_cap() -> None:
    verdict = use([], terms_for(SCL), "commercial", subject="model")
    assert verdict.verdict == "allowed-with-obligations"
    assert any("USD 1,000,000" in o for o in verdict.obligations)


CREATOR = [
    (["none"], "outputs", "forbidden", "allowCommercialUse=None"),
    (["rent", "sell"], "outputs", "forbidden", "image not in allowCommercialUse"),
    (["image"], "model", "forbidden", "rent not in allowCommercialUse"),
    (["image"], "outputs", "allowed", "no output clause"),
]


@pytest.mark.parametrize(("uses", "subject", "expected", "clause"), CREATOR)
def test_creator_commercial_use(uses: list[str], subject: str, expected: str, clause: str) -> None:
    verdict = use([terms_for("MIT", commercial_use=uses)], terms_for(APL), "commercial", subject=subject)  # type: ignore[arg-type]
    _check(verdict, expected, clause)


@pytest.mark.parametrize("uses", [["images"], ["none", "image"]])
def test_bad_commercial_use_is_refused(uses: list[str]) -> None:
    with pytest.raises(errors.LorahubError):
        terms_for("MIT", commercial_use=uses)


def test_bad_use_is_refused() -> None:
    with pytest.raises(errors.LorahubError):
        use([], terms_for(APL), "sell")  # type: ignore[arg-type]


def test_unknown_never_allowed() -> None:
    for verdict in (
        effective(terms_for("unknown"), None),
        merge([terms_for("unknown")], None),
        use([terms_for("unknown")], None, "research"),
    ):
        assert verdict.verdict == "uncertain"
        assert verdict.reasons


def test_from_card_license() -> None:
    card = CardLicense(id="NOASSERTION", commercial_use=("image",), derivatives_allowed=False)
    terms = from_card_license(card)
    assert terms.is_unknown
    assert terms.commercial_use == frozenset({"image"})
    mit = from_card_license(CardLicense(id="MIT", derivatives_allowed=False))
    assert merge([mit, mit], None).verdict == "forbidden"
    with pytest.raises(errors.LorahubError):
        from_card_license(CardLicense(id="GPL-3.0-only"))
    assert from_card_license(CardLicense(id="GPL-3.0-only"), strict=False).is_unknown


def test_as_dict_round_trips_fields() -> None:
    data = effective(terms_for("MIT"), terms_for(ORM)).as_dict()
    assert set(data) == {"verdict", "reasons", "obligations", "effective_license"}
    assert set(data["reasons"][0]) == {"text", "clause", "license"}
