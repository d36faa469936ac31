"""Verify-only use: ``lorahub verify FILE --key PEM`` checks someone else's signed file against their key alone, in a
home that does not exist and is never made (as ``cosign verify --key`` and ``model_signing verify key`` do); a home
with no identity trusts keys, its unsigned trust changes chained and accepted only before it signs anything."""

from __future__ import annotations

import json
from pathlib import Path

from lorahub.dev.example_lora import write_example_lora
from tests.cli.test_catalog_cli import EXIT_VERIFY_FAILED, Home


def _signed_file(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Alice signs a file (card embedded); returns it, her public key and Mallory's."""
    alice, mallory = Home(tmp_path / "alice"), Home(tmp_path / "mallory")
    alice.run("keys", "create", "Alice <alice@studio.example>")
    mallory.run("keys", "create", "Mallory <mallory@example.com>")
    path = tmp_path / "style.safetensors"
    write_example_lora(path, rank=1, name="style")
    alice.run("add", str(path), "--license", "MIT", "--embed")
    keys = []
    for home, who in ((alice, "Alice"), (mallory, "Mallory")):
        keys.append(tmp_path / f"{who.lower()}.pem")
        keys[-1].write_text(home.run("keys", "export", who).stdout)
    return path, keys[0], keys[1]


def test_verify_key_checks_a_file_against_one_key_and_touches_no_home(tmp_path: Path) -> None:
    path, alice, mallory = _signed_file(tmp_path)
    empty = Home(tmp_path / "nobody")
    report = json.loads(empty.run("verify", str(path), "--key", str(alice), "--json").stdout)
    assert report["ok"] and report["card_source"] == "embedded" and report["policy"] == "built-in default"
    assert [s["trust"] for s in report["signers"]] == ["trusted"]
    assert not (tmp_path / "nobody").exists()  # no home was made, nothing written

    other = empty.run("verify", str(path), "--key", str(mallory), check=False)
    assert other.returncode == EXIT_VERIFY_FAILED and "signatures valid" in other.stdout

    tampered = tmp_path / "tampered.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    tampered.write_bytes(bytes(data))
    broken = empty.run("verify", str(tampered), "--key", str(alice), check=False)
    assert broken.returncode == EXIT_VERIFY_FAILED and "card matches file" in broken.stdout
    assert not (tmp_path / "nobody").exists()


def test_verify_key_needs_a_file_that_carries_its_card(tmp_path: Path) -> None:
    _, alice, _ = _signed_file(tmp_path)
    bare = tmp_path / "bare.safetensors"
    write_example_lora(bare, rank=1, seed=5, name="bare")
    result = Home(tmp_path / "nobody").run("verify", str(bare), "--key", str(alice), "--json", check=False)
    assert result.returncode == EXIT_VERIFY_FAILED
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert not checks["card present"]["ok"] and "--key" in checks["card present"]["detail"]
    refused = Home(tmp_path / "nobody").run("verify", "--all", "--key", str(alice), check=False)
    assert refused.returncode != 0 and "hint:" in refused.stderr


def test_a_home_with_no_identity_trusts_a_key_and_verifies_with_it(tmp_path: Path) -> None:
    """A verify-only home records its trust changes unsigned, saying why; the chain stays intact."""
    path, alice, _ = _signed_file(tmp_path)
    home = Home(tmp_path / "verifier")
    home.run("trust", "add", str(alice), "--name", "Alice")
    report = json.loads(home.run("verify", str(path), "--json").stdout)
    assert report["ok"] and [s["trust"] for s in report["signers"]] == ["trusted"]
    (event,) = [e for e in json.loads(home.run("audit", "--json").stdout) if e["action"] == "trust"]
    assert event["actor"] == "" and "verify-only home" in json.dumps(event)
    assert home.run("audit", "--verify").returncode == 0


def test_an_unsigned_trust_change_after_the_home_signed_is_reported(tmp_path: Path) -> None:
    """Once a home has an identity its trust changes are signed: one slipped in unsigned is caught."""
    from lorahub.registry.audit import AuditActor
    from lorahub.sdk.hub import Hub

    _, alice, _ = _signed_file(tmp_path)
    hub = Hub.open(tmp_path / "alice")
    forged = AuditActor("", None, unsigned_reason="a verify-only home: it has no identity to sign with")
    hub.catalog.trust_key("ab" * 32, "forged", alice.read_text(), audit=forged)
    problems = hub.verify_audit()
    assert [(p["kind"], "unsigned trust" in p["detail"]) for p in problems] == [("bad-signature", True)]
