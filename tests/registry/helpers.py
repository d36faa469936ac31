"""Test helpers for the registry: a real ECDSA P-256 signer, PostgreSQL schemas, version builders, and the
functions child processes run (they must live in an importable module for the ``spawn`` start method)."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from lorahub.registry.blobs import BlobInfo, BlobStore
from lorahub.registry.catalog import AuditActor, Catalog, NewVersion

PG_URL = os.environ.get("LORAHUB_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@dataclass
class Signer:
    """An ECDSA P-256 identity, the kind lorahub's signing package makes."""

    key: ec.EllipticCurvePrivateKey

    @classmethod
    def generate(cls) -> Signer:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_pem(cls, pem: bytes) -> Signer:
        key = serialization.load_pem_private_key(pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cls(key)

    @property
    def private_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @property
    def public_pem(self) -> str:
        return (
            self.key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )

    @property
    def fingerprint(self) -> str:
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return hashlib.sha256(der).hexdigest()

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message, ec.ECDSA(hashes.SHA256()))

    @property
    def actor(self) -> AuditActor:
        return AuditActor(self.fingerprint, self.sign)


def verify_signature(public_pem: str, message: bytes, signature: bytes) -> bool:
    key = serialization.load_pem_public_key(public_pem.encode())
    assert isinstance(key, ec.EllipticCurvePublicKey)
    try:
        key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


# --- PostgreSQL ------------------------------------------------------------------------------------------------


@cache
def postgres_reason() -> str | None:
    """None when the test server answers, else why not (the tests then skip)."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(PG_URL)
    try:
        psycopg.connect(dbname=url.database, connect_timeout=3, **_params(url)).close()
    except psycopg.Error as exc:
        return f"PostgreSQL at {PG_URL} is unreachable: {str(exc).strip().splitlines()[0]}"
    return None


def _params(url: Any) -> dict[str, Any]:
    return {"host": url.host, "port": url.port or 5432, "user": url.username, "password": url.password}


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A catalog URL whose search_path is a fresh schema, dropped afterwards."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(PG_URL)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    params = _params(url)
    with psycopg.connect(dbname=url.database, autocommit=True, **params) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(dbname=url.database, autocommit=True, **params) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


# --- building versions -----------------------------------------------------------------------------------------


def fake_digest(label: str) -> str:
    return hashlib.sha256(f"content:{label}".encode()).hexdigest()


def new_version(name: str, blob: BlobInfo, *, label: str | None = None, **fields: Any) -> NewVersion:
    """A NewVersion with plausible defaults; ``label`` makes the content digest (defaults to the blob's)."""
    defaults: dict[str, Any] = {
        "content_digest": fake_digest(label or blob.sha256),
        "file_name": f"{name}.safetensors",
        "format": "kohya",
        "family": "sdxl",
        "license_id": "LicenseRef-OpenRAIL-M",
        "commercial_use": ["image"],
        "consent_status": "not-applicable",
        "description": f"{name} adapter",
        "trigger_words": [],
        "tags": [],
        "card_json": '{"name":"' + name + '"}',
    }
    defaults.update(fields)
    return NewVersion(name=name, blob=blob, **defaults)


# --- child processes -------------------------------------------------------------------------------------------


def add_versions_worker(
    url: str, store_root: str, private_pem: bytes, *, worker: int, count: int, barrier: Any
) -> None:
    """Wait until every worker is up, then open the catalog (connect + migrate a new database, all at once, as
    processes that start together do) and add ``count`` versions."""
    signer = Signer.from_pem(private_pem)
    store = BlobStore(Path(store_root))
    barrier.wait(120)
    catalog = Catalog.open(url)
    for index in range(count):
        blob = store.put_bytes(f"worker {worker} file {index}".encode() * 100)
        catalog.add_version(new_version(f"w{worker}", blob, label=f"{worker}/{index}"), audit=signer.actor)
    catalog.engine.dispose()


def slow_blob_writer(store_root: str, ready: Any) -> None:
    """Write part of a blob, say so, then hang until killed."""
    store = BlobStore(Path(store_root))
    with store.writer() as writer:
        writer.write(b"partial bytes " * 10_000)
        ready.set()
        time.sleep(600)
        writer.commit()
