"""The catalog's tables, one sqlmodel class each.

These classes are the storage shape only. Callers get the read types of :mod:`lorahub.registry.catalog`
(decoded lists, the adapter's name beside its version), never live ORM rows, so nothing outside the registry can
update a version by accident: versions are immutable apart from ``removed_at``.

The migration in ``migrations/versions`` creates exactly these tables; ``tests/registry/test_db.py`` compares the
migrated schema with ``SQLModel.metadata`` so the two cannot drift. The SQLite-only full-text index
(``search_fts`` and its triggers) lives in the migration alone, because SQLAlchemy has no notion of FTS5 tables;
so does PostgreSQL's (the generated ``tsvector`` columns of ``search_text`` and their GIN indexes, migration 0005).
"""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Dialect, Index, Text
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend.

    SQLite keeps no zone and PostgreSQL's ``timestamp`` neither; storing naive UTC and re-attaching UTC on the
    way out means the two backends return equal values and comparisons never mix naive and aware datetimes.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError(f"catalog times must be timezone-aware datetimes, not {value!r}")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


class Adapter(SQLModel, table=True):
    """A name under which versions are published; never renamed, never deleted."""

    __tablename__ = "adapter"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    created_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)


class Blob(SQLModel, table=True):
    """A file in the content-addressed store, named by the SHA-256 of its bytes."""

    __tablename__ = "blob"

    sha256: str = Field(primary_key=True)
    size: int = Field(sa_type=BigInteger)
    created_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)


class Version(SQLModel, table=True):
    """One immutable version of an adapter: the file's identity, its card and its facts.

    List-valued fields are stored as text: ``commercial_use`` as a comma list (so SQL can test membership
    portably), ``trigger_words`` and ``tags`` as JSON arrays (trigger words may contain commas), ``signers`` as a
    comma list of key fingerprints that signed at add time. ``card_json`` is the exact canonical card text that
    was signed.
    """

    __tablename__ = "version"
    __table_args__ = (Index("ix_version_adapter_number", "adapter_id", "number", unique=True),)

    id: int | None = Field(default=None, primary_key=True)
    adapter_id: int = Field(foreign_key="adapter.id")
    number: int
    content_digest: str = Field(index=True)
    blob_sha256: str = Field(foreign_key="blob.sha256", index=True)
    file_name: str
    format: str
    family: str
    license_id: str
    commercial_use: str = ""
    consent_status: str = ""
    description: str = Field(default="", sa_type=Text)
    trigger_words: str = Field(default="[]", sa_type=Text)
    tags: str = Field(default="[]", sa_type=Text)
    card_json: str = Field(default="", sa_type=Text)
    signers: str = Field(default="", sa_type=Text)
    created_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)
    removed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class SearchText(SQLModel, table=True):
    """The words a version can be found by, tokenised once in Python so every backend matches alike.

    ``name_terms`` holds the adapter name's words, ``terms`` the words of the name, description, trigger words
    and tags; both are lowercase, space-separated and free of punctuation. On SQLite the FTS5 table
    ``search_fts`` indexes this table (external content, kept in sync by triggers); elsewhere it is scanned.
    """

    __tablename__ = "search_text"

    version_id: int = Field(foreign_key="version.id", primary_key=True, sa_column_kwargs={"autoincrement": False})
    name_terms: str = Field(sa_type=Text)
    terms: str = Field(sa_type=Text)


class Signature(SQLModel, table=True):
    """A detached signature over a version's card by one key; at most one per (version, key)."""

    __tablename__ = "signature"
    __table_args__ = (Index("ix_signature_version_keyid", "version_id", "keyid", unique=True),)

    id: int | None = Field(default=None, primary_key=True)
    version_id: int = Field(foreign_key="version.id")
    keyid: str = Field(index=True)
    sig: str = Field(sa_type=Text)
    added_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)


class Key(SQLModel, table=True):
    """A public key the home knows: its own identities (``own``) and the keys it trusts."""

    __tablename__ = "signing_key"

    fingerprint: str = Field(primary_key=True)
    name: str
    public_pem: str = Field(sa_type=Text)
    own: bool = False
    trusted: bool = False
    added_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class AuditEvent(SQLModel, table=True):
    """One link of the tamper-evident audit chain (see :mod:`lorahub.registry.audit`).

    ``seq`` is assigned by the appender (last + 1) inside a serialised write transaction, never by the database,
    so the sequence is contiguous and a gap means a deletion.
    """

    __tablename__ = "audit_event"

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    time: str
    actor: str = Field(index=True)
    action: str = Field(index=True)
    subject_name: str | None = Field(default=None, index=True)
    subject_version: int | None = None
    subject_digest: str | None = None
    details: str = Field(sa_type=Text)
    prev_hash: str
    hash: str
    signature: str = Field(sa_type=Text)


class ChainHead(SQLModel, table=True):
    """The newest audit event's seq and hash, updated in the same transaction as each append.

    The chain alone cannot show that its newest events were deleted; comparing it with this row can (unless the
    same person also rewrote this row: keep a copy of the head elsewhere for that, see ``verify_chain``).
    """

    __tablename__ = "audit_head"

    id: int = Field(default=1, primary_key=True, sa_column_kwargs={"autoincrement": False})
    seq: int
    hash: str


class FileCache(SQLModel, table=True):
    """Digests of files seen by a directory walk, keyed by path and trusted while size, mtime and inode agree."""

    __tablename__ = "file_cache"

    path: str = Field(primary_key=True)
    size: int = Field(sa_type=BigInteger)
    mtime_ns: int = Field(sa_type=BigInteger)
    inode: int = Field(sa_type=BigInteger)
    sha256: str
    content_digest: str | None = None
    checked_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)


class TrainingRun(SQLModel, table=True):
    """One ``lorahub train`` run: where it stands (``running``, ``finished``, ``failed``) and what it has made.

    Unlike versions this row changes (steps, latest checkpoint, status), so it is an index of progress, not proof:
    what is signed is each checkpoint's card (``training``) and its ``train`` audit event. The row answers what the
    card cannot: which runs are still going, or died, and which versions one run produced.

    The columns are the fields of :class:`~lorahub.registry.runs.RunRow`, the run's
    :class:`~lorahub.registry.runs.RunRecord` and its progress (``config`` and ``samples`` as JSON text in
    ``config_json`` and ``samples_json``);
    ``tests/registry/test_runs.py`` holds the two together.
    """

    __tablename__ = "training_run"

    run_id: str = Field(primary_key=True)
    name: str = Field(index=True)
    status: str
    trainer: str
    base_name: str
    base_weights_digest: str
    dataset_digest: str
    steps_done: int
    steps_total: int
    latest_version: int | None = None
    latest_digest: str | None = None
    config_json: str = Field(default="{}", sa_type=Text)
    samples_json: str = Field(default="[]", sa_type=Text)
    started_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Location(SQLModel, table=True):
    """Where a file of the user's library lies, catalogued in place (``lorahub scan``, ``add --in-place``).

    The file is the user's: lorahub never writes, moves or deletes it, so the row records what was seen —
    the path, the SHA-256 and content digest of its bytes, and the stat facts (size, mtime, inode, device) under
    which those digests are trusted without reading it again. ``state`` is what the last look found: ``present``,
    ``missing`` (nothing at the path) or ``changed`` (other bytes at the path; the version keeps its card and
    the new bytes are catalogued on their own). A path holds at most one row per content (``path, sha256``).
    ``neighbours`` is a JSON list of the sidecars and previews beside the file, each with its digest.
    ``linked``: the blob store holds a hard link to the same inode (``--link``).
    """

    __tablename__ = "location"
    __table_args__ = (Index("ix_location_path_sha256", "path", "sha256", unique=True),)

    id: int | None = Field(default=None, primary_key=True)
    path: str = Field(index=True)
    sha256: str = Field(index=True)
    content_digest: str = Field(index=True)
    size: int = Field(sa_type=BigInteger)
    mtime_ns: int = Field(sa_type=BigInteger)
    inode: int = Field(sa_type=BigInteger)
    device: int = Field(sa_type=BigInteger)
    state: str = Field(default="present", index=True)
    linked: bool = False
    neighbours: str = Field(default="[]", sa_type=Text)
    recorded_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)
    seen_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)


class TeamRole(SQLModel, table=True):
    """The role a key holds in a team's catalogue (at most one per key; see :mod:`lorahub.registry.roles`).

    The row is the current state, for the check each write makes; the history is the chain of signed
    ``role-grant`` and ``role-revoke`` audit events, which ``audit --verify`` replays and compares with this table.
    """

    __tablename__ = "team_role"

    fingerprint: str = Field(primary_key=True)
    role: str
    granted_by: str
    granted_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)


class BlobLease(SQLModel, table=True):
    """A claim on a blob, held while it must not change underneath someone (:mod:`lorahub.registry.leases`).

    ``purpose`` ``write``: a writer is storing or reusing the blob and will reference it from a version it has not
    committed yet, so garbage collection must keep it. ``collect``: garbage collection is deleting it, so a writer
    must wait rather than trust that it is there. ``holder`` (host and process) is for people reading the table;
    a lease whose holder died is ignored once ``expires_at`` has passed.
    """

    __tablename__ = "blob_lease"

    id: int | None = Field(default=None, primary_key=True)
    sha256: str = Field(index=True)
    purpose: str
    holder: str
    taken_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
