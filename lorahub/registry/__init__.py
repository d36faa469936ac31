"""The registry: the catalog database, the content-addressed blob store and the audit log.

``db`` opens and migrates the database and serialises writers; ``models`` holds the tables; ``catalog`` is the API
the SDK uses; ``blobs`` stores files by SHA-256 in a folder, ``s3blobs`` in an S3-compatible bucket, both behind
``blobs.BlobStorage``; ``leases`` keeps writers and garbage collection apart; ``audit`` keeps the tamper-evident
event chain; ``search`` splits text into the words search matches. Names below load their module on first use, so
importing the package is cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "AdapterVersion",
    "AuditActor",
    "BlobInfo",
    "BlobStore",
    "Catalog",
    "ChainProblem",
    "Filters",
    "KeyRow",
    "NewVersion",
    "connect",
    "migrate",
]

if TYPE_CHECKING:
    from lorahub.registry.audit import ChainProblem
    from lorahub.registry.blobs import BlobInfo, BlobStore
    from lorahub.registry.catalog import AdapterVersion, AuditActor, Catalog, Filters, KeyRow, NewVersion
    from lorahub.registry.db import connect, migrate

_LAZY = {
    "AdapterVersion": "lorahub.registry.catalog",
    "AuditActor": "lorahub.registry.catalog",
    "BlobInfo": "lorahub.registry.blobs",
    "BlobStore": "lorahub.registry.blobs",
    "Catalog": "lorahub.registry.catalog",
    "ChainProblem": "lorahub.registry.audit",
    "Filters": "lorahub.registry.catalog",
    "KeyRow": "lorahub.registry.catalog",
    "NewVersion": "lorahub.registry.catalog",
    "connect": "lorahub.registry.db",
    "migrate": "lorahub.registry.db",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'lorahub.registry' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
