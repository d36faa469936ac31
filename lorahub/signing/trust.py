"""Whose signatures count: the trust state of a key, as the registry (or a test) knows it.

Revocation is total. lorahub has no trusted timestamp, so a signature cannot prove it was made before its key
was revoked; signatures by a revoked key are therefore never trusted, whenever they were made. The audit log still
shows that they were valid when they were added.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

from lorahub import errors
from lorahub.signing.keys import Identity, public_key_from_pem

TrustState = Literal["own", "trusted", "revoked", "unknown"]


@dataclass(frozen=True)
class KeyRecord:
    """A public key and what this home thinks of it. ``own`` keys are this home's identities; ``revoked_at`` is
    ISO-8601 UTC or None."""

    fingerprint: str
    name: str
    public_pem: str
    own: bool
    trusted: bool
    revoked_at: str | None = None

    @property
    def state(self) -> TrustState:
        """Revocation wins over everything, then own, then trusted; a known but untrusted key is ``unknown``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.own:
            return "own"
        return "trusted" if self.trusted else "unknown"

    @classmethod
    def from_identity(cls, identity: Identity) -> KeyRecord:
        """The record of one of this home's own identities."""
        return cls(identity.fingerprint, identity.user_id, identity.public_pem, own=True, trusted=True)


class TrustLookup(Protocol):
    """Anything that can say what it knows about a key, by full fingerprint (the catalog, a StaticTrust)."""

    def lookup(self, fingerprint: str) -> KeyRecord | None: ...


class StaticTrust:
    """An in-memory trust store, for tests and for verifying with keys given on the command line."""

    def __init__(self, records: Iterable[KeyRecord] = ()) -> None:
        self._records: dict[str, KeyRecord] = {}
        for record in records:
            _, fingerprint = public_key_from_pem(record.public_pem)
            if fingerprint != record.fingerprint:
                raise errors.KeyFileError(
                    f"the record for {record.name} names fingerprint {record.fingerprint[:16]}"
                    f" but its key has {fingerprint[:16]}"
                )
            self._records[fingerprint] = record

    def lookup(self, fingerprint: str) -> KeyRecord | None:
        return self._records.get(fingerprint.lower())
