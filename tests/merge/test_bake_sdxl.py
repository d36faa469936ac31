"""SDXL single files: the OpenCLIP-G encoder fuses q/k/v into ``in_proj_weight`` and stores ``text_projection``
transposed. A tiny SDXL checkpoint in SGM/OpenCLIP names (checked against diffusers' own converters) is baked, read
back with those converters, and compared with W + w·ΔW on the diffusers/transformers weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_open_clip_checkpoint
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from lorahub.adapters import name_tables as t
from lorahub.adapters.delta import delta_weight
from lorahub.adapters.model import read_adapter
from lorahub.adapters.names import from_canonical
from lorahub.files.safetensors import read_header
from lorahub.merge import bake
from lorahub.merge.layouts import detect_layout, unet_spec_from_diffusers
from tests.merge import tiny

UNET = "model.diffusion_model."
TE1 = "conditioner.embedders.0.transformer."
TE2 = "conditioner.embedders.1.model."
OPENCLIP = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
LAYERS = (
    "unet.down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k",
    "text_encoder.text_model.encoder.layers.1.self_attn.v_proj",
    "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj",
    "text_encoder_2.text_model.encoder.layers.1.self_attn.k_proj",
    "text_encoder_2.text_model.encoder.layers.1.self_attn.v_proj",
    "text_encoder_2.text_model.encoder.layers.0.self_attn.out_proj",
    "text_encoder_2.text_model.encoder.layers.1.mlp.fc1",
    "text_encoder_2.text_projection",
)


def _models() -> tuple[Any, Any, Any]:
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,
        cross_attention_dim=64,
    )
    config = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4}
    te1 = CLIPTextModel(CLIPTextConfig(vocab_size=99, **config))
    te2 = CLIPTextModelWithProjection(CLIPTextConfig(vocab_size=99, projection_dim=32, **config))
    return unet, te1, te2


def _hf(model: Any) -> dict[str, torch.Tensor]:
    """transformers' keys in the ``text_model.`` form (transformers ≥ 5 drops it)."""
    return {
        k if k.startswith(("text_model.", "text_projection")) else f"text_model.{k}": v.detach().clone()
        for k, v in model.state_dict().items()
    }


def _open_clip(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF CLIP → OpenCLIP names (the inverse of diffusers' ``convert_open_clip_checkpoint``)."""
    out = {
        "token_embedding.weight": hf["text_model.embeddings.token_embedding.weight"],
        "positional_embedding": hf["text_model.embeddings.position_embedding.weight"],
        "ln_final.weight": hf["text_model.final_layer_norm.weight"],
        "ln_final.bias": hf["text_model.final_layer_norm.bias"],
        "text_projection": hf["text_projection.weight"].T.contiguous(),
    }
    layers = {int(k.split(".")[3]) for k in hf if k.startswith("text_model.encoder.layers.")}
    for i in layers:
        src, dst = f"text_model.encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for leaf in ("weight", "bias"):
            out[f"{dst}attn.in_proj_{leaf}"] = torch.cat([hf[f"{src}self_attn.{p}_proj.{leaf}"] for p in "qkv"])
            out[f"{dst}attn.out_proj.{leaf}"] = hf[f"{src}self_attn.out_proj.{leaf}"]
            for name, sgm in OPENCLIP.items():
                out[f"{dst}{sgm}.{leaf}"] = hf[f"{src}{name}.{leaf}"]
    return out


def _checkpoint(unet: Any, te1: Any, te2: Any) -> dict[str, torch.Tensor]:
    state = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    spec = unet_spec_from_diffusers({k: tiny._Info(tuple(v.shape)) for k, v in state.items()})  # type: ignore[misc]
    blocks = {block: (sgm, kind) for block, sgm, kind, _ in t.block_map(spec)}
    out = {f"{UNET}{tiny.ldm_unet_key(k, blocks)}": v for k, v in state.items()}
    out.update({f"{TE1}{k}": v for k, v in _hf(te1).items() if not k.startswith("text_projection")})
    out.update({f"{TE2}{k}": v for k, v in _open_clip(_hf(te2)).items()})
    return out


def _adapter(path: Path, weights: dict[str, dict[str, torch.Tensor]]) -> Path:
    """A kohya SDXL LoRA (lora_unet_ SGM names, lora_te1_/lora_te2_) on LAYERS, shapes from the HF weights."""
    rng = np.random.default_rng(3)
    tensors: dict[str, torch.Tensor] = {}
    for canonical in LAYERS:
        component, _, path_in = canonical.partition(".")
        out_dim, in_dim = weights[component][f"{path_in}.weight"].shape
        key = from_canonical("sdxl", "kohya", canonical)
        assert key is not None
        tensors[f"{key}.lora_down.weight"] = torch.from_numpy(rng.standard_normal((4, in_dim)).astype(np.float32))
        tensors[f"{key}.lora_up.weight"] = torch.from_numpy(rng.standard_normal((out_dim, 4)).astype(np.float32))
        tensors[f"{key}.alpha"] = torch.tensor(2.0)
    save_file(tensors, str(path), metadata={"ss_base_model_version": "sdxl_base_v1-0"})
    return path


@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_sdxl_single_file_with_open_clip(tmp_path: Path, engine: Any) -> None:
    unet, te1, te2 = _models()
    checkpoint = _checkpoint(unet, te1, te2)
    # the test's names are what diffusers reads back as these models
    assert all(
        torch.equal(v, unet.state_dict()[k])
        for k, v in convert_ldm_unet_checkpoint(checkpoint, dict(unet.config)).items()
    )
    back = convert_open_clip_checkpoint(te2, checkpoint, prefix=TE2)
    assert back.keys() == _hf(te2).keys() and all(torch.equal(back[k], v) for k, v in _hf(te2).items())
    base = tmp_path / "sdxl.safetensors"
    save_file(checkpoint, str(base))
    assert detect_layout(read_header(base).tensors, base).families == {"sdxl"}

    weights = {
        "unet": {k: v.detach() for k, v in unet.state_dict().items()},
        "text_encoder": _hf(te1),
        "text_encoder_2": _hf(te2),
    }
    adapter = read_adapter(_adapter(tmp_path / "lora.safetensors", weights), family="sdxl")
    assert sorted(adapter.layers) == sorted(LAYERS)
    out = tmp_path / "baked.safetensors"
    report = bake(base, [(adapter, 0.6)], out, engine=engine)
    assert report.layers == len(LAYERS) and report.family == "sdxl"

    baked = load_file(str(out))
    got = {
        "unet": convert_ldm_unet_checkpoint(baked, dict(unet.config)),
        "text_encoder": {k.removeprefix(TE1): v for k, v in baked.items() if k.startswith(TE1)},
        "text_encoder_2": convert_open_clip_checkpoint(te2, baked, prefix=TE2),
    }
    changed = set()
    for canonical, layer in adapter.layers.items():
        component, _, path_in = canonical.partition(".")
        key = f"{path_in}.weight"
        expected = weights[component][key].numpy() + 0.6 * delta_weight(layer.tensors, alpha=layer.alpha).weight
        np.testing.assert_allclose(got[component][key].numpy(), expected, rtol=1e-5, atol=1e-6)
        changed.add((component, key))
    for component, state in weights.items():
        for key, value in state.items():
            if (component, key) not in changed and key in got[component]:
                assert torch.equal(got[component][key], value), (component, key)
