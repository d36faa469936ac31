"""The catalog: adapters, their immutable versions, signatures, keys and the audit log, over one engine.

Every operation is one short transaction. Operations that change anything run in
:func:`~lorahub.registry.db.write_transaction` (writers take turns) and append exactly one audit event in that same
transaction, so the catalog and its log never disagree. Callers get frozen read types (:class:`AdapterVersion`,
:class:`KeyRow`, …), never ORM rows: no API updates a version except :meth:`Catalog.remove`, which sets
``removed_at``.

The blob itself is written to the blob store before ``add_version`` (docs/concepts/architecture.md, "How data
flows"), under a write lease (:mod:`lorahub.registry.leases`) that the same transaction gives up; a crash between the
two leaves an unreferenced blob, which garbage collection removes once the lease expires, never a version without its
bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

from sqlalchemy import ColumnElement, Engine, exists, func, insert, literal, or_, text
from sqlalchemy import column as sql_column
from sqlalchemy import table as sql_table
from sqlmodel import Session, col, select

from lorahub import errors
from lorahub.registry import audit as audit_log
from lorahub.registry import roles as team_roles
from lorahub.registry import search as search_terms
from lorahub.registry.audit import AuditActor
from lorahub.registry.blobs import BlobInfo
from lorahub.registry.db import connect, is_sqlite, migrate, read_transaction, write_transaction
from lorahub.registry.leases import BlobLeases, release_recorded
from lorahub.registry.locations import Locations, NewLocation, int64
from lorahub.registry.locations import insert_many as insert_locations
from lorahub.registry.models import (
    Adapter,
    AuditEvent,
    Blob,
    FileCache,
    Key,
    SearchText,
    Signature,
    TeamRole,
    Version,
    utc_now,
)
from lorahub.registry.roles import Role

COMMERCIAL_USES: Final = frozenset({"image", "rent", "rentcivit", "sell"})
"""``commercial_use`` values (Civitai's CommercialUse, lowercased) that permit some commercial use."""

HYDRATE_BATCH: Final = 500
"""Ids per ``IN (…)`` when reading versions; SQLite allows 32,766 bound parameters, psycopg 65,535."""

SearchMethod = Literal["auto", "fts", "scan"]
_IN_CHUNK: Final = 500
"""Parameters per ``IN (…)`` list: far below SQLite's and PostgreSQL's limits."""
_FTS = sql_table("search_fts", sql_column("rowid"))
NO_PARENTS: Final = '"lineage":[]'
"""How a card without parents says so in its canonical JSON (RFC 8785 writes no spaces)."""


@dataclass(frozen=True)
class NewVersion:
    """Everything ``add_version`` records. ``number=None`` takes the next free number."""

    name: str
    content_digest: str
    blob: BlobInfo
    file_name: str
    format: str
    family: str
    license_id: str
    number: int | None = None
    commercial_use: Sequence[str] = ()
    consent_status: str = ""
    description: str = ""
    trigger_words: Sequence[str] = ()
    tags: Sequence[str] = ()
    card_json: str = ""
    signatures: Sequence[tuple[str, str]] = ()
    """(keyid, base64 signature) pairs over the card."""
    action: str = "add"
    """The audit action: ``add``, or how a derived version came to be (``convert``, ``resize``, ``merge``,
    ``train``)."""
    details: Mapping[str, Any] = field(default_factory=dict)
    """Extra audit details for derived versions (parents, method, weights…)."""
    location: NewLocation | None = None
    """Where the file lies when it is catalogued in place (recorded in the same transaction)."""
    lease: int | None = None
    """The write lease the writer took on the stored blob; the transaction recording the version gives it up."""


@dataclass(frozen=True)
class SignatureInfo:
    keyid: str
    sig: str
    added_at: datetime


@dataclass(frozen=True)
class AdapterVersion:
    """One catalogued version as callers see it: decoded lists, the adapter's name, the blob's size."""

    id: int
    name: str
    number: int
    content_digest: str
    blob_sha256: str
    size: int
    file_name: str
    format: str
    family: str
    license_id: str
    commercial_use: tuple[str, ...]
    consent_status: str
    description: str
    trigger_words: tuple[str, ...]
    tags: tuple[str, ...]
    card_json: str
    signers: tuple[str, ...]
    signatures: tuple[SignatureInfo, ...]
    created_at: datetime
    removed_at: datetime | None

    @property
    def ref(self) -> str:
        """``name@number``, the form the CLI and ``lorahub.load`` accept."""
        return f"{self.name}@{self.number}"

    @property
    def removed(self) -> bool:
        return self.removed_at is not None


@dataclass(frozen=True)
class Filters:
    """Narrow a listing or a search. ``commercial=True`` keeps versions whose ``commercial_use`` allows image
    sales, renting or selling; ``False`` keeps the others. ``signer`` is a key fingerprint prefix."""

    name: str | None = None
    family: str | None = None
    format: str | None = None
    license_id: str | None = None
    commercial: bool | None = None
    signer: str | None = None
    consent_status: str | None = None
    include_removed: bool = False


@dataclass(frozen=True)
class KeyRow:
    """A known public key. It counts as trusted only while ``trusted`` and not revoked (see ``active``)."""

    fingerprint: str
    name: str
    public_pem: str
    own: bool = False
    trusted: bool = False
    added_at: datetime | None = None
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.trusted and self.revoked_at is None


@dataclass(frozen=True)
class RoleRow:
    """A key's role in a team: who granted it and when (for a revoked role, what it was)."""

    fingerprint: str
    role: Role
    name: str
    granted_by: str
    granted_at: datetime


@dataclass(frozen=True)
class CachedFile:
    path: str
    size: int
    mtime_ns: int
    inode: int
    sha256: str
    content_digest: str | None
    checked_at: datetime = field(compare=False)


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``"name@3"`` → ``("name", 3)``; ``"name"`` → ``("name", None)`` (the latest version)."""
    name, at, number = ref.rpartition("@")
    if not at:
        return ref, None
    if not number.isdigit():
        raise errors.AdapterNotFoundError(f"{ref!r}: the part after @ must be a version number")
    return name, int(number)


class Catalog:
    """The catalog over ``engine``; see the module docstring. ``Catalog.open(url)`` connects and migrates."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.locations = Locations(engine)
        self.leases = BlobLeases(engine)

    @classmethod
    def open(cls, url: str) -> Catalog:
        engine = connect(url)
        migrate(engine)
        return cls(engine)

    # --- versions ---------------------------------------------------------------------------------------------

    def add_version(self, new: NewVersion, *, audit: AuditActor, allow_duplicate: bool = False) -> AdapterVersion:
        """Record a new version (adapter, blob, version, signatures, search words, one ``add`` audit event).

        Raises ``VersionExistsError`` for a taken number and ``DuplicateContentError`` for a content digest that an
        active version already has, unless ``allow_duplicate``.
        """
        with write_transaction(self.engine) as session:
            ((version_id, _),) = _insert_versions(session, [new], audit, allow_duplicate)
            return _hydrate(session, [version_id])[0]

    def add_versions(
        self, news: Sequence[NewVersion], *, audit: AuditActor, allow_duplicate: bool = False
    ) -> list[tuple[str, int]]:
        """``add_version`` for many versions in one transaction (all or none): a library scan records hundreds of
        files a second, and a transaction per file would cost more than reading them. Returns (name, number)."""
        with write_transaction(self.engine) as session:
            inserted = _insert_versions(session, news, audit, allow_duplicate)
        return [(new.name, number) for new, (_, number) in zip(news, inserted, strict=True)]

    def get(self, name: str, number: int | None = None, *, include_removed: bool = False) -> AdapterVersion:
        """A version, or with ``number=None`` the newest one not removed. Raises ``AdapterNotFoundError``."""
        with read_transaction(self.engine) as session:
            version = _find_version(session, name, number, include_removed=include_removed)
            assert version.id is not None
            return _hydrate(session, [version.id])[0]

    def next_number(self, name: str) -> int:
        """The number ``add_version`` would give ``name`` now (1 for a new name). Cards carry their version number,
        so callers sign before adding; if another writer takes the number first, ``add_version`` raises
        ``VersionExistsError`` and the caller retries with a fresh number."""
        return self.next_numbers([name])[name]

    def next_numbers(self, names: Iterable[str]) -> dict[str, int]:
        """``next_number`` of each name, in one query per :data:`_IN_CHUNK` names."""
        wanted = sorted(set(names))
        numbers = dict.fromkeys(wanted, 1)
        with read_transaction(self.engine) as session:
            for start in range(0, len(wanted), _IN_CHUNK):
                statement = (
                    select(Adapter.name, func.max(Version.number))
                    .join(Version, col(Version.adapter_id) == col(Adapter.id))
                    .where(col(Adapter.name).in_(wanted[start : start + _IN_CHUNK]))
                    .group_by(col(Adapter.name))
                )
                numbers |= {name: (highest or 0) + 1 for name, highest in session.exec(statement)}
        return numbers

    def by_ids(self, ids: Sequence[int]) -> list[AdapterVersion]:
        """The versions with these ids (removed ones too), in that order; ids no version has are left out."""
        with read_transaction(self.engine) as session:
            return _hydrate(session, list(ids))

    def find_by_content(self, content_digest: str, *, include_removed: bool = False) -> AdapterVersion | None:
        """The version with this content digest (the same tensors): the oldest active one, else (with
        ``include_removed``) the newest removed one; None when there is none."""
        found = self.find_all(content_digest=content_digest, include_removed=include_removed)
        return _preferred(found)

    def find_by_sha256(self, sha256: str, *, include_removed: bool = False) -> AdapterVersion | None:
        """The version stored as exactly this file (full-file SHA-256), chosen as in ``find_by_content``."""
        return _preferred(self.find_all(sha256=sha256, include_removed=include_removed))

    def find_all(
        self, *, content_digest: str | None = None, sha256: str | None = None, include_removed: bool = False
    ) -> list[AdapterVersion]:
        """Every version with this content digest and/or file SHA-256, oldest first."""
        statement = select(Version.id).order_by(col(Version.id))
        if content_digest is not None:
            statement = statement.where(Version.content_digest == content_digest)
        if sha256 is not None:
            statement = statement.where(Version.blob_sha256 == sha256.lower())
        if not include_removed:
            statement = statement.where(col(Version.removed_at).is_(None))
        with read_transaction(self.engine) as session:
            return _hydrate(session, _ids(session.exec(statement).all()))

    def find_any(self, *, sha256s: Iterable[str] = (), contents: Iterable[str] = ()) -> list[AdapterVersion]:
        """Active versions whose file SHA-256 or content digest is any of the given ones, oldest first: one
        query per :data:`_IN_CHUNK` digests, for callers that look up a whole batch of files."""
        ids: set[int] = set()
        with read_transaction(self.engine) as session:
            for column, values in (
                (col(Version.blob_sha256), sorted(set(sha256s))),
                (col(Version.content_digest), sorted(set(contents))),
            ):
                for start in range(0, len(values), _IN_CHUNK):
                    statement = select(Version.id).where(
                        column.in_(values[start : start + _IN_CHUNK]), col(Version.removed_at).is_(None)
                    )
                    ids.update(_ids(session.exec(statement).all()))
            return _hydrate(session, sorted(ids))

    def version_pages(self, size: int = HYDRATE_BATCH) -> Iterator[list[AdapterVersion]]:
        """Every active version, ``size`` at a time by id, so a caller walking a large catalogue holds one page."""
        last = 0
        while True:
            statement = select(Version.id).where(col(Version.id) > last, col(Version.removed_at).is_(None))
            with read_transaction(self.engine) as session:
                ids = _ids(session.exec(statement.order_by(col(Version.id)).limit(size)).all())
                page = _hydrate(session, ids)
            if not page:
                return
            yield page
            last = ids[-1]

    def list_versions(self, filters: Filters | None = None) -> list[AdapterVersion]:
        """Versions matching ``filters``, by name then number."""
        statement = (
            select(Version.id)
            .join(Adapter, col(Adapter.id) == col(Version.adapter_id))
            .where(*_conditions(filters or Filters()))
        )
        with read_transaction(self.engine) as session:
            versions = _hydrate(session, _ids(session.exec(statement).all()))
        # Sorted here, not in SQL: PostgreSQL would order names by its locale, SQLite by code point.
        return sorted(versions, key=lambda version: (version.name, version.number))

    def search(
        self,
        text_query: str,
        filters: Filters | None = None,
        limit: int = 50,
        *,
        method: SearchMethod = "auto",
        offset: int = 0,
    ) -> list[AdapterVersion]:
        """Versions every word of ``text_query`` matches, best first (see :mod:`lorahub.registry.search`).

        ``method`` picks the engine: ``fts`` (the backend's full-text index: FTS5 on SQLite, GIN over tsvector on
        PostgreSQL; what ``auto`` uses) or ``scan`` (the portable word-table scan, any backend). ``offset`` skips
        that many results (a page further down): only ids are read for the skipped ones, never whole versions.
        """
        query = search_terms.query_words(text_query)
        conditions = _conditions(filters or Filters())
        wanted = limit + max(offset, 0)
        with read_transaction(self.engine) as session:
            if not query:
                ids = _newest(session, conditions, wanted)
            elif method == "scan":
                ids = _scan_search(session, query, conditions, wanted)
            elif is_sqlite(self.engine):
                ids = _fts_search(session, query, conditions, wanted)
            else:
                ids = _pg_search(session, query, conditions, wanted)
            return _hydrate(session, ids[max(offset, 0) :])

    def newest(
        self, filters: Filters | None = None, *, limit: int = 50, before: int | None = None, after: int | None = None
    ) -> list[AdapterVersion]:
        """Versions matching ``filters``, newest first, a keyset page at a time: those with an id below ``before``
        (the next page), or the ``limit`` just above ``after`` (the previous page). A page costs the same at any
        depth of a large catalogue, where an ``OFFSET`` reads every row it skips."""
        statement = (
            select(Version.id)
            .join(Adapter, col(Adapter.id) == col(Version.adapter_id))
            .where(*_conditions(filters or Filters()))
        )
        if after is not None:
            statement = statement.where(col(Version.id) > after).order_by(col(Version.id))
        else:
            if before is not None:
                statement = statement.where(col(Version.id) < before)
            statement = statement.order_by(col(Version.id).desc())
        with read_transaction(self.engine) as session:
            ids = _ids(session.exec(statement.limit(limit)).all())
            return _hydrate(session, sorted(ids, reverse=True))

    def derived_cards(self, after: int = 0) -> tuple[int, list[tuple[int, str]]]:
        """``(id, card_json)`` of the versions after id ``after`` whose cards name parents, by id, and the highest
        version id there is (where the next call starts): what an index of children is built from. Cards never
        change, so a caller that keeps the index reads only what is new."""
        with read_transaction(self.engine) as session:
            highest = max(session.exec(select(func.max(Version.id))).one() or 0, after)
            statement = (
                select(Version.id, Version.card_json)
                .where(col(Version.id) > after, col(Version.id) <= highest)
                .where(~col(Version.card_json).contains(NO_PARENTS, autoescape=True))
                .order_by(col(Version.id))
            )
            rows = [(version_id, card) for version_id, card in session.exec(statement) if version_id is not None]
        return highest, rows

    def remove(self, name: str, number: int | None = None, *, audit: AuditActor) -> AdapterVersion:
        """Hide a version (the newest active one when ``number`` is None); its blob stays until gc."""
        with write_transaction(self.engine) as session:
            version = _find_version(session, name, number, include_removed=False)
            version.removed_at = utc_now()
            session.add(version)
            _append(session, audit, "remove", version, name=name, details={"blob_sha256": version.blob_sha256})
            assert version.id is not None
            return _hydrate(session, [version.id])[0]

    def add_signature(self, version: AdapterVersion, keyid: str, sig: str, *, audit: AuditActor) -> bool:
        """Attach one more signature over a version's card; False (and no event) if ``keyid`` already signed it."""
        with write_transaction(self.engine) as session:
            row = session.get(Version, version.id)
            if row is None:
                raise errors.AdapterNotFoundError(f"{version.ref} is not in this catalog")
            taken = select(Signature.id).where(Signature.version_id == version.id, Signature.keyid == keyid)
            if session.exec(taken).first() is not None:
                return False
            session.add(Signature(version_id=version.id, keyid=keyid, sig=sig))
            _append(session, audit, "sign", row, name=version.name, details={"keyid": keyid})
            return True

    def blob_digests(self) -> set[str]:
        """The SHA-256 of every blob the catalogue has recorded, referenced or not."""
        with read_transaction(self.engine) as session:
            return set(session.exec(select(Blob.sha256)))

    def unreferenced_blobs(self) -> list[str]:
        """SHA-256 of catalogued blobs that no active version uses: what garbage collection may delete."""
        used = select(Version.id).where(Version.blob_sha256 == Blob.sha256, col(Version.removed_at).is_(None))
        statement = select(Blob.sha256).where(~exists(used)).order_by(col(Blob.sha256))
        with read_transaction(self.engine) as session:
            return list(session.exec(statement).all())

    # --- keys -------------------------------------------------------------------------------------------------

    def upsert_key(self, key: KeyRow) -> KeyRow:
        """Insert or update a key's name, PEM and flags (no audit event: creating an identity is not a trust
        change; use ``trust_key``/``revoke_key`` for those)."""
        with write_transaction(self.engine) as session:
            return _key_row(_store_key(session, key))

    def get_key(self, fingerprint: str) -> KeyRow | None:
        with read_transaction(self.engine) as session:
            row = session.get(Key, fingerprint)
            return _key_row(row) if row is not None else None

    def list_keys(self) -> list[KeyRow]:
        with read_transaction(self.engine) as session:
            return [_key_row(row) for row in session.exec(select(Key).order_by(col(Key.name), col(Key.fingerprint)))]

    def trust_key(
        self, fingerprint: str, name: str, public_pem: str, *, audit: AuditActor, own: bool | None = None
    ) -> KeyRow:
        """Trust a key (adding it if new, un-revoking it if revoked) and log ``trust``. ``own`` marks one of this
        home's identities; None keeps what the table says (False for a new key)."""
        with write_transaction(self.engine) as session:
            existing = session.get(Key, fingerprint)
            if own is None:
                own = existing.own if existing is not None else False
            row = _store_key(session, KeyRow(fingerprint, name, public_pem, own=own, trusted=True))
            _append_key_event(session, audit, "trust", row)
            return _key_row(row)

    def revoke_key(self, fingerprint: str, *, audit: AuditActor) -> KeyRow:
        """Stop trusting a key for good (``revoked_at`` set, ``trusted`` cleared) and log ``revoke``."""
        with write_transaction(self.engine) as session:
            row = session.get(Key, fingerprint)
            if row is None:
                raise errors.KeyNotFoundError(f"no key with fingerprint {fingerprint}")
            row.trusted, row.revoked_at = False, utc_now()
            session.add(row)
            _append_key_event(session, audit, "revoke", row)
            return _key_row(row)

    # --- team roles -------------------------------------------------------------------------------------------

    def team_roles(self) -> list[RoleRow]:
        """Every key's role in this catalogue's team, by role (admins first) then fingerprint; empty: no team."""
        with read_transaction(self.engine) as session:
            rows = session.exec(
                select(TeamRole, Key.name).join(Key, col(Key.fingerprint) == col(TeamRole.fingerprint), isouter=True)
            )
            found = [
                RoleRow(row.fingerprint, team_roles.parse_role(row.role), name or "", row.granted_by, row.granted_at)
                for row, name in rows
            ]
        return sorted(found, key=lambda r: (-team_roles.ROLES.index(r.role), r.fingerprint))

    def role_of(self, fingerprint: str) -> Role | None:
        with read_transaction(self.engine) as session:
            return team_roles.role_of(session, fingerprint)

    def team_active(self) -> bool:
        with read_transaction(self.engine) as session:
            return team_roles.team_active(session)

    def require(self, fingerprint: str, action: str) -> None:
        """Raise ``RoleRequiredError`` now, before any work, when ``fingerprint`` may not perform ``action`` here;
        every write transaction checks again, so this is for failing early, not the guarantee."""
        with read_transaction(self.engine) as session:
            team_roles.check_actor(session, fingerprint, [action])

    def grant_role(self, key: KeyRow, role: Role, *, audit: AuditActor) -> RoleRow:
        """Give ``key`` ``role`` (replacing the one it held), recording the key (trusted, unless revoked) so its
        signatures verify, and log a signed ``role-grant`` carrying the public key. In a catalogue without a team
        only the actor's own ``admin`` grant is accepted: that grant creates the team."""
        with write_transaction(self.engine) as session:
            if not team_roles.team_active(session) and (role != "admin" or key.fingerprint != audit.fingerprint):
                raise errors.TeamError(
                    "this catalogue has no team yet: its first grant makes the initialiser admin",
                    hint="Run `lorahub team init` first; it grants admin to your key.",
                )
            team_roles.check_actor(session, audit.fingerprint, [team_roles.GRANT_ACTION])
            row = session.get(Key, key.fingerprint)
            if row is None:
                row = _store_key(session, KeyRow(key.fingerprint, key.name, key.public_pem, trusted=True))
            elif row.revoked_at is None and not row.trusted:
                row.trusted = True
                session.add(row)
            member = session.get(TeamRole, key.fingerprint) or TeamRole(
                fingerprint=key.fingerprint, role=role, granted_by=audit.fingerprint
            )
            member.role, member.granted_by, member.granted_at = role, audit.fingerprint, utc_now()
            session.add(member)
            session.flush()
            details = {"fingerprint": key.fingerprint, "role": role, "name": row.name, "public_pem": row.public_pem}
            _event(session, audit, team_roles.GRANT_ACTION, (None, None, None), details)
            return RoleRow(key.fingerprint, role, row.name, audit.fingerprint, member.granted_at)

    def revoke_role(self, fingerprint: str, *, audit: AuditActor) -> RoleRow:
        """Take a key's role away and log a signed ``role-revoke``; the team's last admin keeps theirs."""
        with write_transaction(self.engine) as session:
            team_roles.check_actor(session, audit.fingerprint, [team_roles.REVOKE_ACTION])
            member = session.get(TeamRole, fingerprint)
            if member is None:
                raise errors.TeamError(f"key {fingerprint[:16]}… holds no role in this team")
            admins = session.exec(select(func.count()).select_from(TeamRole).where(TeamRole.role == "admin")).one()
            if member.role == "admin" and admins == 1:
                raise errors.TeamError(
                    "that is the team's last admin", hint="Grant admin to another key first, then revoke this one."
                )
            key = session.get(Key, fingerprint)
            revoked = RoleRow(fingerprint, team_roles.parse_role(member.role), key.name if key else "", "", utc_now())
            session.delete(member)
            session.flush()
            details = {"fingerprint": fingerprint, "role": member.role}
            _event(session, audit, team_roles.REVOKE_ACTION, (None, None, None), details)
            return revoked

    # --- file cache -------------------------------------------------------------------------------------------

    def file_cache_get(self, path: str, size: int, mtime_ns: int, inode: int) -> CachedFile | None:
        """The digests recorded for ``path`` if its size, mtime and inode are still the recorded ones."""
        with read_transaction(self.engine) as session:
            row = session.get(FileCache, str(path))
            if row is None or (row.size, row.mtime_ns, row.inode) != (size, mtime_ns, int64(inode)):
                return None
            return _cached(row)

    def unchanged_files(self, stats: Iterable[tuple[str, int, int, int]]) -> set[str]:
        """Of (path, size, mtime_ns, inode) tuples, the paths whose recorded facts still hold and whose content is
        catalogued (not removed): what a directory walk may skip without reading. Two queries per 500 paths, so a
        re-run over a large library costs milliseconds, not a transaction per file."""
        wanted = {str(path): (size, mtime_ns, int64(inode)) for path, size, mtime_ns, inode in stats}
        paths = list(wanted)
        unchanged: set[str] = set()
        with read_transaction(self.engine) as session:
            for start in range(0, len(paths), _IN_CHUNK):
                rows = session.exec(select(FileCache).where(col(FileCache.path).in_(paths[start : start + _IN_CHUNK])))
                current = {
                    row.path: row.content_digest
                    for row in rows
                    if row.content_digest and (row.size, row.mtime_ns, row.inode) == wanted[row.path]
                }
                digests = list(set(current.values()))
                catalogued = set(
                    session.exec(
                        select(Version.content_digest).where(
                            col(Version.content_digest).in_(digests), col(Version.removed_at).is_(None)
                        )
                    )
                )
                unchanged |= {path for path, digest in current.items() if digest in catalogued}
        return unchanged

    def file_cache_put(
        self, path: str, size: int, mtime_ns: int, inode: int, *, sha256: str, content_digest: str | None = None
    ) -> None:
        """Record a file's digests under its current size, mtime and inode (replacing what was there)."""
        with write_transaction(self.engine) as session:
            row = session.get(FileCache, str(path)) or FileCache(
                path=str(path), size=size, mtime_ns=mtime_ns, inode=0, sha256=sha256
            )
            row.size, row.mtime_ns, row.inode, row.sha256 = size, mtime_ns, int64(inode), sha256
            row.content_digest, row.checked_at = content_digest, utc_now()
            session.add(row)

    # --- audit ------------------------------------------------------------------------------------------------

    def log(
        self,
        action: str,
        *,
        audit: AuditActor,
        subject_name: str | None = None,
        subject_version: int | None = None,
        subject_digest: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> AuditEvent:
        """Append an event for something the catalog does not do itself (verify failure, convert, merge, …)."""
        with write_transaction(self.engine) as session:
            return _event(session, audit, action, (subject_name, subject_version, subject_digest), details or {})

    def log_unsigned(
        self,
        action: str,
        *,
        actor: str,
        reason: str,
        subject_name: str | None = None,
        subject_version: int | None = None,
        subject_digest: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> AuditEvent:
        """Append an event the actor cannot sign (its key is locked), with ``reason`` in its details rather than
        drop it; only :data:`~lorahub.registry.audit.UNSIGNED_ACTIONS` may be. ``actor`` is the fingerprint the
        event would have been signed with ("" when there is none), a claim the chain cannot prove."""
        with write_transaction(self.engine) as session:
            return audit_log.append(
                session,
                actor_fingerprint=actor,
                sign=None,
                action=action,
                subject_name=subject_name,
                subject_version=subject_version,
                subject_digest=subject_digest,
                details={**(details or {}), audit_log.UNSIGNED_REASON: reason},
            )

    def audit_events(
        self,
        *,
        who: str | None = None,
        adapter: str | None = None,
        action: str | None = None,
        since: datetime | str | None = None,
        limit: int | None = None,
    ) -> list[AuditEvent]:
        with read_transaction(self.engine) as session:
            return audit_log.query(session, who=who, adapter=adapter, action=action, since=since, limit=limit)

    def audit_head(self) -> tuple[int, str] | None:
        with read_transaction(self.engine) as session:
            return audit_log.head(session)

    def verify_audit(
        self,
        public_keys: dict[str, str] | None = None,
        verify: audit_log.Verify | None = None,
        *,
        expected_head: tuple[int, str] | None = None,
    ) -> list[audit_log.ChainProblem]:
        """Check the audit chain. ``public_keys`` defaults to every key in the key table (revoked ones too: an
        event signed before a revocation stays valid). ``verify`` is required; the signing package supplies it."""
        if verify is None:
            raise ValueError("verify_audit needs a verify(public_pem, message, signature) callable")
        with read_transaction(self.engine) as session:
            keys = public_keys if public_keys is not None else _all_public_keys(session)
            return audit_log.verify_chain(session, keys, verify, expected_head=expected_head)


# --- helpers: writing -----------------------------------------------------------------------------------------


def _check_name(name: str) -> None:
    if not name or name != name.strip() or "@" in name or "\n" in name:
        raise ValueError(
            f"invalid adapter name {name!r}: use a non-empty name without surrounding spaces, '@' or newlines"
        )


def _unique_signatures(signatures: Iterable[tuple[str, str]]) -> dict[str, str]:
    unique: dict[str, str] = {}
    for keyid, sig in signatures:
        if unique.setdefault(keyid, sig) != sig:
            raise ValueError(f"two different signatures by key {keyid}")
    return unique


def _insert_versions(
    session: Session, news: Sequence[NewVersion], audit: AuditActor, allow_duplicate: bool
) -> list[tuple[int, int]]:
    """Record ``news`` in the caller's transaction with a fixed number of statements, whatever their count: the
    lookups (duplicates, adapters, taken numbers, blobs) are one query each, the inserts one ``executemany`` each
    (Core statements: building an ORM object per row costs more than the row's insert). Returns (id, number)."""
    for new in news:
        _check_name(new.name)
    signatures = [_unique_signatures(new.signatures) for new in news]
    if not allow_duplicate:
        _refuse_duplicates(session, [new.content_digest for new in news])
    adapters = _adapters(session, {new.name for new in news})
    numbers = _numbers(session, news, adapters)
    now = utc_now()
    known_blobs = set(session.exec(select(Blob.sha256).where(col(Blob.sha256).in_({n.blob.sha256 for n in news}))))
    blobs = {new.blob.sha256: new.blob.size for new in news if new.blob.sha256 not in known_blobs}
    if blobs:
        session.execute(insert(Blob), [{"sha256": k, "size": v, "created_at": now} for k, v in blobs.items()])
    rows = [
        _version_values(new, adapters[new.name], number, sigs) | {"created_at": now}
        for new, number, sigs in zip(news, numbers, signatures, strict=True)
    ]
    returning = insert(Version).returning(col(Version.id), sort_by_parameter_order=True)
    ids: list[int] = list(session.execute(returning, rows).scalars())
    _insert_rows(session, news, ids, signatures, now)
    insert_locations(session, [new.location for new in news if new.location is not None])
    release_recorded(session, [new.lease for new in news if new.lease is not None])
    unsigned = {audit_log.UNSIGNED_REASON: audit.unsigned_reason or ""} if audit.sign is None else {}
    entries = [
        audit_log.Entry(new.action, new.name, number, new.content_digest, _add_details(new, sigs) | unsigned)
        for new, number, sigs in zip(news, numbers, signatures, strict=True)
    ]
    audit_log.append_many(session, actor_fingerprint=audit.fingerprint, sign=audit.sign, entries=entries)
    return list(zip(ids, numbers, strict=True))


def _insert_rows(
    session: Session,
    news: Sequence[NewVersion],
    ids: Sequence[int],
    signatures: Sequence[dict[str, str]],
    now: datetime,
) -> None:
    """Each version's signatures and search words."""
    signed = [
        {"version_id": i, "keyid": keyid, "sig": sig, "added_at": now}
        for i, sigs in zip(ids, signatures, strict=True)
        for keyid, sig in sigs.items()
    ]
    if signed:
        session.execute(insert(Signature), signed)
    words = []
    for version_id, new in zip(ids, news, strict=True):
        doc = search_terms.document(new.name, new.description, new.trigger_words, new.tags)
        words.append({"version_id": version_id, "name_terms": doc.name_terms, "terms": doc.terms})
    session.execute(insert(SearchText), words)


def _adapters(session: Session, names: set[str]) -> dict[str, int]:
    """The id of each named adapter, created when new."""
    statement = select(Adapter.name, Adapter.id).where(col(Adapter.name).in_(names))
    found: dict[str, int] = {name: adapter_id for name, adapter_id in session.exec(statement) if adapter_id}
    created = sorted(names - set(found))
    if created:
        returning = insert(Adapter).returning(col(Adapter.name), col(Adapter.id), sort_by_parameter_order=True)
        rows = [{"name": name, "created_at": utc_now()} for name in created]
        found |= {name: adapter_id for name, adapter_id in session.execute(returning, rows)}
    return found


def _numbers(session: Session, news: Sequence[NewVersion], adapters: dict[str, int]) -> list[int]:
    """Each new version's number: the one it asks for when free (else ``VersionExistsError``), or one more than
    the highest ever used (removed versions keep their numbers: a ref never comes to mean other bytes)."""
    ids = set(adapters.values())
    taken: dict[int, set[int]] = {i: set() for i in ids}
    for adapter_id, number in session.exec(
        select(Version.adapter_id, Version.number).where(col(Version.adapter_id).in_(ids))
    ):
        taken[adapter_id].add(number)
    numbers = []
    for new in news:
        used = taken[adapters[new.name]]
        if new.number is not None and new.number < 1:
            raise ValueError(f"version numbers start at 1, not {new.number}")
        if new.number is not None and new.number in used:
            raise errors.VersionExistsError(f"{new.name}@{new.number} already exists")
        number = new.number if new.number is not None else max(used, default=0) + 1
        used.add(number)
        numbers.append(number)
    return numbers


def _refuse_duplicates(session: Session, content_digests: Sequence[str]) -> None:
    if len(set(content_digests)) < len(content_digests):
        raise errors.DuplicateContentError(
            "two of the new versions have the same tensors",
            existing="",
            hint="Add one of them, or pass --allow-duplicate.",
        )
    for digest in content_digests if len(content_digests) == 1 else _catalogued(session, content_digests):
        _refuse_duplicate(session, digest)


def _catalogued(session: Session, content_digests: Sequence[str]) -> list[str]:
    statement = select(Version.content_digest).where(
        col(Version.content_digest).in_(content_digests), col(Version.removed_at).is_(None)
    )
    return sorted(set(session.exec(statement)))


def _refuse_duplicate(session: Session, content_digest: str) -> None:
    statement = (
        select(Adapter.name, Version.number)
        .join(Adapter, col(Adapter.id) == col(Version.adapter_id))
        .where(Version.content_digest == content_digest, col(Version.removed_at).is_(None))
        .order_by(col(Version.id))
        .limit(1)
    )
    found = session.exec(statement).first()
    if found is not None:
        existing = f"{found[0]}@{found[1]}"
        raise errors.DuplicateContentError(
            f"these tensors are already catalogued as {existing} (content digest {content_digest[:16]}…)",
            existing=existing,
            hint=f"Use `lorahub show {existing}`, or add it again on purpose with --allow-duplicate.",
        )


def _adapter(session: Session, name: str) -> Adapter | None:
    return session.exec(select(Adapter).where(Adapter.name == name)).first()


def _version_values(new: NewVersion, adapter_id: int, number: int, signatures: dict[str, str]) -> dict[str, Any]:
    return {
        "adapter_id": adapter_id,
        "number": number,
        "content_digest": new.content_digest,
        "blob_sha256": new.blob.sha256,
        "file_name": new.file_name,
        "format": new.format,
        "family": new.family,
        "license_id": new.license_id,
        "commercial_use": ",".join(_commercial(new.commercial_use)),
        "consent_status": new.consent_status,
        "description": new.description,
        "trigger_words": _json_list(new.trigger_words),
        "tags": _json_list(new.tags),
        "card_json": new.card_json,
        "signers": ",".join(signatures),
    }


def _add_details(new: NewVersion, signatures: dict[str, str]) -> dict[str, Any]:
    """What the event records; ``blob`` says whether this add stored the bytes or found them stored (by an earlier
    add, or by another machine sharing the store), so two adds of the same content each say what they did."""
    return (
        {
            "blob_sha256": new.blob.sha256,
            "size": new.blob.size,
            "file_name": new.file_name,
            "format": new.format,
            "family": new.family,
            "license_id": new.license_id,
            "card_sha256": hashlib.sha256(new.card_json.encode("utf-8")).hexdigest(),
            "signers": sorted(signatures),
        }
        | ({"in_place": new.location.path} if new.location is not None else {})
        | ({"blob": "existed" if new.blob.existed else "stored"} if new.location is None else {})
        | dict(new.details)
    )


def _event(
    session: Session,
    actor: AuditActor,
    action: str,
    subject: tuple[str | None, int | None, str | None],
    details: dict[str, Any],
) -> AuditEvent:
    """Append one event signed by ``actor``; ``subject`` is (name, version number, content digest)."""
    return audit_log.append_by(session, actor, action, subject, details)


def _append(
    session: Session, actor: AuditActor, action: str, version: Version, *, name: str, details: dict[str, Any]
) -> AuditEvent:
    return _event(session, actor, action, (name, version.number, version.content_digest), details)


def _append_key_event(session: Session, actor: AuditActor, action: str, key: Key) -> AuditEvent:
    return _event(session, actor, action, (None, None, None), {"fingerprint": key.fingerprint, "name": key.name})


def _store_key(session: Session, key: KeyRow) -> Key:
    row = session.get(Key, key.fingerprint) or Key(fingerprint=key.fingerprint, name=key.name, public_pem="")
    row.name, row.public_pem, row.own, row.trusted = key.name, key.public_pem, key.own, key.trusted
    row.revoked_at = key.revoked_at
    if key.added_at is not None:
        row.added_at = key.added_at
    session.add(row)
    session.flush()
    return row


def _commercial(values: Iterable[str]) -> list[str]:
    cleaned = (value.strip().lower() for value in values)
    return list(dict.fromkeys(value for value in cleaned if value))


def _json_list(values: Iterable[str]) -> str:
    return json.dumps(list(values), ensure_ascii=False, separators=(",", ":"))


# --- helpers: reading -----------------------------------------------------------------------------------------


def _find_version(session: Session, name: str, number: int | None, *, include_removed: bool) -> Version:
    adapter = _adapter(session, name)
    if adapter is None:
        raise errors.AdapterNotFoundError(f"no adapter named {name!r}")
    statement = select(Version).where(Version.adapter_id == adapter.id)
    if number is not None:
        version = session.exec(statement.where(Version.number == number)).first()
        if version is None:
            raise errors.AdapterNotFoundError(f"{name}@{number} does not exist")
        if version.removed_at is not None and not include_removed:
            raise errors.AdapterNotFoundError(
                f"{name}@{number} was removed on {version.removed_at:%Y-%m-%d %H:%M} UTC",
                hint="Removed versions are hidden; list them with --include-removed.",
            )
        return version
    if not include_removed:
        statement = statement.where(col(Version.removed_at).is_(None))
    version = session.exec(statement.order_by(col(Version.number).desc()).limit(1)).first()
    if version is None:
        raise errors.AdapterNotFoundError(f"{name} has no versions left (all were removed)")
    return version


def _conditions(filters: Filters) -> list[ColumnElement[bool]]:
    pairs = [
        (Adapter.name, filters.name),
        (Version.family, filters.family),
        (Version.format, filters.format),
        (Version.license_id, filters.license_id),
        (Version.consent_status, filters.consent_status),
    ]
    conditions: list[ColumnElement[bool]] = [col(column) == value for column, value in pairs if value is not None]
    if not filters.include_removed:
        conditions.append(col(Version.removed_at).is_(None))
    if filters.commercial is not None:
        padded = literal(",") + col(Version.commercial_use) + literal(",")
        allows = or_(*(padded.like(f"%,{use},%") for use in sorted(COMMERCIAL_USES)))
        conditions.append(allows if filters.commercial else ~allows)
    if filters.signer:
        signed = select(Signature.id).where(
            Signature.version_id == Version.id, col(Signature.keyid).startswith(filters.signer, autoescape=True)
        )
        conditions.append(exists(signed))
    return conditions


def _newest(session: Session, conditions: list[ColumnElement[bool]], limit: int) -> list[int]:
    statement = (
        select(Version.id)
        .join(Adapter, col(Adapter.id) == col(Version.adapter_id))
        .where(*conditions)
        .order_by(col(Version.id).desc())
        .limit(limit)
    )
    return _ids(session.exec(statement).all())


def _fts_search(session: Session, query: list[str], conditions: list[ColumnElement[bool]], limit: int) -> list[int]:
    """One FTS5 query per tier, each stopping after the rows still needed (FTS5 walks rowids newest first)."""
    found: list[int] = []
    for expression in search_terms.fts_tiers(query):
        if len(found) >= limit:
            break
        statement = (
            select(Version.id)
            .select_from(_FTS)
            .join(Version, col(Version.id) == _FTS.c.rowid)
            .join(Adapter, col(Adapter.id) == col(Version.adapter_id))
            .where(text("search_fts MATCH :match").bindparams(match=expression), *conditions)
            .order_by(_FTS.c.rowid.desc())
            .limit(limit - len(found))
        )
        found += _ids(session.exec(statement).all())
    return found


def _pg_search(session: Session, query: list[str], conditions: list[ColumnElement[bool]], limit: int) -> list[int]:
    """PostgreSQL: one query per tier over the GIN-indexed tsvector columns, newest first, stopping after the rows
    still needed (the planner walks the primary key backwards for common words, the index for rare ones)."""
    binds = {"all_words": search_terms.tsquery(query, "&"), "any_word": search_terms.tsquery(query, "|")}
    found: list[int] = []
    for tier in search_terms.pg_tiers(query):
        if len(found) >= limit:
            break
        statement = (
            select(SearchText.version_id)
            .join(Version, col(Version.id) == col(SearchText.version_id))
            .join(Adapter, col(Adapter.id) == col(Version.adapter_id))
            .where(text(tier).bindparams(**{k: v for k, v in binds.items() if f":{k}" in tier}), *conditions)
            .order_by(col(SearchText.version_id).desc())
            .limit(limit - len(found))
        )
        found += _ids(session.exec(statement).all())
    return found


def _scan_search(session: Session, query: list[str], conditions: list[ColumnElement[bool]], limit: int) -> list[int]:
    tier = search_terms.scan_tier(query)
    statement = (
        select(Version.id)
        .join(SearchText, col(SearchText.version_id) == col(Version.id))
        .join(Adapter, col(Adapter.id) == col(Version.adapter_id))
        .where(search_terms.scan_match(query), *conditions)
        .order_by(tier, col(Version.id).desc())
        .limit(limit)
    )
    return _ids(session.exec(statement).all())


def _preferred(versions: list[AdapterVersion]) -> AdapterVersion | None:
    active = [version for version in versions if not version.removed]
    if active:
        return active[0]
    return versions[-1] if versions else None


def _ids(values: Iterable[int | None]) -> list[int]:
    return [value for value in values if value is not None]


def _hydrate(session: Session, ids: Sequence[int]) -> list[AdapterVersion]:
    """Read types for ``ids``, in that order: two queries per batch of ids (drivers cap bound parameters)."""
    found: dict[int, AdapterVersion] = {}
    for start in range(0, len(ids), HYDRATE_BATCH):
        found.update(_hydrate_batch(session, ids[start : start + HYDRATE_BATCH]))
    return [found[i] for i in ids if i in found]


def _hydrate_batch(session: Session, ids: Sequence[int]) -> dict[int, AdapterVersion]:
    statement = (
        select(Version, Adapter.name, Blob.size)
        .join(Adapter, col(Adapter.id) == col(Version.adapter_id))
        .join(Blob, col(Blob.sha256) == col(Version.blob_sha256))
        .where(col(Version.id).in_(ids))
    )
    rows = {version.id: (version, name, size) for version, name, size in session.exec(statement).all()}
    signatures: dict[int, list[SignatureInfo]] = {}
    signature_rows = session.exec(
        select(Signature).where(col(Signature.version_id).in_(ids)).order_by(col(Signature.id))
    ).all()
    for row in signature_rows:
        signatures.setdefault(row.version_id, []).append(SignatureInfo(row.keyid, row.sig, row.added_at))
    return {i: _public(*row, tuple(signatures.get(i, ()))) for i, row in rows.items() if i is not None}


def _public(version: Version, name: str, size: int, signatures: tuple[SignatureInfo, ...]) -> AdapterVersion:
    assert version.id is not None
    return AdapterVersion(
        id=version.id,
        name=name,
        number=version.number,
        content_digest=version.content_digest,
        blob_sha256=version.blob_sha256,
        size=size,
        file_name=version.file_name,
        format=version.format,
        family=version.family,
        license_id=version.license_id,
        commercial_use=tuple(filter(None, version.commercial_use.split(","))),
        consent_status=version.consent_status,
        description=version.description,
        trigger_words=tuple(json.loads(version.trigger_words)),
        tags=tuple(json.loads(version.tags)),
        card_json=version.card_json,
        signers=tuple(filter(None, version.signers.split(","))),
        signatures=signatures,
        created_at=version.created_at,
        removed_at=version.removed_at,
    )


def _key_row(row: Key) -> KeyRow:
    return KeyRow(
        fingerprint=row.fingerprint,
        name=row.name,
        public_pem=row.public_pem,
        own=row.own,
        trusted=row.trusted,
        added_at=row.added_at,
        revoked_at=row.revoked_at,
    )


def _cached(row: FileCache) -> CachedFile:
    return CachedFile(row.path, row.size, row.mtime_ns, row.inode, row.sha256, row.content_digest, row.checked_at)


def _all_public_keys(session: Session) -> dict[str, str]:
    return {row.fingerprint: row.public_pem for row in session.exec(select(Key))}


__all__ = [
    "AdapterVersion",
    "AuditActor",
    "CachedFile",
    "Catalog",
    "Filters",
    "KeyRow",
    "NewVersion",
    "RoleRow",
    "SignatureInfo",
    "parse_ref",
]
