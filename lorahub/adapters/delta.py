"""ΔW: the change a module's tensors make to its base weight, for every LoRA-family kind.

This is the one place where ΔW is computed (docs/concepts/architecture.md, decision 1): inspect, verify, convert and
merge all call it, so each formula is written once and tested once. It uses numpy only (inspect and verify run on
machines without torch) and computes in float64 whatever the storage dtype (float32 where the caller narrows ΔW to
float32 or below at once: a pipeline's layer), returning float32; bf16/fp8 factors arrive
already widened by :func:`lorahub.files.numeric.to_float32`.

The formulas follow ComfyUI's weight adapters (``comfy/weight_adapter/``) and LyCORIS (``lycoris/modules/``), and
PEFT for DoRA (``peft/tuners/lora/dora.py``). Where ComfyUI departs from the trainers, the trainers win: DoRA's
output-axis norm is taken of ``W + ΔW`` (PEFT, LyCORIS; ComfyUI uses ``‖W‖``, ComfyUI#15458), and an OFT
``rescale`` is applied (LyCORIS; ComfyUI's OFT adapter ignores it).

Kinds that multiply the base weight (GLoRA, OFT, BOFT, IA3, set, DoRA) need it; without it they raise
:class:`lorahub.errors.BaseWeightRequiredError` rather than return something that looks like a delta.

The rules around ΔW live here too: a module's scale (:func:`lora_scale`: ``alpha/r``, rsLoRA ``alpha/sqrt(r)``; an
A1111 ``scale`` tensor in :func:`module_scale`) and its inverse, the alpha a writer stores (:func:`written_alpha`,
which also turns an rsLoRA alpha into the equivalent plain one for formats without an rsLoRA flag), the Tucker
``mid`` folded into ``down``, which kinds need the base weight. Whether a module is rsLoRA is read once, from the
file's config, into :attr:`lorahub.formats.base.Module.rslora` and the canonical layer's ``rslora``; code that holds
a canonical layer asks the layer (``layer.scale``, ``layer.delta()``, ``layer.factors()``), which calls these, so
no formula exists twice and no caller can forget the flag.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from lorahub import errors
from lorahub.files.numeric import scalar, to_float32
from lorahub.formats.layers import ROLE_KIND

if TYPE_CHECKING:
    from lorahub.files.safetensors import SafetensorsFile
    from lorahub.formats.base import Module

Array = npt.NDArray[Any]

BASE_KINDS = frozenset({"glora", "oft", "boft", "ia3", "set"})
"""Kinds whose ΔW is a function of the base weight; DoRA (a ``dora_scale``/``magnitude`` on any kind) is another."""
LOWRANK_KINDS = frozenset({"lora", "locon", "lora-tucker"})
"""Kinds whose ΔW is one low-rank product ``scale · up @ down`` (after folding a Tucker ``mid`` into ``down``)."""
DORA_ROLES = frozenset({"dora_scale", "magnitude"})
"""Roles of a DoRA magnitude vector (LyCORIS ``dora_scale``, PEFT ``magnitude``), which can ride on any kind."""

_EPS_Q = 1e-8
"""Added to ‖Q‖ before the OFT/BOFT constraint comparison, as ComfyUI and LyCORIS do."""


@dataclass(frozen=True)
class Delta:
    """A module's effect on its layer.

    ``weight`` is ΔW with the module's scale already applied, shaped like the base weight ([out, in] or
    [out, in, kh, kw]); without a base, kinds whose factors are flattened (LoHa, LoKr and GLoRA on convolutions)
    stay [out, in·kh·kw]. ``bias`` is the bias delta (``diff_b``, ``b_norm``, or the scaled PEFT ``lora_B.bias``).
    ``kind`` is the layer kind (``lora``, ``locon``, ``lokr``, …) with ``+dora`` appended when a magnitude vector
    rescaled it; ``scale`` is the factor that was applied (1 for kinds without one).
    """

    weight: Array
    bias: Array | None
    kind: str
    scale: float


@dataclass(frozen=True)
class _Inputs:
    tensors: Mapping[str, Array]
    alpha: float | None
    base: Array | None
    rslora: bool
    dtype: type[np.floating[Any]] = np.float64

    def get(self, role: str) -> Array:
        array = self.tensors.get(role)
        if array is None:
            raise errors.ModuleIncompleteError(f"the module has no {role} tensor, which its kind needs")
        return np.asarray(array, dtype=self.dtype)

    def optional(self, role: str) -> Array | None:
        array = self.tensors.get(role)
        return None if array is None else np.asarray(array, dtype=self.dtype)

    def weight(self) -> Array:
        if self.base is None:
            raise errors.BaseWeightRequiredError(
                "this kind needs the base weight", hint="pass --base with the base model"
            )
        return self.base


@dataclass(frozen=True)
class _Raw:
    weight: Array
    bias: Array | None
    scale: float


# --- scale ---------------------------------------------------------------------------------------------------------


def _rank_divisor(rank: int, rslora: bool) -> float:
    """What alpha is divided by: the rank, or its square root for rsLoRA (PEFT ``use_rslora``)."""
    return math.sqrt(rank) if rslora else float(rank)


def lora_scale(alpha: float | None, rank: int, *, rslora: bool = False) -> float:
    """The scale a rank-``rank`` module applies to its product: ``alpha/r`` (rsLoRA ``alpha/sqrt(r)``); no alpha
    means scale 1, as kohya and PEFT read a file without one. Every scale in lorahub comes from here."""
    if alpha is None:
        return 1.0
    return float(alpha) / _rank_divisor(rank, rslora)


def alpha_for_scale(scale: float, rank: int, *, rslora: bool = False) -> float:
    """The alpha that gives a rank-``rank`` module ``scale`` (the inverse of :func:`lora_scale`): what a writer
    stores when it changes a module's rank but must keep its scale."""
    return scale * _rank_divisor(rank, rslora)


def written_alpha(alpha: float | None, rank: int, *, rslora: bool = False, to_rslora: bool = False) -> float:
    """The alpha a writer stores so that the module keeps its scale under the target's rule (``to_rslora``: the
    written config says ``use_rslora``): the module's own alpha when the rule is unchanged, the rank when it has none
    (scale 1, which is what a file without alpha meant), and for an rsLoRA module written where the rule is ``alpha/r``
    (kohya, ComfyUI, a mixed PEFT config) the equivalent ``alpha·√r``, as LyCORIS itself stores ``rs_lora`` modules.
    Every written module thus states its scale explicitly."""
    if alpha is not None and rslora == to_rslora:
        return float(alpha)
    return alpha_for_scale(lora_scale(alpha, rank, rslora=rslora), rank, rslora=to_rslora)


def module_scale(tensors: Mapping[str, Array], alpha: float | None, rank: int, *, rslora: bool = False) -> float:
    """A rank-based module's scale: an A1111 ``scale`` tensor when the module has one, else :func:`lora_scale`."""
    explicit = tensors.get("scale")
    if explicit is not None:
        return float(np.asarray(explicit, dtype=np.float64).reshape(-1)[0])
    return lora_scale(alpha, rank, rslora=rslora)


def _rank_scale(inputs: _Inputs, rank: int) -> float:
    return module_scale(inputs.tensors, inputs.alpha, rank, rslora=inputs.rslora)


def _flat(array: Array) -> Array:
    return array.reshape(array.shape[0], -1)


def folded_down(tensors: Mapping[str, Array]) -> Array:
    """``down`` with a LoCon-Tucker ``mid`` folded in: a ``mid`` [r,r,kh,kw] after a 1×1 ``down`` [r,in,1,1] is one
    conv with kernel ``mid·down`` [r,in,kh,kw] (exact), which is how formats without ``mid`` (diffusers, PEFT) hold
    it. Without ``mid``, ``down`` itself.

    Why float32: the fold is computed in float64 and rounded once, to the float32 every other factor is held in
    (:class:`~lorahub.adapters.model.CanonicalLayer`), so a writer encodes it exactly as it encodes ``up``, and the
    lean converter (:mod:`lorahub.adapters.streaming`) writes the same bytes as the canonical one. Callers that
    decompose it (resize, merge) widen it again; one float32 rounding is far below any truncation they report."""
    down, mid = tensors["down"], tensors.get("mid")
    if mid is None:
        return down
    flat = np.asarray(down, dtype=np.float64).reshape(down.shape[0], -1)
    folded: Array = np.einsum("rshw,si->rihw", np.asarray(mid, dtype=np.float64), flat).astype(np.float32)
    return folded


# --- kinds ---------------------------------------------------------------------------------------------------------


def _lora(inputs: _Inputs) -> _Raw:
    """LoRA, LoCon (4-D down, 1×1 up) and LoCon-Tucker (``mid`` core between 1×1 down and up)."""
    down, up = inputs.get("down"), inputs.get("up")
    rank = down.shape[0]
    scale = _rank_scale(inputs, rank)
    mid = inputs.optional("mid")
    if mid is not None:
        weight = np.einsum("or,rshw,si->oihw", _flat(up), mid, _flat(down))
    else:
        weight = (_flat(up) @ _flat(down)).reshape(up.shape[0], *down.shape[1:])
    up_bias = inputs.optional("up_bias")
    return _Raw(scale * weight, None if up_bias is None else scale * up_bias, scale)


def _tucker(core: Array, b: Array, a: Array) -> Array:
    """LyCORIS' Tucker rebuild ``einsum('i j k l, j r, i p -> p r k l')``: a [r,out], b [r,in], core [r,r,kh,kw]."""
    result: Array = np.einsum("ijkl,jr,ip->prkl", core, _flat(b), a)
    return result


def _loha(inputs: _Inputs) -> _Raw:
    """LoHa: the Hadamard product of two low-rank (or Tucker) products, scaled by ``alpha / w1_b rows`` (applied to
    the first ``a`` factor, so no pass over ΔW is spent on it)."""
    scale = _rank_scale(inputs, inputs.get("hada_w1_b").shape[0])
    products = []
    for n in (1, 2):
        a, b, core = inputs.get(f"hada_w{n}_a"), inputs.get(f"hada_w{n}_b"), inputs.optional(f"hada_t{n}")
        if n == 1:
            a = scale * a
        products.append(_flat(a) @ _flat(b) if core is None else _tucker(core, b, a))
    return _Raw(np.multiply(products[0], products[1], out=products[0]), None, scale)


def _lokr_factor(inputs: _Inputs, n: int) -> tuple[Array, int | None]:
    whole = inputs.optional(f"lokr_w{n}")
    if whole is not None:
        return whole, None
    a, b = inputs.get(f"lokr_w{n}_a"), inputs.get(f"lokr_w{n}_b")
    core = inputs.optional("lokr_t2") if n == 2 else None
    return (_flat(a) @ _flat(b) if core is None else _tucker(core, b, a)), b.shape[0]


def _lokr(inputs: _Inputs) -> _Raw:
    """LoKr: ``kron(w1, w2)``; scale ``alpha / w2_b rows`` (else ``w1_b`` rows); full-rank LoKr ignores alpha."""
    w1, rank1 = _lokr_factor(inputs, 1)
    w2, rank2 = _lokr_factor(inputs, 2)
    rank = rank2 if rank2 is not None else rank1
    scale = 1.0 if rank is None else _rank_scale(inputs, rank)
    if w2.ndim == 4 and w1.ndim == 2:
        w1 = w1[:, :, None, None]
    return _Raw(np.kron(scale * w1, w2), None, scale)  # the scale on the small factor: one pass over ΔW


def _full(inputs: _Inputs) -> _Raw:
    """LyCORIS ``full``: the delta itself; a lone ``diff_b`` gives a zero weight delta (base-shaped if known)."""
    diff, bias = inputs.optional("diff"), inputs.optional("diff_b")
    if diff is None:
        bias = inputs.get("diff_b")
        diff = np.zeros_like(inputs.base) if inputs.base is not None else np.zeros((bias.shape[0], 0))
    return _Raw(diff, bias, 1.0)


def _norm(inputs: _Inputs) -> _Raw:
    """Norm-layer deltas (``w_norm``/``b_norm``), added as they are."""
    return _Raw(inputs.get("w_norm"), inputs.optional("b_norm"), 1.0)


def _set(inputs: _Inputs) -> _Raw:
    """``set_weight`` replaces the weight (BFL control norm scales), so ΔW is the difference to the base."""
    base = inputs.weight()
    return _Raw(inputs.get("set_weight").reshape(base.shape) - base, None, 1.0)


def _glora_is_old(a1: Array, a2: Array, b1: Array, b2: Array, base: Array) -> bool:
    """ComfyUI's shape test: the old LyCORIS layout unless the new one also fits and the base is not square."""
    old = b2.shape[1] == b1.shape[0] == a1.shape[0] == a2.shape[1]
    new = b2.shape[0] == b1.shape[1] == a1.shape[1] == a2.shape[0]
    if not old and not new:
        raise errors.ModuleShapeError("GLoRA factor shapes fit neither the old nor the new layout")
    return old and (not new or a2.shape[0] == base.shape[0] == base.shape[1])


def _glora(inputs: _Inputs) -> _Raw:
    """GLoRA: new layout ``W·a1·a2 + b1·b2`` (r = a2 rows), old ``b2·b1 + W·a2·a1`` (r = a1 rows)."""
    base = inputs.weight()
    a1, a2, b1, b2 = (_flat(inputs.get(f"glora_{n}")) for n in ("a1", "a2", "b1", "b2"))
    if _glora_is_old(a1, a2, b1, b2, base):
        scale = _rank_scale(inputs, a1.shape[0])
        weight = b2 @ b1 + (_flat(base) @ a2) @ a1
    else:
        scale = _rank_scale(inputs, a2.shape[0])
        through_a = np.einsum("oj...,jk->ok...", np.einsum("oi...,ij->oj...", base, a1), a2)
        weight = through_a.reshape(base.shape) + (b1 @ b2).reshape(base.shape)
    return _Raw(scale * weight.reshape(base.shape), None, scale)


def cayley(blocks: Array, constraint: float) -> Array:
    """``R = (I+Q)(I−Q)⁻¹`` with ``Q = B − Bᵀ`` per block; a positive ``constraint`` caps the Frobenius norm of
    all of Q (LyCORIS/ComfyUI use alpha so; kohya OFT files mean ``alpha·out_dim``, which the caller must pass)."""
    q = blocks - np.swapaxes(blocks, -1, -2)
    if constraint > 0:
        norm = float(np.linalg.norm(q)) + _EPS_Q
        if norm > constraint:
            q = q * (constraint / norm)
    eye = np.eye(blocks.shape[-1], dtype=blocks.dtype)
    result: Array = (eye + q) @ np.linalg.inv(eye - q)
    return result


def _rescaled(inputs: _Inputs, rotated: Array, base: Array) -> Array:
    rescale = inputs.optional("oft_rescale")
    if rescale is None:
        return rotated
    return rotated * rescale.reshape(base.shape[0], *([1] * (base.ndim - 1)))


def _oft(inputs: _Inputs) -> _Raw:
    """Diagonal OFT: each block of output rows is rotated by ``Rᵀ`` (ComfyUI's ``einsum('k n m, k n ...')``)."""
    base = inputs.weight()
    blocks = inputs.get("oft_blocks")
    rotation = cayley(blocks, inputs.alpha or 0.0)
    grouped = base.reshape(blocks.shape[0], blocks.shape[1], *base.shape[1:])
    rotated = np.einsum("knm,kn...->km...", rotation, grouped).reshape(base.shape)
    return _Raw(_rescaled(inputs, rotated, base) - base, None, 1.0)


def _boft(inputs: _Inputs) -> _Raw:
    """BOFT: ``m`` butterfly stages; stage i regroups rows with stride ``2^i·b/2``, rotates blocks, regroups back."""
    base = inputs.weight()
    blocks = inputs.get("oft_blocks")
    stages, _, size, _ = blocks.shape
    rotation = cayley(blocks, inputs.alpha or 0.0)
    rest = base.shape[1:]
    current = base
    for i in range(stages):
        stride = 2**i * (size // 2)
        grouped = current.reshape(-1, 2, stride, *rest).swapaxes(1, 2).reshape(-1, size, *rest)
        turned = np.einsum("bij,bj...->bi...", rotation[i], grouped)
        current = turned.reshape(-1, stride, 2, *rest).swapaxes(1, 2).reshape(base.shape)
    return _Raw(_rescaled(inputs, current, base) - base, None, 1.0)


def _ia3(inputs: _Inputs) -> _Raw:
    """(IA)^3: ``W ⊙ w`` along the output axis, or the input axis when ``on_input`` is set (A1111); no scale."""
    base = inputs.weight()
    vector = inputs.get("ia3_weight").reshape(-1)
    flag = inputs.optional("ia3_on_input")
    on_input = flag is not None and bool(np.any(flag))
    shape = [1] * base.ndim
    shape[1 if on_input else 0] = vector.shape[0]
    return _Raw(base * vector.reshape(shape), None, 1.0)


KINDS: Mapping[str, Callable[[_Inputs], _Raw]] = {
    "lora": _lora,
    "locon": _lora,
    "lora-tucker": _lora,
    "loha": _loha,
    "lokr": _lokr,
    "full": _full,
    "norm": _norm,
    "set": _set,
    "glora": _glora,
    "oft": _oft,
    "boft": _boft,
    "ia3": _ia3,
}
"""Kind → ΔW rule. Kind names are those of :func:`lorahub.formats.layers.layer_kind`."""


def kind_of(tensors: Mapping[str, Array]) -> str:
    """The layer kind from roles and array ranks, with the priorities of :func:`lorahub.formats.layers.layer_kind`."""
    found = [ROLE_KIND[role] for role in tensors if role in ROLE_KIND]
    if not found:
        return "full" if "diff_b" in tensors else "unknown"
    kind = min(found)[1]
    if kind == "oft":
        return "boft" if np.ndim(tensors["oft_blocks"]) == 4 else "oft"
    if kind == "lora":
        if "mid" in tensors:
            return "lora-tucker"
        if "down" in tensors and np.ndim(tensors["down"]) == 4:
            return "locon"
    return kind


def _factor_size(tensors: Mapping[str, Any], up: str, down: str, core: str) -> int:
    """Entries of ``up @ down`` ([out, r] by [r, in, …]), or of a Tucker rebuild ([r, out], [r, in], core)."""
    a, b, t = np.shape(tensors[up]), np.shape(tensors[down]), tensors.get(core)
    if t is None:
        return int(a[0] * math.prod(b[1:]))
    return int(a[1] * b[1] * math.prod(np.shape(t)[2:]))


def _lokr_size(tensors: Mapping[str, Any], n: int) -> int:
    whole = tensors.get(f"lokr_w{n}")
    if whole is not None:
        return int(np.size(whole))
    return _factor_size(tensors, f"lokr_w{n}_a", f"lokr_w{n}_b", "lokr_t2" if n == 2 else "")


def delta_size(tensors: Mapping[str, Any]) -> int | None:
    """How many entries a module's ΔW has, from its factors' shapes alone (nothing is multiplied), or None when ΔW
    takes the base weight's shape (GLoRA, OFT, BOFT, IA3, set, a lone ``diff_b``).

    Why: a loader that computes ΔW only when it is first used checks at load that each module fits its layer, so a
    file made for another model is refused before anything is applied."""
    kind = kind_of(tensors)
    if kind in LOWRANK_KINDS:
        up, down, mid = np.shape(tensors["up"]), np.shape(tensors["down"]), tensors.get("mid")
        kernel = np.shape(mid)[2:] if mid is not None else down[2:]
        return int(up[0] * down[1] * math.prod(kernel))
    if kind == "loha":
        return _factor_size(tensors, "hada_w1_a", "hada_w1_b", "hada_t1")
    if kind == "lokr":
        return _lokr_size(tensors, 1) * _lokr_size(tensors, 2)
    for role in ("diff", "w_norm"):
        if role in tensors:
            return int(np.size(tensors[role]))
    return None


# --- DoRA ----------------------------------------------------------------------------------------------------------


def has_dora(tensors: Mapping[str, object]) -> bool:
    """Whether a DoRA magnitude vector rescales the module's delta (which then depends on the base weight)."""
    return not DORA_ROLES.isdisjoint(tensors)


def needs_base(kind: str, tensors: Mapping[str, object]) -> bool:
    """Whether a module's ΔW is a function of the base weight (GLoRA, OFT, BOFT, IA3, set, or any kind with DoRA)."""
    return kind in BASE_KINDS or has_dora(tensors)


def _dora(tensors: Mapping[str, Array], base: Array, delta: Array) -> Array:
    """``W' = m · (W+ΔW)/‖W+ΔW‖`` and ΔW' = W' − W. The norm is per output row for PEFT ``magnitude`` [out] and a
    ``dora_scale`` [out,1,…], per input column for a ``dora_scale`` [1,in,…] (LyCORIS before ``wd_on_output``)."""
    magnitude = tensors.get("magnitude")
    if magnitude is None:
        magnitude = tensors["dora_scale"]
    magnitude = np.asarray(magnitude, dtype=base.dtype)
    combined = base + delta
    out_dim = combined.shape[0]
    if magnitude.shape[0] == out_dim and magnitude.size == out_dim:
        norm = np.linalg.norm(_flat(combined), axis=1).reshape(out_dim, *([1] * (combined.ndim - 1)))
        scaled = combined * (magnitude.reshape(norm.shape) / norm)
    else:
        in_dim = combined.shape[1]
        if magnitude.size != in_dim:
            raise errors.ModuleShapeError(
                f"DoRA magnitude has shape {list(magnitude.shape)}, which fits neither {out_dim} outputs nor "
                f"{in_dim} inputs of the base weight"
            )
        norm = np.linalg.norm(_flat(np.swapaxes(combined, 0, 1)), axis=1)
        norm = norm.reshape(1, in_dim, *([1] * (combined.ndim - 2)))
        scaled = combined * (magnitude.reshape(norm.shape) / norm)
    result: Array = scaled - base
    return result


# --- entry points --------------------------------------------------------------------------------------------------


def _fit(weight: Array, base: Array | None) -> Array:
    """Give ΔW the base weight's shape (LoHa/LoKr/GLoRA conv factors are flattened); refuse a size mismatch."""
    if base is None or weight.shape == base.shape:
        return weight
    if weight.size != base.size:
        raise errors.DeltaShapeError(
            f"the module's delta has shape {list(weight.shape)} but the base weight has shape {list(base.shape)}"
        )
    return weight.reshape(base.shape)


def delta_weight(
    tensors: Mapping[str, Array],
    *,
    alpha: float | None,
    base: Array | None = None,
    rslora: bool = False,
    precision: type[np.floating[Any]] = np.float64,
) -> Delta:
    """ΔW of one module from its tensors by role (see ``lorahub.formats.base.ROLES``), already widened to float.

    ``alpha`` is the module's alpha (tensor or config; an ``alpha`` entry in ``tensors`` is ignored): a scale
    ``alpha/r`` for rank-based kinds (``alpha/sqrt(r)`` with ``rslora``), the norm constraint for OFT/BOFT, unused
    elsewhere. ``base`` is the layer's weight; GLoRA, OFT, BOFT, IA3, set and DoRA need it. ``precision`` is what
    the arithmetic runs in: float64 (the default: conversions, checks and bakes compare and sum ΔW in it), or
    float32 for a ΔW that is narrowed to float32 or below at once (a pipeline layer's, :mod:`lorahub.sdk.patching`),
    where float64 would double the time for no digit that survives.
    """
    kind = kind_of(tensors)
    rule = KINDS.get(kind)
    if rule is None:
        raise errors.LayerKindUnsupportedError(f"no ΔW rule for a module with tensors {', '.join(sorted(tensors))}")
    dora = has_dora(tensors)
    if needs_base(kind, tensors) and base is None:
        label = f"{kind}+dora" if dora else kind
        raise errors.BaseWeightRequiredError(
            f"a {label} module's ΔW depends on the base weight, and this module needs the base weight",
            hint="pass --base with the base model the adapter was trained on",
        )
    base64 = None if base is None else np.asarray(base, dtype=precision)
    raw = rule(_Inputs(tensors, alpha, base64, rslora, precision))
    weight = _fit(raw.weight, base64)
    bias = raw.bias
    if kind != "full" and "diff_b" in tensors:  # ComfyUI LoRA extraction: lora_up/lora_down plus diff_b
        bias = np.asarray(tensors["diff_b"], dtype=precision) + (0.0 if bias is None else bias)
    if dora and base64 is not None:
        weight = _dora(tensors, base64, weight)
        kind = f"{kind}+dora"
    return Delta(
        weight=weight.astype(np.float32, copy=False),
        bias=None if bias is None else bias.astype(np.float32, copy=False),
        kind=kind,
        scale=float(raw.scale),
    )


def module_delta(container: SafetensorsFile, module: Module, *, base: Array | None = None) -> Delta:
    """ΔW of a parsed module read from its file: tensors widened with ``to_float32``, alpha from the module's
    ``alpha`` tensor or else its config alpha (PEFT ``lora_alpha``), rsLoRA as its config says."""
    tensors = {
        role: to_float32(container.raw(info.name), info) for role, info in module.tensors.items() if role != "alpha"
    }
    alpha = module.config_alpha
    info = module.tensors.get("alpha")
    if info is not None:
        stored = scalar(container.raw(info.name), info)
        alpha = stored if stored is not None else alpha
    return delta_weight(tensors, alpha=alpha, base=base, rslora=module.rslora)


def lora_factors(
    tensors: Mapping[str, Array], *, alpha: float | None, rslora: bool = False
) -> tuple[Array, Array, float] | None:
    """ΔW of a plain LoRA/LoCon module in factored form: ``ΔW = scale · up @ down`` with ``up`` [out, r] and
    ``down`` [r, in·kh·kw] (float32, flattened as :func:`delta_weight` does), or None for every other kind
    (Tucker ``mid``, DoRA, LoHa, LoKr, base-dependent kinds, …).

    Why: applying a rank-r LoRA as one float32 ``addmm`` is several times faster than building ΔW in float64, which
    matters when a whole checkpoint is baked; callers that combine factors (``cat`` merges) need them too. The scale
    follows the same rule as :func:`delta_weight`."""
    if kind_of(tensors) not in ("lora", "locon") or "mid" in tensors or has_dora(tensors):
        return None
    down, up = np.asarray(tensors["down"], dtype=np.float32), np.asarray(tensors["up"], dtype=np.float32)
    scale = _rank_scale(_Inputs(tensors, alpha, None, rslora), down.shape[0])
    return _flat(up), _flat(down), float(scale)
