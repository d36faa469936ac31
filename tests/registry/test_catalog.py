"""The catalog API on SQLite and PostgreSQL: numbering, duplicates, removal, filters, signatures, keys, cache."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from lorahub import errors
from lorahub.registry import catalog as catalog_module
from lorahub.registry.blobs import BlobStore
from lorahub.registry.catalog import AdapterVersion, AuditActor, Catalog, Filters, KeyRow, parse_ref
from lorahub.registry.db import read_transaction
from tests.registry.helpers import Signer, new_version


def _add(catalog: Catalog, store: BlobStore, signer: Signer, name: str, content: str, **fields: Any) -> AdapterVersion:
    blob = store.put_bytes(content.encode())
    return catalog.add_version(new_version(name, blob, **fields), audit=signer.actor)


def _refs(versions: list[AdapterVersion]) -> list[str]:
    return [version.ref for version in versions]


def _count(catalog: Catalog, table: str) -> int:
    with read_transaction(catalog.engine) as session:
        return int(session.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def test_versions_are_numbered_and_read_back(catalog: Catalog, store: BlobStore, signer: Signer) -> None:
    first = _add(
        catalog,
        store,
        signer,
        "pixel-art",
        "v1",
        trigger_words=["pixel art, 8-bit", "sprite"],
        tags=["style"],
        commercial_use=["Image", "sell"],
        signatures=[(signer.fingerprint, "c2ln")],
    )
    second = _add(catalog, store, signer, "pixel-art", "v2")
    assert (first.ref, second.ref) == ("pixel-art@1", "pixel-art@2")
    assert catalog.get("pixel-art") == second
    got = catalog.get("pixel-art", 1)
    assert got == first
    assert got.trigger_words == ("pixel art, 8-bit", "sprite") and got.tags == ("style",)
    assert got.commercial_use == ("image", "sell")
    assert got.signers == (signer.fingerprint,) and got.signatures[0].sig == "c2ln"
    assert got.size == len(b"v1") and got.blob_sha256 == store.put_bytes(b"v1").sha256
    assert got.created_at.tzinfo is not None and got.removed_at is None
    assert _refs(catalog.list_versions()) == ["pixel-art@1", "pixel-art@2"]


def test_explicit_numbers(catalog: Catalog, store: BlobStore, signer: Signer) -> None:
    assert catalog.next_number("x") == 1
    _add(catalog, store, signer, "x", "a")
    assert catalog.next_number("x") == 2
    assert _add(catalog, store, signer, "x", "b", number=10).number == 10
    assert catalog.next_number("x") == 11
    assert _add(catalog, store, signer, "x", "c").number == 11
    with pytest.raises(errors.VersionExistsError, match="x@10"):
        _add(catalog, store, signer, "x", "d", number=10)
    assert _count(catalog, "version") == 3


def test_duplicate_content_is_refused_naming_the_existing_version(
    catalog: Catalog, store: BlobStore, signer: Signer
) -> None:
    _add(catalog, store, signer, "original", "same tensors", label="T")
    with pytest.raises(errors.DuplicateContentError) as caught:
        _add(catalog, store, signer, "copy", "same tensors, other metadata", label="T")
    assert caught.value.existing == "original@1" and "original@1" in str(caught.value)
    assert _count(catalog, "version") == 1 and _count(catalog, "audit_event") == 1
    copy = catalog.add_version(
        new_version("copy", store.put_bytes(b"other"), label="T"), audit=signer.actor, allow_duplicate=True
    )
    assert _refs(catalog.find_all(content_digest=copy.content_digest)) == ["original@1", "copy@1"]
    assert catalog.find_by_content(copy.content_digest) == catalog.get("original")
    catalog.remove("original", audit=signer.actor)
    assert catalog.find_by_content(copy.content_digest) == catalog.get("copy")
    catalog.remove("copy", audit=signer.actor)
    assert catalog.find_by_content(copy.content_digest) is None
    removed = catalog.find_by_content(copy.content_digest, include_removed=True)
    assert removed is not None and removed.ref == "copy@1"
    assert _add(catalog, store, signer, "again", "third copy", label="T").ref == "again@1"


def test_removed_versions_are_hidden(catalog: Catalog, store: BlobStore, signer: Signer) -> None:
    _add(catalog, store, signer, "a", "1")
    _add(catalog, store, signer, "a", "2")
    removed = catalog.remove("a", audit=signer.actor)
    assert removed.ref == "a@2" and removed.removed
    assert catalog.get("a").ref == "a@1"
    with pytest.raises(errors.AdapterNotFoundError, match="removed"):
        catalog.get("a", 2)
    assert catalog.get("a", 2, include_removed=True).removed_at is not None
    assert _refs(catalog.list_versions()) == ["a@1"]
    assert _refs(catalog.list_versions(Filters(include_removed=True))) == ["a@1", "a@2"]
    assert catalog.search("a") == catalog.list_versions()
    assert _add(catalog, store, signer, "a", "3").number == 3  # numbers are never reused
    catalog.remove("a", 1, audit=signer.actor)
    catalog.remove("a", 3, audit=signer.actor)
    with pytest.raises(errors.AdapterNotFoundError, match="no versions left"):
        catalog.get("a")
    with pytest.raises(errors.AdapterNotFoundError):
        catalog.remove("a", audit=signer.actor)


def test_unknown_names_and_refs(catalog: Catalog) -> None:
    with pytest.raises(errors.AdapterNotFoundError, match="no adapter named 'ghost'"):
        catalog.get("ghost")
    assert parse_ref("pixel-art@2") == ("pixel-art", 2)
    assert parse_ref("pixel-art") == ("pixel-art", None)
    with pytest.raises(errors.AdapterNotFoundError):
        parse_ref("pixel-art@latest")


def test_bad_names_are_refused(catalog: Catalog, store: BlobStore, signer: Signer) -> None:
    for name in ("", " padded", "has@at"):
        with pytest.raises(ValueError):
            _add(catalog, store, signer, name, name or "empty")


def test_filters(catalog: Catalog, store: BlobStore, signer: Signer) -> None:
    other = Signer.generate()
    _add(catalog, store, signer, "flux-style", "1", family="flux1", format="diffusers", commercial_use=["none"])
    _add(catalog, store, signer, "sd-char", "2", family="sd1", license_id="CC-BY-4.0", commercial_use=["RentCivit"])
    _add(
        catalog,
        store,
        signer,
        "sdxl-concept",
        "3",
        consent_status="opted-in",
        commercial_use=[],
        signatures=[(other.fingerprint, "c2ln")],
    )

    def names(**kwargs: Any) -> list[str]:
        return [version.name for version in catalog.list_versions(Filters(**kwargs))]

    assert names(family="flux1") == ["flux-style"]
    assert names(format="kohya") == ["sd-char", "sdxl-concept"]
    assert names(license_id="CC-BY-4.0") == ["sd-char"]
    assert names(commercial=True) == ["sd-char"]
    assert names(commercial=False) == ["flux-style", "sdxl-concept"]
    assert names(signer=other.fingerprint[:8]) == ["sdxl-concept"]
    assert names(signer="%") == []
    assert names(consent_status="opted-in") == ["sdxl-concept"]
    assert names(name="sd-char") == ["sd-char"]
    assert names(family="sd1", commercial=False) == []


def test_signatures_can_be_added_once_per_key(catalog: Catalog, store: BlobStore, signer: Signer) -> None:
    version = _add(catalog, store, signer, "a", "1")
    cosigner = Signer.generate()
    assert catalog.add_signature(version, cosigner.fingerprint, "c2ln", audit=cosigner.actor) is True
    assert catalog.add_signature(version, cosigner.fingerprint, "b3RoZXI=", audit=cosigner.actor) is False
    after = catalog.get("a")
    assert [(s.keyid, s.sig) for s in after.signatures] == [(cosigner.fingerprint, "c2ln")]
    assert after.signers == ()  # the add-time signer list is immutable; signatures hold the rest
    assert _refs(catalog.list_versions(Filters(signer=cosigner.fingerprint))) == ["a@1"]
    assert [event.action for event in catalog.audit_events()] == ["add", "sign"]


def test_blobs_are_shared_and_collected(catalog: Catalog, store: BlobStore, signer: Signer) -> None:
    blob = store.put_bytes(b"shared")
    catalog.add_version(new_version("a", blob, label="1"), audit=signer.actor)
    catalog.add_version(new_version("b", blob, label="2"), audit=signer.actor)
    assert _count(catalog, "blob") == 1
    assert _refs(catalog.find_all(sha256=blob.sha256)) == ["a@1", "b@1"]
    found = catalog.find_by_sha256(blob.sha256.upper())
    assert found is not None and found.ref == "a@1"
    assert catalog.unreferenced_blobs() == []
    catalog.remove("a", audit=signer.actor)
    assert catalog.unreferenced_blobs() == []
    catalog.remove("b", audit=signer.actor)
    assert catalog.unreferenced_blobs() == [blob.sha256]
    assert catalog.find_by_sha256(blob.sha256) is None
    assert len(catalog.find_all(sha256=blob.sha256, include_removed=True)) == 2


def test_a_failed_add_writes_nothing(catalog: Catalog, store: BlobStore) -> None:
    def broken_sign(message: bytes) -> bytes:
        raise RuntimeError("hardware key unplugged")

    with pytest.raises(RuntimeError):
        catalog.add_version(new_version("a", store.put_bytes(b"x")), audit=AuditActor("f" * 64, broken_sign))
    for table in ("adapter", "version", "blob", "signature", "search_text", "audit_event"):
        assert _count(catalog, table) == 0, table


def test_keys(catalog: Catalog, signer: Signer) -> None:
    own = catalog.upsert_key(KeyRow(signer.fingerprint, "Alice", signer.public_pem, own=True))
    assert own.own and not own.trusted and own.added_at is not None
    bob = Signer.generate()
    trusted = catalog.trust_key(bob.fingerprint, "Bob", bob.public_pem, audit=signer.actor)
    assert trusted.active
    assert [key.name for key in catalog.list_keys()] == ["Alice", "Bob"]
    assert catalog.trust_key(signer.fingerprint, "Alice", signer.public_pem, audit=signer.actor).own
    carol = Signer.generate()
    assert catalog.trust_key(carol.fingerprint, "Carol", carol.public_pem, audit=carol.actor, own=True).own
    revoked = catalog.revoke_key(bob.fingerprint, audit=signer.actor)
    assert revoked.revoked_at is not None and not revoked.active
    assert catalog.get_key(bob.fingerprint) == revoked
    assert catalog.get_key("0" * 64) is None
    assert catalog.trust_key(bob.fingerprint, "Bob", bob.public_pem, audit=signer.actor).active
    with pytest.raises(errors.KeyNotFoundError):
        catalog.revoke_key("0" * 64, audit=signer.actor)
    assert [event.action for event in catalog.audit_events()] == ["trust", "trust", "trust", "revoke", "trust"]


def test_file_cache(catalog: Catalog) -> None:
    huge_inode = 2**64 - 5
    catalog.file_cache_put("/lib/a.safetensors", 10, 123, huge_inode, sha256="s" * 64, content_digest="c" * 64)
    hit = catalog.file_cache_get("/lib/a.safetensors", 10, 123, huge_inode)
    assert hit is not None and (hit.sha256, hit.content_digest) == ("s" * 64, "c" * 64)
    assert catalog.file_cache_get("/lib/a.safetensors", 10, 124, huge_inode) is None
    assert catalog.file_cache_get("/lib/a.safetensors", 11, 123, huge_inode) is None
    assert catalog.file_cache_get("/lib/other.safetensors", 10, 123, huge_inode) is None
    catalog.file_cache_put("/lib/a.safetensors", 11, 200, 7, sha256="t" * 64)
    updated = catalog.file_cache_get("/lib/a.safetensors", 11, 200, 7)
    assert updated is not None and updated.sha256 == "t" * 64 and updated.content_digest is None
    assert updated.checked_at <= datetime.now(UTC)


def test_long_listings_are_read_in_batches(
    catalog: Catalog, store: BlobStore, signer: Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalog_module, "HYDRATE_BATCH", 2)
    cosigner = Signer.generate()
    for index in range(5):
        _add(catalog, store, signer, f"n{index}", str(index), signatures=[(cosigner.fingerprint, f"s{index}")])
    listed = catalog.list_versions()
    assert _refs(listed) == [f"n{index}@1" for index in range(5)]
    assert [version.signatures[0].sig for version in listed] == [f"s{index}" for index in range(5)]
    assert _refs(catalog.search("n")) == [f"n{index}@1" for index in reversed(range(5))]
