"""The spellings the formats share, as data: key suffix → role, key prefix → component.

Formats differ mostly in these two tables, so keeping them here (rather than in if-chains inside each format)
makes the differences visible side by side and lets a reviewer check a spelling against the reference in one
place. Sources for every spelling: kohya-ss/sd-scripts ``networks/lora.py`` (kohya), diffusers
``loaders/lora_conversion_utils.py`` and PEFT's ``tuners/lora`` (diffusers/PEFT), ComfyUI ``comfy/lora.py``
(ComfyUI), LyCORIS ``lycoris/modules`` (LyCORIS), and each other trainer's own writer.
"""

from __future__ import annotations

from collections.abc import Mapping

# --- suffix → role -----------------------------------------------------------------------------------------------

KOHYA_SUFFIXES: Mapping[str, str] = {
    "lora_down.weight": "down",
    "lora_up.weight": "up",
    "lora_mid.weight": "mid",
    "alpha": "alpha",
    "scale": "scale",
    "dora_scale": "dora_scale",
}
"""sd-scripts' own spellings, plus A1111's per-module ``scale`` and the DoRA tensor kohya-named trainers write."""

LYCORIS_SUFFIXES: Mapping[str, str] = {
    "hada_w1_a": "hada_w1_a",
    "hada_w1_b": "hada_w1_b",
    "hada_w2_a": "hada_w2_a",
    "hada_w2_b": "hada_w2_b",
    "hada_t1": "hada_t1",
    "hada_t2": "hada_t2",
    "lokr_w1": "lokr_w1",
    "lokr_w1_a": "lokr_w1_a",
    "lokr_w1_b": "lokr_w1_b",
    "lokr_w2": "lokr_w2",
    "lokr_w2_a": "lokr_w2_a",
    "lokr_w2_b": "lokr_w2_b",
    "lokr_t2": "lokr_t2",
    "diff": "diff",
    "diff_b": "diff_b",
    "w_norm": "w_norm",
    "b_norm": "b_norm",
    "set_weight": "set_weight",
    "oft_blocks": "oft_blocks",
    "rescale": "oft_rescale",
    "a1.weight": "glora_a1",
    "a2.weight": "glora_a2",
    "b1.weight": "glora_b1",
    "b2.weight": "glora_b2",
}
"""LyCORIS algorithm tensors (``lycoris/modules/*``, ``weight_list_det``), as ComfyUI and A1111 also read them."""

IA3_SUFFIXES: Mapping[str, str] = {"weight": "ia3_weight", "on_input": "ia3_on_input"}
"""(IA)^3 stores a bare ``weight``; accepted only under kohya/LyCORIS prefixes, where a bare ``.weight`` can mean
nothing else."""

PEFT_SUFFIXES: Mapping[str, str] = {
    "lora_A.weight": "down",
    "lora_B.weight": "up",
    "lora_B.bias": "up_bias",
    "lora_A.default.weight": "down",
    "lora_B.default.weight": "up",
    "lora_B.default.bias": "up_bias",
    "lora_magnitude_vector": "magnitude",
    "lora_magnitude_vector.weight": "magnitude",
    "alpha": "alpha",
}
"""PEFT/diffusers. ``.default.`` is PEFT's adapter name left in by tools that dump the live module (ComfyUI reads it
for Qwen); ``alpha`` tensors appear in diffusers files converted from kohya (diffusers collects them as
``network_alphas``)."""

DIFFUSERS_OLD_SUFFIXES: Mapping[str, str] = {
    "lora.down.weight": "down",
    "lora.up.weight": "up",
    "lora_linear_layer.down.weight": "down",
    "lora_linear_layer.up.weight": "up",
    "down.weight": "down",
    "up.weight": "up",
    "lora_A.weight": "down",
    "lora_B.weight": "up",
    "lora_magnitude_vector": "magnitude",
    "alpha": "alpha",
}
"""diffusers 0.2x (``….to_q.lora.down.weight``, TE ``lora_linear_layer``) and the attention-processor format, whose
module is the processor child itself (``….processor.to_q_lora`` + ``down.weight``). diffusers' own
``convert_state_dict_to_diffusers`` (its training scripts) still writes attention layers that way but leaves other
targets (``ff.net.2``, ``proj_in``) in PEFT's ``lora_A``/``lora_B``, so one file mixes both; a DoRA adapter
(``use_dora``) keeps PEFT's ``lora_magnitude_vector`` beside them."""

XLABS_SUFFIXES: Mapping[str, str] = {"down.weight": "down", "up.weight": "up"}

BFL_CONTROL_SUFFIXES: Mapping[str, str] = {**PEFT_SUFFIXES, "scale": "set_weight"}
"""BFL Control LoRAs ship the QK-norm scales whole (``…norm.key_norm.scale``); ComfyUI applies them as
``set_weight``, so that is their role here."""

KOHYA_ALL_SUFFIXES: Mapping[str, str] = {**KOHYA_SUFFIXES, **LYCORIS_SUFFIXES, **IA3_SUFFIXES}
DOTTED_SUFFIXES: Mapping[str, str] = {**KOHYA_SUFFIXES, **LYCORIS_SUFFIXES, **PEFT_SUFFIXES}
"""What ComfyUI-style dotted names may carry: every LoRA-family spelling except IA3's ambiguous bare ``weight``."""

LYCORIS_ONLY_ROLES = frozenset(LYCORIS_SUFFIXES.values()) | frozenset(IA3_SUFFIXES.values()) | {"mid", "dora_scale"}
"""Roles sd-scripts' own ``networks.lora`` never writes: their presence under kohya prefixes means LyCORIS (or a
trainer using LyCORIS' spellings, such as OneTrainer's DoRA)."""

# --- prefix → component ------------------------------------------------------------------------------------------

DENOISER = "denoiser"
"""Component rule: ``unet`` when the name is a UNet's, else ``transformer`` (``lora_unet_`` also prefixes FLUX/SD3)."""
GUESS = "guess"
"""Component rule: infer from the module name alone; ``unknown`` when it says nothing."""
KNOWN = "known"
"""Component rule: infer from the module name alone, and the name must say it (diffusers paths saved without their
``unet.``/``transformer.`` prefix start with one of :data:`DIFFUSERS_BARE_ROOTS`): any other bare name is not the
format's, so a kohya name under
a diffusers suffix (``lora_unet_x.lora.down.weight``) is left unmatched instead of becoming a module of nothing."""

KOHYA_PREFIXES: Mapping[str, str] = {
    "lora_unet_": DENOISER,
    "lora_te_": "text_encoder",
    "lora_te1_": "text_encoder",
    "lora_te2_": "text_encoder_2",
    "lora_te3_": "text_encoder_3",
    "lycoris_": DENOISER,
    "oft_unet_": DENOISER,
}
ONETRAINER_PREFIXES: Mapping[str, str] = {
    **KOHYA_PREFIXES,
    "lora_transformer_": "transformer",
    "transformer.": "transformer",
}
DIFFUSERS_PREFIXES: Mapping[str, str] = {
    "unet.": "unet",
    "transformer.": "transformer",
    "text_encoder.": "text_encoder",
    "text_encoder_2.": "text_encoder_2",
    "text_encoder_3.": "text_encoder_3",
}
COMFY_PREFIXES: Mapping[str, str] = {
    "diffusion_model.": DENOISER,
    "text_encoders.clip_l.": "text_encoder",
    "text_encoders.clip_h.": "text_encoder",
    "text_encoders.clip_g.": "text_encoder_2",
    "text_encoders.t5xxl.": "text_encoder_3",
    "text_encoders.": "text_encoder",
}
AI_TOOLKIT_PREFIXES: Mapping[str, str] = {**COMFY_PREFIXES, **DIFFUSERS_PREFIXES}
PEFT_PREFIXES: Mapping[str, str] = {"base_model.model.": GUESS}

ROLE_STEMS = (
    "_lora_down", "_lora_up", "_lora_mid", "_lora_A", "_lora_B",
    ".lora_down", ".lora_up", ".lora_mid", ".lora_A", ".lora_B",
)  # fmt: skip
"""Module names never end so: such a name is a LoRA key whose ``.weight`` separator was changed
(``lora_unet_x_lora_down.weight``), which IA3's bare ``weight`` suffix would otherwise read as an IA3 module."""

EMBEDDING_PREFIX = "bundle_emb."
"""A1111 textual-inversion embeddings bundled in a LoRA: ``bundle_emb.<name>.string_to_param.*``, or
``bundle_emb.<name>.clip_l``/``.clip_g`` for SDXL."""

# --- names → component -------------------------------------------------------------------------------------------
# Matched against the module name after its prefix, with dots turned into underscores, so kohya and dotted
# spellings share one table.

UNET_MARKERS = (
    "down_blocks_",
    "up_blocks_",
    "mid_block_",
    "input_blocks_",
    "middle_block_",
    "output_blocks_",
    "conv_in",
    "conv_out",
    "conv_norm_out",
    "time_embedding_",
    "time_embed_",
    "add_embedding_",
    "label_emb_",
    "out_0",
    "out_2",
)
"""The diffusers and SGM UNet namespaces (SD 1.x/2.x/SDXL), closed and well known; anything else under a denoiser
prefix is a transformer."""

TEXT_ENCODER_MARKERS = ("text_model_", "encoder_layers_", "embeddings_", "final_layer_norm", "text_projection")
T5_MARKERS = ("encoder_block_", "shared", "encoder_final_layer_norm")
"""T5 module names (``encoder.block.N.layer.M.SelfAttention.q``): whatever slot a trainer puts T5 in (OneTrainer
FLUX uses ``lora_te2_``), its component is ``text_encoder_3`` as ``COMPONENTS`` defines it."""

TRANSFORMER_MARKERS = (
    "double_blocks_",
    "single_blocks_",
    "joint_blocks_",
    "transformer_blocks_",
    "single_transformer_blocks_",
    "blocks_",
    "img_in",
    "txt_in",
    "time_in_",
    "vector_in_",
    "guidance_in_",
    "final_layer_",
    "x_embedder",
    "context_embedder",
    "time_text_embed_",
    "norm_out_",
    "proj_out",
    "pos_embed",
    "t_embedder_",
    "y_embedder_",
)

DIFFUSERS_BARE_ROOTS = frozenset(
    {
        "down_blocks",
        "up_blocks",
        "mid_block",
        "conv_in",
        "conv_out",
        "time_embedding",
        "add_embedding",
        "transformer_blocks",
        "single_transformer_blocks",
        "x_embedder",
        "context_embedder",
        "time_text_embed",
        "norm_out",
        "proj_out",
        "pos_embed",
        "img_in",
        "txt_in",
        "text_model",
    }
)
"""First dotted component of a diffusers module path saved without its ``unet.``/``transformer.`` prefix."""


PrefixTable = tuple[tuple[str, str], ...]


def by_length(prefixes: Mapping[str, str]) -> PrefixTable:
    """A prefix table ordered longest first, so the first ``startswith`` hit is the most specific prefix."""
    return tuple(sorted(prefixes.items(), key=lambda item: -len(item[0])))


def strip_prefix(name: str, table: PrefixTable) -> tuple[str, str | None]:
    """``(rest, rule)`` for the longest prefix of ``name`` in a :func:`by_length` table, or ``(name, None)``."""
    for prefix, rule in table:
        if name.startswith(prefix):
            return name[len(prefix) :], rule
    return name, None


def flat(rest: str) -> str:
    """The module path with dots as underscores: one spelling for the marker tables."""
    return rest.replace(".", "_")


def guess_component(rest: str) -> str:
    """Component from a module path alone; ``unknown`` when the path names nothing we know."""
    text = flat(rest)
    if text.startswith(UNET_MARKERS):
        return "unet"
    if text.startswith(T5_MARKERS):
        return "text_encoder_3"
    if text.startswith(TEXT_ENCODER_MARKERS):
        return "text_encoder"
    if text.startswith(TRANSFORMER_MARKERS):
        return "transformer"
    return "unknown"


def resolve_component(rule: str, rest: str) -> str:
    """Apply a prefix's component rule to the rest of the module name."""
    if rule == DENOISER:
        return "unet" if flat(rest).startswith(UNET_MARKERS) else "transformer"
    if rule == GUESS:
        return guess_component(rest)
    if rule.startswith("text_encoder") and flat(rest).startswith(T5_MARKERS):
        return "text_encoder_3"
    return rule
