"""Dataset consent from the shell: scan, check, carry it in a card, and let the policy refuse opted-out data."""

from __future__ import annotations

import json
from pathlib import Path

from lorahub.dev.example_dataset import write_example_dataset
from lorahub.dev.example_lora import write_example_lora
from tests.cli.test_catalog_cli import Home


def test_manifest_flows_into_the_card_and_the_policy(tmp_path: Path) -> None:
    images = tmp_path / "images"
    sources = write_example_dataset(images)
    manifest = tmp_path / "manifest.json"
    home = Home(tmp_path / "home")
    home.run("dataset", "scan", str(images), "--sources", str(sources), "--out", str(manifest))
    checked = home.run("dataset", "check", str(manifest), "--json", check=False)
    assert checked.returncode == 7 and "error[verification-failed]" in checked.stderr
    report = json.loads(checked.stdout)
    assert report["ok"] is False and report["card_status"] == "opted-out"
    assert [o["path"] for o in report["opted_out"]] == ["img-3.png"]
    assert report["counts"]["licensed"] == 1

    home.run("keys", "create", "Trainer <trainer@example.com>")
    adapter = tmp_path / "styled.safetensors"
    write_example_lora(adapter, rank=1, name="styled")
    home.run("add", str(adapter), "--consent", str(manifest))
    card = home.json("show", "styled")["card"]  # type: ignore[index]
    digest = json.loads(manifest.read_text())  # the card pins the manifest by digest
    assert card["consent"]["status"] == "opted-out"
    assert card["consent"]["manifest_digest"] == report["manifest_digest"]
    assert digest["schema"] == "lorahub.dataset-manifest/v1"
    assert home.json("list", "--consent", "opted-out")[0]["name"] == "styled"  # type: ignore[index]

    assert home.json("verify", "styled")["ok"] is True  # the default policy does not look at consent
    strict = tmp_path / "strict.toml"
    strict.write_text("forbid_opted_out = true\nrequire_known_consent = true\n")
    result = home.run("verify", "styled", "--policy", str(strict), "--json", check=False)
    policy = next(c for c in json.loads(result.stdout)["checks"] if c["name"] == "policy")
    assert result.returncode == 7 and "opted out" in policy["detail"]
