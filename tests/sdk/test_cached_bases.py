"""Training, generating and baking on bases where users keep them: a pipeline under a ``.cache`` folder, a Hugging
Face cache snapshot (files symlinked into ``blobs/``) and a repo id resolved from that cache, offline."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Mapping
from pathlib import Path

import pytest

import lorahub
from lorahub import AddOptions, Hub, errors
from lorahub.files.folders import cached_sha256
from lorahub.training.base import weights_digest
from tests.files.test_bases import REVISION, hf_cache_layout
from tests.sdk.pipes import make_adapter
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


def test_a_pipeline_under_a_cache_folder_a_snapshot_and_a_repo_id_generate(
    hub: Hub, tiny_bases: Mapping[str, Path], cached: Path, tmp_path: Path
) -> None:
    """Each names the base in the image's credentials: by repo id when it came from the cache, by path otherwise."""
    under_cache = tmp_path / ".cache" / "pipelines" / "tiny-sd"
    shutil.copytree(tiny_bases["sd1"], under_cache)
    for index, (base, name) in enumerate(
        ((under_cache, str(under_cache)), (cached, "org/tiny-sd"), ("org/tiny-sd", "org/tiny-sd"))
    ):
        result = hub.generate(base, "a lighthouse", out=tmp_path / f"{index}.png", steps=1, size=(64, 64))
        report = hub.inspect_image(result.image.path).as_dict()
        assert report["base"]["name"].endswith(Path(name).name) and (index == 0 or report["base"]["name"] == name)
        assert report["base"]["digest"] == hub.base_ref(cached).digest


def test_a_snapshot_component_file_bakes(hub: Hub, cached: Path, tmp_path: Path) -> None:
    """A cache snapshot's files are symlinks into ``blobs/``: the bake reads through them and leaves them alone."""
    from safetensors.torch import load_file

    hub.add(make_adapter("sd1", tmp_path / "a", seed=1), AddOptions(name="ink", license="MIT"))
    unet = cached / "unet" / "diffusion_pytorch_model.safetensors"
    before = unet.resolve().read_bytes()
    result = hub.bake(unet, ["ink"], tmp_path / "baked.safetensors", components=["unet"])
    assert result.report.layers > 0 and unet.is_symlink() and unet.resolve().read_bytes() == before
    assert (result.report.base, result.report.revision) == ("org/tiny-sd", REVISION)
    assert result.report.base_sha256 == hashlib.sha256(before).hexdigest()
    baked, original = load_file(str(tmp_path / "baked.safetensors")), load_file(str(unet))
    assert baked.keys() == original.keys() and any(not (baked[k] == original[k]).all() for k in baked)


def test_a_cache_blob_name_is_the_digest_of_an_lfs_file(tiny_bases: Mapping[str, Path], cached: Path) -> None:
    """Weights are not re-hashed in the cache (their blob is named by their SHA-256); git files (SHA-1 names) are."""
    unet, config = cached / "unet" / "diffusion_pytorch_model.safetensors", cached / "unet" / "config.json"
    assert cached_sha256(unet) == hashlib.sha256(unet.read_bytes()).hexdigest()
    assert cached_sha256(config) is None and len(config.resolve().name) == 40
    assert weights_digest(cached) == weights_digest(tiny_bases["sd1"])
    unet.resolve().write_bytes(b"not read: the blob's name is its digest")
    assert weights_digest(cached) == weights_digest(tiny_bases["sd1"])
    config.resolve().write_text("{}", encoding="utf-8")
    assert weights_digest(cached) != weights_digest(tiny_bases["sd1"])


# --- baking a whole pipeline ---------------------------------------------------------------------------------------

UNET = "unet/diffusion_pytorch_model.safetensors"
TEXT_ENCODER = "text_encoder/model.safetensors"
TOUCHED = "up_blocks.1.attentions.1.transformer_blocks.0.attn2.to_v"
WEIGHT, SCALE = 0.5, 8.0 / 4  # make_adapter's alpha / rank


def _files(folder: Path) -> dict[str, Path]:
    return {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}


def _blobs(cache: Path) -> dict[str, tuple[str, int]]:
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in cache.rglob("blobs/*")}


def _check_baked_pipeline(base: Path, out: Path, adapter: Path) -> None:
    """Copies are real and byte-identical, the UNet holds base + ΔW, the text encoder changed, diffusers loads it."""
    import torch
    from diffusers import DiffusionPipeline
    from safetensors.torch import load_file

    source, written = _files(base), _files(out)
    assert source.keys() == written.keys() and not any(p.is_symlink() for p in written.values())
    for name in source.keys() - {UNET, TEXT_ENCODER}:
        assert written[name].read_bytes() == source[name].read_bytes(), name
    lora, unet, baked = load_file(str(adapter)), load_file(str(source[UNET])), load_file(str(written[UNET]))
    up, down = lora[f"unet.{TOUCHED}.lora.up.weight"], lora[f"unet.{TOUCHED}.lora.down.weight"]
    expected = unet[f"{TOUCHED}.weight"] + WEIGHT * SCALE * (up @ down)
    assert torch.allclose(baked[f"{TOUCHED}.weight"], expected, atol=1e-6)
    assert not torch.equal(baked[f"{TOUCHED}.weight"], unet[f"{TOUCHED}.weight"])
    untouched = "conv_in.weight"
    assert torch.equal(baked[untouched], unet[untouched])
    text, text_baked = load_file(str(source[TEXT_ENCODER])), load_file(str(written[TEXT_ENCODER]))
    assert any(not torch.equal(text[k], text_baked[k]) for k in text if k.endswith("k_proj.weight"))
    pipe = DiffusionPipeline.from_pretrained(out, local_files_only=True)  # type: ignore[no-untyped-call]
    assert torch.equal(pipe.unet.state_dict()[f"{TOUCHED}.weight"], baked[f"{TOUCHED}.weight"])


@pytest.mark.parametrize("where", ["under-a-cache-folder", "snapshot", "repo-id"])
def test_a_pipeline_bakes_into_a_new_pipeline_folder(
    hub: Hub, tiny_bases: Mapping[str, Path], cached: Path, tmp_path: Path, where: str
) -> None:
    adapter = make_adapter("sd1", tmp_path / "a", seed=1, text_encoder=True)
    hub.add(adapter, AddOptions(name="ink", license="MIT"))
    folder = tmp_path / ".cache" / "pipelines" / "tiny-sd"
    shutil.copytree(tiny_bases["sd1"], folder)
    base = {"under-a-cache-folder": folder, "snapshot": cached, "repo-id": "org/tiny-sd"}[where]
    blobs = _blobs(tmp_path / "hf")
    out = tmp_path / "baked"

    report = hub.bake(base, [f"ink:{WEIGHT}"], out).report

    _check_baked_pipeline(folder if where == "under-a-cache-folder" else cached, out, adapter)
    assert _blobs(tmp_path / "hf") == blobs  # the cache's bytes and mtimes as they were
    assert report.layout == "diffusers-pipeline" and report.family == "sd1"
    assert (report.base, report.revision) == ((str(folder), None) if base is folder else ("org/tiny-sd", REVISION))
    assert report.base_sha256 == weights_digest(tiny_bases["sd1"])  # as training records the same base
    assert report.output_sha256 == weights_digest(out)
    assert {c["file"]: c["output_sha256"] for c in report.components} == {
        name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in (UNET, TEXT_ENCODER)
    }
    assert report.layers == sum(c["layers"] for c in report.adapters) and report.layers > 0
    (event,) = [e for e in hub.audit() if e["action"] == "bake"]
    assert (event["details"]["base"], event["details"]["revision"]) == (report.base, report.revision)
    assert event["details"]["output_sha256"] == report.output_sha256


def test_a_pipeline_bake_refuses_an_out_that_is_not_empty(hub: Hub, cached: Path, tmp_path: Path) -> None:
    hub.add(make_adapter("sd1", tmp_path / "a", seed=1), AddOptions(name="ink", license="MIT"))
    blobs = _blobs(tmp_path / "hf")
    out = tmp_path / "baked"
    out.mkdir()
    (out / "keep.txt").write_text("mine", encoding="utf-8")
    for target in (out, cached / "baked"):  # a folder with files, and a folder inside the (cached) base
        with pytest.raises(errors.MergeOptionError):
            hub.bake("org/tiny-sd", ["ink"], target)
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and not (cached / "baked").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".baked")) == []
    assert _blobs(tmp_path / "hf") == blobs and not [e for e in hub.audit() if e["action"] == "bake"]
