"""Search: all words must match (as word prefixes, any case), name matches rank first, newest first within a tier,
and SQLite's FTS5 path returns exactly what the portable scan returns, which is what PostgreSQL runs."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lorahub.registry import search
from lorahub.registry.blobs import BlobStore
from lorahub.registry.catalog import Catalog, Filters
from tests.registry.helpers import Signer, new_version, postgres_reason, postgres_schema
from tests.support import postgres_unavailable

SMALL = [
    ("pixel-art", "retro 8-bit sprites", [], ["style"], "sdxl"),
    ("pixel-portrait", "portraits with an art deco touch", [], [], "sd1"),
    ("retro-anime", "anime look with pixel shading", [], ["art"], "sdxl"),
    ("watercolor", "soft painting", ["wc"], ["art"], "sdxl"),
    ("café-noir", "Film NOIR lighting", ["noir_style"], [], "flux1"),
]


def _fill(
    catalog: Catalog, store: BlobStore, signer: Signer, rows: list[tuple[str, str, list[str], list[str], str]]
) -> None:
    blob = store.put_bytes(b"one blob for all")
    for index, (name, description, trigger_words, tags, family) in enumerate(rows):
        fields = {"description": description, "trigger_words": trigger_words, "tags": tags, "family": family}
        version = new_version(name, blob, label=str(index), **fields)
        catalog.add_version(version, audit=signer.actor, allow_duplicate=True)


@pytest.fixture
def small(catalog: Catalog, store: BlobStore, signer: Signer) -> Catalog:
    _fill(catalog, store, signer, SMALL)
    return catalog


def _names(catalog: Catalog, query: str, **kwargs: Any) -> list[str]:
    return [version.name for version in catalog.search(query, **kwargs)]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("pixel", ["pixel-portrait", "pixel-art", "retro-anime"]),
        ("PIXEL", ["pixel-portrait", "pixel-art", "retro-anime"]),
        ("pix", ["pixel-portrait", "pixel-art", "retro-anime"]),
        ("pixel art", ["pixel-art", "pixel-portrait", "retro-anime"]),
        ("art pixel", ["pixel-art", "pixel-portrait", "retro-anime"]),
        ("art", ["pixel-art", "watercolor", "retro-anime", "pixel-portrait"]),
        ("ixel", []),
        ("pixel watercolor", []),
        ("noir", ["café-noir"]),
        ("café", ["café-noir"]),
        ("style", ["café-noir", "pixel-art"]),
        ("8-bit", ["pixel-art"]),
        ("wc", ["watercolor"]),
        ('"quoted" OR NOT * {name_terms}:', []),
    ],
)
def test_ranking_and_all_words(small: Catalog, query: str, expected: list[str]) -> None:
    assert _names(small, query) == expected


def test_limit_filters_and_empty_query(small: Catalog) -> None:
    assert _names(small, "pixel", limit=2) == ["pixel-portrait", "pixel-art"]
    assert _names(small, "art", filters=Filters(family="sdxl")) == ["pixel-art", "watercolor", "retro-anime"]
    assert _names(small, "", limit=3) == ["café-noir", "watercolor", "retro-anime"]
    assert _names(small, "  ---  ") == [name for name, *_ in reversed(SMALL)]


def test_removed_versions_are_not_found(small: Catalog, signer: Signer) -> None:
    small.remove("pixel-art", audit=signer.actor)
    assert _names(small, "pixel") == ["pixel-portrait", "retro-anime"]
    assert _names(small, "pixel", filters=Filters(include_removed=True)) == [
        "pixel-portrait",
        "pixel-art",
        "retro-anime",
    ]


def test_words_are_split_in_python() -> None:
    assert search.words("Pixel-Art_v2 ÉCLAIR, pixel!") == ["pixel", "art", "v2", "éclair"]
    doc = search.document("pixel-art", "Retro sprites", ["8-bit"], ["pixel", "style"])
    assert (doc.name_terms, doc.terms) == ("pixel art", "pixel art retro sprites 8 bit style")


# --- FTS5 against the scan, and SQLite against PostgreSQL --------------------------------------------------------

VOCABULARY = [
    "anime",
    "pixel",
    "retro",
    "portrait",
    "portraits",
    "style",
    "cinematic",
    "noir",
    "film",
    "watercolor",
    "oil",
    "sketch",
    "ink",
    "neon",
    "cyber",
    "punk",
    "cyberpunk",
    "fantasy",
    "dragon",
    "knight",
    "castle",
    "forest",
    "city",
    "night",
    "rain",
    "sunset",
    "lora",
    "lycoris",
    "flux",
    "sdxl",
    "detail",
    "light",
]


def _random_rows(count: int) -> list[tuple[str, str, list[str], list[str], str]]:
    rng = random.Random(7)
    rows = []
    for index in range(count):
        name = "-".join(rng.sample(VOCABULARY, rng.randint(1, 3))) + f"-{index}"
        description = " ".join(rng.choices(VOCABULARY, k=rng.randint(0, 8)))
        trigger_words = [" ".join(rng.sample(VOCABULARY, 2)) for _ in range(rng.randint(0, 2))]
        tags = rng.sample(VOCABULARY, rng.randint(0, 3))
        rows.append((name, description, trigger_words, tags, rng.choice(["sd1", "sdxl", "flux1"])))
    return rows


def _random_queries(count: int) -> list[str]:
    rng = random.Random(11)
    queries = []
    for _ in range(count):
        picked = rng.sample(VOCABULARY, rng.randint(1, 3))
        if rng.random() < 0.3:
            picked[0] = picked[0][: rng.randint(1, 4)]
        queries.append(" ".join(picked))
    return queries


def _results(catalog: Catalog, queries: list[str], **kwargs: Any) -> list[list[str]]:
    return [[version.ref for version in catalog.search(query, limit=20, **kwargs)] for query in queries]


@pytest.fixture(scope="module")
def random_sqlite(tmp_path_factory: pytest.TempPathFactory, signer: Signer) -> Iterator[Catalog]:
    root = tmp_path_factory.mktemp("random-search")
    catalog = Catalog.open(f"sqlite:///{root / 'catalog.db'}")
    _fill(catalog, BlobStore(root / "blobs"), signer, _random_rows(150))
    yield catalog
    catalog.engine.dispose()


def test_fts_and_scan_agree(random_sqlite: Catalog) -> None:
    queries = _random_queries(150)
    fts = _results(random_sqlite, queries, method="fts")
    assert fts == _results(random_sqlite, queries, method="scan")
    assert sum(1 for found in fts if found) > 100  # the queries do find things
    filtered = Filters(family="sdxl")
    assert _results(random_sqlite, queries[:30], method="fts", filters=filtered) == _results(
        random_sqlite, queries[:30], method="scan", filters=filtered
    )


@pytest.mark.postgres
def test_sqlite_and_postgresql_agree(random_sqlite: Catalog, tmp_path: Path, signer: Signer) -> None:
    reason = postgres_reason()
    if reason is not None:
        postgres_unavailable(reason)
    queries = _random_queries(60)
    with postgres_schema() as url:
        postgres = Catalog.open(url)
        _fill(postgres, BlobStore(tmp_path / "blobs"), signer, _random_rows(150))
        try:
            assert _results(postgres, queries) == _results(random_sqlite, queries)
        finally:
            postgres.engine.dispose()
