"""Example adapters to put in the SDK tests' hubs (the ``hub`` fixture is in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from lorahub.dev.example_lora import write_example_lora


@pytest.fixture
def example_lora(tmp_path: Path) -> Callable[..., Path]:
    """Write a small kohya SD1.5 adapter (rank 1 by default) named ``name``; seeds give different tensors."""

    def write(name: str = "example", *, seed: int = 0, rank: int = 1) -> Path:
        path = tmp_path / "files" / f"{name}-{seed}.safetensors"
        path.parent.mkdir(exist_ok=True)
        write_example_lora(path, rank=rank, seed=seed, name=name)
        return path

    return write
