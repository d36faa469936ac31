"""The canonical adapter (docs/concepts/architecture.md, decision 1): every format is read into and written out of it.

A layer is named by its canonical diffusers path (``unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q``,
``text_encoder.text_model.encoder.layers.0.self_attn.q_proj``); a module whose name does not map (an unknown
architecture, a family without name tables yet, a name outside the inventory) keeps the file's own name and is listed
in :attr:`CanonicalAdapter.unmapped`, never dropped. Tensors are the storage values widened to float32 (exact for
fp16/bf16/fp8 sources); ``dtype`` remembers the storage type so a writer can keep it.

Why a module of its own: the reader (:mod:`lorahub.adapters.model`) and the SD3/FLUX splitter it calls
(:mod:`lorahub.adapters.native`) both need these types, and the splitter must not depend on the reader.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from lorahub.adapters.delta import Delta, delta_weight, lora_factors, module_scale, written_alpha

__all__ = ["BaseOf", "CanonicalAdapter", "CanonicalLayer", "no_base"]

Array = npt.NDArray[Any]


@dataclass
class CanonicalLayer:
    """One adapted layer: canonical (or own) name, kind, tensors by role (float32), alpha, storage dtype."""

    name: str
    kind: str
    tensors: dict[str, Array]
    alpha: float | None
    dtype: str
    source_name: str = ""
    """The module's name in the file it was read from."""
    rslora: bool = False
    """The scale is ``alpha/√rank`` (PEFT ``use_rslora``, as the file's config said), not ``alpha/rank``. Ask the
    layer for its :attr:`scale`, :meth:`delta` and :meth:`factors` rather than reading ``alpha``: they apply it."""

    @property
    def rank(self) -> int | None:
        down = self.tensors.get("down")
        return None if down is None else int(down.shape[0])

    @property
    def scale(self) -> float:
        """The factor a LoRA/LoCon layer's ``up @ down`` is multiplied by (:func:`~lorahub.adapters.delta.lora_scale`,
        or an A1111 ``scale`` tensor)."""
        rank = self.rank
        if rank is None:
            raise ValueError(f"{self.name} is a {self.kind} layer without LoRA factors")
        return module_scale(self.tensors, self.alpha, rank, rslora=self.rslora)

    def delta(self, base: Array | None = None, *, precision: type[np.floating[Any]] = np.float64) -> Delta:
        """ΔW of the layer (:func:`~lorahub.adapters.delta.delta_weight`), with its own scale rule."""
        return delta_weight(self.tensors, alpha=self.alpha, base=base, rslora=self.rslora, precision=precision)

    def factors(self) -> tuple[Array, Array, float] | None:
        """``(up, down, scale)`` of a plain LoRA/LoCon layer (:func:`~lorahub.adapters.delta.lora_factors`)."""
        return lora_factors(self.tensors, alpha=self.alpha, rslora=self.rslora)

    def plain(self) -> CanonicalLayer:
        """The same layer under the plain ``alpha/rank`` rule (the equivalent ``alpha·√rank`` for rsLoRA), for code
        that computes with alpha and rank directly: fusing SD3/FLUX projections, formats without an rsLoRA flag."""
        rank = self.rank
        if not self.rslora or rank is None:
            return self
        return replace(self, alpha=written_alpha(self.alpha, rank, rslora=True), rslora=False)


@dataclass
class CanonicalAdapter:
    """A whole adapter: family (``sd1``, ``sdxl``, …, ``unknown``), layers by name, header metadata, source format."""

    family: str
    layers: dict[str, CanonicalLayer]
    metadata: dict[str, str]
    source_format: str
    unmapped: list[str] = field(default_factory=list)
    """Layers that kept the file's own name because it does not map to a canonical path."""
    unsplit: list[str] = field(default_factory=list)
    """Fused SD3/FLUX modules kept whole under the file's own name (also in ``unmapped``), each with the reason its
    delta cannot be split exactly into the canonical projections (a LoKr over ``img_attn.qkv``, say)."""


BaseOf = Callable[[CanonicalLayer], "Array | None"]
"""The base weight of a layer, for kinds whose ΔW depends on it (None where it is not known or not needed)."""


def no_base(layer: CanonicalLayer) -> None:
    """A :data:`BaseOf` that knows no base weight."""
    return None
