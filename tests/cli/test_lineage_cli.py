"""`lorahub lineage` through the real entry point: the tree, its JSON, and the CycloneDX ML-BOM on stdout or in a
file (in-process, as tests/cli/test_provenance_cli.py drives it: a process per command costs seconds here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bom_checks import ancestors, assert_valid, value
from tests.cli.test_provenance_cli import Home

EXIT_BAD_ARGUMENTS = 1
EXIT_NOT_FOUND = 3


@pytest.fixture
def home(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Home:
    """A home where blend@1 is merged from ink@1 (MIT) and style@1 (CreativeML Open RAIL-M, by its alias)."""
    home = Home(tmp_path / "home", capsys)
    home.run("keys", "create", "Alice <alice@example.com>")
    for name, seed, licence in (("ink", "0", "MIT"), ("style", "1", "creativeml-openrail-m")):
        source = tmp_path / f"{name}.safetensors"
        home.run("dev", "example-lora", str(source), "--seed", seed)
        home.run("add", str(source), "--name", name, "--license", licence)
    home.run("merge", "ink:0.7", "style:0.5", "--out", "blend")
    return home


def test_lineage_writes_a_valid_bom_to_stdout_or_a_file(home: Home, tmp_path: Path) -> None:
    printed, _ = home.run("lineage", "blend", "--format", "cyclonedx")
    bom = assert_valid(printed)
    assert [(value(a, "ref"), value(a, "lineage:relation")) for a in ancestors(bom["metadata"]["component"])] == [
        ("ink@1", "merged-from"),
        ("style@1", "merged-from"),
    ]
    out = tmp_path / "blend.cdx.json"
    stdout, stderr = home.run("lineage", "blend@1", "--format", "cyclonedx", "--out", str(out))
    assert stdout == "" and "wrote" in stderr and out.name in stderr
    assert out.read_text(encoding="utf-8") == printed  # the same records, the same bytes
    # --json still prints the tree, as --format json does
    tree = json.loads(home.run("lineage", "blend", "--json")[0])
    assert tree == json.loads(home.run("lineage", "blend", "--format", "json")[0])
    assert [p["ref"] for p in tree["parents"]] == ["ink@1", "style@1"]
    text, _ = home.run("lineage", "blend")
    assert "merged-from" in text and "ink@1" in text


def test_lineage_refuses_options_that_disagree(home: Home, tmp_path: Path) -> None:
    for args in (("--json", "--format", "cyclonedx"), ("--out", str(tmp_path / "tree.txt"))):
        _, err = home.run("lineage", "blend", *args, expect=EXIT_BAD_ARGUMENTS)
        assert "error[arguments-conflict]" in err, args
    assert not (tmp_path / "tree.txt").exists()
    missing = str(tmp_path / "no" / "bom.json")
    _, err = home.run("lineage", "blend", "--format", "cyclonedx", "--out", missing, expect=EXIT_NOT_FOUND)
    assert "error[path-not-found]" in err
