"""Helpers for every test: the real files in ``tests/fixtures`` (see its README) and small file builders."""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from lorahub.files.dtypes import DTYPE_BITS

FIXTURES = Path(__file__).resolve().parent / "fixtures"
REAL = FIXTURES / "real"
KEYLISTS = FIXTURES / "keylists"

REAL_FILES: dict[str, dict[str, Any]] = {
    "catundchat_sd15_lora__pytorch_lora_weights.safetensors": {
        "size": 3_227_336,
        "tensors": 256,
        "sha256": "fb286c8e569d6a07401bd5599d3d1a64126c0b240d2d1d00174602a967e59c9b",
        "autov3": "ddd48cd74131db7f5b1e97d383a8d7669a87fcaac35d114042eea1420b683277",
        "autov1": "68f5c450",
        "format": "diffusers-old",
    },
    "cloneofsimo_lora__analog_svd_rank4.safetensors": {
        "size": 3_117_793,
        "tensors": 384,
        "sha256": "337293d2de4c0d7c0f155ccb4c1470d9a7da4cb2ed594432a5d11f474461df59",
        "autov3": "c1cb0e15d1f4fd29bec5086a3435cd06c9666c18c1cfe64d59ef15e306287b81",
        "autov1": "dd744339",
        "format": "cloneofsimo",
    },
}


def fixture_file(path: Path) -> Path:
    """The fixture at ``path``, failing the test when it is missing: the fixtures are part of the repository, so a
    missing one is a broken checkout, and skipping would hide the tests that read it."""
    if not path.is_file():
        pytest.fail(f"test fixture {path} is missing (see tests/fixtures/README.md)")
    return path


def real_file(name: str) -> Path:
    return fixture_file(REAL / name)


def keylist_file(name: str) -> Path:
    return fixture_file(KEYLISTS / name)


def keylist_files() -> list[Path]:
    """Every key list, in name order; a folder without any is a broken checkout, not an empty parameter list."""
    paths = sorted(KEYLISTS.glob("*.json"))
    if not paths:
        raise FileNotFoundError(f"no key lists in {KEYLISTS} (see tests/fixtures/README.md)")
    return paths


def raw_safetensors(entries: Mapping[str, Any], data: bytes, *, pad: bool = True) -> bytes:
    """Bytes of a safetensors file from a header dict exactly as given (valid or not) and a data section."""
    header = json.dumps(entries).encode()
    if pad:
        header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + data


def write_sparse(path: Path, shapes: Mapping[str, list[int]], dtype: str = "F16") -> Path:
    """Write a valid safetensors file of the given shapes whose data is all zeros, without materialising it:
    the data section is a hole (ftruncate), so real FLUX geometries cost no memory or disk."""
    entries: dict[str, Any] = {}
    offset = 0
    for name in sorted(shapes):
        nbytes = math.prod(shapes[name]) * DTYPE_BITS[dtype] // 8
        entries[name] = {"dtype": dtype, "shape": list(shapes[name]), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    prefix = raw_safetensors(entries, b"")
    with open(path, "wb") as handle:
        handle.write(prefix)
        handle.truncate(len(prefix) + offset)
    return path


def postgres_unavailable(reason: str) -> None:
    """Skip a PostgreSQL test when no server answers, except where one is required (CI sets
    LORAHUB_REQUIRE_POSTGRES=1, so a broken server fails the run instead of hiding the backend's tests)."""
    if os.environ.get("LORAHUB_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL is required here but unavailable: {reason}")
    pytest.skip(reason)
