"""FLUX.1 and SD3/3.5 single files in their original names (BFL's ``double_blocks.N.img_attn.qkv``, Stability's
``joint_blocks.N.x_block…``): a LoRA in diffusers names is baked into the rows of fused modules it owns, with the
scale/shift halves swapped where the original model orders them the other way.

The native checkpoint is built from a tiny diffusers transformer with lorahub's name tables; for SD3 diffusers' own
single-file converter reads it back exactly (its FLUX converter assumes the full 3072 width, so FLUX's tables are
checked against the models in tests/adapters/test_dit_names.py instead). The baked file must equal the native
form of the diffusers weights with w·ΔW added."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import FluxTransformer2DModel, SD3Transformer2DModel
from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers
from safetensors.torch import load_file, save_file

from lorahub import errors
from lorahub.adapters import dit_names
from lorahub.adapters.model import read_adapter
from lorahub.files.safetensors import read_header
from lorahub.merge import bake
from lorahub.merge.layouts import detect_layout

WEIGHT = 0.6
LAYERS = {
    "flux1": (
        "transformer_blocks.0.attn.to_k",  # the middle third of img_attn.qkv
        "transformer_blocks.0.attn.add_v_proj",  # the last third of txt_attn.qkv
        "single_transformer_blocks.0.attn.to_v",  # units 2..3 of linear1's 7
        "single_transformer_blocks.0.proj_mlp",  # units 3..7 of linear1
        "single_transformer_blocks.0.proj_out",
        "norm_out.linear",  # [scale, shift] in diffusers, [shift, scale] in BFL's final adaLN
        "x_embedder",
    ),
    "sd3": (
        "transformer_blocks.0.attn.to_q",
        "transformer_blocks.0.ff.net.0.proj",
        "transformer_blocks.1.norm1_context.linear",  # the last, pre-only block: halves swapped
        "transformer_blocks.0.norm1_context.linear",  # a full block: not swapped
        "norm_out.linear",
    ),
}


def _model(family: str) -> Any:
    torch.manual_seed(0)
    if family == "flux1":
        return FluxTransformer2DModel(
            patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=8,
            num_attention_heads=2, joint_attention_dim=16, pooled_projection_dim=8, guidance_embeds=True,
            axes_dims_rope=(2, 2, 4),
        )  # fmt: skip
    return SD3Transformer2DModel(
        sample_size=8, patch_size=1, in_channels=4, num_layers=2, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=16, caption_projection_dim=16, pooled_projection_dim=8, out_channels=4,
        pos_embed_max_size=16,
    )  # fmt: skip


def _swapped(native: dit_names.Native, weight: torch.Tensor) -> bool:
    rows = weight.shape[0]
    return native.swap == "always" or (native.swap == "pre-only" and rows == 2 * weight.shape[1])


def to_native(state: dict[str, torch.Tensor], family: str) -> dict[str, torch.Tensor]:
    """The checkpoint in the original model's names: fused modules concatenated in row order, halves swapped."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        path, _, leaf = key.rpartition(".")
        found = dit_names.native_of(family, f"transformer.{path}")
        if found is None:
            out[key] = value  # norms, embeddings: bake copies what no layer touches
            continue
        native, _ = found
        parts = [p.removeprefix("transformer.") for p in native.parts]
        fused = torch.cat([state[f"{p}.{leaf}"] for p in parts])
        if _swapped(native, state[f"{parts[0]}.weight"]):
            fused = torch.cat([fused[fused.shape[0] // 2 :], fused[: fused.shape[0] // 2]])
        out[f"{native.path}.{leaf}"] = fused
    if "pos_embed.pos_embed" in out:
        out["pos_embed"] = out.pop("pos_embed.pos_embed")
    return out


def _adapter(path: Path, family: str, state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """A rank-2 LoRA in diffusers names on the family's LAYERS; returns each layer's ΔW (B·A, scale 1)."""
    rng = np.random.default_rng(5)
    tensors, deltas = {}, {}
    for layer in LAYERS[family]:
        out_dim, in_dim = state[f"{layer}.weight"].shape
        down = rng.standard_normal((2, in_dim)).astype(np.float32)
        up = rng.standard_normal((out_dim, 2)).astype(np.float32)
        tensors[f"transformer.{layer}.lora_A.weight"] = torch.from_numpy(down)
        tensors[f"transformer.{layer}.lora_B.weight"] = torch.from_numpy(up)
        deltas[layer] = up @ down
    save_file(tensors, str(path))
    return deltas


@pytest.mark.parametrize(
    ("family", "prefix", "layout"),
    [
        ("flux1", "", "bfl-flux1"),
        ("flux1", "model.diffusion_model.", "bfl-flux1"),
        ("sd3", "model.diffusion_model.", "sai-sd3"),
    ],
)
def test_a_lora_is_baked_into_the_original_models_names(family: str, prefix: str, layout: str, tmp_path: Path) -> None:
    state = {k: v.detach().clone() for k, v in _model(family).state_dict().items()}
    native = to_native(state, family)
    if family == "sd3":  # the tables agree with diffusers' own reader of SD3 single files
        back = convert_sd3_transformer_checkpoint_to_diffusers(dict(native))
        assert back.keys() == state.keys() and all(torch.equal(back[k], v) for k, v in state.items())
    base = tmp_path / "base.safetensors"
    save_file({f"{prefix}{k}": v for k, v in native.items()}, str(base))
    detected = detect_layout(read_header(base).tensors, base)
    assert (detected.name, detected.families) == (layout, {family})

    deltas = _adapter(tmp_path / "lora.safetensors", family, state)
    adapter = read_adapter(tmp_path / "lora.safetensors", family=family)
    out = tmp_path / "baked.safetensors"
    report = bake(base, [(adapter, WEIGHT)], out)
    assert report.layers == len(LAYERS[family])

    changed = dict(state)
    for layer, delta in deltas.items():
        changed[f"{layer}.weight"] = state[f"{layer}.weight"] + WEIGHT * torch.from_numpy(delta)
    expected = to_native(changed, family)
    baked = {k.removeprefix(prefix): v for k, v in load_file(str(out)).items()}
    assert baked.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_allclose(baked[key].numpy(), value.numpy(), rtol=1e-5, atol=1e-6, err_msg=key)
    untouched = [k for k in native if torch.equal(native[k], expected[k])]
    assert untouched and all(torch.equal(baked[k], native[k]) for k in untouched)


def test_an_sd3_lora_does_not_bake_into_a_flux_file(tmp_path: Path) -> None:
    state = {k: v.detach().clone() for k, v in _model("flux1").state_dict().items()}
    base = tmp_path / "flux.safetensors"
    save_file(to_native(state, "flux1"), str(base))
    sd3 = {k: v.detach().clone() for k, v in _model("sd3").state_dict().items()}
    _adapter(tmp_path / "sd3.safetensors", "sd3", sd3)
    with pytest.raises(errors.FamilyMismatchError):
        bake(base, [(read_adapter(tmp_path / "sd3.safetensors", family="sd3"), 1.0)], tmp_path / "out.safetensors")
