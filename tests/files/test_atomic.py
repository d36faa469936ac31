"""The one atomic writer, on the real filesystem: final modes, nothing left behind by a failing writer, and a file
that is replaced whole or not at all."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

import pytest

from lorahub.files.atomic import PendingFile, atomic_file, atomic_write


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _leftovers(folder: Path, *keep: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def test_the_final_mode_is_exact_and_the_file_is_owner_only_while_written(tmp_path: Path) -> None:
    target = tmp_path / "key.pem"
    seen: list[int] = []
    old_umask = os.umask(0)  # a permissive umask must not make the temporary file readable by others
    try:
        with atomic_file(target, mode=0o640) as (out, temp):
            seen.append(_mode(temp))
            out.write(b"secret")
    finally:
        os.umask(old_umask)
    assert seen == [0o600]
    assert _mode(target) == 0o640 and target.read_bytes() == b"secret"
    atomic_write(tmp_path / "blob", [b"a", memoryview(b"b")], mode=0o444)
    assert _mode(tmp_path / "blob") == 0o444 and (tmp_path / "blob").read_bytes() == b"ab"
    atomic_write(tmp_path / "default", [b"x"])
    assert _mode(tmp_path / "default") == 0o600


def test_an_exception_in_the_writer_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old")

    def fail_halfway(out: BinaryIO) -> None:
        out.write(b"half of the new")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(target, fail_halfway)
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path, target.name) == []
    with pytest.raises(RuntimeError), atomic_file(tmp_path / "new.json") as (out, _):
        out.write(b"{")
        raise RuntimeError("interrupted")
    assert _leftovers(tmp_path, target.name) == []


def test_the_content_is_replaced_in_one_step(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old contents")
    with open(target, "rb") as reader_of_old:
        with atomic_file(target) as (out, temp):
            out.write(b"new ")
            out.flush()
            assert target.read_bytes() == b"old contents"  # readers see the old file until the very end
            out.write(b"contents")
        assert reader_of_old.read() == b"old contents"  # a reader that opened it before keeps a whole old file
        assert os.fstat(reader_of_old.fileno()).st_ino != target.stat().st_ino
    assert target.read_bytes() == b"new contents"
    assert not temp.exists() and _leftovers(tmp_path, target.name) == []


def test_exclusive_never_replaces_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "ab.key.pem"
    atomic_write(target, [b"first"], exclusive=True)
    with pytest.raises(FileExistsError):
        atomic_write(target, [b"second"], exclusive=True)
    assert target.read_bytes() == b"first" and _leftovers(tmp_path, target.name) == []


def test_a_pending_file_is_named_only_on_commit(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()
    target = tmp_path / "blob"
    with PendingFile(tmp_path / "tmp", prefix=".tmp-", suffix="", mode=0o444) as pending:
        pending.file.write(b"bytes")
        assert not target.exists() and pending.path.parent == tmp_path / "tmp"
        pending.commit(target, exclusive=True)
    assert target.read_bytes() == b"bytes" and _mode(target) == 0o444
    assert _leftovers(tmp_path / "tmp") == []
    with PendingFile(tmp_path / "tmp") as forgotten:
        forgotten.file.write(b"never committed")
    assert _leftovers(tmp_path / "tmp") == [] and _leftovers(tmp_path, "tmp", "blob") == []
