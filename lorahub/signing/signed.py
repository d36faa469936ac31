"""A card together with its DSSE envelope, and what its signatures are worth to this home.

The envelope's payload must be exactly the canonical (RFC 8785) bytes of the card it parses to. Signatures cover
bytes, not meaning; accepting a non-canonical payload would let two different byte strings, with different
signatures and digests, stand for one card, and a reader that re-serialised it would no longer match the
signature.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from lorahub import errors
from lorahub.signing.card import Card, canonical_bytes
from lorahub.signing.dsse import Envelope, SignatureCheck, add_signature, sign_envelope, verify_envelope
from lorahub.signing.keys import Signer
from lorahub.signing.trust import KeyRecord, TrustLookup, TrustState

CARD_PAYLOAD_TYPE = "application/vnd.lorahub.card.v1+json"


@dataclass(frozen=True)
class SignedCard:
    """A card and the envelope that carries it; construction checks that the two agree byte for byte."""

    card: Card
    envelope: Envelope

    def __post_init__(self) -> None:
        if self.envelope.payload_type != CARD_PAYLOAD_TYPE:
            raise errors.CardError(
                f"the envelope carries {self.envelope.payload_type!r}, not a lorahub card ({CARD_PAYLOAD_TYPE})"
            )
        if self.envelope.payload != canonical_bytes(self.card):
            raise errors.CardError("the envelope's payload is not the canonical form of the card")

    @property
    def payload(self) -> bytes:
        return self.envelope.payload

    @classmethod
    def from_envelope(cls, envelope: Envelope) -> SignedCard:
        """Parse the payload strictly and insist that it is already canonical."""
        if envelope.payload_type != CARD_PAYLOAD_TYPE:
            raise errors.CardError(f"the envelope carries {envelope.payload_type!r}, not a lorahub card")
        card = Card.from_dict(parse_payload(envelope.payload))
        if canonical_bytes(card) != envelope.payload:
            raise errors.CardError(
                "the card is not in canonical form (RFC 8785): it was re-serialised after signing",
                hint="Take the card from the signed envelope as is; do not pretty-print or re-encode it.",
            )
        return cls(card, envelope)


def parse_payload(payload: bytes) -> Any:
    """JSON from payload bytes: UTF-8 and no duplicate key (readers disagree on which one wins). Floats and NaN
    parse, so that :meth:`Card.from_dict` can name the field that holds them."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise errors.CardError("the card payload is not UTF-8") from None
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise errors.CardError(f"the card payload is not JSON ({exc.msg} at {exc.pos})") from None
    except RecursionError:
        raise errors.CardError("the card payload is nested too deeply") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise errors.CardError(f"the card payload names {key[:40]!r} twice")
        result[key] = value
    return result


def unsigned(card: Card) -> SignedCard:
    """A card with no signature yet (``add --no-sign``): it travels and is stored like a signed one, verifies as
    "no valid signature", and can be signed later with :func:`cosign`."""
    return SignedCard(card, Envelope(canonical_bytes(card), CARD_PAYLOAD_TYPE, ()))


def sign_card(card: Card, signer: Signer) -> SignedCard:
    """Validate, canonicalise and sign a card: the first signature (usually the creator's)."""
    return SignedCard(card, sign_envelope(canonical_bytes(card), CARD_PAYLOAD_TYPE, signer))


def cosign(signed: SignedCard, signer: Signer) -> SignedCard:
    """Add another signature (a curator vouching for the same card) over the very same bytes."""
    return SignedCard(signed.card, add_signature(signed.envelope, signer))


# --- verification ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignerCheck:
    """One signature as this home sees it. ``name`` is the name the trust store knows the signing key by."""

    keyid: str
    valid: bool
    reason: str
    name: str | None
    trust: TrustState

    @property
    def counts(self) -> bool:
        """A valid signature by a key this home trusts (own or trusted, not revoked)."""
        return self.valid and self.trust in ("own", "trusted")


@dataclass(frozen=True)
class CardVerification:
    card: Card
    signatures: tuple[SignerCheck, ...]

    @property
    def any_valid(self) -> bool:
        """Some signature is cryptographically valid, whoever made it."""
        return any(s.valid for s in self.signatures)

    @property
    def trusted_signers(self) -> tuple[str, ...]:
        """Fingerprints of the signers that count: valid signature, own or trusted key, not revoked."""
        return tuple(s.keyid for s in self.signatures if s.counts)

    @property
    def trusted(self) -> bool:
        return bool(self.trusted_signers)

    @property
    def creator_signed(self) -> bool:
        """The key the card names as its creator made one of the valid signatures."""
        creator = self.card.creator
        return creator is not None and any(s.valid and s.keyid == creator.fingerprint for s in self.signatures)


def verify_card(signed: SignedCard, trust: TrustLookup) -> CardVerification:
    """Check every signature against the keys the trust store knows, and say what each is worth."""
    records = {s.keyid: trust.lookup(s.keyid) for s in signed.envelope.signatures}
    keys = {keyid: record.public_pem for keyid, record in records.items() if record is not None}
    checks = verify_envelope(signed.envelope, keys)
    return CardVerification(signed.card, tuple(_judge(check, trust) for check in checks))


def _judge(check: SignatureCheck, trust: TrustLookup) -> SignerCheck:
    record: KeyRecord | None = trust.lookup(check.keyid)
    state: TrustState = record.state if record is not None else "unknown"
    name = record.name if record is not None else None
    return SignerCheck(check.keyid, check.valid, check.reason, name, state)
