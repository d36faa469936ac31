"""Team roles in the catalogue: every write checks its actor's role in its own transaction, and the audit chain's
replay of the signed grants names any event whose actor lacked the role (a member writing the database directly)."""

from __future__ import annotations

import base64
import json

import pytest
from sqlalchemy import func, insert
from sqlmodel import select

from lorahub import errors
from lorahub.registry import audit as audit_log
from lorahub.registry import roles
from lorahub.registry.blobs import BlobStore
from lorahub.registry.catalog import Catalog, KeyRow
from lorahub.registry.db import write_transaction
from lorahub.registry.models import AuditEvent, ChainHead, TeamRole, Version
from tests.registry.helpers import Signer, new_version, verify_signature


def _key(signer: Signer, name: str) -> KeyRow:
    return KeyRow(signer.fingerprint, name, signer.public_pem)


@pytest.fixture
def team(catalog: Catalog) -> tuple[Catalog, dict[str, Signer]]:
    """A team: an admin, a contributor, a curator and a reader, each granted by the admin."""
    members = {role: Signer.generate() for role in roles.ROLES}
    admin = members["admin"]
    catalog.grant_role(_key(admin, "Admin"), "admin", audit=admin.actor)
    for role in ("contributor", "curator", "reader"):
        catalog.grant_role(_key(members[role], role.title()), role, audit=admin.actor)
    return catalog, members


def _problems(catalog: Catalog) -> list[tuple[int, str]]:
    return [(p.seq, p.kind) for p in catalog.verify_audit(verify=verify_signature)]


def _counts(catalog: Catalog) -> tuple[int, int]:
    with write_transaction(catalog.engine) as session:
        versions = session.exec(select(func.count()).select_from(Version)).one()
        events = session.exec(select(func.count()).select_from(AuditEvent)).one()
    return versions, events


def test_the_role_table_is_data_ordered_lowest_first() -> None:
    assert roles.allows("reader", "generate") and not roles.allows("reader", "add")
    assert roles.allows("contributor", "add") and not roles.allows("contributor", "sign")
    assert roles.allows("curator", "remove") and roles.allows("curator", "add") and not roles.allows("curator", "gc")
    assert roles.allows("admin", roles.GRANT_ACTION) and not roles.allows("curator", roles.GRANT_ACTION)
    assert roles.allows(None, "issue-cert") and not roles.allows(None, "generate")
    assert roles.required_role("a-new-kind-of-write") == "admin"  # unlisted actions are refused to members
    with pytest.raises(errors.UnknownChoiceError):
        roles.parse_role("owner")


def test_without_a_team_anyone_writes_and_the_first_grant_must_be_ones_own_admin(
    catalog: Catalog, store: BlobStore
) -> None:
    alice, bob = Signer.generate(), Signer.generate()
    catalog.upsert_key(_key(bob, "Bob"))
    catalog.add_version(new_version("free", store.put_bytes(b"x")), audit=bob.actor)  # no team: no roles
    with pytest.raises(errors.TeamError, match="no team yet"):
        catalog.grant_role(_key(bob, "Bob"), "admin", audit=alice.actor)
    with pytest.raises(errors.TeamError, match="no team yet"):
        catalog.grant_role(_key(alice, "Alice"), "curator", audit=alice.actor)
    assert not catalog.team_active()
    catalog.grant_role(_key(alice, "Alice"), "admin", audit=alice.actor)
    assert catalog.team_active() and catalog.role_of(alice.fingerprint) == "admin"
    assert [(r.name, r.role) for r in catalog.team_roles()] == [("Alice", "admin")]
    assert _problems(catalog) == []


def test_a_reader_is_refused_every_write_and_nothing_is_written(
    team: tuple[Catalog, dict[str, Signer]], store: BlobStore
) -> None:
    catalog, members = team
    reader = members["reader"]
    version = catalog.add_version(new_version("ok", store.put_bytes(b"y")), audit=members["contributor"].actor)
    before = _counts(catalog)
    attempts = [
        lambda: catalog.add_version(new_version("nope", store.put_bytes(b"z")), audit=reader.actor),
        lambda: catalog.add_signature(version, reader.fingerprint, "c2ln", audit=reader.actor),
        lambda: catalog.remove("ok", audit=reader.actor),
        lambda: catalog.trust_key(reader.fingerprint, "R", reader.public_pem, audit=reader.actor),
        lambda: catalog.grant_role(_key(reader, "Reader"), "admin", audit=reader.actor),
        lambda: catalog.revoke_role(members["admin"].fingerprint, audit=reader.actor),
    ]
    for attempt in attempts:
        with pytest.raises(errors.RoleRequiredError, match="holds the reader role"):
            attempt()
    assert _counts(catalog) == before
    assert catalog.get("ok").signers == version.signers and not catalog.get("ok").removed
    assert catalog.role_of(reader.fingerprint) == "reader"
    catalog.log("generate", audit=reader.actor, details={"image": "x.png"})  # what readers do is recorded
    with pytest.raises(errors.RoleRequiredError, match="has no role"):
        catalog.log("generate", audit=Signer.generate().actor, details={})
    assert _problems(catalog) == []


def test_higher_roles_may_do_what_lower_ones_may(team: tuple[Catalog, dict[str, Signer]], store: BlobStore) -> None:
    catalog, members = team
    curator, contributor = members["curator"], members["contributor"]
    catalog.add_version(new_version("mine", store.put_bytes(b"c")), audit=contributor.actor)
    with pytest.raises(errors.RoleRequiredError, match="to remove versions it needs curator"):
        catalog.remove("mine", audit=contributor.actor)
    catalog.add_version(new_version("theirs", store.put_bytes(b"d")), audit=curator.actor)
    catalog.remove("mine", audit=curator.actor)
    with pytest.raises(errors.TeamError, match="last admin"):
        catalog.revoke_role(members["admin"].fingerprint, audit=members["admin"].actor)
    catalog.revoke_role(contributor.fingerprint, audit=members["admin"].actor)
    with pytest.raises(errors.RoleRequiredError, match="has no role"):
        catalog.add_version(new_version("later", store.put_bytes(b"e")), audit=contributor.actor)
    assert _problems(catalog) == []


def _forge(catalog: Catalog, signer: Signer, action: str, details: dict[str, object]) -> int:
    """What a member with raw database access can do: append a well-formed, correctly signed event without the
    SDK (and so without its role check). Returns its seq."""
    with write_transaction(catalog.engine) as session:
        last = session.exec(select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1)).one()  # type: ignore[attr-defined]
        event = AuditEvent(
            seq=last.seq + 1,
            time=audit_log.utc_timestamp(),
            actor=signer.fingerprint,
            action=action,
            details=audit_log.canonical_json(details),
            prev_hash=last.hash,
            hash="",
            signature="",
        )
        event.hash = audit_log.event_hash(event)
        event.signature = base64.b64encode(signer.sign(bytes.fromhex(event.hash))).decode()
        columns = AuditEvent.__table__.columns.keys()  # type: ignore[attr-defined]
        session.execute(insert(AuditEvent), [{name: getattr(event, name) for name in columns}])
        head = session.get(ChainHead, 1)
        assert head is not None
        head.seq, head.hash = event.seq, event.hash
        session.add(head)
        return event.seq


def test_a_raw_write_by_a_member_without_the_role_is_flagged(team: tuple[Catalog, dict[str, Signer]]) -> None:
    catalog, members = team
    reader = members["reader"]
    assert _problems(catalog) == []

    forged_add = _forge(catalog, reader, "add", {"blob_sha256": "0" * 64})
    assert _problems(catalog) == [(forged_add, "unauthorized")]

    # the reader makes itself admin: a signed grant it had no right to sign, and the row it needs
    details = {"fingerprint": reader.fingerprint, "role": "admin", "name": "R", "public_pem": reader.public_pem}
    forged_grant = _forge(catalog, reader, roles.GRANT_ACTION, details)
    with write_transaction(catalog.engine) as session:
        row = session.get(TeamRole, reader.fingerprint)
        assert row is not None
        row.role = "admin"
        session.add(row)
    # the grant did not count, so what the "admin" does next is flagged too, and so is the table
    forged_remove = _forge(catalog, reader, "remove", {})
    found = catalog.verify_audit(verify=verify_signature)
    assert [(p.seq, p.kind) for p in found] == [
        (forged_add, "unauthorized"),
        (forged_grant, "unauthorized"),
        (forged_remove, "unauthorized"),
        (forged_remove, "unauthorized"),
    ]
    assert "role table gives" in found[-1].detail and "signed grants reader" in found[-1].detail
    assert catalog.role_of(reader.fingerprint) == "admin"  # the SDK believes the table; audit --verify does not


def test_a_role_row_written_around_the_grants_is_flagged(team: tuple[Catalog, dict[str, Signer]]) -> None:
    catalog, members = team
    with write_transaction(catalog.engine) as session:
        session.add(TeamRole(fingerprint="e" * 64, role="admin", granted_by=members["admin"].fingerprint))
    [problem] = catalog.verify_audit(verify=verify_signature)
    assert problem.kind == "unauthorized" and "eeeeeeeeeeeeeeee… admin, the signed grants no role" in problem.detail


def test_grant_events_carry_the_public_key_and_the_role(team: tuple[Catalog, dict[str, Signer]]) -> None:
    catalog, members = team
    grants = catalog.audit_events(action=roles.GRANT_ACTION)
    assert [json.loads(e.details)["role"] for e in grants] == ["admin", "contributor", "curator", "reader"]
    assert all(e.actor == members["admin"].fingerprint for e in grants)
    assert json.loads(grants[-1].details)["public_pem"] == members["reader"].public_pem
    assert catalog.get_key(members["reader"].fingerprint) is not None
