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


DIT = DitFamily("flux2", diffusers.Flux2Pipeline, _transformer, TARGETS, _forward)


def test_flux2_lora_loads_as_its_weights_summed_by_hand(hub: Hub, tmp_path: Path) -> None:
    check_load_as_summed_by_hand(DIT, hub, tmp_path)


def test_the_tiny_pipeline_generates_with_it_as_with_diffusers_own_load(hub: Hub, tmp_path: Path) -> None:
    check_the_tiny_pipeline_generates_as_with_diffusers_own_load(DIT, hub, tmp_path)


def test_bakes_into_a_diffusers_transformer_file(tmp_path: Path) -> None:
    check_bakes_into_a_diffusers_transformer_file(DIT, tmp_path)


def test_the_name_tables_are_the_models_linear_layers() -> None:
    from lorahub.adapters.names import inventory

    names = {f"transformer.{n}" for n, m in _transformer().named_modules() if isinstance(m, torch.nn.Linear)}
    kept = {n for n in inventory("flux2") if "transformer_blocks." not in n or "transformer_blocks.0." in n}
    assert kept == names


@pytest.mark.parametrize("layout", ["kohya", "comfyui", "diffusers", "peft"])
def test_flux2_lora_converts_exactly_between_layouts(tmp_path: Path, layout: str) -> None:
    source = DIT.diffusers_lora(tmp_path / "src")
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

    source = DIT.diffusers_lora(tmp_path / "src")
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
