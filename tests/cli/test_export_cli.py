"""`lorahub export NAME DIR --for …` from the shell: the tool's files, the conversion catalogued, errors mapped."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.test_catalog_cli import Home
from tests.sdk.sd15_files import write_sd15_lora

EXIT_NOT_FOUND = 3
EXIT_USAGE = 2


def test_export_for_each_tool(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    home.run("keys", "create", "Alice <alice@studio.example>")
    source = write_sd15_lora(tmp_path / "ink.safetensors")
    home.run("add", str(source), "--name", "ink", "--license", "MIT", "--trigger", "inky style")

    a1111 = home.json("export", "ink", str(tmp_path / "a1111"), "--for", "a1111", "--weight", "0.7")
    assert a1111["converted"] is None and a1111["exported"] == "ink@1"  # type: ignore[index]
    user = json.loads((tmp_path / "a1111" / "ink.json").read_text())
    assert user["activation text"] == "inky style" and user["preferred weight"] == 0.7

    hf = home.json("export", "ink", str(tmp_path / "hf"), "--for", "hf")
    assert hf["exported"] == "ink@2" and hf["converted"]["parent"] == "ink@1"  # type: ignore[index]
    assert hf["converted"]["report"]["max_abs_error"] <= 1e-6  # type: ignore[index]
    assert (tmp_path / "hf" / "README.md").read_text().startswith("---\nbase_model: ")
    verified = home.run("verify", str(tmp_path / "hf" / "pytorch_lora_weights.safetensors"), check=False)
    assert "card matches file" in verified.stdout

    human = home.run("export", "ink@1", str(tmp_path / "hf2"), "--for", "hf")
    assert "already catalogued as ink@2" in human.stdout
    shown = home.json("show", "ink@2")
    assert shown["card"]["lineage"][0]["relation"] == "converted-from"  # type: ignore[index]
    assert [e["action"] for e in shown["audit"]].count("convert") == 1  # type: ignore[index]


def test_export_errors(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    home.run("keys", "create", "Alice <alice@studio.example>")
    missing = home.run("export", "nope", str(tmp_path / "out"), "--for", "comfyui", check=False)
    assert missing.returncode == EXIT_NOT_FOUND and "error[adapter-not-found]" in missing.stderr
    source = write_sd15_lora(tmp_path / "ink.safetensors")
    home.run("add", str(source), "--name", "ink")
    (tmp_path / "folder").mkdir()
    plain = home.run("export", "ink", str(tmp_path / "folder"), check=False)  # no --for: OUT is one file
    assert plain.returncode == EXIT_USAGE and "is a directory" in plain.stderr
    stray = home.run("export", "ink", str(tmp_path / "x.safetensors"), "--weight", "1", check=False)
    assert stray.returncode == EXIT_USAGE
