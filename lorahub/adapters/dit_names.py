"""Module names of SD3/3.5, FLUX.1/2 and Qwen-Image adapters: native (BFL / MMDiT) names ↔ diffusers paths, as data.

kohya (``lora_unet_double_blocks_0_img_attn_qkv``), ComfyUI (``diffusion_model.double_blocks.0.img_attn.qkv``) and
ai-toolkit's FLUX files name the modules of the *original* models (BFL's ``flux/model.py``, Stability's MMDiT), while
diffusers splits some of them: FLUX's ``img_attn.qkv`` is ``attn.to_q/to_k/to_v``, ``single_blocks.N.linear1`` is
``attn.to_q/to_k/to_v`` + ``proj_mlp``, SD3's ``x_block.attn.qkv`` is ``attn.to_q/to_k/to_v``. The canonical name is the
diffusers path (docs/concepts/architecture.md, decision 1), so one native module may hold several canonical layers: a
:class:`Native` entry lists them in output-row order with their relative widths (``ratios``: q, k, v are one hidden
width each, FLUX's MLP four), which is all :mod:`lorahub.adapters.fused` needs to split or fuse at any model size.

Two modules also differ in row order (``swap``): the final ``adaLN_modulation`` computes ``[shift, scale]`` where
diffusers' ``AdaLayerNormContinuous`` (``norm_out.linear``) expects ``[scale, shift]`` — for FLUX and SD3 — and so
does SD3's last ``context_block`` (``pre_only``: its modulation is ``[shift, scale]``, 2 × hidden rows, where every
other block has 6). diffusers' single-file converters (``convert_flux_transformer_checkpoint_to_diffusers``,
``convert_sd3_transformer_checkpoint_to_diffusers``) apply ``swap_scale_shift`` to exactly these; the SD3 last block
is recognised by its shape (rows = 2 × input width), so no model depth is assumed.

Sources: sd-scripts ``networks/lora_flux.py`` and ``networks/lora_sd3.py`` (kohya FLUX/SD3 naming, text encoders
``lora_te1`` CLIP-L, ``lora_te2`` CLIP-G (SD3), ``lora_te3`` T5-XXL; OneTrainer also puts FLUX's T5 at
``lora_te2``), diffusers' ``_convert_kohya_flux_lora_to_diffusers`` (kohya FLUX names, and the ComfyUI-saved
``text_encoders.clip_l.transformer.`` / ``text_encoders.t5xxl.transformer.``), diffusers'
``_convert_mixture_state_dict_to_diffusers`` (OneTrainer ``lora_transformer_<diffusers path>``). ComfyUI's spelling
for CLIP-G is not confirmed there, so SD3's ``text_encoder_2`` has no ComfyUI name (as for SDXL in
:mod:`lorahub.adapters.names`). Tables are checked against the diffusers/transformers models on the meta device in
``tests/adapters/test_dit_names.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

from lorahub.adapters.name_tables import CLIP_L, OPENCLIP_G, TextEncoderSpec, text_encoder_modules

__all__ = ["FAMILIES", "Native", "inventory", "lookup", "native_of", "written_name"]

FAMILIES = ("sd3", "flux1", "flux2", "qwen-image")
NATIVE_FORMATS = ("kohya", "comfyui", "bfl-control")
"""Formats that spell native (BFL/MMDiT) names; ``diffusers`` spells the canonical paths themselves. ``bfl-control``
is the bare native path (BFL's FLUX Control LoRAs, ``double_blocks.0.img_attn.qkv``)."""

# --- transformer tables: (native path, diffusers paths, ratios, swap) --------------------------------------------

Row = tuple[str, tuple[str, ...], tuple[int, ...], str]
QKV = (1, 1, 1)
ONE = (1,)

FLUX_TOP: tuple[Row, ...] = (
    ("img_in", ("x_embedder",), ONE, ""),
    ("txt_in", ("context_embedder",), ONE, ""),
    ("time_in.in_layer", ("time_text_embed.timestep_embedder.linear_1",), ONE, ""),
    ("time_in.out_layer", ("time_text_embed.timestep_embedder.linear_2",), ONE, ""),
    ("vector_in.in_layer", ("time_text_embed.text_embedder.linear_1",), ONE, ""),
    ("vector_in.out_layer", ("time_text_embed.text_embedder.linear_2",), ONE, ""),
    ("guidance_in.in_layer", ("time_text_embed.guidance_embedder.linear_1",), ONE, ""),
    ("guidance_in.out_layer", ("time_text_embed.guidance_embedder.linear_2",), ONE, ""),
    ("final_layer.linear", ("proj_out",), ONE, ""),
    ("final_layer.adaLN_modulation.1", ("norm_out.linear",), ONE, "always"),
)
FLUX_DOUBLE: tuple[Row, ...] = (
    ("img_mod.lin", ("norm1.linear",), ONE, ""),
    ("img_attn.qkv", ("attn.to_q", "attn.to_k", "attn.to_v"), QKV, ""),
    ("img_attn.proj", ("attn.to_out.0",), ONE, ""),
    ("img_mlp.0", ("ff.net.0.proj",), ONE, ""),
    ("img_mlp.2", ("ff.net.2",), ONE, ""),
    ("txt_mod.lin", ("norm1_context.linear",), ONE, ""),
    ("txt_attn.qkv", ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"), QKV, ""),
    ("txt_attn.proj", ("attn.to_add_out",), ONE, ""),
    ("txt_mlp.0", ("ff_context.net.0.proj",), ONE, ""),
    ("txt_mlp.2", ("ff_context.net.2",), ONE, ""),
)
FLUX_MLP_RATIO = 4
"""FLUX.1's ``mlp_ratio`` (BFL ``FluxParams``; diffusers hard-codes 4.0): ``linear1`` is q, k, v and a 4× MLP."""
FLUX_SINGLE: tuple[Row, ...] = (
    ("linear1", ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"), (1, 1, 1, FLUX_MLP_RATIO), ""),
    ("linear2", ("proj_out",), ONE, ""),
    ("modulation.lin", ("norm.linear",), ONE, ""),
)
FLUX_DOUBLE_NORMS: tuple[Row, ...] = (
    ("img_attn.norm.query_norm", ("attn.norm_q",), ONE, ""),
    ("img_attn.norm.key_norm", ("attn.norm_k",), ONE, ""),
    ("txt_attn.norm.query_norm", ("attn.norm_added_q",), ONE, ""),
    ("txt_attn.norm.key_norm", ("attn.norm_added_k",), ONE, ""),
)
FLUX_SINGLE_NORMS: tuple[Row, ...] = (
    ("norm.query_norm", ("attn.norm_q",), ONE, ""),
    ("norm.key_norm", ("attn.norm_k",), ONE, ""),
)
"""FLUX's QK-norm scales (BFL ``QKNorm``, diffusers ``RMSNorm``), which BFL Control LoRAs replace whole: named (as
diffusers' ``_convert_bfl_flux_control_lora_to_diffusers`` names them) but not in the inventory of LoRA targets."""
FLUX_DEPTH = (19, 38)
"""FLUX.1 dev/schnell: 19 double and 38 single blocks."""

SD3_TOP: tuple[Row, ...] = (
    ("x_embedder.proj", ("pos_embed.proj",), ONE, ""),
    ("context_embedder", ("context_embedder",), ONE, ""),
    ("t_embedder.mlp.0", ("time_text_embed.timestep_embedder.linear_1",), ONE, ""),
    ("t_embedder.mlp.2", ("time_text_embed.timestep_embedder.linear_2",), ONE, ""),
    ("y_embedder.mlp.0", ("time_text_embed.text_embedder.linear_1",), ONE, ""),
    ("y_embedder.mlp.2", ("time_text_embed.text_embedder.linear_2",), ONE, ""),
    ("final_layer.linear", ("proj_out",), ONE, ""),
    ("final_layer.adaLN_modulation.1", ("norm_out.linear",), ONE, "always"),
)
SD3_BLOCK: tuple[Row, ...] = (
    ("x_block.attn.qkv", ("attn.to_q", "attn.to_k", "attn.to_v"), QKV, ""),
    ("x_block.attn.proj", ("attn.to_out.0",), ONE, ""),
    ("x_block.attn2.qkv", ("attn2.to_q", "attn2.to_k", "attn2.to_v"), QKV, ""),  # SD3.5 Medium (dual attention)
    ("x_block.attn2.proj", ("attn2.to_out.0",), ONE, ""),
    ("x_block.mlp.fc1", ("ff.net.0.proj",), ONE, ""),
    ("x_block.mlp.fc2", ("ff.net.2",), ONE, ""),
    ("x_block.adaLN_modulation.1", ("norm1.linear",), ONE, ""),
    ("context_block.attn.qkv", ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"), QKV, ""),
    ("context_block.attn.proj", ("attn.to_add_out",), ONE, ""),
    ("context_block.mlp.fc1", ("ff_context.net.0.proj",), ONE, ""),
    ("context_block.mlp.fc2", ("ff_context.net.2",), ONE, ""),
    ("context_block.adaLN_modulation.1", ("norm1_context.linear",), ONE, "pre-only"),
)
SD3_DEPTH = 38
"""The union of SD3 Medium / SD3.5 Medium (24 blocks) and SD3.5 Large (38): names do not depend on depth."""

FLUX2_TOP: tuple[Row, ...] = (
    ("img_in", ("x_embedder",), ONE, ""),
    ("txt_in", ("context_embedder",), ONE, ""),
    ("time_in.in_layer", ("time_guidance_embed.timestep_embedder.linear_1",), ONE, ""),
    ("time_in.out_layer", ("time_guidance_embed.timestep_embedder.linear_2",), ONE, ""),
    ("guidance_in.in_layer", ("time_guidance_embed.guidance_embedder.linear_1",), ONE, ""),
    ("guidance_in.out_layer", ("time_guidance_embed.guidance_embedder.linear_2",), ONE, ""),
    ("double_stream_modulation_img.lin", ("double_stream_modulation_img.linear",), ONE, ""),
    ("double_stream_modulation_txt.lin", ("double_stream_modulation_txt.linear",), ONE, ""),
    ("single_stream_modulation.lin", ("single_stream_modulation.linear",), ONE, ""),
    ("final_layer.linear", ("proj_out",), ONE, ""),
    ("final_layer.adaLN_modulation.1", ("norm_out.linear",), ONE, "always"),
)
FLUX2_DOUBLE: tuple[Row, ...] = (
    ("img_attn.qkv", ("attn.to_q", "attn.to_k", "attn.to_v"), QKV, ""),
    ("img_attn.proj", ("attn.to_out.0",), ONE, ""),
    ("img_mlp.0", ("ff.linear_in",), ONE, ""),
    ("img_mlp.2", ("ff.linear_out",), ONE, ""),
    ("txt_attn.qkv", ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"), QKV, ""),
    ("txt_attn.proj", ("attn.to_add_out",), ONE, ""),
    ("txt_mlp.0", ("ff_context.linear_in",), ONE, ""),
    ("txt_mlp.2", ("ff_context.linear_out",), ONE, ""),
)
FLUX2_SINGLE: tuple[Row, ...] = (
    ("linear1", ("attn.to_qkv_mlp_proj",), ONE, ""),
    ("linear2", ("attn.to_out",), ONE, ""),
)
FLUX2_DEPTH = (8, 48)
"""FLUX.2 (diffusers ``Flux2Transformer2DModel``; BFL names as ai-toolkit, kohya/musubi-tuner and ComfyUI write them,
diffusers' ``_convert_non_diffusers_flux2_lora_to_diffusers``): dev's 8 double and 48 single blocks, the union of the
klein sizes. Modulation is shared by all blocks; ``linear1`` stays fused in diffusers too (``to_qkv_mlp_proj``); the
final modulation's ``[shift, scale]`` rows are swapped as diffusers' single-file converter swaps them (its LoRA
converter does not, which puts a LoRA on ``final_layer.adaLN_modulation.1`` on the wrong rows)."""

QWEN_TOP: tuple[Row, ...] = tuple(
    (path, (path,), ONE, "")
    for path in (
        "img_in", "txt_in", "time_text_embed.timestep_embedder.linear_1",
        "time_text_embed.timestep_embedder.linear_2", "norm_out.linear", "proj_out",
    )
)  # fmt: skip
QWEN_BLOCK: tuple[Row, ...] = tuple(
    (path, (path,), ONE, "")
    for path in (
        "img_mod.1", "txt_mod.1", "attn.to_q", "attn.to_k", "attn.to_v", "attn.add_q_proj", "attn.add_k_proj",
        "attn.add_v_proj", "attn.to_out.0", "attn.to_add_out", "img_mlp.net.0.proj", "img_mlp.net.2",
        "txt_mlp.net.0.proj", "txt_mlp.net.2",
    )
)  # fmt: skip
QWEN_DEPTH = 60
"""Qwen-Image (diffusers ``QwenImageTransformer2DModel``): 60 double-stream blocks. Its trainers name the diffusers
modules themselves (musubi-tuner ``lora_unet_transformer_blocks_0_attn_to_q``, ai-toolkit and ComfyUI
``diffusion_model.transformer_blocks.0.attn.to_q``, diffusers ``transformer.…``): nothing is fused or swapped, so
every row is one layer under its own path."""

# --- text encoders -----------------------------------------------------------------------------------------------

T5_LAYERS = 24
T5_LINEARS = (
    "layer.0.SelfAttention.q",
    "layer.0.SelfAttention.k",
    "layer.0.SelfAttention.v",
    "layer.0.SelfAttention.o",
    "layer.1.DenseReluDense.wi_0",
    "layer.1.DenseReluDense.wi_1",
    "layer.1.DenseReluDense.wo",
)
"""T5 v1.1 (XXL) encoder blocks: attention and the gated-GELU MLP (transformers ``T5EncoderModel`` paths)."""


def t5_modules(layers: int = T5_LAYERS) -> Iterator[str]:
    for block in range(layers):
        for linear in T5_LINEARS:
            yield f"encoder.block.{block}.{linear}"


@dataclass(frozen=True)
class Encoder:
    """One text encoder of a family: canonical component, module paths, kohya prefixes (written first), ComfyUI
    prefix (None when unconfirmed)."""

    component: str
    paths: tuple[str, ...]
    kohya: tuple[str, ...]
    comfyui: str | None


CLIP_L_PROJECTED = TextEncoderSpec(layers=CLIP_L.layers, projection=True)
"""SD3 loads CLIP-L as ``CLIPTextModelWithProjection``."""
_COMFY_CLIP_L = "text_encoders.clip_l.transformer."
_COMFY_T5 = "text_encoders.t5xxl.transformer."

ENCODERS: dict[str, tuple[Encoder, ...]] = {
    "flux1": (
        Encoder("text_encoder", tuple(text_encoder_modules(CLIP_L)), ("lora_te1", "lora_te"), _COMFY_CLIP_L),
        Encoder("text_encoder_2", tuple(t5_modules()), ("lora_te3", "lora_te2"), _COMFY_T5),
    ),
    "sd3": (
        Encoder("text_encoder", tuple(text_encoder_modules(CLIP_L_PROJECTED)), ("lora_te1",), _COMFY_CLIP_L),
        Encoder("text_encoder_2", tuple(text_encoder_modules(OPENCLIP_G)), ("lora_te2",), None),
        Encoder("text_encoder_3", tuple(t5_modules()), ("lora_te3", "lora_te2"), _COMFY_T5),
    ),
    "flux2": (),
    "qwen-image": (),
}
"""Canonical components follow the diffusers pipelines: FLUX's T5 is ``text_encoder_2``, SD3's ``text_encoder_3``."""


# --- the maps ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Native:
    """One module as a native-named file spells it, and the canonical layer(s) it holds.

    ``path`` is the dotted native path inside ``component`` (``double_blocks.0.img_attn.qkv``); ``parts`` the
    canonical names in output-row order; ``ratios`` their relative output widths; ``swap`` is ``"always"``,
    ``"pre-only"`` (only when rows = 2 × input width) or ``""``. A diffusers spelling looks up an *identity* entry
    (one part, no swap), so callers treat every name alike.
    """

    component: str
    path: str
    parts: tuple[str, ...]
    ratios: tuple[int, ...] = ONE
    swap: str = ""

    @property
    def fused(self) -> bool:
        return len(self.parts) > 1

    @property
    def identity(self) -> bool:
        return not self.fused and not self.swap


@dataclass
class _Maps:
    natives: list[Native]
    read: dict[str, Native]  # every accepted spelling → entry
    by_part: dict[str, tuple[Native, int]]  # canonical → (entry, index of the part)
    written: dict[tuple[str, Native], str]  # (format, entry) → name


def _flat(path: str) -> str:
    return path.replace(".", "_")


Blocks = tuple[tuple[str, str, tuple[Row, ...], int], ...]
"""(native block name, diffusers block name, rows of a block, depth) of a family's transformer blocks."""
BLOCKS: dict[str, tuple[tuple[Row, ...], Blocks]] = {
    "flux1": (
        FLUX_TOP,
        (
            ("double_blocks", "transformer_blocks", FLUX_DOUBLE, FLUX_DEPTH[0]),
            ("single_blocks", "single_transformer_blocks", FLUX_SINGLE, FLUX_DEPTH[1]),
        ),
    ),
    "sd3": (SD3_TOP, (("joint_blocks", "transformer_blocks", SD3_BLOCK, SD3_DEPTH),)),
    "flux2": (
        FLUX2_TOP,
        (
            ("double_blocks", "transformer_blocks", FLUX2_DOUBLE, FLUX2_DEPTH[0]),
            ("single_blocks", "single_transformer_blocks", FLUX2_SINGLE, FLUX2_DEPTH[1]),
        ),
    ),
    "qwen-image": (QWEN_TOP, (("transformer_blocks", "transformer_blocks", QWEN_BLOCK, QWEN_DEPTH),)),
}
"""Each family's top-level rows and its blocks, which the name tables enumerate."""
NORMS: dict[str, Blocks] = {
    "flux1": (
        ("double_blocks", "transformer_blocks", FLUX_DOUBLE_NORMS, FLUX_DEPTH[0]),
        ("single_blocks", "single_transformer_blocks", FLUX_SINGLE_NORMS, FLUX_DEPTH[1]),
    ),
}
"""FLUX's QK norms, named but not LoRA targets."""


def _transformer_rows(family: str, *, norms: bool = False) -> Iterator[tuple[str, str, Row]]:
    """(native block prefix, diffusers block prefix, row) for every transformer module of the family (with
    ``norms``, its QK norms instead)."""
    top, blocks = ((), NORMS.get(family, ())) if norms else BLOCKS[family]
    for row in top:
        yield "", "", row
    for native, diffusers, rows, depth in blocks:
        for i in range(depth):
            for row in rows:
                yield f"{native}.{i}.", f"{diffusers}.{i}.", row


def _add(
    maps: _Maps, native: Native, written: dict[str, str], aliases: tuple[str, ...] = (), *, target: bool = True
) -> None:
    """Register an entry; ``target`` False keeps it out of the inventory of LoRA targets (FLUX's QK norms)."""
    if target:
        maps.natives.append(native)
    for index, part in enumerate(native.parts):
        maps.by_part[part] = (native, index)
    for fmt, name in written.items():
        maps.written[(fmt, native)] = name
    for name in (*written.values(), *aliases):
        maps.read.setdefault(name, native)


def _add_identity(maps: _Maps, canonical: str, *aliases: str) -> None:
    """The diffusers spellings of one canonical layer (with and without the component prefix, OneTrainer's)."""
    entry = Native(canonical.partition(".")[0], canonical, (canonical,))
    for name in (canonical, *aliases):
        maps.read.setdefault(name, entry)


def _add_transformer(maps: _Maps, family: str, *, norms: bool = False) -> None:
    for native_block, diffusers_block, (path, parts, ratios, swap) in _transformer_rows(family, norms=norms):
        canonical = tuple(f"transformer.{diffusers_block}{part}" for part in parts)
        native = Native("transformer", f"{native_block}{path}", canonical, ratios, swap)
        kohya = f"lora_unet_{_flat(native.path)}"
        written = {"kohya": kohya, "comfyui": f"diffusion_model.{native.path}", "bfl-control": native.path}
        _add(maps, native, written, target=not norms)
        for name in canonical:
            bare = name.removeprefix("transformer.")
            _add_identity(maps, name, bare, f"lora_transformer_{_flat(bare)}")


def _add_encoder(maps: _Maps, encoder: Encoder) -> None:
    for path in encoder.paths:
        canonical = f"{encoder.component}.{path}"
        native = Native(encoder.component, path, (canonical,))
        flat_path = path.removeprefix("text_model.")
        written = {"kohya": f"{encoder.kohya[0]}_{_flat(path)}"}
        if encoder.comfyui is not None:
            written["comfyui"] = f"{encoder.comfyui}{path}"
        aliases = tuple(f"{prefix}_{_flat(p)}" for prefix in encoder.kohya for p in {path, flat_path})
        _add(maps, native, written, aliases)
        _add_identity(maps, canonical, f"{encoder.component}.{flat_path}")


XLABS_DOUBLE = (
    ("processor.qkv_lora1", "img_attn.qkv"),
    ("processor.proj_lora1", "img_attn.proj"),
    ("processor.qkv_lora2", "txt_attn.qkv"),
    ("processor.proj_lora2", "txt_attn.proj"),
)
"""XLabs' processor LoRAs of a double block (``lora1`` the image stream, ``lora2`` the text stream) and the BFL
module each adapts (XLabs ``DoubleStreamBlockLoraProcessor``; diffusers' ``_convert_xlabs_flux_lora_to_diffusers``)."""


def _add_xlabs(maps: _Maps) -> None:
    """XLabs FLUX names, read only. A single block's ``qkv_lora`` adapts only the q, k, v rows of ``linear1`` (not
    its MLP rows), so it is an entry of its own; its ``proj_lora`` is ``linear2``."""
    by_path = {native.path: native for native in maps.natives}
    doubles, singles = FLUX_DEPTH
    for i in range(doubles):
        for xlabs, path in XLABS_DOUBLE:
            maps.read.setdefault(f"double_blocks.{i}.{xlabs}", by_path[f"double_blocks.{i}.{path}"])
    for i in range(singles):
        qkv = tuple(f"transformer.single_transformer_blocks.{i}.attn.to_{part}" for part in "qkv")
        name = f"single_blocks.{i}.processor.qkv_lora"
        maps.read.setdefault(name, Native("transformer", name, qkv, QKV))
        maps.read.setdefault(f"single_blocks.{i}.processor.proj_lora", by_path[f"single_blocks.{i}.linear2"])


@cache
def _maps(family: str) -> _Maps:
    maps = _Maps(natives=[], read={}, by_part={}, written={})
    _add_transformer(maps, family)
    _add_transformer(maps, family, norms=True)
    if family == "flux1":
        _add_xlabs(maps)
    for encoder in ENCODERS[family]:
        _add_encoder(maps, encoder)
    return maps


# --- queries -----------------------------------------------------------------------------------------------------


def inventory(family: str, component: str | None = None) -> tuple[str, ...]:
    """Every canonical layer a LoRA of ``family`` may target (the union over the family's model variants)."""
    if family not in FAMILIES:
        return ()
    names = tuple(part for native in _maps(family).natives for part in native.parts)
    if component is None:
        return names
    return tuple(name for name in names if name.startswith(f"{component}."))


_STRIPPED = ("base_model.model.",)


def lookup(family: str, name: str, component: str | None = None) -> Native | None:
    """The entry for a module name in any spelling (kohya, ComfyUI, OneTrainer, diffusers with or without its
    component prefix, raw PEFT ``base_model.model.``), or None when it is not a module of the family."""
    if family not in FAMILIES:
        return None
    read = _maps(family).read
    for prefix in _STRIPPED:
        name = name.removeprefix(prefix)
    found = read.get(name)
    if found is None and component is not None:
        found = read.get(f"{component}.{name}")
    return found


def native_of(family: str, canonical: str) -> tuple[Native, int] | None:
    """The native entry holding a canonical layer, and the layer's index among its parts."""
    if family not in FAMILIES:
        return None
    return _maps(family).by_part.get(canonical)


def written_name(family: str, fmt: str, native: Native) -> str | None:
    """The name ``fmt`` (``kohya``/``comfyui``) writes for a native entry; None when the format cannot name it."""
    if family not in FAMILIES:
        return None
    return _maps(family).written.get((fmt, native))
