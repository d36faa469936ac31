"""A library catalogued where it lies: ``lorahub scan`` and ``add --in-place``.

Nothing here writes, moves or deletes a file of the user's. A scan walks its roots one folder at a time; a file
whose path, size, mtime, inode and device match its location row is not read again. Any other file is read once,
for its identity only (SHA-256 and content digest, two streams on two cores), and then it is one of:

* the same bytes under new stat facts (touched, restored): the row is trusted again;
* known bytes at a new path while the old path is empty: a **move**, the row is re-pointed (audited ``move``);
* known content at another path: a **duplicate**, recorded as a second location (audited ``locate``);
* new content: a new version, catalogued in place (audited ``add``); when it replaced other bytes at the same
  path, the old location is marked ``changed`` (its version keeps its card) and the new content becomes the next
  version of that adapter.

After the walk, locations under the roots that the walk did not see and whose path is empty are marked
``missing``: the version keeps its card, signatures and metadata. One ``scan`` audit event sums it all up.
"""

from __future__ import annotations

import os
import traceback
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from lorahub import errors
from lorahub.files.neighbours import FolderListing, find_neighbours
from lorahub.files.walk import Folder, count_files, walk
from lorahub.registry.locations import Facts, LocationRow
from lorahub.registry.models import utc_now
from lorahub.sdk.adding import AddOptions, Prepared, commit_new, prepare_in_place
from lorahub.sdk.batch import Progress
from lorahub.sdk.locating import ref_of, version_of

if TYPE_CHECKING:
    from lorahub.registry.audit import AuditActor
    from lorahub.registry.catalog import AdapterVersion
    from lorahub.sdk.hub import Hub
    from lorahub.signing.keys import Signer


IN_FLIGHT_PER_WORKER: Final = 8
"""Files read ahead per worker thread beyond the batch being settled: keeps the workers busy, memory flat."""
COMMIT_BATCH: Final = 64
"""New versions recorded per transaction."""
SEEN_BATCH: Final = 5000
"""Unchanged files marked seen per statement: a re-scan of an unchanged library is a few transactions."""


@dataclass(frozen=True)
class Catalogued:
    """A file a scan catalogued as a new version: small, because a scan of 30,000 files keeps 30,000 of them."""

    path: str
    name: str
    version: int
    content_digest: str

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass
class ScanResult:
    """What a scan found under its roots; each list names paths and the catalogue versions they are."""

    roots: list[str]
    added: list[Catalogued] = field(default_factory=list)
    unchanged: int = 0
    refreshed: list[str] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    moved: list[tuple[str, str, str]] = field(default_factory=list)
    changed: list[tuple[str, str]] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)
    linked: int = 0
    empty_roots: list[str] = field(default_factory=list)
    """Roots holding no adapter file at all: nothing under them was marked missing (an unmounted drive's mount
    point is an empty folder); scan a file of them, or remove the versions, if they really are gone."""
    failures: list[tuple[str, str, str]] = field(default_factory=list)
    tracebacks: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {
            "added": len(self.added),
            "unchanged": self.unchanged,
            "refreshed": len(self.refreshed),
            "duplicates": len(self.duplicates),
            "moved": len(self.moved),
            "changed": len(self.changed),
            "missing": len(self.missing),
            "linked": self.linked,
            "failures": len(self.failures),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "roots": self.roots,
            "counts": self.counts(),
            "added": [{"path": r.path, "ref": r.ref} for r in self.added],
            "duplicates": [{"path": p, "ref": ref} for p, ref in self.duplicates],
            "moved": [{"from": a, "to": b, "ref": ref} for a, b, ref in self.moved],
            "changed": [{"path": p, "ref": ref} for p, ref in self.changed],
            "missing": [{"path": p, "ref": ref} for p, ref in self.missing],
            "empty_roots": self.empty_roots,
            "failures": [{"path": p, "code": c, "message": m} for p, c, m in self.failures],
        }


@dataclass(frozen=True)
class Seen:
    """One adapter file met by the walk: where, its stat facts, its neighbours, and the rows recorded there."""

    path: Path
    facts: Facts
    neighbours: tuple[dict[str, Any], ...]
    rows: tuple[LocationRow, ...]


def scan(
    hub: Hub,
    roots: Sequence[str | os.PathLike[str]],
    options: AddOptions,
    *,
    find_missing: bool = True,
    link: bool = False,
    progress: Progress | None = None,
    workers: int | None = None,
) -> ScanResult:
    """Catalogue every adapter file under ``roots`` in place (files may be given too); with ``find_missing``,
    also mark what was catalogued under them and is gone (``lorahub scan``; ``add --in-place`` does not)."""
    resolved = _roots(roots, options)
    signer = hub.signer() if options.sign else None
    context = _Context(hub, options, signer, hub.audit_actor(signer), link, ScanResult([str(r) for r in resolved]))
    started = utc_now()
    counts = {root: 1 if root.is_file() else count_files(root) for root in resolved}
    counter = _Counter(sum(counts.values()), progress)
    _read_and_settle(context, resolved, counter, workers or min(4, os.cpu_count() or 1))
    if find_missing:
        for root in resolved:
            if counts[root]:
                _mark_missing(hub, root, started, context.result)
            else:  # an empty mount point looks like this: a whole library does not vanish quietly
                context.result.empty_roots.append(str(root))
    _log_scan(hub, context)
    return context.result


def _roots(roots: Sequence[str | os.PathLike[str]], options: AddOptions) -> list[Path]:
    if options.embed or options.sidecar:
        raise errors.ConflictingArgumentsError(
            "--embed and --sidecar would write into the user's library, which a scan never does",
            hint="Catalogue in place without them; `lorahub export` writes cards and sidecars elsewhere.",
        )
    resolved = [_root(Path(r)) for r in roots]
    if (options.name or options.version) and (len(resolved) > 1 or resolved[0].is_dir()):
        raise errors.ConflictingArgumentsError(
            "--name and --version apply to one file, not to a folder", hint="Scan the folder without them."
        )
    return resolved


def _read_and_settle(context: _Context, roots: Sequence[Path], counter: _Counter, workers: int) -> None:
    """Files that must be read are read in worker threads, a few batches ahead, and settled in walk order."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[tuple[Seen, Future[Prepared]]] = deque()

        def settle_oldest() -> None:
            batch = [pending.popleft() for _ in range(min(COMMIT_BATCH, len(pending)))]
            context.settle(batch)
            for seen, _ in batch:
                counter.tick(seen.path)

        try:
            for seen in _seen_files(context.hub, roots, context):
                if isinstance(seen, Path):
                    counter.tick(seen)
                    continue
                pending.append((seen, pool.submit(_prepare, seen, context.options)))
                if len(pending) >= COMMIT_BATCH + IN_FLIGHT_PER_WORKER * workers:
                    settle_oldest()
            while pending:
                settle_oldest()
        except BaseException:  # Ctrl-C: stop now, not after the files queued; a re-run resumes from what is committed
            pool.shutdown(wait=False, cancel_futures=True)
            raise


@dataclass
class _Counter:
    total: int
    progress: Progress | None
    done: int = 0

    def tick(self, path: Path) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, max(self.total, self.done), path)


def _prepare(seen: Seen, options: AddOptions) -> Prepared:
    return prepare_in_place(seen.path, seen.facts, options, neighbours=seen.neighbours)


def _root(path: Path) -> Path:
    resolved = path.expanduser().resolve()
    if not resolved.exists():
        raise errors.PathNotFoundError(
            f"{path} does not exist",
            hint="Name a library folder that is there (an unmounted drive is not scanned: nothing is marked missing).",
        )
    return resolved


@dataclass
class _Context:
    hub: Hub
    options: AddOptions
    signer: Signer | None
    actor: AuditActor
    link: bool
    result: ScanResult

    def settle(self, batch: Sequence[tuple[Seen, Future[Prepared]]]) -> None:
        """Record what a batch of read files turned out to be: digests looked up together, new versions committed
        in one transaction. A file that fails is listed and the others go on."""
        ready: list[tuple[Seen, Prepared]] = []
        for seen, future in batch:
            with self._failures_of(seen.path):
                ready.append((seen, future.result()))
        if len(ready) == 1:
            with self._failures_of(ready[0][0].path):
                self._settle(ready)
            return
        try:
            self._settle(ready)
        except Exception:  # the batch's transaction failed as one: settle its files one by one to find the culprit
            for item in ready:
                with self._failures_of(item[0].path):
                    self._settle([item])

    @contextmanager
    def _failures_of(self, path: Path) -> Iterator[None]:
        try:
            yield
        except errors.LorahubError as error:
            self.result.failures.append((str(path), error.code, error.message))
            self.result.tracebacks[str(path)] = traceback.format_exc()
        except Exception as error:  # a bug, but only this file's: the scan goes on
            self.result.failures.append((str(path), "internal", f"{error.__class__.__name__}: {error}"))
            self.result.tracebacks[str(path)] = traceback.format_exc()

    def _settle(self, ready: Sequence[tuple[Seen, Prepared]]) -> None:
        locations = self.hub.catalog.locations
        identities = [_identity(p) for _, p in ready]
        elsewhere: dict[str, list[LocationRow]] = {}
        for row in locations.of_sha256(sha for sha, _ in identities):
            elsewhere.setdefault(row.sha256, []).append(row)
        known = self.hub.catalog.find_any(sha256s=[i[0] for i in identities], contents=[i[1] for i in identities])
        by_digest = {v.blob_sha256: v for v in reversed(known)} | {v.content_digest: v for v in reversed(known)}
        new: list[Prepared] = []
        later: list[tuple[Seen, Prepared]] = []
        for seen, prepared in ready:
            sha256, content = _identity(prepared)
            if self._same_bytes(seen, sha256):
                continue
            replaced = self._replaced(seen, sha256)
            if self._moved(seen, elsewhere.get(sha256, [])):
                continue
            version = by_digest.get(sha256) or by_digest.get(content)
            if version is not None:
                self._duplicate(seen, prepared, version)
            elif any(_identity(p)[1] == content for p in new):
                later.append((seen, prepared))  # a duplicate of a file of this very batch: after its commit
            else:
                new.append(self._named(prepared, replaced))
        if new:
            self._add(new)
        for seen, prepared in later:
            version = self.hub.catalog.find_by_content(_identity(prepared)[1])
            assert version is not None
            self._duplicate(seen, prepared, version)

    def _same_bytes(self, seen: Seen, sha256: str) -> bool:
        """The recorded bytes under new stat facts (touched, restored): trust them again."""
        same = [r for r in seen.rows if r.sha256 == sha256]
        if same:
            self.hub.catalog.locations.refresh(same[0].id, seen.facts, neighbours=seen.neighbours)
            self.result.refreshed.append(str(seen.path))
        return bool(same)

    def _replaced(self, seen: Seen, sha256: str) -> list[LocationRow]:
        """Other bytes at a recorded path: the old location is ``changed``; its version keeps its card. A row that
        ``verify`` already found changed, with nothing catalogued at the path since, is what these bytes replace."""
        others = [r for r in seen.rows if r.sha256 != sha256]
        replaced = [r for r in others if r.state == "present"]
        if not replaced and others and all(r.state == "changed" for r in others):
            replaced = [max(others, key=lambda r: r.id)]
        if replaced:
            self.hub.catalog.locations.set_state([r.id for r in replaced], "changed")
            self.result.changed += [(row.path, ref_of(self.hub, row)) for row in replaced]
        return replaced

    def _moved(self, seen: Seen, rows: list[LocationRow]) -> bool:
        """Known bytes whose recorded path is now empty: the same file, moved or renamed; the row follows it."""
        for row in rows:
            if row.path != str(seen.path) and not os.path.lexists(row.path):
                rows.remove(row)
                version = version_of(self.hub, row)
                subject = _subject(version) if version is not None else (None, None, row.content_digest)
                self.hub.catalog.locations.move(
                    row, str(seen.path), seen.facts, neighbours=seen.neighbours, audit=self.actor, subject=subject
                )
                self.result.moved.append((row.path, str(seen.path), ref_of(self.hub, row)))
                return True
        return False

    def _duplicate(self, seen: Seen, prepared: Prepared, version: AdapterVersion) -> None:
        assert prepared.location is not None
        self.hub.catalog.locations.record(prepared.location, audit=self.actor, subject=_subject(version))
        self.result.duplicates.append((str(seen.path), version.ref))

    def _named(self, prepared: Prepared, replaced: Sequence[LocationRow]) -> Prepared:
        """New bytes at a known path are the next version of the adapter that was there."""
        previous = next((v for v in (version_of(self.hub, r) for r in replaced) if v is not None), None)
        if previous is not None and not self.options.name:
            return replace(prepared, name=previous.name)
        return prepared

    def _add(self, prepared: Sequence[Prepared]) -> None:
        if self.link:
            prepared = [self._linked(p) for p in prepared]
        for added in commit_new(self.hub, prepared, self.options, signer=self.signer, actor=self.actor):
            assert added.location is not None
            self.result.added.append(Catalogued(str(added.location), added.name, added.version, added.content_digest))

    def _linked(self, prepared: Prepared) -> Prepared:
        location = prepared.location
        assert location is not None
        if not self.hub.blobs.link(prepared.path, location.sha256, inode=location.facts.inode):
            return prepared
        self.result.linked += 1
        return replace(prepared, location=replace(location, linked=True))


def _identity(prepared: Prepared) -> tuple[str, str]:
    assert prepared.location is not None
    return prepared.location.sha256, prepared.location.content_digest


def _seen_files(hub: Hub, roots: Sequence[Path], context: _Context) -> Iterator[Seen | Path]:
    """Every adapter file under ``roots`` that must be read (a :class:`Seen`), or the path of one that need not
    be: its location row matches, so it is only marked seen (in one statement per :data:`SEEN_BATCH` files)."""
    unchanged: list[int] = []
    for folder in _folders(roots):
        recorded = hub.catalog.locations.at_paths([str(p) for p, _ in folder.files])
        listing = FolderListing(folder.listing)
        for path, stat in folder.files:
            facts = Facts.of(stat)
            rows = tuple(recorded.get(str(path), ()))
            neighbours = tuple(neighbours_of(path, listing, rows))
            current = next((r for r in rows if r.facts == facts and r.state != "changed"), None)
            if current is not None and current.state == "present" and current.neighbours == neighbours:
                unchanged.append(current.id)
                yield path
            elif current is not None:  # the same file, back from missing or with other files beside it
                hub.catalog.locations.refresh(current.id, facts, neighbours=neighbours)
                context.result.refreshed.append(str(path))
                yield path
            else:
                yield Seen(path, facts, neighbours, rows)
        if len(unchanged) >= SEEN_BATCH:
            _mark_seen(hub, unchanged, context.result)
    _mark_seen(hub, unchanged, context.result)


def _mark_seen(hub: Hub, unchanged: list[int], result: ScanResult) -> None:
    if unchanged:
        hub.catalog.locations.mark_seen(unchanged, utc_now())
        result.unchanged += len(unchanged)
        unchanged.clear()


def _folders(roots: Sequence[Path]) -> Iterator[Folder]:
    for root in roots:
        if root.is_file():
            stat = root.stat()
            yield Folder(root.parent, frozenset(os.listdir(root.parent)), ((root, stat),))
        else:
            yield from walk(root)


def neighbours_of(path: Path, listing: FolderListing, rows: Sequence[LocationRow]) -> list[dict[str, Any]]:
    """The sidecars and previews beside ``path``, each with its digest, as the location row records them; one
    recorded with the same name, size and mtime is not read again."""
    known = {(n["name"], n["size"], n["mtime_ns"]): n["sha256"] for row in rows for n in row.neighbours}
    return [
        {"kind": n.kind, "name": n.path.name, "sha256": n.sha256, "size": n.size, "mtime_ns": n.mtime_ns}
        for n in find_neighbours(path, listing, known=known)
    ]


def _mark_missing(hub: Hub, root: Path, started: Any, result: ScanResult) -> None:
    """Rows under ``root`` the walk did not see: gone when their path is empty (a file the walk skips, such as a
    hidden one added by hand, is left alone)."""
    if root.is_file():
        return
    locations = hub.catalog.locations
    for page in locations.pages(root=str(root), state="present", seen_before=started):
        gone = [row for row in page if not os.path.lexists(row.path)]
        if gone:
            locations.set_state([row.id for row in gone], "missing")
            result.missing += [(row.path, ref_of(hub, row)) for row in gone]


def _log_scan(hub: Hub, context: _Context) -> None:
    result = context.result
    counts = result.counts()
    if not any(v for k, v in counts.items() if k != "unchanged"):
        return  # nothing happened: a re-scan of an unchanged library leaves no trace in the audit log
    hub.catalog.log(
        "scan",
        audit=context.actor,
        details={
            "roots": result.roots,
            "counts": counts,
            "missing": [p for p, _ in result.missing],
            "changed": [p for p, _ in result.changed],
        },
    )


def _subject(version: AdapterVersion) -> tuple[str | None, int | None, str | None]:
    return version.name, version.number, version.content_digest
