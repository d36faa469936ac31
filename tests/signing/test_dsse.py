"""DSSE v1: PAE, the JSON form, and what verification says about each way an envelope can be wrong."""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

import pytest

from lorahub import errors
from lorahub.signing import Identity, Signer
from lorahub.signing.dsse import (
    Envelope,
    EnvelopeSignature,
    add_signature,
    pae,
    sign_envelope,
    verify_envelope,
)

PAYLOAD_TYPE = "application/vnd.lorahub.test+json"
PAYLOAD = b'{"hello":"world","bytes":"\xc3\xa9"}'


def _keys(*identities: Identity) -> dict[str, str]:
    return {i.fingerprint: i.public_pem for i in identities}


def test_pae_test_vector() -> None:
    assert (
        pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_bytes_not_characters() -> None:
    assert pae("tÿpe", b"\xe2\x82\xac") == "DSSEv1 5 tÿpe 3 €".encode()
    assert pae("", b"") == b"DSSEv1 0  0 "


def test_sign_and_verify(alice_signer: Signer, alice: Identity) -> None:
    envelope = sign_envelope(PAYLOAD, PAYLOAD_TYPE, alice_signer)
    assert envelope.payload == PAYLOAD and envelope.payload_type == PAYLOAD_TYPE
    assert [s.keyid for s in envelope.signatures] == [alice.fingerprint]
    [check] = verify_envelope(envelope, _keys(alice))
    assert check.valid and check.keyid == alice.fingerprint
    assert "valid signature" in check.reason


def test_json_round_trip(alice_signer: Signer) -> None:
    envelope = sign_envelope(PAYLOAD, PAYLOAD_TYPE, alice_signer)
    document = envelope.to_json()
    assert set(document) == {"payload", "payloadType", "signatures"}
    assert base64.b64decode(document["payload"], validate=True) == PAYLOAD
    assert Envelope.from_json(document) == envelope


def test_tampered_payload(alice_signer: Signer, alice: Identity) -> None:
    envelope = sign_envelope(PAYLOAD, PAYLOAD_TYPE, alice_signer)
    tampered = dataclasses.replace(envelope, payload=PAYLOAD.replace(b"world", b"World"))
    [check] = verify_envelope(tampered, _keys(alice))
    assert not check.valid
    assert check.keyid == alice.fingerprint
    assert "does not verify" in check.reason


def test_tampered_payload_type(alice_signer: Signer, alice: Identity) -> None:
    envelope = sign_envelope(PAYLOAD, PAYLOAD_TYPE, alice_signer)
    tampered = dataclasses.replace(envelope, payload_type="application/json")
    [check] = verify_envelope(tampered, _keys(alice))
    assert not check.valid and "payloadType" in check.reason


def test_signature_moved_to_another_envelope(alice_signer: Signer, alice: Identity) -> None:
    signed = sign_envelope(PAYLOAD, PAYLOAD_TYPE, alice_signer)
    other = sign_envelope(b'{"other":1}', PAYLOAD_TYPE, alice_signer)
    moved = dataclasses.replace(other, signatures=signed.signatures)
    [check] = verify_envelope(moved, _keys(alice))
    assert not check.valid and "does not verify" in check.reason


def test_unknown_keyid(alice_signer: Signer, bob: Identity) -> None:
    envelope = sign_envelope(PAYLOAD, PAYLOAD_TYPE, alice_signer)
    [check] = verify_envelope(envelope, _keys(bob))
    assert not check.valid
    assert "unknown key" in check.reason and alice_signer.keyid[:16] in check.reason
    assert verify_envelope(envelope, {})[0].valid is False


def test_keyid_is_only_a_hint(alice_signer: Signer, alice: Identity, bob: Identity) -> None:
    envelope = sign_envelope(PAYLOAD, PAYLOAD_TYPE, alice_signer)
    # A wrong or missing keyid does not stop a known key from verifying, and the check names the real signer.
    for hint in ("", "not-a-fingerprint", bob.fingerprint):
        relabelled = dataclasses.replace(envelope, signatures=(EnvelopeSignature(hint, envelope.signatures[0].sig),))
        [check] = verify_envelope(relabelled, _keys(alice, bob))
        assert check.valid and check.keyid == alice.fingerprint, hint
    # A trust map that files Bob's key under Alice's fingerprint cannot make Bob's signature pass as Alice's,
    # nor Alice's as valid under the wrong key.
    [check] = verify_envelope(envelope, {alice.fingerprint: bob.public_pem})
    assert not check.valid


def test_unusable_public_key_is_reported(alice_signer: Signer, alice: Identity) -> None:
    envelope = sign_envelope(PAYLOAD, PAYLOAD_TYPE, alice_signer)
    [check] = verify_envelope(envelope, {alice.fingerprint: "not a pem"})
    assert not check.valid and "unusable" in check.reason


def test_two_signatures_trainer_and_curator(
    alice_signer: Signer, bob_signer: Signer, alice: Identity, bob: Identity
) -> None:
    envelope = add_signature(sign_envelope(PAYLOAD, PAYLOAD_TYPE, alice_signer), bob_signer)
    assert [s.keyid for s in envelope.signatures] == [alice.fingerprint, bob.fingerprint]
    assert envelope.payload == PAYLOAD
    checks = verify_envelope(envelope, _keys(alice, bob))
    assert [(c.keyid, c.valid) for c in checks] == [(alice.fingerprint, True), (bob.fingerprint, True)]
    only_alice = verify_envelope(envelope, _keys(alice))
    assert [c.valid for c in only_alice] == [True, False]
    again = add_signature(envelope, bob_signer)  # a key signs once: its signature is replaced, not repeated
    assert [s.keyid for s in again.signatures] == [alice.fingerprint, bob.fingerprint]
    assert all(c.valid for c in verify_envelope(again, _keys(alice, bob)))


def _urlsafe_unpadded(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def test_url_safe_base64_is_accepted(alice_signer: Signer, alice: Identity) -> None:
    payload = b"\xfb\xff\xbf" * 5 + b"!"  # standard base64 of this needs '+' and '/', and padding
    envelope = sign_envelope(payload, PAYLOAD_TYPE, alice_signer)
    document: dict[str, Any] = {
        "payload": _urlsafe_unpadded(payload),
        "payloadType": PAYLOAD_TYPE,
        "signatures": [{"keyid": alice.fingerprint, "sig": _urlsafe_unpadded(envelope.signatures[0].sig)}],
    }
    assert "-" in document["payload"] and "_" in document["payload"]
    parsed = Envelope.from_json(document)
    assert parsed == envelope
    assert verify_envelope(parsed, _keys(alice))[0].valid
    assert "+" in parsed.to_json()["payload"]  # written back as standard base64


def test_empty_signature_list_is_an_unsigned_envelope(alice_signer: Signer, alice: Identity) -> None:
    document = sign_envelope(PAYLOAD, PAYLOAD_TYPE, alice_signer).to_json()
    document["signatures"] = []
    envelope = Envelope.from_json(document)
    assert envelope.signatures == ()
    assert verify_envelope(envelope, _keys(alice)) == []


def test_missing_keyid_is_allowed_and_omitted(alice_signer: Signer) -> None:
    envelope = sign_envelope(PAYLOAD, PAYLOAD_TYPE, alice_signer)
    bare = dataclasses.replace(envelope, signatures=(EnvelopeSignature("", envelope.signatures[0].sig),))
    assert bare.to_json()["signatures"] == [{"sig": base64.b64encode(envelope.signatures[0].sig).decode()}]
    assert Envelope.from_json(bare.to_json()) == bare


@pytest.mark.parametrize(
    ("damage", "field"),
    [
        (lambda d: d.pop("payload"), "envelope.payload"),
        (lambda d: d.update(payload=7), "envelope.payload"),
        (lambda d: d.update(payload="not base64!"), "envelope.payload"),
        (lambda d: d.update(payload="ab+c_d=="), "envelope.payload"),
        (lambda d: d.update(payload="abcde"), "envelope.payload"),
        (lambda d: d.pop("payloadType"), "envelope.payloadType"),
        (lambda d: d.update(payloadType="bad \ud800"), "envelope.payloadType"),
        (lambda d: d.update(signatures="sig"), "envelope.signatures"),
        (lambda d: d.update(extra=1), "envelope.extra"),
        (lambda d: d["signatures"][0].pop("sig"), "envelope.signatures[0].sig"),
        (lambda d: d["signatures"][0].update(keyid=5), "envelope.signatures[0].keyid"),
        (lambda d: d["signatures"][0].update(cert="x"), "envelope.signatures[0].cert"),
        (lambda d: d["signatures"].append("sig"), "envelope.signatures[1]"),
    ],
)
def test_malformed_envelopes_are_card_errors(alice_signer: Signer, damage: Any, field: str) -> None:
    document = sign_envelope(PAYLOAD, PAYLOAD_TYPE, alice_signer).to_json()
    damage(document)
    with pytest.raises(errors.CardError) as caught:
        Envelope.from_json(document)
    assert field in str(caught.value)


@pytest.mark.parametrize("document", [None, [], "envelope", 3])
def test_envelope_must_be_an_object(document: Any) -> None:
    with pytest.raises(errors.CardError):
        Envelope.from_json(document)
