"""``lorahub gc``: delete the blobs nothing needs, safely while other processes and machines add.

Two kinds of blob are garbage: those the catalogue recorded but no active version references any more (every version
using them was removed), and objects in the store the catalogue never recorded (a writer died between storing and
recording). Each is deleted under a collect lease taken in the catalogue (:mod:`lorahub.registry.leases`), which is
refused while a writer holds a lease on the same digest or a version references it, and which makes a writer that
arrives meanwhile wait and store the blob again. Leases of holders that died are dropped once expired, and what dead
writers left in the store (temporary files, unfinished multipart uploads) is cleaned first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lorahub.sdk.hub import Hub


def collect(hub: Hub) -> tuple[int, int]:
    """Returns (blobs removed, bytes freed)."""
    leases = hub.catalog.leases
    leases.prune()
    hub.blobs.cleanup_stale()
    removed = freed = 0
    for sha256 in _candidates(hub):
        claim = leases.claim_for_collection(sha256)
        if claim is None:
            continue  # referenced again, or a writer is storing it
        try:
            size = hub.blobs.size(sha256)
            if size is not None and hub.blobs.remove(sha256):
                removed, freed = removed + 1, freed + size
        finally:
            leases.release([claim])
    return removed, freed


def _candidates(hub: Hub) -> list[str]:
    """The stored blobs that no active version references, or that the catalogue never recorded. Only what the
    store holds: the catalogue keeps a row for every blob it ever recorded (removed versions still name theirs), and
    claiming each one already deleted would cost two write transactions, which every other writer waits for, per
    blob ever collected, at every ``gc``. One stored after the listing is a writer's, under its lease anyway."""
    stored = set(hub.blobs.iter_blobs())
    recorded = hub.catalog.blob_digests()
    unreferenced = [sha256 for sha256 in hub.catalog.unreferenced_blobs() if sha256 in stored]
    return [*unreferenced, *sorted(stored - recorded)]
