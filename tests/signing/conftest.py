"""Identities for the signing tests: real P-256 keys in a temporary key store."""

from __future__ import annotations

from pathlib import Path

import pytest

from lorahub.signing import Identity, KeyStore, Signer


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "home" / "keys")


@pytest.fixture
def alice(store: KeyStore) -> Identity:
    return store.create("Alice Trainer <alice@studio.example>")


@pytest.fixture
def bob(store: KeyStore) -> Identity:
    return store.create("Bob Curator <bob@curators.example>")


@pytest.fixture
def alice_signer(store: KeyStore, alice: Identity) -> Signer:
    return store.signer(alice.fingerprint)


@pytest.fixture
def bob_signer(store: KeyStore, bob: Identity) -> Signer:
    return store.signer(bob.fingerprint)
