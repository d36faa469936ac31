"""Base-model family from shapes, metadata as a second opinion, and their disagreement."""

from __future__ import annotations

import pytest

from lorahub.formats import detect
from lorahub.formats.families import FAMILIES, FamilyVerdict, detect_family, family_from_metadata
from tests.formats.headers import header, lora, merge, peft

SD1_UNET = merge(
    lora("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k", 768, 320),
    lora("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_v", 768, 320),
    lora("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", 320, 320),
)
SD1_TE = lora("lora_te_text_model_encoder_layers_0_self_attn_q_proj", 768, 768)


def verdict_for(shapes: dict[str, list[int]], metadata: dict[str, str] | None = None) -> FamilyVerdict:
    metadata = metadata or {}
    return detect_family(detect(header(shapes), metadata), metadata)


def test_sd1_from_cross_attention_width() -> None:
    verdict = verdict_for(merge(SD1_UNET, SD1_TE))
    assert verdict.family == "sd1"
    assert verdict.evidence[0] == "cross-attention input 768 (CLIP-L): SD 1.x"
    assert "text encoder width 768 (CLIP-L), 1 layer" in verdict.evidence
    assert (verdict.metadata_family, verdict.metadata_evidence, verdict.disagreement) == (None, [], None)


def test_metadata_disagreeing_with_sd1_shapes_is_reported() -> None:
    verdict = verdict_for(merge(SD1_UNET, SD1_TE), {"ss_base_model_version": "sdxl_base_v1-0", "ss_v2": "False"})
    assert verdict.family == "sd1"
    assert verdict.metadata_family == "sdxl"
    assert verdict.metadata_evidence == ["ss_base_model_version = 'sdxl_base_v1-0': SDXL"]
    assert verdict.disagreement == (
        "the tensors say SD 1.x (cross-attention input 768 (CLIP-L): SD 1.x) but the metadata says SDXL "
        "(ss_base_model_version = 'sdxl_base_v1-0': SDXL); the tensors are trusted"
    )


def test_metadata_decides_when_shapes_say_nothing() -> None:
    shapes = lora("lora_unet_some_custom_layer", 64, 64)
    verdict = verdict_for(shapes, {"modelspec.architecture": "stable-diffusion-xl-v1-base/lora"})
    assert verdict.family == "sdxl"
    assert verdict.disagreement is None
    assert verdict.evidence[-1].startswith("the tensors do not decide the family; taken from metadata:")
    assert "modelspec.architecture" in verdict.evidence[-1]


def test_nothing_known_is_unknown() -> None:
    verdict = verdict_for(lora("lora_unet_some_custom_layer", 64, 64))
    assert (verdict.family, verdict.evidence, verdict.metadata_family) == ("unknown", [], None)


@pytest.mark.parametrize(
    ("metadata", "family"),
    [
        ({"ss_base_model_version": "sd_v1"}, "sd1"),
        ({"ss_base_model_version": "sd_v2_v"}, "sd2"),
        ({"ss_base_model_version": "sdxl_base_v1-0"}, "sdxl"),
        ({"ss_base_model_version": "flux1"}, "flux1"),
        ({"ss_base_model_version": "5-large"}, "sd3"),
        ({"ss_base_model_version": "chroma"}, None),
        ({"ss_v2": "True"}, "sd2"),
        ({"ss_v2": "False"}, None),
        ({"modelspec.architecture": "stable-diffusion-v1/lora"}, "sd1"),
        ({"modelspec.architecture": "stable-diffusion-v2-768-v/lora"}, "sd2"),
        ({"modelspec.architecture": "stable-diffusion-3-5-large/lora"}, "sd3"),
        ({"modelspec.architecture": "flux-1-dev/lora"}, "flux1"),
        ({"modelspec.architecture": "anima-preview/lora"}, "anima"),
        ({}, None),
    ],
)
def test_metadata_family(metadata: dict[str, str], family: str | None) -> None:
    assert family_from_metadata(metadata)[0] == family


def test_metadata_keys_that_disagree_with_each_other() -> None:
    family, evidence = family_from_metadata(
        {"ss_base_model_version": "sd_v1", "modelspec.architecture": "stable-diffusion-xl-v1-base/lora"}
    )
    assert family == "sd1"
    assert evidence[-1] == "the metadata keys disagree with each other; the first is used"


def test_sd2_from_openclip_h() -> None:
    shapes = merge(
        lora("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k", 1024, 320),
        lora("lora_te_text_model_encoder_layers_22_self_attn_q_proj", 1024, 1024),
    )
    verdict = verdict_for(shapes)
    assert verdict.family == "sd2"
    assert "text encoder width 1024 (OpenCLIP-H): SD 2.x, 1 layer" in verdict.evidence


def test_sdxl_text_encoders_only_are_undecided_without_metadata() -> None:
    shapes = merge(
        lora("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", 768, 768),
        lora("lora_te2_text_model_encoder_layers_0_self_attn_q_proj", 1280, 1280),
    )
    assert verdict_for(shapes).family == "unknown"  # SDXL and SD3 both have CLIP-L + OpenCLIP-G
    assert verdict_for(shapes, {"ss_base_model_version": "sdxl_base_v1-0"}).family == "sdxl"


def test_sd3_joint_blocks() -> None:
    shapes = merge(
        lora("lora_unet_joint_blocks_0_x_block_attn_qkv", 1536, 4608),
        lora("lora_unet_joint_blocks_23_context_block_attn_proj", 1536, 1536),
    )
    verdict = verdict_for(shapes)
    assert verdict.family == "sd3"
    assert verdict.evidence == ["2 MMDiT joint blocks, hidden 1536: SD3"]


def test_sd3_diffusers_double_stream_at_sd3_width() -> None:
    shapes = merge(
        peft("transformer.transformer_blocks.0.attn.to_q", 2432, 2432),
        peft("transformer.transformer_blocks.0.attn.add_q_proj", 2432, 2432),
        peft("transformer.transformer_blocks.37.norm1_context.linear", 2432, 14592),
    )
    assert verdict_for(shapes).family == "sd3"


def test_flux2_from_its_names() -> None:
    shapes = merge(
        peft("transformer.transformer_blocks.0.attn.to_q", 6144, 6144),
        peft("transformer.transformer_blocks.0.ff.linear_in", 6144, 36864),
        peft("transformer.single_transformer_blocks.0.attn.to_qkv_mlp_proj", 6144, 55296),
    )
    verdict = verdict_for(shapes)
    assert verdict.family == "flux2"
    assert "FLUX.2 names" in verdict.evidence[0]


def test_flux2_bfl_names_by_mlp_ratio() -> None:
    shapes = merge(
        lora("lora_unet_double_blocks_0_img_attn_qkv", 3072, 9216),
        lora("lora_unet_double_blocks_0_img_mlp_0", 3072, 18432),
        lora("lora_unet_single_blocks_0_linear1", 3072, 27648),
    )
    verdict = verdict_for(shapes)
    assert verdict.family == "flux2"
    assert "SwiGLU MLP ratio 3" in verdict.evidence[0]


def test_qwen_image_depth_beyond_flux() -> None:
    shapes = merge(
        peft("transformer.transformer_blocks.0.attn.to_q", 3072, 3072),
        peft("transformer.transformer_blocks.59.attn.add_k_proj", 3072, 3072),
    )
    assert verdict_for(shapes).family == "qwen-image"


def test_cosmos_names_with_qwen3_text_encoder_are_anima() -> None:
    shapes = merge(
        lora("lora_unet_blocks_0_self_attn_q_proj", 2048, 2048),
        lora("lora_te_layers_0_self_attn_q_proj", 1024, 2048),
        lora("lora_te_layers_0_mlp_gate_proj", 1024, 3072),
    )
    verdict = verdict_for(shapes)
    assert verdict.family == "anima"
    assert not any(sentence.startswith("against") for sentence in verdict.evidence)


def test_family_ids_are_the_documented_ones() -> None:
    assert set(FAMILIES) == {"sd1", "sd2", "sdxl", "sd3", "flux1", "flux2", "qwen-image", "anima", "krea2", "unknown"}
