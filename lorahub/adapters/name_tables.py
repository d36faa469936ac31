"""Module-name tables for the SD 1.x/2.x and SDXL UNets and their CLIP text encoders, as plain data.

Why data and not the models: the registry must name modules on machines without torch/diffusers, and kohya
names replace every ``.`` with ``_`` so they can only be mapped back by looking them up in the set of real module
paths. These tables are that set. ``tests/adapters/test_names.py`` checks them against the diffusers/transformers
models built on the ``meta`` device from the real configs.

Every function here returns pairs ``(diffusers path, SGM path)`` inside one component (no ``unet.`` prefix); the
SGM path is the name in the original Stability (ldm/sgm) UNet that kohya's SDXL trainer, A1111 and ComfyUI use.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class UNetSpec:
    """The parts of a diffusers ``UNet2DConditionModel`` config that decide its module names."""

    block_out_channels: tuple[int, ...]
    down_transformer_layers: tuple[int, ...]  # 0 = the block has no attention (DownBlock2D / UpBlock2D)
    mid_transformer_layers: int
    layers_per_block: int = 2
    add_embedding: bool = False  # SDXL's added-conditioning MLP (``addition_embed_type="text_time"``)


# SD 1.x and 2.x share the module tree (SD 2 only switches proj_in/proj_out from 1×1 Conv2d to Linear).
SD1_UNET = UNetSpec(
    block_out_channels=(320, 640, 1280, 1280), down_transformer_layers=(1, 1, 1, 0), mid_transformer_layers=1
)
SDXL_UNET = UNetSpec(
    block_out_channels=(320, 640, 1280),
    down_transformer_layers=(0, 2, 10),
    mid_transformer_layers=10,
    add_embedding=True,
)


@dataclass(frozen=True)
class TextEncoderSpec:
    """A CLIP text encoder: how many layers, and whether it has the ``text_projection`` Linear."""

    layers: int
    projection: bool = False


CLIP_L = TextEncoderSpec(layers=12)
# SD 2.x ships OpenCLIP-H with its last layer removed (diffusers/sd-scripts config ``num_hidden_layers=23``).
OPENCLIP_H_SD2 = TextEncoderSpec(layers=23)
OPENCLIP_G = TextEncoderSpec(layers=32, projection=True)

# family → component → text encoder
TEXT_ENCODERS: dict[str, dict[str, TextEncoderSpec]] = {
    "sd1": {"text_encoder": CLIP_L},
    "sd2": {"text_encoder": OPENCLIP_H_SD2},
    "sdxl": {"text_encoder": CLIP_L, "text_encoder_2": OPENCLIP_G},
}
UNETS: dict[str, UNetSpec] = {"sd1": SD1_UNET, "sd2": SD1_UNET, "sdxl": SDXL_UNET}

# ResnetBlock2D sub-layers: diffusers name → SGM name (A1111 ``convert_diffusers_name_to_compvis``).
RESNET_SGM: dict[str, str] = {
    "conv1": "in_layers.2",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
# Modules outside the block structure: diffusers → SGM.
TOP_LEVEL_SGM: dict[str, str] = {
    "conv_in": "input_blocks.0.0",
    "conv_out": "out.2",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
}
ADD_EMBEDDING_SGM: dict[str, str] = {
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
}
ATTENTION_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")
CLIP_LAYER_LINEARS = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.out_proj",
    "mlp.fc1",
    "mlp.fc2",
)


def transformer_linears(layers: int) -> Iterator[str]:
    """Linear/Conv2d paths inside one Transformer2DModel (identical in diffusers and SGM)."""
    yield "proj_in"
    yield "proj_out"
    for t in range(layers):
        for attn in ("attn1", "attn2"):
            for proj in ATTENTION_PROJECTIONS:
                yield f"transformer_blocks.{t}.{attn}.{proj}"
        yield f"transformer_blocks.{t}.ff.net.0.proj"
        yield f"transformer_blocks.{t}.ff.net.2"


def resnet_layers(has_shortcut: bool) -> Iterator[tuple[str, str]]:
    """(diffusers, SGM) sub-layer names of one ResnetBlock2D; the 1×1 shortcut exists only when channels change."""
    for name, sgm in RESNET_SGM.items():
        if name != "conv_shortcut" or has_shortcut:
            yield name, sgm


def down_block_map(spec: UNetSpec) -> Iterator[tuple[str, str, str, int]]:
    """(diffusers block, SGM block, kind, transformer layers) for every down-path sub-block.

    kind is ``resnet``/``attention``/``downsampler``; SGM ``input_blocks.{1+(L+1)b+i}`` holds resnet ``.0`` and
    attention ``.1``, the downsampler is ``input_blocks.{(L+1)(b+1)}.0.op``.
    """
    n = len(spec.block_out_channels)
    stride = spec.layers_per_block + 1
    for b, layers in enumerate(spec.down_transformer_layers):
        for i in range(spec.layers_per_block):
            sgm = f"input_blocks.{1 + stride * b + i}"
            yield f"down_blocks.{b}.resnets.{i}", f"{sgm}.0", "resnet", 0
            if layers:
                yield f"down_blocks.{b}.attentions.{i}", f"{sgm}.1", "attention", layers
        if b < n - 1:
            yield f"down_blocks.{b}.downsamplers.0.conv", f"input_blocks.{stride * (b + 1)}.0.op", "downsampler", 0


def mid_block_map(spec: UNetSpec) -> Iterator[tuple[str, str, str, int]]:
    """The mid block: ``middle_block.0/1/2`` = resnet 0, attention 0, resnet 1."""
    yield "mid_block.resnets.0", "middle_block.0", "resnet", 0
    yield "mid_block.attentions.0", "middle_block.1", "attention", spec.mid_transformer_layers
    yield "mid_block.resnets.1", "middle_block.2", "resnet", 0


def up_block_map(spec: UNetSpec) -> Iterator[tuple[str, str, str, int]]:
    """Up-path sub-blocks: ``output_blocks.{(L+1)b+i}``; the upsampler conv follows the attention (or the resnet)."""
    n = len(spec.block_out_channels)
    stride = spec.layers_per_block + 1
    for b, layers in enumerate(reversed(spec.down_transformer_layers)):
        for i in range(stride):
            sgm = f"output_blocks.{stride * b + i}"
            yield f"up_blocks.{b}.resnets.{i}", f"{sgm}.0", "resnet", 0
            if layers:
                yield f"up_blocks.{b}.attentions.{i}", f"{sgm}.1", "attention", layers
        if b < n - 1:
            slot = 2 if layers else 1
            yield (
                f"up_blocks.{b}.upsamplers.0.conv",
                f"output_blocks.{stride * b + stride - 1}.{slot}.conv",
                "upsampler",
                0,
            )


def _down_resnet_has_shortcut(spec: UNetSpec, block: str) -> bool:
    """A down resnet has a shortcut when its input width differs: only the first resnet of a wider block."""
    parts = block.split(".")
    b, i = int(parts[1]), int(parts[3])
    channels = spec.block_out_channels
    return i == 0 and b > 0 and channels[b - 1] != channels[b]


def block_map(spec: UNetSpec) -> Iterator[tuple[str, str, str, int]]:
    """The full SGM ↔ diffusers block table: down, mid, up."""
    yield from down_block_map(spec)
    yield from mid_block_map(spec)
    yield from up_block_map(spec)


def unet_modules(spec: UNetSpec) -> Iterator[tuple[str, str]]:
    """(diffusers path, SGM path) of every Linear/Conv2d in the UNet."""
    top = dict(TOP_LEVEL_SGM)
    if spec.add_embedding:
        top.update(ADD_EMBEDDING_SGM)
    yield from top.items()
    for block, sgm, kind, layers in block_map(spec):
        if kind == "attention":
            for inner in transformer_linears(layers):
                yield f"{block}.{inner}", f"{sgm}.{inner}"
        elif kind == "resnet":
            # up resnets concatenate the skip connection, so their input width always differs
            shortcut = block.startswith("up_blocks") or (
                block.startswith("down_blocks") and _down_resnet_has_shortcut(spec, block)
            )
            for inner, sgm_inner in resnet_layers(shortcut):
                yield f"{block}.{inner}", f"{sgm}.{sgm_inner}"
        else:
            yield block, sgm


def text_encoder_modules(spec: TextEncoderSpec) -> Iterator[str]:
    """Linear paths of a CLIP text encoder, in the ``text_model.`` form (transformers < 5 and kohya)."""
    for layer in range(spec.layers):
        for linear in CLIP_LAYER_LINEARS:
            yield f"text_model.encoder.layers.{layer}.{linear}"
    if spec.projection:
        yield "text_projection"
