"""Engines, migrations and serialised writers on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlmodel import SQLModel

from lorahub import errors
from lorahub.registry import db
from tests.registry.conftest import BACKENDS


def _schema_diff(engine: sa.Engine, metadata: sa.MetaData) -> list[object]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"include_name": db.include_name, "compare_type": True})
        return list(compare_metadata(context, metadata))


def _tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


@pytest.mark.parametrize("catalog_url", BACKENDS, indirect=True)
def test_migrations_create_the_models_schema(catalog_url: str) -> None:
    engine = db.connect(catalog_url)
    db.migrate(engine)
    assert _schema_diff(engine, SQLModel.metadata) == []
    # The comparison is able to fail: a model with one more column than the migration is reported.
    drifted = sa.MetaData()
    for table in SQLModel.metadata.sorted_tables:
        table.to_metadata(drifted)
    drifted.tables["version"].append_column(sa.Column("nickname", sa.String(), nullable=True))
    assert any("nickname" in str(diff) for diff in _schema_diff(engine, drifted))
    engine.dispose()


@pytest.mark.parametrize("catalog_url", BACKENDS, indirect=True)
def test_migrate_twice_is_a_no_op(catalog_url: str) -> None:
    engine = db.connect(catalog_url)
    assert db.current_revision(engine) is None
    db.migrate(engine)
    tables = _tables(engine)
    assert db.current_revision(engine) == db.head_revision()
    assert {"adapter", "version", "blob", "signature", "signing_key", "audit_event", "file_cache"} <= tables
    db.migrate(engine)
    assert _tables(engine) == tables
    assert db.current_revision(engine) == db.head_revision()
    engine.dispose()


@pytest.mark.parametrize("catalog_url", BACKENDS, indirect=True)
def test_the_head_read_from_the_scripts_is_alembics(catalog_url: str) -> None:
    assert db.head_revision() == ScriptDirectory.from_config(db.alembic_config()).get_current_head()
    engine = db.connect(catalog_url)
    db.migrate(engine)
    with engine.connect() as connection:
        assert db.current_revision(engine) == MigrationContext.configure(connection).get_current_revision()
    engine.dispose()


def test_sqlite_connections_get_wal_and_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "new" / "nested" / "catalog.db"
    engine = db.connect(f"sqlite:///{path}")
    with engine.connect() as connection:
        pragmas = {
            name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "busy_timeout", "foreign_keys", "synchronous")
        }
    assert path.parent.is_dir()
    assert pragmas == {"journal_mode": "wal", "busy_timeout": 30_000, "foreign_keys": 1, "synchronous": 1}
    engine.dispose()


def test_sqlite_enforces_foreign_keys(tmp_path: Path) -> None:
    engine = db.connect(f"sqlite:///{tmp_path / 'c.db'}")
    db.migrate(engine)
    with pytest.raises(errors.DatabaseError, match="FOREIGN KEY"), db.write_transaction(engine) as session:
        session.execute(text("INSERT INTO signature (version_id, keyid, sig, added_at) VALUES (99, 'k', 's', '2025')"))
    engine.dispose()


def test_plain_postgresql_url_uses_psycopg() -> None:
    engine = db.connect("postgresql://someone@db.example/lorahub")
    assert (engine.dialect.name, engine.dialect.driver) == ("postgresql", "psycopg")


def test_unsupported_and_malformed_urls_are_database_errors() -> None:
    with pytest.raises(errors.DatabaseError, match="unsupported"):
        db.connect("mysql://user:pw@host/db")
    with pytest.raises(errors.DatabaseError, match="not a database URL"):
        db.connect("not a url at all")


def test_connection_failures_name_the_database_without_its_password() -> None:
    engine = db.connect("postgresql://alice:s3cret-pw@127.0.0.1:1/lorahub?connect_timeout=2")
    with pytest.raises(errors.DatabaseError) as caught:
        db.migrate(engine)
    message = str(caught.value)
    assert "127.0.0.1:1" in message and "***" in message and "s3cret-pw" not in message
    assert caught.value.code == "database-error"


def test_sqlite_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(errors.DatabaseError, match=r"catalog\.db"):
        db.migrate(db.connect(f"sqlite:///{path}"))


@pytest.mark.parametrize("catalog_url", BACKENDS, indirect=True)
def test_write_transactions_wait_for_each_other(catalog_url: str) -> None:
    engine = db.connect(catalog_url)
    db.migrate(engine)
    first_holds = threading.Event()
    timeline: list[str] = []

    def first() -> None:
        with db.write_transaction(engine) as session:
            session.execute(text("SELECT 1"))
            first_holds.set()
            time.sleep(0.4)
            timeline.append("first commits")

    def second() -> None:
        first_holds.wait(10)
        with db.write_transaction(engine) as session:
            timeline.append("second starts")
            session.execute(text("SELECT 1"))

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert timeline == ["first commits", "second starts"]
    engine.dispose()


@pytest.mark.parametrize("catalog_url", BACKENDS, indirect=True)
def test_write_transaction_rolls_back_on_error(catalog_url: str) -> None:
    engine = db.connect(catalog_url)
    db.migrate(engine)
    with pytest.raises(RuntimeError), db.write_transaction(engine) as session:
        session.execute(text("INSERT INTO blob (sha256, size, created_at) VALUES ('ab', 1, '2025-01-01')"))
        raise RuntimeError("abort")
    with db.read_transaction(engine) as session:
        assert session.execute(text("SELECT count(*) FROM blob")).scalar() == 0
    engine.dispose()
