"""OpenSSF model-signing bundles made and checked by lorahub alone: the format's facts (which the interop tests in
tests/cli/test_oms_cli.py confirm against the real ``model_signing``), and each way a bundle can fail or be refused.

Bundles of other shapes (a folder's, BLAKE3, a certificate signer, shards) are built here as ``model_signing``
would write them, signed with a real P-256 key through lorahub's own DSSE code.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from blake3 import blake3

from lorahub import errors
from lorahub.signing import Identity, Signer
from lorahub.signing.dsse import pae
from lorahub.signing.oms import (
    BUNDLE_MEDIA_TYPE,
    IN_TOTO_PAYLOAD_TYPE,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    key_hint,
    oms_bundle,
    oms_bundle_for_digest,
    verify_oms_bundle,
)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "style.safetensors"
    path.write_bytes(bytes(range(256)) * 40)
    return path


def _keys(*identities: Identity) -> dict[str, str]:
    return {i.fingerprint: i.public_pem for i in identities}


def _statement(bundle: bytes) -> dict[str, Any]:
    envelope = json.loads(bundle)["dsseEnvelope"]
    statement: dict[str, Any] = json.loads(base64.b64decode(envelope["payload"]))
    return statement


def _bundle(signer: Signer, statement: dict[str, Any], **material: Any) -> bytes:
    """A bundle around any statement, signed as ``model_signing sign key`` signs (no keyid)."""
    payload = json.dumps(statement, indent=2).encode()
    sig = signer.sign(pae(IN_TOTO_PAYLOAD_TYPE, payload))
    bundle = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": material
        or {"publicKey": {"hint": key_hint(signer.identity.public_pem)}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": IN_TOTO_PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(sig).decode(), "keyid": ""}],
        },
    }
    return json.dumps(bundle).encode()


def _model_statement(
    resources: list[tuple[str, str, str]], *, hash_type: str = "sha256", **serialization: Any
) -> dict[str, Any]:
    root = hashlib.sha256(b"".join(bytes.fromhex(d) for _, _, d in resources)).hexdigest()
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": "folder", "digest": {"sha256": root}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "resources": [{"name": n, "algorithm": a, "digest": d} for n, a, d in resources],
            "serialization": {"method": "files", "hash_type": hash_type, "allow_symlinks": False, **serialization},
        },
    }


def _with_digest(statement: dict[str, Any], digest: str) -> dict[str, Any]:
    statement["predicate"]["resources"][0]["digest"] = digest
    return statement


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- what lorahub writes ---------------------------------------------------------------------------------------


def test_the_bundle_signs_a_single_file_model_as_model_signing_does(
    model: Path, alice: Identity, alice_signer: Signer
) -> None:
    bundle = json.loads(oms_bundle(model, alice_signer))
    assert bundle["mediaType"] == BUNDLE_MEDIA_TYPE
    pem_sha = hashlib.sha256(alice.public_pem.encode()).hexdigest()
    assert bundle["verificationMaterial"] == {"publicKey": {"hint": pem_sha}, "tlogEntries": []}
    assert bundle["dsseEnvelope"]["payloadType"] == IN_TOTO_PAYLOAD_TYPE
    statement = _statement(oms_bundle(model, alice_signer))
    digest = _sha256(model)
    assert statement["_type"] == STATEMENT_TYPE and statement["predicateType"] == PREDICATE_TYPE
    assert statement["predicate"]["resources"] == [{"name": ".", "algorithm": "sha256", "digest": digest}]
    assert statement["predicate"]["serialization"]["method"] == "files"
    assert statement["subject"] == [
        {"name": "style.safetensors", "digest": {"sha256": hashlib.sha256(bytes.fromhex(digest)).hexdigest()}}
    ]


def test_the_name_goes_to_the_subject_and_a_known_digest_saves_the_read(model: Path, alice_signer: Signer) -> None:
    named = _statement(oms_bundle(model, alice_signer, name="pixel-art.safetensors"))
    assert named["subject"][0]["name"] == "pixel-art.safetensors"
    assert _statement(oms_bundle_for_digest(_sha256(model), alice_signer, name="pixel-art.safetensors")) == named
    with pytest.raises(errors.InvalidArgumentError):
        oms_bundle_for_digest("ABC", alice_signer, name="x")


# --- checking --------------------------------------------------------------------------------------------------


def test_a_bundle_verifies_under_its_key_and_any_file_name(model: Path, alice: Identity, alice_signer: Signer) -> None:
    bundle = oms_bundle(model, alice_signer)
    renamed = model.rename(model.with_name("renamed.bin"))
    check = verify_oms_bundle(renamed, bundle, _keys(alice))
    assert check.ok and check.signer == alice.fingerprint and check.model_name == "style.safetensors"
    assert [(d.name, d.algorithm, d.actual) for d in check.digests] == [(".", "sha256", _sha256(renamed))]


def test_one_changed_byte_fails_with_the_signer_still_named(model: Path, alice: Identity, alice_signer: Signer) -> None:
    bundle = oms_bundle(model, alice_signer)
    data = bytearray(model.read_bytes())
    data[5000] ^= 0x01
    model.write_bytes(bytes(data))
    check = verify_oms_bundle(model, bundle, _keys(alice))
    assert not check.ok and check.signer == alice.fingerprint and "changed" in check.reason
    assert not check.digests[0].matches


def test_another_key_or_an_edited_statement_verifies_nothing(
    model: Path, alice: Identity, bob: Identity, alice_signer: Signer
) -> None:
    bundle = oms_bundle(model, alice_signer)
    check = verify_oms_bundle(model, bundle, _keys(bob))
    assert not check.ok and check.signer is None and check.digests == ()
    assert key_hint(alice.public_pem)[:16] in check.reason
    edited = json.loads(bundle)
    statement = _statement(bundle)
    statement["subject"][0]["name"] = "other"
    edited["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    assert verify_oms_bundle(model, json.dumps(edited).encode(), _keys(alice, bob)).signer is None
    assert verify_oms_bundle(model, bundle, {}).reason == "no public key to check the signature with"


def test_a_folder_that_held_only_this_file_is_accepted_a_bigger_folder_is_not(
    model: Path, alice: Identity, alice_signer: Signer
) -> None:
    digest = _sha256(model)
    only = _bundle(alice_signer, _model_statement([("style.safetensors", "sha256", digest)]))
    assert verify_oms_bundle(model, only, _keys(alice)).ok
    renamed = model.rename(model.with_name("other.safetensors"))
    refused = verify_oms_bundle(renamed, only, _keys(alice))
    assert not refused.ok and "'style.safetensors'" in refused.reason
    assert verify_oms_bundle(renamed, only, _keys(alice), resource="style.safetensors").ok
    folder = _model_statement([("README.md", "sha256", "00" * 32), ("style.safetensors", "sha256", digest)])
    check = verify_oms_bundle(renamed, _bundle(alice_signer, folder), _keys(alice), resource="style.safetensors")
    assert not check.ok and "folder of 2 files" in check.reason and "model_signing verify" in check.reason


@pytest.mark.parametrize(
    ("hash_type", "hasher"),
    [("blake2b", lambda b: hashlib.blake2b(b).hexdigest()), ("blake3", lambda b: blake3(b).hexdigest())],
)
def test_blake2b_and_blake3_digests_are_recomputed(
    model: Path, alice: Identity, alice_signer: Signer, hash_type: str, hasher: Any
) -> None:
    digest = hasher(model.read_bytes())
    bundle = _bundle(alice_signer, _model_statement([(".", hash_type, digest)], hash_type=hash_type))
    check = verify_oms_bundle(model, bundle, _keys(alice))
    assert check.ok and check.digests[0].algorithm == hash_type
    model.write_bytes(model.read_bytes() + b"!")
    assert not verify_oms_bundle(model, bundle, _keys(alice)).ok


# --- refused bundles -------------------------------------------------------------------------------------------


def test_damaged_bundles_are_lorahub_errors_with_a_hint(model: Path, alice: Identity, alice_signer: Signer) -> None:
    good = json.loads(oms_bundle(model, alice_signer))
    damaged: list[bytes] = [
        b"not json",
        b"\xff\xfe",
        b"[]",
        json.dumps({**good, "mediaType": "application/json"}).encode(),
        json.dumps({**good, "extra": 1}).encode(),
        json.dumps({**good, "verificationMaterial": {"tlogEntries": []}}).encode(),
        json.dumps({**good, "dsseEnvelope": {**good["dsseEnvelope"], "payload": "%%%"}}).encode(),
        json.dumps({**good, "dsseEnvelope": {**good["dsseEnvelope"], "signatures": []}}).encode(),
        json.dumps({**good, "dsseEnvelope": {**good["dsseEnvelope"], "payloadType": "text/plain"}}).encode(),
        b'{"mediaType": "a", "mediaType": "b"}',
    ]
    for data in damaged:
        with pytest.raises(errors.OmsBundleError) as caught:
            verify_oms_bundle(model, data, _keys(alice))
        assert caught.value.hint, data


def test_signed_statements_that_are_wrong_are_refused(model: Path, alice: Identity, alice_signer: Signer) -> None:
    digest = _sha256(model)
    inconsistent = _model_statement([(".", "sha256", digest)])
    inconsistent["subject"][0]["digest"]["sha256"] = "00" * 32
    mixed = _model_statement([(".", "sha256", digest)])
    mixed["predicate"]["resources"][0]["algorithm"] = "blake3"
    for statement, words in (
        (inconsistent, "inconsistent"),
        (mixed, "serialization says"),
        ({**_model_statement([(".", "sha256", digest)]), "_type": "x"}, "_type"),
        (
            {**_model_statement([(".", "sha256", digest)]), "predicateType": "https://slsa.dev/provenance/v1"},
            "predicateType",
        ),
        (_with_digest(_model_statement([(".", "sha256", digest)]), "not hex"), "hex"),
    ):
        with pytest.raises(errors.OmsBundleError, match=words):
            verify_oms_bundle(model, _bundle(alice_signer, statement), _keys(alice))


def test_bundles_lorahub_does_not_check_are_refused_with_the_command_that_does(
    model: Path, alice: Identity, alice_signer: Signer
) -> None:
    digest = _sha256(model)
    certificate = {"certificate": {"rawBytes": "MIIB"}, "tlogEntries": []}
    with pytest.raises(errors.OmsBundleUnsupportedError) as caught:
        verify_oms_bundle(model, _bundle(alice_signer, _model_statement([(".", "sha256", digest)]), **certificate), {})
    assert "model_signing verify sigstore" in str(caught.value.hint)
    shards = _model_statement([(".:0:10240", "sha256", digest)])
    shards["predicate"]["serialization"] |= {"method": "shards", "shard_size": 1_000_000_000}
    legacy = {"_type": STATEMENT_TYPE, "subject": [], "predicateType": "https://model_signing/Digests/v0.1"}
    unknown_hash = _model_statement([(".", "sha512", "00" * 64)], hash_type="sha512")
    for statement, words in ((shards, "shards"), (legacy, "pre-1.0"), (unknown_hash, "sha512")):
        with pytest.raises(errors.OmsBundleUnsupportedError, match=words):
            verify_oms_bundle(model, _bundle(alice_signer, statement), _keys(alice))


def test_the_file_must_exist(tmp_path: Path, model: Path, alice: Identity, alice_signer: Signer) -> None:
    with pytest.raises(errors.PathNotFoundError):
        verify_oms_bundle(tmp_path / "gone.safetensors", oms_bundle(model, alice_signer), _keys(alice))
