"""`lorahub license` from the shell: catalogued adapters and bare licence ids alike, exit codes by verdict."""

from __future__ import annotations

import json
from pathlib import Path

from lorahub.dev.example_lora import write_example_lora
from tests.cli.test_catalog_cli import Home

EXIT = {"allowed": 0, "allowed-with-obligations": 0, "forbidden": 9, "uncertain": 10}


def _check(home: Home, *args: str) -> dict[str, object]:
    result = home.run("license", "check", *args, "--json", check=False)
    verdict = json.loads(result.stdout)
    assert result.returncode == EXIT[verdict["verdict"]], result.stderr
    return verdict  # type: ignore[no-any-return]


def test_license_check_by_name_and_by_id(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    home.run("keys", "create", "Alice <alice@studio.example>")
    adapter = tmp_path / "styled.safetensors"
    write_example_lora(adapter, rank=1, name="styled")
    home.run("add", str(adapter), "--license", "MIT", "--commercial", "image")
    other = tmp_path / "other.safetensors"
    write_example_lora(other, rank=1, seed=3, name="other")
    home.run("add", str(other), "--license", "CC-BY-NC-4.0")

    flux = "LicenseRef-FLUX-1-dev-Non-Commercial"
    assert _check(home, "styled", "--base-license", flux, "--use", "commercial", "--of", "model")["verdict"] == (
        "forbidden"
    )
    outputs = _check(home, "--license", "MIT", "--base-license", flux, "--use", "commercial")
    assert outputs["verdict"] == "uncertain"
    assert any("§4(a)" in r["clause"] for r in outputs["reasons"])  # type: ignore[attr-defined]
    rail = _check(home, "--license", "MIT", "--base-license", "creativeml-openrail-m")
    assert rail["verdict"] == "allowed-with-obligations"
    assert any("Attachment A" in o for o in rail["obligations"])  # type: ignore[attr-defined]
    merged = _check(home, "styled", "other", "--merge")  # catalogued names: their cards' licences
    assert merged["verdict"] == "allowed-with-obligations"
    assert any(o.startswith("Non-commercial use only") for o in merged["obligations"])  # type: ignore[attr-defined]
    assert _check(home, "other", "--use", "commercial")["verdict"] == "forbidden"
    assert _check(home, "--license", "Apache-2.0", "--license", "MIT", "--use", "commercial")["verdict"] == "allowed"
    unknown = home.run("license", "check", "--license", "not-a-licence", check=False)
    assert unknown.returncode == 1 and "error[license-unknown]" in unknown.stderr
    listed = json.loads(home.run("license", "list", "--json").stdout)
    assert {"MIT", "CC0-1.0", "unknown", flux} <= {entry["id"] for entry in listed}
    shown = json.loads(home.run("license", "show", "openrail++", "--json").stdout)
    assert shown["id"] == "LicenseRef-CreativeML-OpenRAIL-PP-M"


def test_the_base_alone_is_answered_in_a_home_with_nothing_in_it(tmp_path: Path) -> None:
    """The commonest licence question is about the base alone; it needs no adapter, no identity, no catalogue."""
    home = Home(tmp_path / "home")
    flux = "flux-1-dev-non-commercial-license"
    outputs = _check(home, "--base-license", flux, "--use", "commercial")
    assert outputs["verdict"] == "uncertain"
    assert any("§4(a)" in r["clause"] for r in outputs["reasons"])  # type: ignore[attr-defined]
    assert _check(home, "--base-license", flux, "--use", "commercial", "--of", "model")["verdict"] == "forbidden"
    assert _check(home, "--base-license", "creativeml-openrail-m", "--use", "commercial")["verdict"] in (
        "allowed",
        "allowed-with-obligations",
    )
    bare = home.run("license", "check", "--base-license", flux, check=False)
    assert bare.returncode != 0 and "--use" in bare.stderr and "hint:" in bare.stderr
