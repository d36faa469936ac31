"""A tiny SD1.5-shaped pipeline built from configs (``lorahub.dev.tiny_pipeline``), kohya adapters for it, and its
diffusers → LDM single-file key mapping (checked against diffusers' own LDM → diffusers converter)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lorahub.adapters import name_tables as t
from lorahub.merge.layouts import unet_spec_from_diffusers


def pipeline(seed: int = 0) -> Any:
    """The tiny SD1.5-shaped pipeline of ``lorahub dev tiny-pipeline``, seeded."""
    from lorahub.dev.tiny_pipeline import build_tiny_pipeline

    return build_tiny_pipeline("sd1", seed)


def image(pipe: Any) -> Any:
    import torch

    generator = torch.Generator().manual_seed(0)
    return pipe(
        "a photo of a cat", num_inference_steps=2, height=64, width=64, output_type="np", generator=generator
    ).images


# --- kohya adapters --------------------------------------------------------------------------------------------------

UNET_TARGETS = (
    "down_blocks.0.attentions.0.proj_in",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_v",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k",
    "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj",
    "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2",
    "mid_block.attentions.0.transformer_blocks.0.attn2.to_q",
    "up_blocks.1.attentions.1.transformer_blocks.0.attn1.to_v",
    "up_blocks.1.attentions.0.proj_out",
)
TE_TARGETS = (
    "text_model.encoder.layers.0.self_attn.q_proj",
    "text_model.encoder.layers.1.self_attn.out_proj",
    "text_model.encoder.layers.1.mlp.fc1",
)


def kohya_adapter(
    pipe: Any,
    path: Path,
    *,
    seed: int = 1,
    rank: int = 4,
    alpha: float = 2.0,
    unet_targets: tuple[str, ...] = UNET_TARGETS,
    te_targets: tuple[str, ...] = TE_TARGETS,
    extra: dict[str, np.ndarray] | None = None,
) -> Path:
    """A kohya LoRA (fp32) for modules of the tiny pipeline: 1×1 conv LoRA for conv modules, random up/down."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    modules = dict(pipe.unet.named_modules())
    te_modules = {f"text_model.{k}": v for k, v in pipe.text_encoder.named_modules()}
    tensors: dict[str, np.ndarray] = {}
    for prefix, targets, table in (("lora_unet", unet_targets, modules), ("lora_te", te_targets, te_modules)):
        for target in targets:
            module = table[target]
            weight = module.weight.detach().numpy()
            key = f"{prefix}_{target.replace('.', '_')}"
            tail = (1, 1) if weight.ndim == 4 else ()
            tensors[f"{key}.lora_down.weight"] = (rng.standard_normal((rank, weight.shape[1], *tail)) * 0.2).astype(
                np.float32
            )
            tensors[f"{key}.lora_up.weight"] = (rng.standard_normal((weight.shape[0], rank, *tail)) * 0.2).astype(
                np.float32
            )
            tensors[f"{key}.alpha"] = np.array(alpha, dtype=np.float32)
    tensors.update(extra or {})
    save_file(tensors, str(path), metadata={"ss_network_module": "networks.lora", "ss_base_model_version": "sd_v1"})
    return path


# --- diffusers → LDM single file -------------------------------------------------------------------------------------

_TOP = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
}
_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}


def ldm_unet_key(key: str, blocks: dict[str, tuple[str, str]]) -> str:
    """One diffusers UNet key in SGM spelling (every tensor, norms included), from name_tables' block map."""
    module, _, leaf = key.rpartition(".")
    for name, sgm in _TOP.items():
        if module == name:
            return f"{sgm}.{leaf}"
    for block, (sgm, kind) in blocks.items():
        if module == block:  # samplers: the block is the conv itself
            return f"{sgm}.{leaf}"
        if module.startswith(block + "."):
            inner = module.removeprefix(block + ".")
            return f"{sgm}.{_RESNET[inner] if kind == 'resnet' else inner}.{leaf}"
    raise KeyError(key)


def ldm_state_dict(pipe: Any) -> dict[str, Any]:
    """The pipeline's UNet and text encoder as an SD1 single file (``model.diffusion_model.``,
    ``cond_stage_model.transformer.text_model.``)."""
    unet = {k: v.detach().clone() for k, v in pipe.unet.state_dict().items()}
    spec = unet_spec_from_diffusers({k: _Info(tuple(v.shape)) for k, v in unet.items()})  # type: ignore[misc]
    blocks = {block: (sgm, kind) for block, sgm, kind, _ in t.block_map(spec)}
    out = {f"model.diffusion_model.{ldm_unet_key(k, blocks)}": v for k, v in unet.items()}
    for key, value in pipe.text_encoder.state_dict().items():
        path = key if key.startswith("text_model.") else f"text_model.{key}"
        out[f"cond_stage_model.transformer.{path}"] = value.detach().clone()
    return out


class _Info:
    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape
