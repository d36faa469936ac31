"""A team catalogue on PostgreSQL: list, search and show latency at 10,000 and at 100,000 versions.

Each size gets a fresh schema filled with the synthetic catalogue of ``search_latency.py`` (varied names,
descriptions, trigger words and tags with a Zipf-like word frequency), plus one ``add`` audit event per version, so
``show``'s audit trail is read from a log as long as the catalogue. Then, through ``Catalog`` as the CLI calls it:

* ``search``: the same varied one- to three-word queries, ``limit 50``: the tsvector + GIN index (migration
  0005_team_roles, what ``auto`` uses on PostgreSQL) and, for comparison, the portable word-table scan it replaces;
* ``show``: one version by ``name@N``, its locations and its audit trail (what ``Hub.show`` reads from the database;
  the card's signature check is CPU work that does not depend on the catalogue's size);
* ``list --family F``: every active version of one base family (a seventh of the catalogue), and ``list`` of one
  adapter's versions (``Filters(name=…)``); the whole catalogue is listed once per size and reported on its own.

Baseline, same schema, same run: "newest 50" (``search("")``: a primary-key ``ORDER BY id DESC LIMIT 50``,
hydrated the same way), the floor of returning 50 results at all. Targets (issue 14): search at 100,000 versions
p50 < 20 ms and p99 < 100 ms.

    python benchmarks/team_catalog_latency.py [--postgres URL] [--sizes 10000,100000] [--queries 300]
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from search_latency import bulk_load, make_queries, percentile, schema_catalog

from lorahub.registry.catalog import Catalog, Filters
from lorahub.registry.models import AuditEvent

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
EVENT_BATCH = 10_000


def add_events(catalog: Catalog, kept: list[dict[str, Any]]) -> None:
    """One ``add`` event per version (hashes are placeholders: this measures reading the log, not checking it)."""
    table = AuditEvent.__table__  # type: ignore[attr-defined]
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    with catalog.engine.begin() as connection:
        for start in range(0, len(kept), EVENT_BATCH):
            rows = [
                {
                    "seq": row["id"],
                    "time": now,
                    "actor": "f" * 64,
                    "action": "add",
                    "subject_name": row["name"],
                    "subject_version": row["number"],
                    "subject_digest": f"{row['id']:064x}"[::-1],
                    "details": '{"format":"kohya"}',
                    "prev_hash": "0" * 64,
                    "hash": f"{row['id']:064x}",
                    "signature": "",
                }
                for row in kept[start : start + EVENT_BATCH]
            ]
            connection.execute(sa.insert(table), rows)


def timed(run: Callable[[Any], object], inputs: list[Any]) -> list[float]:
    for item in inputs[:20]:  # warm the caches
        run(item)
    latencies = []
    for item in inputs:
        start = time.perf_counter()
        run(item)
        latencies.append((time.perf_counter() - start) * 1000)
    return latencies


def show(catalog: Catalog, ref: tuple[str, int]) -> object:
    version = catalog.get(*ref)
    return version, catalog.locations.of_sha256([version.blob_sha256]), catalog.audit_events(adapter=ref[0])


def measure(catalog: Catalog, kept: list[dict[str, Any]], queries: list[str]) -> dict[str, list[float]]:
    rng = random.Random(3)
    refs = [(row["name"], row["number"]) for row in rng.sample(kept, 200)]
    names = [name for name, _ in refs]
    families = [rng.choice(["sd1", "sdxl", "flux1"]) for _ in range(20)]
    return {
        "newest 50 (baseline)": timed(lambda _query: catalog.search(""), queries),
        "search: tsvector + GIN": timed(catalog.search, queries),
        "search: word-table scan": timed(lambda query: catalog.search(query, method="scan"), queries[:60]),
        "show NAME@N": timed(lambda ref: show(catalog, ref), refs),
        "list (one adapter)": timed(lambda name: catalog.list_versions(Filters(name=name)), names),
        "list --family F": timed(lambda family: catalog.list_versions(Filters(family=family)), families),
    }


def run_size(url: str, size: int, query_count: int) -> tuple[dict[str, list[float]], float]:
    with schema_catalog(url) as catalog:
        start = time.perf_counter()
        corpus, kept = bulk_load(catalog, size)
        add_events(catalog, kept)
        with catalog.engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE")
        print(f"\n{size:,} versions loaded in {time.perf_counter() - start:.1f} s")
        results = measure(catalog, kept, make_queries(corpus, kept, query_count))
        start = time.perf_counter()
        everything = catalog.list_versions()
        whole = (time.perf_counter() - start) * 1000
        print(f"list (the whole catalogue, {len(everything):,} versions): {whole:,.0f} ms")
        return results, whole


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", metavar="URL", default=DEFAULT_URL)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]

    print("lorahub team catalogue latency on PostgreSQL (ms)")
    print(f"Python {platform.python_version()}, {platform.machine()}")
    table: dict[int, dict[str, list[float]]] = {}
    for size in sizes:
        table[size], _ = run_size(args.postgres, size, args.queries)
    print(f"\n{'operation':<26}" + "".join(f"{f'{size:,} p50':>14}{'p99':>9}{'/base':>7}" for size in sizes))
    for operation in table[sizes[0]]:
        cells = ""
        for size in sizes:
            latencies, floor = table[size][operation], table[size]["newest 50 (baseline)"]
            p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
            cells += f"{p50:>14.2f}{p99:>9.2f}{p50 / percentile(floor, 0.5):>6.1f}x"
        print(f"{operation:<26}{cells}")
    largest = table[sizes[-1]]["search: tsvector + GIN"]
    p50, p99 = percentile(largest, 0.5), percentile(largest, 0.99)
    verdict = "met" if p50 < 20 and p99 < 100 else "MISSED"
    print(f"\ntarget at {sizes[-1]:,}: search p50 < 20 ms and p99 < 100 ms: {verdict} (p50 {p50:.2f}, p99 {p99:.2f})")
    sys.exit(0 if verdict == "met" else 1)


if __name__ == "__main__":
    main()
