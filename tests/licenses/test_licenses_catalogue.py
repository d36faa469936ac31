"""The catalogue: packaged data loads, every name resolves, and broken entries are refused naming the entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from lorahub import errors
from lorahub.licenses import UNKNOWN, get_license, list_licenses, load_catalogue
from lorahub.licenses.catalogue import ENUM_TERMS, TERMS, VALUES

PACKAGED = Path(__file__).resolve().parents[2] / "lorahub" / "licenses" / "catalogue.toml"

REQUIRED_IDS = [
    "LicenseRef-CreativeML-OpenRAIL-M",
    "LicenseRef-CreativeML-OpenRAIL-PP-M",
    "LicenseRef-Stability-AI-Community",
    "LicenseRef-FLUX-1-dev-Non-Commercial",
    "LicenseRef-FLUX-2-klein-Non-Commercial",
    "Apache-2.0",
    "LicenseRef-FAIPL-1.0-SD",
    "LicenseRef-NoobAI",
    "LicenseRef-Playground-v2.5-Community",
    "MIT",
    "CC0-1.0",
    "CC-BY-4.0",
    "CC-BY-SA-4.0",
    "CC-BY-NC-4.0",
    UNKNOWN,
]

GOOD_TERM = 'value = "yes"\nclause = "§1"\ncertain = true\n'


def _entry(id_: str = "X-1", extra: str = "", skip: str = "", term_override: tuple[str, str] | None = None) -> str:
    lines = [f'[[license]]\nid = "{id_}"\nname = "X"\naliases = []\nfamilies = []\n{extra}']
    for term in TERMS:
        if term == skip:
            continue
        body = term_override[1] if term_override and term_override[0] == term else GOOD_TERM
        lines.append(f"[license.{term}]\n{body}")
    return "\n".join(lines)


def _unknown() -> str:
    return _entry(UNKNOWN)


def test_required_licences_present_and_ids_unique() -> None:
    ids = [lic.id for lic in list_licenses()]
    assert len(ids) == len(set(ids))
    for id_ in REQUIRED_IDS:
        assert id_ in ids


def test_every_alias_resolves_case_insensitively() -> None:
    for lic in list_licenses():
        for name in (lic.id, *lic.aliases):
            assert get_license(name) is lic
            assert get_license(name.upper()) is lic
            assert get_license(f" {name.lower()} ") is lic


@pytest.mark.parametrize(
    ("alias", "id_"),
    [
        ("creativeml-openrail-m", "LicenseRef-CreativeML-OpenRAIL-M"),
        ("openrail++", "LicenseRef-CreativeML-OpenRAIL-PP-M"),
        ("flux-1-dev-non-commercial-license", "LicenseRef-FLUX-1-dev-Non-Commercial"),
        ("Illustrious License", "LicenseRef-FAIPL-1.0-SD"),
        ("apache-2.0", "Apache-2.0"),
        ("NOASSERTION", UNKNOWN),
        ("playground-v2dot5-community", "LicenseRef-Playground-v2.5-Community"),
    ],
)
def test_known_aliases(alias: str, id_: str) -> None:
    assert get_license(alias).id == id_


def test_unknown_id_is_an_error_with_hint() -> None:
    with pytest.raises(errors.LorahubError) as info:
        get_license("WTFPL-9")
    assert "WTFPL-9" in info.value.message
    assert info.value.hint is not None
    assert "lorahub license list" in info.value.hint


def test_enum_values_and_uncertain_law() -> None:
    for lic in list_licenses():
        for name in ENUM_TERMS:
            assert lic.term(name).value in VALUES
    flux = get_license("LicenseRef-FLUX-1-dev-Non-Commercial")
    assert flux.commercial_use_outputs.value == "uncertain"
    assert not flux.commercial_use_outputs.certain
    assert all(get_license(UNKNOWN).term(t).value == "uncertain" for t in TERMS)


def test_packaged_file_loads_through_the_path_loader() -> None:
    assert [lic.id for lic in load_catalogue(PACKAGED)] == [lic.id for lic in list_licenses()]


BROKEN = [
    (_entry(extra='colour = "red"\n'), "unknown keys ['colour']"),
    (_entry(skip="revenue_cap"), "missing fields ['revenue_cap']"),
    (_entry(term_override=("share_alike", 'value = "maybe"\nclause = "§1"\ncertain = true\n')), "'maybe'"),
    (_entry(term_override=("notice", 'value = "yes"\nclause = "§1"\ncertain = "yes"\n')), "notice.certain"),
    (_entry(term_override=("notice", 'value = "yes"\ncertain = true\n')), "notice is missing ['clause']"),
    (_entry(term_override=("notice", GOOD_TERM + 'extra = "x"\n')), "notice has unknown keys"),
    (_entry(term_override=("restrictions_travel", 'value = "Att A!"\nclause = "§1"\ncertain = true\n')), "slug"),
    (_entry(extra='sha256 = "abc"\n'), "sha256"),
    (_entry(extra='url = "http://example.com"\n'), "https://"),
]


@pytest.mark.parametrize(("text", "problem"), BROKEN)
def test_broken_entry_is_refused_naming_it(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "catalogue.toml"
    path.write_text(text + "\n" + _unknown(), encoding="utf-8")
    with pytest.raises(errors.LorahubError) as info:
        load_catalogue(path)
    assert "'X-1'" in info.value.message
    assert problem in info.value.message


def test_valid_temporary_catalogue_loads(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.toml"
    path.write_text(_entry() + "\n" + _unknown(), encoding="utf-8")
    assert [lic.id for lic in load_catalogue(path)] == ["X-1", UNKNOWN]


def test_duplicate_alias_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.toml"
    path.write_text(_entry() + "\n" + _entry("x-1") + "\n" + _unknown(), encoding="utf-8")
    with pytest.raises(errors.LorahubError, match="already used"):
        load_catalogue(path)


def test_catalogue_without_unknown_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.toml"
    path.write_text(_entry(), encoding="utf-8")
    with pytest.raises(errors.LorahubError, match="no 'unknown' entry"):
        load_catalogue(path)
