"""Truncated SVD of adapter layers: rank reduction (``lorahub resize``) and LyCORIS kinds → plain LoRA (``--lossy``).

A LoRA's ΔW = s·B·A (B out×r, A r×in, conv kernels flattened into A) is never decomposed densely: with QR(B) = Q_b·R_b
and QR(Aᵀ) = Q_a·R_a, ΔW = Q_b·(s·R_b·R_aᵀ)·Q_aᵀ, so the SVD of the small r×r core gives the exact singular triplets of
ΔW at O((out+in)·r²) cost, far below a dense SVD's at real model shapes, with the same truncation error. Kinds without a
low-rank product (LoHa, LoKr, full, GLoRA, OFT/BOFT, IA3, DoRA) are materialised by :mod:`lorahub.adapters.delta` (with
the base weight where their ΔW depends on it) and decomposed densely; that is the price of leaving those kinds and why
it needs ``--lossy``.

New factors split the singular values evenly (up = U·√S, down = √S·Vᵀ) so neither side is much larger than the other
in fp16/bf16, and are written with alpha = rank (scale 1), as sd-scripts' resize does.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from lorahub import errors
from lorahub.adapters.canonical import CanonicalAdapter, CanonicalLayer
from lorahub.adapters.check import compare
from lorahub.adapters.delta import LOWRANK_KINDS, delta_weight, folded_down, has_dora
from lorahub.adapters.sources import load_adapter
from lorahub.adapters.writers import write_adapter

__all__ = [
    "LOWRANK_KINDS",
    "LayerResize",
    "ResizeReport",
    "approximate",
    "choose_rank",
    "product_svd",
    "resize",
    "resize_adapter",
]

Array = npt.NDArray[Any]

DEFAULT_CAP = 32
"""Rank used for kinds without one (full, OFT, IA3, full-rank LoKr) when ``--rank`` is not given."""


@dataclass(frozen=True)
class Svd:
    """Singular triplets of a ΔW, flattened to 2-D: ``u`` [out,k], ``s`` [k] descending, ``vt`` [k,in·kh·kw]."""

    u: Array
    s: Array
    vt: Array


@dataclass
class LayerResize:
    """One module's truncation: ranks before/after, energy kept (Σ kept σ² / Σ σ²), largest entry errors."""

    rank_before: int | None
    rank_after: int
    kept_energy: float
    max_abs_error: float = math.nan
    max_rel_error: float = math.nan


@dataclass
class ResizeReport:
    modules: int
    output: str = ""
    source_format: str = ""
    target: str = ""
    per_module: dict[str, LayerResize] = field(default_factory=dict)

    @property
    def min_kept_energy(self) -> float:
        return min((m.kept_energy for m in self.per_module.values()), default=1.0)

    @property
    def max_abs_error(self) -> float:
        return max((m.max_abs_error for m in self.per_module.values()), default=0.0)

    @property
    def max_rel_error(self) -> float:
        return max((m.max_rel_error for m in self.per_module.values()), default=0.0)


# --- maths -------------------------------------------------------------------------------------------------------


def product_svd(up: Array, down: Array) -> Svd:
    """Exact SVD of ``up @ down`` (up [m,r], down [r,n]) through QR of both factors and an r×r SVD."""
    up64, down64 = np.asarray(up, dtype=np.float64), np.asarray(down, dtype=np.float64)
    q_up, r_up = np.linalg.qr(up64)
    q_down, r_down = np.linalg.qr(down64.T)
    u, s, vt = np.linalg.svd(r_up @ r_down.T)
    return Svd(q_up @ u, s, vt @ q_down.T)


def dense_svd(weight: Array) -> Svd:
    flat = np.asarray(weight, dtype=np.float64).reshape(weight.shape[0], -1)
    u, s, vt = np.linalg.svd(flat, full_matrices=False)
    return Svd(u, s, vt)


def choose_rank(singular: Array, *, rank: int | None = None, energy: float | None = None) -> int:
    """``rank`` (capped by the number of singular values), or the smallest rank keeping ``energy`` of Σσ²."""
    available = int(singular.shape[0])
    if energy is not None:
        squares = np.asarray(singular, dtype=np.float64) ** 2
        total = float(squares.sum())
        if total == 0.0:
            return 1
        kept = np.cumsum(squares) / total
        return min(available, int(np.searchsorted(kept, energy - 1e-12)) + 1)
    assert rank is not None
    return max(1, min(rank, available))


def kept_energy(singular: Array, rank: int) -> float:
    squares = np.asarray(singular, dtype=np.float64) ** 2
    total = float(squares.sum())
    return 1.0 if total == 0.0 else float(squares[:rank].sum() / total)


def _probe_scale(layer: CanonicalLayer) -> float:
    """The scale delta.py applies to this LoHa/LoKr module, read off a probe with the same roles and ranks and every
    other dimension 1 (so the formula stays in delta.py)."""
    probe: dict[str, Array] = {}
    for role, array in layer.tensors.items():
        if role.endswith("_a"):
            probe[role] = np.zeros((1, array.shape[1]), np.float32)
        elif role.endswith("_b"):
            probe[role] = np.zeros((array.shape[0], 1), np.float32)
        elif role == "scale":
            probe[role] = array
        else:
            probe[role] = np.zeros((1, 1), np.float32)
    return delta_weight(probe, alpha=layer.alpha, rslora=layer.rslora).scale


def _flat(array: Array) -> Array:
    return np.asarray(array, dtype=np.float64).reshape(array.shape[0], -1)


def _loha_svd(layer: CanonicalLayer) -> Svd | None:
    """LoHa (A₁B₁)⊙(A₂B₂) = Σᵢⱼ (A₁[:,i]⊙A₂[:,j])(B₁[i,:]⊙B₂[j,:]): an exact rank r₁·r₂ product (face-splitting), so
    the QR route applies; None when that rank is not below the matrix size (then dense is as cheap)."""
    t = layer.tensors
    a1, b1, a2, b2 = (_flat(t[f"hada_w{n}"]) for n in ("1_a", "1_b", "2_a", "2_b"))
    rows, cols = a1.shape[0], b1.shape[1]
    if a1.shape[1] * a2.shape[1] >= min(rows, cols):
        return None
    up = (a1[:, :, None] * a2[:, None, :]).reshape(rows, -1) * _probe_scale(layer)
    down = (b1[:, None, :] * b2[None, :, :]).reshape(-1, cols)
    return product_svd(up, down)


def _lokr_factor(layer: CanonicalLayer, n: int) -> Array:
    whole = layer.tensors.get(f"lokr_w{n}")
    if whole is not None:
        return np.asarray(whole, dtype=np.float64)
    return _flat(layer.tensors[f"lokr_w{n}_a"]) @ _flat(layer.tensors[f"lokr_w{n}_b"])


_KRON_COLUMNS = 1024
"""Singular vectors built for a LoKr module (its singular values are all known): more than any rank asked of it."""


def _lokr_svd(layer: CanonicalLayer) -> tuple[Svd, bool]:
    """kron(W₁, W₂) has the singular triplets (s₁ᵢ·s₂ⱼ, u₁ᵢ⊗u₂ⱼ, v₁ᵢ⊗v₂ⱼ): two small SVDs, no dense ΔW. Also says
    whether W₂ is a conv kernel (then ΔW is 4-D)."""
    w1, w2 = _lokr_factor(layer, 1), _lokr_factor(layer, 2)
    u1, s1, v1 = np.linalg.svd(_flat(w1), full_matrices=False)
    u2, s2, v2 = np.linalg.svd(_flat(w2), full_matrices=False)
    scale = _probe_scale(layer)
    products = np.outer(s1, s2).ravel() * abs(scale)
    order = np.argsort(-products, kind="stable")
    top = order[:_KRON_COLUMNS]
    i, j = np.divmod(top, s2.shape[0])
    u = (u1[:, i][:, None, :] * u2[:, j][None, :, :]).reshape(u1.shape[0] * u2.shape[0], -1)
    vt = (v1[i][:, :, None] * v2[j][:, None, :]).reshape(top.shape[0], -1)
    return Svd(u if scale >= 0 else -u, products[order], vt), w2.ndim == 4


def layer_svd(layer: CanonicalLayer, base: Array | None) -> tuple[Svd, tuple[int, ...]]:
    """The layer's SVD and the shape of its ΔW (``down``'s kernel for LoCon). Low-rank kinds go through QR, LoHa
    through its face-splitting factors, LoKr through the SVDs of its Kronecker factors; others through a dense ΔW from
    delta.py, which raises a clear error when the kind needs ``base``."""
    dora = has_dora(layer.tensors)
    roles = set(layer.tensors)
    if layer.kind in LOWRANK_KINDS and not dora:
        down, up = folded_down(layer.tensors), layer.tensors["up"]
        scale = layer.scale
        svd = product_svd(up.reshape(up.shape[0], -1) * scale, down.reshape(down.shape[0], -1))
        return svd, (up.shape[0], *down.shape[1:])
    plain = not dora and not roles & {"hada_t1", "hada_t2", "lokr_t2", "diff_b"}
    if layer.kind == "loha" and plain:
        found = _loha_svd(layer)
        if found is not None:
            return found, _shape(found, base, None)
    if layer.kind == "lokr" and plain:
        svd, conv = _lokr_svd(layer)
        kernel = layer.tensors["lokr_w2"].shape[2:] if conv else None
        return svd, _shape(svd, base, kernel)
    weight = layer.delta(base).weight
    return dense_svd(weight), tuple(weight.shape)


def _shape(svd: Svd, base: Array | None, kernel: tuple[int, ...] | None) -> tuple[int, ...]:
    """ΔW's shape: the base weight's when given (conv factors are flattened), else 2-D or with the known kernel."""
    rows, cols = svd.u.shape[0], svd.vt.shape[1]
    if base is not None and base.size == rows * cols:
        return tuple(base.shape)
    if kernel:
        size = int(np.prod(kernel))
        return (rows, cols // size, *kernel)
    return (rows, cols)


def _truncated_layer(layer: CanonicalLayer, svd: Svd, rank: int, shape: tuple[int, ...]) -> CanonicalLayer:
    root = np.sqrt(svd.s[:rank])
    up = svd.u[:, :rank] * root
    down = root[:, None] * svd.vt[:rank]
    conv = len(shape) == 4
    up_shaped = up.reshape(shape[0], rank, 1, 1) if conv else up
    down_shaped = down.reshape(rank, *shape[1:])
    return CanonicalLayer(
        name=layer.name,
        kind="locon" if conv else "lora",
        tensors={"down": down_shaped.astype(np.float32), "up": up_shaped.astype(np.float32)},
        alpha=float(rank),
        dtype=layer.dtype,
        source_name=layer.source_name,
    )


def default_rank(layer: CanonicalLayer) -> int:
    """The rank a lossy conversion keeps by default: the module's own rank where it has one, else
    :data:`DEFAULT_CAP`."""
    for role in ("down", "hada_w1_b", "lokr_w2_b", "lokr_w1_b", "glora_a2"):
        array = layer.tensors.get(role)
        if array is not None:
            return int(array.shape[0])
    return DEFAULT_CAP


def approximate(
    layer: CanonicalLayer,
    *,
    rank: int | None = None,
    energy: float | None = None,
    base: Array | None = None,
) -> tuple[CanonicalLayer, LayerResize]:
    """The layer as a plain LoRA/LoCon of ``rank`` (or the rank keeping ``energy``; default
    :func:`default_rank`), with the truncation it cost."""
    svd, shape = layer_svd(layer, base)
    wanted = rank if rank is not None or energy is not None else default_rank(layer)
    kept = min(choose_rank(svd.s, rank=wanted, energy=energy), svd.u.shape[1])
    before = default_rank(layer) if layer.kind not in ("full", "oft", "boft", "ia3") else None
    report = LayerResize(before, kept, kept_energy(svd.s, kept))  # errors: from the written file's check
    return _truncated_layer(layer, svd, kept, shape), report


# --- resize ------------------------------------------------------------------------------------------------------


def resize_adapter(
    adapter: CanonicalAdapter,
    *,
    rank: int | None = None,
    energy: float | None = None,
    base: Callable[[CanonicalLayer], Array | None] | None = None,
) -> tuple[CanonicalAdapter, dict[str, LayerResize]]:
    """Every layer truncated (see :func:`approximate`); a new adapter, the source left as it was."""
    layers: dict[str, CanonicalLayer] = {}
    per_module: dict[str, LayerResize] = {}
    for name, layer in adapter.layers.items():
        weight = base(layer) if base is not None else None
        layers[name], per_module[name] = approximate(layer, rank=rank, energy=energy, base=weight)
    resized = CanonicalAdapter(
        family=adapter.family,
        layers=layers,
        metadata=dict(adapter.metadata),
        source_format=adapter.source_format,
        unmapped=list(adapter.unmapped),
    )
    return resized, per_module


def _check_request(rank: int | None, energy: float | None) -> None:
    if (rank is None) == (energy is None):
        raise errors.ConversionOptionError(
            "give exactly one of --rank and --energy", hint="e.g. --rank 16 or --energy 0.99"
        )
    if rank is not None and rank < 1:
        raise errors.ConversionOptionError(f"--rank must be at least 1, not {rank}")
    if energy is not None and not 0.0 < energy <= 1.0:
        raise errors.ConversionOptionError(f"--energy must be in (0, 1], not {energy}", hint="e.g. --energy 0.99")


RESIZE_TARGETS = {
    "kohya": "kohya",
    "lycoris": "kohya",
    "diffusers": "diffusers",
    "diffusers-old": "diffusers",
    "cloneofsimo": "diffusers",
    "peft": "peft",
    "comfyui": "comfyui",
}
"""Source format → the format a resized file is written in (the same naming family)."""


def resize(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    rank: int | None = None,
    energy: float | None = None,
    to: str | None = None,
    dtype: str | None = None,
) -> ResizeReport:
    """Reduce every LoRA/LoCon layer of ``src`` to ``rank`` (or to the smallest rank keeping ``energy`` of each
    layer's Σσ²) and write ``out`` in the source's naming (or ``to``). Other kinds are refused: converting them is
    ``lorahub convert --lossy``. The written file is read back and its ΔW compared with the truncated one."""
    _check_request(rank, energy)
    adapter = load_adapter(src)
    others = [f"{name} ({layer.kind})" for name, layer in adapter.layers.items() if layer.kind not in LOWRANK_KINDS]
    others += [n for n, layer in adapter.layers.items() if has_dora(layer.tensors)]
    if others:
        raise errors.ConversionRefusedError(
            f"{src}: {len(others)} module(s) are not plain LoRA/LoCon: {', '.join(others[:5])}",
            report=None,
            hint="convert them with `lorahub convert --lossy --rank N` (LyCORIS kinds, DoRA)",
        )
    if not adapter.layers:
        raise errors.ConversionRefusedError(
            f"{src}: no adapter modules found", report=None, hint="check that this is a LoRA file"
        )
    target = to or RESIZE_TARGETS.get(adapter.source_format, "kohya")
    resized, per_module = resize_adapter(adapter, rank=rank, energy=energy)
    written = write_adapter(resized, Path(out), to=target, dtype=dtype)  # type: ignore[arg-type]
    report = ResizeReport(
        modules=len(resized.layers),
        output=str(out),
        source_format=adapter.source_format,
        target=target,
        per_module=per_module,
    )
    _check_written(adapter, written, report)
    return report


def _check_written(source: CanonicalAdapter, written: CanonicalAdapter, report: ResizeReport) -> None:
    """Per-module errors of what was written against the source's ΔW: truncation and storage rounding together."""
    for name, (absolute, relative) in compare(source, written).items():
        if not math.isfinite(absolute):
            raise errors.ConversionRefusedError(
                f"the resized file lost {name}", report=None, hint="this is a lorahub bug; please report it"
            )
        report.per_module[name].max_abs_error = absolute
        report.per_module[name].max_rel_error = relative
