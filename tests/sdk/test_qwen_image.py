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

import lorahub
from lorahub import Hub
from lorahub.adapters.convert import convert
from lorahub.adapters.model import read_adapter

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


def _pipe() -> Any:
    return diffusers.QwenImagePipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None, tokenizer=None,
        transformer=_transformer(),
    )  # fmt: skip


def _diffusers_lora(folder: Path, *, seed: int = 1, transformer: Any = None) -> Path:
    """A LoRA saved by diffusers' own ``save_lora_weights`` from PEFT layers on the tiny transformer (alpha ≠ rank)."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    transformer = transformer if transformer is not None else _transformer()
    torch.manual_seed(seed)
    transformer.add_adapter(LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False), "x")
    with torch.no_grad():
        for name, param in transformer.named_parameters():
            if "lora_B" in name:
                param.mul_(0.2)
    diffusers.QwenImagePipeline.save_lora_weights(
        folder, transformer_lora_layers=get_peft_model_state_dict(transformer, adapter_name="x"),
        transformer_lora_adapter_metadata=transformer.peft_config["x"].to_dict(),
    )  # fmt: skip
    return folder / "pytorch_lora_weights.safetensors"


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


def test_the_name_tables_are_the_models_linear_layers() -> None:
    from lorahub.adapters.names import inventory

    names = {f"transformer.{n}" for n, m in _transformer().named_modules() if isinstance(m, torch.nn.Linear)}
    blocks = {n for n in inventory("qwen-image") if not n.startswith("transformer.transformer_blocks.")
              or int(n.split(".")[2]) < 2}  # fmt: skip
    assert blocks == names


@pytest.mark.parametrize("layout", ["kohya", "comfyui", "diffusers", "peft"])
def test_qwen_image_lora_converts_exactly_between_layouts(tmp_path: Path, layout: str) -> None:
    source = _diffusers_lora(tmp_path / "src")
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


def test_qwen_image_lora_loads_as_its_weights_summed_by_hand(hub: Hub, tmp_path: Path) -> None:
    source = _diffusers_lora(tmp_path / "src")
    kohya = tmp_path / "musubi.safetensors"
    convert(source, kohya, to="kohya")
    pipe = _pipe()
    base = _forward(pipe.transformer)
    handle = lorahub.load(kohya, pipe, weight=0.6, hub=hub, verify=False)
    ours = _forward(pipe.transformer)
    summed = _transformer()
    with torch.no_grad():
        for name, layer in read_adapter(source).layers.items():
            module = summed.get_submodule(name.removeprefix("transformer."))
            module.weight.add_(0.6 * torch.from_numpy(layer.delta().weight.astype(np.float32)))
    np.testing.assert_allclose(ours, _forward(summed), atol=1e-5)
    assert np.abs(ours - base).max() > 1e-3
    reference = _pipe()
    reference.load_lora_weights(str(source), adapter_name="ref")
    reference.set_adapters(["ref"], adapter_weights=[0.6])
    np.testing.assert_allclose(ours, _forward(reference.transformer), atol=1e-5)
    handle.unload()
    np.testing.assert_allclose(_forward(pipe.transformer), base, atol=1e-6)


def test_the_tiny_pipeline_generates_with_it_as_with_diffusers_own_load(hub: Hub, tmp_path: Path) -> None:
    """Image level, on ``lorahub dev tiny-pipeline --family qwen-image`` (text encoder included)."""
    from lorahub.dev.tiny_pipeline import CALL_KWARGS, build_tiny_pipeline

    def image(pipe: Any) -> np.ndarray:
        generator = torch.Generator("cpu").manual_seed(0)
        result = pipe(prompt="a photo of sks cat", num_inference_steps=2, height=64, width=64, output_type="np",
                      generator=generator, **CALL_KWARGS["qwen-image"])  # fmt: skip
        return np.asarray(result.images[0], dtype=np.float64)

    pipe = build_tiny_pipeline("qwen-image")
    source = _diffusers_lora(tmp_path / "src", transformer=build_tiny_pipeline("qwen-image").transformer)
    kohya = tmp_path / "kohya.safetensors"
    convert(source, kohya, to="kohya")
    base = image(pipe)
    lorahub.load(kohya, pipe, weight=0.8, hub=hub, verify=False)
    reference = build_tiny_pipeline("qwen-image")
    reference.load_lora_weights(str(source), adapter_name="ref")
    reference.set_adapters(["ref"], adapter_weights=[0.8])
    ours = image(pipe)
    np.testing.assert_allclose(ours, image(reference), atol=1e-5)
    assert np.abs(ours - base).max() > 1e-3


def test_bakes_into_a_diffusers_transformer_file(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from lorahub.merge.bake import bake

    transformer = _transformer()
    state = {k: v.detach().clone().contiguous() for k, v in transformer.state_dict().items()}
    base = tmp_path / "transformer" / "diffusion_pytorch_model.safetensors"
    base.parent.mkdir()
    save_file(state, str(base))
    adapter = read_adapter(_diffusers_lora(tmp_path / "src"))
    bake(base, [(adapter, 0.5)], tmp_path / "baked.safetensors", components=["transformer"])
    baked = load_file(str(tmp_path / "baked.safetensors"))
    for name, layer in adapter.layers.items():
        key = f"{name.removeprefix('transformer.')}.weight"
        expected = state[key].numpy() + 0.5 * layer.delta().weight
        np.testing.assert_allclose(baked[key].numpy(), expected, rtol=1e-5, atol=1e-6, err_msg=key)
