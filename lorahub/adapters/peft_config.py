"""The PEFT ``LoraConfig`` an adapter's ranks and alphas become, for diffusers files and PEFT folders alike.

diffusers stores it per component in ``lora_adapter_metadata`` (``<component>.r``, ``.lora_alpha``,
``.rank_pattern``, ``.alpha_pattern``, ``.target_modules``) and PEFT in ``adapter_config.json``; both are read back
with PEFT's own pattern matching, so ``lora_alpha/r`` of every module (``lora_alpha/√r`` with ``use_rslora``) equals
the source scale. A PEFT config states one scale rule per component: ``use_rslora`` when every layer is rsLoRA, else
the plain rule, rsLoRA layers then getting the equivalent alpha·√r.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from lorahub.adapters.canonical import CanonicalLayer
from lorahub.adapters.delta import written_alpha
from lorahub.adapters.encoding import number

__all__ = ["adapter_config", "config_path", "lora_config"]


def _pattern_keys(paths: Mapping[str, object]) -> dict[str, str]:
    r"""PEFT matches a pattern key at the end of a path (``(.*\.)?(key)$``), so FLUX's top-level ``proj_out`` would
    also claim every ``single_transformer_blocks.N.proj_out``: such keys are anchored with ``^``, as diffusers does
    for its own rank patterns (peft#2419)."""
    suffixes = {path.split(".", i)[i] for path in paths for i in range(1, path.count(".") + 1)}
    return {path: f"^{path}" if path in suffixes else path for path in paths}


def config_path(path: str) -> str:
    """A module path as the PEFT config names it. PEFT matches target_modules and patterns as path suffixes:
    without ``text_model.`` the config fits text encoders of transformers 4 (which nest it) and 5 (which dropped
    it); the tensor keys keep it."""
    return path.removeprefix("text_model.")


def lora_config(layers: list[tuple[str, CanonicalLayer]]) -> dict[str, Any]:
    """One component's ``LoraConfig`` fields: the most common rank and alpha, patterns for the rest."""
    ranks = {path: int(layer.rank or 0) for path, layer in layers}
    rslora = all(layer.rslora for _, layer in layers)
    alphas = {
        path: written_alpha(layer.alpha, ranks[path], rslora=layer.rslora, to_rslora=rslora) for path, layer in layers
    }
    r = Counter(ranks.values()).most_common(1)[0][0]
    lora_alpha = Counter(alphas.values()).most_common(1)[0][0]
    key = _pattern_keys(ranks)
    return {
        "r": r,
        "lora_alpha": number(lora_alpha),
        "rank_pattern": {key[path]: rank for path, rank in ranks.items() if rank != r},
        "alpha_pattern": {key[path]: number(alpha) for path, alpha in alphas.items() if alpha != lora_alpha},
        "target_modules": sorted(ranks),
        "use_dora": False,
        "use_rslora": rslora,
        "lora_bias": any("up_bias" in layer.tensors for _, layer in layers),
        "init_lora_weights": True,
    }


def adapter_config(layers: list[tuple[str, CanonicalLayer]]) -> dict[str, Any]:
    """``adapter_config.json`` as PEFT 0.21 writes it for a LoRA: the LoRA fields diffusers files carry (common
    rank/alpha, anchored patterns for the rest) plus PEFT's bookkeeping fields."""
    return {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": None,
        "inference_mode": True,
        **lora_config(layers),
        "lora_dropout": 0.0,
        "fan_in_fan_out": False,
        "bias": "none",
        "modules_to_save": None,
        "layers_to_transform": None,
        "layers_pattern": None,
    }
