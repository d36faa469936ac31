"""FLUX.2 adapters in the layouts their trainers write (diffusers/PEFT ``transformer.…``, kohya/musubi-tuner
``lora_unet_…`` and ai-toolkit/ComfyUI ``diffusion_model.…`` with BFL names): converted exactly between them (the BFL
layouts fuse q, k, v into ``img_attn.qkv`` and swap the final modulation's rows), and loaded into a ``Flux2Pipeline``
as the transformer whose weights were summed by hand.

The transformer is FLUX.2's config scaled down (8 + 48 blocks → 1 + 1, 48 heads of 128 → 2 of 16, joint width
15360 → 24, the SwiGLU ratio 3 kept), without a text encoder; one test runs the whole tiny FLUX.2 (klein)
pipeline, and one bakes into a diffusers transformer file."""

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

TARGETS = ["to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj", "to_out.0", "to_add_out",
           "ff.linear_in", "ff_context.linear_out", "to_qkv_mlp_proj", "single_transformer_blocks.0.attn.to_out",
           "norm_out.linear", "double_stream_modulation_img.linear", "x_embedder"]  # fmt: skip


def _transformer(seed: int = 0) -> Any:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return diffusers.Flux2Transformer2DModel(
            in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
            joint_attention_dim=24, axes_dims_rope=(4, 4, 4, 4),
        ).eval()  # fmt: skip


def _pipe() -> Any:
    return diffusers.Flux2Pipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None, tokenizer=None,
        transformer=_transformer(),
    )  # fmt: skip


def _diffusers_lora(folder: Path, *, seed: int = 1, transformer: Any = None) -> Path:
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    transformer = transformer if transformer is not None else _transformer()
    torch.manual_seed(seed)
    transformer.add_adapter(LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False), "x")
    with torch.no_grad():
        for name, param in transformer.named_parameters():
            if "lora_B" in name:
                param.mul_(0.2)
    diffusers.Flux2Pipeline.save_lora_weights(
        folder, transformer_lora_layers=get_peft_model_state_dict(transformer, adapter_name="x"),
        transformer_lora_adapter_metadata=transformer.peft_config["x"].to_dict(),
    )  # fmt: skip
    return folder / "pytorch_lora_weights.safetensors"


def _forward(transformer: Any) -> np.ndarray:
    generator = torch.Generator("cpu").manual_seed(0)
    latents = torch.randn(1, 16, 16, generator=generator)
    text = torch.randn(1, 5, 24, generator=generator)
    img_ids = torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(4.0), torch.arange(4.0), torch.zeros(1),
                                         indexing="ij"), -1).reshape(1, -1, 4)  # fmt: skip
    txt_ids = torch.zeros(1, 5, 4)
    with torch.no_grad():
        out = transformer(
            hidden_states=latents, encoder_hidden_states=text, timestep=torch.tensor([0.5]),
            img_ids=img_ids, txt_ids=txt_ids, guidance=torch.tensor([3.5]), return_dict=False,
        )[0]  # fmt: skip
    return out.numpy().astype(np.float64)


def test_the_name_tables_are_the_models_linear_layers() -> None:
    from lorahub.adapters.names import inventory

    names = {f"transformer.{n}" for n, m in _transformer().named_modules() if isinstance(m, torch.nn.Linear)}
    kept = {n for n in inventory("flux2") if "transformer_blocks." not in n or "transformer_blocks.0." in n}
    assert kept == names


@pytest.mark.parametrize("layout", ["kohya", "comfyui", "diffusers", "peft"])
def test_flux2_lora_converts_exactly_between_layouts(tmp_path: Path, layout: str) -> None:
    source = _diffusers_lora(tmp_path / "src")
    original = read_adapter(source)
    assert original.family == "flux2" and not original.unmapped
    out = tmp_path / ("out" if layout == "peft" else "out.safetensors")
    assert convert(source, out, to=layout).max_abs_error <= 1e-6  # type: ignore[arg-type]
    back = tmp_path / "back.safetensors"
    assert convert(out, back, to="diffusers").max_abs_error <= 1e-6
    returned = read_adapter(back)
    assert set(original.layers) <= set(returned.layers)
    for name, layer in returned.layers.items():
        expected = original.layers[name].delta().weight if name in original.layers else 0.0
        np.testing.assert_allclose(layer.delta().weight, expected, atol=1e-6, err_msg=name)


def test_bfl_names_are_those_of_diffusers_converter(tmp_path: Path) -> None:
    """The kohya output's names, spelled as ai-toolkit does, read by diffusers' own FLUX.2 converter: the same
    modules, the same ΔW (but the final modulation, whose rows diffusers' LoRA converter leaves unswapped)."""
    from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_flux2_lora_to_diffusers

    source = _diffusers_lora(tmp_path / "src")
    kohya = tmp_path / "kohya.safetensors"
    convert(source, kohya, to="kohya")
    ours = read_adapter(kohya)
    reference = _convert_non_diffusers_flux2_lora_to_diffusers(_ai_toolkit_spelling(kohya))
    modules = {k.removesuffix(".lora_A.weight") for k in reference if k.endswith(".lora_A.weight")}
    assert modules == set(ours.layers)
    for name in modules - {"transformer.norm_out.linear"}:
        delta = reference[f"{name}.lora_B.weight"] @ reference[f"{name}.lora_A.weight"]
        np.testing.assert_allclose(ours.layers[name].delta().weight, delta.numpy() * ours.layers[name].scale,
                                   atol=1e-6, err_msg=name)  # fmt: skip


def _ai_toolkit_spelling(kohya: Path) -> dict[str, Any]:
    """ai-toolkit's spelling of a kohya-named FLUX.2 file: ``diffusion_model.`` + BFL names, lora_A/lora_B."""
    from safetensors.torch import load_file

    from lorahub.adapters import dit_names

    out = {}
    for key, value in load_file(str(kohya)).items():
        module, _, suffix = key.partition(".")
        if suffix == "alpha":
            continue
        entry = dit_names.lookup("flux2", module)
        assert entry is not None, module
        role = {"lora_down.weight": "lora_A.weight", "lora_up.weight": "lora_B.weight"}[suffix]
        out[f"diffusion_model.{entry.path}.{role}"] = value
    return out


def test_flux2_lora_loads_as_its_weights_summed_by_hand(hub: Hub, tmp_path: Path) -> None:
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
    """Image level, on ``lorahub dev tiny-pipeline --family flux2`` (text encoder included)."""
    from lorahub.dev.tiny_pipeline import CALL_KWARGS, build_tiny_pipeline

    def image(pipe: Any) -> np.ndarray:
        generator = torch.Generator("cpu").manual_seed(0)
        result = pipe(prompt="a photo of sks cat", num_inference_steps=2, height=64, width=64, output_type="np",
                      generator=generator, **CALL_KWARGS["flux2"])  # fmt: skip
        return np.asarray(result.images[0], dtype=np.float64)

    pipe = build_tiny_pipeline("flux2")
    source = _diffusers_lora(tmp_path / "src", transformer=build_tiny_pipeline("flux2").transformer)
    kohya = tmp_path / "kohya.safetensors"
    convert(source, kohya, to="kohya")
    base = image(pipe)
    lorahub.load(kohya, pipe, weight=0.8, hub=hub, verify=False)
    reference = build_tiny_pipeline("flux2")
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
