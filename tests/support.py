"""Helpers for every test: the real files in ``tests/fixtures`` (see its README) and small file builders."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
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


REGISTRY_CONFIG = Path(__file__).resolve().parents[1] / "examples" / "registry.yml"


def registry_unavailable(reason: str) -> None:
    """Skip an OCI registry test when Debian's docker-registry is not installed, except where it is required (CI
    sets LORAHUB_REQUIRE_REGISTRY=1 and installs it)."""
    if os.environ.get("LORAHUB_REQUIRE_REGISTRY") == "1":
        pytest.fail(f"an OCI registry is required here but unavailable: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_registry(storage: Path, port: int) -> Iterator[str]:
    """Debian's docker-registry (distribution 2.8) with the repository's own config, on 127.0.0.1:PORT, storing in
    ``storage``; stopped on exit. Yields ``127.0.0.1:PORT``."""
    binary = shutil.which("docker-registry")
    if binary is None:
        registry_unavailable("docker-registry is not installed (apt install docker-registry)")
        raise AssertionError("unreachable")
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(storage), "REGISTRY_HTTP_ADDR": address}
    log = (storage.parent / f"registry-{port}.log").open("wb")
    process = subprocess.Popen([binary, "serve", str(REGISTRY_CONFIG)], env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://{address}/v2/", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                registry_unavailable(f"docker-registry did not start on {address} (see {log.name})")
            time.sleep(0.1)
        yield address
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()
