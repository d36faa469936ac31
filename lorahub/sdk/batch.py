"""``lorahub add DIR``: a whole library, in parallel, never stopped by one bad file.

Files whose path, size, mtime and inode match the file cache and whose content is catalogued are skipped without
being read. Hashing and copying run in worker threads (each already streams its file once); signing and the
catalogue transaction run one at a time in the calling thread, in file order, so version numbers are stable.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorahub import errors
from lorahub.sdk.adding import AddOptions, AddResult, commit, prepare

if TYPE_CHECKING:
    from lorahub.sdk.hub import Hub

Progress = Callable[[int, int, Path], None]
"""(files done, files in all, the file just finished)."""

PATTERN = "*.safetensors"


@dataclass
class BatchResult:
    """What :meth:`Hub.add_tree` did with every file under the folder: added, already catalogued, unchanged since
    the last run, duplicates of another file, or failed (path, error code, message). One bad file does not stop
    the others."""

    added: list[AddResult] = field(default_factory=list)
    already: list[AddResult] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    duplicates: list[tuple[Path, str]] = field(default_factory=list)
    failures: list[tuple[Path, str, str]] = field(default_factory=list)
    tracebacks: dict[Path, str] = field(default_factory=dict)
    """The traceback of each failure: one bad file must not stop the batch, yet a bug behind an ``internal``
    failure still needs its traceback to be reported (the CLI prints them under ``LORAHUB_DEBUG=1``)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": [r.as_dict() for r in self.added],
            "already_catalogued": [f"{r.name}@{r.version}" for r in self.already],
            "unchanged": [str(p) for p in self.unchanged],
            "duplicates": [{"path": str(p), "existing": e} for p, e in self.duplicates],
            "failures": [{"path": str(p), "code": c, "message": m} for p, c, m in self.failures],
        }


def add_tree(
    hub: Hub, root: Path, options: AddOptions, *, progress: Progress | None = None, workers: int | None = None
) -> BatchResult:
    if options.name or options.version or options.embed or options.sidecar:
        raise errors.ConflictingArgumentsError(
            "--name, --version, --embed and --sidecar apply to one file, not to a directory",
            hint="Add the directory without them, or add files one by one.",
        )
    files = sorted(p for p in root.rglob(PATTERN) if p.is_file() and not p.name.startswith("."))
    signer = hub.signer() if options.sign else None
    actor = hub.audit_actor(signer)
    result = BatchResult()
    stats = {f: f.stat() for f in files}
    resolved = {f: str(f.resolve()) for f in files}
    unchanged = hub.catalog.unchanged_files(
        (resolved[f], st.st_size, st.st_mtime_ns, st.st_ino) for f, st in stats.items()
    )
    result.unchanged = [f for f in files if resolved[f] in unchanged]
    todo = [f for f in files if resolved[f] not in unchanged]
    done = len(result.unchanged)
    with ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1)) as pool:
        futures: list[tuple[Path, Future[Any]]] = [(f, pool.submit(prepare, hub, f, options)) for f in todo]
        for path, future in futures:
            _settle(hub, path, future, options=options, signer=signer, actor=actor, result=result)
            done += 1
            if progress is not None:
                progress(done, len(files), path)
    return result


def _settle(
    hub: Hub, path: Path, future: Future[Any], *, options: AddOptions, signer: Any, actor: Any, result: BatchResult
) -> None:
    try:
        added = commit(hub, future.result(), options, signer=signer, actor=actor)
    except errors.DuplicateContentError as error:
        result.duplicates.append((path, error.existing))
        return
    except errors.LorahubError as error:
        result.failures.append((path, error.code, error.message))
        result.tracebacks[path] = traceback.format_exc()
        return
    except Exception as error:  # any other error is a bug, but only this file's: the batch goes on
        result.failures.append((path, "internal", f"{error.__class__.__name__}: {error}"))
        result.tracebacks[path] = traceback.format_exc()
        return
    (result.already if added.already else result.added).append(added)
    stat = path.stat()
    hub.catalog.file_cache_put(
        str(path.resolve()),
        stat.st_size,
        stat.st_mtime_ns,
        stat.st_ino,
        sha256=added.sha256,
        content_digest=added.content_digest,
    )
