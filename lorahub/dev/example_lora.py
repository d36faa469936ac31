"""A kohya-format SD 1.5 LoRA at real module names and shapes, with random weights (numpy, no torch).

Used by the quickstart and the tests, so both work offline on a fresh machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator

import numpy as np

from lorahub.files.safetensors import write

SD15_BLOCK_CHANNELS = (320, 640, 1280)
SD15_CONTEXT = 768
SD15_CONV_PROJECTIONS = (".proj_in", ".proj_out")
CLIP_L_WIDTH = 768
CLIP_L_LAYERS = 12


def sd15_unet_linears() -> Iterator[tuple[str, int, int]]:
    """(diffusers module path, in, out) of every Linear kohya's default LoRA targets in the SD 1.5 UNet."""
    blocks = [(f"down_blocks.{b}.attentions.{a}", c) for b, c in enumerate(SD15_BLOCK_CHANNELS) for a in range(2)]
    blocks.append(("mid_block.attentions.0", 1280))
    up_channels = tuple(reversed(SD15_BLOCK_CHANNELS))
    blocks += [(f"up_blocks.{b + 1}.attentions.{a}", c) for b, c in enumerate(up_channels) for a in range(3)]
    for prefix, c in blocks:
        yield f"{prefix}.proj_in", c, c
        yield f"{prefix}.proj_out", c, c
        block = f"{prefix}.transformer_blocks.0"
        for attn, context in (("attn1", c), ("attn2", SD15_CONTEXT)):
            yield f"{block}.{attn}.to_q", c, c
            yield f"{block}.{attn}.to_k", context, c
            yield f"{block}.{attn}.to_v", context, c
            yield f"{block}.{attn}.to_out.0", c, c
        yield f"{block}.ff.net.0.proj", c, 8 * c
        yield f"{block}.ff.net.2", 4 * c, c


def clip_l_linears() -> Iterator[tuple[str, int, int]]:
    for layer in range(CLIP_L_LAYERS):
        prefix = f"text_model.encoder.layers.{layer}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            yield f"{prefix}.self_attn.{proj}", CLIP_L_WIDTH, CLIP_L_WIDTH
        yield f"{prefix}.mlp.fc1", CLIP_L_WIDTH, 4 * CLIP_L_WIDTH
        yield f"{prefix}.mlp.fc2", 4 * CLIP_L_WIDTH, CLIP_L_WIDTH


def write_example_lora(
    path: str | os.PathLike[str],
    *,
    rank: int = 4,
    alpha: float = 2.0,
    seed: int = 0,
    name: str = "example",
    text_encoder: bool = True,
) -> None:
    """Write the file with ``ss_*`` metadata and a correct ``sshs_model_hash`` claim (``text_encoder=False``: the
    UNet modules only, as kohya's ``--network_train_unet_only`` writes)."""
    rng = np.random.default_rng(seed)
    tensors: dict[str, tuple[str, tuple[int, ...], bytes]] = {}
    modules = [("lora_unet", *m) for m in sd15_unet_linears()]
    modules += [("lora_te", *m) for m in clip_l_linears()] if text_encoder else []
    for prefix, module, fan_in, fan_out in modules:
        key = f"{prefix}_{module.replace('.', '_')}"
        down = (rng.standard_normal((rank, fan_in)) / np.sqrt(fan_in)).astype(np.float16)
        up = (rng.standard_normal((fan_out, rank)) * 0.01).astype(np.float16)
        if module.endswith(SD15_CONV_PROJECTIONS):  # 1×1 Conv2d in SD 1.5: kohya keeps the conv shape
            down, up = down[:, :, None, None], up[:, :, None, None]
        tensors[f"{key}.lora_down.weight"] = ("F16", down.shape, down.tobytes())
        tensors[f"{key}.lora_up.weight"] = ("F16", up.shape, up.tobytes())
        tensors[f"{key}.alpha"] = ("F16", (), np.float16(alpha).tobytes())
    data_hash = hashlib.sha256()
    for key in sorted(tensors):  # the writer lays tensors out in name order
        data_hash.update(tensors[key][2])
    metadata = {
        "ss_output_name": name,
        "ss_base_model_version": "sd_v1",
        "ss_v2": "False",
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(alpha),
        "ss_training_started_at": str(time.time()),
        "ss_tag_frequency": json.dumps({"10_example": {"example": 10, "pixel art": 7}}),
        "ss_dataset_dirs": json.dumps({"10_example": {"n_repeats": 10, "img_count": 12}}),
        "modelspec.architecture": "stable-diffusion-v1/lora",
        "modelspec.title": name,
        "sshs_model_hash": data_hash.hexdigest(),
    }
    write(path, tensors, metadata)
