"""Where the files of a library catalogued in place lie, and what was last seen there.

A location is an observation, not a version: the version (card, signatures) is immutable, while the user's file
may move, vanish or change under it. Rows are read and written in batches (``IN`` lists of at most
:data:`IN_CHUNK` values, keyset pages of :data:`PAGE` rows), so a scan's memory does not grow with the library.
Re-pointing a row at a new path (a moved file) and recording a new path for known content are audited; state
observations (``missing``, ``changed``) are summarised by the scan's own audit event.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

from sqlalchemy import Engine, func, update
from sqlalchemy import insert as sql_insert
from sqlmodel import Session, col, select

from lorahub.registry import audit as audit_log
from lorahub.registry.audit import AuditActor, Subject
from lorahub.registry.db import read_transaction, write_transaction
from lorahub.registry.models import Location, utc_now

IN_CHUNK: Final = 500
PAGE: Final = 1000
State = Literal["present", "missing", "changed"]
INT64_MAX: Final = 2**63 - 1
LOCATION: Final = Location.__table__  # type: ignore[attr-defined]
"""The table itself, for Core reads: a scan reads thousands of rows, and ORM objects would cost more than them."""


@dataclass(frozen=True)
class Facts:
    """The stat facts under which a file's recorded digests are trusted without reading it."""

    size: int
    mtime_ns: int
    inode: int
    device: int

    @classmethod
    def of(cls, stat: os.stat_result) -> Facts:
        return cls(stat.st_size, stat.st_mtime_ns, int64(stat.st_ino), int64(stat.st_dev))


@dataclass(frozen=True)
class NewLocation:
    path: str
    sha256: str
    content_digest: str
    facts: Facts
    linked: bool = False
    neighbours: Sequence[dict[str, Any]] = ()


@dataclass(frozen=True)
class LocationRow:
    id: int
    path: str
    sha256: str
    content_digest: str
    facts: Facts
    state: str
    linked: bool
    neighbours: tuple[dict[str, Any], ...]
    recorded_at: datetime
    seen_at: datetime = field(compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "state": self.state,
            "sha256": self.sha256,
            "content_digest": self.content_digest,
            "size": self.facts.size,
            "mtime_ns": self.facts.mtime_ns,
            "linked": self.linked,
            "neighbours": list(self.neighbours),
            "seen_at": self.seen_at.isoformat(),
        }


class Locations:
    """The ``location`` table of one catalog."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # --- reads ------------------------------------------------------------------------------------------------

    def at_paths(self, paths: Sequence[str]) -> dict[str, list[LocationRow]]:
        """Every row recorded at each of ``paths`` (a path may hold a present row and older changed ones)."""
        found: dict[str, list[LocationRow]] = {}
        with read_transaction(self.engine) as session:
            for start in range(0, len(paths), IN_CHUNK):
                statement = select(LOCATION).where(LOCATION.c.path.in_(paths[start : start + IN_CHUNK]))
                for row in session.execute(statement):
                    found.setdefault(row.path, []).append(_public(row))
        return found

    def get(self, row_id: int) -> LocationRow | None:
        """The row with this id, or None: how a reader that must never take a path from its caller (the web
        catalogue serving a preview) names a location."""
        with read_transaction(self.engine) as session:
            row = session.execute(select(LOCATION).where(LOCATION.c.id == row_id)).first()
            return _public(row) if row is not None else None

    def of_sha256(self, sha256s: Iterable[str]) -> list[LocationRow]:
        return self._where_in(LOCATION.c.sha256, sha256s)

    def of_content(self, digests: Iterable[str]) -> list[LocationRow]:
        return self._where_in(LOCATION.c.content_digest, digests)

    def _where_in(self, column: Any, values: Iterable[str]) -> list[LocationRow]:
        wanted = sorted(set(values))
        rows: list[LocationRow] = []
        with read_transaction(self.engine) as session:
            for start in range(0, len(wanted), IN_CHUNK):
                statement = select(LOCATION).where(column.in_(wanted[start : start + IN_CHUNK]))
                rows += [_public(row) for row in session.execute(statement.order_by(LOCATION.c.id))]
        return rows

    def pages(
        self, *, root: str | None = None, state: str | None = None, seen_before: datetime | None = None
    ) -> Iterator[list[LocationRow]]:
        """Rows under ``root`` (the folder itself and everything below it), a page at a time, by id."""
        last = 0
        while True:
            statement = select(LOCATION).where(LOCATION.c.id > last)
            if root is not None:
                inside = root.rstrip(os.sep) + os.sep
                # A prefix test that no collation or case rule bends (LIKE ignores case on SQLite; range
                # comparisons follow the collation on PostgreSQL).
                statement = statement.where(func.substr(LOCATION.c.path, 1, len(inside)) == inside)
            if state is not None:
                statement = statement.where(LOCATION.c.state == state)
            if seen_before is not None:
                statement = statement.where(LOCATION.c.seen_at < seen_before)
            with read_transaction(self.engine) as session:
                page = [_public(r) for r in session.execute(statement.order_by(LOCATION.c.id).limit(PAGE))]
            if not page:
                return
            yield page
            last = page[-1].id

    def duplicates(self) -> list[list[LocationRow]]:
        """Present rows grouped by content digest, for the contents found at more than one path."""
        shared = (
            select(Location.content_digest)
            .where(Location.state == "present")
            .group_by(col(Location.content_digest))
            .having(func.count() > 1)
        )
        with read_transaction(self.engine) as session:
            digests = list(session.exec(shared))
        groups: dict[str, list[LocationRow]] = {}
        for row in self.of_content(digests):
            if row.state == "present":
                groups.setdefault(row.content_digest, []).append(row)
        return [sorted(rows, key=lambda r: r.path) for _, rows in sorted(groups.items())]

    # --- observations (not audited one by one) ----------------------------------------------------------------

    def mark_seen(self, ids: Sequence[int], when: datetime) -> None:
        with write_transaction(self.engine) as session:
            for start in range(0, len(ids), IN_CHUNK):
                chunk = ids[start : start + IN_CHUNK]
                session.execute(update(Location).where(col(Location.id).in_(chunk)).values(seen_at=when))

    def set_state(self, ids: Sequence[int], state: State) -> None:
        with write_transaction(self.engine) as session:
            for start in range(0, len(ids), IN_CHUNK):
                chunk = ids[start : start + IN_CHUNK]
                session.execute(update(Location).where(col(Location.id).in_(chunk)).values(state=state))

    def refresh(self, row_id: int, facts: Facts, *, neighbours: Sequence[dict[str, Any]] | None = None) -> None:
        """The same bytes under new stat facts (touched, copied back, restored): trust them again, present."""
        values: dict[str, Any] = {**_fact_values(facts), "state": "present", "seen_at": utc_now()}
        if neighbours is not None:
            values["neighbours"] = _json(neighbours)
        with write_transaction(self.engine) as session:
            session.execute(update(Location).where(col(Location.id) == row_id).values(**values))

    # --- audited changes --------------------------------------------------------------------------------------

    def record(self, new: NewLocation, *, audit: AuditActor, subject: Subject) -> LocationRow:
        """A new path for known content (a duplicate, or a file catalogued before by copy), audited ``locate``."""
        with write_transaction(self.engine) as session:
            row = insert(session, new)
            audit_log.append_by(session, audit, "locate", subject, {"path": new.path, "sha256": new.sha256})
            return _public(row)

    def move(
        self,
        row: LocationRow,
        path: str,
        facts: Facts,
        *,
        neighbours: Sequence[dict[str, Any]],
        audit: AuditActor,
        subject: Subject,
    ) -> LocationRow:
        """The file of ``row`` found at ``path`` by its digest: re-point the row, audited ``move``."""
        values = {**_fact_values(facts), "path": path, "state": "present", "seen_at": utc_now()}
        with write_transaction(self.engine) as session:
            session.execute(
                update(Location).where(col(Location.id) == row.id).values(neighbours=_json(neighbours), **values)
            )
            audit_log.append_by(session, audit, "move", subject, {"from": row.path, "to": path, "sha256": row.sha256})
            moved = session.get(Location, row.id)
            assert moved is not None
            return _public(moved)


def insert(session: Session, new: NewLocation) -> Location:
    """Record ``new`` in the caller's transaction; a row already at (path, sha256) is made present again."""
    insert_many(session, [new])
    statement = select(Location).where(Location.path == new.path, Location.sha256 == new.sha256)
    return session.exec(statement.execution_options(populate_existing=True)).one()


def insert_many(session: Session, news: Sequence[NewLocation]) -> None:
    """:func:`insert` for many, with one lookup and one insert (a library scan records hundreds a second)."""
    if not news:
        return
    existing = {
        (row.path, row.sha256): row
        for row in session.exec(select(Location).where(col(Location.path).in_({new.path for new in news})))
    }
    now, rows = utc_now(), []
    for new in news:
        values = _fact_values(new.facts) | {
            "state": "present",
            "linked": new.linked,
            "neighbours": _json(new.neighbours),
            "seen_at": now,
        }
        row = existing.get((new.path, new.sha256))
        if row is None:
            rows.append(
                {"path": new.path, "sha256": new.sha256, "content_digest": new.content_digest, "recorded_at": now}
                | values
            )
        else:
            session.execute(update(Location).where(col(Location.id) == row.id).values(**values))
    if rows:
        session.execute(sql_insert(Location), rows)


def _fact_values(facts: Facts) -> dict[str, int]:
    return {"size": facts.size, "mtime_ns": facts.mtime_ns, "inode": facts.inode, "device": facts.device}


def _json(neighbours: Sequence[dict[str, Any]]) -> str:
    return json.dumps(list(neighbours), sort_keys=True)


def int64(value: int) -> int:
    """Inode and device numbers are unsigned 64-bit; fold the rare ones above 2**63 into the signed BIGINT range."""
    return value - 2**64 if value > INT64_MAX else value


def _public(row: Any) -> LocationRow:
    """The read type of a ``location`` row (an ORM object or a Core row: the columns are read by name)."""
    return LocationRow(
        id=row.id,
        path=row.path,
        sha256=row.sha256,
        content_digest=row.content_digest,
        facts=Facts(row.size, row.mtime_ns, row.inode, row.device),
        state=row.state,
        linked=row.linked,
        neighbours=tuple(json.loads(row.neighbours)),
        recorded_at=row.recorded_at,
        seen_at=row.seen_at,
    )
