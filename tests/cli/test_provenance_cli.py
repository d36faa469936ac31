"""Content Credentials as a user drives them: real processes, real homes, real c2pa-python."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lorahub.cli import cli, exits
from lorahub.dev.example_lora import write_example_lora
from tests.provenance.helpers import encoded, flip_image_byte, noise_image

pytest.importorskip("c2pa")

EXIT_VERIFY_FAILED = 7


class Home:
    """One home driven through the real entry point (``lorahub.cli.main``'s error handling and exit codes),
    in-process: a subprocess per command would cost seconds each on a loaded machine."""

    def __init__(self, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.root = root
        self.capsys = capsys

    def run(self, *args: str, expect: int = 0) -> tuple[str, str]:
        self.capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            exits.run(lambda: cli.main(["--home", str(self.root), *args], standalone_mode=False))
        out, err = self.capsys.readouterr()
        assert exited.value.code == expect, f"lorahub {' '.join(args)} exited {exited.value.code}:\n{err}"
        return out, err

    def json(self, *args: str, expect: int = 0) -> Any:
        return json.loads(self.run(*args, "--json", expect=expect)[0])


def test_sign_inspect_audit_and_trust_between_homes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    alice = Home(tmp_path / "alice", capsys)
    settings = alice.json("init")
    assert isinstance(settings, dict) and "local root CA" in settings["certificate_authority"]
    assert (alice.root / "ca" / "root" / "ca.pem").is_file()
    alice.run("keys", "create", "Alice <alice@studio.example>")
    lora = tmp_path / "pixel-art.safetensors"
    write_example_lora(lora, rank=1, name="pixel-art")
    added = alice.json("add", str(lora), "--license", "MIT")
    assert isinstance(added, dict)
    source = tmp_path / "in.png"
    source.write_bytes(encoded(noise_image(), "png"))
    out = tmp_path / "out.png"
    signed = alice.json(
        "provenance", "sign", str(source), "--base", "sd15", "--adapter", "pixel-art@1:0.7",
        "--prompt", "a cat", "--training-mining", "ai_inference=notAllowed", "--out", str(out),
    )  # fmt: skip
    assert isinstance(signed, dict) and Path(signed["out"]) == out

    report = alice.json("provenance", "inspect", str(out))
    assert isinstance(report, dict)
    assert (report["state"], report["codes"]) == ("Trusted", [])
    assert report["signer"]["identity"] == "Alice <alice@studio.example>"
    [adapter] = report["adapters"]
    assert adapter["content_digest"] == added["content_digest"]
    assert (adapter["name"], adapter["weight"], adapter["known"], adapter["license"]) == ("pixel-art", 0.7, True, "MIT")
    assert report["training_mining"]["cawg.ai_inference"] == {"use": "notAllowed"}

    events = alice.json("audit", "--adapter", "pixel-art")
    assert isinstance(events, list)
    assert [e["action"] for e in events] == ["add", "generate"]
    assert events[1]["details"]["image_sha256"] == signed["sha256"]

    damaged = tmp_path / "damaged.png"
    damaged.write_bytes(flip_image_byte(out.read_bytes(), "png"))
    invalid = alice.json("provenance", "inspect", str(damaged), expect=EXIT_VERIFY_FAILED)
    assert isinstance(invalid, dict) and invalid["state"] == "Invalid"
    assert "assertion.dataHash.mismatch" in invalid["codes"]
    _, unsigned = alice.run("provenance", "inspect", str(source), expect=EXIT_VERIFY_FAILED)
    assert "error[credentials-missing]" in unsigned

    bob = Home(tmp_path / "bob", capsys)
    bob.run("keys", "create", "Bob <bob@elsewhere.example>")
    untrusted = bob.json("provenance", "inspect", str(out))
    assert isinstance(untrusted, dict)
    assert (untrusted["state"], untrusted["codes"]) == ("Valid", ["signingCredential.untrusted"])
    assert untrusted["adapters"][0]["known"] is False
    bob.run("trust", "add-ca", str(alice.root / "ca" / "root" / "ca.pem"))
    trusted = bob.json("provenance", "inspect", str(out))
    assert isinstance(trusted, dict) and trusted["state"] == "Trusted"

    chain = tmp_path / "alice-chain.pem"
    chain.write_text(alice.run("keys", "cert", "--pem")[0])
    _, mismatch = bob.run("keys", "import-cert", str(chain), expect=1)
    assert "error[certificate-invalid]" in mismatch and "is not the key of Bob" in mismatch


def test_text_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The human-readable renderings."""
    home = Home(tmp_path / "home", capsys)

    def run(*args: str) -> str:
        return home.run(*args)[0]

    run("keys", "create", "Alice <alice@studio.example>")
    lora = tmp_path / "pixel-art.safetensors"
    write_example_lora(lora, rank=1, name="pixel-art")
    run("add", str(lora), "--license", "MIT")
    source = tmp_path / "in.webp"
    source.write_bytes(encoded(noise_image(), "webp"))
    out = tmp_path / "out.webp"
    signed = run("provenance", "sign", str(source), "--base", "sd15", "--adapter", "pixel-art:0.5", "--out", str(out))
    assert signed.startswith("signed")
    text = run("provenance", "inspect", str(out))
    assert text.startswith("Trusted") and "Alice <alice@studio.example>" in text
    assert "pixel-art@1 weight 0.5" in text and "catalogued pixel-art@1" in text and "licence MIT" in text
    assert "ai_generative_training=notAllowed" in text
    assert "pixel-art:0.5" in run("audit", "--adapter", "pixel-art")
    assert "(local-ca)" in run("keys", "cert")
    assert "local root CA" in run("trust", "list-ca")
    assert "leaf_days     3650" in run("provenance", "settings")
    assert "leaf_days     90" in run("provenance", "settings", "--leaf-days", "90")
    assert "valid until" in run("keys", "issue-cert")
