"""Training and generating on bases where users keep them: a pipeline under a ``.cache`` folder, a Hugging Face
cache snapshot (files symlinked into ``blobs/``) and a repo id resolved from that cache, offline."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import pytest

import lorahub
from lorahub import Hub
from lorahub.training.base import weights_digest
from tests.files.test_bases import REVISION, hf_cache_layout
from tests.training.conftest import write_squares

pytest.importorskip("diffusers")

FAST = {"resolution": 64, "batch": 1, "steps": 1, "log_every": 1}


@pytest.fixture
def cached(tiny_bases: Mapping[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tiny SD 1.5 pipeline as the snapshot of ``org/tiny-sd`` in a cache that ``HF_HUB_CACHE`` names."""
    snapshot = hf_cache_layout(tiny_bases["sd1"], tmp_path / "hf" / "hub", "org/tiny-sd")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return snapshot


def test_a_pipeline_under_a_cache_folder_trains(hub: Hub, tiny_bases: Mapping[str, Path], tmp_path: Path) -> None:
    """`.cache` anywhere above the pipeline (as in ~/.cache/…) is not the download bookkeeping inside it."""
    base = tmp_path / ".cache" / "pipelines" / "tiny-sd"
    shutil.copytree(tiny_bases["sd1"], base)
    assert weights_digest(base) == weights_digest(tiny_bases["sd1"])
    result = lorahub.train(base, write_squares(tmp_path / "data", 2), name="under-cache", hub=hub, **FAST)
    assert [v.name for v in result.versions] == ["under-cache"]


def test_a_snapshot_and_a_repo_id_train_with_the_cache_identity(hub: Hub, cached: Path, tmp_path: Path) -> None:
    data = write_squares(tmp_path / "data", 2)
    for seed, (base, name) in enumerate(((cached, "from-snapshot"), ("org/tiny-sd", "from-repo-id"))):
        lorahub.train(base, data, name=name, hub=hub, seed=seed, **FAST)  # same seed, same tensors: one version
        card = hub.signed_card(hub.version(name)).card
        assert card.base_model.name == "org/tiny-sd"
        assert card.training["base_model"]["revision"] == REVISION
        assert card.base_model.weights_digest == weights_digest(cached)


def test_a_repo_id_generates_and_names_the_base(hub: Hub, cached: Path, tmp_path: Path) -> None:
    result = hub.generate("org/tiny-sd", "a lighthouse", out=tmp_path / "x.png", steps=1, size=(64, 64))
    report = hub.inspect_image(result.image.path).as_dict()
    assert report["base"]["name"] == "org/tiny-sd"
    assert report["base"]["digest"] == hub.base_ref(cached).digest


def test_a_snapshot_component_file_bakes(hub: Hub, cached: Path, tmp_path: Path) -> None:
    """A cache snapshot's files are symlinks into ``blobs/``: the bake reads through them and leaves them alone."""
    from safetensors.torch import load_file

    from lorahub import AddOptions
    from tests.sdk.pipes import make_adapter

    hub.add(make_adapter("sd1", tmp_path / "a", seed=1), AddOptions(name="ink", license="MIT"))
    unet = cached / "unet" / "diffusion_pytorch_model.safetensors"
    before = unet.resolve().read_bytes()
    result = hub.bake(unet, ["ink"], tmp_path / "baked.safetensors", components=["unet"])
    assert result.report.layers > 0 and unet.is_symlink() and unet.resolve().read_bytes() == before
    baked, original = load_file(str(tmp_path / "baked.safetensors")), load_file(str(unet))
    assert baked.keys() == original.keys() and any(not (baked[k] == original[k]).all() for k in baked)
