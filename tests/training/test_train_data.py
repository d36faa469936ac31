"""Training with buckets, varied captions, repeats, noise offset and Min-SNR on tiny pipelines, for real: the
images land in their buckets, the run trains and is recorded, a resumed run is exact, and ``--like`` gives the
settings back."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import lorahub
from lorahub import Hub, errors
from lorahub.files.safetensors import read_header
from lorahub.sdk.train_settings import like_settings
from lorahub.training.config import TrainConfig
from tests.training.conftest import TRAINER

pytest.importorskip("diffusers")

SHAPES = {"wide": (96, 48), "tall": (48, 96), "square": (64, 64)}
BUCKETED = {"resolution": 64, "buckets": True, "bucket_step": 16, "log_every": 1, "lr": 1e-3}


def write_shapes(directory: Path, per_shape: int = 2) -> Path:
    """Images of three aspect ratios (2:1, 1:2, 1:1), captioned with tags."""
    from PIL import Image, ImageDraw

    for shape, size in SHAPES.items():
        folder = directory / ("3_" + shape if shape == "wide" else shape)  # the wide ones repeat 3 times
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_shape):
            image = Image.new("RGB", size, (120, 120, 120))
            ImageDraw.Draw(image).ellipse((4, 4, size[0] - 5, size[1] - 5), fill=(40 * index, 200, 90))
            image.save(folder / f"{shape}-{index}.png")
            (folder / f"{shape}-{index}.txt").write_text(f"sks, {shape}, ellipse, green, grey background")
    return directory


@pytest.mark.parametrize("family", ["sd1", "flux1"])
def test_three_aspect_ratios_land_in_their_buckets_and_train(
    family: str, hub: Hub, tiny_bases: Mapping[str, Path], tmp_path: Path
) -> None:
    weighting: dict[str, Any] = {"min_snr_gamma": 5.0} if family == "sd1" else {}
    result = lorahub.train(
        tiny_bases[family], write_shapes(tmp_path / "data"), name="shapes", hub=hub, steps=3, batch=2,
        cache_latents=True, noise_offset=0.05, caption_dropout=0.2, **weighting, **BUCKETED,
    )  # fmt: skip
    training = result.training
    assert training["dataset"]["buckets"] == {"48x80": 2, "64x64": 2, "80x48": 2}
    assert training["dataset"]["repeats"] == {"3_wide": 3}
    losses = [float(point[1]) for point in training["loss_curve"]["points"]]
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)
    hyper = training["hyperparameters"]
    assert (hyper["buckets"], hyper["bucket_step"], hyper["noise_offset"]) == (True, 16, "0.05")
    header = read_header(hub.blobs.path_for(hub.version("shapes").blob_sha256)).metadata
    assert header["ss_enable_bucket"] == "True" and header["ss_noise_offset"] == "0.05"
    assert header["ss_min_bucket_reso"] == "32" and header["ss_max_bucket_reso"] == "128"
    assert '"3_wide": {"n_repeats": 3, "img_count": 2}' in header["ss_dataset_dirs"]
    # --like gives back every setting of the run, field by field
    like = like_settings(hub, "shapes").train_config()
    expected = TrainConfig(
        alpha=4.0, targets=tuple(hyper["targets"]), steps=3, batch=2, cache_latents=True, noise_offset=0.05,
        caption_dropout=0.2, **weighting, **BUCKETED,
    )  # fmt: skip
    assert like == expected


def test_resume_is_exact_with_buckets_random_crops_and_varied_captions(
    tiny_bases: Mapping[str, Path], tmp_path: Path
) -> None:
    """Every draw (crop offsets, caption shuffles and dropouts, noise offsets) comes from saved generators:
    two steps, then two more from the checkpoint, give the weights of four uninterrupted steps."""
    data = write_shapes(tmp_path / "data", per_shape=1)
    settings = BUCKETED | {"random_crop": True, "shuffle_captions": True, "keep_tokens": 1, "caption_dropout": 0.3,
                           "noise_offset": 0.1, "min_snr_gamma": 5.0, "batch": 1}  # fmt: skip
    digests = []
    for name, parts in (("straight", [4]), ("split", [2, 4])):
        hub = Hub.open(tmp_path / name)
        hub.create_identity(TRAINER)
        result = lorahub.train(tiny_bases["sd1"], data, name="run", hub=hub, steps=parts[0], **settings)
        for steps in parts[1:]:
            result = lorahub.train(tiny_bases["sd1"], data, hub=hub, resume=f"run@{result.final.version}", steps=steps)
        digests.append(result.final.content_digest)
    assert digests[0] == digests[1]


def test_min_snr_is_refused_for_flow_matching(hub: Hub, tiny_bases: Mapping[str, Path], tmp_path: Path) -> None:
    with pytest.raises(errors.TrainingError, match="min_snr_gamma is defined for ε- and v-prediction"):
        lorahub.train(tiny_bases["flux1"], write_shapes(tmp_path / "data", 1), hub=hub, min_snr_gamma=5.0)
