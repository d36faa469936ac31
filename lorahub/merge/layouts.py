"""Where an adapter layer lands in a base checkpoint: canonical layer name → base tensor (and the part of it).

A base file is one of several layouts — an SD single file in LDM/SGM naming (``model.diffusion_model.…``,
``cond_stage_model.…``, ``conditioner.embedders.N.…``), a FLUX.1 or SD3/3.5 single file in its original model's
names (``double_blocks.N.img_attn.qkv``, ``joint_blocks.N.x_block…``), or one diffusers component file (``unet/``,
``text_encoder/``, ``transformer/``). Each layout is a detector plus a resolver, kept in the ordered
:data:`LAYOUTS` registry so a new layout is one more entry, not an edit of the engine.

Why geometry is read from the base file and not from ``name_tables``' fixed specs: the SGM block index of a
diffusers path depends on ``layers_per_block`` and the number of levels, so a UNet that is not the stock SD1/SDXL
(tests' tiny UNets, fine-tunes with other depths) would be mapped to the wrong tensors. The base's own keys give
the :class:`~lorahub.adapters.name_tables.UNetSpec`, and ``name_tables.unet_modules`` turns it into names.

OpenCLIP text encoders (SD2's ``cond_stage_model.model``, SDXL's ``conditioner.embedders.1.model``) fuse q/k/v
into one ``in_proj_weight`` and store ``text_projection`` transposed; a :class:`Target` says which rows of which
tensor a layer adds to, and whether its ΔW is transposed first.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from lorahub import errors
from lorahub.adapters import dit_names
from lorahub.adapters import name_tables as t
from lorahub.files.safetensors import TensorInfo

__all__ = ["LAYOUTS", "BaseLayout", "Target", "detect_layout", "unet_spec_from_diffusers", "unet_spec_from_sgm"]


@dataclass(frozen=True)
class Target:
    """The base tensors one adapter layer changes.

    ``rows`` = (start, stop, total): the layer owns rows ``[start·n/total, stop·n/total)`` of the weight, in units of
    the fused module's parts (OpenCLIP's q/k/v are one unit each of 3; FLUX's ``linear1`` is q, k, v and a 4-unit
    MLP, 7 in all). ``transpose``: the base stores the weight transposed (OpenCLIP ``text_projection``).
    ``swap_halves``: the base orders the two row halves the other way round (BFL/MMDiT ``[shift, scale]`` where
    diffusers has ``[scale, shift]``), so ΔW's halves are exchanged before they are added.
    """

    weight: str
    bias: str | None = None
    rows: tuple[int, int, int] | None = None
    transpose: bool = False
    swap_halves: bool = False

    def row_slice(self, count: int) -> slice:
        """The rows of a ``count``-row tensor this layer owns (all of them without ``rows``)."""
        if self.rows is None:
            return slice(0, count)
        start, stop, total = self.rows
        unit = count // total
        return slice(start * unit, stop * unit)


Resolver = Callable[[str], Target | None]


@dataclass(frozen=True)
class BaseLayout:
    """A detected base layout: its name, the adapter families it can take, and the layer → tensor resolver."""

    name: str
    families: frozenset[str]
    resolve: Resolver
    components: tuple[str, ...]
    """The adapter components this file holds (``unet``, ``text_encoder``, …)."""


Tensors = Mapping[str, TensorInfo]
Detector = Callable[[Tensors, Path | None], BaseLayout | None]


def _target(
    tensors: Tensors,
    weight: str,
    bias: str | None = None,
    *,
    rows: tuple[int, int, int] | None = None,
    transpose: bool = False,
    swap_halves: bool = False,
) -> Target | None:
    """A target when the weight exists in the base; the bias only when the base has one."""
    if weight not in tensors:
        return None
    return Target(weight, bias if bias is not None and bias in tensors else None, rows, transpose, swap_halves)


def _linear(tensors: Tensors, path: str) -> Target | None:
    return _target(tensors, f"{path}.weight", f"{path}.bias")


# --- UNet geometry -------------------------------------------------------------------------------------------------


def _indices(keys: Iterable[str], pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in keys if (m := rx.match(k))})


def _depth(keys: Iterable[str], prefix: str) -> int:
    """How many transformer blocks a Transformer2D block at ``prefix`` has (0: none)."""
    found = _indices(keys, re.escape(prefix) + r"\.transformer_blocks\.(\d+)\.")
    return len(found)


def unet_spec_from_diffusers(tensors: Tensors, prefix: str = "") -> t.UNetSpec:
    """The UNet's geometry from diffusers keys: levels, resnets per level, transformer depth per level, widths."""
    keys = [k.removeprefix(prefix) for k in tensors if k.startswith(prefix)]
    levels = _indices(keys, r"down_blocks\.(\d+)\.")
    layers_per_block = len(_indices(keys, r"down_blocks\.0\.resnets\.(\d+)\."))
    channels = tuple(tensors[f"{prefix}down_blocks.{b}.resnets.0.conv1.weight"].shape[0] for b in levels)
    depths = tuple(_depth(keys, f"down_blocks.{b}.attentions.0") for b in levels)
    return t.UNetSpec(
        block_out_channels=channels,
        down_transformer_layers=depths,
        mid_transformer_layers=_depth(keys, "mid_block.attentions.0"),
        layers_per_block=layers_per_block,
        add_embedding=f"{prefix}add_embedding.linear_1.weight" in tensors,
    )


def unet_spec_from_sgm(tensors: Tensors, prefix: str) -> t.UNetSpec:
    """The UNet's geometry from SGM keys: the first downsampler (``input_blocks.N.0.op``) gives resnets per level,
    the input block count the levels, ``…0.out_layers.3`` the widths, ``…1.transformer_blocks.K`` the depths."""
    keys = [k.removeprefix(prefix) for k in tensors if k.startswith(prefix)]
    blocks = _indices(keys, r"input_blocks\.(\d+)\.")
    ops = _indices(keys, r"input_blocks\.(\d+)\.0\.op\.")
    if not blocks:
        raise errors.UnsupportedFileError(f"no UNet input blocks under {prefix!r}")
    stride = ops[0] if ops else len(blocks)  # (L+1): the first downsampler follows L resnets
    levels = len(blocks) // stride
    first = [1 + stride * b for b in range(levels)]
    channels = tuple(tensors[f"{prefix}input_blocks.{i}.0.out_layers.3.weight"].shape[0] for i in first)
    return t.UNetSpec(
        block_out_channels=channels,
        down_transformer_layers=tuple(_depth(keys, f"input_blocks.{i}.1") for i in first),
        mid_transformer_layers=_depth(keys, "middle_block.1"),
        layers_per_block=stride - 1,
        add_embedding=f"{prefix}label_emb.0.0.weight" in tensors,
    )


def _unet_family(tensors: Tensors, spec: t.UNetSpec, proj_in: str | None) -> frozenset[str]:
    """SDXL has the added-conditioning MLP; SD2 projects with Linear, SD1 with 1×1 convolutions."""
    if spec.add_embedding:
        return frozenset({"sdxl"})
    if proj_in is None or proj_in not in tensors:
        return frozenset({"sd1", "sd2"})
    return frozenset({"sd1"} if len(tensors[proj_in].shape) == 4 else {"sd2"})


def _first_proj_in(tensors: Tensors, template: str, spec: t.UNetSpec) -> str | None:
    for block, sgm, kind, _ in t.block_map(spec):
        if kind == "attention":
            return template.format(diffusers=block, sgm=sgm)
    return None


# --- text encoders -------------------------------------------------------------------------------------------------

_HF_PREFIX = "text_model."
_OPENCLIP_LAYER = re.compile(r"text_model\.encoder\.layers\.(\d+)\.(self_attn\.[qkvout]+_proj|mlp\.fc[12])$")
_OPENCLIP_QKV = {"self_attn.q_proj": 0, "self_attn.k_proj": 1, "self_attn.v_proj": 2}
_OPENCLIP_OTHER = {"self_attn.out_proj": "attn.out_proj", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}


def _hf_clip(tensors: Tensors, prefix: str) -> Resolver:
    """transformers' CLIP names under ``prefix``, with or without ``text_model.`` (transformers ≥ 5 drops it)."""

    def resolve(path: str) -> Target | None:
        found = _linear(tensors, f"{prefix}{path}")
        if found is None and path.startswith(_HF_PREFIX):
            found = _linear(tensors, f"{prefix}{path.removeprefix(_HF_PREFIX)}")
        return found

    return resolve


def _open_clip(tensors: Tensors, prefix: str) -> Resolver:
    """OpenCLIP names under ``prefix`` (``…model.``): fused ``in_proj``, ``c_fc``/``c_proj``, transposed projection."""

    def resolve(path: str) -> Target | None:
        if path == "text_projection":
            return _target(tensors, f"{prefix}text_projection", transpose=True)
        match = _OPENCLIP_LAYER.match(path)
        if match is None:
            return None
        block = f"{prefix}transformer.resblocks.{match.group(1)}"
        layer = match.group(2)
        if layer in _OPENCLIP_QKV:
            index = _OPENCLIP_QKV[layer]
            return _target(
                tensors, f"{block}.attn.in_proj_weight", f"{block}.attn.in_proj_bias", rows=(index, index + 1, 3)
            )
        return _linear(tensors, f"{block}.{_OPENCLIP_OTHER[layer]}")

    return resolve


# --- layouts -------------------------------------------------------------------------------------------------------

_LDM_UNET = "model.diffusion_model."
# family → component → (key prefix, kind of encoder)
_LDM_TEXT: dict[str, dict[str, tuple[str, str]]] = {
    "sd1": {"text_encoder": ("cond_stage_model.transformer.", "hf")},
    "sd2": {"text_encoder": ("cond_stage_model.model.", "openclip")},
    "sdxl": {
        "text_encoder": ("conditioner.embedders.0.transformer.", "hf"),
        "text_encoder_2": ("conditioner.embedders.1.model.", "openclip"),
    },
}
_ENCODERS: dict[str, Callable[[Tensors, str], Resolver]] = {"hf": _hf_clip, "openclip": _open_clip}


def _by_component(resolvers: Mapping[str, Resolver]) -> Resolver:
    def resolve(name: str) -> Target | None:
        component, _, path = name.partition(".")
        inner = resolvers.get(component)
        return None if inner is None else inner(path)

    return resolve


def _ldm_text_family(tensors: Tensors) -> str | None:
    for family, encoders in _LDM_TEXT.items():
        prefix = next(iter(encoders.values()))[0]
        if any(k.startswith(prefix) for k in tensors):
            return family
    return None


def detect_ldm(tensors: Tensors, path: Path | None) -> BaseLayout | None:
    """SD 1.x/2.x/SDXL single files (A1111/ComfyUI/SGM checkpoints): UNet under ``model.diffusion_model.``."""
    if not any(k.startswith(_LDM_UNET) for k in tensors):
        return None
    spec = unet_spec_from_sgm(tensors, _LDM_UNET)
    sgm_of = {d: s for d, s in t.unet_modules(spec)}
    proj_in = _first_proj_in(tensors, _LDM_UNET + "{sgm}.proj_in.weight", spec)
    families = _unet_family(tensors, spec, proj_in)
    text_family = _ldm_text_family(tensors)
    if text_family is not None:
        families = families & {text_family} or frozenset({text_family})

    def unet(path: str) -> Target | None:
        sgm = sgm_of.get(path)
        return None if sgm is None else _linear(tensors, f"{_LDM_UNET}{sgm}")

    resolvers: dict[str, Resolver] = {"unet": unet}
    for component, (prefix, kind) in _LDM_TEXT.get(text_family or "", {}).items():
        if any(k.startswith(prefix) for k in tensors):
            resolvers[component] = _ENCODERS[kind](tensors, prefix)
    return BaseLayout("ldm", families, _by_component(resolvers), tuple(resolvers))


_FOLDERS = ("unet", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3")


def _component_of(tensors: Tensors, path: Path | None) -> str | None:
    """The diffusers component a single-component file holds: its folder's name, else what its keys look like."""
    if path is not None and path.parent.name in _FOLDERS:
        return path.parent.name
    if "conv_in.weight" in tensors and any(k.startswith("down_blocks.") for k in tensors):
        return "unet"
    if any(k.startswith(("transformer_blocks.", "single_transformer_blocks.")) for k in tensors):
        return "transformer"
    if any(".self_attn.q_proj." in k for k in tensors):
        return "text_encoder_2" if "text_projection.weight" in tensors else "text_encoder"
    return None


def _transformer_family(tensors: Tensors) -> frozenset[str]:
    """FLUX.2 fuses its single blocks' input (``to_qkv_mlp_proj``), FLUX.1 has single-stream blocks without it;
    Qwen-Image's double-stream blocks have ``img_mlp``; SD3's MMDiT has a patch ``pos_embed``; otherwise SD3 or
    FLUX.1."""
    if "single_transformer_blocks.0.attn.to_qkv_mlp_proj.weight" in tensors:
        return frozenset({"flux2"})
    if any(k.startswith("single_transformer_blocks.") for k in tensors):
        return frozenset({"flux1"})
    if "transformer_blocks.0.img_mlp.net.0.proj.weight" in tensors:
        return frozenset({"qwen-image"})
    if "pos_embed.proj.weight" in tensors:
        return frozenset({"sd3"})
    return frozenset({"sd3", "flux1"})


_TEXT_FAMILIES = {
    "text_encoder": frozenset({"sd1", "sd2", "sdxl", "sd3", "flux1"}),
    "text_encoder_2": frozenset({"sdxl", "sd3"}),
    "text_encoder_3": frozenset({"sd3"}),
}


def detect_diffusers(tensors: Tensors, path: Path | None) -> BaseLayout | None:
    """One diffusers component file (``unet/diffusion_pytorch_model.safetensors``, ``text_encoder/model…``,
    ``transformer/…``): module paths are the canonical names without the component prefix."""
    component = _component_of(tensors, path)
    if component is None:
        return None
    if component == "unet":
        spec = unet_spec_from_diffusers(tensors)
        families = _unet_family(tensors, spec, _first_proj_in(tensors, "{diffusers}.proj_in.weight", spec))
        resolver: Resolver = lambda p: _linear(tensors, p)  # noqa: E731
    elif component == "transformer":
        families = _transformer_family(tensors)
        resolver = lambda p: _linear(tensors, p)  # noqa: E731
    else:
        families = _TEXT_FAMILIES[component]
        resolver = _hf_clip(tensors, "")
    return BaseLayout(f"diffusers-{component}", families, _by_component({component: resolver}), (component,))


# BFL FLUX.1 (``flux1-dev.safetensors``) and Stability's SD3/3.5 single files name the transformer as the original
# models do (the tables of :mod:`lorahub.adapters.dit_names`), bare or under ComfyUI's/SAI's prefixes; all-in-one
# files also carry their text encoders in transformers' names under ``text_encoders.NAME.transformer.``.
_DIT_MARKERS = {"flux1": "double_blocks.0.img_attn.qkv.weight", "sd3": "joint_blocks.0.x_block.attn.qkv.weight"}
_DIT_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "")
_DIT_TEXT: dict[str, dict[str, str]] = {
    "flux1": {
        "text_encoder": "text_encoders.clip_l.transformer.",
        "text_encoder_2": "text_encoders.t5xxl.transformer.",
    },
    "sd3": {
        "text_encoder": "text_encoders.clip_l.transformer.",
        "text_encoder_2": "text_encoders.clip_g.transformer.",
        "text_encoder_3": "text_encoders.t5xxl.transformer.",
    },
}
_DIT_LAYOUT_NAMES = {"flux1": "bfl-flux1", "sd3": "sai-sd3"}


def _dit_transformer(tensors: Tensors, prefix: str, family: str) -> Resolver:
    """A diffusers transformer path → the native tensor holding it: the rows of a fused module that are its part
    (q, k, v of ``qkv``; q, k, v and the MLP of FLUX's ``linear1``), with the scale/shift halves swapped where the
    original model orders them the other way."""

    def resolve(path: str) -> Target | None:
        found = dit_names.native_of(family, f"transformer.{path}")
        if found is None:
            return None
        native, index = found
        weight = f"{prefix}{native.path}.weight"
        if weight not in tensors:
            return None
        ratios = native.ratios
        rows = (sum(ratios[:index]), sum(ratios[: index + 1]), sum(ratios)) if native.fused else None
        shape = tensors[weight].shape
        swap = native.swap == "always" or (native.swap == "pre-only" and shape[0] == 2 * shape[-1])
        return _target(tensors, weight, f"{prefix}{native.path}.bias", rows=rows, swap_halves=swap)

    return resolve


def detect_dit(tensors: Tensors, path: Path | None) -> BaseLayout | None:
    """FLUX.1 and SD3/3.5 single files in their original names (BFL, Stability), with or without text encoders."""
    for family, marker in _DIT_MARKERS.items():
        prefix = next((p for p in _DIT_PREFIXES if f"{p}{marker}" in tensors), None)
        if prefix is None:
            continue
        resolvers: dict[str, Resolver] = {"transformer": _dit_transformer(tensors, prefix, family)}
        for component, text_prefix in _DIT_TEXT[family].items():
            if any(k.startswith(text_prefix) for k in tensors):
                resolvers[component] = _hf_clip(tensors, text_prefix)
        return BaseLayout(_DIT_LAYOUT_NAMES[family], frozenset({family}), _by_component(resolvers), tuple(resolvers))
    return None


LAYOUTS: list[tuple[str, Detector]] = [("dit", detect_dit), ("ldm", detect_ldm), ("diffusers", detect_diffusers)]
"""Ordered base-layout detectors; the first that recognises the file wins. Append new layouts here."""


def detect_layout(tensors: Tensors, path: Path | None = None) -> BaseLayout:
    """The base file's layout, or a clear error naming the layouts bake knows."""
    for _, detector in LAYOUTS:
        layout = detector(tensors, path)
        if layout is not None:
            return layout
    raise errors.UnsupportedFileError(
        f"{path or 'the base'} is not a base checkpoint layout lorahub can bake into",
        hint="Supported: SD 1.x/2.x/SDXL single files (LDM/SGM names), FLUX.1 (BFL names) and SD3/3.5 (Stability's "
        "names) single files, and diffusers component files (unet/, text_encoder/, transformer/ …safetensors).",
    )
