"""Engines, migrations and serialised write transactions for the catalog database.

The catalog lives in SQLite by default and in PostgreSQL for teams (docs/concepts/architecture.md, decision 5). Both
must give the same guarantee to the audit log: writers run one at a time, so each write transaction sees the previous
one's last audit event and appends after it. SQLite gets that from ``BEGIN IMMEDIATE`` (the write lock is taken at the
start of the transaction, not at its first write, so two writers never both read the same chain head); PostgreSQL from a
transaction-scoped advisory lock taken as the transaction's first statement.

Every SQLAlchemy error that leaves this module's context managers becomes a :class:`~lorahub.errors.DatabaseError`
naming the database (password masked), so the CLI can print one line instead of a driver traceback.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy.exc
from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import StaticPool
from sqlmodel import Session

from lorahub import errors

if TYPE_CHECKING:
    from alembic.config import Config

SQLITE_BUSY_TIMEOUT_S: Final = 30.0
"""How long a SQLite connection waits for another process's write lock before giving up."""

ADVISORY_LOCK_CLASS: Final = 0x6C6F7261  # "lora": the first key of PostgreSQL's two-key advisory locks
"""Namespace of lorahub's PostgreSQL advisory locks; the second key is a hash of the schema, so catalogs kept in
different schemas of one database do not wait for each other."""

_WRITE_OPTION: Final = "lorahub_write"


def connect(url: str) -> Engine:
    """An engine for ``url``: ``sqlite:///PATH`` (its folder is created) or ``postgresql[+psycopg]://…``.

    Nothing is opened yet; the first statement connects, and its failures surface as ``DatabaseError``.
    """
    parsed = _parse_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed)
    if backend == "postgresql":
        return create_engine(parsed.set(drivername="postgresql+psycopg"), pool_pre_ping=True)
    raise errors.DatabaseError(
        f"unsupported database {mask_url(url)!r}",
        hint="Use sqlite:///PATH or postgresql://USER@HOST/DB in LORAHUB_DATABASE_URL.",
    )


def mask_url(url: str | URL) -> str:
    """The URL with its password replaced by ``***``, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return "<unparseable database URL>"


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def _parse_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise errors.DatabaseError(
            f"{mask_url(url)} is not a database URL",
            hint="Use sqlite:///PATH or postgresql://USER@HOST/DB.",
        ) from None
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _sqlite_engine(url: URL) -> Engine:
    database = url.database or ""
    in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
    if in_memory:
        # One shared connection, or every pooled connection would see its own empty database.
        engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
    event.listen(engine, "connect", _on_sqlite_connect)
    event.listen(engine, "begin", _on_sqlite_begin)
    return engine


def _on_sqlite_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    """Take transaction control away from the sqlite3 module (it skips BEGIN before SELECT and DDL) and set the
    pragmas every connection needs: they are per connection, not stored in the file (except WAL)."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        _enable_wal(cursor)
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def _enable_wal(cursor: sqlite3.Cursor) -> None:
    """Switch to WAL, retrying: the switch needs an exclusive lock, and SQLite reports a busy database at once
    instead of waiting when several processes open a new file together."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _on_sqlite_begin(connection: Connection) -> None:
    immediate = connection.get_execution_options().get(_WRITE_OPTION, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _lock_writers(connection: Connection) -> None:
    """PostgreSQL: wait for the catalog's writer lock; it is released when the transaction ends."""
    if connection.dialect.name == "postgresql":
        connection.execute(
            text("SELECT pg_advisory_xact_lock(:space, hashtext(current_schema()))"),
            {"space": ADVISORY_LOCK_CLASS},
        )


@contextmanager
def translate_errors(engine: Engine) -> Iterator[None]:
    """Turn SQLAlchemy's errors into ``DatabaseError`` naming the database; lorahub's own errors pass through."""
    try:
        yield
    except sqlalchemy.exc.SQLAlchemyError as exc:
        detail = getattr(exc, "orig", None) or exc
        first_line = str(detail).strip().splitlines()[0] if str(detail).strip() else type(detail).__name__
        raise errors.DatabaseError(f"{mask_url(engine.url)}: {first_line}") from exc


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Session]:
    """A session inside one transaction that no other lorahub writer runs beside; commits on success.

    Reads made inside see every earlier write transaction's result, which is what lets the audit log read its
    last event and append the next one without a race.
    """
    with (
        _writer_lock(engine),
        translate_errors(engine),
        Session(engine, expire_on_commit=False) as session,
        session.begin(),
    ):
        connection = session.connection(execution_options={_WRITE_OPTION: True})
        _lock_writers(connection)
        yield session


_WRITER_LOCKS: Final[weakref.WeakKeyDictionary[Engine, threading.RLock]] = weakref.WeakKeyDictionary()
_LOCKS_LOCK: Final = threading.Lock()


def _writer_lock(engine: Engine) -> threading.RLock:
    """The threads of one process take turns at an engine's writes here, in a queue, rather than in the database:
    a SQLite writer that finds the write lock taken polls for it with growing sleeps (up to 100 ms), and worker
    threads that each write a little (an add's blob lease) would spend more time asleep than writing. Reentrant, so
    that a write nested in another on the same thread meets the database's answer, as it did before this lock."""
    with _LOCKS_LOCK:
        lock = _WRITER_LOCKS.get(engine)
        if lock is None:
            lock = _WRITER_LOCKS[engine] = threading.RLock()
        return lock


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Session]:
    """A session for reads in one transaction (one snapshot on SQLite; each statement its own on PostgreSQL)."""
    with translate_errors(engine), Session(engine, expire_on_commit=False) as session:
        yield session  # the session begins on first use; closing it rolls back


# --- migrations ------------------------------------------------------------------------------------------------


def alembic_config() -> Config:
    """Alembic's configuration built in code: the scripts ship inside the package, no alembic.ini needed.

    Alembic is imported only here and in :func:`migrate`'s upgrade: it costs a quarter of a second, and every
    command opens the catalog, which is almost always at the newest schema already.
    """
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


_MIGRATIONS: Final = resources.files("lorahub.registry") / "migrations"
_REVISION_LINE: Final = re.compile(r'^(down_revision|revision): str(?: \| None)? = (?:"([^"]+)"|None)$', re.MULTILINE)


FTS_PREFIXES: Final = {"table": "search_fts", "column": "fts_", "index": "ix_search_text_fts_"}
"""Names of the full-text index's parts, which live in the migrations alone: SQLite's FTS5 table and its shadow
tables, PostgreSQL's generated tsvector columns and their GIN indexes."""


def include_name(name: str | None, type_: str, _parent: Any) -> bool:
    """Alembic filter: the full-text index's parts are not in the metadata, so comparisons skip them."""
    prefix = FTS_PREFIXES.get(type_)
    return not (prefix is not None and name is not None and name.startswith(prefix))


def head_revision() -> str:
    """The newest migration: the one no other revises, read from the scripts' ``revision`` lines (a test checks this
    against Alembic's own answer)."""
    revised, revisions = set[str](), set[str]()
    for script in (_MIGRATIONS / "versions").iterdir():
        if script.name.endswith(".py") and script.name != "__init__.py":
            for field, value in _REVISION_LINE.findall(script.read_text(encoding="utf-8")):
                (revisions if field == "revision" else revised).add(value)
    heads = revisions - revised
    assert len(heads) == 1, f"migrations must form one chain; heads: {sorted(heads)}"
    return heads.pop()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for an empty database (Alembic's version table, read directly)."""
    with translate_errors(engine), engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def migrate(engine: Engine) -> None:
    """Bring the database to the newest schema. Cheap when it is already there, so call it on every open.

    The upgrade runs inside a write transaction, so processes that open a new catalog together wait for each other
    and all but the first find nothing to do. Both SQLite and PostgreSQL roll DDL back with the transaction, so a
    failed upgrade leaves the previous schema.
    """
    if current_revision(engine) == head_revision():
        return
    from alembic import command

    config = alembic_config()
    with translate_errors(engine), engine.connect() as connection:
        connection.execution_options(**{_WRITE_OPTION: True})
        with connection.begin():
            _lock_writers(connection)
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
