"""Homes for the provenance tests: real hubs (SQLite), real keys, real c2pa-python; nothing mocked."""

from __future__ import annotations

from pathlib import Path

import pytest

from lorahub import Hub
from lorahub.dev.example_lora import write_example_lora
from tests.provenance.helpers import MAKER

pytest.importorskip("c2pa")


@pytest.fixture
def hub_identity() -> str:
    """The provenance tests' ``hub`` (tests/conftest.py) signs as the maker their manifests name."""
    return MAKER


@pytest.fixture
def catalogued(hub: Hub, tmp_path: Path) -> list[str]:
    """Two adapters in the hub's catalog: pixel-art@1 and watercolor@1."""
    from lorahub.sdk.adding import AddOptions

    names = []
    for seed, (name, license_id) in enumerate(
        (("pixel-art", "LicenseRef-CreativeML-OpenRAIL-M"), ("watercolor", "MIT"))
    ):
        path = tmp_path / f"{name}.safetensors"
        write_example_lora(path, rank=1, seed=seed, name=name)
        names.append(hub.add(path, AddOptions(name=name, license=license_id)).name)
    return names
