"""Backup and restore: a home exports everything it holds; a restore reads it back only once it verifies, and
writes nothing when it does not."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlmodel import SQLModel

from lorahub import Hub, errors
from lorahub.registry import snapshot
from lorahub.registry.catalog import Filters
from lorahub.sdk.adding import AddOptions
from lorahub.sdk.hub import summary


@pytest.fixture(autouse=True)
def _home_catalogues(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LORAHUB_DATABASE_URL", raising=False)


@pytest.fixture
def source(hub: Hub, example_lora: Callable[..., Path]) -> Hub:
    """A home with two adapters, a second signer on one, a removed version."""
    hub.add(example_lora("pixel", seed=1), AddOptions(license="MIT", tags=["retro"], description="pixel art"))
    hub.add(example_lora("pixel", seed=2), AddOptions(license="MIT"))
    hub.add(example_lora("ink", seed=3), AddOptions(license="CC-BY-4.0"))
    hub.create_identity("Curator <curator@example.com>")
    hub.sign("ink@1", key="Curator")
    hub.remove("pixel@2")
    return hub


def _everything(hub: Hub) -> list[dict[str, object]]:
    versions = hub.catalog.list_versions(Filters(include_removed=True))
    return [summary(v) | {"signatures": [s.keyid for s in v.signatures], "removed": v.removed} for v in versions]


def _empty(hub: Hub) -> bool:
    return snapshot.is_empty(hub.catalog.engine) and not any(hub.settings.blobs_dir.rglob("*/*/*"))


def test_every_table_is_backed_up_or_named_a_cache() -> None:
    tables = set(SQLModel.metadata.tables) - {"alembic_version"}
    assert set(snapshot.SNAPSHOT_TABLES) | snapshot.SKIPPED_TABLES == tables
    assert not set(snapshot.SNAPSHOT_TABLES) & snapshot.SKIPPED_TABLES


@pytest.mark.parametrize("out", ["backup", "backup.tar.gz"])
def test_a_backup_restores_into_a_fresh_home_identically_and_verified(source: Hub, tmp_path: Path, out: str) -> None:
    result = source.backup(tmp_path / out, with_keys=True)
    assert result.rows["version"] == 3 and result.blobs == 3 and not result.missing_blobs
    fresh = Hub.open(tmp_path / "fresh")
    restored = fresh.restore(tmp_path / out)
    assert restored.rows == result.rows and restored.blobs == 3
    assert _everything(fresh) == _everything(source)
    assert fresh.audit() == source.audit() and fresh.verify_audit() == []
    assert fresh.catalog.audit_head() == source.catalog.audit_head()
    assert fresh.verify("ink@1").ok and [v.ref for v in fresh.search("retro")] == ["pixel@1"]
    assert sorted(i.identity.user_id for i in fresh.identities()) == sorted(
        i.identity.user_id for i in source.identities()
    )
    assert fresh.settings.policy_path.read_text() == source.settings.policy_path.read_text()


def test_the_restored_home_goes_on(source: Hub, tmp_path: Path, example_lora: Callable[..., Path]) -> None:
    source.backup(tmp_path / "backup", with_keys=True)
    fresh = Hub.open(tmp_path / "fresh")
    fresh.restore(tmp_path / "backup")
    added = fresh.add(example_lora("pixel", seed=9), AddOptions(license="MIT"))
    assert added.version == 3 and fresh.verify_audit() == []  # numbers and the chain continue


def _edit_rows(folder: Path, table: str, edit: Callable[[dict[str, object]], None]) -> None:
    path = folder / "catalog" / f"{table}.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    edit(rows[0])
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def _tamper_blob(folder: Path) -> None:
    blob = sorted((folder / "blobs" / "sha256").glob("*/*"))[0]
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    blob.chmod(0o644)
    blob.write_bytes(bytes(data))


def _tamper_event(folder: Path) -> None:
    _edit_rows(folder, "audit_event", lambda row: row.update(subject_name="someone-else"))


def _tamper_card(folder: Path) -> None:
    _edit_rows(folder, "version", lambda row: row.update(card_json=str(row["card_json"]).replace("MIT", "CC0-1.0")))


def _tamper_key(folder: Path) -> None:
    other = Hub.open(folder.parent / "other-home")
    identity = other.create_identity("Mallory <m@example.com>")
    _edit_rows(folder, "signing_key", lambda row: row.update(public_pem=identity.public_pem))


def _drop_blob(folder: Path) -> None:
    sorted((folder / "blobs" / "sha256").glob("*/*"))[0].unlink()


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (_tamper_blob, "its bytes hash to"),
        (_drop_blob, "is catalogued but not in the backup"),
        (_tamper_event, "audit event 1: edited"),
        (_tamper_card, "does not verify"),
        (_tamper_key, "is another key"),
    ],
    ids=["blob", "missing-blob", "audit-event", "card", "key"],
)
def test_a_backup_that_does_not_verify_is_refused_and_nothing_is_written(
    source: Hub, tmp_path: Path, tamper: Callable[[Path], None], reason: str
) -> None:
    source.backup(tmp_path / "backup")
    tamper(tmp_path / "backup")
    fresh = Hub.open(tmp_path / "fresh")
    with pytest.raises(errors.RestoreRefusedError, match=reason):
        fresh.restore(tmp_path / "backup")
    assert _empty(fresh)


def test_restore_refuses_a_home_that_is_not_empty_and_backup_a_folder_that_exists(source: Hub, tmp_path: Path) -> None:
    source.backup(tmp_path / "backup")
    with pytest.raises(errors.RestoreRefusedError, match="already holds"):
        source.restore(tmp_path / "backup")
    with pytest.raises(errors.InvalidArgumentError, match="exists"):
        source.backup(tmp_path / "backup")
    (tmp_path / "not-a-backup").mkdir()
    with pytest.raises(errors.RestoreRefusedError, match="manifest"):
        Hub.open(tmp_path / "fresh").restore(tmp_path / "not-a-backup")
