"""Where a catalogued version's bytes are (the blob store, or a location in the user's library), and the library's
state as the last scan or verify found it: locations by state, duplicates."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorahub import errors

if TYPE_CHECKING:
    from lorahub.registry.catalog import AdapterVersion
    from lorahub.registry.locations import LocationRow
    from lorahub.sdk.hub import Hub


def version_of(hub: Hub, row: LocationRow) -> AdapterVersion | None:
    return hub.catalog.find_by_sha256(row.sha256) or hub.catalog.find_by_content(row.content_digest)


def ref_of(hub: Hub, row: LocationRow) -> str:
    version = version_of(hub, row)
    return version.ref if version is not None else f"content {row.content_digest[:16]}…"


# --- a version's file, wherever it is -------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionFile:
    """Where a version's bytes are read from: the blob store, or a location of the user's library."""

    path: Path
    in_place: bool
    location: LocationRow | None = None


def version_file(hub: Hub, version: AdapterVersion) -> VersionFile:
    """The store's copy when there is one (a remote store's is fetched to a verified local copy), else the first
    recorded location whose path holds a file (it may have changed: verification re-hashes it). Raises
    ``FileMissingError`` when there is none, ``BlobDamagedError`` when a remote copy does not match its digest."""
    stored = hub.blobs.fetch(version.blob_sha256)
    if stored is not None:
        return VersionFile(stored, in_place=False)
    rows = sorted(hub.catalog.locations.of_sha256([version.blob_sha256]), key=lambda r: r.state != "present")
    for row in rows:
        if os.path.isfile(row.path):
            return VersionFile(Path(row.path), in_place=True, location=row)
    if not rows:
        raise errors.FileMissingError(
            f"the stored file of {version.ref} is missing from the blob store ({hub.blobs.location})",
            hint="Restore the home from a backup, or remove the version (lorahub rm) and add the file again.",
        )
    raise errors.FileMissingError(
        f"the file of {version.ref} is missing: it was last seen at {rows[0].path}"
        + (f" (and {len(rows) - 1} other place(s))" if len(rows) > 1 else "")
    )


# --- the library's state ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LibraryEntry:
    """A location with the version it holds (None for content no version has, such as a duplicate's bytes)."""

    location: LocationRow
    ref: str

    def as_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, **self.location.as_dict()}


def locations(hub: Hub, *, state: str | None = None) -> list[LibraryEntry]:
    """Library locations, by path: all, or those in ``state`` (``missing``, ``changed``)."""
    rows = [row for page in hub.catalog.locations.pages(state=state) for row in page]
    return [LibraryEntry(row, ref_of(hub, row)) for row in sorted(rows, key=lambda r: r.path)]


def duplicates(hub: Hub) -> list[list[LibraryEntry]]:
    """The same content at several paths or names: one group per content digest."""
    return [[LibraryEntry(row, ref_of(hub, row)) for row in group] for group in hub.catalog.locations.duplicates()]
