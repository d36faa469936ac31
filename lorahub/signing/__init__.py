"""Signing: identities (ECDSA P-256 keys), the card, DSSE envelopes, trust, and carrying a signed card with its file.

An adapter's card is canonicalised with RFC 8785, wrapped in a DSSE envelope and signed by its creator (and
optionally co-signed by a curator); :func:`verify_card` says which signatures are valid and which of those this
home trusts. No torch, no CLI: everything here works on bytes, dataclasses and files.
"""

from __future__ import annotations

from lorahub.signing.card import (
    COMMERCIAL_USES,
    CONSENT_STATUSES,
    RELATIONS,
    SCHEMA,
    BaseModel,
    Card,
    Consent,
    Creator,
    License,
    Parent,
    canonical_bytes,
)
from lorahub.signing.dsse import (
    Envelope,
    EnvelopeSignature,
    SignatureCheck,
    add_signature,
    pae,
    sign_envelope,
    verify_envelope,
)
from lorahub.signing.embed import (
    embed_card,
    read_embedded,
    read_sidecar,
    sidecar_path,
    write_sidecar,
)
from lorahub.signing.keys import (
    Identity,
    KeyStore,
    Signer,
    fingerprint_of,
    parse_user_id,
    public_key_from_pem,
    verify_signature,
)
from lorahub.signing.signed import (
    CARD_PAYLOAD_TYPE,
    CardVerification,
    SignedCard,
    SignerCheck,
    cosign,
    sign_card,
    unsigned,
    verify_card,
)
from lorahub.signing.trust import KeyRecord, StaticTrust, TrustLookup, TrustState

__all__ = [
    "CARD_PAYLOAD_TYPE",
    "COMMERCIAL_USES",
    "CONSENT_STATUSES",
    "RELATIONS",
    "SCHEMA",
    "BaseModel",
    "Card",
    "CardVerification",
    "Consent",
    "Creator",
    "Envelope",
    "EnvelopeSignature",
    "Identity",
    "KeyRecord",
    "KeyStore",
    "License",
    "Parent",
    "SignatureCheck",
    "SignedCard",
    "Signer",
    "SignerCheck",
    "StaticTrust",
    "TrustLookup",
    "TrustState",
    "add_signature",
    "canonical_bytes",
    "cosign",
    "embed_card",
    "fingerprint_of",
    "pae",
    "parse_user_id",
    "public_key_from_pem",
    "read_embedded",
    "read_sidecar",
    "sidecar_path",
    "sign_card",
    "sign_envelope",
    "unsigned",
    "verify_card",
    "verify_envelope",
    "verify_signature",
    "write_sidecar",
]
