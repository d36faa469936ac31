"""Hub.browse (a page of list or search, with cursors) and the children index (which versions name one as parent)."""

from __future__ import annotations

import json

import pytest

from lorahub import Hub, errors
from lorahub.registry.catalog import AdapterVersion, Filters
from lorahub.sdk.lineage import ChildIndex
from tests.registry.helpers import new_version

Parents = tuple[tuple[AdapterVersion, str], ...]


def _add(hub: Hub, name: str, *, parents: Parents = (), **fields: object) -> AdapterVersion:
    lineage = [{"digest": p.content_digest, "parameters": {"weight": "0.5"}, "relation": r} for p, r in parents]
    card = json.dumps({"lineage": lineage, "name": name}, separators=(",", ":"))
    blob = hub.blobs.put_bytes(name.encode())
    return hub.catalog.add_version(new_version(name, blob, card_json=card, **fields), audit=hub.audit_actor())


def _refs(page_versions: list[AdapterVersion]) -> list[str]:
    return [v.ref for v in page_versions]


def test_browse_pages_with_cursors_both_ways(hub: Hub) -> None:
    names = [f"a{index}" for index in range(7)]
    for name in names:
        _add(hub, name, description="a style", family="sd1" if name != "a3" else "sdxl")
    first = hub.browse(limit=3)
    assert _refs(first.versions) == ["a6@1", "a5@1", "a4@1"] and first.previous is None
    assert first.next is not None
    second = hub.browse(limit=3, cursor=first.next)
    third = hub.browse(limit=3, cursor=second.next)
    assert _refs(second.versions) == ["a3@1", "a2@1", "a1@1"] and _refs(third.versions) == ["a0@1"]
    assert third.next is None
    back = hub.browse(limit=3, cursor=third.previous)
    assert _refs(back.versions) == _refs(second.versions)
    assert _refs(hub.browse(limit=3, cursor=back.previous).versions) == _refs(first.versions)
    assert hub.browse(limit=3, cursor=back.previous).previous is None
    # filters and search
    assert "a3@1" not in _refs(hub.browse(filters=Filters(family="sd1"), limit=10).versions)
    searched = hub.browse("style", limit=4)
    rest = hub.browse("style", limit=4, cursor=searched.next)
    assert len(searched.versions) == 4 and len(rest.versions) == 3 and rest.next is None
    assert set(_refs(searched.versions)) | set(_refs(rest.versions)) == {f"{n}@1" for n in names}
    assert _refs(hub.browse("style", limit=4, cursor=rest.previous).versions) == _refs(searched.versions)


def test_browse_refuses_cursors_it_did_not_give(hub: Hub) -> None:
    asked = [("", "o4", 10), ("style", "b12", 10), ("", "x1", 10), ("", "b-1", 10), ("", "", 0), ("", None, 500)]
    for text, cursor, limit in asked:
        with pytest.raises(errors.InvalidArgumentError):
            hub.browse(text, limit=limit, cursor=cursor)


def test_children_are_found_and_the_index_grows(hub: Hub) -> None:
    ink, pixel = _add(hub, "ink"), _add(hub, "pixel")
    blend = _add(hub, "blend", parents=((ink, "merged-from"), (pixel, "merged-from")))
    index = ChildIndex(hub)
    assert [(c.version.ref, c.relation, c.parameters) for c in index.children(ink.content_digest)] == [
        ("blend@1", "merged-from", {"weight": "0.5"})
    ]
    assert index.children(blend.content_digest) == []
    small = _add(hub, "blend-small", parents=((blend, "resized-from"),))
    assert [c.version.ref for c in index.children(blend.content_digest)] == ["blend-small@1"]
    hub.remove("blend-small")
    (child,) = index.children(blend.content_digest)
    assert child.version.ref == small.ref and child.as_dict()["removed"] is True
    assert [c.version.ref for c in hub.children("pixel")] == ["blend@1"]
