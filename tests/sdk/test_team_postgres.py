"""A team on PostgreSQL: the database roles docs/team.md gives make a reader's login read-only (the server refuses
its writes); four members in four processes, their blobs in one SeaweedFS bucket, add, sign, remove and collect
garbage at once, and nothing is lost, every object verifies and every event's signer held its role; a backup
restores into a PostgreSQL catalogue that goes on numbering."""

from __future__ import annotations

import hashlib
import json
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
from lorahub.registry.s3blobs import S3BlobStore
from lorahub.sdk.adding import AddOptions
from lorahub.sdk.home import TEAM_KEY, TeamConfig, set_config_value
from tests.registry.helpers import PG_URL, Signer, new_version, postgres_reason, postgres_schema, verify_signature
from tests.sdk.team_helpers import documented_grants, member_work
from tests.support import SeaweedFS, postgres_unavailable

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


KEPT, FLEETING, ADDS_EACH = 5, 5, 50
"""Contents every member adds and keeps; contents the curators and the admin add and remove at once, so that the
admin's ``gc`` deletes them while others are adding the same bytes again; adds per member (200 in all)."""


def _pool(folder: Path, seeds: range) -> list[str]:
    """Small files, fast to add: the first modules of a rank-1 example LoRA (23 kB instead of its 1.3 MB)."""
    from safetensors.numpy import load_file, save_file

    folder.mkdir()
    for seed in seeds:
        whole = folder / f"whole-{seed}.safetensors"
        write_example_lora(whole, rank=1, seed=seed, name=f"shared-{seed}")
        tensors = dict(sorted(load_file(whole).items())[:12])
        save_file(tensors, folder / f"{seed}.safetensors", {"ss_base_model_version": "sd_v1"})
    return [str(folder / f"{seed}.safetensors") for seed in seeds]


def _plan(name: str, role: str, offset: int, kept: list[str], fleeting: list[str]) -> dict[str, object]:
    """A contributor adds kept contents only; the others alternate a kept one and a fleeting one (removed at once:
    every member tries to remove every other one of its own), each member starting at its own place in both lists.
    Curators sign; the admin collects garbage after each of its adds."""
    files = []
    for index in range(ADDS_EACH):
        source = fleeting if index % 2 and role != "contributor" else kept
        files.append(source[(index // 2 + offset) % len(source)])
    return {"files": files, "prefix": name, "sign": role == "curator", "gc": role == "admin"}


@pytest.mark.slow
def test_four_members_on_postgresql_and_seaweedfs_at_once(
    schema_url: str, s3_blobs_url: str, seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    """Four processes, each its own home and identity, one PostgreSQL catalogue and one SeaweedFS bucket: 200 adds
    of 10 distinct files (the same bytes added by several members at once), two curators signing the others'
    versions, curators and an admin removing half of their own, a contributor refused removals, and the admin
    running ``gc`` after each of its adds, deleting contents just removed while the others add them again.
    Afterwards every version's object is in the bucket and hashes to its digest, every object was stored and
    deleted as the audit log and the collections say, the audit chain verifies and every event's signer held its
    role."""
    admin = Hub.open(tmp_path / "admin")
    admin.create_identity("Admin <admin@studio.example>")
    config = tmp_path / "team.toml"
    admin.team_init(schema_url, config, blobs_url=s3_blobs_url)
    admin = Hub.open(tmp_path / "admin")
    kept, fleeting = _pool(tmp_path / "kept", range(KEPT)), _pool(tmp_path / "fleeting", range(KEPT, KEPT + FLEETING))
    members = [("ann", "curator"), ("ben", "contributor"), ("cat", "curator"), ("dan", "admin")]
    plans = [
        (_member(tmp_path, name, config, admin, role), _plan(name, role, offset, kept, fleeting))
        for offset, (name, role) in enumerate(members)
    ]

    admin.catalog.engine.dispose()  # forked members must not share the test's connections
    context = multiprocessing.get_context("fork")  # a spawned member spends seconds importing before it starts
    barrier = context.Manager().Barrier(len(plans))
    with context.Pool(len(plans)) as pool_of_members:
        work = pool_of_members.starmap_async(member_work, [(home, plan, barrier) for home, plan in plans])
        results = work.get(timeout=600)  # a member stuck for good fails the test rather than hanging the run

    half = ADDS_EACH // 2
    assert [r["added"] for r in results] == [ADDS_EACH] * 4
    assert [(r["removed"], r["refused"]) for r in results] == [(half, 0), (0, half), (half, 0), (half, 0)]
    curators = {_key_of(tmp_path / name) for name, role in members if role == "curator"}
    for version in admin.list_versions():  # every version left carries the signature of each other curator
        assert curators - {version.signers[0]} <= {s.keyid for s in version.signatures}, version.ref
    assert sum(e["action"] == "sign" for e in admin.audit()) == sum(r["signed"] for r in results) >= 200
    assert admin.verify_audit() == []  # the links, every signature, and every signer's role at its event
    events = admin.audit()
    assert len({e["actor"] for e in events}) == 5 and sum(e["action"] == "add" for e in events) == 4 * ADDS_EACH
    assert sum(e["action"] == "remove" for e in events) == 3 * half
    replay = roles.Replay()
    for event in admin.catalog.audit_events():
        replay.event(event.seq, event.actor, event.action, event.details)
    assert replay.problems == [] and sorted(replay.roles.values()) == sorted(["admin", *(r for _, r in members)])
    _check_bucket(admin, seaweedfs, kept, results)


def _check_bucket(admin: Hub, seaweedfs: SeaweedFS, kept: list[str], results: list[dict[str, int]]) -> None:
    """Every version's object is in the bucket and hashes to its digest; no lease is left; the last ``gc`` leaves
    exactly the objects versions reference; every object stored (an add event saying ``stored``) was deleted by a
    ``gc`` or is still there, and nothing else was deleted."""
    store = admin.blobs
    assert isinstance(store, S3BlobStore) and store.where.bucket == seaweedfs.bucket
    versions = admin.list_versions()
    referenced = {v.blob_sha256 for v in versions}
    assert len(versions) == ADDS_EACH + 3 * (ADDS_EACH // 2)
    assert referenced == {hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in kept}
    assert referenced <= set(store.iter_blobs()) and all(store.verify(sha256) for sha256 in referenced)
    assert admin.catalog.leases.live() == []
    collected = sum(r["collected"] for r in results) + admin.gc()[0]
    assert set(store.iter_blobs()) == referenced
    stored = [json.loads(e.details)["blob"] == "stored" for e in admin.catalog.audit_events(action="add")]
    assert sum(stored) == collected + len(referenced) and collected >= FLEETING
    assert all(report.ok for report in admin.verify_all())


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
