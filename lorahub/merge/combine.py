"""Combining adapters into one in canonical space: PEFT's ``cat`` and ``svd`` combinations (docs/loading.md).

``cat`` is exact: for a module adapted by several LoRAs, ``Σ wᵢ·sᵢ·BᵢAᵢ`` (sᵢ = αᵢ/rᵢ, or αᵢ/√rᵢ for rsLoRA) is one
LoRA of rank Σrᵢ whose down is the stacked Aᵢ and whose up is the side-by-side wᵢ·sᵢ·Bᵢ, with alpha = rank (scale 1).
``svd`` reduces that to rank N without ever forming the dense ΔW: QR of the stacked factors (B = Q_b R_b,
Aᵀ = Q_a R_a), an SVD of the small R_b·R_aᵀ, and the top N singular directions carried back through Q_b and Q_a.
Layers of other kinds (LoHa, LoKr, full) have no factors to stack: with ``svd`` their ΔW (delta.py) is summed densely
and decomposed; ``cat`` refuses them, since the result could not be a LoRA exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from lorahub import errors
from lorahub.adapters.canonical import CanonicalAdapter, CanonicalLayer
from lorahub.adapters.delta import LOWRANK_KINDS, folded_down

Array = npt.NDArray[Any]
Method = Literal["cat", "svd"]
METHODS: tuple[str, ...] = ("cat", "svd")
FACTOR_KINDS = LOWRANK_KINDS


@dataclass
class MergeReport:
    """What a merge did: the method, the rank of every merged module, and for ``svd`` the energy kept and the
    relative Frobenius error of each module (``cat`` is exact: zeros)."""

    method: str
    modules: int
    max_rank: int
    max_rel_error: float = 0.0
    min_kept_energy: float = 1.0
    per_module: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "modules": self.modules,
            "max_rank": self.max_rank,
            "max_rel_error": self.max_rel_error,
            "min_kept_energy": self.min_kept_energy,
        }


def _factors(layer: CanonicalLayer, weight: float) -> tuple[Array, Array]:
    """(up·w·s flattened to [out, r], down flattened to [r, in·k]) in float64; Tucker ``mid`` folded into down."""
    down = folded_down(layer.tensors).astype(np.float64)
    up = layer.tensors["up"].astype(np.float64)
    return weight * layer.scale * up.reshape(up.shape[0], -1), down.reshape(down.shape[0], -1)


def _is_factored(layer: CanonicalLayer) -> bool:
    extra = set(layer.tensors) - {"down", "up", "mid"}
    return layer.kind in FACTOR_KINDS and not extra


def _layer(name: str, up: Array, down: Array, template: CanonicalLayer, dtype: str) -> CanonicalLayer:
    """A LoRA layer of scale 1 (alpha = rank) with the template's down shape (conv kernels kept)."""
    rank = down.shape[0]
    down_shape = (rank, *template.tensors["down"].shape[1:]) if "mid" not in template.tensors else None
    if down_shape is None:  # a folded Tucker down carries the full kernel
        down_shape = (rank, *folded_down(template.tensors).shape[1:])
    up_shape = (up.shape[0], rank, *template.tensors["up"].shape[2:])
    return CanonicalLayer(
        name=name,
        kind=template.kind if template.kind != "lora-tucker" else "locon",
        tensors={
            "down": down.reshape(down_shape).astype(np.float32),
            "up": up.reshape(up_shape).astype(np.float32),
        },
        alpha=float(rank),
        dtype=dtype,
        source_name=name,
    )


def _truncate(up: Array, down: Array, rank: int) -> tuple[Array, Array, float, float]:
    """Best rank-``rank`` factors of up·down via QR + SVD of the small core; (up, down, kept energy, rel error)."""
    q_up, r_up = np.linalg.qr(up)
    q_down, r_down = np.linalg.qr(down.T)
    u, s, vt = np.linalg.svd(r_up @ r_down.T)
    return _split(q_up @ u, s, vt @ q_down.T, rank)


def _split(left: Array, s: Array, right: Array, rank: int) -> tuple[Array, Array, float, float]:
    k = max(1, min(rank, int(np.count_nonzero(s > s[0] * 1e-12)) if s.size and s[0] > 0 else 1))
    total = float(np.sum(s**2))
    kept = float(np.sum(s[:k] ** 2))
    root = np.sqrt(s[:k])
    energy = kept / total if total > 0 else 1.0
    error = math.sqrt(max(total - kept, 0.0) / total) if total > 0 else 0.0
    return left[:, :k] * root, root[:, None] * right[:k], energy, error


def _dense_sum(parts: Sequence[tuple[CanonicalLayer, float]]) -> tuple[Array, CanonicalLayer]:
    total: Array | None = None
    for layer, weight in parts:
        delta = layer.delta()
        if delta.bias is not None:
            raise errors.MergeRefusedError(
                f"{layer.name} changes a bias, which a merged LoRA cannot carry",
                hint="Bake it into the base instead (lorahub bake), which keeps its bias delta.",
            )
        flat = weight * delta.weight.astype(np.float64).reshape(delta.weight.shape[0], -1)
        total = flat if total is None else total + flat
    assert total is not None
    return total, parts[0][0]


def _merge_module(
    name: str, parts: Sequence[tuple[CanonicalLayer, float]], method: str, rank: int | None, dtype: str
) -> tuple[CanonicalLayer, dict[str, float]]:
    if all(_is_factored(layer) for layer, _ in parts):
        ups, downs = zip(*(_factors(layer, weight) for layer, weight in parts), strict=True)
        up, down = np.concatenate(ups, axis=1), np.concatenate(downs, axis=0)
        if method == "cat":
            return _layer(name, up, down, parts[0][0], dtype), {"rank": down.shape[0], "kept": 1.0, "error": 0.0}
        up, down, kept, error = _truncate(up, down, rank or down.shape[0])
        return _layer(name, up, down, parts[0][0], dtype), {"rank": down.shape[0], "kept": kept, "error": error}
    if method == "cat":
        kinds = sorted({layer.kind for layer, _ in parts if not _is_factored(layer)})
        raise errors.MergeRefusedError(
            f"{name} has {', '.join(kinds)} layers, which cannot be concatenated into a LoRA exactly",
            hint="Use --method svd --rank N: their ΔW is decomposed, and the error reported.",
        )
    dense, template = _dense_sum(parts)
    u, s, vt = np.linalg.svd(dense, full_matrices=False)
    default = max(int(layer.rank or 0) for layer, _ in parts) or 16
    up, down, kept, error = _split(u, s, vt, rank or default)
    base_shape = template.delta().weight.shape
    layer = CanonicalLayer(
        name=name,
        kind="locon" if len(base_shape) == 4 else "lora",
        tensors={
            "down": down.reshape(down.shape[0], *base_shape[1:]).astype(np.float32),
            "up": up.reshape(up.shape[0], up.shape[1], *([1, 1] if len(base_shape) == 4 else [])).astype(np.float32),
        },
        alpha=float(down.shape[0]),
        dtype=dtype,
        source_name=name,
    )
    return layer, {"rank": down.shape[0], "kept": kept, "error": error}


def merge_adapters(
    parts: Sequence[tuple[CanonicalAdapter, float]], *, method: Method = "cat", rank: int | None = None
) -> tuple[CanonicalAdapter, MergeReport]:
    """Combine ``(adapter, weight)`` pairs into one adapter (see the module docstring for the maths)."""
    if method not in METHODS:
        raise errors.MergeOptionError(f"unknown merge method {method!r}", hint="Choose cat (exact) or svd (--rank N).")
    if not parts:
        raise errors.MergeOptionError(
            "nothing to merge", hint="Name at least two adapters: lorahub merge A:0.7 B:0.5 …"
        )
    families = sorted({adapter.family for adapter, _ in parts})
    if len(families) > 1:
        raise errors.FamilyMismatchError(f"the adapters are for different base models: {', '.join(families)}")
    unmapped = [name for adapter, _ in parts for name in adapter.unmapped]
    if unmapped:
        raise errors.MergeRefusedError(
            f"{len(unmapped)} module(s) do not map to {families[0]} model paths (first: {unmapped[0]})",
            hint="Modules are matched by their canonical path; files of unknown layout cannot be merged exactly.",
        )
    by_module: dict[str, list[tuple[CanonicalLayer, float]]] = {}
    for adapter, weight in parts:
        for name, layer in adapter.layers.items():
            by_module.setdefault(name, []).append((layer, weight))
    dtype = parts[0][0].layers[next(iter(parts[0][0].layers))].dtype if parts[0][0].layers else "F16"
    layers: dict[str, CanonicalLayer] = {}
    report = MergeReport(method=method, modules=len(by_module), max_rank=0)
    for name, module_parts in by_module.items():
        layer, facts = _merge_module(name, module_parts, method, rank, dtype)
        layers[name] = layer
        report.per_module[name] = facts
        report.max_rank = max(report.max_rank, int(facts["rank"]))
        report.max_rel_error = max(report.max_rel_error, facts["error"])
        report.min_kept_energy = min(report.min_kept_energy, facts["kept"])
    metadata = {"ss_network_module": "networks.lora"}  # what kohya-reading tools expect of a LoRA file
    merged = CanonicalAdapter(family=families[0], layers=layers, metadata=metadata, source_format="merge")
    return merged, report
