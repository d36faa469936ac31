"""Aspect-ratio buckets, following kohya sd-scripts' rules, and the data order that draws batches within a bucket.

Buckets (``make_buckets``): every ``(width, height)`` with sides in ``[min_side, max_side]`` on a ``step`` grid
whose area is at most ``resolution²`` (each width paired with the tallest height that fits, and the mirror image),
plus the largest square. An image goes to the bucket of the nearest aspect ratio, is resized (up or down) so that
it covers the bucket, and is cropped to it (centre, or at random each step).

With ``no_upscale`` there is no fixed list: an image larger than ``resolution²`` is scaled down to that area with
its aspect ratio kept, and the bucket is its size rounded down to the step (the crop trims at most a step less one
pixel); a smaller image keeps its size, so nothing is enlarged. ``min_side``/``max_side`` do not apply then (as in
kohya).

The order (:class:`Sampler`): each epoch shuffles every bucket's images (each repeated as its folder says), cuts
them into batches and shuffles the batches. A bucket's last batch is filled up with the first images of the same
shuffled bucket, so every batch has ``batch`` images and the order stays a flat list of indices whose batches are
aligned (kohya runs a smaller last batch instead; a flat order is what the checkpoint stores and restores).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorahub import errors
from lorahub.training.config import TrainConfig

Size = tuple[int, int]
"""(width, height) in pixels, as PIL and kohya write them."""


def make_buckets(resolution: int, min_side: int, max_side: int, step: int) -> tuple[Size, ...]:
    """kohya's bucket list for a square ``resolution`` (see the module docstring), sorted."""
    area = resolution * resolution
    square = int(math.sqrt(area) // step) * step
    found = {(square, square)}
    for width in range(min_side, max_side + 1, step):
        height = min(max_side, (area // width) // step * step)
        if height >= min_side:
            found |= {(width, height), (height, width)}
    return tuple(sorted(found))


@dataclass(frozen=True)
class Bucketing:
    """The rules of one run: the bucket list (one square without buckets) and how images are placed in it."""

    buckets: tuple[Size, ...]
    resolution: int
    step: int
    no_upscale: bool = False

    @classmethod
    def of(cls, config: TrainConfig) -> Bucketing:
        if not config.buckets:
            return cls(((config.resolution, config.resolution),), config.resolution, 8)
        low, high = config.bucket_sides
        buckets = make_buckets(config.resolution, low, high, config.bucket_step)
        return cls(buckets, config.resolution, config.bucket_step, config.bucket_no_upscale)

    def place(self, size: Size) -> Placement:
        return place(size, self.buckets, resolution=self.resolution, step=self.step, no_upscale=self.no_upscale)


@dataclass(frozen=True)
class Placement:
    """Where one image goes: its bucket, and the size it is resized to before the crop (covering the bucket)."""

    bucket: Size
    resized: Size


def place(size: Size, buckets: Sequence[Size], *, resolution: int, step: int, no_upscale: bool) -> Placement:
    """The bucket and resize of an image of ``size`` (``buckets`` from :func:`make_buckets`; unused when
    ``no_upscale``)."""
    width, height = size
    ratio = width / height
    if no_upscale:
        return _place_no_upscale(size, resolution * resolution, step)
    bucket = size if size in buckets else min(buckets, key=lambda b: abs(b[0] / b[1] - ratio))
    scale = bucket[1] / height if ratio > bucket[0] / bucket[1] else bucket[0] / width
    resized = (max(bucket[0], int(width * scale + 0.5)), max(bucket[1], int(height * scale + 0.5)))
    return Placement(bucket, resized)


def _place_no_upscale(size: Size, area: int, step: int) -> Placement:
    width, height = size
    ratio = width / height
    if width * height > area:
        scaled_w = math.sqrt(area * ratio)
        scaled_h = area / scaled_w
        by_width = _round_down(scaled_w, step), _round_down(_round_down(scaled_w, step) / ratio, step)
        by_height = _round_down(_round_down(scaled_h, step) * ratio, step), _round_down(scaled_h, step)
        error_w = abs(by_width[0] / max(by_width[1], 1) - ratio)
        error_h = abs(by_height[0] / max(by_height[1], 1) - ratio)
        if error_w < error_h:
            resized = (by_width[0], int(by_width[0] / ratio + 0.5))
        else:
            resized = (int(by_height[1] * ratio + 0.5), by_height[1])
    else:
        resized = size
    bucket = (resized[0] - resized[0] % step, resized[1] - resized[1] % step)
    if min(bucket) < step:
        raise errors.TrainingError(
            f"an image of {width}×{height} is smaller than one bucket step ({step} px) on a side",
            hint="Remove it, or train without bucket_no_upscale (it is then enlarged to a bucket).",
        )
    return Placement(bucket, resized)


def _round_down(value: float, step: int) -> int:
    """kohya's ``round_to_steps``: to the nearest integer, then down to the step."""
    rounded = int(value + 0.5)
    return rounded - rounded % step


# --- pixels ------------------------------------------------------------------------------------------------------


def open_rgb(path: Path) -> Any:
    """The image as RGB with its EXIF orientation applied (a portrait photo stays a portrait)."""
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise errors.MissingExtraError("reading training images", "train") from None
    try:
        with Image.open(path) as image:
            image.load()
            return ImageOps.exif_transpose(image).convert("RGB")
    except OSError as exc:
        raise errors.TrainingError(f"cannot read training image {path}: {exc}") from None


def to_tensor(torch: Any, image: Any) -> Any:
    """A PIL RGB image as uint8 CHW (a quarter of fp32's memory; converted to [-1, 1] floats when encoded)."""
    width, height = image.size
    data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return data.view(height, width, 3).permute(2, 0, 1).contiguous()


def resized(image: Any, size: Size) -> Any:
    from PIL import Image

    return image if image.size == size else image.resize(size, Image.Resampling.BICUBIC)


def crop(torch: Any, pixels: Any, bucket: Size, generator: Any = None) -> Any:
    """A ``bucket``-sized window of CHW ``pixels``: centred, or at an offset drawn from ``generator`` (the data
    generator, so a resumed run crops as the uninterrupted one did)."""
    width, height = bucket
    spare_h, spare_w = pixels.shape[1] - height, pixels.shape[2] - width
    if generator is None:
        top, left = spare_h // 2, spare_w // 2
    else:
        top = int(torch.randint(0, spare_h + 1, (1,), generator=generator))
        left = int(torch.randint(0, spare_w + 1, (1,), generator=generator))
    return pixels[:, top : top + height, left : left + width]


def load(torch: Any, path: Path, rules: Bucketing, *, keep_whole: bool) -> tuple[Any, Placement]:
    """The image placed by ``rules`` and resized, as uint8 CHW: cropped to its bucket (centred), or whole when
    the crop is drawn each step (``keep_whole``)."""
    image = open_rgb(path)
    placement = rules.place(image.size)
    pixels = to_tensor(torch, resized(image, placement.resized))
    return (pixels if keep_whole else crop(torch, pixels, placement.bucket).contiguous()), placement


# --- the order ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sampler:
    """The data order of one set of examples: ``groups`` (a bucket each; one group without buckets) of example
    indices, each index listed as many times as its folder repeats it."""

    groups: tuple[tuple[int, ...], ...]
    batch: int
    size: int
    """How many examples (without repeats)."""

    @property
    def plain(self) -> bool:
        """One group, no repeats: the order is a permutation, drawn exactly as before buckets existed."""
        return len(self.groups) == 1 and len(self.groups[0]) == self.size

    def epoch(self, torch: Any, generator: Any) -> list[int]:
        if self.plain:
            return [int(i) for i in torch.randperm(self.size, generator=generator).tolist()]
        if len(self.groups) == 1:
            group = self.groups[0]
            return [group[i] for i in torch.randperm(len(group), generator=generator).tolist()]
        batches: list[list[int]] = []
        for group in self.groups:
            shuffled = [group[i] for i in torch.randperm(len(group), generator=generator).tolist()]
            filled = shuffled + [shuffled[i % len(shuffled)] for i in range(-len(shuffled) % self.batch)]
            batches += [filled[k : k + self.batch] for k in range(0, len(filled), self.batch)]
        return [i for b in torch.randperm(len(batches), generator=generator).tolist() for i in batches[b]]


def sampler(buckets: Sequence[Size], repeats: Sequence[int], batch: int, *, grouped: bool) -> Sampler:
    """The sampler of examples in ``buckets`` (one per example) repeated ``repeats`` times; ``grouped``: batches
    within a bucket."""
    keys = sorted(set(buckets)) if grouped else [None]
    groups = tuple(
        tuple(
            i
            for i, (b, r) in enumerate(zip(buckets, repeats, strict=True))
            if key is None or b == key
            for _ in range(r)
        )
        for key in keys
    )
    return Sampler(groups, batch, len(buckets))


def bucket_counts(buckets: Sequence[Size]) -> dict[str, int]:
    """``{"WxH": images}`` for the card (without repeats)."""
    counts: dict[str, int] = {}
    for width, height in sorted(buckets):
        counts[f"{width}x{height}"] = counts.get(f"{width}x{height}", 0) + 1
    return counts
