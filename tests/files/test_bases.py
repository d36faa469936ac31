"""Bases where users keep them: any folder (one under ``.cache`` too), a Hugging Face cache snapshot whose files
are symlinks into ``blobs/``, and a repo id looked up in the local cache only, never downloaded."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from lorahub import errors
from lorahub.files.bases import cache_identity, hub_cache, locate_base
from lorahub.files.folders import WEIGHT_SUFFIXES

REVISION = "0123456789abcdef0123456789abcdef01234567"


def hf_cache_layout(source: Path, cache: Path, repo_id: str, revision: str = REVISION) -> Path:
    """``source`` laid out as huggingface_hub's cache holds a downloaded repo: content-addressed ``blobs/`` (an LFS
    file's blob named by its SHA-256, a git file's by its git SHA-1), ``snapshots/REV/…`` relative symlinks into
    them, ``refs/main`` naming the revision. Returns the snapshot."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    for file in sorted(p for p in source.rglob("*") if p.is_file()):
        data = file.read_bytes()
        lfs = file.suffix in WEIGHT_SUFFIXES
        name = hashlib.sha256(data).hexdigest() if lfs else hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        blob = repo / "blobs" / name
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / file.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision, encoding="utf-8")
    return snapshot


def test_an_existing_folder_is_itself(tmp_path: Path) -> None:
    folder = tmp_path / ".cache" / "pipelines" / "sd"
    folder.mkdir(parents=True)
    location = locate_base(folder)
    assert location.path == folder and location.repo_id is None and location.name == "sd"


def test_a_snapshot_folder_keeps_its_repo_and_revision(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "unet").mkdir(parents=True)
    (source / "unet" / "config.json").write_text("{}", encoding="utf-8")
    snapshot = hf_cache_layout(source, tmp_path / "hub", "org/tiny-sd")
    assert (snapshot / "unet" / "config.json").is_symlink()
    location = locate_base(snapshot)
    assert (location.repo_id, location.revision, location.name) == ("org/tiny-sd", REVISION, "org/tiny-sd")
    assert cache_identity(snapshot / "unet" / "config.json") == ("org/tiny-sd", REVISION)


def test_a_repo_id_is_found_in_the_cache_named_by_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}', encoding="utf-8")
    snapshot = hf_cache_layout(source, tmp_path / "hub", "org/tiny-sd")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)
    assert hub_cache() == tmp_path / "hub"
    for ref in ("org/tiny-sd", f"org/tiny-sd@{REVISION}", "org/tiny-sd@main"):
        location = locate_base(ref)
        assert location.path == snapshot and location.repo_id == "org/tiny-sd" and location.revision == REVISION


def test_hf_home_decides_the_cache_when_hub_cache_is_not_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert hub_cache() == tmp_path / "hf" / "hub"


def test_an_uncached_repo_id_names_the_download_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(errors.BaseNotCachedError) as caught:
        locate_base("org/not-here@v2")
    assert "hf download org/not-here --revision v2" in (caught.value.hint or "")
    assert not (tmp_path / "empty").exists() or not any((tmp_path / "empty").iterdir())  # nothing was fetched


def test_neither_a_path_nor_a_repo_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(errors.PathNotFoundError) as caught:
        locate_base("no such/folder/here")
    assert not isinstance(caught.value, errors.BaseNotCachedError)
