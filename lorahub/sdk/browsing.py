"""Browsing the catalogue a page at a time: what ``lorahub serve``'s library and ``/api/versions`` show.

Why a module of its own: ``list`` returns every version, which a 100,000-version catalogue cannot afford per page
view. A plain listing pages by id (a keyset: the page after the version with id N reads the ``limit`` below N, as
cheap at the end of the catalogue as at its start); a text search pages by offset, because its order is the search
ranking, not an id. Either way the caller gets opaque cursors for the pages around the one it holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lorahub import errors

if TYPE_CHECKING:
    from lorahub.registry.catalog import AdapterVersion, Filters
    from lorahub.sdk.hub import Hub

MAX_PAGE = 200
"""The most versions one page holds: a page is hydrated whole (cards included)."""


@dataclass(frozen=True)
class Page:
    """One page of versions, and the cursors of the pages after (older, or further down the ranking) and before it;
    None where there is none."""

    versions: list[AdapterVersion]
    next: str | None
    previous: str | None


def browse(
    hub: Hub, text: str = "", filters: Filters | None = None, *, limit: int = 50, cursor: str | None = None
) -> Page:
    """The page of ``cursor`` (None: the first) of the versions matching ``filters`` and, when given, ``text``."""
    if not 1 <= limit <= MAX_PAGE:
        raise errors.InvalidArgumentError(f"a page holds 1 to {MAX_PAGE} versions, not {limit}")
    kind, position = _parse(cursor)
    if text.strip():
        if kind not in ("", "o"):
            raise _bad_cursor(cursor, "it belongs to a listing, not a search")
        return _search_page(hub, text, filters, limit, position)
    if kind == "o":
        raise _bad_cursor(cursor, "it belongs to a search, not a listing")
    return _keyset_page(hub, filters, limit, kind, position)


def _search_page(hub: Hub, text: str, filters: Filters | None, limit: int, offset: int) -> Page:
    found = hub.catalog.search(text, filters, limit=limit + 1, offset=offset)
    more = len(found) > limit
    previous = f"o{max(offset - limit, 0)}" if offset > 0 else None
    return Page(found[:limit], f"o{offset + limit}" if more else None, previous)


def _keyset_page(hub: Hub, filters: Filters | None, limit: int, kind: str, position: int) -> Page:
    catalog = hub.catalog
    if kind == "a":  # the page just above ``position``: newer versions, read upwards
        found = catalog.newest(filters, limit=limit + 1, after=position)
        versions = found[-limit:]
        previous = f"a{versions[0].id}" if len(found) > limit else None
        return Page(versions, f"b{versions[-1].id}" if versions else None, previous)
    found = catalog.newest(filters, limit=limit + 1, before=position if kind == "b" else None)
    versions = found[:limit]
    following = f"b{versions[-1].id}" if len(found) > limit else None
    return Page(versions, following, f"a{versions[0].id}" if kind == "b" and versions else None)


def _parse(cursor: str | None) -> tuple[str, int]:
    if not cursor:
        return "", 0
    kind, digits = cursor[:1], cursor[1:]
    if kind not in ("a", "b", "o") or not digits.isdigit() or len(digits) > 18:
        raise _bad_cursor(cursor, "it is not one this catalogue gave")
    return kind, int(digits)


def _bad_cursor(cursor: str | None, why: str) -> errors.LorahubError:
    return errors.InvalidArgumentError(
        f"the page cursor {cursor!r} cannot be used: {why}", hint="Start again from the first page (no cursor)."
    )
