"""``lorahub scan``, ``add --in-place``, ``list --missing/--changed/--duplicates`` and ``verify --all`` as a user
runs them: real processes, a real home."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from lorahub.dev.example_lora import write_example_lora
from tests.cli.test_catalog_cli import EXIT_VERIFY_FAILED, Home

EXIT_PARTIAL_FAILURE = 8


def _library(root: Path) -> Path:
    for folder, name, seed in (("a", "ink", 1), ("b", "moss", 2)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        write_example_lora(root / folder / f"{name}.safetensors", rank=1, seed=seed, name=name)
    return root


def _json(home: Home, *args: str) -> Any:
    return home.json(*args)


def test_scan_then_lose_a_file_keep_its_card_and_find_a_moved_one(tmp_path: Path) -> None:
    home, library = Home(tmp_path / "home"), _library(tmp_path / "loras")
    home.run("keys", "create", "Alice <alice@example.com>")
    first = _json(home, "scan", str(library))
    assert first["counts"]["added"] == 2 and {a["ref"] for a in first["added"]} == {"ink@1", "moss@1"}
    assert _json(home, "scan", str(library))["counts"] == {**dict.fromkeys(first["counts"], 0), "unchanged": 2}

    (library / "a" / "ink.safetensors").unlink()
    (library / "b" / "moss.safetensors").rename(library / "a" / "moss.safetensors")
    rescan = _json(home, "scan", str(library))
    old, new = library / "b" / "moss.safetensors", library / "a" / "moss.safetensors"
    assert rescan["moved"] == [{"from": str(old), "to": str(new), "ref": "moss@1"}]
    assert [m["ref"] for m in rescan["missing"]] == ["ink@1"]
    missing = _json(home, "list", "--missing")
    assert [(m["ref"], m["state"]) for m in missing] == [("ink@1", "missing")]
    shown = _json(home, "show", "ink")
    assert shown["card"]["name"] == "ink" and shown["locations"][0]["state"] == "missing"
    assert "missing" in home.run("show", "ink").stdout

    verified = home.run("verify", "--all", "--json", check=False)
    assert verified.returncode == EXIT_VERIFY_FAILED
    assert "error[verification-failed]" in verified.stderr
    document = json.loads(verified.stdout)
    assert (document["verified"], document["failed"], document["ok"]) == (2, 1, False)
    assert [r["target"] for r in document["reports"] if not r["ok"]] == ["ink@1"]


def test_add_in_place_and_list_duplicates(tmp_path: Path) -> None:
    home, library = Home(tmp_path / "home"), _library(tmp_path / "loras")
    home.run("keys", "create", "Alice <alice@example.com>")
    added = _json(home, "add", str(library / "a" / "ink.safetensors"), "--in-place", "--license", "MIT")
    assert added["added"] == [{"path": str(library / "a" / "ink.safetensors"), "ref": "ink@1"}]
    assert _json(home, "show", "ink")["card"]["license"]["id"] == "MIT"
    shutil.copy2(library / "a" / "ink.safetensors", library / "b" / "ink (1).safetensors")
    assert _json(home, "scan", str(library))["counts"]["duplicates"] == 1
    (group,) = _json(home, "list", "--duplicates")
    assert sorted(Path(e["path"]).name for e in group) == ["ink (1).safetensors", "ink.safetensors"]
    assert home.run("verify", "--all").returncode == 0


def test_a_scan_with_a_bad_file_catalogues_the_rest_and_exits_partial(tmp_path: Path) -> None:
    home, library = Home(tmp_path / "home"), _library(tmp_path / "loras")
    home.run("keys", "create", "Alice <alice@example.com>")
    (library / "b" / "empty.safetensors").write_bytes(b"")
    result = home.run("scan", str(library), check=False)
    assert result.returncode == EXIT_PARTIAL_FAILURE
    assert "error[file-empty]" in result.stdout and "added 2" in result.stdout
    assert "error[partial-failure]" in result.stderr


def test_scan_and_add_in_place_refuse_to_write_into_the_library(tmp_path: Path) -> None:
    home, library = Home(tmp_path / "home"), _library(tmp_path / "loras")
    home.run("keys", "create", "Alice <alice@example.com>")
    refused = home.run("add", str(library), "--in-place", "--sidecar", check=False)
    assert refused.returncode != 0 and "error[arguments-conflict]" in refused.stderr
    nothing = home.run("scan", check=False)
    assert nothing.returncode != 0 and "hint:" in nothing.stderr


def test_scan_tool_finds_comfyui_lora_folders(tmp_path: Path) -> None:
    home, install = Home(tmp_path / "home"), tmp_path / "ComfyUI"
    home.run("keys", "create", "Alice <alice@example.com>")
    (install / "comfy").mkdir(parents=True)
    (install / "folder_paths.py").write_text("# ComfyUI\n")
    _library(install / "models" / "loras")
    scanned = _json(home, "scan", "--tool", "comfyui", str(install))
    assert sorted(a["ref"] for a in scanned["added"]) == ["ink@1", "moss@1"]
    assert scanned["roots"] == [str((install / "models" / "loras").resolve())]
