"""Qwen-Image adapters in the layouts their trainers write (diffusers/PEFT ``transformer.…``, musubi-tuner/kohya
``lora_unet_…``, ai-toolkit/ComfyUI ``diffusion_model.…``): converted exactly between them, and loaded into a
``QwenImagePipeline`` as the transformer whose weights were summed by hand.

The pipeline is tiny and has its transformer only: the real configs' shapes scaled down (60 → 2 blocks, 24 heads of
128 → 2 of 16, joint width 3584 → 24), without a text encoder (adapters of Qwen-Image target the transformer); one
test runs the whole tiny pipeline, Qwen2.5-VL text encoder included, and one bakes into a diffusers transformer file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lorahub import Hub
from lorahub.adapters.convert import convert
from lorahub.adapters.model import read_adapter
from tests.sdk.dit_family import (
    DitFamily,
    check_bakes_into_a_diffusers_transformer_file,
    check_load_as_summed_by_hand,
    check_the_tiny_pipeline_generates_as_with_diffusers_own_load,
)

diffusers = pytest.importorskip("diffusers")
peft = pytest.importorskip("peft")

TARGETS = ["attn.to_q", "attn.to_k", "attn.to_v", "attn.add_k_proj", "attn.to_out.0", "img_mod.1",
           "img_mlp.net.0.proj", "txt_mlp.net.2", "proj_out"]  # fmt: skip


def _transformer(seed: int = 0) -> Any:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return diffusers.QwenImageTransformer2DModel(
            patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=24, axes_dims_rope=(4, 6, 6),
        ).eval()  # fmt: skip


def _forward(transformer: Any) -> np.ndarray:
    generator = torch.Generator("cpu").manual_seed(0)
    latents = torch.randn(1, 16, 16, generator=generator)  # 4×4 patches of 16 packed channels
    text = torch.randn(1, 5, 24, generator=generator)
    with torch.no_grad():
        out = transformer(
            hidden_states=latents, encoder_hidden_states=text, encoder_hidden_states_mask=torch.ones(1, 5),
            timestep=torch.tensor([0.5]), img_shapes=[[(1, 4, 4)]], return_dict=False,
        )[0]  # fmt: skip
    return out.numpy().astype(np.float64)


DIT = DitFamily("qwen-image", diffusers.QwenImagePipeline, _transformer, TARGETS, _forward)


def test_qwen_image_lora_loads_as_its_weights_summed_by_hand(hub: Hub, tmp_path: Path) -> None:
    check_load_as_summed_by_hand(DIT, hub, tmp_path)


def test_the_tiny_pipeline_generates_with_it_as_with_diffusers_own_load(hub: Hub, tmp_path: Path) -> None:
    check_the_tiny_pipeline_generates_as_with_diffusers_own_load(DIT, hub, tmp_path)


def test_bakes_into_a_diffusers_transformer_file(tmp_path: Path) -> None:
    check_bakes_into_a_diffusers_transformer_file(DIT, tmp_path)


def test_the_name_tables_are_the_models_linear_layers() -> None:
    from lorahub.adapters.names import inventory

    names = {f"transformer.{n}" for n, m in _transformer().named_modules() if isinstance(m, torch.nn.Linear)}
    blocks = {n for n in inventory("qwen-image") if not n.startswith("transformer.transformer_blocks.")
              or int(n.split(".")[2]) < 2}  # fmt: skip
    assert blocks == names


@pytest.mark.parametrize("layout", ["kohya", "comfyui", "diffusers", "peft"])
def test_qwen_image_lora_converts_exactly_between_layouts(tmp_path: Path, layout: str) -> None:
    source = DIT.diffusers_lora(tmp_path / "src")
    original = read_adapter(source)
    assert original.family == "qwen-image" and not original.unmapped and len(original.layers) == 2 * 8 + 1
    out = tmp_path / ("out" if layout == "peft" else "out.safetensors")
    assert convert(source, out, to=layout).max_abs_error <= 1e-6  # type: ignore[arg-type]
    back = tmp_path / "back.safetensors"
    assert convert(out, back, to="diffusers").max_abs_error <= 1e-6
    returned = read_adapter(back)
    for name, layer in original.layers.items():
        np.testing.assert_allclose(returned.layers[name].delta().weight, layer.delta().weight, atol=1e-6)


def test_trainer_spellings_are_read() -> None:
    from lorahub.adapters.names import to_canonical

    canonical = "transformer.transformer_blocks.0.img_mlp.net.0.proj"
    for spelling in ("lora_unet_transformer_blocks_0_img_mlp_net_0_proj",
                     "diffusion_model.transformer_blocks.0.img_mlp.net.0.proj",
                     "transformer_blocks.0.img_mlp.net.0.proj", canonical):  # fmt: skip
        assert to_canonical("qwen-image", "kohya", spelling) == canonical
