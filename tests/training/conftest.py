"""Datasets and the trainer's identity for the training tests (their tiny pipelines: tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

TRAINER = "Trainer <trainer@example.com>"

SQUARE_COLOURS = (
    (220, 40, 40),
    (40, 160, 60),
    (40, 80, 220),
    (230, 200, 40),
    (200, 40, 200),
    (40, 200, 200),
    (250, 250, 250),
    (20, 20, 20),
)


@pytest.fixture
def hub_identity() -> str:
    """The training tests' ``hub`` (tests/conftest.py) signs as the trainer."""
    return TRAINER


def write_squares(directory: Path, count: int = 8, *, size: int = 64, caption: str = "sks square") -> Path:
    """Coloured squares on grey with captions: a dataset a tiny model can learn something from in 100 steps."""
    from PIL import Image, ImageDraw

    directory.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        colour = SQUARE_COLOURS[index % len(SQUARE_COLOURS)]
        image = Image.new("RGB", (size, size), (128, 128, 128))
        ImageDraw.Draw(image).rectangle((size // 4, size // 4, 3 * size // 4 - 1, 3 * size // 4 - 1), fill=colour)
        image.save(directory / f"sq-{index}.png")
        (directory / f"sq-{index}.txt").write_text(f"{caption}, colour {index}\n", encoding="utf-8")
    return directory
