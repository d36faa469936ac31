"""A real OCI registry for the push/pull tests: Debian's docker-registry with the repository's own config."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import free_port, running_registry


@pytest.fixture(scope="session")
def registry_storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("registry") / "storage"


@pytest.fixture(scope="session")
def registry(registry_storage: Path) -> Iterator[str]:
    """``127.0.0.1:PORT`` of a registry that lives for the session; tests use their own repositories."""
    with running_registry(registry_storage, free_port()) as address:
        yield address
