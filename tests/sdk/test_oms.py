"""OpenSSF model signing through the Hub: which bytes a bundle signs (the verified stored file, the exported file),
who signs, what is audited, and how a check reads as a verify report (trust, the policy's trusted signers, no
home with one key). The real ``model_signing`` command checks the same bundles in tests/cli/test_oms_cli.py."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from lorahub import Hub, VerifyReport, errors
from lorahub.signing.oms import verify_oms_bundle


@pytest.fixture
def style(hub: Hub, example_lora: Callable[..., Path]) -> Path:
    path = example_lora("style")
    hub.add(path)
    return path


def _own_keys(hub: Hub) -> dict[str, str]:
    return {i.fingerprint: i.public_pem for i in hub.keys.list()}


def _checks(report: VerifyReport) -> dict[str, bool]:
    return {c.name: c.ok for c in report.checks}


def test_sign_oms_signs_the_stored_bytes_and_leaves_the_card(hub: Hub, style: Path, tmp_path: Path) -> None:
    version = hub.version("style")
    signatures_before = len(version.signatures)
    signed = hub.sign("style", oms=tmp_path / "out" / "style.sig")
    assert signed.sha256 == version.blob_sha256 == hashlib.sha256(style.read_bytes()).hexdigest()
    own = hub.keys.default()
    assert own is not None and signed.signer == own.fingerprint and signed.model_name == style.name
    check = verify_oms_bundle(style, signed.bundle.read_bytes(), _own_keys(hub))
    assert check.ok and check.model_name == style.name
    assert stat.S_IMODE(signed.bundle.stat().st_mode) == 0o644
    assert len(hub.version("style").signatures) == signatures_before
    (event,) = hub.audit(action="sign-oms")
    assert event["subject_name"] == "style" and event["details"]["sha256"] == version.blob_sha256


def test_sign_oms_refuses_stored_bytes_that_changed(hub: Hub, style: Path, tmp_path: Path) -> None:
    blob = hub.blobs.path_for(hub.version("style").blob_sha256)
    os.chmod(blob, stat.S_IRUSR | stat.S_IWUSR)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0x01
    blob.write_bytes(bytes(data))
    with pytest.raises(errors.HashMismatchError):
        hub.sign("style", oms=tmp_path / "style.sig")
    assert not (tmp_path / "style.sig").exists()


def test_export_oms_signs_the_exported_bytes(hub: Hub, style: Path, tmp_path: Path) -> None:
    out = tmp_path / "export" / "style.safetensors"
    out.parent.mkdir()
    hub.export("style", out, oms=tmp_path / "export" / "style.sig")
    assert out.read_bytes() != style.read_bytes()  # the card is embedded: other bytes than the stored ones
    bundle = (tmp_path / "export" / "style.sig").read_bytes()
    assert verify_oms_bundle(out, bundle, _own_keys(hub)).ok
    assert not verify_oms_bundle(style, bundle, _own_keys(hub)).ok
    (event,) = hub.audit(action="export")
    assert event["details"]["oms"] == str(tmp_path / "export" / "style.sig")


def test_export_for_a_tool_lists_the_bundle_among_its_files(hub: Hub, style: Path, tmp_path: Path) -> None:
    result = hub.export("style", tmp_path / "a1111", tool="a1111", oms=tmp_path / "style.sig")
    assert result.files["oms"] == tmp_path / "style.sig"
    assert verify_oms_bundle(result.files["adapter"], result.files["oms"].read_bytes(), _own_keys(hub)).ok


def test_export_oms_needs_an_identity_before_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LORAHUB_DATABASE_URL", raising=False)
    bare = Hub.open(tmp_path / "bare")
    with pytest.raises(errors.KeyNotFoundError):
        bare.export("style", tmp_path / "x.safetensors", oms=tmp_path / "x.sig")
    assert not (tmp_path / "x.safetensors").exists()


def test_verify_oms_judges_the_signer_by_the_homes_trust_and_policy(hub: Hub, style: Path, tmp_path: Path) -> None:
    signed = hub.sign("style", oms=tmp_path / "style.sig")
    report = hub.verify_oms(style, signed.bundle)
    assert report.ok and report.signers[0]["trust"] == "own" and report.signers[0]["name"] == signed.signer_name
    assert hub.verify_oms("style", signed.bundle).ok  # a reference: the version's stored file

    (tmp_path / "strict.toml").write_text('trusted_signers = ["' + "0" * 16 + '"]\n')
    strict = hub.verify_oms(style, signed.bundle, policy=tmp_path / "strict.toml")
    assert _checks(strict) == {"signature valid": True, "signer trusted": False, "file matches": True}
    assert any(e["action"] == "verify-failed" for e in hub.audit())

    with pytest.raises(errors.NotAFileError, match="folder"):
        hub.verify_oms(tmp_path, signed.bundle)


def test_verify_oms_with_one_key_trusts_that_key_alone(hub: Hub, style: Path, tmp_path: Path) -> None:
    signed = hub.sign("style", oms=tmp_path / "style.sig")
    own = hub.keys.default()
    assert own is not None
    report = Hub.verify_oms_with_key(style, signed.bundle, own.public_pem)
    assert report.ok and report.signers[0]["trust"] == "trusted"
    other = Hub.open(tmp_path / "other")
    stranger = other.create_identity("Mallory <mallory@example.com>")
    refused = Hub.verify_oms_with_key(style, signed.bundle, stranger.public_pem)
    assert _checks(refused) == {"signature valid": False, "signer trusted": False, "file matches": False}
    assert json.loads(json.dumps(refused.as_dict()))["ok"] is False
