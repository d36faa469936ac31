"""On-disk LoRA layouts: the ordered registry and the one call that reads a header into a :class:`Layout`.

Order matters: the most specific signature comes first (cloneofsimo's ``unet:0:down`` cannot be anything else;
XLabs and BFL Control are bare names that the generic diffusers rule would otherwise swallow; OneTrainer and
LyCORIS reuse kohya names, so they precede kohya; ai-toolkit's FLUX layout is a special case of ComfyUI names).
The reasons for each rule live in the format's module.
"""

from __future__ import annotations

from collections.abc import Mapping

from lorahub.files.safetensors import TensorInfo
from lorahub.formats import (
    ai_toolkit,
    bfl_control,
    cloneofsimo,
    comfyui,
    diffusers,
    diffusers_old,
    kohya,
    lycoris,
    onetrainer,
    peft,
    unknown,
    xlabs,
)
from lorahub.formats.base import Embedding, Format, Layout, Module

__all__ = ["FORMATS", "Embedding", "Format", "Layout", "Module", "by_id", "detect"]

FORMATS: tuple[Format, ...] = (
    cloneofsimo.FORMAT,
    xlabs.FORMAT,
    bfl_control.FORMAT,
    diffusers_old.FORMAT,
    onetrainer.FORMAT,
    lycoris.FORMAT,
    kohya.FORMAT,
    ai_toolkit.FORMAT,
    comfyui.FORMAT,
    peft.FORMAT,
    diffusers.FORMAT,
    unknown.FORMAT,
)


def detect(keys: Mapping[str, TensorInfo], metadata: Mapping[str, str]) -> Layout:
    """The file read by the first format that claims it (``unknown`` claims everything)."""
    for fmt in FORMATS:
        if fmt.detect(keys, metadata):
            return fmt.parse(keys, metadata)
    return unknown.FORMAT.parse(keys, metadata)


def by_id(format_id: str) -> Format | None:
    """The registered format with this id, for callers that were told the format instead of detecting it."""
    return next((fmt for fmt in FORMATS if fmt.id == format_id), None)
