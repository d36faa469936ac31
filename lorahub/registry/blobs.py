"""The content-addressed blob store: every catalogued file once, named by the SHA-256 of its bytes.

Two stores implement one small interface, :class:`BlobStorage`: this module's :class:`BlobStore`, a folder (the
home's ``blobs/``, the default), and :class:`~lorahub.registry.s3blobs.S3BlobStore`, an S3-compatible bucket
(``LORAHUB_BLOBS_URL=s3://BUCKET/PREFIX``); the SDK picks one from the settings. What follows describes the
folder.

Layout: ``ROOT/sha256/ab/abcdef…`` (the first two hex digits shard the folders). A blob is written to a temporary file
``ROOT/tmp/.tmp-*`` on the same filesystem while it is hashed, fsynced, made read-only and only then linked to its final
name, and the folder is fsynced (docs/concepts/architecture.md, decision 6). A crash at any moment therefore leaves
either no blob or a complete one, plus possibly a stale temporary file, which :meth:`BlobStore.cleanup_temp` removes.

Each writer holds an exclusive ``flock`` on its temporary file while it lives; the kernel drops the lock when the
process dies, even by SIGKILL. That is how ``cleanup_temp`` tells a stale file from one another process is still
writing: it deletes only the files whose lock it can take.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Protocol, Self

from lorahub import errors
from lorahub.files.atomic import PendingFile, fsync_directory

CHUNK_BYTES: Final = 8 * 1024 * 1024
TEMP_PREFIX: Final = ".tmp-"
READ_ONLY: Final = 0o444
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class BlobInfo:
    """A stored blob. ``existed`` is True when the store already held these bytes and nothing was written.
    ``path`` is where the blob lies on this machine; None for a blob that lies only in a remote store."""

    sha256: str
    size: int
    path: Path | None
    existed: bool


class BlobWriting(Protocol):
    """What :meth:`BlobStorage.writer` returns: chunks in, one content-addressed blob out (see :class:`BlobWriter`)."""

    def write(self, chunk: bytes | bytearray | memoryview) -> None: ...

    def commit(self, expected_sha256: str | None = None) -> BlobInfo: ...

    def abort(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class BlobStorage(Protocol):
    """The interface both blob stores implement; the SDK knows no other. Blobs are named by the SHA-256 of their
    bytes and written once: storing bytes that are already there changes nothing and says so (``existed``)."""

    @property
    def location(self) -> str:
        """Where the blobs are, for people: a folder, or ``s3://BUCKET/PREFIX at ENDPOINT``."""
        ...

    digest_first: bool
    """True when a writer does better given the digest before the bytes (:meth:`writer`'s ``sha256``, with the
    ``source`` file hashed): a remote store then uploads them while they are read, or skips them when it holds them.
    Worth a pass of hashing first."""

    def writer(
        self, *, hashed_by_caller: bool = False, sha256: str | None = None, source: Path | None = None
    ) -> BlobWriting: ...

    def put_file(self, path: str | os.PathLike[str], expected_sha256: str | None = None) -> BlobInfo: ...

    def put_bytes(self, data: bytes, expected_sha256: str | None = None) -> BlobInfo: ...

    def exists(self, sha256: str) -> bool: ...

    def size(self, sha256: str) -> int | None:
        """The blob's size in bytes; None when the store does not hold it."""
        ...

    def local_path(self, sha256: str) -> Path:
        """Where a local copy of the blob is kept on this machine (the blob itself, or its place in a cache)."""
        ...

    def fetch(self, sha256: str) -> Path | None:
        """A local file holding the blob's bytes, fetched (and checked against the digest) when they are remote;
        None when the store does not hold it."""
        ...

    def remove(self, sha256: str) -> bool: ...

    def link(self, path: Path, sha256: str, *, inode: int) -> bool: ...

    def iter_blobs(self) -> Iterator[str]: ...

    def verify(self, sha256: str) -> bool: ...

    def cleanup_stale(self) -> int:
        """Remove what writers that died left behind (temporary files, unfinished uploads); returns how many."""
        ...


def check_sha256(sha256: str) -> str:
    """``sha256`` if it is 64 lowercase hex digits; anything else could escape the store's folders."""
    if not _HEX64.fullmatch(sha256):
        raise ValueError(f"not a lowercase SHA-256 hex digest: {sha256!r}")
    return sha256


class CommitOrAbort:
    """A blob writer as a context manager: left without a commit (an error, an early return), it aborts, and the
    store is as it was."""

    _result: BlobInfo | None

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._result is None:
            self.abort()


class BlobWriter(CommitOrAbort):
    """Streams one blob into a locked temporary file, hashing as it goes; see :meth:`BlobStore.writer`."""

    def __init__(self, store: BlobStore, *, hashed_by_caller: bool = False) -> None:
        self._store = store
        self._hashed_by_caller = hashed_by_caller
        self._sha = hashlib.sha256()
        self._size = 0
        self._result: BlobInfo | None = None
        store.temp_dir.mkdir(parents=True, exist_ok=True)
        self._pending = PendingFile(store.temp_dir, prefix=TEMP_PREFIX, suffix="", mode=READ_ONLY)
        fcntl.flock(self._pending.file.fileno(), fcntl.LOCK_EX)

    @property
    def temp_path(self) -> Path:
        return self._pending.path

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        if self._result is not None or self._pending.file.closed:
            raise ValueError("this blob writer is already committed or aborted")
        self._pending.file.write(chunk)
        if not self._hashed_by_caller:
            self._sha.update(chunk)
        self._size += len(chunk)

    def commit(self, expected_sha256: str | None = None) -> BlobInfo:
        """Make the blob durable under its hash and return where it is. Call it once, inside the ``with``.

        With ``expected_sha256``, bytes that hash otherwise raise ``HashMismatchError`` and nothing is stored.
        """
        if self._result is not None:
            return self._result
        if self._hashed_by_caller:
            if expected_sha256 is None:
                self.abort()
                raise ValueError("a writer whose caller hashes the bytes needs expected_sha256 at commit")
            sha256 = check_sha256(expected_sha256.lower())
        else:
            sha256 = self._sha.hexdigest()
        if expected_sha256 is not None and expected_sha256.lower() != sha256:
            self.abort()
            raise errors.HashMismatchError(
                f"the bytes hash to sha256 {sha256}, not the expected {expected_sha256.lower()}",
                hint="The source changed or was damaged in transit; nothing was stored.",
            )
        final = self._store.path_for(sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._pending.commit(final, exclusive=True)  # never replaces a blob: concurrent writers agree who stored it
        except FileExistsError:
            existed = True
        else:
            existed = False
        self._result = BlobInfo(sha256=sha256, size=self._size, path=final, existed=existed)
        return self._result

    def abort(self) -> None:
        """Drop the temporary file; the store is as it was. Safe to call more than once."""
        self._pending.discard()


class BlobStore:
    """Blobs under ``root``; see the module docstring for the guarantees."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.blob_dir = self.root / "sha256"
        self.temp_dir = self.root / "tmp"

    @property
    def location(self) -> str:
        return str(self.root)

    def path_for(self, sha256: str) -> Path:
        sha256 = check_sha256(sha256)
        return self.blob_dir / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def size(self, sha256: str) -> int | None:
        try:
            return self.path_for(sha256).stat().st_size
        except FileNotFoundError:
            return None

    def local_path(self, sha256: str) -> Path:
        return self.path_for(sha256)

    def fetch(self, sha256: str) -> Path | None:
        """The blob's own file: it is already local, and :meth:`verify` is what re-hashes it."""
        path = self.path_for(sha256)
        return path if path.is_file() else None

    digest_first = False
    """A local write gains nothing from knowing the digest first."""

    def writer(
        self, *, hashed_by_caller: bool = False, sha256: str | None = None, source: Path | None = None
    ) -> BlobWriter:
        """A writer to use as ``with store.writer() as w: w.write(…); info = w.commit()``.

        Leaving the ``with`` without ``commit`` (or through an exception) removes the temporary file.
        ``hashed_by_caller``: the caller computes the SHA-256 of exactly the chunks it writes (``lorahub add``
        hashes them in the same pass) and passes it to ``commit``; hashing them twice would cost a quarter of the
        add's time and prove nothing more. ``sha256`` (the digest announced in advance) and ``source`` (the file
        the bytes come from) are not needed here: the digest ``commit`` gets decides.
        """
        return BlobWriter(self, hashed_by_caller=hashed_by_caller)

    def put_file(self, path: str | os.PathLike[str], expected_sha256: str | None = None) -> BlobInfo:
        """Copy a file into the store, hashing it on the way (one read)."""
        with self.writer() as writer, open(path, "rb") as source:
            buffer = bytearray(CHUNK_BYTES)
            view = memoryview(buffer)
            while count := source.readinto(buffer):
                writer.write(view[:count])
            return writer.commit(expected_sha256)

    def put_bytes(self, data: bytes, expected_sha256: str | None = None) -> BlobInfo:
        with self.writer() as writer:
            writer.write(data)
            return writer.commit(expected_sha256)

    def remove(self, sha256: str) -> bool:
        """Delete a blob (garbage collection); False when it was not there."""
        path = self.path_for(sha256)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        fsync_directory(path.parent)
        return True

    def link(self, path: Path, sha256: str, *, inode: int) -> bool:
        """Hard-link a file the caller has hashed into the store under ``sha256``, without copying a byte.

        Only on the same filesystem, and only while ``path`` is still the hashed file (``inode``, from the stat
        taken before hashing): anything else returns False and the store is unchanged. The file's mode is left as
        it is, because the inode is the user's; the blob is as immutable as the user keeps the file, which is why
        ``verify`` re-hashes a blob whose stat facts changed.
        """
        final = self.path_for(sha256)
        if final.exists():
            return False
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, final, follow_symlinks=True)
        except OSError as exc:
            if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EEXIST, errno.ENOTSUP):
                return False
            raise
        if os.stat(final).st_ino % 2**64 != inode % 2**64:  # replaced between hashing and linking
            final.unlink()
            return False
        fsync_directory(final.parent)
        return True

    def iter_blobs(self) -> Iterator[str]:
        """The SHA-256 of every blob in the store, in no particular order; other files are ignored."""
        if not self.blob_dir.is_dir():
            return
        for shard in self.blob_dir.iterdir():
            if not shard.is_dir():
                continue
            for entry in shard.iterdir():
                if _HEX64.fullmatch(entry.name) and entry.name.startswith(shard.name) and entry.is_file():
                    yield entry.name

    def verify(self, sha256: str) -> bool:
        """Rehash the blob: True when its bytes still match its name (False when missing)."""
        digest = hashlib.sha256()
        try:
            with open(self.path_for(sha256), "rb") as source:
                while chunk := source.read(CHUNK_BYTES):
                    digest.update(chunk)
        except FileNotFoundError:
            return False
        return digest.hexdigest() == sha256

    def cleanup_stale(self) -> int:
        return len(self.cleanup_temp())

    def cleanup_temp(self) -> list[Path]:
        """Remove temporary files left by writers that died; files of live writers are locked and kept."""
        if not self.temp_dir.is_dir():
            return []
        removed = []
        for entry in self.temp_dir.iterdir():
            if entry.name.startswith(TEMP_PREFIX) and _remove_if_unlocked(entry):
                removed.append(entry)
        return removed


def _remove_if_unlocked(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a live writer holds it
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return True
    finally:
        os.close(fd)
