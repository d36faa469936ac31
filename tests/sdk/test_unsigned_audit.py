"""An audit event whose actor cannot sign (a key locked by a passphrase that was not given) is recorded unsigned
with the reason, not dropped; the chain stays verifiable and says which events lack their author's proof."""

from __future__ import annotations

from pathlib import Path

import pytest

from lorahub import Hub
from lorahub.dev.example_lora import write_example_lora
from lorahub.registry.db import write_transaction


def test_a_failing_verify_with_a_locked_key_leaves_an_unsigned_event_saying_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LORAHUB_DATABASE_URL", raising=False)
    monkeypatch.setenv("LORAHUB_PASSPHRASE", "correct horse")
    hub = Hub.open(tmp_path / "home")
    assert hub.settings.database_url.startswith("sqlite:")
    identity = hub.create_identity("Locked <locked@example.com>", passphrase_env="LORAHUB_PASSPHRASE")
    monkeypatch.delenv("LORAHUB_PASSPHRASE")

    stranger = tmp_path / "stranger.safetensors"
    write_example_lora(stranger, rank=1, name="stranger")
    report = hub.verify(stranger)  # no card anywhere: fails

    assert not report.ok
    [event] = hub.audit(action="verify-failed")
    assert event["signed"] is False and event["actor"] == identity.fingerprint
    assert event["details"]["unsigned"] == f"the key of {identity.user_id} is encrypted and no passphrase was given"
    assert event["details"]["target"] == str(stranger) and "card present" in event["details"]["failed"]
    assert hub.verify_audit() == []
    assert [e["seq"] for e in hub.unsigned_audit_events()] == [event["seq"]]

    with write_transaction(hub.catalog.engine) as session:  # unsigned is not unprotected: its hash still holds
        session.connection().exec_driver_sql(f"UPDATE audit_event SET time = 'x' WHERE seq = {event['seq']}")
    assert [(p["seq"], p["kind"]) for p in hub.verify_audit()] == [(event["seq"], "edited")]
