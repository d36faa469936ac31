"""Hubs in temporary homes, driven through the SDK, and example adapters to put in them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from lorahub import Hub
from lorahub.dev.example_lora import write_example_lora


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Hub:
    """A fresh SQLite home with one identity (the default signer)."""
    monkeypatch.delenv("LORAHUB_DATABASE_URL", raising=False)
    opened = Hub.open(tmp_path / "home")
    opened.create_identity("Alice <alice@example.com>")
    return opened


@pytest.fixture
def example_lora(tmp_path: Path) -> Callable[..., Path]:
    """Write a small kohya SD1.5 adapter (rank 1 by default) named ``name``; seeds give different tensors."""

    def write(name: str = "example", *, seed: int = 0, rank: int = 1) -> Path:
        path = tmp_path / "files" / f"{name}-{seed}.safetensors"
        path.parent.mkdir(exist_ok=True)
        write_example_lora(path, rank=rank, seed=seed, name=name)
        return path

    return write
