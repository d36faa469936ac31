"""Baking into a whole diffusers pipeline folder (lorahub.merge.pipeline): only the components asked for change, a
component bake cannot write is refused or left out, and every refusal leaves nothing behind."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import pytest

from lorahub import errors
from lorahub.adapters.canonical import CanonicalAdapter
from lorahub.adapters.model import read_adapter
from lorahub.merge.bake import bake
from lorahub.merge.pipeline import bake_pipeline
from tests.sdk.pipes import make_adapter

pytest.importorskip("diffusers")

UNET = "unet/diffusion_pytorch_model.safetensors"
TEXT_ENCODER = "text_encoder/model.safetensors"
Adapters = list[tuple[CanonicalAdapter, float]]


@pytest.fixture
def base(tiny_bases: Mapping[str, Path], tmp_path: Path) -> Path:
    """A copy of the tiny SD 1.5 pipeline that a test may change."""
    return Path(shutil.copytree(tiny_bases["sd1"], tmp_path / "base"))


@pytest.fixture
def adapter(tmp_path: Path) -> Adapters:
    return [(read_adapter(make_adapter("sd1", tmp_path / "a", seed=1, text_encoder=True), family="sd1"), 1.0)]


def _nothing_written(out: Path) -> None:
    assert not out.exists() and not list(out.parent.glob(f".{out.name}.*"))


def test_components_leave_the_others_as_they_are(base: Path, adapter: Adapters, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = bake_pipeline(base, adapter, out, components=["text_encoder"])
    assert [c["file"] for c in report.components] == [TEXT_ENCODER]
    assert (out / UNET).read_bytes() == (base / UNET).read_bytes()
    assert (out / TEXT_ENCODER).read_bytes() != (base / TEXT_ENCODER).read_bytes()
    assert report.skipped_layers and all(name.startswith("unet.") for name in report.skipped_layers)
    assert report.layers == len(adapter[0][0].layers) - len(report.skipped_layers)


def test_other_weight_formats_of_a_baked_component_are_left_out(base: Path, adapter: Adapters, tmp_path: Path) -> None:
    """An unbaked .bin beside the baked .safetensors would load the base's weights; it is not copied."""
    (base / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"pickled weights")
    (base / "vae" / "diffusion_pytorch_model.bin").write_bytes(b"untouched component")
    out = tmp_path / "out"
    report = bake_pipeline(base, adapter, out)
    assert report.skipped_files == ["unet/diffusion_pytorch_model.bin"]
    assert not (out / "unet" / "diffusion_pytorch_model.bin").exists()
    assert (out / "vae" / "diffusion_pytorch_model.bin").read_bytes() == b"untouched component"


def test_a_sharded_component_is_refused_before_anything_is_written(
    base: Path, adapter: Adapters, tmp_path: Path
) -> None:
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(base / "unet")
    shutil.rmtree(base / "unet")
    unet.save_pretrained(base / "unet", max_shard_size="1MB")
    assert (base / f"{UNET}.index.json").is_file()
    out = tmp_path / "out"
    with pytest.raises(errors.UnsupportedFileError, match="unet is sharded"):
        bake_pipeline(base, adapter, out)
    _nothing_written(out)


def test_layers_for_a_component_the_pipeline_lacks_are_refused(base: Path, adapter: Adapters, tmp_path: Path) -> None:
    shutil.rmtree(base / "text_encoder")
    out = tmp_path / "out"
    with pytest.raises(errors.UnmatchedLayersError, match="for text_encoder"):
        bake_pipeline(base, adapter, out)
    _nothing_written(out)


def test_a_folder_without_model_index_is_not_a_pipeline(base: Path, adapter: Adapters, tmp_path: Path) -> None:
    with pytest.raises(errors.NotAFileError, match="no model_index"):
        bake_pipeline(base / "unet", adapter, tmp_path / "out")


def test_a_checkpoint_file_is_not_baked_into_a_folder(base: Path, adapter: Adapters, tmp_path: Path) -> None:
    """--out takes folders now (for pipelines); a file base still needs a file."""
    (tmp_path / "out").mkdir()
    with pytest.raises(errors.MergeOptionError, match="is a folder"):
        bake(base / UNET, adapter, tmp_path / "out", components=["unet"])
    assert not any((tmp_path / "out").iterdir())
