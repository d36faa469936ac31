"""Eight processes adding versions to one catalog at once: nothing lost, one total order of audit events."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from sqlalchemy import text

from lorahub.registry.blobs import BlobStore
from lorahub.registry.catalog import Catalog
from lorahub.registry.db import read_transaction
from tests.registry.helpers import Signer, add_versions_worker, verify_signature

PROCESSES = 8
PER_PROCESS = 5


def _run_workers(url: str, store_root: Path, signer: Signer) -> None:
    """Eight processes that open the same new catalog together and add versions (see add_versions_worker)."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    workers = [
        context.Process(
            target=add_versions_worker,
            args=(url, str(store_root), signer.private_pem),
            kwargs={"worker": index, "count": PER_PROCESS, "barrier": barrier},
        )
        for index in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [worker.exitcode for worker in workers] == [0] * PROCESSES


@pytest.mark.slow
def test_eight_writers(catalog_url: str, tmp_path: Path, signer: Signer) -> None:
    store = BlobStore(tmp_path / "blobs")
    _run_workers(catalog_url, store.root, signer)
    catalog = Catalog.open(catalog_url)
    total = PROCESSES * PER_PROCESS
    versions = catalog.list_versions()
    assert len(versions) == total
    assert sorted(v.ref for v in versions) == sorted(
        f"w{w}@{n}" for w in range(PROCESSES) for n in range(1, PER_PROCESS + 1)
    )
    assert len({v.blob_sha256 for v in versions}) == total
    assert all(store.verify(v.blob_sha256) for v in versions)
    with read_transaction(catalog.engine) as session:
        assert session.execute(text("SELECT count(*) FROM blob")).scalar_one() == total
    events = catalog.audit_events()
    assert [event.seq for event in events] == list(range(1, total + 1))
    assert sorted((e.subject_name, e.subject_version) for e in events) == sorted((v.name, v.number) for v in versions)
    assert catalog.verify_audit({signer.fingerprint: signer.public_pem}, verify_signature) == []
    catalog.engine.dispose()
