"""pytest configuration shared by every test: a hub in a temporary home."""

from __future__ import annotations

from pathlib import Path

import pytest

from lorahub import Hub


@pytest.fixture
def hub_identity() -> str:
    """Who signs in the ``hub`` fixture's home; a folder whose tests name the signer overrides it."""
    return "Alice <alice@example.com>"


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub_identity: str) -> Hub:
    """A fresh SQLite home with one identity (the default signer), whatever catalog the environment names."""
    monkeypatch.delenv("LORAHUB_DATABASE_URL", raising=False)
    opened = Hub.open(tmp_path / "home")
    opened.create_identity(hub_identity)
    return opened
