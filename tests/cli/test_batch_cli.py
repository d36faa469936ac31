"""`lorahub add DIR`: a whole library, one bad file never stopping the batch, nothing read twice."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from lorahub.dev.example_lora import write_example_lora
from tests.cli.test_catalog_cli import Home

EXIT_PARTIAL_FAILURE = 8


def test_directory_add_lists_failures_and_skips_unchanged_files(tmp_path: Path) -> None:
    library = tmp_path / "library"
    (library / "styles" / "old").mkdir(parents=True)
    for i in range(4):
        write_example_lora(library / "styles" / f"style-{i}.safetensors", rank=1, seed=i, name=f"style-{i}")
    shutil.copy(library / "styles" / "style-0.safetensors", library / "styles" / "old" / "copy.safetensors")
    renamed = library / "styles" / "old" / "renamed.safetensors"
    write_example_lora(renamed, rank=1, seed=1, name="another-name")
    (library / "styles" / "old" / "broken.safetensors").write_bytes(b"\x08" + bytes(20))
    (library / "notes.txt").write_text("not an adapter")

    home = Home(tmp_path / "home")
    home.run("keys", "create", "Curator <curator@example.com>")
    first = home.run("add", str(library), "--license", "MIT", "--json", check=False)
    assert first.returncode == EXIT_PARTIAL_FAILURE
    assert "error[partial-failure]" in first.stderr
    report = json.loads(first.stdout)
    # files are taken in path order: styles/old/* first
    assert [r["name"] for r in report["added"]] == ["style-0", "another-name", "style-2", "style-3"]
    assert report["already_catalogued"] == ["style-0@1"]  # styles/style-0: same tensors as the copy, same name
    assert [(Path(d["path"]).name, d["existing"]) for d in report["duplicates"]] == [
        ("style-1.safetensors", "another-name@1")
    ]
    failures = [(Path(f["path"]).name, f["code"]) for f in report["failures"]]
    assert failures == [("broken.safetensors", "header-not-json")]
    assert len(home.json("list")) == 4  # type: ignore[arg-type]

    second = json.loads(home.run("add", str(library), "--json", check=False).stdout)
    assert second["added"] == []
    assert len(second["unchanged"]) == 5  # the four styles and the copy: not even read
    assert len(second["failures"]) == 1
    assert len(home.json("audit", "--action", "add")) == 4  # type: ignore[arg-type]


def test_each_failure_keeps_its_traceback_for_lorahub_debug(tmp_path: Path) -> None:
    library = tmp_path / "library"
    library.mkdir()
    write_example_lora(library / "good.safetensors", rank=1, name="good")
    (library / "broken.safetensors").write_bytes(b"\x08" + bytes(20))
    home = Home(tmp_path / "home")
    home.run("keys", "create", "Curator <curator@example.com>")
    quiet = home.run("add", str(library), "--license", "MIT", check=False)
    assert quiet.returncode == EXIT_PARTIAL_FAILURE and "Traceback" not in quiet.stderr
    (library / "good.safetensors").unlink()  # so the second run meets the broken file again, and only it
    debug = home.run("add", str(library), "--license", "MIT", check=False, env={"LORAHUB_DEBUG": "1"})
    assert debug.returncode == EXIT_PARTIAL_FAILURE
    assert f"{library / 'broken.safetensors'}:\nTraceback (most recent call last)" in debug.stderr
    assert "HeaderJSONError" in debug.stderr
