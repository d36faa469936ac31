"""The audit chain: one event per operation, a clean verification, and each kind of tampering found."""

from __future__ import annotations

import base64
import itertools
import re

import pytest

from lorahub.registry import audit
from lorahub.registry.blobs import BlobStore
from lorahub.registry.catalog import Catalog, KeyRow
from lorahub.registry.db import write_transaction
from tests.registry.helpers import Signer, new_version, verify_signature


@pytest.fixture
def busy(catalog: Catalog, store: BlobStore, signer: Signer) -> Catalog:
    """A catalog with six events from several operations, and the signer's key in the key table."""
    catalog.upsert_key(KeyRow(signer.fingerprint, "Alice", signer.public_pem, own=True))
    for index in range(3):
        catalog.add_version(new_version("pixel-art", store.put_bytes(f"v{index}".encode())), audit=signer.actor)
    catalog.remove("pixel-art", 2, audit=signer.actor)
    catalog.trust_key("b" * 64, "Bob", signer.public_pem, audit=signer.actor)
    catalog.log("verify-failed", audit=signer.actor, subject_name="pixel-art", subject_version=1, details={"x": 1})
    return catalog


def _problems(catalog: Catalog, signer: Signer, expected_head: tuple[int, str] | None = None) -> list[tuple[int, str]]:
    keys = {signer.fingerprint: signer.public_pem}
    found = catalog.verify_audit(keys, verify_signature, expected_head=expected_head)
    return [(problem.seq, problem.kind) for problem in found]


def _sql(catalog: Catalog, *statements: str) -> None:
    with write_transaction(catalog.engine) as session:
        for statement in statements:
            session.connection().exec_driver_sql(statement)


def test_each_operation_appends_one_linked_signed_event(busy: Catalog, signer: Signer) -> None:
    events = busy.audit_events()
    assert [e.action for e in events] == ["add", "add", "add", "remove", "trust", "verify-failed"]
    assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6]
    assert events[0].prev_hash == audit.GENESIS_HASH
    assert all(later.prev_hash == earlier.hash for earlier, later in itertools.pairwise(events))
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", e.time) for e in events)
    assert (events[3].subject_name, events[3].subject_version) == ("pixel-art", 2)
    assert events[0].subject_digest == busy.get("pixel-art", 1).content_digest
    assert all(audit.event_hash(e) == e.hash for e in events)
    assert verify_signature(signer.public_pem, bytes.fromhex(events[0].hash), base64.b64decode(events[0].signature))
    assert busy.audit_head() == (6, events[-1].hash)
    assert _problems(busy, signer) == []
    assert busy.verify_audit(verify=verify_signature) == []  # keys from the key table


def test_query_by_adapter_finds_generate_events_naming_it(catalog: Catalog, signer: Signer) -> None:
    """A ``generate`` event names its adapters in its details (one image, several adapters); ``adapter=`` finds
    it under each, and not under a base model that happens to share a name. Names with LIKE wildcards match
    literally."""

    def generate(base: str, *adapters: str) -> int:
        details = {"base": {"name": base}, "adapters": [{"name": a, "weight": 0.5} for a in adapters]}
        return catalog.log("generate", audit=signer.actor, details=details).seq

    both = generate("sd15", "pixel_art", "watercolor")
    only = generate("sd15", "watercolor")
    base_named_alike = generate("pixel_art", "watercolor")
    assert [e.seq for e in catalog.audit_events(adapter="pixel_art")] == [both]
    assert [e.seq for e in catalog.audit_events(adapter="pixelXart")] == []
    assert [e.seq for e in catalog.audit_events(adapter="watercolor")] == [both, only, base_named_alike]
    assert [e.seq for e in catalog.audit_events(adapter="watercolor", limit=1)] == [base_named_alike]


def test_query(busy: Catalog, signer: Signer) -> None:
    assert [e.seq for e in busy.audit_events(action="add")] == [1, 2, 3]
    assert [e.seq for e in busy.audit_events(adapter="pixel-art")] == [1, 2, 3, 4, 6]
    assert [e.seq for e in busy.audit_events(who=signer.fingerprint[:6])] == [1, 2, 3, 4, 5, 6]
    assert busy.audit_events(who="zzz") == []
    assert [e.seq for e in busy.audit_events(limit=2)] == [5, 6]
    events = busy.audit_events()
    assert [e.seq for e in busy.audit_events(since=events[4].time)] == [5, 6]
    assert busy.audit_events(since="9999-01-01T00:00:00.000000Z") == []


def test_an_edited_field_is_found(busy: Catalog, signer: Signer) -> None:
    _sql(busy, "UPDATE audit_event SET subject_name = 'innocent' WHERE seq = 2")
    assert _problems(busy, signer) == [(2, "edited")]


@pytest.mark.parametrize("details", ['{"x":2}', '{"x": 1}', "not json", '{"x":1e999}'])
def test_edited_details_are_found(busy: Catalog, signer: Signer, details: str) -> None:
    _sql(busy, f"UPDATE audit_event SET details = '{details}' WHERE seq = 6")
    assert _problems(busy, signer) == [(6, "edited")]


def test_an_edit_with_a_recomputed_hash_breaks_the_signature_and_the_next_link(busy: Catalog, signer: Signer) -> None:
    event = busy.audit_events()[2]
    event.subject_name = "innocent"
    forged_hash = audit.event_hash(event)
    _sql(busy, f"UPDATE audit_event SET subject_name = 'innocent', hash = '{forged_hash}' WHERE seq = 3")
    assert _problems(busy, signer) == [(3, "bad-signature"), (3, "edited")]


def test_a_deleted_middle_event_is_found(busy: Catalog, signer: Signer) -> None:
    _sql(busy, "DELETE FROM audit_event WHERE seq = 3")
    assert _problems(busy, signer) == [(4, "deleted")]


def test_a_deleted_first_event_is_found(busy: Catalog, signer: Signer) -> None:
    _sql(busy, "DELETE FROM audit_event WHERE seq = 1")
    assert _problems(busy, signer) == [(2, "deleted")]


def test_deleted_newest_events_are_found_through_the_head(busy: Catalog, signer: Signer) -> None:
    _sql(busy, "DELETE FROM audit_event WHERE seq >= 5")
    assert _problems(busy, signer) == [(6, "deleted")]


def test_a_rewritten_head_is_caught_by_a_head_kept_elsewhere(busy: Catalog, signer: Signer) -> None:
    kept = busy.audit_head()
    assert kept is not None
    newest_left = busy.audit_events()[4]
    _sql(
        busy,
        "DELETE FROM audit_event WHERE seq = 6",
        f"UPDATE audit_head SET seq = 5, hash = '{newest_left.hash}'",
    )
    assert _problems(busy, signer) == []  # the documented limit: chain and head agree
    assert _problems(busy, signer, expected_head=kept) == [(6, "deleted")]


@pytest.mark.parametrize(("a", "b"), [(3, 4), (1, 2), (2, 5), (5, 6)])
def test_swapped_events_are_found(busy: Catalog, signer: Signer, a: int, b: int) -> None:
    _sql(
        busy,
        f"UPDATE audit_event SET seq = -1 WHERE seq = {a}",
        f"UPDATE audit_event SET seq = {a} WHERE seq = {b}",
        f"UPDATE audit_event SET seq = {b} WHERE seq = -1",
    )
    assert _problems(busy, signer) == [(a, "reordered"), (b, "reordered")]


def test_a_forged_signature_is_found(busy: Catalog, signer: Signer) -> None:
    event = busy.audit_events()[1]
    forger = Signer.generate()
    forged = base64.b64encode(forger.sign(bytes.fromhex(event.hash))).decode()
    _sql(busy, f"UPDATE audit_event SET signature = '{forged}' WHERE seq = 2")
    assert _problems(busy, signer) == [(2, "bad-signature")]
    _sql(busy, "UPDATE audit_event SET signature = 'not base64!' WHERE seq = 2")
    assert _problems(busy, signer) == [(2, "bad-signature")]


def test_an_unknown_actor_is_found(busy: Catalog, signer: Signer) -> None:
    stranger = Signer.generate()
    busy.log("convert", audit=stranger.actor)
    assert _problems(busy, signer) == [(7, "unknown-actor")]


def test_appends_continue_the_chain_across_catalog_instances(catalog_url: str, signer: Signer) -> None:
    for _ in range(2):
        catalog = Catalog.open(catalog_url)
        catalog.log("generate", audit=signer.actor, details={"seed": 1})
        catalog.engine.dispose()
    catalog = Catalog.open(catalog_url)
    assert [e.seq for e in catalog.audit_events()] == [1, 2]
    assert _problems(catalog, signer) == []
    catalog.engine.dispose()


@pytest.mark.parametrize("seq", [1, 4])
def test_an_edited_link_is_one_edit(busy: Catalog, signer: Signer, seq: int) -> None:
    _sql(busy, f"UPDATE audit_event SET prev_hash = '{'e' * 64}' WHERE seq = {seq}")
    assert _problems(busy, signer) == [(seq, "edited")]


def test_an_unsigned_event_with_its_reason_keeps_the_chain_intact(busy: Catalog, signer: Signer) -> None:
    reason = "the key of Alice is encrypted and no passphrase was given"
    event = busy.log_unsigned("verify-failed", actor=signer.fingerprint, reason=reason, details={"target": "x"})
    assert (event.seq, event.signature, audit.unsigned_reason(event)) == (7, "", reason)
    assert busy.log("export", audit=signer.actor).prev_hash == event.hash  # later events link to it as to any
    assert _problems(busy, signer) == []
    assert [audit.unsigned_reason(e) for e in busy.audit_events()].count(reason) == 1


def test_an_unsigned_event_is_still_hashed_and_linked(busy: Catalog, signer: Signer) -> None:
    busy.log_unsigned("export", actor=signer.fingerprint, reason="locked", details={"out": "a"})
    busy.log("export", audit=signer.actor)
    _sql(busy, 'UPDATE audit_event SET details = \'{"out":"b","unsigned":"locked"}\' WHERE seq = 7')
    assert _problems(busy, signer) == [(7, "edited")]


def test_only_record_only_actions_with_a_reason_may_be_unsigned(busy: Catalog, signer: Signer) -> None:
    with pytest.raises(ValueError, match="must be signed"):
        busy.log_unsigned("remove", actor=signer.fingerprint, reason="locked")
    with pytest.raises(ValueError, match="must be signed"):
        busy.log_unsigned("export", actor=signer.fingerprint, reason=" ")
    _sql(busy, "UPDATE audit_event SET signature = '' WHERE seq = 2")  # a stripped signature is not "unsigned"
    assert _problems(busy, signer) == [(2, "bad-signature")]
    assert audit.unsigned_reason(busy.audit_events()[1]) is None
