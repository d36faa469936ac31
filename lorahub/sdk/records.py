"""The public JSON shapes of catalogue records: a version in ``list``, ``search`` and ``show``, an audit event.

Why a module of its own: the Hub, the exporters and the provenance recorder all answer with these shapes, and the
latter two sit below the Hub (it calls them), so the shapes cannot live in :mod:`lorahub.sdk.hub`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lorahub.registry.catalog import AdapterVersion

__all__ = ["event_dict", "summary"]


def summary(version: AdapterVersion) -> dict[str, Any]:
    """The public JSON shape of a version in ``list``, ``search`` and ``show``."""
    return {
        "name": version.name,
        "version": version.number,
        "content_digest": version.content_digest,
        "sha256": version.blob_sha256,
        "format": version.format,
        "family": version.family,
        "license_id": version.license_id,
        "consent_status": version.consent_status,
        "trigger_words": list(version.trigger_words),
        "tags": list(version.tags),
        "description": version.description,
        "signers": list(version.signers),
        "created_at": version.created_at.isoformat(),
        "removed_at": version.removed_at.isoformat() if version.removed_at else None,
    }


def event_dict(event: Any) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "time": event.time,
        "actor": event.actor,
        "action": event.action,
        "subject_name": event.subject_name,
        "subject_version": event.subject_version,
        "subject_digest": event.subject_digest,
        "details": json.loads(event.details),
        "hash": event.hash,
        "signed": event.signature != "",
    }
