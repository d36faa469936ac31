"""Images and homes for the provenance tests."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from lorahub import Hub

PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
SUFFIX = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}
PAYLOAD_MARKERS = {"png": b"IDAT", "jpeg": b"\xff\xda", "webp": b"VP8"}
"""Where each format's image data starts: a byte flipped past it changes pixels, not the manifest."""


MAKER = "Alice Maker <alice@studio.example>"
"""Who signs in the provenance tests' homes: the tests read the name back from the manifests."""


def make_home(root: Path, user_id: str = MAKER) -> Hub:
    hub = Hub.open(root)
    hub.create_identity(user_id)
    return hub


def noise_image(size: int = 64, seed: int = 0) -> Image.Image:
    """Random pixels: every format keeps a real amount of image data, so a flipped byte lands in it."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def encoded(image: Image.Image, kind: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, PIL_FORMATS[kind])
    return buffer.getvalue()


def flip_image_byte(data: bytes, kind: str) -> bytes:
    """One bit changed inside the image data (never turning a byte into a JPEG marker 0xFF)."""
    start = data.rindex(PAYLOAD_MARKERS[kind]) if kind == "jpeg" else data.index(PAYLOAD_MARKERS[kind])
    offset = start + 32
    while data[offset] in (0xFE, 0xFF):
        offset += 1
    damaged = bytearray(data)
    damaged[offset] ^= 0x01
    return bytes(damaged)
