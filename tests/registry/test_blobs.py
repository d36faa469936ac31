"""The content-addressed blob store: dedup, read-only blobs, and no half-written blob after any failure."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import stat
from pathlib import Path

import pytest

from lorahub import errors
from lorahub.registry.blobs import BlobStore
from tests.registry.helpers import slow_blob_writer


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _temp_files(store: BlobStore) -> list[Path]:
    return sorted(store.temp_dir.glob(".tmp-*")) if store.temp_dir.exists() else []


def test_put_twice_stores_one_read_only_blob(store: BlobStore, tmp_path: Path) -> None:
    source = tmp_path / "a.safetensors"
    source.write_bytes(b"adapter bytes" * 1000)
    first = store.put_file(source)
    second = store.put_file(source)
    assert (first.existed, second.existed) == (False, True)
    assert first.sha256 == second.sha256 == _sha(source.read_bytes())
    assert first.path == store.path_for(first.sha256) == store.root / "sha256" / first.sha256[:2] / first.sha256
    assert first.size == source.stat().st_size
    assert stat.S_IMODE(first.path.stat().st_mode) == 0o444
    assert list(store.iter_blobs()) == [first.sha256]
    assert _temp_files(store) == []


def test_writer_streams_chunks(store: BlobStore) -> None:
    chunks = [os.urandom(1000) for _ in range(5)]
    with store.writer() as writer:
        for chunk in chunks:
            writer.write(chunk)
        info = writer.commit()
    assert info.path.read_bytes() == b"".join(chunks)
    assert store.exists(info.sha256) and store.verify(info.sha256)


def test_writer_aborted_by_an_exception_leaves_nothing(store: BlobStore) -> None:
    with pytest.raises(RuntimeError), store.writer() as writer:
        writer.write(b"half a file")
        assert writer.temp_path.exists()
        raise RuntimeError("disk on fire")
    assert not writer.temp_path.exists()
    assert _temp_files(store) == []
    assert not store.exists(_sha(b"half a file"))
    assert list(store.iter_blobs()) == []


def test_writer_left_without_commit_leaves_nothing(store: BlobStore) -> None:
    with store.writer() as writer:
        writer.write(b"forgotten")
    assert _temp_files(store) == [] and list(store.iter_blobs()) == []


def test_expected_hash_mismatch_stores_nothing(store: BlobStore) -> None:
    with pytest.raises(errors.HashMismatchError):
        store.put_bytes(b"actual bytes", expected_sha256=_sha(b"other bytes"))
    assert list(store.iter_blobs()) == [] and _temp_files(store) == []
    assert store.put_bytes(b"actual bytes", expected_sha256=_sha(b"actual bytes").upper()).existed is False


def test_writer_killed_mid_write_leaves_no_blob(store: BlobStore) -> None:
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    child = context.Process(target=slow_blob_writer, args=(str(store.root), ready))
    child.start()
    try:
        assert ready.wait(60), "the child never started writing"
        assert len(_temp_files(store)) == 1
        assert store.cleanup_temp() == []  # the live writer's file is locked and kept
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        child.join(30)
    finally:
        if child.is_alive():
            child.kill()
    assert child.exitcode == -signal.SIGKILL
    assert list(store.iter_blobs()) == []
    assert not store.exists(_sha(b"partial bytes " * 10_000))
    stale = _temp_files(store)
    assert len(stale) == 1
    assert store.cleanup_temp() == stale
    assert _temp_files(store) == []
    info = store.put_bytes(b"partial bytes " * 10_000)
    assert info.existed is False and store.verify(info.sha256)


def test_cleanup_keeps_files_of_live_writers(store: BlobStore) -> None:
    with store.writer() as writer:
        writer.write(b"in progress")
        assert store.cleanup_temp() == []
        assert writer.temp_path.exists()
        info = writer.commit()
    assert store.verify(info.sha256)


def test_verify_detects_damage_and_remove_deletes(store: BlobStore) -> None:
    info = store.put_bytes(b"good bytes")
    os.chmod(info.path, 0o644)
    info.path.write_bytes(b"bad bytes!")
    assert store.verify(info.sha256) is False
    assert store.remove(info.sha256) is True
    assert store.remove(info.sha256) is False
    assert store.verify(info.sha256) is False


def test_paths_refuse_anything_but_a_sha256(store: BlobStore) -> None:
    for bad in ("../../etc/passwd", "AB" * 32, "ab" * 31, ""):
        with pytest.raises(ValueError):
            store.path_for(bad)


def test_writer_whose_caller_hashes_needs_the_hash(store: BlobStore) -> None:
    data = b"hashed elsewhere" * 1000
    sha256 = hashlib.sha256(data).hexdigest()
    with store.writer(hashed_by_caller=True) as writer:
        writer.write(data)
        info = writer.commit(sha256.upper())
    assert info.sha256 == sha256 and info.path.read_bytes() == data
    with store.writer(hashed_by_caller=True) as writer:
        writer.write(data)
        with pytest.raises(ValueError, match="expected_sha256"):
            writer.commit()
    assert list(store.iter_blobs()) == [sha256]
    assert store.cleanup_temp() == []
