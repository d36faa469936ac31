"""Aspect-ratio buckets by kohya's rules, the bucketed data order, caption variation, repeats, and the loss
weighting formulas (torch only where a generator or a scheduler is needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lorahub import errors
from lorahub.training.buckets import Bucketing, make_buckets, place, sampler
from lorahub.training.captions import CaptionVariation
from lorahub.training.config import TrainConfig
from lorahub.training.data import folder_repeats, read_dataset
from tests.training.conftest import write_squares

SMALL = [(32, 96), (32, 112), (32, 128), (48, 80), (64, 64), (80, 48), (96, 32), (112, 32), (128, 32)]
"""Worked by hand from kohya's rule at 64 px, step 16, sides 32–128: each width with the tallest height whose
area fits in 64², floored to the step (and at least 32), mirrored, plus the square."""


def test_bucket_list_follows_kohyas_rule() -> None:
    assert list(make_buckets(64, 32, 128, 16)) == SMALL
    at_512 = make_buckets(512, 256, 1024, 64)  # kohya's defaults
    assert (512, 512) in at_512 and (256, 1024) in at_512 and (1024, 256) in at_512 and (576, 448) in at_512
    assert all(w * h <= 512 * 512 and w % 64 == 0 and h % 64 == 0 for w, h in at_512)
    assert all(256 <= side <= 1024 for bucket in at_512 for side in bucket)


@pytest.mark.parametrize(
    ("size", "bucket", "resized"),
    [((200, 100), (80, 48), (96, 48)), ((100, 200), (48, 80), (48, 96)), ((120, 120), (64, 64), (64, 64)),
     ((30, 30), (64, 64), (64, 64)), ((48, 80), (48, 80), (48, 80))],
)  # fmt: skip
def test_images_go_to_the_nearest_aspect_ratio_and_cover_it(
    size: tuple[int, int], bucket: object, resized: object
) -> None:
    placement = place(size, SMALL, resolution=64, step=16, no_upscale=False)
    assert (placement.bucket, placement.resized) == (bucket, resized)


def test_no_upscale_keeps_small_images_and_shrinks_large_ones_to_the_area() -> None:
    small = place((40, 30), SMALL, resolution=64, step=16, no_upscale=True)
    assert (small.bucket, small.resized) == ((32, 16), (40, 30))  # cropped, never enlarged
    large = place((200, 100), SMALL, resolution=64, step=16, no_upscale=True)
    assert (large.bucket, large.resized) == ((64, 32), (64, 32))  # the area of 64², aspect ratio kept
    with pytest.raises(errors.TrainingError, match="smaller than one bucket step"):
        place((40, 10), SMALL, resolution=64, step=16, no_upscale=True)


def test_default_sides_scale_with_the_resolution() -> None:
    assert TrainConfig(resolution=512).bucket_sides == (256, 1024)
    assert TrainConfig(resolution=1024).bucket_sides == (512, 2048)
    rules = Bucketing.of(TrainConfig(resolution=64, buckets=True, bucket_step=16))
    assert list(rules.buckets) == SMALL
    assert Bucketing.of(TrainConfig(resolution=64)).buckets == ((64, 64),)
    with pytest.raises(errors.TrainingError, match="bucket_step"):
        TrainConfig(buckets=True, bucket_step=12).check()
    with pytest.raises(errors.TrainingError, match="random_crop"):
        TrainConfig(random_crop=True, cache_latents=True).check()


def test_batches_come_from_one_bucket_and_repeats_count() -> None:
    torch = pytest.importorskip("torch")
    buckets = [(64, 64), (80, 48), (64, 64), (48, 80), (80, 48), (64, 64)]
    repeats = [1, 1, 1, 1, 2, 1]
    order = sampler(buckets, repeats, 2, grouped=True).epoch(torch, torch.Generator().manual_seed(0))
    batches = [order[k : k + 2] for k in range(0, len(order), 2)]
    assert all(len({buckets[i] for i in batch}) == 1 for batch in batches)
    assert sorted(set(order)) == [0, 1, 2, 3, 4, 5] and order.count(4) >= 2  # repeated twice per epoch
    assert len(order) == 10  # 64²: 3 → 4, 80×48: 3 → 4, 48×80: 1 → 2 (last batches filled up)
    plain = sampler([(64, 64)] * 4, [1] * 4, 2, grouped=False)
    assert (
        plain.epoch(torch, torch.Generator().manual_seed(3))
        == torch.randperm(4, generator=torch.Generator().manual_seed(3)).tolist()
    )


def test_caption_variation_is_seeded_and_keeps_the_first_tags() -> None:
    torch = pytest.importorskip("torch")
    variation = CaptionVariation(shuffle=True, keep_tokens=1, dropout=0.25)
    caption = "sks, red, square, grey background, centred"

    def draw(seed: int) -> list[str | None]:
        generator = torch.Generator().manual_seed(seed)
        return [variation.vary(caption, torch, generator) for _ in range(200)]

    first = draw(0)
    assert first == draw(0) and first != draw(1)
    kept = [c for c in first if c]
    assert all(c.startswith("sks, ") and sorted(c.split(", ")) == sorted(caption.split(", ")) for c in kept)
    assert len(set(kept)) > 5
    assert 25 < first.count("") < 75  # dropout 0.25 of 200
    assert CaptionVariation(dropout=0.5).vary(caption, torch, torch.Generator()) in ("", None)


def test_repeat_folders_and_caption_files(tmp_path: Path) -> None:
    write_squares(tmp_path / "data" / "10_my char", 2)
    write_squares(tmp_path / "data" / "plain", 1)
    (tmp_path / "data" / "10_my char" / "sq-1.txt").unlink()
    (tmp_path / "data" / "plain" / "sq-0.txt").rename(tmp_path / "data" / "plain" / "sq-0.caption")
    dataset = read_dataset(tmp_path / "data", trigger="sks")
    got = {e.rel: (e.repeats, e.caption) for e in dataset.examples}
    assert got == {
        "10_my char/sq-0.png": (10, "sks square, colour 0"),  # the trigger is in it
        "10_my char/sq-1.png": (10, "sks, my char"),  # kohya: the folder's class tokens when uncaptioned
        "plain/sq-0.png": (1, "sks square, colour 0"),  # from the .caption file
    }
    assert dataset.card_dict()["repeats"] == {"10_my char": 10}
    assert folder_repeats("3_x/a.png") == (3, "x") and folder_repeats("a.png") == (1, None)
    with pytest.raises(errors.TrainingError, match="repeats its images 0 times"):
        folder_repeats("0_x/a.png")


def test_min_snr_weights_follow_diffusers_compute_snr() -> None:
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    from diffusers.training_utils import compute_snr

    from lorahub.training.weighting import min_snr_weights, offset_shape

    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000)
    timesteps = torch.tensor([0, 10, 250, 500, 999])
    snr = compute_snr(scheduler, timesteps)
    epsilon = min_snr_weights(torch, scheduler, timesteps, 5.0, "epsilon")
    velocity = min_snr_weights(torch, scheduler, timesteps, 5.0, "v_prediction")
    assert torch.allclose(epsilon, torch.clamp(snr, max=5.0) / snr)  # diffusers' train_text_to_image.py
    assert torch.allclose(velocity, torch.clamp(snr, max=5.0) / (snr + 1))
    assert epsilon[0] < 1e-2 and epsilon[-1] == 1.0  # low noise is down-weighted, high noise kept
    assert offset_shape(torch.zeros(2, 4, 8, 8)) == (2, 4, 1, 1)  # one shift per image and channel


def test_new_settings_round_trip_through_the_card() -> None:
    config = TrainConfig(
        alpha=4.0, buckets=True, bucket_step=32, min_bucket=256, max_bucket=768, bucket_no_upscale=True,
        random_crop=True, shuffle_captions=True, keep_tokens=2, caption_dropout=0.1, noise_offset=0.05,
        min_snr_gamma=5.0,
    )  # fmt: skip
    card = json.loads(json.dumps(config.card_dict()))
    assert card["noise_offset"] == "0.05" and card["min_snr_gamma"] == "5.0" and card["text_encoder_lr"] is None
    assert TrainConfig.from_card_dict(card) == config
