"""pytest configuration shared by every test: one compute thread, a hub in a temporary home, tiny pipelines.

Every test runs with one OpenMP thread (torch, and numpy's OpenBLAS) unless ``OMP_NUM_THREADS`` says otherwise, and
so does every ``lorahub`` process a test starts (they inherit the environment). The models and matrices here are
tiny, and the test machines have two cores shared with other jobs: two threads spinning against each other made a
tiny UNet training step 20× slower, and a two-step tiny pipeline image ten times slower, than one thread did. It is set
here, before any test module imports torch or numpy, because both read it once, when they load.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from lorahub import Hub
from lorahub.dev.tiny_pipeline import FAMILIES, write_tiny_pipeline
from tests.support import SeaweedFS, running_seaweedfs

os.environ.setdefault("OMP_NUM_THREADS", "1")


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


class TinyBases(Mapping[str, Path]):
    """The tiny pipeline folder of each family (``lorahub dev tiny-pipeline``, seed 0), written when first asked
    for. Nothing writes into a base (training, generating and baking only read it; a test that needs a changed
    base copies it first), so one folder serves the whole session."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._written: dict[str, Path] = {}

    def __getitem__(self, family: str) -> Path:
        if family not in self._written:
            if family not in FAMILIES:
                raise KeyError(family)
            self._written[family] = write_tiny_pipeline(self._root / family, family)  # type: ignore[arg-type]
        return self._written[family]

    def __iter__(self) -> Iterator[str]:
        return iter(FAMILIES)

    def __len__(self) -> int:
        return len(FAMILIES)


@pytest.fixture(scope="session")
def tiny_bases(tmp_path_factory: pytest.TempPathFactory) -> TinyBases:
    return TinyBases(tmp_path_factory.mktemp("bases"))


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """One SeaweedFS S3 server for the whole session (it takes seconds to start); tests keep apart by prefix."""
    with running_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture
def s3_blobs_url(seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch) -> str:
    """``s3://BUCKET/PREFIX`` of a prefix no other test uses, with the standard AWS variables pointing at the
    server (set for this test, and inherited by the ``lorahub`` processes it starts)."""
    for name, value in seaweedfs.env().items():
        monkeypatch.setenv(name, value)
    return f"s3://{seaweedfs.bucket}/{uuid.uuid4().hex[:12]}"
