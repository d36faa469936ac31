"""Reading the catalogue a page at a time (keyset pages newest first, search offsets) and the cards with parents
that an index of children is built from, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

from lorahub.registry.blobs import BlobStore
from lorahub.registry.catalog import AdapterVersion, Catalog, Filters
from tests.registry.helpers import Signer, new_version


def _add(catalog: Catalog, store: BlobStore, signer: Signer, name: str, **fields: object) -> AdapterVersion:
    blob = store.put_bytes(name.encode())
    return catalog.add_version(new_version(name, blob, **fields), audit=signer.actor)


def _refs(versions: list[AdapterVersion]) -> list[str]:
    return [version.ref for version in versions]


def test_keyset_pages_walk_the_catalogue_both_ways(catalog: Catalog, store: BlobStore, signer: Signer) -> None:
    added = [_add(catalog, store, signer, f"n{i}", family="sd1" if i % 2 else "sdxl") for i in range(7)]
    newest_first = _refs(list(reversed(added)))
    pages, before = [], None
    while True:
        page = catalog.newest(limit=3, before=before)
        if not page:
            break
        pages.append(_refs(page))
        before = page[-1].id
    assert pages == [newest_first[0:3], newest_first[3:6], newest_first[6:7]]
    # back up from the last page: the three just above it, still newest first
    assert _refs(catalog.newest(limit=3, after=added[0].id)) == newest_first[3:6]
    assert _refs(catalog.newest(limit=10, after=added[5].id)) == ["n6@1"]
    # filters hold on every page
    sd1 = catalog.newest(Filters(family="sd1"), limit=2, before=added[5].id)
    assert _refs(sd1) == ["n3@1", "n1@1"]


def test_search_offsets_skip_results(catalog: Catalog, store: BlobStore, signer: Signer) -> None:
    for index in range(6):
        _add(catalog, store, signer, f"cat{index}", description="a cat picture")
    everything = _refs(catalog.search("cat", limit=10))
    assert len(everything) == 6
    assert _refs(catalog.search("cat", limit=2, offset=2)) == everything[2:4]
    assert _refs(catalog.search("cat", limit=5, offset=5)) == everything[5:]
    assert _refs(catalog.search("", limit=2, offset=1)) == _refs(catalog.search("", limit=3))[1:]


def test_derived_cards_are_read_once(catalog: Catalog, store: BlobStore, signer: Signer) -> None:
    parent = _add(catalog, store, signer, "parent", card_json='{"lineage":[],"name":"parent"}')
    lineage = [{"digest": parent.content_digest, "parameters": {}, "relation": "resized-from"}]
    child_card = json.dumps({"lineage": lineage, "name": "child"}, separators=(",", ":"))
    child = _add(catalog, store, signer, "child", card_json=child_card)
    highest, rows = catalog.derived_cards()
    assert highest == child.id and [row_id for row_id, _ in rows] == [child.id]
    assert json.loads(rows[0][1])["lineage"][0]["digest"] == parent.content_digest
    assert catalog.derived_cards(after=highest) == (highest, [])
    later = _add(catalog, store, signer, "later", card_json='{"lineage":[],"name":"later"}')
    assert catalog.derived_cards(after=highest) == (later.id, [])
    assert _refs(catalog.by_ids([later.id, parent.id, 10**6])) == ["later@1", "parent@1"]
