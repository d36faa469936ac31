"""Writers for ``peft`` (an adapter folder), ``comfyui`` (ComfyUI's own key names) and ``full`` (materialised ΔW).

The ``kohya`` and ``diffusers`` writers live in :mod:`lorahub.adapters.convert`; these reuse its tensor encoding.

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
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from lorahub import errors
from lorahub.adapters.delta import delta_weight
from lorahub.adapters.model import CanonicalAdapter, CanonicalLayer
from lorahub.adapters.names import FAMILIES, from_canonical
from lorahub.adapters.sources import PEFT_CONFIG, PEFT_WEIGHTS, comfyui_name
from lorahub.files.safetensors import write

__all__ = ["NEW_TARGETS", "Tensors", "comfyui_tensors", "full_tensors", "write_peft"]

Array = npt.NDArray[Any]
Tensors = dict[str, tuple[str, tuple[int, ...], bytes]]
Encoder = Callable[[Array, str], bytes]
Storage = Callable[[CanonicalLayer, str | None], str]

NEW_TARGETS = ("peft", "comfyui", "full")
_DIRECT = ("unet", "transformer", "text_encoder")
"""Components a lone PEFT folder is read back as from its module paths; others always get a subfolder."""
_SUFFIXES = (("down", "lora_down.weight"), ("up", "lora_up.weight"), ("mid", "lora_mid.weight"))


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else float(value)


def _alpha(layer: CanonicalLayer) -> float:
    rank = layer.rank
    assert rank is not None
    return float(rank) if layer.alpha is None else float(layer.alpha)


# --- comfyui -------------------------------------------------------------------------------------------------------


def comfyui_tensors(adapter: CanonicalAdapter, dtype: str | None, encode: Encoder, storage: Storage) -> Tensors:
    """kohya tensors under ComfyUI module names (see the module docstring)."""
    out: Tensors = {}
    for canonical, layer in _comfyui_layers(adapter):
        name = comfyui_name(adapter.family, canonical) if adapter.family not in FUSED_FAMILIES else canonical
        if name is None:
            raise errors.LorahubError(f"{canonical} has no ComfyUI name in the {adapter.family} tables")
        kind = storage(layer, dtype)
        for role, suffix in _SUFFIXES:
            array = layer.tensors.get(role)
            if array is not None:
                out[f"{name}.{suffix}"] = (kind, tuple(array.shape), encode(array, kind))
        out[f"{name}.alpha"] = ("F32", (), np.float32(_alpha(layer)).tobytes())
    return out


FUSED_FAMILIES = ("sd3", "flux1")
"""Families whose native (ComfyUI, BFL) modules fuse several diffusers layers: written through native.py."""


def _comfyui_layers(adapter: CanonicalAdapter) -> list[tuple[str, CanonicalLayer]]:
    """(name, layer) to write: canonical names for SD families, native fused names (already ComfyUI's) for DiTs."""
    from lorahub.adapters.native import written_layers

    if adapter.family in FUSED_FAMILIES:
        return list(written_layers(adapter, "comfyui"))
    return list(adapter.layers.items())


# --- full ----------------------------------------------------------------------------------------------------------


def full_name(adapter: CanonicalAdapter, layer: CanonicalLayer) -> str:
    """kohya names for known families (what LyCORIS, A1111 and ComfyUI read ``diff`` under), else the file's own."""
    if adapter.family in FAMILIES and layer.name not in adapter.unmapped:
        name = from_canonical(adapter.family, "kohya", layer.name)
        if name is not None:
            return name
        return layer.name  # a split part of a fused module (FLUX qkv): the canonical name is the true one
    return layer.source_name or layer.name


def full_tensors(
    adapter: CanonicalAdapter,
    dtype: str | None,
    encode: Encoder,
    storage: Storage,
    base: Callable[[CanonicalLayer], Array | None],
) -> Tensors:
    """Each module's ΔW (``diff``, shaped like the base weight where the kind keeps it) and bias delta (``diff_b``),
    computed one module at a time so only one dense ΔW is in memory."""
    out: Tensors = {}
    for layer in adapter.layers.values():
        name = full_name(adapter, layer)
        delta = delta_weight(layer.tensors, alpha=layer.alpha, base=base(layer), rslora=_rslora(adapter, layer))
        kind = storage(layer, dtype)
        if delta.weight.size:
            out[f"{name}.diff"] = (kind, tuple(delta.weight.shape), encode(delta.weight, kind))
        if delta.bias is not None:
            out[f"{name}.diff_b"] = (kind, tuple(delta.bias.shape), encode(delta.bias, kind))
    return out


def _rslora(adapter: CanonicalAdapter, layer: CanonicalLayer) -> bool:
    from lorahub.formats.diffusers import adapter_configs

    config = adapter_configs(adapter.metadata).get(layer.name.partition(".")[0])
    return config is not None and config.use_rslora


# --- peft ----------------------------------------------------------------------------------------------------------


def peft_config(layers: list[tuple[str, CanonicalLayer]]) -> dict[str, Any]:
    """``adapter_config.json`` as PEFT 0.21 writes it for a LoRA: the LoRA fields diffusers files carry (common
    rank/alpha, anchored patterns for the rest) plus PEFT's bookkeeping fields."""
    from lorahub.adapters.convert import _peft_config

    return {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": None,
        "inference_mode": True,
        **_peft_config(layers),
        "lora_dropout": 0.0,
        "fan_in_fan_out": False,
        "bias": "none",
        "modules_to_save": None,
        "layers_to_transform": None,
        "layers_pattern": None,
    }


def _folded_down(layer: CanonicalLayer) -> Array:
    from lorahub.adapters.resize import _folded_down as fold

    return fold(layer)


def write_peft(
    adapter: CanonicalAdapter,
    out: Path,
    *,
    dtype: str | None,
    encode: Encoder,
    storage: Storage,
    metadata: dict[str, str],
) -> list[Path]:
    """One PEFT adapter folder per component (directly in ``out`` when there is one); returns the weight files."""
    by_component: dict[str, list[tuple[str, CanonicalLayer]]] = {}
    for canonical, layer in adapter.layers.items():
        name = from_canonical(adapter.family, "diffusers", canonical) if adapter.family in FAMILIES else canonical
        if name is None:
            raise errors.LorahubError(f"{canonical} has no diffusers path in the {adapter.family} tables")
        component, _, path = name.partition(".")
        by_component.setdefault(component, []).append((path, layer))
    if out.exists() and not out.is_dir():
        raise errors.LorahubError(f"{out} exists and is not a directory", hint="PEFT output is a folder")
    files = []
    for component, layers in by_component.items():
        folder = out if len(by_component) == 1 and component in _DIRECT else out / component
        folder.mkdir(parents=True, exist_ok=True)
        tensors: Tensors = {}
        for path, layer in layers:
            kind = storage(layer, dtype)
            down, up = _folded_down(layer), layer.tensors["up"]
            tensors[f"base_model.model.{path}.lora_A.weight"] = (kind, tuple(down.shape), encode(down, kind))
            tensors[f"base_model.model.{path}.lora_B.weight"] = (kind, tuple(up.shape), encode(up, kind))
        write(folder / PEFT_WEIGHTS, tensors, {"format": "pt", **metadata})
        config = peft_config(layers)
        (folder / PEFT_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        files.append(folder / PEFT_WEIGHTS)
    return files
