"""Tiny pipelines: each family is written, loads offline through DiffusionPipeline, generates, and is seeded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lorahub import errors
from lorahub.dev.tiny_pipeline import CALL_KWARGS, FAMILIES, Family, build_tiny_pipeline, write_tiny_pipeline
from tests.cli.test_catalog_cli import Home

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

PIPELINE_CLASS = {
    "sd1": "StableDiffusionPipeline",
    "sdxl": "StableDiffusionXLPipeline",
    "flux1": "FluxPipeline",
    "flux2": "Flux2KleinPipeline",
    "qwen-image": "QwenImagePipeline",
}


def _generate(pipeline: Any, family: Family) -> Any:
    generator = torch.Generator().manual_seed(0)
    return pipeline(
        prompt="a photo of sks cat",  # by name: FLUX.2's first argument is an image
        num_inference_steps=2,
        height=64,
        width=64,
        output_type="np",
        generator=generator,
        **CALL_KWARGS[family],
    ).images


@pytest.mark.parametrize("family", FAMILIES)
def test_written_pipeline_loads_offline_and_generates(tmp_path: Path, family: Family, monkeypatch: Any) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    directory = write_tiny_pipeline(tmp_path / family, family=family, seed=0)
    index = json.loads((directory / "model_index.json").read_text())
    assert index["_class_name"] == PIPELINE_CLASS[family]
    loaded = diffusers.DiffusionPipeline.from_pretrained(directory)
    assert type(loaded).__name__ == PIPELINE_CLASS[family]
    images = _generate(loaded, family)
    assert images.shape == (1, 64, 64, 3)
    assert torch.isfinite(torch.from_numpy(images)).all()
    # the round trip through the folder keeps every weight: the output of the in-memory build (up to float noise)
    in_memory = _generate(build_tiny_pipeline(family, seed=0), family)
    assert abs(images - in_memory).max() < 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_weights_are_deterministic_per_seed(family: Family) -> None:
    def weights(seed: int) -> list[Any]:
        pipeline = build_tiny_pipeline(family, seed=seed)
        denoiser = pipeline.unet if family in ("sd1", "sdxl") else pipeline.transformer
        return [p.detach().clone() for p in denoiser.parameters()]

    first, again, other = weights(0), weights(0), weights(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


def test_build_leaves_the_global_random_state_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_pipeline("sd1", seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_tokenizer_knows_caption_words(tmp_path: Path) -> None:
    pipeline = build_tiny_pipeline("sd1")
    assert pipeline.tokenizer.tokenize("a photo of a dog") == ["a</w>", "photo</w>", "of</w>", "a</w>", "dog</w>"]
    eos = pipeline.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert pipeline.text_encoder.config.eos_token_id == eos


def test_unknown_family_is_a_clear_error() -> None:
    with pytest.raises(errors.LorahubError, match="unknown tiny pipeline family"):
        build_tiny_pipeline("sd3")  # type: ignore[arg-type]


def test_cli_writes_a_loadable_folder(tmp_path: Path) -> None:
    out = tmp_path / "tiny"
    result = Home(tmp_path / "home").run("dev", "tiny-pipeline", str(out), "--family", "sdxl", "--seed", "3")
    assert "sdxl tiny pipeline" in " ".join(result.stderr.split())
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == "StableDiffusionXLPipeline"
