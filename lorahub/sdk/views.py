"""What the SDK hands back about catalogued versions: plain data, independent of the database rows."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from lorahub.registry.catalog import Filters

__all__ = ["Filters", "VersionView"]


@dataclass(frozen=True)
class VersionView:
    name: str
    version: int
    content_digest: str
    sha256: str
    format: str
    family: str
    license_id: str
    consent_status: str
    trigger_words: list[str]
    tags: list[str]
    description: str
    signers: list[str]
    created_at: str
    removed_at: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
