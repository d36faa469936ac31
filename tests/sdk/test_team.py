"""Teams through the SDK: init, join, grants; what each role may do (a reader is refused every write, and nothing
is written); audit --verify catching a member who wrote the database directly; team push.

The team's catalogue here is a SQLite file that the homes share (roles work the same on any backend, and this is
fast); PostgreSQL's own part (database roles, many processes at once) is in test_team_postgres.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from lorahub import Hub, errors
from lorahub.registry.db import write_transaction
from lorahub.sdk.adding import AddOptions


@pytest.fixture(autouse=True)
def _no_database_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LORAHUB_DATABASE_URL", raising=False)  # the environment outranks the team config


def _home(tmp_path: Path, name: str) -> Hub:
    hub = Hub.open(tmp_path / name)
    hub.create_identity(f"{name.title()} <{name}@studio.example>")
    return hub


def _fingerprint(hub: Hub) -> str:
    identity = hub.keys.default()
    assert identity is not None
    return identity.fingerprint


def _ref(added: object) -> str:
    return f"{added.name}@{added.version}"  # type: ignore[attr-defined]


def _blob_files(folder: Path) -> set[str]:
    return {path.name for path in folder.rglob("*") if path.is_file()}


@pytest.fixture
def team(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Hub, Path]:
    """Alice's home, which started a team on a shared SQLite file with a shared blob folder."""
    monkeypatch.chdir(tmp_path)
    alice = _home(tmp_path, "alice")
    status = alice.team_init(
        f"sqlite:///{tmp_path / 'team' / 'catalog.db'}", tmp_path / "team" / "team.toml", blobs_url="team/blobs"
    )
    assert [(m.fingerprint, m.role) for m in status.members] == [(_fingerprint(alice), "admin")]
    assert status.blobs_url == str(tmp_path / "team" / "blobs")  # written absolute: members open it from elsewhere
    return Hub.open(tmp_path / "alice"), tmp_path / "team" / "team.toml"


def _member(tmp_path: Path, name: str, config: Path, admin: Hub, role: str | None) -> Hub:
    """A member's home: its own identity first, then it joins, then the admin grants its public key a role."""
    home = _home(tmp_path, name)
    status = Hub.team_join(config, tmp_path / name)
    assert status.my_role is None
    if role is not None:
        admin.team_grant(None, role, public_pem=home.keys.export_public(name), name=name.title())
    return Hub.open(tmp_path / name)


def test_init_and_join_point_homes_at_the_team_and_grants_are_signed_and_listed(
    tmp_path: Path, team: tuple[Hub, Path]
) -> None:
    alice, config = team
    assert alice.settings.team is not None and alice.settings.team.path == config
    assert alice.settings.sources["database_url"] == "team config"
    assert alice.describe()["team"] == str(config)
    bob = _member(tmp_path, "bob", config, alice, "reader")
    assert bob.settings.database_url == alice.settings.database_url
    assert bob.settings.blobs_dir == alice.settings.blobs_dir != bob.settings.home / "blobs"
    assert (tmp_path / "bob" / "keys").is_dir()  # keys stay in the member's home
    listed = bob.team()
    assert [(m.name, m.role) for m in listed.members] == [("Alice <alice@studio.example>", "admin"), ("Bob", "reader")]
    assert listed.my_role == "reader"
    grants = alice.audit(action="role-grant")
    assert [g["details"]["role"] for g in grants] == ["admin", "reader"] and all(g["signed"] for g in grants)
    assert bob.verify_audit() == []

    with pytest.raises(errors.TeamError, match="exists"):
        alice.team_init(alice.settings.database_url, config)
    with pytest.raises(errors.TeamError, match="already has a team"):
        alice.team_init(alice.settings.database_url, tmp_path / "second.toml")
    with pytest.raises(errors.TeamError, match="does not exist"):
        Hub.team_join(tmp_path / "nowhere.toml", tmp_path / "bob")
    with pytest.raises(errors.TeamError, match="last admin"):
        alice.team_revoke(_fingerprint(alice)[:12])
    with pytest.raises(errors.TeamError, match="knows no key"):
        alice.team_grant("0123456789abcdef", "curator")


def test_a_reader_may_read_but_not_add_sign_remove_or_gc_and_nothing_is_written(
    tmp_path: Path, team: tuple[Hub, Path], example_lora: Callable[..., Path]
) -> None:
    alice, config = team
    bob = _member(tmp_path, "bob", config, alice, "reader")
    added = alice.add(example_lora("shared", seed=1), AddOptions(license="MIT"))
    blobs = _blob_files(alice.settings.blobs_dir)
    events = len(alice.audit())

    attempts: list[Callable[[], object]] = [
        lambda: bob.add(example_lora("mine", seed=2), AddOptions(license="MIT")),
        lambda: bob.sign(_ref(added)),
        lambda: bob.remove(_ref(added)),
        bob.gc,
        lambda: bob.trust_add(alice.keys.export_public("alice")),
        lambda: bob.team_grant(_fingerprint(bob), "admin"),
    ]
    for attempt in attempts:
        with pytest.raises(errors.RoleRequiredError, match="holds the reader role") as refused:
            attempt()
        assert "lorahub team grant" in str(refused.value.hint)
    assert _blob_files(alice.settings.blobs_dir) == blobs
    assert len(alice.audit()) == events
    assert [v.ref for v in bob.list_versions()] == [_ref(added)] and not bob.version(_ref(added)).removed
    assert bob.verify(_ref(added)).ok and [v.ref for v in bob.search("shared")] == [_ref(added)]

    alice.team_grant(_fingerprint(bob)[:12], "contributor")
    mine = bob.add(example_lora("mine", seed=2), AddOptions(license="MIT"))
    with pytest.raises(errors.RoleRequiredError, match="to sign cards it needs curator"):
        bob.sign(_ref(added))
    alice.team_grant(_fingerprint(bob)[:12], "curator")
    assert bob.sign(_ref(added))[1] and [v.ref for v in bob.remove(_ref(mine))] == [_ref(mine)]
    alice.team_revoke(_fingerprint(bob)[:12])
    with pytest.raises(errors.RoleRequiredError, match="has no role"):
        bob.add(example_lora("later", seed=3), AddOptions(license="MIT"))
    assert alice.verify_audit() == []


def test_a_raw_database_write_by_a_non_admin_is_flagged(tmp_path: Path, team: tuple[Hub, Path]) -> None:
    alice, config = team
    bob = _member(tmp_path, "bob", config, alice, "contributor")
    assert bob.verify_audit() == []
    with write_transaction(bob.catalog.engine) as session:  # bob, with the database's password, bypasses lorahub
        session.connection().exec_driver_sql(
            f"UPDATE team_role SET role = 'admin' WHERE fingerprint = '{_fingerprint(bob)}'"
        )
    assert bob.catalog.role_of(_fingerprint(bob)) == "admin"  # the SDK reads the table…
    [problem] = alice.verify_audit()  # …and audit --verify holds it to the signed grants
    assert problem["kind"] == "unauthorized" and "signed grants contributor" in problem["detail"]


def test_team_push_copies_a_homes_own_versions_with_their_history(
    tmp_path: Path, team: tuple[Hub, Path], example_lora: Callable[..., Path]
) -> None:
    alice, config = team
    carol = _home(tmp_path, "carol")  # she worked alone before joining
    first = carol.add(example_lora("sketch", seed=5), AddOptions(license="MIT"))
    carol.create_identity("Curator <curator@studio.example>")
    carol.sign(_ref(first), key="Curator")
    second = carol.add(example_lora("ink", seed=6), AddOptions(license="MIT"))
    carol = _member_existing(tmp_path, "carol", config, alice, "contributor")
    with pytest.raises(errors.AdapterNotFoundError):
        carol.version(_ref(first))  # the team does not have it yet

    report = carol.team_push()
    assert sorted(report.pushed) == sorted([_ref(first), _ref(second)]) and not report.refused
    pushed = carol.version(_ref(first))
    assert pushed.content_digest == first.content_digest and carol.verify(_ref(first)).ok
    assert carol.blobs.exists(pushed.blob_sha256) and len(pushed.signatures) == 2
    assert carol.catalog.get_key(pushed.signatures[1].keyid) is not None  # recorded, so the team can check it
    [event] = carol.audit(action="push-import", adapter="sketch")
    assert [e["action"] for e in event["details"]["history"]] == ["add", "sign"]
    assert event["details"]["from_home"] == str(tmp_path / "carol")
    again = carol.team_push()
    assert again.pushed == () and sorted(again.already) == sorted([_ref(first), _ref(second)])
    assert carol.verify_audit() == []


def _member_existing(tmp_path: Path, name: str, config: Path, admin: Hub, role: str) -> Hub:
    Hub.team_join(config, tmp_path / name)
    admin.team_grant(None, role, public_pem=Hub.open(tmp_path / name).keys.export_public(name))
    return Hub.open(tmp_path / name)
