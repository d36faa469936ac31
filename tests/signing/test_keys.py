"""Identities: the key store on disk, references, passphrases, and which public keys are accepted."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from lorahub import errors
from lorahub.signing import Identity, KeyStore, Signer, keys
from lorahub.signing.keys import fingerprint_of, parse_user_id, public_key_from_pem, verify_signature


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _pem(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey) -> str:
    public = key.public_key()
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


# --- user ids --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Alice <alice@studio.example>", ("Alice", "alice@studio.example")),
        ("  Alice  Trainer   <a.t+lora@studio.example>  ", ("Alice  Trainer", "a.t+lora@studio.example")),
        ("Zoë Ünal <zoe@example.org>", ("Zoë Ünal", "zoe@example.org")),
    ],
)
def test_parse_user_id(text: str, expected: tuple[str, str]) -> None:
    assert parse_user_id(text) == expected


@pytest.mark.parametrize(
    "text",
    ["alice@studio.example", "<alice@studio.example>", "Alice <alice>", "Alice <a@b> extra", "Al<ice <a@b>", ""],
)
def test_malformed_user_id_is_refused_with_a_hint(text: str) -> None:
    with pytest.raises(errors.KeyFileError) as caught:
        parse_user_id(text)
    assert caught.value.hint is not None and "Name <email>" in caught.value.hint


# --- the store on disk -----------------------------------------------------------------------------------------


def test_create_writes_private_files(store: KeyStore) -> None:
    identity = store.create("Alice <alice@studio.example>")
    key_file = store.directory / f"{identity.fingerprint[:16]}.key.pem"
    info_file = store.directory / f"{identity.fingerprint[:16]}.json"
    assert _mode(store.directory) == 0o700
    assert _mode(key_file) == 0o600
    assert _mode(info_file) == 0o600
    assert key_file.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    info = json.loads(info_file.read_text())
    assert info["fingerprint"] == identity.fingerprint
    assert info["encrypted"] is False
    assert sorted(p.name for p in store.directory.iterdir()) == sorted([key_file.name, info_file.name])


def test_key_file_mode_does_not_depend_on_the_umask(store: KeyStore) -> None:
    previous = os.umask(0)
    try:
        identity = store.create("Alice <alice@studio.example>")
    finally:
        os.umask(previous)
    assert _mode(store.directory) == 0o700
    assert _mode(store.directory / f"{identity.fingerprint[:16]}.key.pem") == 0o600


def test_identity_facts(alice: Identity) -> None:
    assert alice.name == "Alice Trainer"
    assert alice.email == "alice@studio.example"
    assert alice.user_id == "Alice Trainer <alice@studio.example>"
    assert len(alice.fingerprint) == 64 and int(alice.fingerprint, 16) >= 0
    assert alice.created.endswith("Z") and "T" in alice.created
    der = serialization.load_pem_public_key(alice.public_pem.encode()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert alice.fingerprint == hashlib.sha256(der).hexdigest()


def test_list_reads_back_what_create_wrote(store: KeyStore, alice: Identity, bob: Identity) -> None:
    assert {i.fingerprint for i in store.list()} == {alice.fingerprint, bob.fingerprint}
    assert KeyStore(store.directory).list() == store.list()
    assert KeyStore(store.directory.parent / "elsewhere").list() == []


def test_same_user_id_twice_is_refused(store: KeyStore, alice: Identity) -> None:
    with pytest.raises(errors.KeyExistsError):
        store.create(alice.user_id)


def test_damaged_identity_file_is_refused(store: KeyStore, alice: Identity, bob: Identity) -> None:
    info_file = store.directory / f"{alice.fingerprint[:16]}.json"
    info = json.loads(info_file.read_text())
    info["fingerprint"] = bob.fingerprint
    info_file.write_text(json.dumps(info))
    with pytest.raises(errors.KeyFileError, match="fingerprint"):
        store.list()


# --- references ------------------------------------------------------------------------------------------------


def test_get_by_each_kind_of_reference(store: KeyStore, alice: Identity, bob: Identity) -> None:
    for ref in (
        "Alice Trainer",
        "alice trainer",
        "alice@studio.example",
        "ALICE@studio.example",
        "Alice Trainer <alice@studio.example>",
        alice.fingerprint,
        alice.fingerprint[:8],
        alice.fingerprint[:8].upper(),
        "sha256:" + alice.fingerprint[:12],
    ):
        assert store.get(ref) == alice, ref
    assert store.get("bob@curators.example") == bob


def test_unknown_and_too_short_references(store: KeyStore, alice: Identity) -> None:
    for ref in ("Carol", "carol@example.org", alice.fingerprint[:7], "0" * 64, "Alice"):
        with pytest.raises(errors.KeyNotFoundError):
            store.get(ref)


def test_ambiguous_fingerprint_prefix(store: KeyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    # 8-hex collisions need ~65k keys; with a 1-hex minimum, 17 keys are certain to share a first digit.
    monkeypatch.setattr(keys, "MIN_PREFIX", 1)
    by_first: dict[str, Identity] = {}
    for n in range(17):
        identity = store.create(f"User {n} <u{n}@example.org>")
        if by_first.setdefault(identity.fingerprint[0], identity) is not identity:
            break
    with pytest.raises(errors.AmbiguousKeyError, match="matches 2 identities"):
        store.get(identity.fingerprint[0])
    assert store.get(identity.fingerprint) == identity


def test_ambiguous_name(store: KeyStore) -> None:
    store.create("Alice <alice@home.example>")
    store.create("Alice <alice@work.example>")
    with pytest.raises(errors.AmbiguousKeyError):
        store.get("Alice")
    assert store.get("alice@work.example").email == "alice@work.example"


# --- the default identity --------------------------------------------------------------------------------------


def test_default(store: KeyStore) -> None:
    assert store.default() is None
    alice = store.create("Alice <alice@studio.example>")
    assert store.default() == alice  # the only key
    bob = store.create("Bob <bob@curators.example>")
    assert store.default() is None  # two keys, none chosen
    assert store.set_default("bob") == bob
    assert store.default() == bob
    assert KeyStore(store.directory).default() == bob
    store.set_default(alice.fingerprint[:10])
    assert store.default() == alice
    assert store.signer().identity == alice
    with pytest.raises(errors.KeyNotFoundError):
        store.set_default("carol")


def test_signer_without_default_is_refused(store: KeyStore, alice: Identity, bob: Identity) -> None:
    with pytest.raises(errors.KeyNotFoundError, match="no default"):
        store.signer()


# --- signing and passphrases -----------------------------------------------------------------------------------


def test_signature_is_es256_der(alice_signer: Signer, alice: Identity) -> None:
    data = b"hello lorahub"
    signature = alice_signer.sign(data)
    assert alice_signer.keyid == alice.fingerprint
    public = serialization.load_pem_public_key(alice.public_pem.encode())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(signature, data, ec.ECDSA(hashes.SHA256()))  # raises if not DER ECDSA/SHA-256 by this key
    assert verify_signature(alice.public_pem, data, signature)
    assert not verify_signature(alice.public_pem, data + b"!", signature)
    assert not verify_signature(alice.public_pem, data, b"\x30\x06garbage")
    assert "PRIVATE" not in repr(alice_signer)


def test_encrypted_key(store: KeyStore) -> None:
    identity = store.create("Eve Locked <eve@studio.example>", b"correct horse")
    key_file = store.directory / f"{identity.fingerprint[:16]}.key.pem"
    assert identity.encrypted
    assert key_file.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert _mode(key_file) == 0o600
    signer = store.signer("eve@studio.example", b"correct horse")
    assert verify_signature(identity.public_pem, b"data", signer.sign(b"data"))
    with pytest.raises(errors.PassphraseError, match="wrong passphrase"):
        store.signer("eve@studio.example", b"battery staple")
    with pytest.raises(errors.PassphraseError, match="no passphrase"):
        store.signer("eve@studio.example")
    with pytest.raises(errors.PassphraseError):
        store.signer("eve@studio.example", b"")


def test_passphrase_is_ignored_for_a_plain_key(store: KeyStore, alice: Identity) -> None:
    signer = store.signer(alice.fingerprint, b"some passphrase from the environment")
    assert verify_signature(alice.public_pem, b"x", signer.sign(b"x"))


def test_empty_passphrase_is_refused_at_creation(store: KeyStore) -> None:
    with pytest.raises(errors.PassphraseError):
        store.create("Eve <eve@studio.example>", b"")


def test_swapped_key_file_is_detected(store: KeyStore, alice: Identity, bob: Identity) -> None:
    alice_key = store.directory / f"{alice.fingerprint[:16]}.key.pem"
    bob_key = store.directory / f"{bob.fingerprint[:16]}.key.pem"
    alice_key.write_bytes(bob_key.read_bytes())
    with pytest.raises(errors.KeyFileError, match="does not match"):
        store.signer(alice.fingerprint)


# --- public keys -----------------------------------------------------------------------------------------------


def test_export_public_round_trip(store: KeyStore, alice: Identity) -> None:
    pem = store.export_public("alice@studio.example")
    assert pem.startswith("-----BEGIN PUBLIC KEY-----")
    key, fingerprint = public_key_from_pem(pem)
    assert fingerprint == alice.fingerprint == fingerprint_of(key)
    assert public_key_from_pem(pem.encode())[1] == alice.fingerprint


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: ec.generate_private_key(ec.SECP384R1()), "secp384r1"),
        (lambda: ec.generate_private_key(ec.SECP256K1()), "secp256k1"),
        (ed25519.Ed25519PrivateKey.generate, "Ed25519"),
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "RSA"),
    ],
)
def test_other_keys_are_refused(make: object, words: str) -> None:
    pem = _pem(make())  # type: ignore[operator]
    with pytest.raises(errors.KeyFileError, match=words):
        public_key_from_pem(pem)


@pytest.mark.parametrize("text", ["", "not a key", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"])
def test_garbage_is_not_a_public_key(text: str) -> None:
    with pytest.raises(errors.KeyFileError):
        public_key_from_pem(text)
