"""XLabs FLUX LoRA: ``double_blocks.N.processor.{qkv,proj}_lora{1,2}.{down,up}.weight`` (``lora1`` image stream,
``lora2`` text stream), single blocks ``processor.{qkv,proj}_lora``; no alpha (scale 1).

The module is the processor's LoRA child, as in diffusers' old attention processors; its name says which fused
BFL projection it adapts.
"""

from __future__ import annotations

import re

from lorahub.formats.grouping import Grouped, Keys, Metadata, Scheme, SchemeFormat
from lorahub.formats.naming import XLABS_SUFFIXES

SCHEME = Scheme(prefixes={}, suffixes=XLABS_SUFFIXES, bare="transformer")
_KEY = re.compile(r"(double|single)_blocks\.\d+\.processor\.(qkv|proj)_lora\d*\.(down|up)\.weight")


def _detect(keys: Keys, metadata: Metadata) -> bool:
    return any(".processor." in key and _KEY.fullmatch(key) for key in keys)


def _notes(grouped: Grouped, metadata: Metadata) -> list[str]:
    return ["XLabs LoRAs carry no alpha: scale 1"]


FORMAT = SchemeFormat(
    id="xlabs",
    description="XLabs FLUX LoRA (double_blocks.N.processor.qkv_lora1.down.weight)",
    scheme=SCHEME,
    detector=_detect,
    notes=_notes,
)
