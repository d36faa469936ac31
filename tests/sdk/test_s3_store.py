"""A home whose blobs are in an S3-compatible bucket (a real SeaweedFS server): add, verify, load and export
through the verified cache; two machines adding the same content; gc while others add; writers killed mid-upload.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import multiprocessing.process
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lorahub import Hub, errors, inspect
from lorahub.dev.example_lora import write_example_lora
from lorahub.registry.s3blobs import S3BlobStore
from lorahub.sdk.adding import AddOptions, commit, prepare
from lorahub.sdk.home import Settings, open_blob_store
from tests.support import SeaweedFS, real_file

STYLE = "catundchat_sd15_lora__pytorch_lora_weights.safetensors"


def _open(home: Path, identity: str | None = "Alice <alice@example.com>") -> Hub:
    hub = Hub.open(home)
    if identity is not None and not hub.identities():
        hub.create_identity(identity)
    return hub


@pytest.fixture
def s3_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_blobs_url: str) -> Hub:
    monkeypatch.delenv("LORAHUB_DATABASE_URL", raising=False)
    monkeypatch.setenv("LORAHUB_BLOBS_URL", s3_blobs_url)
    return _open(tmp_path / "home")


def _store(hub: Hub) -> S3BlobStore:
    assert isinstance(hub.blobs, S3BlobStore)
    return hub.blobs


def _objects(hub: Hub) -> list[str]:
    return sorted(_store(hub).iter_blobs())


def _add_events(hub: Hub) -> list[dict[str, Any]]:
    return [json.loads(e.details) for e in hub.catalog.audit_events(action="add")]


def test_a_home_keeps_its_blobs_in_the_bucket(s3_home: Hub, s3_blobs_url: str, tmp_path: Path) -> None:
    described = s3_home.describe()
    assert described["blobs"].startswith(f"{s3_blobs_url}/ at http://127.0.0.1:")
    assert described["sources"]["blobs"] == "environment"
    added = s3_home.add(real_file(STYLE), AddOptions(name="style"))
    assert _objects(s3_home) == [added.sha256]
    assert not (s3_home.settings.blobs_dir).exists()  # nothing in the home's own folder
    assert s3_home.show("style")["stored"] is True
    assert _add_events(s3_home)[0]["blob"] == "stored"
    # the bytes went straight up: the cache is filled on demand, by a read that checks their digest
    cached = _store(s3_home).local_path(added.sha256)
    assert not cached.exists()
    report = s3_home.verify("style")
    assert report.ok, report.checks
    assert report.path == str(cached) and cached.read_bytes() == real_file(STYLE).read_bytes()
    s3_home.export("style", tmp_path / "out.safetensors")
    assert inspect(tmp_path / "out.safetensors").hashes.content == added.content_digest
    assert all(r.ok for r in s3_home.verify_all())


def test_a_damaged_object_fails_verification(s3_home: Hub, seaweedfs: SeaweedFS) -> None:
    added = s3_home.add(real_file(STYLE), AddOptions(name="style"))
    store = _store(s3_home)
    original = real_file(STYLE).read_bytes()
    damaged = original[:-1] + bytes([original[-1] ^ 1])
    seaweedfs.client().put_object(Bucket=seaweedfs.bucket, Key=store.where.key(added.sha256), Body=damaged)
    report = s3_home.verify("style")
    assert not report.ok
    assert [(c.name, c.ok) for c in report.checks] == [("blob integrity", False)]
    assert "hash to sha256" in report.checks[0].detail
    assert not store.local_path(added.sha256).exists()  # damaged bytes are never kept
    with pytest.raises(errors.BlobDamagedError):
        s3_home.export("style", s3_home.settings.home / "out.safetensors")
    assert not (s3_home.settings.home / "out.safetensors").exists()


@pytest.mark.parametrize("catalogue", ["separate", "shared"])
def test_the_same_content_from_two_machines_is_stored_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_blobs_url: str, catalogue: str
) -> None:
    """Two homes on one bucket add the same file at the same moment: one object; each add is audited, and its event
    says truthfully whether it stored the bytes or found them stored. With a shared catalogue (a team's), the
    second name needs --allow-duplicate, as in one home."""
    monkeypatch.setenv("LORAHUB_BLOBS_URL", s3_blobs_url)
    if catalogue == "shared":
        monkeypatch.setenv("LORAHUB_DATABASE_URL", f"sqlite:///{tmp_path / 'team.db'}")
    else:
        monkeypatch.delenv("LORAHUB_DATABASE_URL", raising=False)
    machines = [_open(tmp_path / "a", "Alice <alice@example.com>"), _open(tmp_path / "b", "Bob <bob@example.com>")]
    start = threading.Barrier(2)

    def add(hub: Hub, name: str) -> None:
        start.wait()
        hub.add(real_file(STYLE), AddOptions(name=name, allow_duplicate=catalogue == "shared"))

    threads = [threading.Thread(target=add, args=(hub, n)) for hub, n in zip(machines, ["style", "copy"], strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert _objects(machines[0]) == [real_sha256()]
    events = _add_events(machines[0]) if catalogue == "shared" else [e for hub in machines for e in _add_events(hub)]
    assert sorted(e["blob"] for e in events) == ["existed", "stored"]
    assert {e["blob_sha256"] for e in events} == {real_sha256()}
    for hub in machines:
        assert all(r.ok for r in hub.verify_all())


def real_sha256() -> str:
    from tests.support import REAL_FILES

    return str(REAL_FILES[STYLE]["sha256"])


def test_gc_keeps_a_blob_an_add_in_flight_needs(s3_home: Hub) -> None:
    added = s3_home.add(real_file(STYLE), AddOptions(name="style"))
    s3_home.remove("style")
    # another add of the same bytes has stored them (found them stored) but not recorded its version yet
    options = AddOptions(name="style")
    prepared = prepare(s3_home, real_file(STYLE), options)
    assert prepared.blob is not None and prepared.blob.existed
    assert s3_home.gc() == (0, 0)  # its lease keeps the blob
    assert _objects(s3_home) == [added.sha256]
    commit(s3_home, prepared, options, signer=s3_home.signer(), actor=s3_home.audit_actor(s3_home.signer()))
    assert s3_home.catalog.leases.live() == []
    assert s3_home.verify("style@2").ok
    s3_home.remove("style")
    assert s3_home.gc() == (1, added.report.file_size)
    assert _objects(s3_home) == []


def test_a_writer_waits_for_a_collection_in_progress_and_stores_the_blob_again(s3_home: Hub) -> None:
    added = s3_home.add(real_file(STYLE), AddOptions(name="style"))
    s3_home.remove("style")
    claim = s3_home.catalog.leases.claim_for_collection(added.sha256)  # gc, about to delete the object
    assert claim is not None
    assert s3_home.catalog.leases.claim_for_collection(added.sha256) is None  # one collector at a time
    done = threading.Event()

    def add_again() -> None:
        s3_home.add(real_file(STYLE), AddOptions(name="style"))
        done.set()

    writer = threading.Thread(target=add_again)
    writer.start()
    assert not done.wait(0.5)  # it waits: it must not trust an object that is being deleted
    assert _store(s3_home).remove(added.sha256)
    s3_home.catalog.leases.release([claim])
    writer.join()
    assert _objects(s3_home) == [added.sha256]  # stored again
    assert _add_events(s3_home)[-1]["blob"] == "stored"
    assert s3_home.verify("style@2").ok


def test_gc_collects_what_a_dead_writer_left_once_its_lease_is_gone(s3_home: Hub) -> None:
    prepared = prepare(s3_home, real_file(STYLE), AddOptions(name="style"))
    assert prepared.lease is not None and _objects(s3_home) == [prepared.report.hashes.sha256]
    assert s3_home.gc() == (0, 0)  # a writer that may still be alive
    s3_home.catalog.leases.release([prepared.lease])  # it died, and its lease expired
    assert s3_home.gc() == (1, prepared.report.file_size)
    assert _objects(s3_home) == [] and s3_home.list_versions() == []


def test_gc_collects_unrecorded_blobs_from_a_folder_store_too(hub: Hub) -> None:
    prepared = prepare(hub, real_file(STYLE), AddOptions(name="style"))
    assert prepared.blob is not None
    hub.catalog.leases.release([prepared.lease] if prepared.lease else [])
    assert hub.gc() == (1, prepared.report.file_size)
    assert list(hub.blobs.iter_blobs()) == []


def test_gc_takes_no_lease_on_blobs_it_already_deleted(hub: Hub, example_lora: Callable[..., Path]) -> None:
    """The catalogue keeps every blob's row (removed versions name theirs): a later ``gc`` must not claim and release
    each blob collected before, two write transactions that every other writer of a team waits for."""
    import sqlalchemy as sa

    for seed in range(3):
        hub.add(example_lora(f"gone-{seed}", seed=seed), AddOptions(license="MIT"))
        hub.remove(f"gone-{seed}")
    assert hub.gc()[0] == 3 and list(hub.blobs.iter_blobs()) == []
    claims: list[str] = []

    def seen(_c: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO BLOB_LEASE"):
            claims.append(statement)

    sa.event.listen(hub.catalog.engine, "before_cursor_execute", seen)
    try:
        assert hub.gc() == (0, 0)
    finally:
        sa.event.remove(hub.catalog.engine, "before_cursor_execute", seen)
    assert claims == []


def test_config_names_the_store_and_refuses_what_it_cannot_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_blobs_url: str
) -> None:
    monkeypatch.delenv("LORAHUB_BLOBS_URL", raising=False)
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(f'blobs_url = "{s3_blobs_url}"\n')
    shown = json.loads(_lorahub(home, "config", "show", "--json").stdout)
    assert shown["blobs"].startswith(s3_blobs_url) and shown["sources"]["blobs"] == "config.toml"
    plain = Settings.resolve(tmp_path / "plain", env={})
    assert (plain.blobs_url, plain.sources["blobs"], open_blob_store(plain).location) == (
        None,
        "default",
        str(tmp_path / "plain" / "blobs"),
    )
    unusable = Settings.resolve(home, env={"LORAHUB_BLOBS_URL": "ftp://example.com/x"})
    assert unusable.sources["blobs"] == "environment"
    with pytest.raises(errors.SettingsError, match="ftp://") as refused:
        open_blob_store(unusable)
    assert "s3://BUCKET/PREFIX" in str(refused.value.hint)


def _lorahub(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LORAHUB_DATABASE_URL", "LORAHUB_BLOBS_URL")}
    command = [sys.executable, "-m", "lorahub", "--home", str(home), *args]
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise AssertionError(f"lorahub {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


# --- kill -9 at random points --------------------------------------------------------------------------------

KILLS = 10


def _consistent(home: Path, read: set[str]) -> None:
    """Every active version's object is in the bucket with the right bytes (read back once: ``read`` keeps those
    already checked); every object in the bucket is either referenced or held by a live write lease (a killed
    writer's, until it expires); every version verifies."""
    hub = Hub.open(home)
    store = _store(hub)
    referenced = {v.blob_sha256 for v in hub.list_versions()}
    assert all(store.verify(sha256) for sha256 in referenced - read)
    read |= referenced
    leased = {sha256 for sha256, purpose in hub.catalog.leases.live() if purpose == "write"}
    assert set(store.iter_blobs()) <= referenced | leased
    assert all(r.ok for r in hub.verify_all())
    hub.catalog.engine.dispose()


def _add_in_child(home: str, path: str) -> None:
    """A writer process: what ``lorahub add`` runs, in a child forked from the test (a command would spend a second
    importing before it did anything)."""
    Hub.open(home).add(path, AddOptions(name=Path(path).stem))


def _uploading(store: S3BlobStore, sha256: str) -> bool:
    """The bucket shows the file's upload in progress (or done)."""
    key = store.where.key(sha256)
    uploads = store.client.list_multipart_uploads(Bucket=store.where.bucket, Prefix=key).get("Uploads", [])
    return bool(uploads) or store.exists(sha256)


def test_writers_killed_at_random_points_leave_catalogue_and_store_consistent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_blobs_url: str
) -> None:
    """``kill -9`` of a writer adding a 9 MB file (two parts) at random points: half the kills at any moment of the
    whole add, half while its upload is in flight. After each, the catalogue and the bucket agree; at the end every
    file adds cleanly."""
    monkeypatch.delenv("LORAHUB_DATABASE_URL", raising=False)
    monkeypatch.setenv("LORAHUB_BLOBS_URL", s3_blobs_url)
    home = tmp_path / "home"
    _open(home).catalog.engine.dispose()
    files = []
    for seed in range(KILLS + 1):
        files.append(tmp_path / "library" / f"style-{seed}.safetensors")
        files[-1].parent.mkdir(exist_ok=True)
        write_example_lora(files[-1], rank=8, seed=seed, name=f"style-{seed}")
    context = multiprocessing.get_context("fork")

    def start(path: Path) -> multiprocessing.process.BaseProcess:
        child = context.Process(target=_add_in_child, args=(str(home), str(path)))
        child.start()
        return child

    begun = time.monotonic()
    first = start(files[0])
    first.join()
    assert first.exitcode == 0
    whole = time.monotonic() - begun
    store = _store(Hub.open(home))
    chance, read = random.Random(1414), set[str]()
    for run, path in enumerate(files[1:]):
        sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        child = start(path)
        if run % 2 == 0:
            time.sleep(chance.uniform(0, whole))
        else:
            while not _uploading(store, sha256) and child.is_alive():
                time.sleep(0.005)
            time.sleep(chance.uniform(0, 0.1))
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        _consistent(home, read)
    survivor = Hub.open(home)
    batch = survivor.add_tree(tmp_path / "library")  # whatever each kill left, every file adds
    assert batch.failures == [] and len(batch.added) + len(batch.already) == len(files)
    _consistent(home, read)
    assert len(survivor.list_versions()) == len(files)
