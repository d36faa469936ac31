"""ostris/ai-toolkit: PEFT ``lora_A``/``lora_B`` with no alpha tensors.

Rule, from the keylists and InvokeAI's detector: a file is ai-toolkit when its ``software`` metadata (JSON) names
``ai-toolkit`` and its keys are ComfyUI or diffusers spellings, or, without that metadata, when its keys are
``diffusion_model.`` + FLUX BFL block names (``double_blocks``/``single_blocks``) and every ``diffusion_model.`` key is
a plain ``lora_A``/``lora_B`` weight (no alpha, no LyCORIS tensor). ``transformer.`` PEFT files without the metadata
cannot be told from diffusers' own and are reported as ``diffusers``; ``diffusion_model.`` files with alpha or
LyCORIS tensors are ``comfyui``.
"""

from __future__ import annotations

import json

from lorahub.formats.grouping import Grouped, Keys, Metadata, Scheme, SchemeFormat, meta_text, mostly
from lorahub.formats.naming import AI_TOOLKIT_PREFIXES, PEFT_SUFFIXES

SCHEME = Scheme(prefixes=AI_TOOLKIT_PREFIXES, suffixes=PEFT_SUFFIXES)
_PREFIXES = tuple(AI_TOOLKIT_PREFIXES)
_COMFY_DENOISER = "diffusion_model."
_FLUX_BLOCKS = ("diffusion_model.double_blocks.", "diffusion_model.single_blocks.")
_PLAIN_PEFT = (".lora_A.weight", ".lora_B.weight")


def says_ai_toolkit(metadata: Metadata) -> bool:
    """ai-toolkit writes ``software = {"name": "ai-toolkit", …}`` as a JSON string."""
    try:
        software = json.loads(meta_text(metadata, "software"))
    except (ValueError, RecursionError):
        return False
    return isinstance(software, dict) and software.get("name") == "ai-toolkit"


def _flux_bfl_peft(keys: Keys) -> bool:
    ours = [key for key in keys if key.startswith(_COMFY_DENOISER)]
    if len(ours) * 2 < len(keys) or not any(key.startswith(_FLUX_BLOCKS) for key in ours):
        return False
    return all(key.endswith(_PLAIN_PEFT) for key in ours)


def _detect(keys: Keys, metadata: Metadata) -> bool:
    if says_ai_toolkit(metadata) and mostly(keys, lambda key: key.startswith(_PREFIXES)):
        return True
    return _flux_bfl_peft(keys)


def _notes(grouped: Grouped, metadata: Metadata) -> list[str]:
    if any("alpha" in module.tensors for module in grouped.modules.values()):
        return []
    return ["ai-toolkit writes no alpha: scale 1 (alpha = rank)"]


FORMAT = SchemeFormat(
    id="ai-toolkit",
    description="ostris/ai-toolkit (PEFT lora_A/lora_B, no alpha; FLUX as diffusion_model. + BFL names)",
    scheme=SCHEME,
    detector=_detect,
    notes=_notes,
)
