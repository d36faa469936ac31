"""Team roles: who may do what in a shared catalogue, as data, and the one check every write goes through.

A catalogue has a team once an admin has been granted (``lorahub team init`` grants the first one); before that it
is one person's, and every action is allowed, as it always was. In a team each key fingerprint holds at most one
role, and the roles are ordered: a higher role may do everything a lower one may.

==============  ==================================================================================================
role            may
==============  ==================================================================================================
``reader``      list, search, show, verify, load, export, generate (the audit events those leave)
``contributor`` add, scan, train, convert, resize, merge, bake, pull
``curator``     sign, rm, trust and revoke keys (and C2PA roots)
``admin``       grant and revoke roles, gc
==============  ==================================================================================================

The table is :data:`ACTION_ROLES`: an audit action, or an operation that leaves no event (``gc``), to the lowest
role that may perform it. The same table serves twice: :func:`check_actor` runs inside every write transaction,
before its audit event is inserted (so a refused write leaves nothing, and a grant or revoke racing with it is
seen in chain order), and :func:`replay` walks the audit chain, applying the signed grants in order and naming
every event whose signer lacked the role at that point, which is how a member who writes the database directly
is caught.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from sqlmodel import Session, col, select

from lorahub import errors
from lorahub.registry.models import TeamRole

Role = Literal["reader", "contributor", "curator", "admin"]
ROLES: Final[tuple[Role, ...]] = ("reader", "contributor", "curator", "admin")
"""Lowest first: each role may do what the roles before it may."""

GRANT_ACTION: Final = "role-grant"
REVOKE_ACTION: Final = "role-revoke"

ANYONE: Final = None
"""The minimum role of actions about a member's own identity (its C2PA certificate), which a key records before an
admin has granted it anything."""

ACTION_ROLES: Final[Mapping[str, Role | None]] = {
    # what readers do: recorded, but changing nothing in the catalogue
    "verify-failed": "reader",
    "export": "reader",
    "generate": "reader",
    "license-override": "reader",
    "issue-cert": ANYONE,
    "import-cert": ANYONE,
    # contributions: new versions and where files lie
    "add": "contributor",
    "scan": "contributor",
    "locate": "contributor",
    "move": "contributor",
    "train": "contributor",
    "convert": "contributor",
    "resize": "contributor",
    "merge": "contributor",
    "bake": "contributor",
    "pull": "contributor",
    "push-import": "contributor",
    # curation: signatures, removals, trust
    "sign": "curator",
    "sign-oms": "curator",
    "remove": "curator",
    "trust": "curator",
    "revoke": "curator",
    "trust-ca": "curator",
    # administration
    GRANT_ACTION: "admin",
    REVOKE_ACTION: "admin",
    "gc": "admin",
}
"""Each action to the lowest role that may perform it. An action not listed needs ``admin``: a new kind of write
is refused to members until someone decides who may do it."""

OPERATION_NAMES: Final[Mapping[str, str]] = {
    "add": "add versions",
    "sign": "sign cards",
    "remove": "remove versions",
    "trust": "change trust",
    "revoke": "change trust",
    "gc": "collect garbage",
    GRANT_ACTION: "grant roles",
    REVOKE_ACTION: "revoke roles",
}
"""How an error names what was refused, where the action's name alone reads badly."""


def parse_role(text: str) -> Role:
    for role in ROLES:
        if text.strip().lower() == role:
            return role
    raise errors.UnknownChoiceError(f"{text!r} is not a role", hint=f"Use one of: {', '.join(ROLES)}.")


def required_role(action: str) -> Role | None:
    """The lowest role that may perform ``action`` (None: any key, member or not)."""
    return ACTION_ROLES.get(action, "admin")


def allows(role: Role | None, action: str) -> bool:
    """Whether a holder of ``role`` (None: no role) may perform ``action`` in a team."""
    needed = required_role(action)
    if needed is None:
        return True
    return role is not None and ROLES.index(role) >= ROLES.index(needed)


# --- the table --------------------------------------------------------------------------------------------------


def team_active(session: Session) -> bool:
    """A catalogue has a team once it has an admin; before that roles do not apply."""
    statement = select(TeamRole.fingerprint).where(TeamRole.role == "admin").limit(1)
    return session.exec(statement).first() is not None


def role_of(session: Session, fingerprint: str) -> Role | None:
    row = session.get(TeamRole, fingerprint)
    return parse_role(row.role) if row is not None else None


def check_actor(session: Session, fingerprint: str, actions: Iterable[str]) -> None:
    """Raise ``RoleRequiredError`` when the catalogue has a team and ``fingerprint`` may not do one of
    ``actions``. Runs in the caller's write transaction, before anything of that transaction is written."""
    wanted = sorted(set(actions))
    if not wanted or all(required_role(action) is None for action in wanted) or not team_active(session):
        return
    role = role_of(session, fingerprint)
    for action in wanted:
        if not allows(role, action):
            raise refusal(fingerprint, role, action)


def refusal(fingerprint: str, role: Role | None, action: str) -> errors.RoleRequiredError:
    needed = required_role(action)
    what = OPERATION_NAMES.get(action, f"{action} (audit action)")
    held = f"holds the {role} role" if role is not None else "has no role in this team"
    return errors.RoleRequiredError(
        f"key {fingerprint[:16]}… {held}; to {what} it needs {needed} or higher",
        hint=f"Ask a team admin: lorahub team grant {fingerprint[:16]} {needed}. `lorahub team list` shows the roles.",
    )


# --- replaying the chain ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoleProblem:
    """An event whose signer lacked the role its action needs when it was appended."""

    seq: int
    detail: str


@dataclass
class Replay:
    """The roles the signed grants give, event by event. ``team`` turns on at the first admin grant."""

    roles: dict[str, Role] = field(default_factory=dict)
    team: bool = False
    problems: list[RoleProblem] = field(default_factory=list)

    def event(self, seq: int, actor: str, action: str, details_json: str) -> None:
        """Judge one event by the roles in force before it, then apply it when it changes roles and may."""
        if self.team and not allows(self.roles.get(actor), action):
            held = self.roles.get(actor)
            held_text = f"held {held}" if held is not None else "held no role"
            self.problems.append(
                RoleProblem(
                    seq, f"a {action} event by {actor[:16]}…, who {held_text}; it needs {required_role(action)}"
                )
            )
            return  # a refused grant or revoke changes nothing
        if action not in (GRANT_ACTION, REVOKE_ACTION):
            return
        details = _details(details_json)
        target, role = details.get("fingerprint"), details.get("role")
        if not isinstance(target, str):
            self.problems.append(RoleProblem(seq, f"a {action} event that names no fingerprint"))
            return
        if action == REVOKE_ACTION:
            self.roles.pop(target, None)
            return
        if role not in ROLES:
            self.problems.append(RoleProblem(seq, f"a grant of unknown role {role!r}"))
            return
        if not self.team and (role != "admin" or target != actor):
            self.problems.append(RoleProblem(seq, "a team's first grant must be its initialiser's own admin role"))
            return
        self.roles[target] = role
        self.team = self.team or role == "admin"

    def compare(self, stored: Mapping[str, str], last_seq: int) -> None:
        """The role table must hold what the signed grants say; a row written around them is reported."""
        for fingerprint in sorted(set(stored) | set(self.roles)):
            table, signed = stored.get(fingerprint), self.roles.get(fingerprint)
            if table != signed:
                self.problems.append(
                    RoleProblem(
                        last_seq,
                        f"the role table gives {fingerprint[:16]}… {table or 'no role'}, "
                        f"the signed grants {signed or 'no role'}",
                    )
                )


def stored_roles(session: Session) -> dict[str, str]:
    return {row.fingerprint: row.role for row in session.exec(select(TeamRole).order_by(col(TeamRole.fingerprint)))}


def _details(details_json: str) -> dict[str, object]:
    try:
        value = json.loads(details_json)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
