"""SD3 and FLUX.1 name tables, checked against the diffusers/transformers models built on the meta device, the
examples of the upstream converters and the real FLUX key lists in ``tests/fixtures/keylists``.

The models are built small (two or three blocks, narrow widths): module *names* do not depend on width or depth, and
the full-depth counts are checked against the real models' block counts separately (``test_full_depth_counts``).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from lorahub.adapters import dit_names
from lorahub.adapters.names import from_canonical, inventory, to_canonical
from lorahub.formats.grouping import split_role
from lorahub.formats.naming import DOTTED_SUFFIXES, KOHYA_ALL_SUFFIXES
from tests.formats.headers import keylist
from tests.support import keylist_file

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

BLOCK = re.compile(r"^transformer\.(transformer_blocks|single_transformer_blocks)\.(\d+)\.")


def _module_paths(model: Any) -> set[str]:
    return {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear | torch.nn.Conv2d)}


def _within(names: tuple[str, ...], depth: dict[str, int]) -> set[str]:
    """Canonical transformer names of blocks below the given depths (top-level modules always)."""
    kept = set()
    for name in names:
        match = BLOCK.match(name)
        if match is None or int(match.group(2)) < depth[match.group(1)]:
            kept.add(name)
    return kept


def test_flux_inventory_is_the_models_linear_modules() -> None:
    with torch.device("meta"):
        model = diffusers.FluxTransformer2DModel(
            num_layers=2,
            num_single_layers=2,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=24,
            pooled_projection_dim=16,
            guidance_embeds=True,
            axes_dims_rope=(4, 6, 6),
        )
    expected = {f"transformer.{p}" for p in _module_paths(model)}
    depth = {"transformer_blocks": 2, "single_transformer_blocks": 2}
    assert _within(inventory("flux1", "transformer"), depth) == expected


def test_sd3_inventory_is_the_models_linear_modules_with_a_pre_only_last_block() -> None:
    with torch.device("meta"):
        model = diffusers.SD3Transformer2DModel(
            num_layers=3,
            attention_head_dim=8,
            num_attention_heads=2,
            joint_attention_dim=24,
            caption_projection_dim=16,
            pooled_projection_dim=12,
            out_channels=4,
            pos_embed_max_size=16,
            dual_attention_layers=(0, 1, 2),
        )
    expected = {f"transformer.{p}" for p in _module_paths(model)}
    ours = _within(inventory("sd3", "transformer"), {"transformer_blocks": 3})
    last = "transformer.transformer_blocks.2."
    # the last block is context_pre_only: no context output projection or MLP (the union inventory names them)
    assert ours - expected == {f"{last}attn.to_add_out", f"{last}ff_context.net.0.proj", f"{last}ff_context.net.2"}
    assert expected <= ours


def test_text_encoders_are_the_models_linear_modules() -> None:
    t5 = transformers.T5Config(d_model=8, d_kv=4, d_ff=16, num_layers=24, num_heads=2, feed_forward_proj="gated-gelu")
    with torch.device("meta"):
        encoder = transformers.T5EncoderModel(t5)
        clip = transformers.CLIPTextModelWithProjection(
            transformers.CLIPTextConfig(
                hidden_size=8, intermediate_size=16, num_attention_heads=2, num_hidden_layers=12
            )
        )
    assert set(inventory("flux1", "text_encoder_2")) == {f"text_encoder_2.{p}" for p in _module_paths(encoder)}
    assert set(inventory("sd3", "text_encoder_3")) == {f"text_encoder_3.{p}" for p in _module_paths(encoder)}
    assert set(inventory("sd3", "text_encoder")) == {f"text_encoder.{p}" for p in _module_paths(clip)}
    assert len(inventory("flux1", "text_encoder")) == 72  # CLIPTextModel: no projection


def test_full_depth_counts() -> None:
    """FLUX.1: 19 double blocks × 14 layers (q/k/v split) + 38 single × 6 + 10 top-level; SD3 union of 38 blocks;
    T5-XXL 24 × 7 = 168, the count in OneTrainer's FLUX key list."""
    assert len(inventory("flux1", "transformer")) == 19 * 14 + 38 * 6 + 10
    assert len(inventory("sd3", "transformer")) == 38 * 18 + 8
    assert len(inventory("flux1", "text_encoder_2")) == 168


@pytest.mark.parametrize("family", dit_names.FAMILIES)
def test_every_layer_round_trips_its_names(family: str) -> None:
    for canonical in inventory(family):
        assert to_canonical(family, "diffusers", canonical) == canonical
        assert from_canonical(family, "diffusers", canonical) == canonical
        native, index = dit_names.native_of(family, canonical) or (None, 0)
        assert native is not None and native.parts[index] == canonical
        kohya = dit_names.written_name(family, "kohya", native)
        assert kohya is not None and dit_names.lookup(family, kohya) == native
        if native.fused:  # no one-to-one name: written through lorahub.adapters.native
            assert from_canonical(family, "kohya", canonical) is None
        else:
            assert from_canonical(family, "kohya", canonical) == kohya
            assert to_canonical(family, "kohya", kohya) == canonical


@pytest.mark.parametrize("family", dit_names.FAMILIES)
def test_written_names_are_distinct(family: str) -> None:
    for fmt in dit_names.NATIVE_FORMATS:
        written = [dit_names.written_name(family, fmt, n) for n in dit_names._maps(family).natives]
        known = [w for w in written if w is not None]
        assert len(set(known)) == len(known)


def test_examples_from_the_reference() -> None:
    qkv = dit_names.lookup("flux1", "lora_unet_double_blocks_0_img_attn_qkv")
    assert qkv is not None and qkv.parts == tuple(f"transformer.transformer_blocks.0.attn.to_{p}" for p in "qkv")
    assert dit_names.lookup("flux1", "diffusion_model.double_blocks.0.img_attn.qkv") == qkv
    txt = dit_names.lookup("flux1", "lora_unet_double_blocks_3_txt_attn_qkv")
    assert txt is not None and txt.parts[0] == "transformer.transformer_blocks.3.attn.add_q_proj"
    linear1 = dit_names.lookup("flux1", "lora_unet_single_blocks_37_linear1")
    assert linear1 is not None and linear1.ratios == (1, 1, 1, 4)
    assert linear1.parts[3] == "transformer.single_transformer_blocks.37.proj_mlp"
    final = dit_names.lookup("flux1", "lora_unet_final_layer_adaLN_modulation_1")
    assert final is not None and final.parts == ("transformer.norm_out.linear",) and final.swap == "always"
    flux = {
        "lora_unet_double_blocks_0_img_mod_lin": "transformer.transformer_blocks.0.norm1.linear",
        "lora_unet_double_blocks_0_txt_attn_proj": "transformer.transformer_blocks.0.attn.to_add_out",
        "lora_unet_double_blocks_0_img_mlp_2": "transformer.transformer_blocks.0.ff.net.2",
        "lora_unet_single_blocks_0_modulation_lin": "transformer.single_transformer_blocks.0.norm.linear",
        "lora_unet_single_blocks_0_linear2": "transformer.single_transformer_blocks.0.proj_out",
        "lora_unet_img_in": "transformer.x_embedder",
        "lora_unet_txt_in": "transformer.context_embedder",
        "lora_unet_time_in_in_layer": "transformer.time_text_embed.timestep_embedder.linear_1",
        "lora_unet_vector_in_out_layer": "transformer.time_text_embed.text_embedder.linear_2",
        "lora_unet_guidance_in_in_layer": "transformer.time_text_embed.guidance_embedder.linear_1",
        "lora_unet_final_layer_linear": "transformer.proj_out",
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj": (
            "text_encoder.text_model.encoder.layers.0.self_attn.q_proj"
        ),
        "lora_te3_encoder_block_0_layer_0_SelfAttention_q": "text_encoder_2.encoder.block.0.layer.0.SelfAttention.q",
        "lora_te2_encoder_block_0_layer_1_DenseReluDense_wi_0": (
            "text_encoder_2.encoder.block.0.layer.1.DenseReluDense.wi_0"  # OneTrainer's T5 slot
        ),
        "text_encoders.t5xxl.transformer.encoder.block.1.layer.0.SelfAttention.o": (
            "text_encoder_2.encoder.block.1.layer.0.SelfAttention.o"
        ),
        "lora_transformer_single_transformer_blocks_0_attn_to_q": "transformer.single_transformer_blocks.0.attn.to_q",
    }
    for name, canonical in flux.items():
        found = dit_names.lookup("flux1", name)
        assert found is not None and found.parts == (canonical,), name
    sd3 = dit_names.lookup("sd3", "lora_unet_joint_blocks_0_x_block_attn_qkv")
    assert sd3 is not None and sd3.parts[2] == "transformer.transformer_blocks.0.attn.to_v"
    ctx = dit_names.lookup("sd3", "diffusion_model.joint_blocks.23.context_block.adaLN_modulation.1")
    assert ctx is not None and ctx.parts == ("transformer.transformer_blocks.23.norm1_context.linear",)
    assert ctx.swap == "pre-only"
    assert to_canonical("sd3", "kohya", "lora_te2_text_model_encoder_layers_31_mlp_fc2") == (
        "text_encoder_2.text_model.encoder.layers.31.mlp.fc2"
    )
    assert to_canonical("sd3", "kohya", "lora_te3_encoder_block_23_layer_1_DenseReluDense_wo") == (
        "text_encoder_3.encoder.block.23.layer.1.DenseReluDense.wo"
    )
    assert from_canonical("sd3", "comfyui", "text_encoder_2.text_model.encoder.layers.0.mlp.fc1") is None
    assert dit_names.lookup("flux1", "lora_unet_double_blocks_19_img_attn_qkv") is None  # FLUX.1 has 19 (0..18)
    assert dit_names.lookup("flux1", "lora_unet_joint_blocks_0_x_block_attn_qkv") is None


FLUX_KEYLISTS = [
    ("flux_lora_kohya_format.json", KOHYA_ALL_SUFFIXES),
    ("flux_lora_kohya_with_te1_format.json", KOHYA_ALL_SUFFIXES),
    ("flux_dora_onetrainer_format.json", KOHYA_ALL_SUFFIXES),
    ("flux_lora_diffusers_format.json", DOTTED_SUFFIXES),
    ("flux_lora_diffusers_no_proj_mlp_format.json", DOTTED_SUFFIXES),
    ("flux_lora_diffusers_base_model_format.json", DOTTED_SUFFIXES),
    ("flux_lora_aitoolkit_format.json", DOTTED_SUFFIXES),
    ("flux_lokr_bfl_format.json", DOTTED_SUFFIXES),
]


@pytest.mark.parametrize(("name", "suffixes"), FLUX_KEYLISTS, ids=[name for name, _ in FLUX_KEYLISTS])
def test_every_module_of_the_real_flux_key_lists_is_named(name: str, suffixes: Any) -> None:
    _, shapes = keylist(keylist_file(name))
    modules = {split[0] for key in shapes if (split := split_role(key, suffixes)) is not None}
    assert modules
    assert [m for m in sorted(modules) if dit_names.lookup("flux1", m) is None] == []
