"""DSSE v1 envelopes (secure-systems-lab/dsse ``protocol.md``), the wrapper around every signed card.

DSSE signs the exact payload bytes together with their type, through the Pre-Authentication Encoding (PAE), so a
verifier never has to parse or re-serialise the payload before checking it, and a signature over one kind of
document cannot be replayed as another. The ``keyid`` of a signature is an unauthenticated hint: a check reports
the key that actually verifies the signature, never the one the envelope claims.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from lorahub import errors
from lorahub.signing.keys import Signer, public_key_from_pem

STANDARD_B64 = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")
URLSAFE_B64 = re.compile(r"^[A-Za-z0-9_-]*={0,2}$")


def pae(payload_type: str, payload: bytes) -> bytes:
    """``DSSEv1 SP LEN(type) SP type SP LEN(body) SP body``, lengths as ASCII decimal byte counts."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


@dataclass(frozen=True)
class EnvelopeSignature:
    """One signature: ``keyid`` (a hint, may be empty) and the raw DER signature bytes."""

    keyid: str
    sig: bytes

    def to_json(self) -> dict[str, str]:
        out = {"keyid": self.keyid} if self.keyid else {}
        out["sig"] = b64encode(self.sig)
        return out

    @classmethod
    def from_json(cls, data: Any, where: str = "signature") -> EnvelopeSignature:
        if not isinstance(data, dict):
            raise errors.CardError(f"{where} is not an object")
        _no_unknown(data, {"keyid", "sig"}, where)
        keyid = data.get("keyid", "")
        if not isinstance(keyid, str):
            raise errors.CardError(f"{where}.keyid is not a string")
        return cls(keyid=keyid, sig=b64decode(_string(data, "sig", where), f"{where}.sig"))


@dataclass(frozen=True)
class Envelope:
    """A DSSE envelope: the payload bytes exactly as signed, their media type and their signatures (none for an
    unsigned card)."""

    payload: bytes
    payload_type: str
    signatures: tuple[EnvelopeSignature, ...]

    def to_json(self) -> dict[str, Any]:
        """The standard JSON form (standard base64 with padding)."""
        return {
            "payload": b64encode(self.payload),
            "payloadType": self.payload_type,
            "signatures": [s.to_json() for s in self.signatures],
        }

    @classmethod
    def from_json(cls, data: Any) -> Envelope:
        """Read the JSON form strictly: unknown fields, missing fields and bad base64 are CardErrors."""
        where = "envelope"
        if not isinstance(data, dict):
            raise errors.CardError(f"{where} is not a JSON object")
        _no_unknown(data, {"payload", "payloadType", "signatures"}, where)
        payload = b64decode(_string(data, "payload", where), f"{where}.payload")
        payload_type = _string(data, "payloadType", where)
        signatures = parse_signatures(data.get("signatures"), f"{where}.signatures")
        return cls(payload=payload, payload_type=payload_type, signatures=signatures)


def parse_signatures(data: Any, where: str) -> tuple[EnvelopeSignature, ...]:
    """The ``signatures`` list of an envelope (also stored on its own in a file header).

    An empty list is accepted: it is how an unsigned card travels, and stripping signatures gains an attacker
    nothing, since a card without a valid signature is never trusted.
    """
    if not isinstance(data, list):
        raise errors.CardError(f"{where} must be a list")
    return tuple(EnvelopeSignature.from_json(s, f"{where}[{i}]") for i, s in enumerate(data))


@dataclass(frozen=True)
class SignatureCheck:
    """The verdict on one signature. ``keyid`` is the key that verified it (when valid), else the claimed one."""

    keyid: str
    valid: bool
    reason: str


def sign_envelope(payload: bytes, payload_type: str, signer: Signer) -> Envelope:
    return Envelope(payload, payload_type, (_signature(payload, payload_type, signer),))


def add_signature(envelope: Envelope, signer: Signer) -> Envelope:
    """Sign the same bytes with a second key (a curator after the trainer).

    A key signs an envelope at most once: signing again replaces that key's earlier signature, so the list of
    signatures stays a list of distinct signers.
    """
    new = _signature(envelope.payload, envelope.payload_type, signer)
    kept = tuple(s for s in envelope.signatures if s.keyid != signer.keyid)
    return Envelope(envelope.payload, envelope.payload_type, (*kept, new))


def verify_envelope(envelope: Envelope, keys: Mapping[str, str]) -> list[SignatureCheck]:
    """Check every signature against the known public keys (``keys``: fingerprint → PEM).

    The key the keyid names is tried first, then the others: the keyid only saves time. A signature is valid when
    some known key verifies it over PAE(payloadType, payload), and the check then names that key's own
    fingerprint, computed from its PEM.
    """
    loaded, broken = _load_keys(keys)
    message = pae(envelope.payload_type, envelope.payload)
    return [_check(signature, message, loaded, broken) for signature in envelope.signatures]


def _signature(payload: bytes, payload_type: str, signer: Signer) -> EnvelopeSignature:
    return EnvelopeSignature(keyid=signer.keyid, sig=signer.sign(pae(payload_type, payload)))


def _load_keys(keys: Mapping[str, str]) -> tuple[dict[str, tuple[str, ec.EllipticCurvePublicKey]], dict[str, str]]:
    """Parse each PEM once: (hint → (real fingerprint, key)), and (hint → why the PEM is unusable)."""
    loaded: dict[str, tuple[str, ec.EllipticCurvePublicKey]] = {}
    broken: dict[str, str] = {}
    for hint, pem in keys.items():
        try:
            key, fingerprint = public_key_from_pem(pem)
        except errors.KeyFileError as exc:
            broken[hint] = exc.message
            continue
        loaded[hint] = (fingerprint, key)
    return loaded, broken


def _check(
    signature: EnvelopeSignature,
    message: bytes,
    loaded: Mapping[str, tuple[str, ec.EllipticCurvePublicKey]],
    broken: Mapping[str, str],
) -> SignatureCheck:
    claimed = signature.keyid
    order = sorted(loaded, key=lambda hint: hint != claimed)  # the hinted key first, the rest after
    for hint in order:
        fingerprint, key = loaded[hint]
        if _verifies(key, signature.sig, message):
            return SignatureCheck(fingerprint, True, f"valid signature by key {fingerprint[:16]}")
    label = claimed[:16] or "(no keyid)"
    if claimed in loaded:
        reason = (
            f"the signature does not verify under key {label}: the payload or payloadType changed, "
            "or the signature was made over other bytes"
        )
    elif claimed in broken:
        reason = f"the public key for {label} is unusable: {broken[claimed]}"
    else:
        reason = f"unknown key {label}: no known public key verifies this signature"
    return SignatureCheck(claimed, False, reason)


def _verifies(key: ec.EllipticCurvePublicKey, sig: bytes, message: bytes) -> bool:
    try:
        key.verify(sig, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


# --- base64 ----------------------------------------------------------------------------------------------------


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str, where: str) -> bytes:
    """Decode standard or URL-safe base64 (DSSE asks verifiers to accept both), padding optional."""
    if STANDARD_B64.fullmatch(text):
        altchars = None
    elif URLSAFE_B64.fullmatch(text):
        altchars = b"-_"
    else:
        raise errors.CardError(f"{where} is not base64")
    body = text.rstrip("=")
    try:
        return base64.b64decode(body + "=" * (-len(body) % 4), altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        raise errors.CardError(f"{where} is not base64 (wrong length or padding)") from None


def _string(data: Mapping[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise errors.CardError(f"{where}.{key} is {'missing' if value is None else 'not a string'}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise errors.CardError(f"{where}.{key} is not valid Unicode") from None
    return value


def _no_unknown(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise errors.CardError(f"{where}.{unknown[0]} is not a known field")
