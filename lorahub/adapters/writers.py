"""Every output format of a conversion, written out of the canonical adapter, and :func:`write_adapter`.

* ``kohya``: kohya module names (SGM names for the SDXL UNet; SD3/FLUX fused back into their native modules by
  :mod:`lorahub.adapters.native`), ``lora_down``/``lora_up``/``lora_mid`` and the *true* alpha of every module
  (diffusers' own ``convert_state_dict_to_kohya`` writes alpha = rank); a source without alpha gets alpha = rank,
  i.e. scale 1, which is what it meant, and an rsLoRA module (scale alpha/√rank) the equivalent alpha·√rank, since
  kohya files have no rsLoRA flag (LyCORIS stores its ``rs_lora`` modules the same way).
* ``diffusers``: ``lora_A``/``lora_B`` under ``unet.``/``text_encoder.``/``text_encoder_2.`` with the PEFT config
  that diffusers 0.42 reads back (:mod:`lorahub.adapters.peft_config`), ``use_rslora`` kept for a component whose
  layers are all rsLoRA. A LoCon-Tucker ``lora_mid`` is folded into ``lora_A`` (the down projection is 1×1, so the
  fold is exact).
* ``peft``: what ``PeftModel.save_pretrained`` writes: ``adapter_model.safetensors`` with
  ``base_model.model.<module path>.lora_A.weight``/``lora_B.weight`` and ``adapter_config.json`` (``peft_type``
  LORA, ``r``/``lora_alpha`` the most common values, ``rank_pattern``/``alpha_pattern`` for the others, the exact
  module paths as ``target_modules``). A PEFT adapter wraps one model, so a multi-component adapter (UNet and text
  encoders) becomes one such folder per component (``OUT/unet/``, ``OUT/text_encoder/``, …), the layout PEFT's
  DreamBooth example saves; a one-component adapter is written directly into ``OUT``.
* ``comfyui``: ``diffusion_model.<SGM path>`` for the UNet and ``text_encoders.<clip_l|clip_h|clip_g>.transformer.
  <path>`` for the CLIP encoders (the generic keys ComfyUI's ``model_lora_keys_*`` map and its own LoRA
  save/extract nodes write), kohya suffixes (``lora_up.weight``, ``lora_down.weight``, ``lora_mid.weight``,
  ``alpha``) with the true alpha.
* ``full``: each module's ΔW (``diff``) and bias delta (``diff_b``) as LyCORIS' ``full`` algorithm stores them,
  under kohya module names when the family is known, else under the module names of the source file (an unknown
  architecture keeps its own names). Kinds whose ΔW depends on the base weight need ``--base``; DoRA folded with its
  base is exact here.

Tensor bytes, kept metadata and hash claims come from :mod:`lorahub.adapters.encoding`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lorahub import errors
from lorahub.adapters.canonical import BaseOf, CanonicalAdapter, CanonicalLayer, no_base
from lorahub.adapters.delta import folded_down, written_alpha
from lorahub.adapters.encoding import (
    Tensors,
    data_section_sha256,
    encode,
    hash_claims,
    kept_metadata,
    storage_dtype,
)
from lorahub.adapters.names import FAMILIES, from_canonical
from lorahub.adapters.native import written_layers
from lorahub.adapters.peft_config import adapter_config, config_path, lora_config
from lorahub.adapters.sources import PEFT_CONFIG, PEFT_WEIGHTS, comfyui_name, load_adapter
from lorahub.files.safetensors import write

__all__ = [
    "FUSED_FAMILIES",
    "TARGETS",
    "Target",
    "bfl_control_tensors",
    "comfyui_tensors",
    "diffusers_tensors",
    "full_tensors",
    "kohya_tensors",
    "output_files",
    "write_adapter",
    "write_peft",
]

Target = Literal["kohya", "diffusers", "peft", "comfyui", "bfl-control", "full"]
TARGETS: tuple[str, ...] = ("kohya", "diffusers", "peft", "comfyui", "bfl-control", "full")
FUSED_FAMILIES = ("sd3", "flux1", "flux2")
"""Families whose native (ComfyUI, BFL) modules fuse several diffusers layers: written through native.py."""

_DIRECT = ("unet", "transformer", "text_encoder")
"""Components a lone PEFT folder is read back as from its module paths; others always get a subfolder."""
_KOHYA_SUFFIXES = (("down", "lora_down.weight"), ("up", "lora_up.weight"), ("mid", "lora_mid.weight"))
_COMPONENTS = ("unet", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3")


def _alpha(layer: CanonicalLayer) -> float:
    """kohya-style files have no rsLoRA flag: an rsLoRA layer gets the equivalent alpha·√rank."""
    rank = layer.rank
    assert rank is not None  # only LoRA layers reach the LoRA writers (convert refuses the others)
    return written_alpha(layer.alpha, rank, rslora=layer.rslora)


def _kohya_named(named: Iterable[tuple[str, CanonicalLayer]], dtype: str | None) -> Tensors:
    """``lora_down``/``lora_up``/``lora_mid`` and ``alpha`` under each given module name."""
    out: Tensors = {}
    for name, layer in named:
        storage = storage_dtype(layer, dtype)
        for role, suffix in _KOHYA_SUFFIXES:
            array = layer.tensors.get(role)
            if array is not None:
                out[f"{name}.{suffix}"] = (storage, tuple(array.shape), encode(array, storage))
        out[f"{name}.alpha"] = ("F32", (), np.float32(_alpha(layer)).tobytes())
    return out


# --- kohya, diffusers ----------------------------------------------------------------------------------------------


def kohya_tensors(adapter: CanonicalAdapter, dtype: str | None) -> Tensors:
    """kohya tensors under kohya module names (see the module docstring)."""
    return _kohya_named(written_layers(adapter, "kohya"), dtype)


def _lora_tensors(name: str, layer: CanonicalLayer, storage: str, bias: bool) -> Tensors:
    """PEFT's ``lora_A``/``lora_B`` (and ``lora_B.bias`` with ``bias``: a zero one where the layer has none, since
    PEFT's ``lora_bias`` gives every layer of the component one), or a FLUX QK norm's whole ``weight`` (``set``)."""
    if layer.kind == "set":
        weight = layer.tensors["set_weight"]
        return {f"{name}.weight": (storage, tuple(weight.shape), encode(weight, storage))}
    down, up = folded_down(layer.tensors), layer.tensors["up"]
    out: Tensors = {
        f"{name}.lora_A.weight": (storage, tuple(down.shape), encode(down, storage)),
        f"{name}.lora_B.weight": (storage, tuple(up.shape), encode(up, storage)),
    }
    if bias:
        up_bias = layer.tensors.get("up_bias", np.zeros(up.shape[0], dtype=np.float32))
        out[f"{name}.lora_B.bias"] = (storage, tuple(up_bias.shape), encode(up_bias, storage))
    return out


def _has_bias(layers: Iterable[CanonicalLayer]) -> bool:
    return any("up_bias" in layer.tensors for layer in layers)


def diffusers_tensors(adapter: CanonicalAdapter, dtype: str | None) -> tuple[Tensors, dict[str, Any]]:
    """``lora_A``/``lora_B`` (and ``lora_B.bias``) under diffusers paths, FLUX QK-norm weights as diffusers'
    ``FluxLoraLoaderMixin`` reads a Control LoRA's, and the flattened per-component PEFT config."""
    out: Tensors = {}
    by_component: dict[str, list[tuple[str, CanonicalLayer]]] = {}
    named = written_layers(adapter, "diffusers")
    biased = {n.partition(".")[0] for n, layer in named if "up_bias" in layer.tensors}
    for name, layer in named:
        component, _, path = name.partition(".")
        out.update(_lora_tensors(name, layer, storage_dtype(layer, dtype), component in biased))
        if layer.kind != "set":
            by_component.setdefault(component, []).append((config_path(path), layer))
    config: dict[str, Any] = {}
    for component in _COMPONENTS:
        if component in by_component:
            for key, value in lora_config(by_component[component]).items():
                config[f"{component}.{key}"] = value
    return out, config


# --- comfyui -------------------------------------------------------------------------------------------------------


def comfyui_tensors(adapter: CanonicalAdapter, dtype: str | None) -> Tensors:
    """kohya tensors under ComfyUI module names (see the module docstring)."""
    named: list[tuple[str, CanonicalLayer]] = []
    for canonical, layer in _comfyui_layers(adapter):
        name = comfyui_name(adapter.family, canonical) if adapter.family not in FUSED_FAMILIES else canonical
        if name is None:
            raise errors.LayerUnnamedError(f"{canonical} has no ComfyUI name in the {adapter.family} tables")
        named.append((name, layer))
    return _kohya_named(named, dtype)


def _comfyui_layers(adapter: CanonicalAdapter) -> list[tuple[str, CanonicalLayer]]:
    """(name, layer) to write: canonical names for SD families, native fused names (already ComfyUI's) for DiTs."""
    if adapter.family in FUSED_FAMILIES:
        return list(written_layers(adapter, "comfyui"))
    return list(adapter.layers.items())


# --- bfl-control ---------------------------------------------------------------------------------------------------


def bfl_control_tensors(adapter: CanonicalAdapter, dtype: str | None) -> Tensors:
    """BFL's FLUX Control LoRA layout: bare BFL module names (fused like kohya's), PEFT ``lora_A``/``lora_B`` and
    ``lora_B.bias``, QK-norm scales whole (``….norm.query_norm.scale``). The layout has no alpha (scale 1), so each
    module's scale is folded into ``lora_B`` and its bias."""
    out: Tensors = {}
    for name, layer in written_layers(adapter, "bfl-control"):
        storage = storage_dtype(layer, dtype)
        if layer.kind == "set":
            weight = layer.tensors["set_weight"]
            out[f"{name}.scale"] = (storage, tuple(weight.shape), encode(weight, storage))
            continue
        scale = layer.scale
        down, up = folded_down(layer.tensors), layer.tensors["up"] * scale
        out[f"{name}.lora_A.weight"] = (storage, tuple(down.shape), encode(down, storage))
        out[f"{name}.lora_B.weight"] = (storage, tuple(up.shape), encode(up, storage))
        if "up_bias" in layer.tensors:
            bias = layer.tensors["up_bias"] * scale
            out[f"{name}.lora_B.bias"] = (storage, tuple(bias.shape), encode(bias, storage))
    return out


# --- full ----------------------------------------------------------------------------------------------------------


def full_name(adapter: CanonicalAdapter, layer: CanonicalLayer) -> str:
    """kohya names for known families (what LyCORIS, A1111 and ComfyUI read ``diff`` under), else the file's own."""
    if adapter.family in FAMILIES and layer.name not in adapter.unmapped:
        name = from_canonical(adapter.family, "kohya", layer.name)
        if name is not None:
            return name
        return layer.name  # a split part of a fused module (FLUX qkv): the canonical name is the true one
    return layer.source_name or layer.name


def full_tensors(adapter: CanonicalAdapter, dtype: str | None, base: BaseOf) -> Tensors:
    """Each module's ΔW (``diff``, shaped like the base weight where the kind keeps it) and bias delta (``diff_b``),
    computed one module at a time so only one dense ΔW is in memory."""
    out: Tensors = {}
    for layer in adapter.layers.values():
        name = full_name(adapter, layer)
        delta = layer.delta(base(layer))
        kind = storage_dtype(layer, dtype)
        if delta.weight.size:
            out[f"{name}.diff"] = (kind, tuple(delta.weight.shape), encode(delta.weight, kind))
        if delta.bias is not None:
            out[f"{name}.diff_b"] = (kind, tuple(delta.bias.shape), encode(delta.bias, kind))
    return out


# --- peft ----------------------------------------------------------------------------------------------------------


def write_peft(adapter: CanonicalAdapter, out: Path, *, dtype: str | None, metadata: dict[str, str]) -> list[Path]:
    """One PEFT adapter folder per component (directly in ``out`` when there is one); returns the weight files."""
    by_component: dict[str, list[tuple[str, CanonicalLayer]]] = {}
    for canonical, layer in adapter.layers.items():
        name = from_canonical(adapter.family, "diffusers", canonical) if adapter.family in FAMILIES else canonical
        if name is None:
            raise errors.LayerUnnamedError(f"{canonical} has no diffusers path in the {adapter.family} tables")
        component, _, path = name.partition(".")
        by_component.setdefault(component, []).append((path, layer))
    if out.exists() and not out.is_dir():
        raise errors.NotAFolderError(
            f"{out} exists and is not a folder",
            hint="A PEFT adapter is written as a folder: give a new or existing folder.",
        )
    files = []
    for component, layers in by_component.items():
        folder = out if len(by_component) == 1 and component in _DIRECT else out / component
        folder.mkdir(parents=True, exist_ok=True)
        tensors: Tensors = {}
        bias = _has_bias(layer for _, layer in layers)
        for path, layer in layers:
            tensors.update(_lora_tensors(f"base_model.model.{path}", layer, storage_dtype(layer, dtype), bias))
        write(folder / PEFT_WEIGHTS, tensors, {"format": "pt", **metadata})
        config = adapter_config(layers)
        (folder / PEFT_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        files.append(folder / PEFT_WEIGHTS)
    return files


# --- entry point ---------------------------------------------------------------------------------------------------


def output_files(out: Path, to: str) -> list[Path]:
    """The files a write of ``to`` at ``out`` produced (a PEFT folder holds one per component)."""
    if to != "peft":
        return [out]
    return sorted(out.rglob(PEFT_WEIGHTS))


def write_adapter(
    adapter: CanonicalAdapter,
    out: Path,
    *,
    to: Target,
    dtype: Literal["fp16", "bf16", "fp32"] | None = None,
    base_of: BaseOf = no_base,
) -> CanonicalAdapter:
    """Write ``adapter`` as ``to`` at ``out`` (a folder for ``peft``) with kept metadata and recomputed hash claims,
    and return the written file(s) read back, for the check."""
    metadata = kept_metadata(adapter.metadata)
    if to == "kohya":
        tensors = kohya_tensors(adapter, dtype)
    elif to == "diffusers":
        tensors, config = diffusers_tensors(adapter, dtype)
        metadata = {"format": "pt", **metadata, "lora_adapter_metadata": json.dumps(config, indent=2, sort_keys=True)}
    elif to == "comfyui":
        tensors = comfyui_tensors(adapter, dtype)
    elif to == "bfl-control":
        tensors = bfl_control_tensors(adapter, dtype)
    elif to == "full":
        tensors = full_tensors(adapter, dtype, base_of)
    else:
        write_peft(adapter, out, dtype=dtype, metadata=metadata)
        return load_adapter(out, family=adapter.family)
    autov3 = data_section_sha256(tensors)  # AutoV3 covers the data section only: known before writing
    write(out, tensors, {**metadata, **hash_claims(adapter.metadata, to, autov3)})
    del tensors
    return load_adapter(out, family=adapter.family)
