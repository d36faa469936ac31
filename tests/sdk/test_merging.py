"""Hub.merge and lineage through a real home: licence gate first, exact maths, signed result with its parents."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from lorahub import Hub, errors
from lorahub.adapters.delta import delta_weight
from lorahub.adapters.model import read_adapter
from lorahub.sdk.adding import AddOptions


def _add(hub: Hub, example_lora: Callable[..., Path], name: str, seed: int, license_id: str, **extra: object) -> None:
    hub.add(example_lora(name, seed=seed, rank=2), AddOptions(name=name, license=license_id, **extra))  # type: ignore[arg-type]


def test_cat_merge_is_exact_signed_and_names_its_parents(hub: Hub, example_lora: Callable[..., Path]) -> None:
    _add(hub, example_lora, "ink", 0, "MIT", triggers=["inky"], commercial_use=["image", "rent"])
    _add(hub, example_lora, "pixel", 1, "MIT", triggers=["pixelated"], commercial_use=["image"])
    result = hub.merge(["ink:0.7", "pixel@1:0.5"], out="ink-pixel")
    assert (result.added.name, result.added.version) == ("ink-pixel", 1)
    merged = read_adapter(hub.blobs.path_for(hub.version("ink-pixel").blob_sha256))
    ink = read_adapter(hub.blobs.path_for(hub.version("ink").blob_sha256))
    pixel = read_adapter(hub.blobs.path_for(hub.version("pixel").blob_sha256))
    for name, layer in merged.layers.items():
        expected = 0.7 * delta_weight(ink.layers[name].tensors, alpha=ink.layers[name].alpha).weight
        expected += 0.5 * delta_weight(pixel.layers[name].tensors, alpha=pixel.layers[name].alpha).weight
        got = delta_weight(layer.tensors, alpha=layer.alpha).weight
        np.testing.assert_allclose(got, expected, atol=2e-3 * float(np.abs(expected).max()))  # fp16 storage
    card = hub.signed_card(hub.version("ink-pixel")).card
    assert card.creator is not None and hub.version("ink-pixel").signers
    assert [(p.relation, p.parameters["weight"]) for p in card.lineage] == [
        ("merged-from", "0.7"),
        ("merged-from", "0.5"),
    ]
    assert card.license.id == "MIT" and card.license.commercial_use == ("image",)
    assert card.trigger_words == ("inky", "pixelated")
    [event] = hub.audit(action="merge")
    assert [p["ref"] for p in event["details"]["parents"]] == ["ink@1", "pixel@1"]
    tree = hub.lineage("ink-pixel").as_dict()
    assert [(p["ref"], p["relation"]) for p in tree["parents"]] == [
        ("ink@1", "merged-from"),
        ("pixel@1", "merged-from"),
    ]
    assert tree["signers"][0]["trust"] == "own" and tree["signers"][0]["valid"]


def test_forbidden_licences_refuse_before_anything_is_written(hub: Hub, example_lora: Callable[..., Path]) -> None:
    _add(hub, example_lora, "free", 0, "faipl-1.0-sd")
    _add(hub, example_lora, "nc", 1, "CC-BY-NC-4.0")
    before = len(hub.list_versions())
    with pytest.raises(errors.LicenseForbiddenError):
        hub.merge(["free", "nc"], out="both")
    assert len(hub.list_versions()) == before and not hub.audit(action="merge")


def test_uncertain_needs_acceptance_which_is_audited(hub: Hub, example_lora: Callable[..., Path]) -> None:
    _add(hub, example_lora, "orm", 0, "creativeml-openrail-m")
    _add(hub, example_lora, "sa", 1, "CC-BY-SA-4.0")
    with pytest.raises(errors.LicenseUncertainError) as raised:
        hub.merge(["orm", "sa"], out="both")
    assert "--accept-uncertain" in str(raised.value.hint)
    result = hub.merge(["orm", "sa"], out="both", accept_uncertain=True, method="svd", rank=2)
    assert result.verdict["verdict"] == "uncertain" and result.report.max_rank == 2
    [override] = hub.audit(action="license-override")
    assert override["details"]["action"] == "merge" and override["details"]["refs"] == ["orm", "sa"]


def test_a_tampered_blob_is_never_merged(hub: Hub, example_lora: Callable[..., Path]) -> None:
    _add(hub, example_lora, "ink", 0, "MIT")
    _add(hub, example_lora, "pixel", 1, "MIT")
    blob = hub.blobs.path_for(hub.version("pixel").blob_sha256)
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[-3] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(errors.VerificationFailedError, match="blob integrity"):
        hub.merge(["ink", "pixel"], out="both")
    assert not hub.audit(action="merge")


def test_a_merge_names_every_parent_licence_and_the_engine_reads_them_all(
    hub: Hub, example_lora: Callable[..., Path]
) -> None:
    _add(hub, example_lora, "ink", 0, "MIT", commercial_use=["image"])
    _add(hub, example_lora, "pixel", 1, "CC-BY-NC-4.0", commercial_use=["image"])
    hub.merge(["ink", "pixel"], out="both")
    assert hub.signed_card(hub.version("both")).card.license.id == "MIT AND CC-BY-NC-4.0"
    verdict = hub.license_check(["both"], use="commercial")
    assert verdict.verdict == "forbidden" and "CC-BY-NC-4.0" in verdict.effective_license
