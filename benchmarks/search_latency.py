"""Catalog search latency on a 100,000-version catalog, against baselines measured in the same run.

The catalog is synthetic but varied: 20,000 adapters with 1 to 9 versions each, names of one to three words and
descriptions, trigger words and tags drawn from a 5,000-word vocabulary with a Zipf-like frequency (so some words
match tens of thousands of versions and some a handful). Rows are bulk-inserted (the FTS5 index fills through
the migration's triggers). Then a set of varied one- to three-word queries (common, rare, prefixes, names, words
that co-occur) runs through ``Catalog.search(limit=50)``, which returns hydrated results like the CLI shows.

Baselines, same catalog, same process:

* ``newest 50``: ``Catalog.search("")``, a primary-key ``ORDER BY id DESC LIMIT 50`` hydrated the same way: the
  floor, the cost of returning 50 results at all;
* ``LIKE scan``: the same queries through the portable scan (``method="scan"``), which PostgreSQL uses.

Targets: FTS5 p50 < 20 ms and p99 < 100 ms.

    python benchmarks/search_latency.py [--versions 100000] [--queries 500] [--scan-queries 100]
                                        [--postgres URL]   # also time the scan on PostgreSQL (a fresh schema)
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from itertools import accumulate
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from lorahub.registry import search
from lorahub.registry.catalog import Catalog
from lorahub.registry.models import Adapter, Blob, SearchText, Signature, Version

FAMILIES = ["sd1", "sd2", "sdxl", "sd3", "flux1", "pony", "illustrious"]
FORMATS = ["kohya", "diffusers", "peft", "comfyui", "lycoris", "ai-toolkit"]
LICENSES = ["LicenseRef-OpenRAIL-M", "LicenseRef-OpenRAIL++-M", "LicenseRef-FLUX-1-dev", "CC-BY-4.0", "MIT"]
COMMERCIAL = ["", "none", "image", "image,rent", "image,rentcivit,rent,sell"]
SYLLABLES = [
    "ka",
    "ri",
    "to",
    "mo",
    "na",
    "shi",
    "ro",
    "ze",
    "lu",
    "vi",
    "an",
    "el",
    "or",
    "ix",
    "qu",
    "pa",
    "de",
    "fo",
    "gi",
    "hu",
    "ja",
    "be",
    "ce",
    "du",
]
BATCH = 5_000


def vocabulary(rng: random.Random, size: int) -> list[str]:
    words: dict[str, None] = {}
    while len(words) < size:
        words["".join(rng.choices(SYLLABLES, k=rng.randint(2, 4)))] = None
    return list(words)


class Corpus:
    """Deterministic synthetic text with a Zipf-like word frequency."""

    def __init__(self, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.words = vocabulary(self.rng, 5_000)
        self.cumulative = list(accumulate(1 / (rank + 10) for rank in range(len(self.words))))
        self.tags = self.words[:200]

    def text(self, low: int, high: int) -> list[str]:
        return self.rng.choices(self.words, cum_weights=self.cumulative, k=self.rng.randint(low, high))

    def name(self, index: int) -> str:
        return "-".join(self.text(1, 3)) + f"-{index}"


def rows(corpus: Corpus, versions: int) -> Iterator[dict[str, Any]]:
    """One dict per version with everything the tables need."""
    rng = corpus.rng
    adapter_id = 0
    produced = 0
    while produced < versions:
        adapter_id += 1
        name = corpus.name(adapter_id)
        for number in range(1, min(rng.randint(1, 9), versions - produced) + 1):
            produced += 1
            trigger_words = [" ".join(corpus.text(1, 2)) for _ in range(rng.randint(0, 3))]
            yield {
                "adapter_id": adapter_id,
                "name": name,
                "number": number,
                "id": produced,
                "description": " ".join(corpus.text(8, 30)),
                "trigger_words": trigger_words,
                "tags": rng.sample(corpus.tags, rng.randint(1, 5)),
                "family": rng.choice(FAMILIES),
                "format": rng.choice(FORMATS),
                "license_id": rng.choice(LICENSES),
                "commercial_use": rng.choice(COMMERCIAL),
            }


def table_rows(row: dict[str, Any], now: datetime) -> dict[str, dict[str, Any]]:
    sha = f"{row['id']:064x}"
    doc = search.document(row["name"], row["description"], row["trigger_words"], row["tags"])
    card = {"schema": "lorahub.card/v1", "name": row["name"], "version": row["number"], "notes": "x" * 600}
    return {
        "blob": {"sha256": sha, "size": 150_000_000, "created_at": now},
        "version": {
            "id": row["id"],
            "adapter_id": row["adapter_id"],
            "number": row["number"],
            "content_digest": sha[::-1],
            "blob_sha256": sha,
            "file_name": f"{row['name']}.safetensors",
            "format": row["format"],
            "family": row["family"],
            "license_id": row["license_id"],
            "commercial_use": row["commercial_use"],
            "consent_status": "not-applicable",
            "description": row["description"],
            "trigger_words": json.dumps(row["trigger_words"]),
            "tags": json.dumps(row["tags"]),
            "card_json": json.dumps(card),
            "signers": "f" * 64,
            "created_at": now,
            "removed_at": None,
        },
        "signature": {"version_id": row["id"], "keyid": "f" * 64, "sig": "A" * 96, "added_at": now},
        "search_text": {"version_id": row["id"], "name_terms": doc.name_terms, "terms": doc.terms},
    }


def bulk_load(catalog: Catalog, versions: int) -> tuple[Corpus, list[dict[str, Any]]]:
    """Insert ``versions`` rows straight through SQLAlchemy Core, in large batches, one transaction."""
    corpus = Corpus()
    now = datetime.now(UTC)
    tables = {
        "adapter": Adapter.__table__,  # type: ignore[attr-defined]
        "blob": Blob.__table__,  # type: ignore[attr-defined]
        "version": Version.__table__,  # type: ignore[attr-defined]
        "signature": Signature.__table__,  # type: ignore[attr-defined]
        "search_text": SearchText.__table__,  # type: ignore[attr-defined]
    }
    kept: list[dict[str, Any]] = []
    with catalog.engine.begin() as connection:
        batch: dict[str, list[dict[str, Any]]] = {name: [] for name in tables}
        for row in rows(corpus, versions):
            kept.append(row)
            if row["number"] == 1:
                batch["adapter"].append({"id": row["adapter_id"], "name": row["name"], "created_at": now})
            for name, values in table_rows(row, now).items():
                batch[name].append(values)
            if len(batch["version"]) >= BATCH:
                flush(connection, tables, batch)
        flush(connection, tables, batch)
    return corpus, kept


def flush(connection: sa.Connection, tables: dict[str, sa.Table], batch: dict[str, list[dict[str, Any]]]) -> None:
    for name in ("adapter", "blob", "version", "signature", "search_text"):
        if batch[name]:
            connection.execute(sa.insert(tables[name]), batch[name])
            batch[name].clear()


def make_queries(corpus: Corpus, kept: list[dict[str, Any]], count: int) -> list[str]:
    """Varied typical queries: common and rare words, prefixes, name words, pairs that occur together."""
    rng = random.Random(2)
    common, rare = corpus.words[:200], corpus.words[1_000:]
    makers: list[Callable[[], str]] = [
        lambda: rng.choice(common),
        lambda: rng.choice(rare),
        lambda: rng.choice(common)[: rng.randint(3, 4)],
        lambda: rng.choice(kept)["name"].split("-")[0],
        lambda: " ".join(rng.sample(search.words(rng.choice(kept)["description"]), 2)),
        lambda: f"{rng.choice(common)} {rng.choice(common)}",
        lambda: f"{rng.choice(common)} {rng.choice(rare)}",
        lambda: " ".join(rng.sample(common, 3)),
    ]
    return [rng.choice(makers)() for _ in range(count)]


def timed(run: Callable[[str], list[Any]], queries: list[str]) -> tuple[list[float], int]:
    latencies, found = [], 0
    for query in queries:
        start = time.perf_counter()
        results = run(query)
        latencies.append((time.perf_counter() - start) * 1000)
        found += len(results)
    return latencies, found


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def report_line(label: str, latencies: list[float], baseline: tuple[float, float], found: int) -> str:
    p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
    mean_found = found / len(latencies)
    return (
        f"{label:<28}{len(latencies):>6}{p50:>10.2f}{p99:>10.2f}"
        f"{p50 / baseline[0]:>10.1f}x{p99 / baseline[1]:>9.1f}x{mean_found:>9.1f}"
    )


def measure(catalog: Catalog, queries: list[str], scan_queries: int, label: str) -> tuple[float, float]:
    for query in queries[:50]:  # warm the page cache and SQLAlchemy's statement cache
        catalog.search(query)
    floor, _ = timed(lambda _query: catalog.search(""), queries)
    baseline = (percentile(floor, 0.50), percentile(floor, 0.99))
    print(f"\n{label}")
    print(f"{'':<28}{'runs':>6}{'p50 ms':>10}{'p99 ms':>10}{'p50/base':>11}{'p99/base':>10}{'results':>9}")
    print(report_line("newest 50 (baseline)", floor, baseline, 50 * len(floor)))
    fts, found = timed(lambda query: catalog.search(query, method="fts"), queries)
    index = "FTS5 search" if catalog.engine.dialect.name == "sqlite" else "tsvector + GIN search"
    print(report_line(index, fts, baseline, found))
    fts_p50, fts_p99 = percentile(fts, 0.50), percentile(fts, 0.99)
    scan, found = timed(lambda query: catalog.search(query, method="scan"), queries[:scan_queries])
    print(report_line("LIKE scan (portable)", scan, baseline, found))
    return fts_p50, fts_p99


@contextmanager
def schema_catalog(url: str) -> Iterator[Catalog]:
    """A catalogue in a fresh PostgreSQL schema of ``url``, dropped afterwards (the benchmarks that time
    PostgreSQL share it)."""
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as connection:
        connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        separator = "&" if "?" in url else "?"
        catalog = Catalog.open(f"{url}{separator}options=-csearch_path%3D{schema}")
        try:
            yield catalog
        finally:
            catalog.engine.dispose()
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


def postgres_run(url: str, versions: int, queries: list[str], scan_queries: int) -> None:
    with schema_catalog(url) as catalog:
        start = time.perf_counter()
        bulk_load(catalog, versions)
        with catalog.engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE")
        print(f"\nloaded {versions:,} versions into PostgreSQL in {time.perf_counter() - start:.1f} s")
        measure(catalog, queries, scan_queries, "PostgreSQL")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--scan-queries", type=int, default=100, help="the LIKE scan is slow; time fewer")
    parser.add_argument("--postgres", metavar="URL", help="also time the scan on this PostgreSQL database")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "catalog.db"
        catalog = Catalog.open(f"sqlite:///{path}")
        start = time.perf_counter()
        corpus, kept = bulk_load(catalog, args.versions)
        with catalog.engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE")
        raw = catalog.engine.raw_connection()  # outside any transaction, or the checkpoint cannot finish
        raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        raw.close()
        load_s = time.perf_counter() - start
        size_mib = sum(p.stat().st_size for p in Path(folder).iterdir()) / 2**20
        print(f"lorahub search latency — {args.versions:,} versions, {args.queries} queries, limit 50")
        print(f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, {platform.machine()}")
        print(f"loaded in {load_s:.1f} s; database {size_mib:.0f} MiB (with FTS5 index)")
        queries = make_queries(corpus, kept, args.queries)
        p50, p99 = measure(catalog, queries, args.scan_queries, "SQLite")
        catalog.engine.dispose()
    verdict = "met" if p50 < 20 and p99 < 100 else "MISSED"
    print(f"\ntarget p50 < 20 ms and p99 < 100 ms (FTS5): {verdict} (p50 {p50:.2f} ms, p99 {p99:.2f} ms)")
    if args.postgres:
        postgres_run(args.postgres, args.versions, queries, args.scan_queries)
    sys.exit(0 if verdict == "met" else 1)


if __name__ == "__main__":
    main()
