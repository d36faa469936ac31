"""Leases on blobs: how writers and garbage collection, on any number of machines, keep out of each other's way.

A blob store shared by several machines (an S3 bucket, or one folder behind a team catalogue) has one hazard that
content addressing alone does not remove: ``gc`` deletes a blob no version references while a writer that is about to
reference it has just found it already stored. The catalogue, which every party shares, arbitrates:

- a writer takes a ``write`` lease on the SHA-256 once it knows it, *before* it stores the blob or trusts that the
  store already holds it, and gives the lease up in the transaction that records the version;
- ``gc`` deletes a blob only under a ``collect`` lease, taken in one write transaction that first checks that no
  active version references the blob and that no live write lease holds it;
- a writer that finds a collect lease waits until it is gone (a deletion is one request), then stores the blob
  again if it went.

Write transactions run one at a time (:func:`~lorahub.registry.db.write_transaction`), so the two checks cannot
interleave. A lease whose holder died (``kill -9``) blocks nothing once it expires: a write lease after
:data:`WRITE_TTL`, so at worst a killed writer's blob waits a day longer for ``gc``; a collect lease after
:data:`COLLECT_TTL`.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Collection
from datetime import timedelta
from typing import Final

from sqlalchemy import Engine, delete, exists, insert
from sqlmodel import Session, col, select

from lorahub import errors
from lorahub.registry.db import read_transaction, write_transaction
from lorahub.registry.models import BlobLease, Version, utc_now

WRITE_TTL: Final = timedelta(hours=24)
"""How long a write lease protects its blob: far longer than any add between storing a blob and recording it."""
COLLECT_TTL: Final = timedelta(minutes=1)
"""How long a collect lease keeps writers waiting when the ``gc`` that took it died before giving it up."""
POLL_S: Final = 0.05


def holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class BlobLeases:
    """The leases of one catalogue; see the module docstring."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def take(self, sha256: str) -> int:
        """A write lease on ``sha256``, taken once no collection of it is in progress; returns its id."""
        while True:
            with write_transaction(self.engine) as session:
                if not _collecting(session, sha256):
                    return _insert(session, sha256, "write", WRITE_TTL)
            time.sleep(POLL_S)

    def release(self, ids: Collection[int]) -> None:
        """Give leases up (those already gone are ignored): a writer that recorded nothing, a finished ``gc``."""
        if ids:
            with write_transaction(self.engine) as session:
                session.execute(delete(BlobLease).where(col(BlobLease.id).in_(ids)))

    def claim_for_collection(self, sha256: str) -> int | None:
        """A collect lease on ``sha256``, or None when an active version references it or a live lease holds it (a
        writer's, or another ``gc``'s): then this ``gc`` must leave it."""
        with write_transaction(self.engine) as session:
            referenced = exists().where(col(Version.blob_sha256) == sha256, col(Version.removed_at).is_(None))
            if session.exec(select(referenced)).one() or _held(session, sha256) or _collecting(session, sha256):
                return None
            return _insert(session, sha256, "collect", COLLECT_TTL)

    def prune(self) -> int:
        """Delete expired leases (their holders died); returns how many."""
        with write_transaction(self.engine) as session:
            result = session.execute(delete(BlobLease).where(col(BlobLease.expires_at) <= utc_now()))
            return int(getattr(result, "rowcount", 0) or 0)

    def live(self) -> list[tuple[str, str]]:
        """(sha256, purpose) of every lease not yet expired, for diagnostics and tests."""
        with read_transaction(self.engine) as session:
            statement = select(BlobLease.sha256, BlobLease.purpose).where(col(BlobLease.expires_at) > utc_now())
            return [(sha256, purpose) for sha256, purpose in session.exec(statement)]


def release_recorded(session: Session, ids: Collection[int]) -> None:
    """Give up the write leases of blobs that versions now reference, in the transaction recording them.

    A lease that is gone expired and may have let ``gc`` delete the blob, so the versions are not recorded.
    """
    if not ids:
        return
    live = select(BlobLease.id).where(
        col(BlobLease.id).in_(ids), BlobLease.purpose == "write", col(BlobLease.expires_at) > utc_now()
    )
    found = set(session.exec(live))
    if len(found) != len(set(ids)):
        raise errors.BlobLeaseLostError(
            f"a write lease on a stored blob expired before its version was recorded (after {WRITE_TTL})",
            hint="Nothing was recorded; add the file again.",
        )
    session.execute(delete(BlobLease).where(col(BlobLease.id).in_(ids)))


def _insert(session: Session, sha256: str, purpose: str, ttl: timedelta) -> int:
    """One Core statement: a batch add takes a lease per file, and an ORM object would cost more than the row."""
    now = utc_now()
    values = {"sha256": sha256, "purpose": purpose, "holder": holder(), "taken_at": now, "expires_at": now + ttl}
    return int(session.execute(insert(BlobLease).values(values).returning(col(BlobLease.id))).scalar_one())


def _live(session: Session, sha256: str, purpose: str) -> bool:
    statement = select(BlobLease.id).where(
        BlobLease.sha256 == sha256, BlobLease.purpose == purpose, col(BlobLease.expires_at) > utc_now()
    )
    return session.exec(statement).first() is not None


def _collecting(session: Session, sha256: str) -> bool:
    return _live(session, sha256, "collect")


def _held(session: Session, sha256: str) -> bool:
    return _live(session, sha256, "write")
