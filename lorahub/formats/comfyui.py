"""ComfyUI-style names: ``diffusion_model.<native module path>`` and ``text_encoders.<encoder>.…``.

Written by ComfyUI's own LoRA save/extract and training nodes, diffusion-pipe, SimpleTuner and others. Any
LoRA-family suffix may follow (kohya ``lora_down``/``alpha``, PEFT ``lora_A``, LyCORIS ``lokr_w1``, ``diff``), because
ComfyUI reads them all by module; the layer kinds tell the algorithm, the format id only the naming. The one
exception is ai-toolkit's FLUX layout (see ``ai_toolkit``), which is detected first.
"""

from __future__ import annotations

from lorahub.formats.grouping import Keys, Metadata, Scheme, SchemeFormat, mostly
from lorahub.formats.naming import COMFY_PREFIXES, DOTTED_SUFFIXES

SCHEME = Scheme(prefixes=COMFY_PREFIXES, suffixes=DOTTED_SUFFIXES)
_PREFIXES = tuple(COMFY_PREFIXES)


def _detect(keys: Keys, metadata: Metadata) -> bool:
    return mostly(keys, lambda key: key.startswith(_PREFIXES))


FORMAT = SchemeFormat(
    id="comfyui",
    description="ComfyUI names (diffusion_model., text_encoders.) with any LoRA-family suffix",
    scheme=SCHEME,
    detector=_detect,
)
