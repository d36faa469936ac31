"""LyCORIS files of every kind for the tiny pipelines, and the checks that a pipeline equals another one."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lorahub.adapters.names import from_canonical
from lorahub.dev.example_lycoris import write_example_lycoris

ATTN = "down_blocks.0.attentions.0.transformer_blocks.0"
MID = "mid_block.attentions.0.transformer_blocks.0"
TE = "text_encoder.text_model.encoder.layers.0"

SD1_EVERY_KIND: Mapping[str, str] = {
    f"unet.{ATTN}.attn1.to_q": "loha",
    f"unet.{ATTN}.attn1.to_k": "lokr",
    f"unet.{ATTN}.attn1.to_v": "lokr-full",
    f"unet.{ATTN}.attn1.to_out.0": "lokr-both",
    f"unet.{ATTN}.attn2.to_q": "full",
    f"unet.{ATTN}.attn2.to_k": "dora",
    f"unet.{ATTN}.attn2.to_v": "ia3",
    f"unet.{ATTN}.attn2.to_out.0": "oft",
    f"unet.{ATTN}.ff.net.0.proj": "boft",
    f"unet.{ATTN}.ff.net.2": "glora",
    "unet.down_blocks.0.attentions.0.proj_in": "lokr",
    "unet.down_blocks.0.attentions.0.proj_out": "dora",
    "unet.down_blocks.0.resnets.0.conv1": "loha-tucker",
    "unet.down_blocks.0.resnets.0.conv2": "lokr-tucker",
    "unet.down_blocks.0.downsamplers.0.conv": "loha",
    "unet.down_blocks.1.resnets.0.conv1": "full",
    "unet.down_blocks.1.resnets.0.conv2": "glora",
    "unet.down_blocks.1.resnets.0.conv_shortcut": "oft",
    "unet.down_blocks.1.resnets.0.time_emb_proj": "ia3",
    "unet.mid_block.resnets.0.conv1": "dora",
    f"unet.{MID}.attn1.to_q": "boft",
    f"unet.{MID}.attn2.to_k": "lokr",
    f"{TE}.self_attn.q_proj": "lokr",
    f"{TE}.self_attn.k_proj": "loha",
    f"{TE}.self_attn.v_proj": "dora",
    f"{TE}.self_attn.out_proj": "full",
}
"""Canonical layer of the tiny SD1 pipeline → the kind an example file puts there: every kind lorahub applies
(LoHa and LoKr in every factorisation, Tucker and conv, full, DoRA on linear and conv, IA3, OFT, BOFT, GLoRA), on
attention, feed-forward, conv and text-encoder layers."""

XL_BLOCK = "down_blocks.1.attentions.0.transformer_blocks"
TE2 = "text_encoder_2.text_model.encoder.layers.0"
SDXL_KINDS: Mapping[str, str] = {
    f"unet.{XL_BLOCK}.0.attn1.to_q": "lokr",
    f"unet.{XL_BLOCK}.0.attn1.to_v": "loha",
    f"unet.{XL_BLOCK}.0.attn2.to_k": "dora",
    f"unet.{XL_BLOCK}.1.ff.net.0.proj": "boft",
    f"unet.{XL_BLOCK}.1.attn1.to_out.0": "full",
    "unet.down_blocks.1.attentions.0.proj_in": "oft",
    "unet.down_blocks.0.resnets.0.conv1": "lokr-tucker",
    "unet.down_blocks.0.resnets.1.conv1": "glora",
    f"{TE2}.self_attn.q_proj": "lokr-both",
    f"{TE2}.mlp.fc1": "ia3",
}
"""Every kind on the tiny SDXL pipeline, its second text encoder included."""

FLUX_KINDS: Mapping[str, str] = {
    "lora_unet_double_blocks_0_img_attn_qkv": "lokr",
    "lora_unet_single_blocks_0_linear1": "loha",
    "lora_unet_double_blocks_0_img_mlp_0": "lokr-both",
    "lora_unet_double_blocks_0_txt_mlp_2": "dora",
    "lora_unet_single_blocks_0_linear2": "full",
}
"""FLUX modules under BFL's kohya names: a LoKr over the fused ``img_attn.qkv``, a LoHa over ``linear1`` (fused q, k,
v and the MLP input), which split exactly only as dense ΔW, and other kinds on plain layers."""

FLUX_PARTS: Mapping[str, tuple[str, ...]] = {
    "lora_unet_double_blocks_0_img_attn_qkv": ("transformer_blocks.0.attn.to_q", "transformer_blocks.0.attn.to_k",
                                               "transformer_blocks.0.attn.to_v"),
    "lora_unet_single_blocks_0_linear1": ("single_transformer_blocks.0.attn.to_q",
                                          "single_transformer_blocks.0.attn.to_k",
                                          "single_transformer_blocks.0.attn.to_v",
                                          "single_transformer_blocks.0.proj_mlp"),
    "lora_unet_double_blocks_0_img_mlp_0": ("transformer_blocks.0.ff.net.0.proj",),
    "lora_unet_double_blocks_0_txt_mlp_2": ("transformer_blocks.0.ff_context.net.2",),
    "lora_unet_single_blocks_0_linear2": ("single_transformer_blocks.0.proj_out",),
}  # fmt: skip
"""Each FLUX module's diffusers layers, whose weights it stacks by rows."""


def write_flux_lycoris(pipe: Any, out: Path, plan: Mapping[str, str], *, seed: int = 0) -> None:
    """A FLUX LyCORIS file under BFL's kohya names (fused modules as wide as their parts together)."""
    model = pipe.transformer
    layers: dict[str, tuple[int, ...]] = {}
    bases: dict[str, np.ndarray] = {}
    for name in plan:
        weights = [model.get_submodule(part).weight.detach().numpy() for part in FLUX_PARTS[name]]
        bases[name] = np.concatenate(weights, axis=0)
        layers[name] = tuple(bases[name].shape)
    write_example_lycoris(out, layers, kind=dict(plan), seed=seed, bases=bases)


def module_of(pipe: Any, canonical: str) -> Any:
    component, _, path = canonical.partition(".")
    model = getattr(pipe, component)
    if not hasattr(model, "text_model"):
        path = path.removeprefix("text_model.")
    return model.get_submodule(path)


def write_lycoris(
    pipe: Any, family: str, out: Path, plan: Mapping[str, str], *, seed: int = 0, rank: int = 4
) -> dict[str, dict[str, np.ndarray]]:
    """A LyCORIS file under kohya names with ``plan``'s kind at each canonical layer, DoRA magnitudes taken from
    ``pipe``'s weights; returns its tensors by kohya name."""
    layers: dict[str, tuple[int, ...]] = {}
    kinds: dict[str, str] = {}
    bases: dict[str, np.ndarray] = {}
    without_bias = []
    for canonical, kind in plan.items():
        name = from_canonical(family, "kohya", canonical)
        assert name is not None, canonical
        module = module_of(pipe, canonical)
        weight = module.weight.detach().numpy()
        layers[name], kinds[name], bases[name] = tuple(weight.shape), kind, weight
        if module.bias is None:  # bake cannot add a bias the base does not have
            without_bias.append(name)
    return write_example_lycoris(out, layers, kind=kinds, rank=rank, seed=seed, bases=bases, without_bias=without_bias)


def effective_state(pipe: Any, component: str) -> dict[str, Any]:
    """``component``'s parameters as its layers compute with them: a patched layer's weight and bias with its
    adapters' ΔW added (every other parameter as it is), under the model's own names (PEFT's wrappers and the LoRA
    parameters they hold left out)."""
    from lorahub.sdk.patching import patch_of

    model = getattr(pipe, component)
    state = {name: value.detach() for name, value in model.state_dict().items()}
    for path, module in model.named_modules():
        patch = patch_of(module) if hasattr(module, "weight") else None
        if patch is None or patch.module is not module:
            continue
        weight, bias = patch.effective()
        state[f"{path}.weight"] = weight.detach()
        if bias is not None:
            state[f"{path}.bias"] = bias.detach()
    return {key.replace(".base_layer.", "."): value for key, value in state.items() if ".lora_" not in key}


def assert_same_weights(ours: Any, reference: Any, components: tuple[str, ...], *, atol: float = 1e-6) -> None:
    """Every weight ``ours`` computes with equals the one ``reference`` computes with (a baked pipeline's own)."""
    import torch

    for component in components:
        mine, theirs = effective_state(ours, component), effective_state(reference, component)
        for key, value in theirs.items():
            assert key in mine, key
            torch.testing.assert_close(mine[key], value, atol=atol, rtol=0, msg=lambda m, key=key: f"{key}: {m}")


def no_patches(pipe: Any, components: tuple[str, ...]) -> bool:
    """No layer of ``pipe`` carries a patch or an overridden forward."""
    from lorahub.sdk.patching import PATCH_ATTRIBUTE

    for component in components:
        for module in getattr(pipe, component).modules():
            if hasattr(module, PATCH_ATTRIBUTE) or "forward" in module.__dict__:
                return False
    return True
