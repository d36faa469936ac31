"""The one timestamp form of identities and cards: ISO-8601 UTC, whole seconds, ``Z``.

One form, not ISO-8601 in general, because the card is canonicalised byte for byte: ``+00:00`` and ``Z`` name the
same instant but would give two different signed documents.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

UTC_TIMESTAMP = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$")
FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utc_timestamp(moment: datetime) -> str:
    """``moment`` in the one form (an aware datetime in any zone; sub-second digits dropped)."""
    return moment.astimezone(UTC).strftime(FORMAT)


def utc_now() -> str:
    return utc_timestamp(datetime.now(UTC))


def is_utc_timestamp(text: str) -> bool:
    """True for ``YYYY-MM-DDTHH:MM:SSZ`` naming a real instant (no 30 February)."""
    if not UTC_TIMESTAMP.fullmatch(text):
        return False
    try:
        datetime.strptime(text, FORMAT)
    except ValueError:
        return False
    return True
