"""A team on PostgreSQL: the database roles docs/team.md gives make a reader's login read-only (the server refuses
its writes); four members in four processes add, sign and remove at once and every event's signer held its role;
a backup restores into a PostgreSQL catalogue that goes on numbering."""

from __future__ import annotations

import multiprocessing
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import sqlalchemy.exc
from sqlalchemy.engine import make_url

from lorahub import Hub, errors
from lorahub.dev.example_lora import write_example_lora
from lorahub.registry import roles
from lorahub.registry.catalog import Catalog, KeyRow
from lorahub.sdk.adding import AddOptions
from lorahub.sdk.home import TEAM_KEY, TeamConfig, set_config_value
from tests.registry.helpers import PG_URL, Signer, new_version, postgres_reason, postgres_schema, verify_signature
from tests.sdk.team_helpers import documented_grants, member_work
from tests.support import postgres_unavailable

pytestmark = pytest.mark.postgres


@pytest.fixture
def schema_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.delenv("LORAHUB_DATABASE_URL", raising=False)
    reason = postgres_reason()
    if reason is not None:
        postgres_unavailable(reason)
    with postgres_schema() as url:
        yield url


def _login_url(url: str, user: str) -> str:
    return make_url(url).set(username=user, password=None).render_as_string(hide_password=False)


def test_the_documented_grants_make_a_readers_login_read_only(schema_url: str) -> None:
    admin, reader = Signer.generate(), Signer.generate()
    catalog = Catalog.open(schema_url)  # the owner creates the tables and the team
    catalog.grant_role(KeyRow(admin.fingerprint, "Admin", admin.public_pem), "admin", audit=admin.actor)
    catalog.grant_role(KeyRow(reader.fingerprint, "Reader", reader.public_pem), "reader", audit=admin.actor)
    suffix = uuid.uuid4().hex[:8]
    names = {
        "lorahub_reader": f"lh_reader_{suffix}",
        "lorahub_member": f"lh_member_{suffix}",
        "carol": f"carol_{suffix}",
    }
    parsed = make_url(schema_url)
    schema = str(parsed.query["options"]).removeprefix("-csearch_path=")
    statements = documented_grants(database=str(parsed.database), schema=schema, names=names)
    assert any(s.startswith("GRANT SELECT ON ALL TABLES") for s in statements)
    owner = sa.create_engine(schema_url)
    try:
        with owner.begin() as connection:
            for statement in statements:
                connection.exec_driver_sql(statement)
        _as_reader(Catalog.open(_login_url(schema_url, names["carol"])), reader)
        problems = catalog.verify_audit(verify=verify_signature)
        assert [p.kind for p in problems] == ["unauthorized"] and "a add event" in problems[0].detail
    finally:
        catalog.engine.dispose()
        with owner.begin() as connection:
            for role in names.values():
                connection.exec_driver_sql(f"DROP OWNED BY {role}")
                connection.exec_driver_sql(f"DROP ROLE {role}")
        owner.dispose()


INSERT_VERSION = (
    "INSERT INTO version (adapter_id, number, content_digest, blob_sha256, file_name, format, family, license_id,"
    " commercial_use, consent_status, description, trigger_words, tags, card_json, signers, created_at)"
    " VALUES (1, 1, 'x', 'x', 'x', 'x', 'x', 'x', '', '', '', '[]', '[]', '', '', now())"
)


def _as_reader(catalog: Catalog, reader: Signer) -> None:
    """What the reader's login can and cannot do, lorahub or not."""
    try:
        assert catalog.team_active() and catalog.role_of(reader.fingerprint) == "reader"  # it reads
        catalog.log("generate", audit=reader.actor, details={"image": "cat.png"})  # its events are recorded
        for statement in (INSERT_VERSION, "UPDATE version SET removed_at = now()", "DELETE FROM audit_event"):
            with pytest.raises(sqlalchemy.exc.ProgrammingError, match="permission denied"), catalog.engine.begin() as c:
                c.exec_driver_sql(statement)  # the SDK's check bypassed: the server refuses
        with pytest.raises(errors.RoleRequiredError):  # through lorahub: its own check, then the server's
            catalog.grant_role(KeyRow(reader.fingerprint, "R", reader.public_pem), "admin", audit=reader.actor)
        blob = new_version("x", _blob()).blob
        with pytest.raises(errors.DatabaseError, match="permission denied"):
            catalog.add_version(new_version("x", blob), audit=reader.actor)
        # what it may append, it may forge: the chain then names it
        with catalog.engine.begin() as connection:
            last = connection.exec_driver_sql("SELECT seq, hash FROM audit_event ORDER BY seq DESC LIMIT 1").one()
        _forged_append(catalog, reader, last)
    finally:
        catalog.engine.dispose()


def _blob() -> object:
    from lorahub.registry.blobs import BlobInfo

    return BlobInfo("0" * 64, 1, Path("/nonexistent"), existed=False)


def _forged_append(catalog: Catalog, signer: Signer, last: sa.Row[tuple[int, str]]) -> None:
    import base64

    from lorahub.registry import audit as audit_log
    from lorahub.registry.models import AuditEvent

    event = AuditEvent(
        seq=last[0] + 1,
        time=audit_log.utc_timestamp(),
        actor=signer.fingerprint,
        action="add",
        details="{}",
        prev_hash=last[1],
        hash="",
        signature="",
    )
    event.hash = audit_log.event_hash(event)
    event.signature = base64.b64encode(signer.sign(bytes.fromhex(event.hash))).decode()
    columns = AuditEvent.__table__.columns.keys()  # type: ignore[attr-defined]
    with catalog.engine.begin() as connection:
        connection.execute(sa.insert(AuditEvent.__table__), [{c: getattr(event, c) for c in columns}])  # type: ignore[attr-defined]
        connection.exec_driver_sql(f"UPDATE audit_head SET seq = {event.seq}, hash = '{event.hash}'")


def _key_of(home: Path) -> str:
    identity = Hub.open(home).keys.default()
    assert identity is not None
    return identity.fingerprint


def _member(root: Path, name: str, config: Path, admin: Hub, role: str) -> str:
    home = Hub.open(root / name)
    identity = home.create_identity(f"{name} <{name}@studio.example>")
    set_config_value(home.settings.config_path, TEAM_KEY, str(config))
    admin.team_grant(None, role, public_pem=identity.public_pem, name=name)
    return str(root / name)


@pytest.mark.slow
def test_four_members_at_once_keep_one_chain_and_every_signer_held_its_role(schema_url: str, tmp_path: Path) -> None:
    """Four processes, each its own home and identity, one PostgreSQL catalogue and one shared blob folder: 24 adds
    of 4 distinct files (the same bytes added by several members at once), curators signing each other's versions
    and removing some of their own, contributors refused removals, all at the same time."""
    admin = Hub.open(tmp_path / "admin")
    admin.create_identity("Admin <admin@studio.example>")
    config = tmp_path / "team.toml"
    admin.team_init(schema_url, config, blobs_url=str(tmp_path / "blobs"))
    admin = Hub.open(tmp_path / "admin")
    pool = []
    for seed in range(4):
        path = tmp_path / "pool" / f"shared-{seed}.safetensors"
        path.parent.mkdir(exist_ok=True)
        write_example_lora(path, rank=1, seed=seed, name=f"shared-{seed}")
        pool.append(str(path))
    members = [("ann", "curator"), ("ben", "contributor"), ("cat", "curator"), ("dan", "contributor")]
    plans = []
    for index, (name, role) in enumerate(members):
        home = _member(tmp_path, name, config, admin, role)
        files = pool[index % 2 :] + pool[: index % 2]  # everyone adds the same files, in two orders
        plans.append((home, {"files": files + files[:2], "prefix": name, "curator": role == "curator"}))

    context = multiprocessing.get_context("spawn")
    barrier = context.Manager().Barrier(len(plans))
    with context.Pool(len(plans)) as pool_of_members:
        results = pool_of_members.starmap(member_work, [(home, plan, barrier) for home, plan in plans])

    assert [r["added"] for r in results] == [6, 6, 6, 6]
    assert [r["refused"] for r in results] == [0, 6, 0, 6]
    curators = {_key_of(tmp_path / name) for name, role in members if role == "curator"}
    for version in admin.list_versions():  # every version left carries the signature of each other curator
        assert curators - {version.signers[0]} <= {s.keyid for s in version.signatures}, version.ref
    assert sum(e["action"] == "sign" for e in admin.audit()) == sum(r["signed"] for r in results) >= 30
    assert admin.verify_audit() == []  # the links, every signature, and every signer's role at its event
    events = admin.audit()
    actors = {e["actor"]: e["actor"] for e in events}
    assert len(actors) == 5 and sum(e["action"] == "add" for e in events) == 24
    assert sum(e["action"] == "remove" for e in events) == sum(r["removed"] for r in results) == 6
    replay = roles.Replay()
    for event in admin.catalog.audit_events():
        replay.event(event.seq, event.actor, event.action, event.details)
    assert replay.problems == [] and sorted(replay.roles.values()) == sorted(["admin", *(r for _, r in members)])
    stored = list((tmp_path / "blobs" / "sha256").glob("*/*"))
    assert len(stored) == 4 and all(admin.blobs.verify(path.name) for path in stored)  # shared contents, once each


def test_a_backup_restores_into_postgresql_and_numbering_goes_on(
    schema_url: str, tmp_path: Path, example_lora: Callable[..., Path]
) -> None:
    alone = Hub.open(tmp_path / "alone")
    alone.create_identity("Eve <eve@studio.example>")
    alone.add(example_lora("wave", seed=1), AddOptions(license="MIT"))
    alone.add(example_lora("wave", seed=2), AddOptions(license="MIT"))
    alone.backup(tmp_path / "backup", with_keys=True)
    target = tmp_path / "on-postgres"
    target.mkdir()
    (tmp_path / "pg-team.toml").write_text(TeamConfig(tmp_path / "pg-team.toml", schema_url).text())
    set_config_value(target / "config.toml", TEAM_KEY, str(tmp_path / "pg-team.toml"))
    restored = Hub.open(target)
    assert restored.settings.database_url == schema_url != PG_URL
    restored.restore(tmp_path / "backup")
    assert restored.verify_audit() == [] and restored.verify("wave@2").ok
    added = restored.add(example_lora("other", seed=3), AddOptions(license="MIT"))  # ids continue past the restored
    assert (added.name, added.version) == ("other", 1) and [v.ref for v in restored.search("wave")] == [
        "wave@2",
        "wave@1",
    ]
