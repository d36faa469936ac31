"""OpenSSF model signing, both ways, against the real ``model_signing`` command (sigstore/model-transparency, a dev
dependency): it accepts the bundles ``lorahub sign --oms`` and ``lorahub export --oms`` write and rejects them once a
byte of the file changes or another key is given; lorahub checks the bundles ``model_signing sign key`` writes
against a home's trust (own, trusted, unknown, revoked), against one key with no home, and refuses a tampered file.

``model_signing`` 1.1 imports pyOpenSSL for its certificate signer even when it signs with a key, without declaring
it, and no pyOpenSSL release installs beside cryptography 51. :data:`MODEL_SIGNING` runs the real command, putting
an empty ``OpenSSL`` module in place only when the real one cannot be imported: the key signer and verifier under
test never touch it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from lorahub.dev.example_lora import write_example_lora
from tests.cli.test_catalog_cli import EXIT_VERIFY_FAILED, Home

pytestmark = pytest.mark.slow

MODEL_SIGNING = """\
import runpy, sys, types
try:
    import OpenSSL  # noqa: F401
except ImportError:  # model_signing's certificate signer imports it at start-up; the key paths never use it
    sys.modules["OpenSSL"] = types.ModuleType("OpenSSL")
    sys.modules["OpenSSL"].crypto = None
sys.argv[0] = "model_signing"
runpy.run_module("model_signing", run_name="__main__", alter_sys=True)
"""


def model_signing(*args: str) -> subprocess.CompletedProcess[str]:
    """The ``model_signing`` command line, as ``python -m model_signing`` runs it."""
    if importlib.util.find_spec("model_signing") is None:
        pytest.skip("model-signing (a dev dependency) is not installed")
    env = {k: v for k, v in os.environ.items() if k != "LORAHUB_HOME"}
    return subprocess.run(
        [sys.executable, "-c", MODEL_SIGNING, *args], capture_output=True, text=True, env=env, check=False
    )


def flip_a_byte(source: Path, target: Path) -> Path:
    data = bytearray(source.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    return target


def fresh_key(folder: Path, who: str) -> tuple[Path, Path]:
    """A P-256 key pair as PEM files (PKCS#8 private, SubjectPublicKeyInfo public), made the way openssl would."""
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = folder / f"{who}.key.pem", folder / f"{who}.pub.pem"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public


@pytest.fixture
def alice(tmp_path: Path) -> Home:
    """A home whose identity Alice has catalogued ``style`` (the file at tmp_path/style.safetensors)."""
    home = Home(tmp_path / "alice")
    home.run("keys", "create", "Alice <alice@studio.example>")
    write_example_lora(tmp_path / "style.safetensors", rank=1, name="style")
    home.run("add", str(tmp_path / "style.safetensors"), "--license", "MIT")
    (tmp_path / "alice.pub.pem").write_text(home.run("keys", "export", "Alice").stdout)
    return home


def test_model_signing_accepts_lorahubs_bundles_and_rejects_a_changed_byte_or_another_key(
    tmp_path: Path, alice: Home
) -> None:
    alice.run("export", "style", str(tmp_path / "exported.safetensors"), "--oms", str(tmp_path / "exported.sig"))
    alice_pem = str(tmp_path / "alice.pub.pem")
    accepted = model_signing(
        "verify", "key", str(tmp_path / "exported.safetensors"),
        "--signature", str(tmp_path / "exported.sig"), "--public_key", alice_pem,
    )  # fmt: skip
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "Verification succeeded" in accepted.stdout

    changed = flip_a_byte(tmp_path / "exported.safetensors", tmp_path / "changed.safetensors")
    rejected = model_signing(
        "verify", "key", str(changed), "--signature", str(tmp_path / "exported.sig"), "--public_key", alice_pem
    )
    assert rejected.returncode != 0 and "Hash mismatch" in rejected.stderr + rejected.stdout

    _, mallory = fresh_key(tmp_path, "mallory")
    other = model_signing(
        "verify", "key", str(tmp_path / "exported.safetensors"),
        "--signature", str(tmp_path / "exported.sig"), "--public_key", str(mallory),
    )  # fmt: skip
    assert other.returncode != 0

    # sign --oms signs the stored bytes: the file as added (no card embedded), under any name
    signed = json.loads(alice.run("sign", "style", "--oms", str(tmp_path / "stored.sig"), "--json").stdout)
    assert signed["model_name"] == "style.safetensors" and signed["signer"]["name"] == "Alice <alice@studio.example>"
    (tmp_path / "copy.bin").write_bytes((tmp_path / "style.safetensors").read_bytes())
    stored = model_signing(
        "verify",
        "key",
        str(tmp_path / "copy.bin"),
        "--signature",
        str(tmp_path / "stored.sig"),
        "--public_key",
        alice_pem,
    )
    assert stored.returncode == 0, stored.stdout + stored.stderr
    assert any(e["action"] == "sign-oms" for e in json.loads(alice.run("audit", "--json").stdout))


def test_lorahub_checks_a_bundle_model_signing_made_against_the_homes_trust(tmp_path: Path, alice: Home) -> None:
    model = tmp_path / "style.safetensors"
    bob_key, bob_pub = fresh_key(tmp_path, "bob")
    made = model_signing(
        "sign", "key", str(model), "--signature", str(tmp_path / "bob.sig"), "--private_key", str(bob_key)
    )
    assert made.returncode == 0, made.stdout + made.stderr

    def verify(*extra: str, target: Path = model, home: Home = alice) -> tuple[int, dict[str, Any]]:
        result = home.run(
            "verify", str(target), "--oms-bundle", str(tmp_path / "bob.sig"), *extra, "--json", check=False
        )
        return result.returncode, json.loads(result.stdout)

    code, report = verify()
    assert code == EXIT_VERIFY_FAILED and not report["ok"]
    assert {c["name"]: c["ok"] for c in report["checks"]} == {
        "signature valid": False, "signer trusted": False, "file matches": False,
    }  # fmt: skip

    alice.run("trust", "add", str(bob_pub), "--name", "Bob")
    code, report = verify()
    assert code == 0 and report["ok"]
    assert [(s["name"], s["trust"], s["valid"]) for s in report["signers"]] == [("Bob", "trusted", True)]

    code, report = verify(target=flip_a_byte(model, tmp_path / "tampered.safetensors"))
    checks = {c["name"]: c for c in report["checks"]}
    assert code == EXIT_VERIFY_FAILED and checks["signature valid"]["ok"] and not checks["file matches"]["ok"]

    fingerprint = report["signers"][0]["fingerprint"]
    alice.run("trust", "revoke", str(fingerprint))
    code, report = verify()
    assert code == EXIT_VERIFY_FAILED and [s["trust"] for s in report["signers"]] == ["revoked"]

    nobody = Home(tmp_path / "nobody")
    code, report = verify("--key", str(bob_pub), home=nobody)
    assert code == 0 and report["ok"] and not (tmp_path / "nobody").exists()
    code, report = verify("--key", str(tmp_path / "alice.pub.pem"), home=nobody)
    assert code == EXIT_VERIFY_FAILED and not (tmp_path / "nobody").exists()


def test_a_bundle_signed_with_the_homes_own_key_by_model_signing_is_own(tmp_path: Path, alice: Home) -> None:
    """The identity's private key file (unencrypted PKCS#8 P-256) works as model_signing's --private_key."""
    (private,) = (tmp_path / "alice" / "keys").glob("*.key.pem")
    made = model_signing(
        "sign", "key", str(tmp_path / "style.safetensors"),
        "--signature", str(tmp_path / "own.sig"), "--private_key", str(private),
    )  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    report = json.loads(
        alice.run("verify", "style", "--oms-bundle", str(tmp_path / "own.sig"), "--json").stdout
    )  # the catalogued version's stored file
    assert report["ok"] and [s["trust"] for s in report["signers"]] == ["own"]


def test_a_damaged_or_certificate_bundle_is_a_clear_error(tmp_path: Path, alice: Home) -> None:
    model = tmp_path / "style.safetensors"
    alice.run("sign", "style", "--oms", str(tmp_path / "good.sig"))
    (tmp_path / "garbage.sig").write_text("{not json")
    damaged = alice.run("verify", str(model), "--oms-bundle", str(tmp_path / "garbage.sig"), check=False)
    assert damaged.returncode == EXIT_VERIFY_FAILED
    assert "error[oms-bundle-invalid]" in damaged.stderr and "hint:" in damaged.stderr
    assert "Traceback" not in damaged.stderr

    bundle = json.loads((tmp_path / "good.sig").read_text())
    bundle["verificationMaterial"] = {"x509CertificateChain": {"certificates": []}, "tlogEntries": []}
    (tmp_path / "keyless.sig").write_text(json.dumps(bundle))
    keyless = alice.run("verify", str(model), "--oms-bundle", str(tmp_path / "keyless.sig"), check=False)
    assert keyless.returncode == 1 and "error[oms-bundle-unsupported]" in keyless.stderr
    assert "model_signing verify sigstore" in keyless.stderr

    both = alice.run("verify", "--all", "--oms-bundle", str(tmp_path / "good.sig"), check=False)
    assert both.returncode != 0 and "hint:" in both.stderr
