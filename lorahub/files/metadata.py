"""Decoding ``__metadata__``: trainers store structured values as JSON inside strings.

Grouped by who wrote them, so a reader sees kohya's training settings apart from ModelSpec and diffusers facts.
Unknown keys are kept, never dropped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

GROUPS: tuple[tuple[str, str], ...] = (
    ("ss_", "kohya"),
    ("sshs_", "hashes"),
    ("ssmd_", "user"),
    ("modelspec.", "modelspec"),
    ("lora_adapter_metadata", "diffusers"),
    ("format", "diffusers"),
    ("lorahub.", "lorahub"),
)
"""Key prefix → group; the longest matching prefix wins, so ``sshs_`` is not read as ``ss_``."""

_ORDERED_GROUPS = sorted(GROUPS, key=lambda item: -len(item[0]))

LARGE_VALUE_KEYS = frozenset({"ssmd_cover_images", "modelspec.thumbnail"})
"""Values that hold images (base64): summarised, since nobody reads them as text."""


def decode_value(value: str) -> Any:
    """A JSON object or array stays structured; everything else stays the string it was (as A1111 does)."""
    text = value.strip()
    if text[:1] in ("{", "["):
        try:
            return json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            return value
    return value


def group_of(key: str) -> str:
    for prefix, group in _ORDERED_GROUPS:
        if key.startswith(prefix):
            return group
    return "other"


def decode_metadata(metadata: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """``{group: {key: decoded value}}``, groups and keys in sorted order for stable output."""
    grouped: dict[str, dict[str, Any]] = {}
    for key in sorted(metadata):
        value = metadata[key]
        decoded: Any = f"<{len(value):,} characters>" if key in LARGE_VALUE_KEYS else decode_value(value)
        grouped.setdefault(group_of(key), {})[key] = decoded
    return dict(sorted(grouped.items()))
