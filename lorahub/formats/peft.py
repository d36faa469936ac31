"""A raw PEFT ``PeftModel`` state dict: ``base_model.model.<module>.lora_A.weight`` (``adapter_model.safetensors``).

The alpha lives in ``adapter_config.json`` beside the file, not in it, so modules carry none. fal's Kontext LoRAs
use this wrapper around BFL names; the component is read from the module path.
"""

from __future__ import annotations

from lorahub.formats.grouping import Grouped, Keys, Metadata, Scheme, SchemeFormat, mostly
from lorahub.formats.naming import DOTTED_SUFFIXES, PEFT_PREFIXES

SCHEME = Scheme(prefixes=PEFT_PREFIXES, suffixes=DOTTED_SUFFIXES)
_PREFIXES = tuple(PEFT_PREFIXES)


def _detect(keys: Keys, metadata: Metadata) -> bool:
    return mostly(keys, lambda key: key.startswith(_PREFIXES))


def _notes(grouped: Grouped, metadata: Metadata) -> list[str]:
    if any("alpha" in module.tensors for module in grouped.modules.values()):
        return []
    return ["alpha is in the adapter_config.json that accompanied this file; without it loaders use alpha = rank"]


FORMAT = SchemeFormat(
    id="peft",
    description="raw PEFT state dict (base_model.model. prefix, lora_A/lora_B)",
    scheme=SCHEME,
    detector=_detect,
    notes=_notes,
)
