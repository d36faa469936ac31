"""Hub.cyclonedx_bom through a real home: a lineage with every relation, validated against the CycloneDX 1.6 schema
(cyclonedx-python-lib's strict validator), read back for parents, licences, datasets, signers and determinism."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from lorahub import Hub
from lorahub.consent.manifest import Item, Manifest
from lorahub.licenses import list_licenses
from lorahub.sdk.adding import AddOptions
from lorahub.sdk.bom import json_text, serial_number
from lorahub.signing.card import Card, Parent
from tests.bom_checks import ancestors, assert_valid, by_ref, components, value, values

UNCATALOGUED = "ab" * 32
"""A parent's content digest that no home of these tests has catalogued."""


def _manifest(path: Path) -> Manifest:
    """A consent manifest of four images: two licensed, one explicitly consented, one of unknown consent."""
    statuses = ("licensed", "licensed", "explicit-opt-in", "unknown")
    items = tuple(
        Item(path=f"img-{n}.png", sha256=f"{n:064x}", size=100 + n, status=s, declared_status=s)
        for n, s in enumerate(statuses)
    )
    manifest = Manifest(items=items)
    manifest.write(path)
    return manifest


def _lineage(hub: Hub, example_lora: Callable[..., Path], tmp_path: Path) -> Manifest:
    """blend@1 merged from ink@1 (MIT) and style@3, which was resized from style@2, converted from style@1, which
    was trained from ink@1 and from an adapter this home never saw, on a dataset with a consent manifest. The
    conversion and the merge are lorahub's own; "trained from" and "resized from" are what another tool's card could
    say (a real resize of a full-size adapter takes seconds: tests/training/test_bom_training.py resizes a tiny one)."""
    hub.add(example_lora("ink", seed=0, rank=2), AddOptions(name="ink", license="MIT", commercial_use=["image"]))
    manifest = _manifest(tmp_path / "manifest.json")
    parents = (
        Parent(hub.version("ink").content_digest, "trained-from", {"steps": 100}),
        Parent(UNCATALOGUED, "trained-from", {}),
    )
    options = AddOptions(
        name="style", license="creativeml-openrail-m", consent=tmp_path / "manifest.json", lineage=parents
    )
    hub.add(example_lora("style", seed=1, rank=2), options)
    hub.convert("style@1", tmp_path / "style-diffusers.safetensors", to="diffusers")
    resized = (Parent(hub.version("style@2").content_digest, "resized-from", {"rank": 1}),)
    hub.add(
        example_lora("style", seed=2, rank=1), AddOptions(name="style", inherit=_card(hub, "style@2"), lineage=resized)
    )
    hub.merge(["ink:0.7", "style@3:0.5"], out="blend")
    return manifest


def _card(hub: Hub, ref: str) -> Card:
    return hub.signed_card(hub.version(ref)).card


def _tree(component: dict[str, Any]) -> list[Any]:
    """A component's ancestors as ``[name, relation, [their ancestors…]]``, by ref (or digest, uncatalogued)."""
    return [
        [value(a, "ref") or value(a, "content-digest"), value(a, "lineage:relation"), _tree(a)]
        for a in ancestors(component)
    ]


@pytest.fixture
def blend(hub: Hub, example_lora: Callable[..., Path], tmp_path: Path) -> Manifest:
    return _lineage(hub, example_lora, tmp_path)


def test_a_merged_trained_lineage_validates_and_names_every_parent(hub: Hub, blend: Manifest) -> None:
    bom = assert_valid(json_text(hub.cyclonedx_bom("blend")))
    assert (bom["bomFormat"], bom["specVersion"], bom["version"]) == ("CycloneDX", "1.6", 1)
    subject = bom["metadata"]["component"]
    assert (subject["type"], subject["name"], subject["version"]) == ("machine-learning-model", "blend", "1")
    assert _tree(subject) == [
        ["ink@1", "merged-from", []],
        ["style@3", "merged-from", [
            ["style@2", "resized-from", [
                ["style@1", "converted-from", [
                    ["ink@1", "trained-from", []],
                    [UNCATALOGUED, "trained-from", []],
                ]],
            ]],
        ]],
    ]  # fmt: skip
    ink, style = ancestors(subject)
    assert (value(ink, "lineage:weight"), value(style, "lineage:weight")) == ("0.7", "0.5")
    assert value(ink, "lineage:method") == "cat"
    assert subject["pedigree"]["notes"].splitlines() == [
        "merged-from ink@1 (method=cat, weight=0.7)",
        "merged-from style@3 (method=cat, weight=0.5)",
    ]
    # every parent the lineage names is a component, catalogued ones by their content digest and file hashes
    lineage_digests = set(re.findall(r'"content_digest": "([0-9a-f]{64})"', json.dumps(hub.lineage("blend").as_dict())))
    assert {value(c, "content-digest") for c in components(bom)} - {None} == lineage_digests
    [uncatalogued] = [c for c in components(bom) if value(c, "content-digest") == UNCATALOGUED]
    assert value(uncatalogued, "catalogued") == "false" and "hashes" not in uncatalogued
    # ink@1 is met twice: once in full, once by reference to the first
    first, again = [c for c in components(bom) if value(c, "ref") == "ink@1"]
    assert "bom-ref" in first and "bom-ref" not in again
    assert value(again, "described-above") == first["bom-ref"]
    version = hub.version("blend")
    card = hub.signed_card(version).card
    assert subject["hashes"] == [
        {"alg": "SHA-256", "content": version.blob_sha256},
        {"alg": "BLAKE3", "content": card.hashes["blake3"]},
    ]
    assert subject["bom-ref"] == f"lorahub:adapter:{version.content_digest}"
    assert value(subject, "content-digest") == version.content_digest
    assert subject["authors"] == [{"name": "Alice", "email": "alice@example.com"}]
    # the adapter needs its base model; the base is a component of its own
    [base] = [c for c in bom["components"] if c["type"] == "machine-learning-model"]
    assert {"ref": subject["bom-ref"], "dependsOn": [base["bom-ref"]]} in bom["dependencies"]
    assert value(base, "base-model:family") == "sd1" and value(subject, "base-model") == base["bom-ref"]
    model = subject["modelCard"]["modelParameters"]
    assert (model["task"], model["architectureFamily"]) == ("text-to-image", "sd1")


def test_licences_are_spdx_ids_or_expressions_with_license_refs(hub: Hub, blend: Manifest) -> None:
    bom = assert_valid(json_text(hub.cyclonedx_bom("blend")))
    subject = bom["metadata"]["component"]
    ink, style = ancestors(subject)
    assert ink["licenses"] == [
        {"license": {"id": "MIT", "url": "https://opensource.org/license/mit", "acknowledgement": "declared"}}
    ]
    # the card says "creativeml-openrail-m" (an alias); the BOM names the licence by its LicenseRef
    assert style["licenses"] == [{"expression": "LicenseRef-CreativeML-OpenRAIL-M", "acknowledgement": "declared"}]
    assert value(style, "license") == "creativeml-openrail-m"
    assert subject["licenses"] == [
        {"expression": "MIT AND LicenseRef-CreativeML-OpenRAIL-M", "acknowledgement": "declared"}
    ]
    assert [(r["type"], r["comment"].split(":")[0]) for r in subject["externalReferences"]] == [
        ("license", "MIT"),
        ("license", "LicenseRef-CreativeML-OpenRAIL-M"),
    ]
    assert value(ink, "license:commercial-use") == "image"


@pytest.mark.parametrize(
    ("license_id", "expected"),
    [
        ("Apache-2.0", [{"license": {"id": "Apache-2.0"}}]),
        ("faipl-1.0-sd", [{"expression": "LicenseRef-FAIPL-1.0-SD"}]),
        ("LicenseRef-Studio-Terms", [{"expression": "LicenseRef-Studio-Terms"}]),
        ("Studio terms v2", [{"license": {"name": "Studio terms v2"}}]),
        ("CC-BY-4.0 AND Studio terms v2", [{"license": {"id": "CC-BY-4.0"}}, {"license": {"name": "Studio terms v2"}}]),
        ("unknown", None),
        ("NOASSERTION", None),
    ],
)
def test_each_kind_of_card_licence_becomes_what_the_schema_allows(
    hub: Hub, example_lora: Callable[..., Path], license_id: str, expected: list[dict[str, Any]] | None
) -> None:
    hub.add(example_lora("terms"), AddOptions(name="terms", license=license_id))
    subject = assert_valid(json_text(hub.cyclonedx_bom("terms")))["metadata"]["component"]
    assert value(subject, "license") == license_id  # the signed text, whatever the BOM could make of it
    if expected is None:
        assert "licenses" not in subject  # nothing stated, rather than a licence called "unknown"
        return
    assert [_essentials(choice) for choice in subject["licenses"]] == expected
    assert all((choice.get("license") or choice)["acknowledgement"] == "declared" for choice in subject["licenses"])


def _essentials(choice: dict[str, Any]) -> dict[str, Any]:
    """A licence choice without its URL and acknowledgement."""
    if "license" in choice:
        return {"license": {k: v for k, v in choice["license"].items() if k in ("id", "name")}}
    return {"expression": choice["expression"]}


def test_the_catalogue_marks_as_spdx_exactly_the_ids_on_the_spdx_list() -> None:
    """A ``license.id`` outside the SPDX list fails validation; the catalogue's ``spdx`` flag decides which ids go
    there, so it must agree with the list the schema carries."""
    schema = pytest.importorskip("cyclonedx.schema")
    listed = resources.files(schema).joinpath("_res/spdx.SNAPSHOT.schema.json").read_text(encoding="utf-8")
    spdx_ids = set(json.loads(listed)["enum"])
    for entry in list_licenses():
        assert entry.spdx == (entry.id in spdx_ids), entry.id
        assert entry.spdx or entry.id == "unknown" or re.fullmatch(r"LicenseRef-[A-Za-z0-9.-]+", entry.id), entry.id


def test_the_dataset_is_a_data_component_with_its_consent(hub: Hub, blend: Manifest) -> None:
    bom = assert_valid(json_text(hub.cyclonedx_bom("blend")))
    ref = f"lorahub:dataset:{blend.digest}"
    dataset = by_ref(bom)[ref]
    assert dataset["type"] == "data" and dataset["data"][0]["type"] == "dataset"
    assert value(dataset, "dataset:manifest-digest") == blend.digest
    assert value(dataset, "consent:status") == "unknown" == blend.card_status()
    counts = {p["name"].rsplit(":", 1)[1]: int(p["value"]) for p in dataset["properties"] if ":count:" in p["name"]}
    assert counts == {"licensed": 2, "explicit-opt-in": 1, "unknown": 1}
    assert "1 explicit-opt-in, 2 licensed, 1 unknown" in dataset["data"][0]["description"]
    # every model whose weights came from those images names the dataset: style@1 and all that follow from it
    for component in components(bom):
        if value(component, "ref") in ("style@1", "style@2", "style@3", "blend@1") and "modelCard" in component:
            assert {"ref": ref} in component["modelCard"]["modelParameters"]["datasets"]
    [ink] = [c for c in components(bom) if value(c, "ref") == "ink@1" and "modelCard" in c]
    assert "datasets" not in ink["modelCard"]["modelParameters"]
    [style] = [c for c in components(bom) if value(c, "ref") == "style@1" and "modelCard" in c]
    [risk] = style["modelCard"]["considerations"]["ethicalConsiderations"]
    assert risk["name"] == "Training-data consent: unknown (1 explicit-opt-in, 2 licensed, 1 unknown)"


def test_the_same_records_give_the_same_bytes_and_other_facts_another_serial(hub: Hub, blend: Manifest) -> None:
    text = json_text(hub.cyclonedx_bom("blend"))
    assert json_text(hub.cyclonedx_bom("blend@1")) == text
    bom = json.loads(text)
    assert re.fullmatch(
        r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", bom["serialNumber"]
    )
    assert serial_number(bom) == bom["serialNumber"]
    assert bom["metadata"]["timestamp"] == hub.signed_card(hub.version("blend")).card.created
    # a second signature is a new fact: another BOM, another serial; each signer with its trust here
    bob = hub.create_identity("Bob <bob@example.com>")
    hub.sign("blend", key=bob.fingerprint)
    signed = assert_valid(json_text(hub.cyclonedx_bom("blend")))
    assert signed["serialNumber"] != bom["serialNumber"]
    subject = signed["metadata"]["component"]
    alice = hub.signer().keyid
    assert values(subject, "signature:1:keyid") == [alice] and values(subject, "signature:2:keyid") == [bob.fingerprint]
    assert value(subject, "signature:2:signer") == "Bob <bob@example.com>"
    assert (value(subject, "signature:2:valid"), value(subject, "signature:2:trust")) == ("true", "own")
    hub.trust_revoke(bob.fingerprint)
    revoked = assert_valid(json_text(hub.cyclonedx_bom("blend")))
    assert value(revoked["metadata"]["component"], "signature:2:trust") == "revoked"
    assert len({bom["serialNumber"], signed["serialNumber"], revoked["serialNumber"]}) == 3
    assert "signature" not in subject  # no JSF signature claimed: lorahub signs cards with DSSE, not BOMs
