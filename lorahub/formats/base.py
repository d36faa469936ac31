"""What a format module produces: the file's keys grouped into modules, with a role for every tensor.

Detection and parsing work on the header alone (names, dtypes, shapes, metadata): no tensor bytes are read, so
they are fast on any file size and safe on any input. Canonical (diffusers) module naming is the conversion
layer's business; here a module keeps the name the file gives it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from lorahub.files.safetensors import TensorInfo

COMPONENTS = ("unet", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "unknown")
"""Where a module lives. ``text_encoder`` is the first (CLIP-L, or SD2's OpenCLIP-H), ``_2`` SDXL/SD3's CLIP-G,
``_3`` the T5 of SD3 and FLUX (kohya spells FLUX's T5 ``lora_te3``)."""

ROLES = frozenset(
    {
        "down", "up", "mid", "alpha", "scale", "up_bias",
        "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2",
        "lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2",
        "diff", "diff_b", "w_norm", "b_norm", "set_weight",
        "oft_blocks", "oft_rescale",
        "glora_a1", "glora_a2", "glora_b1", "glora_b2",
        "dora_scale", "magnitude",
        "ia3_weight", "ia3_on_input",
    }
)  # fmt: skip
"""Format-neutral names of a module's tensors. ``down``/``up`` are kohya ``lora_down``/``lora_up`` = PEFT
``lora_A``/``lora_B``; ``dora_scale`` is the kohya/LyCORIS DoRA tensor ([out,1] or [1,in]), ``magnitude`` PEFT's
``lora_magnitude_vector`` ([out]); ``up_bias`` is PEFT ``lora_B.bias``; ``scale`` is A1111's per-module scale key."""


@dataclass
class Module:
    """One adapted layer: its name as spelled in the file, its component and its tensors by role."""

    name: str
    component: str
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    config_alpha: float | None = None
    """Alpha from a config (PEFT ``lora_alpha``/``alpha_pattern``) when the file stores none as a tensor."""
    rslora: bool = False
    """The file's config says PEFT ``use_rslora`` for this module's component: its scale is alpha/√rank, not
    alpha/rank (:func:`lorahub.adapters.delta.lora_scale`). Only configs can say so: kohya-style files have no such
    flag, and LyCORIS' ``rs_lora`` stores the equivalent alpha·√rank as the alpha tensor."""


@dataclass
class Embedding:
    """A textual-inversion embedding carried inside the adapter file."""

    name: str
    vectors: int
    dim: int
    keys: list[str]
    encoder: str | None = None  # "clip_l", "clip_g", … when the file says


@dataclass
class Layout:
    """A file read by one format: modules, embedded embeddings, and every key that fitted nowhere."""

    format: str
    modules: list[Module]
    embeddings: list[Embedding] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Format(Protocol):
    """One on-disk layout. ``FORMATS`` in ``lorahub.formats`` lists them in detection order."""

    id: str
    description: str

    def detect(self, keys: Mapping[str, TensorInfo], metadata: Mapping[str, str]) -> bool: ...

    def parse(self, keys: Mapping[str, TensorInfo], metadata: Mapping[str, str]) -> Layout: ...
