"""The catalogue's rows, table by table, as plain JSON values: what a backup holds and a restore writes back.

Rows are copied as they are stored (ids, numbers, the audit chain's seq, hashes and signatures), so a restored
catalogue is the same catalogue: its chain verifies with the same head, and every reference (``name@N``, a content
digest, an event's subject) means what it meant. The tables copied are :data:`SNAPSHOT_TABLES`, in an order that
satisfies their foreign keys; the others are caches (:data:`SKIPPED_TABLES`). A test holds the two lists to the
metadata, so a new table must be placed in one of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Engine, Integer, Table, func, insert, select, text
from sqlmodel import SQLModel

from lorahub.registry.db import read_transaction, translate_errors, write_transaction
from lorahub.registry.models import UTCDateTime

SNAPSHOT_TABLES: Final = (
    "adapter",
    "blob",
    "version",
    "signature",
    "search_text",
    "signing_key",
    "audit_event",
    "audit_head",
    "training_run",
    "location",
    "team_role",
)
"""Every table a backup copies, parents before children."""
SKIPPED_TABLES: Final = frozenset({"file_cache", "blob_lease"})
"""Tables a backup leaves out: caches that the next walk rebuilds (digests trusted by a path's stat facts, which
mean nothing on another disk) and the blob leases of writers and collectors in flight (they expire; a restored home
has none)."""
EMPTY_WHEN_NEW: Final = ("version", "audit_event")
"""A catalogue with rows in none of these has nothing of its own yet (an identity's first events aside: see
:func:`is_empty`)."""
PAGE: Final = 1_000


def table(name: str) -> Table:
    found = SQLModel.metadata.tables[name]
    assert isinstance(found, Table)
    return found


Read = Callable[[str], Iterator[dict[str, Any]]]


@contextmanager
def reader(engine: Engine) -> Iterator[Read]:
    """``read(table)`` for any number of tables, all from one snapshot of the database: one transaction, which on
    PostgreSQL is ``REPEATABLE READ`` (its default gives each statement a snapshot of its own), so rows written
    meanwhile by other members appear in no table or in all of them."""
    with translate_errors(engine), engine.connect() as opened:
        connection = opened
        if connection.dialect.name == "postgresql":
            connection = connection.execution_options(isolation_level="REPEATABLE READ")
        with connection.begin():

            def read(name: str) -> Iterator[dict[str, Any]]:
                source = table(name)
                statement = select(source).order_by(*source.primary_key.columns).execution_options(yield_per=PAGE)
                for row in connection.execute(statement).mappings():
                    yield {column: _json_value(value) for column, value in row.items()}

            yield read


def dump(engine: Engine, name: str) -> Iterator[dict[str, Any]]:
    """The rows of one table as JSON values, in primary-key order."""
    with reader(engine) as read:
        yield from read(name)


def load(engine: Engine, rows_by_table: Mapping[str, Iterable[Mapping[str, Any]]]) -> dict[str, int]:
    """Insert the rows of each table (in :data:`SNAPSHOT_TABLES` order) in one write transaction, all or none;
    PostgreSQL's id sequences are moved past the ids inserted. Returns the rows written per table."""
    counts: dict[str, int] = {}
    with write_transaction(engine) as session:
        connection = session.connection()
        for name in SNAPSHOT_TABLES:
            target = table(name)
            batch: list[dict[str, Any]] = []
            counts[name] = 0
            for row in rows_by_table.get(name, ()):
                batch.append(_db_values(target, row))
                if len(batch) >= PAGE:
                    connection.execute(insert(target), batch)
                    counts[name] += len(batch)
                    batch = []
            if batch:
                connection.execute(insert(target), batch)
                counts[name] += len(batch)
            if connection.dialect.name == "postgresql":
                _advance_sequence(connection, target)
    return counts


def count(engine: Engine, name: str) -> int:
    with read_transaction(engine) as session:
        return int(session.connection().execute(select(func.count()).select_from(table(name))).scalar_one())


def is_empty(engine: Engine) -> bool:
    """No version and no audit event: a catalogue a restore may fill."""
    return all(count(engine, name) == 0 for name in EMPTY_WHEN_NEW)


def _advance_sequence(connection: Any, target: Table) -> None:
    """After explicit ids, a serial column's sequence still starts at 1; move it past the largest id."""
    for column in target.primary_key.columns:
        if isinstance(column.type, Integer) and column.autoincrement is not False:
            sequence = connection.execute(
                text("SELECT pg_get_serial_sequence(:table, :column)"), {"table": target.name, "column": column.name}
            ).scalar_one()
            if sequence is not None:
                largest = f"COALESCE((SELECT max({column.name}) FROM {target.name}), 0)"
                connection.execute(text(f"SELECT setval(:sequence, {largest} + 1, false)"), {"sequence": sequence})


def _json_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _db_values(target: Table, row: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON row back to the column values: times parsed, unknown columns refused (a backup from a newer schema
    must not be half restored)."""
    unknown = set(row) - set(target.columns.keys())
    if unknown:
        raise ValueError(f"{target.name}: columns this catalogue does not have: {sorted(unknown)}")
    values: dict[str, Any] = {}
    for column, value in row.items():
        is_time = isinstance(target.columns[column].type, UTCDateTime) and isinstance(value, str)
        values[column] = datetime.fromisoformat(value) if is_time else value
    return values
