"""`lorahub train` from the shell: the session's tiny pipeline (what `lorahub dev tiny-pipeline` writes, tested in
tests/dev), a dataset with an opted-out image."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from lorahub.dev.example_dataset import write_example_dataset
from tests.cli.test_catalog_cli import Home

pytest.importorskip("diffusers")


def test_train_catalogues_checkpoints_and_shows_lineage(tmp_path: Path, tiny_bases: Mapping[str, Path]) -> None:
    home = Home(tmp_path / "home")
    home.run("keys", "create", "Trainer <trainer@example.com>")
    sources = write_example_dataset(tmp_path / "data")
    result = home.run(
        "train", "--base", str(tiny_bases["sd1"]), "--data", str(tmp_path / "data"), "--sources", str(sources),
        "--trigger", "sks", "--name", "shell-style", "--steps", "2", "--save-every", "1", "--resolution", "64",
        "--log-every", "1", "--json",
    )  # fmt: skip
    report = json.loads(result.stdout)
    assert [v["ref"] for v in report["versions"]] == ["shell-style@1", "shell-style@2"]
    assert report["training"]["dataset"]["excluded"][0]["path"] == "img-3.png"
    assert any("fp32" in note for note in report["notes"])

    card = home.json("show", "shell-style@2")["card"]  # type: ignore[index]
    assert card["training"]["run_id"] == report["run_id"]
    assert card["training"]["steps"] == {"done": 2, "total": 2}
    assert [p[0] for p in card["training"]["loss_curve"]["points"]] == [1, 2]


@pytest.mark.slow
def test_resume_from_the_shell(tmp_path: Path, tiny_bases: Mapping[str, Path]) -> None:
    home = Home(tmp_path / "home")
    home.run("keys", "create", "Trainer <trainer@example.com>")
    sources = write_example_dataset(tmp_path / "data")
    common = ("--base", str(tiny_bases["sd1"]), "--data", str(tmp_path / "data"), "--sources", str(sources))
    home.run("train", *common, "--name", "shell-style", "--steps", "1", "--resolution", "64")
    resumed = home.run("train", *common, "--resume", "shell-style@1", "--steps", "2")
    assert "catalogued shell-style@2" in resumed.stdout and "1 excluded" in resumed.stdout
    lineage = home.json("show", "shell-style@2")["card"]["lineage"]  # type: ignore[index]
    assert [p["relation"] for p in lineage] == ["resumed-from"]
    actions = [e["action"] for e in home.json("audit", "--adapter", "shell-style")]  # type: ignore[union-attr]
    assert actions.count("train") == 2


def test_train_refuses_a_folder_that_is_not_a_pipeline(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    home.run("keys", "create", "Trainer <trainer@example.com>")
    sources = write_example_dataset(tmp_path / "data")
    result = home.run(
        "train", "--base", str(tmp_path / "data"), "--data", str(tmp_path / "data"), "--sources", str(sources),
        check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "error[training-failed]" in result.stderr and "not a diffusers pipeline folder" in result.stderr
