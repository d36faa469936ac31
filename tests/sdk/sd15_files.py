"""A small SD 1.5 kohya LoRA at real module names and shapes, cut from the example adapter.

The example adapter (``lorahub.dev.example_lora``) stores ``proj_in``/``proj_out`` as Linear factors, but SD 1.5's
UNet has them as 1×1 convolutions (``use_linear_projection=False``), so diffusers refuses to load them into a real
SD 1.5 UNet. Here they are reshaped to the ``[r, c, 1, 1]`` / ``[c, r, 1, 1]`` factors kohya writes for SD 1.5.
A handful of modules (the first attention block at 320 and at 640 channels, one text-encoder layer) keeps every
conversion's ΔW check quick while covering linear, 1×1-conv and text-encoder modules.
"""

from __future__ import annotations

from pathlib import Path

from lorahub.dev.example_lora import write_example_lora
from lorahub.files.safetensors import SafetensorsFile, write

KEPT_MODULES = (
    "lora_unet_down_blocks_0_attentions_0_",
    "lora_unet_down_blocks_1_attentions_0_",
    "lora_te_text_model_encoder_layers_0_",
)
STALE_CLAIMS = ("sshs_model_hash", "sshs_legacy_hash", "modelspec.hash_sha256")


def write_sd15_lora(path: Path, *, name: str = "ink", seed: int = 0, rank: int = 2) -> Path:
    full = path.with_name(f".full-{path.name}")
    write_example_lora(full, rank=rank, seed=seed, name=name)
    tensors: dict[str, tuple[str, tuple[int, ...], bytes]] = {}
    with SafetensorsFile(full) as source:
        infos = source.header.tensors
        for key in infos:
            if not key.startswith(KEPT_MODULES):
                continue
            shape = infos[key].shape
            if ("_proj_in." in key or "_proj_out." in key) and len(shape) == 2:
                shape = (*shape, 1, 1)
            tensors[key] = (infos[key].dtype, shape, bytes(source.raw(key)))
        metadata = {k: v for k, v in source.metadata.items() if k not in STALE_CLAIMS}
    full.unlink()
    write(path, tensors, metadata)
    return path
