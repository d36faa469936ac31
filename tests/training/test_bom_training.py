"""The CycloneDX ML-BOM of adapters lorahub trained itself (a tiny SD1 pipeline, for real): trained, resumed,
resized and merged, with the dataset, its consent and the training record."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

import lorahub
from lorahub import Hub
from lorahub.dev.example_dataset import write_example_dataset
from lorahub.sdk.bom import json_text
from tests.bom_checks import ancestors, assert_valid, by_ref, components, value

pytest.importorskip("torch")
pytest.importorskip("diffusers")

FAST = {"resolution": 64, "batch": 1, "log_every": 1}


@pytest.mark.slow
def test_the_bom_of_a_merged_trained_adapter_validates_and_names_every_parent(
    hub: Hub, tiny_bases: Mapping[str, Path], tmp_path: Path
) -> None:
    sources = write_example_dataset(tmp_path / "data")  # four images, the last opted out in its own XMP
    base = tiny_bases["sd1"]
    lorahub.train(base, tmp_path / "data", name="tiny", sources=sources, hub=hub, steps=1, license="MIT", **FAST)
    lorahub.train(base, tmp_path / "data", sources=sources, hub=hub, resume="tiny@1", steps=2, license="MIT")
    hub.resize("tiny@2", tmp_path / "tiny-r2.safetensors", rank=2)
    hub.merge(["tiny@1:0.5", "tiny@3:0.5"], out="blend")

    bom = assert_valid(json_text(hub.cyclonedx_bom("blend")))
    subject = bom["metadata"]["component"]
    # the relation is said on the parent: tiny@3 was resized from tiny@2, so tiny@2 carries "resized-from"
    trained, resized = ancestors(subject)
    [resumed] = ancestors(resized)
    [again] = ancestors(resumed)
    assert [(value(c, "ref"), value(c, "lineage:relation")) for c in (trained, resized, resumed, again)] == [
        ("tiny@1", "merged-from"),
        ("tiny@3", "merged-from"),
        ("tiny@2", "resized-from"),
        ("tiny@1", "resumed-from"),
    ]
    assert value(resumed, "lineage:rank") == "2" and value(again, "described-above") == trained["bom-ref"]

    # the dataset: the images trained on, the opted-out one excluded, its consent summary
    card = hub.signed_card(hub.version("tiny@1")).card
    dataset_facts = card.training["dataset"]  # type: ignore[index]
    dataset = by_ref(bom)[f"lorahub:dataset:{dataset_facts['manifest_digest']}"]
    assert (value(dataset, "dataset:images"), value(dataset, "dataset:excluded")) == ("3", "1")
    assert value(dataset, "consent:status") == dataset_facts["consent"]["status"] == "mixed"
    for model in (subject, trained):
        assert {"ref": dataset["bom-ref"]} in model["modelCard"]["modelParameters"]["datasets"]
    [risk] = trained["modelCard"]["considerations"]["ethicalConsiderations"]
    assert risk["name"].startswith("Training-data consent: mixed") and "1 image(s)" in risk["mitigationStrategy"]

    # the training record, and the base model it names, by the digest of its weights
    training = trained["modelCard"]["properties"]
    assert value({"properties": training}, "training:run-id") == card.training["run_id"]  # type: ignore[index]
    assert value({"properties": training}, "training:hyperparameter:rank") == "4"
    assert value({"properties": training}, "training:trainer") == "Trainer <trainer@example.com>"
    [base_model] = [c for c in bom["components"] if c["type"] == "machine-learning-model"]
    assert value(base_model, "base-model:weights-digest") == card.base_model.weights_digest
    assert value(base_model, "base-model:pipeline") == "StableDiffusionPipeline"
    assert {"ref": subject["bom-ref"], "dependsOn": [base_model["bom-ref"]]} in bom["dependencies"]
    assert sum(1 for c in components(bom) if c["type"] == "data") == 1
