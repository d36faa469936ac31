"""The training set: captions, JSONL lists, consent manifests, exclusion of opted-out images (no torch needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lorahub import errors
from lorahub.consent import scan
from lorahub.dev.example_dataset import write_example_dataset
from lorahub.training.data import read_dataset, with_trigger
from tests.training.conftest import write_squares


def test_opted_out_image_is_excluded_and_recorded(tmp_path: Path) -> None:
    sources = write_example_dataset(tmp_path / "data")
    dataset = read_dataset(tmp_path / "data", trigger="sks", sources=sources)
    assert [e.rel for e in dataset.examples] == ["img-0.png", "img-1.png", "img-2.png"]
    assert [e.path for e in dataset.excluded] == ["img-3.png"]
    assert "DataMining" in dataset.excluded[0].reasons[0]
    assert all(e.caption.startswith("sks, example style") for e in dataset.examples)
    # the pinned manifest lists what was trained on; the scanned one keeps the opted-out image on record
    assert [i.path for i in dataset.used.items] == ["img-0.png", "img-1.png", "img-2.png"]
    assert dataset.used.card_status() == "mixed" and dataset.scanned.card_status() == "opted-out"
    record = dataset.card_dict()
    assert record["excluded"][0]["sha256"] == dataset.excluded[0].sha256
    assert record["manifest_digest"] == dataset.used.digest != record["scanned_manifest_digest"]


def test_jsonl_lists_images_and_captions(tmp_path: Path) -> None:
    write_squares(tmp_path / "data", 3)
    listing = tmp_path / "data" / "train.jsonl"
    lines = [{"image": "sq-2.png", "caption": "third"}, {"file_name": "sq-0.png", "text": "first"}]
    listing.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    dataset = read_dataset(listing, trigger="sks")
    assert [(e.rel, e.caption) for e in dataset.examples] == [("sq-2.png", "sks, third"), ("sq-0.png", "sks, first")]
    assert dataset.kind == "jsonl" and [i.path for i in dataset.used.items] == ["sq-0.png", "sq-2.png"]


@pytest.mark.parametrize(
    ("line", "problem"),
    [("{not json", "not JSON"), ('{"caption": "x"}', "needs an image"), ('{"image": "../x.png"}', "inside")],
)
def test_bad_jsonl_lines_are_named(tmp_path: Path, line: str, problem: str) -> None:
    write_squares(tmp_path / "data", 1)
    listing = tmp_path / "data" / "train.jsonl"
    listing.write_text(line + "\n")
    with pytest.raises(errors.TrainingError, match=f"train.jsonl:1: .*{problem}"):
        read_dataset(listing)


def test_a_given_manifest_must_match_the_images(tmp_path: Path) -> None:
    data = write_squares(tmp_path / "data", 2)
    manifest = tmp_path / "manifest.json"
    scan(data, read_c2pa=False).write(manifest)
    assert len(read_dataset(data, manifest=manifest).examples) == 2
    write_squares(tmp_path / "data", 3)  # a new image since the scan
    with pytest.raises(errors.TrainingError, match="does not match the images"):
        read_dataset(data, manifest=manifest)


def test_nothing_left_to_train_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(errors.TrainingError, match="no trainable images"):
        read_dataset(tmp_path / "empty")


def test_trigger_is_put_first_once() -> None:
    assert with_trigger("a cat", "sks") == "sks, a cat"
    assert with_trigger("a sks cat", "sks") == "a sks cat"
    assert with_trigger("", "sks") == "sks"
    assert with_trigger(" a cat ", None) == "a cat"
