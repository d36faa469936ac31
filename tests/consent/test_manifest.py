"""The manifest as a document: round trip, digest, summary, card status, malformed files; and `check`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lorahub import errors
from lorahub.consent import Item, Manifest, check, load, scan
from lorahub.consent.manifest import CARD_STATUS, SCHEMA
from lorahub.consent.sources import STATUSES
from lorahub.signing.card import CONSENT_STATUSES, Consent
from tests.consent.helpers import c2pa_sign, image_bytes, training_mining, write


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    write(root / "one.png", image_bytes("PNG", (1, 2, 3)))
    write(root / "one.txt", b"caption one")
    write(root / "two.jpg", image_bytes("JPEG"))
    write(root / "three.png", c2pa_sign(image_bytes("PNG"), "image/png", [training_mining()]))
    return root


def item(path: str, status: str, people: tuple[str, ...] = (), likeness_release: str | None = None) -> Item:
    return Item(
        path=path,
        sha256="0" * 64,
        size=1,
        declared_status=status,
        status=status,
        people=people,
        likeness_release=likeness_release,
    )


def test_round_trip_keeps_digest(folder: Path, tmp_path: Path) -> None:
    manifest = scan(folder)
    manifest.write(tmp_path / "m.json")
    loaded = load(tmp_path / "m.json")
    assert loaded == manifest
    assert loaded.digest == manifest.digest
    assert json.loads((tmp_path / "m.json").read_text())["schema"] == SCHEMA
    assert scan(folder).digest == manifest.digest  # scanning is deterministic


def test_digest_changes_with_one_image_or_caption(folder: Path) -> None:
    before = scan(folder).digest
    write(folder / "two.jpg", image_bytes("JPEG", (0, 0, 255)))
    after = scan(folder).digest
    assert after != before
    (folder / "one.txt").write_text("caption changed")
    assert scan(folder).digest != after


def test_digest_is_over_rfc8785(folder: Path) -> None:
    import hashlib

    import rfc8785

    manifest = scan(folder)
    assert manifest.digest == hashlib.sha256(rfc8785.dumps(manifest.to_dict())).hexdigest()


def test_summary_and_card_status(folder: Path) -> None:
    manifest = scan(folder)
    summary = manifest.summary()
    assert set(summary) == set(STATUSES)
    assert (summary["opted-out"], summary["unknown"]) == (1, 2)
    assert manifest.card_status() == "opted-out"
    consent = manifest.card_consent()
    assert isinstance(consent, Consent)
    assert consent.manifest_digest == manifest.digest
    assert Consent.from_dict(consent.to_dict()) == consent  # the card accepts what we produce


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([], "unknown"),
        (["licensed", "unknown"], "unknown"),
        (["licensed", "opted-out", "unknown"], "opted-out"),
        (["licensed", "licensed"], "licensed"),
        (["explicit-opt-in"], "consented"),
        (["opt-out-checked-clear"], "opt-out-checked"),
        (["public-domain", "licensed"], "mixed"),
    ],
)
def test_card_status_rules(statuses: list[str], expected: str) -> None:
    manifest = Manifest(items=tuple(item(f"{n}.png", s) for n, s in enumerate(statuses)))
    assert manifest.card_status() == expected


def test_card_mapping_covers_every_status() -> None:
    assert set(CARD_STATUS) == set(STATUSES)
    assert set(CARD_STATUS.values()) <= set(CONSENT_STATUSES)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("not json", "not JSON"),
        ("[]", "expected an object"),
        (
            '{"schema": "other/v1", "checks": {}, "sources_sha256": null, "unmatched_sources": [], "items": []}',
            "expected 'lorahub.dataset-manifest/v1'",
        ),
    ],
)
def test_malformed_manifest(tmp_path: Path, text: str, fragment: str) -> None:
    (tmp_path / "m.json").write_text(text)
    with pytest.raises(errors.InvalidFileError, match=fragment) as info:
        load(tmp_path / "m.json")
    assert info.value.hint


def test_malformed_item_names_the_field(folder: Path, tmp_path: Path) -> None:
    data = scan(folder).to_dict()
    data["items"][1]["status"] = "fine"
    (tmp_path / "m.json").write_text(json.dumps(data))
    with pytest.raises(errors.InvalidFileError, match=r"items\[1\]\.status"):
        load(tmp_path / "m.json")
    data["items"][1]["status"] = "unknown"
    data["items"][0]["signals"] = [{"kind": "c2pa"}]
    (tmp_path / "m.json").write_text(json.dumps(data))
    with pytest.raises(errors.InvalidFileError, match=r"items\[0\]\.signals"):
        load(tmp_path / "m.json")


def test_load_missing(tmp_path: Path) -> None:
    with pytest.raises(errors.PathNotFoundError):
        load(tmp_path / "absent.json")


# --- check -----------------------------------------------------------------------------------------------------


def test_check_flags_minor_without_release() -> None:
    manifest = Manifest(
        items=(
            item("a.png", "licensed", people=("minor",)),
            item("b.png", "licensed", people=("minor",), likeness_release="release-1"),
            item("c.png", "licensed", people=("none",)),
        )
    )
    report = check(manifest)
    assert not report.ok
    assert [(p.path, p.problem) for p in report.people] == [("a.png", "minor depicted without a likeness release")]
    assert report.as_dict()["people"][0]["path"] == "a.png"


@pytest.mark.parametrize("people", [("real-person",), ("person:0042",)])
def test_check_flags_real_people_without_release(people: tuple[str, ...]) -> None:
    report = check(Manifest(items=(item("a.png", "licensed", people=people),)))
    assert not report.ok
    fixed = check(Manifest(items=(item("a.png", "licensed", people=people, likeness_release="r.pdf"),)))
    assert fixed.ok


def test_check_clean_and_unknown_do_not_block() -> None:
    report = check(Manifest(items=(item("a.png", "licensed"), item("b.png", "unknown"))))
    assert report.ok
    assert report.unknown == ("b.png",)
    assert report.card_status == "unknown"
    assert report.counts["licensed"] == 1


def test_check_opted_out_names_the_assertion(folder: Path) -> None:
    report = check(scan(folder))
    assert not report.ok
    (entry,) = report.opted_out
    assert entry.path == "three.png"
    assert "cawg.training-mining/cawg.ai_generative_training=notAllowed" in entry.reasons[0]
    as_dict = report.as_dict()
    assert as_dict["ok"] is False and as_dict["manifest_digest"] == scan(folder).digest
    json.dumps(as_dict)


def test_declared_opt_out_is_reported() -> None:
    report = check(Manifest(items=(item("a.png", "opted-out"),)))
    assert report.opted_out[0].reasons == ("declared opted-out in the sources file",)
