"""A hub in a temporary home, as in tests/sdk."""

from __future__ import annotations

from pathlib import Path

import pytest

from lorahub import Hub


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Hub:
    """A fresh SQLite home with one identity (the default signer)."""
    monkeypatch.delenv("LORAHUB_DATABASE_URL", raising=False)
    opened = Hub.open(tmp_path / "home")
    opened.create_identity("Alice <alice@example.com>")
    return opened
