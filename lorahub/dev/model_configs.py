"""Real model geometries as data: the configs of SD 1.5, SD 2.1 and SDXL UNets, their text encoders and FLUX.1's
transformer.

Tests build models from them on torch's ``meta`` device (names and shapes, no weights) and benchmarks build them
with random weights; nothing is downloaded. Values are those of the published ``config.json`` files that differ from
diffusers' and transformers' defaults.
"""

from __future__ import annotations

from typing import Any

SD15_UNET: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}
"""``runwayml/stable-diffusion-v1-5`` ``unet/config.json``."""

SD21_UNET: dict[str, Any] = {
    **SD15_UNET,
    "sample_size": 96,
    "cross_attention_dim": 1024,
    "attention_head_dim": [5, 10, 20, 20],
    "use_linear_projection": True,
}
"""``stabilityai/stable-diffusion-2-1`` ``unet/config.json``."""

SDXL_UNET: dict[str, Any] = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [320, 640, 1280],
    "layers_per_block": 2,
    "transformer_layers_per_block": [1, 2, 10],
    "attention_head_dim": [5, 10, 20],
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}
"""``stabilityai/stable-diffusion-xl-base-1.0`` ``unet/config.json``."""

CLIP_L: dict[str, Any] = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
}
"""CLIP ViT-L/14's text tower (SD 1.x, SDXL's first encoder)."""

FLUX1_DEV_TRANSFORMER: dict[str, Any] = {"guidance_embeds": True}
"""``black-forest-labs/FLUX.1-dev`` ``transformer/config.json`` (19 double and 38 single blocks, 3072 wide: diffusers'
defaults are FLUX.1's geometry; FLUX.1-dev adds the guidance embedding that schnell lacks)."""
