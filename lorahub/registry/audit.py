"""The append-only, tamper-evident audit log (docs/concepts/architecture.md, decision 7).

Each event carries the hash of the one before it and its actor's signature over its own hash::

    hash      = sha256( RFC 8785 canonical JSON of {seq, time, actor, action, subject_name, subject_version,
                                                    subject_digest, details, prev_hash} )   (lowercase hex)
    signature = base64( sign(bytes.fromhex(hash)) )

so editing any field breaks that event's hash, deleting or re-ordering events breaks the links, and rewriting a
hash to cover an edit breaks the signature. The newest event's (seq, hash) is also kept in the one-row
``audit_head`` table, updated in the same transaction, because deleting the newest events leaves a chain that is
valid on its own. Someone able to rewrite both that row and the events could still truncate the log unnoticed;
keep a copy of the head outside the database (``head()``) and pass it to ``verify_chain`` to rule that out.

A few actions that only record something done outside the catalog (:data:`UNSIGNED_ACTIONS`) may be appended
unsigned, with the reason in ``details["unsigned"]``, when the actor cannot sign (a key locked by a passphrase that
was not given): recording the event without its author's proof is more honest than losing it. Such an event is
still hashed and linked, so editing, deleting or moving it is found like any other; what it lacks is the proof of
who wrote it, so ``verify_chain`` passes it and :func:`unsigned_reason` lets a reader list it. Every other action
must be signed.

In a team's catalogue each append first checks that its actor holds the role the action needs
(:func:`lorahub.registry.roles.check_actor`), and ``verify_chain`` replays the signed role grants to report, as
``unauthorized``, any event whose actor did not: the trace a member leaves who writes the database directly.

Appending must happen inside :func:`lorahub.registry.db.write_transaction`, which serialises writers: the next
seq and the previous hash are read in the same transaction that inserts the event. Signing is injected (``sign``
and ``verify`` callables) so the registry does not depend on the signing package.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

import rfc8785
from sqlalchemy import ColumnElement, and_, func, insert, union
from sqlmodel import Session, col, select

from lorahub.registry import roles
from lorahub.registry.models import AuditEvent, ChainHead

GENESIS_HASH: Final = "0" * 64
"""``prev_hash`` of the first event."""

ProblemKind = Literal["edited", "deleted", "reordered", "bad-signature", "unknown-actor", "unauthorized"]
Sign = Callable[[bytes], bytes]
Verify = Callable[[str, bytes, bytes], bool]
"""``verify(public_pem, message, signature) -> bool``."""

UNSIGNED_ACTIONS: Final = frozenset({"verify-failed", "export", "issue-cert", "import-cert", "trust-ca"})
"""Actions that may be appended unsigned (with a reason) rather than dropped when the actor's key is locked."""
UNSIGNED_REASON: Final = "unsigned"
"""The ``details`` key that carries why an event is unsigned."""
KEYLESS_ACTIONS: Final = frozenset({"trust", "revoke", "pull"})
"""Trust changes and pulls (a version catalogued under the card it arrived with, already signed by others) that a
verify-only home (one with no identity) appends unsigned, with its reason. They are accepted only
before the chain's first signed event: once a home has signed anything it has an identity, and an unsigned trust
change after that point is reported by :func:`verify_chain`, since anyone who can write the database could forge
one."""


@dataclass(frozen=True)
class ChainProblem:
    """One way the stored chain differs from what was appended. ``seq`` is the event where it shows."""

    seq: int
    kind: ProblemKind
    detail: str


def utc_timestamp(moment: datetime | None = None) -> str:
    """ISO-8601 UTC with microseconds, e.g. ``2025-11-22T02:56:01.123456Z``: sorts as text, parses everywhere."""
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_json(value: Any) -> str:
    return rfc8785.dumps(value).decode("utf-8")


def event_hash(event: AuditEvent, *, seq: int | None = None) -> str:
    """The hash an event's fields call for (optionally as if it had sequence number ``seq``).

    ``details`` is stored as canonical JSON; text that is not (re-spaced, unparseable) hashes as raw text, so any
    change to the stored bytes mismatches, not only changes of meaning.
    """
    try:
        details: Any = json.loads(event.details)
        if canonical_json(details) == event.details:
            return _hash_document(event, details, seq)
    except (ValueError, rfc8785.CanonicalizationError):
        pass
    return _hash_document(event, {"non-canonical details": event.details}, seq)


def _hash_document(event: AuditEvent, details: Any, seq: int | None) -> str:
    document = {
        "seq": event.seq if seq is None else seq,
        "time": event.time,
        "actor": event.actor,
        "action": event.action,
        "subject_name": event.subject_name,
        "subject_version": event.subject_version,
        "subject_digest": event.subject_digest,
        "details": details,
        "prev_hash": event.prev_hash,
    }
    return hashlib.sha256(rfc8785.dumps(document)).hexdigest()


def signed_message(event_hash_hex: str) -> bytes:
    """The bytes an actor signs for an event: the raw 32-byte hash."""
    return bytes.fromhex(event_hash_hex)


@dataclass(frozen=True)
class AuditActor:
    """Who is acting, and how they sign audit events (``sign(message) -> signature bytes``). A home without an
    identity acts with ``sign=None`` and says why in ``unsigned_reason`` (see :data:`KEYLESS_ACTIONS`)."""

    fingerprint: str
    sign: Callable[[bytes], bytes] | None
    unsigned_reason: str | None = None


@dataclass(frozen=True)
class Entry:
    """One event to append: what was done, to which subject (name, version number, content digest), details."""

    action: str
    subject_name: str | None
    subject_version: int | None
    subject_digest: str | None
    details: Mapping[str, Any]


def append(
    session: Session,
    *,
    actor_fingerprint: str,
    sign: Sign | None,
    action: str,
    subject_name: str | None,
    subject_version: int | None,
    subject_digest: str | None,
    details: Mapping[str, Any],
) -> AuditEvent:
    """Add the next event to the chain; the caller's serialised write transaction commits it. ``sign=None`` appends
    it unsigned, which only :data:`UNSIGNED_ACTIONS` with a reason in ``details`` may be."""
    entry = Entry(action, subject_name, subject_version, subject_digest, details)
    return append_many(session, actor_fingerprint=actor_fingerprint, sign=sign, entries=[entry])[0]


Subject = tuple[str | None, int | None, str | None]
"""(adapter name, version number, content digest) an audit event is about."""


def append_by(
    session: Session, actor: AuditActor, action: str, subject: Subject, details: Mapping[str, Any]
) -> AuditEvent:
    """:func:`append` for an actor of the catalog, signed with its key."""
    name, number, digest = subject
    if actor.sign is None:
        details = {**details, UNSIGNED_REASON: actor.unsigned_reason or ""}
    return append(
        session,
        actor_fingerprint=actor.fingerprint,
        sign=actor.sign,
        action=action,
        subject_name=name,
        subject_version=number,
        subject_digest=digest,
        details=details,
    )


def append_many(
    session: Session, *, actor_fingerprint: str, sign: Sign | None, entries: Sequence[Entry]
) -> list[AuditEvent]:
    """Append ``entries`` in order, chained to each other, with one insert: the chain head is read and written
    once, so a transaction recording a batch (a library scan) pays for one append, not one per event."""
    for entry in entries:
        if sign is None and not _may_be_unsigned(entry.action, entry.details):
            raise ValueError(
                f"a {entry.action} event must be signed, or be one of {sorted(UNSIGNED_ACTIONS)} with a reason"
            )
    roles.check_actor(session, actor_fingerprint, [entry.action for entry in entries])
    head = session.get(ChainHead, 1)
    last = _last_event(session)
    seq, previous = (last.seq, last.hash) if last is not None else (0, GENESIS_HASH)
    events = []
    for entry in entries:
        seq += 1
        details = canonical_json(dict(entry.details))
        event = AuditEvent(
            seq=seq,
            time=utc_timestamp(),
            actor=actor_fingerprint,
            action=entry.action,
            subject_name=entry.subject_name,
            subject_version=entry.subject_version,
            subject_digest=entry.subject_digest,
            details=details,
            prev_hash=previous,
            hash="",
            signature="",
        )
        event.hash = previous = _hash_document(event, json.loads(details), None)  # canonical by construction
        event.signature = "" if sign is None else base64.b64encode(sign(signed_message(event.hash))).decode("ascii")
        events.append(event)
    columns = AuditEvent.__table__.columns.keys()  # type: ignore[attr-defined]
    session.execute(insert(AuditEvent), [{name: getattr(e, name) for name in columns} for e in events])
    if head is None:
        session.add(ChainHead(id=1, seq=seq, hash=previous))
    else:
        head.seq, head.hash = seq, previous
        session.add(head)
    session.flush()
    return events


def _may_be_unsigned(action: str, details: Any) -> bool:
    reason = details.get(UNSIGNED_REASON) if isinstance(details, Mapping) else None
    return action in UNSIGNED_ACTIONS | KEYLESS_ACTIONS and isinstance(reason, str) and bool(reason.strip())


def unsigned_reason(event: AuditEvent) -> str | None:
    """Why an event was appended unsigned, or None for a signed event (or a blank signature with no valid reason,
    which ``verify_chain`` reports)."""
    if event.signature != "":
        return None
    try:
        details = json.loads(event.details)
    except ValueError:
        return None
    return str(details[UNSIGNED_REASON]) if _may_be_unsigned(event.action, details) else None


def _last_event(session: Session) -> AuditEvent | None:
    return session.exec(select(AuditEvent).order_by(col(AuditEvent.seq).desc()).limit(1)).first()


def head(session: Session) -> tuple[int, str] | None:
    """(seq, hash) of the newest event as the head row records it; keep a copy to detect truncation later."""
    row = session.get(ChainHead, 1)
    return (row.seq, row.hash) if row is not None else None


def query(
    session: Session,
    *,
    who: str | None = None,
    adapter: str | None = None,
    action: str | None = None,
    since: datetime | str | None = None,
    limit: int | None = None,
) -> list[AuditEvent]:
    """Events in chain order (oldest first). ``who`` is a fingerprint prefix; ``limit`` keeps the newest N."""
    statement = select(AuditEvent)
    if who:
        statement = statement.where(col(AuditEvent.actor).startswith(who, autoescape=True))
    if adapter is not None:
        # Two indexed lookups joined by a UNION: an OR of the two would make SQLite read the whole log (a 100,000-event
        # log took 80 ms per `show`, where this takes well under one).
        named = select(AuditEvent.seq).where(col(AuditEvent.subject_name) == adapter)
        listed = select(AuditEvent.seq).where(_names_adapter(adapter))
        statement = statement.where(col(AuditEvent.seq).in_(union(named, listed)))
    if action is not None:
        statement = statement.where(AuditEvent.action == action)
    if since is not None:
        statement = statement.where(AuditEvent.time >= (since if isinstance(since, str) else utc_timestamp(since)))
    statement = statement.order_by(col(AuditEvent.seq).desc())
    if limit is not None:
        statement = statement.limit(limit)
    events = list(reversed(session.exec(statement).all()))
    if adapter is not None:  # the text match above may also hit a base model of that name
        events = [e for e in events if e.subject_name == adapter or adapter in _listed_adapters(e)]
    return events


LISTS_ADAPTERS: Final = frozenset({"generate"})
"""Actions whose event names several adapters in ``details.adapters`` (one image made with many) instead of one
subject; ``query(adapter=…)`` finds them too."""


def _names_adapter(adapter: str) -> ColumnElement[bool]:
    """Events whose canonical details contain ``"name":"<adapter>"``: a cheap pre-filter, refined in Python."""
    needle = f'"name":{canonical_json(adapter)}'
    return and_(
        col(AuditEvent.action).in_(sorted(LISTS_ADAPTERS)), col(AuditEvent.details).contains(needle, autoescape=True)
    )


def _listed_adapters(event: AuditEvent) -> set[str]:
    if event.action not in LISTS_ADAPTERS:
        return set()
    try:
        listed = json.loads(event.details).get("adapters", [])
    except (ValueError, AttributeError):
        return set()
    return {item["name"] for item in listed if isinstance(item, dict) and isinstance(item.get("name"), str)}


def count(session: Session) -> int:
    return session.exec(select(func.count()).select_from(AuditEvent)).one()


# --- verification ----------------------------------------------------------------------------------------------


def verify_chain(
    session: Session,
    public_keys: Mapping[str, str],
    verify: Verify,
    *,
    expected_head: tuple[int, str] | None = None,
) -> list[ChainProblem]:
    """Every problem with the stored chain, in seq order; an empty list means it is intact.

    ``public_keys`` maps actor fingerprints to PEM public keys; ``expected_head`` is a (seq, hash) kept outside
    the database, checked in addition to the ``audit_head`` row.
    """
    chain = _Chain(list(session.exec(select(AuditEvent).order_by(col(AuditEvent.seq))).all()))
    problems: list[ChainProblem] = []
    signed_before = False
    for index, event in enumerate(chain.events):
        problems += _check_link(chain, index)
        problems += _check_signature(event, public_keys, verify)
        if event.signature == "" and event.action in KEYLESS_ACTIONS and signed_before:
            detail = f"an unsigned {event.action} after the home signed events: a home with an identity signs these"
            problems.append(ChainProblem(event.seq, "bad-signature", detail))
        signed_before = signed_before or event.signature != ""
    problems += _check_roles(session, chain.events)
    problems += _check_head(chain.events, head(session), "the audit_head row")
    if expected_head is not None:
        problems += _check_head(chain.events, expected_head, "the head kept outside the database")
    return sorted(problems, key=lambda problem: problem.seq)


def _check_roles(session: Session, events: Sequence[AuditEvent]) -> list[ChainProblem]:
    """Replay the signed role grants in chain order: an event whose actor lacked the role its action needs at that
    point, or a role table that differs from what the grants give, is ``unauthorized`` (someone wrote the database
    around lorahub, whose every write checks the role first)."""
    replay = roles.Replay()
    for event in events:
        replay.event(event.seq, event.actor, event.action, event.details)
    replay.compare(roles.stored_roles(session), events[-1].seq if events else 0)
    return [ChainProblem(problem.seq, "unauthorized", problem.detail) for problem in replay.problems]


class _Chain:
    """The stored events and the order their ``prev_hash`` links give them, whatever their ``seq`` says."""

    def __init__(self, events: list[AuditEvent]) -> None:
        self.events = events
        self.by_hash = {event.hash: index for index, event in enumerate(events)}
        self._origin: dict[int, int | None] = {}

    def original_seq(self, index: int) -> int | None:
        """The seq an event had when appended: one more than the event its prev_hash names, back to the start.
        None when the links leave the stored events (a deletion) or loop (a forgery)."""
        trail: list[int] = []
        seen: set[int] = set()
        current = index
        while current not in self._origin:
            event = self.events[current]
            source = self.by_hash.get(event.prev_hash)
            if event.prev_hash == GENESIS_HASH:
                self._origin[current] = 1
            elif source is None or source in seen or source == current:
                self._origin[current] = None
            else:
                trail.append(current)
                seen.add(current)
                current = source
        value = self._origin[current]
        for step in reversed(trail):
            value = None if value is None else value + 1
            self._origin[step] = value
        return self._origin[index]


def _check_link(chain: _Chain, index: int) -> list[ChainProblem]:
    """Compare one event with its own hash and with its stored predecessor."""
    event = chain.events[index]
    previous = chain.events[index - 1] if index > 0 else None
    expected_prev = previous.hash if previous is not None else GENESIS_HASH
    expected_seq = previous.seq + 1 if previous is not None else 1
    intact = event_hash(event) == event.hash
    if event.prev_hash == expected_prev and event.seq == expected_seq:
        return [] if intact else [_edited(event)]
    original = chain.original_seq(index)
    if not intact and original is not None and original != event.seq and event_hash(event, seq=original) == event.hash:
        return [ChainProblem(event.seq, "reordered", f"this event was appended as seq {original}")]
    if intact and original == event.seq and event.prev_hash in chain.by_hash:
        return []  # in its place; the links broke because its predecessor moved, which is reported there
    cause = _broken_link(chain, event, previous, expected_seq, intact=intact)
    return [problem for problem in (None if intact else _edited(event), cause) if problem is not None]


def _broken_link(
    chain: _Chain, event: AuditEvent, previous: AuditEvent | None, expected_seq: int, *, intact: bool
) -> ChainProblem | None:
    """The likeliest cause of a link that does not lead to the stored predecessor (None: the event's own edit)."""
    if event.seq > expected_seq:
        missing = f"{expected_seq}" if event.seq == expected_seq + 1 else f"{expected_seq}..{event.seq - 1}"
        return ChainProblem(event.seq, "deleted", f"event(s) {missing} before it are missing")
    if event.prev_hash in chain.by_hash:
        source = chain.events[chain.by_hash[event.prev_hash]]
        return ChainProblem(event.seq, "reordered", f"it links to seq {source.seq}, not to seq {expected_seq - 1}")
    if not intact:
        return None  # its own prev_hash was edited
    if previous is not None:
        detail = f"seq {event.seq} links to another hash: this event's hash was rewritten"
        return ChainProblem(previous.seq, "edited", detail)
    return ChainProblem(event.seq, "deleted", "the event it follows is missing")


def _edited(event: AuditEvent) -> ChainProblem:
    return ChainProblem(event.seq, "edited", "its fields no longer match its hash")


def _check_signature(event: AuditEvent, public_keys: Mapping[str, str], verify: Verify) -> list[ChainProblem]:
    if event.signature == "":
        if unsigned_reason(event) is not None:
            return []  # nothing to verify; its hash and links were checked like any other event's
        detail = f"unsigned, and a {event.action} event must be signed (or say why it is not)"
        return [ChainProblem(event.seq, "bad-signature", detail)]
    pem = public_keys.get(event.actor)
    if pem is None:
        return [ChainProblem(event.seq, "unknown-actor", f"no public key for actor {event.actor}")]
    try:
        signature = base64.b64decode(event.signature, validate=True)
    except (binascii.Error, ValueError):
        return [ChainProblem(event.seq, "bad-signature", "the signature is not base64")]
    try:
        valid = len(event.hash) == 64 and verify(pem, signed_message(event.hash), signature)
    except ValueError:
        valid = False
    if valid:
        return []
    return [ChainProblem(event.seq, "bad-signature", f"the signature does not verify with {event.actor}'s key")]


def _check_head(events: Sequence[AuditEvent], recorded: tuple[int, str] | None, source: str) -> list[ChainProblem]:
    last = events[-1] if events else None
    if recorded is None:
        if last is None:
            return []
        return [ChainProblem(last.seq, "deleted", f"{source} is missing although events exist")]
    seq, hash_ = recorded
    if last is not None and last.seq == seq and any(event.hash == hash_ for event in reversed(events)):
        return []  # the newest event is there (if it was moved, the link checks report it)
    if last is None or seq > last.seq:
        newest = last.seq if last is not None else 0
        return [ChainProblem(seq, "deleted", f"{source} names seq {seq}; the chain ends at seq {newest}")]
    if seq < last.seq:
        return [ChainProblem(last.seq, "edited", f"{source} names seq {seq}, but the chain goes on to seq {last.seq}")]
    return [ChainProblem(seq, "edited", f"{source} names seq {seq} with another hash than the stored event's")]
