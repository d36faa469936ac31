"""BFL FLUX Control LoRA (FLUX.1 Canny/Depth ``-lora``): PEFT ``lora_A``/``lora_B`` on bare BFL module names, with
``lora_B.bias`` and the QK-norm scales shipped whole (``…norm.key_norm.scale``).

The norm scales replace the base weights (ComfyUI: ``set_weight``), and ``img_in`` is widened for the control
latents, so the base model's ``img_in`` must be padded before the LoRA applies (ComfyUI ``reshape_weight``).
"""

from __future__ import annotations

from lorahub.formats.grouping import Grouped, Keys, Metadata, Scheme, SchemeFormat
from lorahub.formats.naming import BFL_CONTROL_SUFFIXES

SCHEME = Scheme(prefixes={}, suffixes=BFL_CONTROL_SUFFIXES, bare="transformer")
_NORM_SCALES = (".norm.query_norm.scale", ".norm.key_norm.scale")
_BFL_BLOCKS = ("double_blocks.", "single_blocks.")
_FLUX1_IMG_IN = 64
"""FLUX.1's ``img_in`` takes 64 channels (16 latent channels × 2×2 patches)."""


def _detect(keys: Keys, metadata: Metadata) -> bool:
    if "img_in.lora_A.weight" in keys:
        return True
    return any(key.startswith(_BFL_BLOCKS) and key.endswith(_NORM_SCALES) for key in keys)


def _notes(grouped: Grouped, metadata: Metadata) -> list[str]:
    notes = ["norm scales replace the base QK-norm weights (set), they are not deltas"]
    img_in = grouped.modules.get("img_in")
    down = img_in.tensors.get("down") if img_in is not None else None
    if down is not None and len(down.shape) == 2 and down.shape[1] != _FLUX1_IMG_IN:
        notes.append(f"img_in takes {down.shape[1]} channels, the base has {_FLUX1_IMG_IN}: pad img_in first")
    return notes


FORMAT = SchemeFormat(
    id="bfl-control",
    description="BFL FLUX Control LoRA (bare BFL names, lora_A/lora_B + lora_B.bias, QK-norm scales)",
    scheme=SCHEME,
    detector=_detect,
    notes=_notes,
)
