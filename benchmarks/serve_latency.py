"""`lorahub serve` on a 100,000-version catalogue: server time of the library page (50 per page) and of an adapter
page, against baselines measured in the same run.

The catalogue is built through the catalog's own batched insert (``Catalog.add_versions``: versions, signatures,
search words and one signed audit event each) from real signed cards, so every page reads what a real home holds:
20,000 names with 1 to 9 versions, text from search_latency.py's Zipf-like vocabulary, families, formats, licences
and commercial-use permissions mixed, every version after the first converted from the one before (a lineage),
one in fifty with a training record and a 50-point loss curve. The files themselves are not written (a page shows
them as missing; nothing on it reads them).

A real server (uvicorn, the app ``lorahub serve`` runs) answers over loopback; each request's server time is the
``Server-Timing`` header the app sets (the time to the response's first byte, inside the server; the pages are
rendered whole before it). Requests, in a fixed random order:

* library: pages of the plain listing at random depths (keyset cursors, as the Older link gives them), pages under
  a filter (family, format, commercial use, several at once) and text searches (search_latency.py's query mix);
* adapter: the page of a random version (card, signatures checked, licence verdicts, lineage graph with its
  children, loss curve when trained, audit events).

Baselines, same server, same run: ``/static/app.css`` (the floor: routing, the guard, the headers) and, in process,
the SDK calls a page makes without rendering (``Hub.browse`` for a library page; ``Hub.show`` + ``Hub.lineage`` for
an adapter page).

Targets (issue 17): library page p50 < 50 ms and p99 < 200 ms; adapter page p50 < 50 ms.

    python benchmarks/serve_latency.py [--versions 100000] [--requests 400] [--home DIR]
"""

from __future__ import annotations

import argparse
import base64
import os
import platform
import random
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from search_latency import Corpus, make_queries, percentile, rows  # type: ignore[import-not-found]

from lorahub import Hub
from lorahub.registry.blobs import BlobInfo
from lorahub.registry.catalog import NewVersion
from lorahub.signing.card import BaseModel, Card, Creator, License, Parent
from lorahub.signing.keys import Signer
from lorahub.signing.signed import sign_card

BATCH = 2_000
TRAINED_EVERY = 50


def training(rng: random.Random) -> dict[str, Any]:
    loss, points = 0.2, []
    for step in range(20, 1001, 20):
        loss = max(0.02, loss * rng.uniform(0.93, 1.01))
        points.append([step, f"{loss:.6g}"])
    return {
        "schema": "lorahub.training/v1",
        "base_model": {"family": "sd1", "name": "sd15", "weights_digest": None},
        "dataset": {"images": 40, "excluded": [], "consent": {"status": "unknown"}},
        "hyperparameters": {"lr": "0.0001", "rank": 16, "optimizer": "adamw"},
        "seed": 0,
        "steps": {"done": 1000, "total": 1000},
        "loss_curve": {"every": 20, "points": points},
    }


def new_versions(signer: Signer, count: int) -> Iterator[NewVersion]:
    """Real signed cards, one per row of search_latency.py's corpus; each later version converted from the last."""
    corpus = Corpus()
    rng = random.Random(3)
    creator = Creator(signer.keyid, signer.identity.user_id)
    previous: dict[str, str] = {}
    for row in rows(corpus, count):
        sha = f"{row['id']:064x}"
        digest = sha[::-1]
        uses = tuple(u for u in row["commercial_use"].split(",") if u in ("none", "image", "rent", "sell"))
        parent = previous.get(row["name"])
        card = Card(
            name=row["name"], version=row["number"], content_digest=digest,
            hashes={"sha256": sha, "autov2": sha[:10], "autov3": sha[::-1], "content": digest},
            format=row["format"], base_model=BaseModel(family=row["family"]),
            license=License(id=row["license_id"], commercial_use=uses), creator=creator,
            trigger_words=tuple(dict.fromkeys(row["trigger_words"])), description=row["description"],
            tags=tuple(dict.fromkeys(row["tags"])),
            lineage=(Parent(parent, "converted-from", {"format": row["format"]}),) if parent else (),
            training=training(rng) if row["id"] % TRAINED_EVERY == 0 else None,
        )  # fmt: skip
        previous[row["name"]] = digest
        signed = sign_card(card, signer)
        yield NewVersion(
            name=card.name, number=card.version, content_digest=digest,
            blob=BlobInfo(sha, 150_000_000, Path("/nonexistent"), existed=False), file_name=f"{card.name}.safetensors",
            format=card.format, family=row["family"], license_id=card.license.id, commercial_use=uses,
            consent_status="unknown", description=card.description, trigger_words=card.trigger_words, tags=card.tags,
            card_json=signed.envelope.payload.decode("utf-8"),
            signatures=[(s.keyid, base64.b64encode(s.sig).decode("ascii")) for s in signed.envelope.signatures],
            action="convert" if parent else "add",
        )  # fmt: skip


def build(hub: Hub, count: int) -> None:
    signer = hub.signer()
    actor = hub.audit_actor(signer)
    batch: list[NewVersion] = []
    for new in new_versions(signer, count):
        batch.append(new)
        if len(batch) == BATCH:
            hub.catalog.add_versions(batch, audit=actor)
            batch = []
    if batch:
        hub.catalog.add_versions(batch, audit=actor)
    with hub.catalog.engine.begin() as connection:
        connection.exec_driver_sql("ANALYZE")


class Server:
    """The app ``lorahub serve`` runs, on a free loopback port, in a thread."""

    def __init__(self, hub: Hub) -> None:
        import uvicorn

        from lorahub.web.app import ServeOptions, create_app
        from lorahub.web.server import bind, uvicorn_config

        self.sock = bind("127.0.0.1", 0)
        port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn_config(create_app(hub, ServeOptions(port=port))))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def server_ms(client: httpx.Client, path: str) -> float:
    response = client.get(path)
    if response.status_code != 200:
        raise SystemExit(f"GET {path}: {response.status_code} {response.text[:300]}")
    timing = response.headers["server-timing"]
    return float(timing.partition("dur=")[2])


def in_process_ms(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return (time.perf_counter() - start) * 1000


def library_paths(hub: Hub, count: int, rng: random.Random) -> list[tuple[str, str]]:
    """(kind, path) of ``count`` library requests: plain pages at random depths, filtered pages, searches."""
    with hub.catalog.engine.connect() as connection:
        highest = int(connection.exec_driver_sql("SELECT max(id) FROM version").scalar_one())
    corpus = Corpus()
    queries = make_queries(corpus, list(rows(corpus, 2_000)), count)
    filters = [
        "family=sdxl", "family=flux1", "format=kohya", "commercial=yes", "commercial=no", "license=MIT",
        "family=sd1&commercial=yes", "family=sdxl&format=lycoris",
    ]  # fmt: skip
    paths = []
    for index in range(count):
        kind = ("page", "filtered", "search")[index % 3]
        cursor = f"b{rng.randint(1, highest)}" if rng.random() < 0.9 else ""
        if kind == "page":
            paths.append((kind, f"/?cursor={cursor}"))
        elif kind == "filtered":
            paths.append((kind, f"/?{rng.choice(filters)}&cursor={cursor}"))
        else:
            paths.append((kind, f"/?q={httpx.QueryParams({'q': queries[index]})['q']}"))
    return paths


def report(label: str, values: list[float], baseline: float | None = None) -> str:
    p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
    ratio = f"{p50 / baseline:>9.1f}x" if baseline else f"{'':>10}"
    return f"{label:<40}{len(values):>6}{p50:>10.2f}{p99:>10.2f}{ratio}"


def measure(hub: Hub, requests: int) -> tuple[float, float, float]:
    rng = random.Random(7)
    library = library_paths(hub, requests, rng)
    with hub.catalog.engine.connect() as connection:
        refs = [
            f"{name}@{number}"
            for name, number in connection.exec_driver_sql(
                "SELECT adapter.name, version.number FROM version JOIN adapter ON adapter.id = version.adapter_id"
            )
        ]
    adapters = rng.sample(refs, requests)
    with Server(hub) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        for _, path in library[:20]:  # warm: page cache, statement cache, templates, the children index
            server_ms(client, path)
        for ref in adapters[:10]:
            server_ms(client, f"/adapters/{ref}")
        floor = [server_ms(client, "/static/app.css") for _ in range(200)]
        pages = {kind: [] for kind in ("page", "filtered", "search")}
        for kind, path in library:
            pages[kind].append(server_ms(client, path))
        adapter_pages = [server_ms(client, f"/adapters/{ref}") for ref in adapters]
        api = [server_ms(client, "/api" + path.replace("/?", "/versions?", 1)) for _, path in library[:100]]
    sdk_browse = [in_process_ms(lambda: hub.browse(limit=50, cursor=f"b{rng.randint(2, 10**5)}")) for _ in range(100)]
    sdk_adapter = [in_process_ms(lambda ref=ref: (hub.show(ref), hub.lineage(ref))) for ref in adapters[:100]]
    everything = [value for values in pages.values() for value in values]
    floor_p50 = percentile(floor, 0.5)
    print(f"\n{'server time (Server-Timing)':<40}{'runs':>6}{'p50 ms':>10}{'p99 ms':>10}{'p50/floor':>10}")
    print(report("static file (floor)", floor, floor_p50))
    print(report("library page, plain listing", pages["page"], floor_p50))
    print(report("library page, filtered", pages["filtered"], floor_p50))
    print(report("library page, text search", pages["search"], floor_p50))
    print(report("library page, all of the above", everything, floor_p50))
    print(report("/api/versions (the same pages as JSON)", api, floor_p50))
    print(report("adapter page", adapter_pages, floor_p50))
    print(f"\n{'in process, no HTTP, no rendering':<40}{'runs':>6}{'p50 ms':>10}{'p99 ms':>10}")
    print(report("Hub.browse (a library page's data)", sdk_browse))
    print(report("Hub.show + Hub.lineage (adapter data)", sdk_adapter))
    return percentile(everything, 0.5), percentile(everything, 0.99), percentile(adapter_pages, 0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=400, help="library requests, and as many adapter pages")
    parser.add_argument("--home", type=Path, help="build the catalogue here once and reuse it (default: a temp dir)")
    args = parser.parse_args()
    os.environ.pop("LORAHUB_DATABASE_URL", None)
    with tempfile.TemporaryDirectory() as folder:
        home = args.home or Path(folder) / "home"
        hub = Hub.open(home)
        start = time.perf_counter()
        if hub.keys.default() is None:
            hub.create_identity("Bench <bench@example.com>")
            build(hub, args.versions)
        with hub.catalog.engine.connect() as connection:
            versions = int(connection.exec_driver_sql("SELECT count(*) FROM version").scalar_one())
        print(f"lorahub serve latency — {versions:,} versions; {args.requests} library and adapter page requests")
        print(f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, {platform.machine()}, "
              f"{os.cpu_count()} CPUs; catalogue ready in {time.perf_counter() - start:.0f} s")  # fmt: skip
        library_p50, library_p99, adapter_p50 = measure(hub, args.requests)
        hub.catalog.engine.dispose()
    met = library_p50 < 50 and library_p99 < 200 and adapter_p50 < 50
    print(
        f"\ntargets: library p50 < 50 ms ({library_p50:.1f}), p99 < 200 ms ({library_p99:.1f}); adapter p50 < 50 ms "
        f"({adapter_p50:.1f}): {'met' if met else 'MISSED'}"
    )
    sys.exit(0 if met else 1)


if __name__ == "__main__":
    main()
