"""Files that appear whole or not at all: the one way lorahub gives bytes a name.

Every file other code or people will read (adapters, cards, keys, blobs, training state) is written to a temporary
file on the same filesystem, fsynced, given its name in one step and the folder fsynced, so a crash or an error at
any moment leaves the old file or the complete new one, never a mix, and an error leaves no temporary file.

The temporary file is owner-only (0600, whatever the umask) from the moment it exists, so a secret written into it
is never readable by others; the file's final ``mode`` is set only once every byte is in and fsynced, just before
it gets its name. A read-only mode (0444) therefore makes the file read-only from its first moment under its name.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Final, Self

OWNER_ONLY: Final = 0o600
TEMP_SUFFIX: Final = ".tmp"

Chunks = Iterable[bytes | bytearray | memoryview]


class PendingFile:
    """A temporary file in ``folder`` that becomes a named file only on :meth:`commit`.

    For writers that learn the name only at the end (the blob store names a blob by the hash of its bytes) or that
    hold the file across many calls; :func:`atomic_file` and :func:`atomic_write` cover the usual case. Leaving the
    ``with`` block without a commit, or an exception in it, removes the temporary file.
    """

    def __init__(self, folder: Path, *, prefix: str = ".", suffix: str = TEMP_SUFFIX, mode: int = OWNER_ONLY) -> None:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)  # O_EXCL, mode 0600
        self.path = Path(name)
        self.mode = mode
        self.file: BinaryIO = os.fdopen(fd, "wb")
        self._done = False

    def commit(self, target: Path, *, exclusive: bool = False) -> None:
        """Fsync the bytes written, set the final mode and give them the name ``target``, then fsync its folder.

        ``exclusive``: never replace a file already at ``target``; raise ``FileExistsError`` instead (the temporary
        file is dropped). A hard link makes that check and the naming one step; on a filesystem without hard links
        it falls back to a check then a rename, which two writers racing for one name could both pass.
        """
        if self._done:
            raise ValueError(f"{self.path} was already committed or discarded")
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            os.fchmod(self.file.fileno(), self.mode)
            _name(self.path, target, exclusive=exclusive)
            self.path.unlink(missing_ok=True)  # still there after a link
            fsync_directory(target.parent)
        finally:
            self.discard()

    def discard(self) -> None:
        """Drop the temporary file; safe to call more than once. The file is closed last, so a lock held on it (the
        blob store's) lasts until its name is gone."""
        self._done = True
        try:
            self.path.unlink(missing_ok=True)
        finally:
            if not self.file.closed:
                self.file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.discard()


def _name(temp: Path, target: Path, *, exclusive: bool) -> None:
    if not exclusive:
        os.replace(temp, target)
        return
    try:
        os.link(temp, target)
    except FileExistsError:
        raise
    except OSError:  # no hard links here (some network and FUSE filesystems)
        if target.exists():
            raise FileExistsError(f"{target} already exists") from None
        os.replace(temp, target)


@contextmanager
def atomic_file(path: Path, *, mode: int = OWNER_ONLY, exclusive: bool = False) -> Iterator[tuple[BinaryIO, Path]]:
    """Write ``path`` through the yielded handle; it gets its name when the block ends without an exception.

    Also yields the temporary file's path, for a writer that reads back what it wrote (bake hashes its output). An
    exception leaves ``path`` as it was and no temporary file. ``mode`` and ``exclusive`` as in
    :meth:`PendingFile.commit`.
    """
    folder = path.parent if str(path.parent) else Path(".")
    with PendingFile(folder, prefix=f".{path.name}.", mode=mode) as pending:
        yield pending.file, pending.path
        pending.commit(path, exclusive=exclusive)


def atomic_write(
    path: Path, write: Callable[[BinaryIO], object] | Chunks, *, mode: int = OWNER_ONLY, exclusive: bool = False
) -> None:
    """Replace ``path`` with the bytes ``write`` writes into the handle it is given (or with a sequence of chunks),
    as :func:`atomic_file` does."""
    with atomic_file(path, mode=mode, exclusive=exclusive) as (out, _):
        if callable(write):
            write(out)
        else:
            for chunk in write:
                out.write(chunk)


def fsync_directory(directory: Path) -> None:
    """Make a folder's entries durable: without it a rename, link or unlink can be lost in a crash even though the
    file's own bytes were fsynced."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
