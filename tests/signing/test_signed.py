"""Signed cards: canonical payloads only, co-signing, and the trust state of every signature."""

from __future__ import annotations

import dataclasses
import json

import pytest

from lorahub import errors
from lorahub.signing import (
    CARD_PAYLOAD_TYPE,
    Card,
    Identity,
    KeyRecord,
    SignedCard,
    Signer,
    StaticTrust,
    canonical_bytes,
    cosign,
    sign_card,
    unsigned,
    verify_card,
)
from lorahub.signing.dsse import sign_envelope
from tests.signing.helpers import DIGEST_B, full_card

REVOKED_AT = "2025-06-01T00:00:00Z"


def _record(identity: Identity, *, own: bool = False, trusted: bool = False, revoked: bool = False) -> KeyRecord:
    return KeyRecord(
        identity.fingerprint, identity.user_id, identity.public_pem, own, trusted, REVOKED_AT if revoked else None
    )


def test_sign_card_and_read_it_back(alice_signer: Signer, alice: Identity) -> None:
    card = full_card(alice)
    signed = sign_card(card, alice_signer)
    assert signed.envelope.payload_type == CARD_PAYLOAD_TYPE == "application/vnd.lorahub.card.v1+json"
    assert signed.payload == canonical_bytes(card)
    assert SignedCard.from_envelope(signed.envelope) == signed


@pytest.mark.parametrize(
    "serialise",
    [
        lambda d: json.dumps(d, indent=2).encode(),
        lambda d: json.dumps(d, separators=(",", ":")).encode(),  # compact, but not sorted and \u-escaped
        lambda d: json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() + b"\n",
    ],
)
def test_non_canonical_payload_is_refused(alice_signer: Signer, alice: Identity, serialise: object) -> None:
    card = full_card(alice)
    payload = serialise(card.to_dict())  # type: ignore[operator]
    assert json.loads(payload) == card.to_dict()  # same meaning, different bytes
    envelope = sign_envelope(payload, CARD_PAYLOAD_TYPE, alice_signer)
    with pytest.raises(errors.CardError, match="canonical"):
        SignedCard.from_envelope(envelope)


def test_payload_problems_are_card_errors(alice_signer: Signer, alice: Identity) -> None:
    canonical = canonical_bytes(full_card(alice))
    cases = {
        b"\xff\xfe": "UTF-8",
        b"{not json": "not JSON",
        b'{"name":"a","name":"b"}': "twice",
        canonical.replace(b'"version":2', b'"version":2.5'): "card field version",
        canonical.replace(b'"weight":"0.7"', b'"weight":0.7'): r"card field lineage\[0\]\.parameters\.weight",
    }
    for payload, message in cases.items():
        with pytest.raises(errors.CardError, match=message):
            SignedCard.from_envelope(sign_envelope(payload, CARD_PAYLOAD_TYPE, alice_signer))


def test_other_payload_types_are_refused(alice_signer: Signer, alice: Identity) -> None:
    envelope = sign_envelope(canonical_bytes(full_card(alice)), "application/vnd.in-toto+json", alice_signer)
    with pytest.raises(errors.CardError, match="not a lorahub card"):
        SignedCard.from_envelope(envelope)


def test_card_and_envelope_must_agree(alice_signer: Signer, alice: Identity) -> None:
    signed = sign_card(full_card(alice), alice_signer)
    other = dataclasses.replace(full_card(alice), version=3)
    with pytest.raises(errors.CardError, match="canonical form of the card"):
        SignedCard(other, signed.envelope)


# --- verification ----------------------------------------------------------------------------------------------


def test_trust_states(alice_signer: Signer, bob_signer: Signer, alice: Identity, bob: Identity) -> None:
    signed = cosign(sign_card(full_card(alice), alice_signer), bob_signer)
    cases = {
        "own": StaticTrust([_record(alice, own=True, trusted=True), _record(bob, own=True)]),
        "trusted": StaticTrust([_record(alice, trusted=True), _record(bob, trusted=True)]),
        "revoked": StaticTrust([_record(alice, own=True, revoked=True), _record(bob, trusted=True, revoked=True)]),
    }
    for state, trust in cases.items():
        result = verify_card(signed, trust)
        assert [(s.keyid, s.valid, s.trust) for s in result.signatures] == [
            (alice.fingerprint, True, state),
            (bob.fingerprint, True, state),
        ], state
        assert [s.name for s in result.signatures] == [alice.user_id, bob.user_id]
        assert result.any_valid
        assert result.trusted is (state != "revoked")
        expected = () if state == "revoked" else (alice.fingerprint, bob.fingerprint)
        assert result.trusted_signers == expected


def test_unknown_signers(alice_signer: Signer, alice: Identity) -> None:
    signed = sign_card(full_card(alice), alice_signer)
    nobody = verify_card(signed, StaticTrust())
    [check] = nobody.signatures
    assert (check.valid, check.trust, check.name) == (False, "unknown", None)
    assert "unknown key" in check.reason
    assert not nobody.any_valid and not nobody.trusted
    seen_not_trusted = verify_card(signed, StaticTrust([_record(alice)]))
    [check] = seen_not_trusted.signatures
    assert (check.valid, check.trust, check.name) == (True, "unknown", alice.user_id)
    assert seen_not_trusted.any_valid and seen_not_trusted.trusted_signers == ()


def test_curator_vouches_for_a_stranger(
    alice_signer: Signer, bob_signer: Signer, alice: Identity, bob: Identity
) -> None:
    signed = cosign(sign_card(full_card(alice), alice_signer), bob_signer)
    assert signed.payload == sign_card(full_card(alice), alice_signer).payload
    result = verify_card(signed, StaticTrust([_record(alice), _record(bob, trusted=True)]))
    assert result.trusted_signers == (bob.fingerprint,)
    assert result.creator_signed
    bob_only = verify_card(cosign(signed, bob_signer), StaticTrust([_record(bob, trusted=True)]))
    assert len(bob_only.signatures) == 2
    assert not bob_only.creator_signed  # Alice's key is unknown here, so her signature cannot be checked


def test_revoked_key_taints_only_its_own_signature(
    alice_signer: Signer, bob_signer: Signer, alice: Identity, bob: Identity
) -> None:
    signed = cosign(sign_card(full_card(alice), alice_signer), bob_signer)
    result = verify_card(signed, StaticTrust([_record(alice, own=True, revoked=True), _record(bob, trusted=True)]))
    assert [s.trust for s in result.signatures] == ["revoked", "trusted"]
    assert result.trusted_signers == (bob.fingerprint,)


def test_swapped_card_does_not_verify(alice_signer: Signer, alice: Identity) -> None:
    signed = sign_card(full_card(alice), alice_signer)
    forged_card = dataclasses.replace(full_card(alice), content_digest=DIGEST_B)
    forged_envelope = dataclasses.replace(signed.envelope, payload=canonical_bytes(forged_card))
    forged = SignedCard(forged_card, forged_envelope)
    result = verify_card(forged, StaticTrust([_record(alice, own=True)]))
    assert not result.any_valid and not result.trusted
    assert result.signatures[0].trust == "own"  # the key is ours; the signature just is not over these bytes


def test_unsigned_card(alice_signer: Signer, alice: Identity) -> None:
    bare = unsigned(full_card(alice))
    assert bare.envelope.signatures == () and bare.payload == canonical_bytes(full_card(alice))
    assert SignedCard.from_envelope(bare.envelope) == bare
    result = verify_card(bare, StaticTrust([_record(alice, own=True)]))
    assert result.signatures == () and not result.any_valid and not result.trusted and not result.creator_signed
    later = cosign(bare, alice_signer)
    assert verify_card(later, StaticTrust([_record(alice, own=True)])).creator_signed


def test_card_without_a_creator(alice_signer: Signer, alice: Identity) -> None:
    imported = dataclasses.replace(full_card(alice), creator=None)
    assert imported.to_dict()["creator"] is None
    signed = sign_card(imported, alice_signer)  # a curator signs a file whose author has no lorahub key
    result = verify_card(signed, StaticTrust([_record(alice, trusted=True)]))
    assert result.trusted and not result.creator_signed


def test_static_trust_checks_fingerprints(alice: Identity, bob: Identity) -> None:
    with pytest.raises(errors.KeyFileError):
        StaticTrust([KeyRecord(alice.fingerprint, "liar", bob.public_pem, own=False, trusted=True)])
    trust = StaticTrust([KeyRecord.from_identity(alice)])
    assert trust.lookup(alice.fingerprint.upper()) == KeyRecord.from_identity(alice)
    assert trust.lookup(bob.fingerprint) is None
    assert KeyRecord.from_identity(alice).state == "own"


def test_card_equality_survives_signing(alice_signer: Signer, alice: Identity) -> None:
    card = full_card(alice)
    assert SignedCard.from_envelope(sign_card(card, alice_signer).envelope).card == card
    assert isinstance(card, Card)
