"""`scan` on a real folder: hashes, captions, the sources file, and opt-outs embedded by C2PA and XMP."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from lorahub import errors
from lorahub.consent import Manifest, check, load, scan
from lorahub.consent.signals import OPT_OUT, data_mining_effect, xmp_signals
from tests.consent.helpers import (
    ALLOWED,
    PROHIBITED,
    c2pa_sign,
    image_bytes,
    png_with_xmp,
    training_mining,
    write,
    xmp_packet,
)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    write(root / "a_plain.png", image_bytes("PNG", (10, 20, 30)))
    write(root / "a_plain.txt", b"a red fox, pixel art\n")
    write(root / "b_signed.png", c2pa_sign(image_bytes("PNG", (40, 50, 60)), "image/png", [training_mining()]))
    write(root / "sub" / "c_signed.jpg", c2pa_sign(image_bytes("JPEG"), "image/jpeg", [training_mining()]))
    write(root / "sub" / "d_xmp.png", png_with_xmp(image_bytes("PNG", (1, 2, 3)), xmp_packet(PROHIBITED)))
    write(root / "e_licensed.webp", image_bytes("WEBP", (90, 90, 90)))
    write(root / "notes.md", b"not an image")
    write(root / ".hidden" / "x.png", image_bytes("PNG"))
    return root


def test_items_hashes_and_captions(dataset: Path) -> None:
    manifest = scan(dataset)
    paths = [item.path for item in manifest.items]
    assert paths == ["a_plain.png", "b_signed.png", "e_licensed.webp", "sub/c_signed.jpg", "sub/d_xmp.png"]
    plain = manifest.items[0]
    data = (dataset / "a_plain.png").read_bytes()
    assert plain.sha256 == hashlib.sha256(data).hexdigest()
    assert plain.size == len(data)
    assert plain.caption == "a red fox, pixel art"
    assert manifest.items[1].caption is None
    assert dict(manifest.checks)["c2pa"].startswith("c2pa-python ")


@pytest.mark.parametrize("name", ["b_signed.png", "sub/c_signed.jpg"])
def test_c2pa_training_mining_opt_out(dataset: Path, name: str) -> None:
    item = {i.path: i for i in scan(dataset).items}[name]
    assert item.status == "opted-out"
    assert item.declared_status == "unknown"
    opt_outs = item.opt_outs
    assert [s.where for s in opt_outs] == ["cawg.training-mining/cawg.ai_generative_training"]
    assert opt_outs[0].kind == "c2pa" and opt_outs[0].value == "notAllowed"
    assert "active manifest urn:" in opt_outs[0].detail
    allowed = [s for s in item.signals if s.effect == "allowed"]
    assert [s.where for s in allowed] == ["cawg.training-mining/cawg.ai_inference"]


def test_legacy_c2pa_label_and_constrained(tmp_path: Path) -> None:
    legacy = training_mining("c2pa.training-mining", use="constrained")
    write(tmp_path / "old.png", c2pa_sign(image_bytes("PNG"), "image/png", [legacy]))
    (item,) = scan(tmp_path).items
    assert item.status == "opted-out"
    assert [s.where for s in item.opt_outs] == ["c2pa.training-mining/c2pa.ai_generative_training"]


def test_c2pa_all_allowed_is_not_an_opt_out(tmp_path: Path) -> None:
    write(tmp_path / "ok.png", c2pa_sign(image_bytes("PNG"), "image/png", [training_mining(use="allowed")]))
    (item,) = scan(tmp_path).items
    assert item.status == "unknown"
    assert {s.effect for s in item.signals} == {"allowed"}


def test_xmp_data_mining_prohibited(dataset: Path) -> None:
    item = {i.path: i for i in scan(dataset).items}["sub/d_xmp.png"]
    assert item.status == "opted-out"
    assert [(s.kind, s.where, s.value) for s in item.opt_outs] == [("xmp", "plus:DataMining", PROHIBITED)]


def test_xmp_compressed_itxt_and_allowed(tmp_path: Path) -> None:
    write(tmp_path / "z.png", png_with_xmp(image_bytes("PNG"), xmp_packet(PROHIBITED), compressed=True))
    write(tmp_path / "y.png", png_with_xmp(image_bytes("PNG"), xmp_packet(ALLOWED)))
    items = {i.path: i for i in scan(tmp_path).items}
    assert items["z.png"].status == "opted-out"
    assert items["y.png"].status == "unknown"
    assert [s.effect for s in items["y.png"].signals] == ["allowed"]


@pytest.mark.parametrize(
    ("packet", "value"),
    [
        (
            b'<x:xmpmeta><rdf:Description plus:DataMining="http://ns.useplus.org/ldf/vocab/DMI-PROHIBITED"/>'
            b"</x:xmpmeta>",
            "http://ns.useplus.org/ldf/vocab/DMI-PROHIBITED",
        ),
        (
            b"<x:xmpmeta><plus:DataMining>http://ns.useplus.org/ldf/vocab/DMI-PROHIBITED-GENAIMLTRAINING"
            b"</plus:DataMining></x:xmpmeta>",
            "http://ns.useplus.org/ldf/vocab/DMI-PROHIBITED-GENAIMLTRAINING",
        ),
    ],
)
def test_xmp_attribute_and_element_forms(packet: bytes, value: str) -> None:
    signals = xmp_signals(b"\xff\xd8\xff\xe1junk" + packet + b"\xff\xd9")
    assert [(s.value, s.effect) for s in signals] == [(value, OPT_OUT)]


def test_xmp_unterminated_packet_is_ignored() -> None:
    assert xmp_signals(b"<x:xmpmeta plus:DataMining='DMI-PROHIBITED'" + b"\0" * 100) == []


@pytest.mark.parametrize(
    ("value", "effect"),
    [
        ("DMI-PROHIBITED-EXCEPTSEARCHENGINEINDEXING", "opt-out"),
        ("DMI-ALLOWED-noncommercial", "allowed"),
        ("http://ns.useplus.org/ldf/vocab/DMI-UNSPECIFIED", "unspecified"),
    ],
)
def test_data_mining_vocabulary(value: str, effect: str) -> None:
    assert data_mining_effect(value) == effect


def test_sources_csv_sets_status_and_signal_overrides(dataset: Path, tmp_path: Path) -> None:
    signed_sha = hashlib.sha256((dataset / "b_signed.png").read_bytes()).hexdigest()
    csv = tmp_path / "sources.csv"
    csv.write_text(
        "path,source,author,licence,consent,people,likeness_release\n"
        "a_plain.png,https://example.org/a,Ann,CC-BY-4.0,licensed,none,\n"
        "e_licensed.webp,https://example.org/e,Eve,CC0-1.0,public_domain,person:0042,release-7.pdf\n"
        "gone.png,https://example.org/g,Gus,CC0-1.0,licensed,,\n",
        encoding="utf-8",
    )
    csv2 = tmp_path / "by-sha.csv"
    csv2.write_text(f"sha256,consent\n{signed_sha},explicit-opt-in\n", encoding="utf-8")
    manifest = scan(dataset, csv)
    items = {i.path: i for i in manifest.items}
    assert items["a_plain.png"].status == "licensed"
    assert (items["a_plain.png"].author, items["a_plain.png"].license) == ("Ann", "CC-BY-4.0")
    assert items["e_licensed.webp"].status == "public-domain"
    assert items["e_licensed.webp"].people == ("person:0042",)
    assert items["sub/d_xmp.png"].status == "opted-out"
    assert manifest.unmatched_sources == ("path:gone.png",)
    assert manifest.sources_sha256 == hashlib.sha256(csv.read_bytes()).hexdigest()

    signed = {i.path: i for i in scan(dataset, csv2).items}["b_signed.png"]
    assert (signed.declared_status, signed.status) == ("explicit-opt-in", "opted-out")
    report = check(scan(dataset, csv2))
    (entry,) = [o for o in report.opted_out if o.path == "b_signed.png"]
    assert entry.reasons[0].startswith("c2pa cawg.training-mining/cawg.ai_generative_training=notAllowed")


def test_sources_json_keyed_by_file_name(tmp_path: Path) -> None:
    root = tmp_path / "d"
    write(root / "x" / "one.png", image_bytes("PNG"))
    sources = tmp_path / "s.json"
    sources.write_text(json.dumps([{"file": "one.png", "consent": "opt-out-checked-clear", "people": ["none"]}]))
    (item,) = scan(root, sources).items
    assert (item.status, item.people) == ("opt-out-checked-clear", ("none",))


@pytest.mark.parametrize(
    ("name", "text", "fragment"),
    [
        ("s.csv", "path,consent\na.png,maybe\n", "row 1.consent: 'maybe'"),
        ("s.csv", "path,colour\na.png,red\n", "unknown column 'colour'"),
        ("s.csv", "consent\nlicensed\n", "needs exactly one of path, file, sha256"),
        ("s.csv", "path,consent\na.png,licensed,extra\n", "different number of cells"),
        ("s.csv", "sha256,consent\nabc,licensed\n", "not 64 hex digits"),
        ("s.csv", "path,consent\na.png,licensed\na.png,unknown\n", "listed twice"),
        ("s.csv", "", "expected a header row"),
        ("s.json", "{not json", "not JSON"),
        ("s.json", '{"path": "a.png"}', "expected a JSON list of objects"),
        ("s.json", '[{"path": "a.png", "people": "Jane Doe"}]', "is not none, real-person, minor"),
    ],
)
def test_malformed_sources_is_a_clear_error(tmp_path: Path, name: str, text: str, fragment: str) -> None:
    write(tmp_path / "d" / "a.png", image_bytes("PNG"))
    (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(errors.InvalidFileError) as info:
        scan(tmp_path / "d", tmp_path / name)
    assert fragment in str(info.value)
    assert info.value.hint and "sources file" in info.value.hint.lower()


def test_ambiguous_file_name_key(tmp_path: Path) -> None:
    write(tmp_path / "d" / "a" / "same.png", image_bytes("PNG", (1, 1, 1)))
    write(tmp_path / "d" / "b" / "same.png", image_bytes("PNG", (2, 2, 2)))
    (tmp_path / "s.csv").write_text("file,consent\nsame.png,licensed\n")
    with pytest.raises(errors.InvalidFileError, match="names 2 images"):
        scan(tmp_path / "d", tmp_path / "s.csv")


def test_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(errors.PathNotFoundError):
        scan(tmp_path / "nope")
    with pytest.raises(errors.PathNotFoundError):
        scan(tmp_path, tmp_path / "nope.csv")


def test_read_c2pa_false_records_the_gap(dataset: Path) -> None:
    manifest = scan(dataset, read_c2pa=False)
    assert dict(manifest.checks)["c2pa"] == "skipped"
    assert {i.path: i for i in manifest.items}["b_signed.png"].status == "unknown"
    assert load_roundtrip_digest(manifest, dataset.parent / "m.json") == manifest.digest


def load_roundtrip_digest(manifest: Manifest, path: Path) -> str:
    manifest.write(path)
    return load(path).digest


@pytest.mark.parametrize(("fmt", "suffix"), [("WEBP", ".webp"), ("JPEG", ".jpg")])
def test_xmp_in_webp_and_jpeg(tmp_path: Path, fmt: str, suffix: str) -> None:
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, format=fmt, xmp=xmp_packet(PROHIBITED))
    write(tmp_path / f"x{suffix}", out.getvalue())
    (item,) = scan(tmp_path).items
    assert item.status == "opted-out"


def test_damaged_c2pa_manifest_is_a_note_not_a_crash(tmp_path: Path) -> None:
    data = bytearray(c2pa_sign(image_bytes("PNG"), "image/png", [training_mining()]))
    data[bytes(data).find(b"jumb") + 200] ^= 0xFF
    write(tmp_path / "bad.png", bytes(data))
    manifest = scan(tmp_path)
    (item,) = manifest.items
    assert item.status == "unknown"
    assert item.notes and item.notes[0].startswith("c2pa: manifest unreadable")
    assert check(manifest).notes[0].startswith("bad.png: c2pa: manifest unreadable")
