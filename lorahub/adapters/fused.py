"""Exact maths between one fused projection (FLUX ``img_attn.qkv``/``linear1``, SD3 ``attn.qkv``) and its parts.

A fused Linear's output rows are the parts' rows stacked (``[q; k; v]``, ``[q; k; v; mlp]``), so its ΔW is the parts'
ΔW stacked, and each direction has one exact answer (sd-scripts ``networks/convert_flux_lora.py``):

* **fused → parts** (:func:`split`). ``up`` is cut by rows. When the rows of each part use their own columns of
  the rank (``up`` block-sparse, as every split→fused writer produces), ``down`` is cut along the rank the same way
  and each part keeps only its own rank; otherwise every part must keep the *whole* ``down`` (chunking a shared
  ``down`` is the mflux#423/#458 corruption). Alpha is set per part so that ``alpha/rank`` stays the fused scale.
  A part whose rows are all zero while the others are block-sparse adapts nothing and is left out.
* **parts → fused** (:func:`fuse`). Parts that share one ``down`` and one scale (what a dense split made) become
  that ``down`` with their ``up`` rows stacked — the original module back, bit for bit. Otherwise ``down`` is
  concatenated and ``up`` is block-diagonal, rank = Σ ranks, alpha = scale × rank (= r·n when parts share rank r
  and alpha r, the sd-scripts/ai-toolkit rule); parts whose scales differ have the ratio folded into their ``up``
  block. A missing part is zero rows, which is exactly what "not adapted" means.
* :func:`swap_scale_shift` swaps the two row halves (``[shift, scale]`` ↔ ``[scale, shift]``), for ``up`` and
  any bias delta.

Only LoRA (``down``/``up``, optional PEFT ``up_bias`` and ComfyUI ``diff_b``) and full ``diff`` deltas are cut
this way. A Kronecker (LoKr) delta over the fused rows has no exact per-part factors (diffusers
``_convert_non_diffusers_flux2_lokr_to_diffusers``), and the other kinds are not needed here, so
:func:`splittable` says why it refuses instead. Arithmetic is numpy float32 on the values the reader widened;
alphas are Python floats.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from lorahub.adapters.delta import alpha_for_scale, lora_scale

__all__ = ["Part", "fuse", "part_widths", "split", "splittable", "swap_scale_shift", "swapped"]

Array = npt.NDArray[Any]

LORA_ROLES = frozenset({"down", "up", "up_bias", "diff_b"})
FULL_ROLES = frozenset({"diff", "diff_b"})
ROW_ROLES = ("up", "up_bias", "diff", "diff_b")
"""Roles whose first axis is the layer's output rows."""


@dataclass
class Part:
    """One layer's tensors by role (float32) and its alpha under the plain ``alpha/rank`` rule (None = no alpha,
    scale 1); an rsLoRA layer comes here as :meth:`~lorahub.adapters.canonical.CanonicalLayer.plain`."""

    tensors: dict[str, Array]
    alpha: float | None


def _kind(tensors: Mapping[str, Array]) -> str | None:
    roles = set(tensors)
    if {"down", "up"} <= roles <= LORA_ROLES:
        return "lora"
    if "diff" in roles and roles <= FULL_ROLES:
        return "full"
    return None


def splittable(tensors: Mapping[str, Array]) -> str | None:
    """None when the rows of this delta can be cut or swapped exactly, else the reason (for the refusal)."""
    if _kind(tensors) is not None:
        down = tensors.get("down")
        if down is not None and down.ndim != 2:
            return "a fused projection is a Linear; this delta has a convolution kernel"
        return None
    roles = ", ".join(sorted(tensors))
    if {"lokr_w1", "lokr_w1_a"} & set(tensors):
        return "a LoKr (Kronecker) delta over the fused rows has no exact per-projection factors"
    return f"only LoRA and full deltas are split exactly (this module has {roles})"


def rows(tensors: Mapping[str, Array]) -> int:
    """The layer's output width."""
    return int((tensors["up"] if "up" in tensors else tensors["diff"]).shape[0])


def columns(tensors: Mapping[str, Array]) -> int:
    """The layer's input width."""
    return int((tensors["down"] if "down" in tensors else tensors["diff"]).shape[1])


def part_widths(out: int, ratios: Sequence[int]) -> list[int] | None:
    """Output widths of the parts from the fused width (``9216``, ``(1,1,1)`` → 3 × 3072), None if it does not
    divide: sizes come from the tensors, never from a model's hard-coded hidden size."""
    total = sum(ratios)
    if total <= 0 or out % total:
        return None
    unit = out // total
    return [ratio * unit for ratio in ratios]


# --- swap --------------------------------------------------------------------------------------------------------


def swap_scale_shift(tensors: Mapping[str, Array]) -> dict[str, Array]:
    """The two row halves swapped in every output-row tensor (an involution: the same call maps both ways)."""
    out = dict(tensors)
    for role in ROW_ROLES:
        value = tensors.get(role)
        if value is not None:
            half = value.shape[0] // 2
            out[role] = np.ascontiguousarray(np.concatenate([value[half:], value[:half]], axis=0))
    return out


def swapped(rule: str, tensors: Mapping[str, Array]) -> bool:
    """Whether a swap rule applies to these tensors: ``always``, or ``pre-only`` when rows = 2 × input width (SD3's
    last context block, whose modulation is ``[shift, scale]`` instead of six chunks)."""
    if rule == "always":
        return True
    return rule == "pre-only" and rows(tensors) == 2 * columns(tensors)


# --- fused → parts -----------------------------------------------------------------------------------------------


def _bounds(widths: Sequence[int]) -> list[tuple[int, int]]:
    edges = [int(edge) for edge in np.cumsum([0, *widths])]
    return list(itertools.pairwise(edges))


def _supports(up: Array, bounds: Sequence[tuple[int, int]]) -> list[Array]:
    """For each part, the rank columns its ``up`` rows use (non-zero anywhere)."""
    return [np.flatnonzero(np.any(up[a:b] != 0, axis=0)) for a, b in bounds]


def _block_sparse(supports: Sequence[Array]) -> bool:
    """Supports pairwise disjoint and at least one non-empty: then each part owns its rank columns."""
    used = np.concatenate(supports) if supports else np.empty(0, dtype=np.int64)
    return used.size > 0 and np.unique(used).size == used.size


def split(tensors: Mapping[str, Array], alpha: float | None, widths: Sequence[int]) -> list[Part | None]:
    """The parts of a fused delta, exactly; None for a part that adapts nothing (see the module docstring)."""
    bounds = _bounds(widths)
    if _kind(tensors) == "full":
        return [
            Part({role: tensors[role][a:b] for role in ("diff", "diff_b") if role in tensors}, None) for a, b in bounds
        ]
    down, up = tensors["down"], tensors["up"]
    rank = int(down.shape[0])
    scale = lora_scale(alpha, rank)
    supports = _supports(up, bounds)
    sparse = _block_sparse(supports)
    parts: list[Part | None] = []
    for (a, b), support in zip(bounds, supports, strict=True):
        if sparse and support.size == 0:
            parts.append(None)
            continue
        if sparse:
            part = {"down": down[support], "up": up[a:b][:, support]}
            part_alpha = None if alpha is None else alpha_for_scale(scale, int(support.size))
        else:
            part = {"down": down.copy(), "up": up[a:b]}
            part_alpha = alpha
        for role in ("up_bias", "diff_b"):
            if role in tensors:
                part[role] = tensors[role][a:b]
        parts.append(Part({k: np.ascontiguousarray(v) for k, v in part.items()}, part_alpha))
    return parts


# --- parts → fused -----------------------------------------------------------------------------------------------


class FuseError(ValueError):
    """Parts that cannot form one fused layer (mixed kinds, different input widths, inconsistent widths)."""


def fuse(parts: Sequence[Part | None], widths: Sequence[int]) -> Part:
    """One fused delta from its parts in row order (None = the part is not adapted: zero rows)."""
    present = [part for part in parts if part is not None]
    kinds = {_kind(part.tensors) for part in present}
    if not present or len(kinds) != 1 or None in kinds:
        raise FuseError(f"parts of kinds {sorted(map(str, kinds))} cannot be fused")
    if len({columns(part.tensors) for part in present}) != 1:
        raise FuseError("parts have different input widths")
    for part, width in zip(parts, widths, strict=True):
        if part is not None and rows(part.tensors) != width:
            raise FuseError(f"a part has {rows(part.tensors)} rows where {width} are expected")
    if kinds == {"full"}:
        return _fuse_full(parts, widths, columns(present[0].tensors))
    return _fuse_lora(parts, widths)


def _stack(parts: Sequence[Part | None], widths: Sequence[int], role: str, width: int | None = None) -> Array | None:
    """Row-stack one role over the parts, zeros for parts without it; None when no part has it."""
    if not any(part is not None and role in part.tensors for part in parts):
        return None
    blocks = []
    for part, rows_ in zip(parts, widths, strict=True):
        value = None if part is None else part.tensors.get(role)
        if value is None:
            shape = (rows_,) if width is None else (rows_, width)
            value = np.zeros(shape, dtype=np.float32)
        blocks.append(value)
    return np.ascontiguousarray(np.concatenate(blocks, axis=0))


def _fuse_full(parts: Sequence[Part | None], widths: Sequence[int], fan_in: int) -> Part:
    tensors = {"diff": _stack(parts, widths, "diff", fan_in)}
    bias = _stack(parts, widths, "diff_b")
    if bias is not None:
        tensors["diff_b"] = bias
    return Part({k: v for k, v in tensors.items() if v is not None}, None)


def _biases(parts: Sequence[Part | None], widths: Sequence[int]) -> dict[str, Array]:
    out = {}
    for role in ("up_bias", "diff_b"):
        value = _stack(parts, widths, role)
        if value is not None:
            out[role] = value
    return out


def _fused_alpha(present: Sequence[Part], scale: float, rank: int) -> float | None:
    """None when no part had an alpha (scale 1 throughout), else scale × fused rank."""
    if all(part.alpha is None for part in present):
        return None
    return alpha_for_scale(scale, rank)


def _fuse_lora(parts: Sequence[Part | None], widths: Sequence[int]) -> Part:
    present = [part for part in parts if part is not None]
    scales = [lora_scale(p.alpha, int(p.tensors["down"].shape[0])) for p in present]
    first = present[0].tensors["down"]
    shared = len(set(scales)) == 1 and all(np.array_equal(p.tensors["down"], first) for p in present[1:])
    if shared:
        rank = int(first.shape[0])
        up = _stack(parts, widths, "up", rank)
        assert up is not None
        tensors = {"down": first.copy(), "up": up, **_biases(parts, widths)}
        return Part(tensors, _fused_alpha(present, scales[0], rank))
    common = Counter(scales).most_common(1)[0][0]
    rank = sum(int(p.tensors["down"].shape[0]) for p in present)
    up = np.zeros((sum(widths), rank), dtype=np.float32)
    downs = []
    column = 0
    for part, (a, b) in zip(parts, _bounds(widths), strict=True):
        if part is None:
            continue
        r = int(part.tensors["down"].shape[0])
        block = part.tensors["up"]
        scale = lora_scale(part.alpha, r)
        if scale != common:  # fold the ratio into this part's up block (exact up to one rounding)
            block = (block.astype(np.float64) * (scale / common)).astype(np.float32)
        up[a:b, column : column + r] = block
        downs.append(part.tensors["down"])
        column += r
    tensors = {"down": np.ascontiguousarray(np.concatenate(downs, axis=0)), "up": up, **_biases(parts, widths)}
    return Part(tensors, _fused_alpha(present, common, rank))
