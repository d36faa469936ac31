"""Every kind's ΔW against LyCORIS' own functional code (``lycoris-lora``), the independent oracle of issue 16.

lorahub's formulas (:mod:`lorahub.adapters.delta`) were written from ComfyUI and LyCORIS and are tested against
loops and torch forwards in ``test_delta.py``; here random factors at several shapes go through LyCORIS' own
``lycoris.functional`` (and, for GLoRA and IA3, which have no functional module, the module-level functions of
``lycoris.modules``), on the CPU, in float64, with the plain torch backend pinned (no compiled or fused kernels).

What the oracle does not decide, the test states: the scale. LyCORIS' functional calls take the scale as an argument
(``gamma``); its modules compute it as ``alpha / lora_dim``, with full-rank LoKr forced to scale 1. lorahub's rule
(:func:`lorahub.adapters.delta.lora_scale`) is the same, and :func:`test_lokr_scale_rule_matches_lycoris_rank_scale`
checks it against ``functional.lokr.diff_weight``, which derives the scale itself.

Two LyCORIS behaviours are deliberately not followed, each pinned by a test so a change on either side shows up:
its state-dict reader takes a Tucker LoKr's rank from ``lokr_w2_a``'s second axis, which in Tucker files is the
output factor rather than the rank (the module trains with ``alpha / lora_dim``, and ComfyUI reads the rank from
``lokr_w2_b``, as lorahub does); and its OFT Cayley transform inverts in float32 (``.float().inverse()``), so OFT and
BOFT agree to float32 precision only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from lorahub.adapters.delta import delta_weight

torch = pytest.importorskip("torch")
pytest.importorskip("lycoris")

from lycoris.functional import boft, diag_oft, locon, loha, lokr  # noqa: E402
from lycoris.functional.general import add_scaled, weight_decompose  # noqa: E402
from lycoris.modules.glora import _glora_weight  # noqa: E402
from lycoris.modules.ia3 import _ia3_weight  # noqa: E402

F64_TOL = 1e-6
"""lorahub computes in float64 and returns float32: one float32 rounding of the largest entry."""
F32_TOL = 1e-5
"""LyCORIS inverts the OFT Cayley matrix in float32."""


def factors(seed: int, **shapes: tuple[int, ...]) -> dict[str, Any]:
    gen = np.random.default_rng(seed)
    return {role: gen.standard_normal(shape) for role, shape in shapes.items()}


def t(array: Any, dtype: Any = np.float64) -> Any:
    return None if array is None else torch.from_numpy(np.asarray(array, dtype=dtype))


def t32(array: Any) -> Any:
    return t(array, np.float32)


def assert_matches(ours: Any, theirs: Any, tol: float = F64_TOL) -> None:
    expected = theirs.detach().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
    actual = np.asarray(ours, dtype=np.float64)
    assert actual.size == expected.size
    actual = actual.reshape(expected.shape)
    scale = float(np.abs(expected).max())
    assert scale > 0
    assert float(np.abs(actual - expected).max()) <= tol * scale


# --- LoRA, LoCon, LoCon-Tucker ---------------------------------------------------------------------------------


LOCON_SHAPES = [
    {"down": (4, 24), "up": (16, 4)},
    {"down": (8, 40), "up": (20, 8)},
    {"down": (1, 7), "up": (5, 1)},
    {"down": (4, 8, 3, 3), "up": (12, 4, 1, 1)},
    {"down": (3, 6, 1, 1), "up": (10, 3, 1, 1)},
    {"down": (4, 8, 1, 1), "up": (12, 4, 1, 1), "mid": (4, 4, 3, 3)},
    {"down": (2, 5, 1, 1), "up": (7, 2, 1, 1), "mid": (2, 2, 5, 3)},
]


@pytest.mark.parametrize("shapes", LOCON_SHAPES, ids=lambda s: "x".join(map(str, s["up"] + s["down"])))
@pytest.mark.parametrize("alpha", [None, 1.0, 6.0])
def test_lora_locon_and_tucker(shapes: dict[str, tuple[int, ...]], alpha: float | None) -> None:
    tensors = factors(1, **shapes)
    rank = shapes["down"][0]
    scale = 1.0 if alpha is None else alpha / rank
    theirs = locon.diff_weight(
        t(tensors["down"]), t(tensors["up"]), t(tensors.get("mid")), gamma=scale, backend="torch"
    )
    assert_matches(delta_weight(tensors, alpha=alpha).weight, theirs)


# --- LoHa ----------------------------------------------------------------------------------------------------------


LOHA_SHAPES = [
    (16, 24, 4, ()),
    (30, 12, 8, ()),
    (9, 5, 1, ()),
    (12, 8, 4, (3, 3)),
    (6, 10, 2, (1, 1)),
]


@pytest.mark.parametrize(("out", "inp", "rank", "kernel"), LOHA_SHAPES)
def test_loha(out: int, inp: int, rank: int, kernel: tuple[int, ...]) -> None:
    """Files flatten a conv LoHa's ``hada_wN_b`` to [rank, in·kh·kw]; LyCORIS takes it shaped [rank, in, kh, kw]."""
    tensors = factors(2, hada_w1_a=(out, rank), hada_w2_a=(out, rank), hada_w1_b=(rank, inp, *kernel),
                      hada_w2_b=(rank, inp, *kernel))  # fmt: skip
    alpha = 2.0 * rank
    theirs = loha.diff_weight(
        t(tensors["hada_w1_b"]), t(tensors["hada_w1_a"]), t(tensors["hada_w2_b"]), t(tensors["hada_w2_a"]),
        None, None, gamma=alpha / rank, backend="torch",
    )  # fmt: skip
    flat = {role: a.reshape(a.shape[0], -1) for role, a in tensors.items()}
    assert_matches(delta_weight(flat, alpha=alpha).weight, theirs)


@pytest.mark.parametrize(("out", "inp", "rank", "kernel"), [(12, 8, 4, (3, 3)), (6, 10, 3, (1, 3)), (5, 4, 2, (2, 2))])
def test_loha_tucker(out: int, inp: int, rank: int, kernel: tuple[int, ...]) -> None:
    """Tucker LoHa files hold ``hada_wN_a`` as [rank, out] and ``hada_wN_b`` as [rank, in] around a core."""
    tensors = factors(3, hada_w1_a=(rank, out), hada_w1_b=(rank, inp), hada_t1=(rank, rank, *kernel),
                      hada_w2_a=(rank, out), hada_w2_b=(rank, inp), hada_t2=(rank, rank, *kernel))  # fmt: skip
    theirs = loha.diff_weight(
        t(tensors["hada_w1_b"]), t(tensors["hada_w1_a"]), t(tensors["hada_w2_b"]), t(tensors["hada_w2_a"]),
        t(tensors["hada_t1"]), t(tensors["hada_t2"]), gamma=3.0 / rank, backend="torch",
    )  # fmt: skip
    assert_matches(delta_weight(tensors, alpha=3.0).weight, theirs)


# --- LoKr ----------------------------------------------------------------------------------------------------------


LOKR_CASES: dict[str, dict[str, tuple[int, ...]]] = {
    "full-full": {"lokr_w1": (4, 4), "lokr_w2": (4, 6)},
    "full-lowrank": {"lokr_w1": (4, 4), "lokr_w2_a": (4, 2), "lokr_w2_b": (2, 6)},
    "full-lowrank-wide": {"lokr_w1": (2, 8), "lokr_w2_a": (16, 4), "lokr_w2_b": (4, 40)},
    "lowrank-full": {"lokr_w1_a": (8, 2), "lokr_w1_b": (2, 6), "lokr_w2": (3, 5)},
    "lowrank-lowrank": {"lokr_w1_a": (8, 3), "lokr_w1_b": (3, 8), "lokr_w2_a": (16, 3), "lokr_w2_b": (3, 12)},
    "conv-full-full": {"lokr_w1": (2, 4), "lokr_w2": (6, 2, 3, 3)},
    "conv-full-lowrank": {"lokr_w1": (4, 2), "lokr_w2_a": (3, 2), "lokr_w2_b": (2, 4, 3, 3)},
    "conv-1x1": {"lokr_w1": (4, 4), "lokr_w2_a": (8, 2), "lokr_w2_b": (2, 8, 1, 1)},
}


def _lokr_theirs(tensors: dict[str, Any], scale: float) -> Any:
    roles = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2")
    return lokr.kron_weight(*(t(tensors.get(role)) for role in roles), scale=scale, backend="torch")


def _lokr_rank(shapes: dict[str, tuple[int, ...]]) -> int | None:
    for role in ("lokr_w2_b", "lokr_w1_b"):
        if role in shapes:
            return shapes[role][0]
    return None


@pytest.mark.parametrize("case", LOKR_CASES)
def test_lokr_every_factorisation(case: str) -> None:
    shapes = LOKR_CASES[case]
    tensors = factors(4, **shapes)
    rank = _lokr_rank(shapes)
    alpha = 5.0
    scale = 1.0 if rank is None else alpha / rank  # LyCORIS' LokrModule: full-rank LoKr has scale 1
    assert_matches(delta_weight(tensors, alpha=alpha).weight, _lokr_theirs(tensors, scale))


@pytest.mark.parametrize(("rank", "kernel", "w1"), [(2, (3, 3), (2, 4)), (3, (3, 1), (4, 2)), (2, (5, 5), (1, 3))])
def test_lokr_tucker(rank: int, kernel: tuple[int, ...], w1: tuple[int, int]) -> None:
    """Tucker LoKr: ``lokr_w2_a`` [rank, out₂], ``lokr_w2_b`` [rank, in₂], ``lokr_t2`` [rank, rank, kh, kw]."""
    tensors = factors(5, lokr_w1=w1, lokr_w2_a=(rank, 6), lokr_w2_b=(rank, 4), lokr_t2=(rank, rank, *kernel))
    assert_matches(delta_weight(tensors, alpha=4.0).weight, _lokr_theirs(tensors, 4.0 / rank))


@pytest.mark.parametrize("case", ["full-full", "full-lowrank", "lowrank-full", "lowrank-lowrank", "conv-full-lowrank"])
def test_lokr_scale_rule_matches_lycoris_rank_scale(case: str) -> None:
    """``functional.lokr.diff_weight`` derives the scale from alpha itself (``rank_scale``): alpha over the rank of
    the factorised half, 1 for a full-rank LoKr."""
    shapes = LOKR_CASES[case]
    tensors = factors(6, **shapes)
    roles = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2")
    theirs = lokr.diff_weight(*(t(tensors.get(role)) for role in roles), gamma=7.0, backend="torch")
    assert_matches(delta_weight(tensors, alpha=7.0).weight, theirs)


def test_tucker_lokr_rank_is_read_from_w2_b_unlike_lycoris_rank_scale() -> None:
    """LyCORIS' ``rank_scale`` (and its state-dict reader) take the rank from ``lokr_w2_a.shape[1]``, the output
    factor in a Tucker file: the module trained with ``alpha / lora_dim``, which is what lorahub (and ComfyUI) apply."""
    tensors = factors(7, lokr_w1=(2, 4), lokr_w2_a=(2, 6), lokr_w2_b=(2, 4), lokr_t2=(2, 2, 3, 3))
    ours = delta_weight(tensors, alpha=4.0).weight
    roles = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2")
    reader = lokr.diff_weight(*(t(tensors.get(role)) for role in roles), gamma=4.0, backend="torch")
    assert_matches(ours, reader * 6 / 2)  # its scale 4/6 (out₂), ours 4/2 (the rank)


# --- full, norm ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(16, 24), (12, 8, 3, 3), (32,)])
def test_full_and_norm_deltas_are_lycoris_add_scaled(shape: tuple[int, ...]) -> None:
    gen = np.random.default_rng(8)
    base, diff, bias = gen.standard_normal(shape), gen.standard_normal(shape), gen.standard_normal(shape[0])
    role = "w_norm" if len(shape) == 1 else "diff"
    bias_role = "b_norm" if len(shape) == 1 else "diff_b"
    delta = delta_weight({role: diff, bias_role: bias}, alpha=None, base=base)
    merged = add_scaled(t(base), t(diff), 1.0, backend="torch")
    assert_matches(base + delta.weight, merged)
    assert delta.bias is not None
    assert_matches(delta.bias, t(bias))


# --- DoRA ----------------------------------------------------------------------------------------------------------


DORA_KINDS: dict[str, dict[str, tuple[int, ...]]] = {
    "lora": {"down": (4, 24), "up": (16, 4)},
    "locon": {"down": (4, 8, 3, 3), "up": (16, 4, 1, 1)},
    "loha": {"hada_w1_a": (16, 4), "hada_w1_b": (4, 24), "hada_w2_a": (16, 4), "hada_w2_b": (4, 24)},
    "lokr": {"lokr_w1": (4, 4), "lokr_w2_a": (4, 2), "lokr_w2_b": (2, 6)},
}


@pytest.mark.parametrize("kind", DORA_KINDS)
@pytest.mark.parametrize("on_output", [True, False])
def test_dora_on_every_kind_and_both_axes(kind: str, on_output: bool) -> None:
    """LyCORIS' ``weight_decompose`` on ``W + ΔW``: ``dora_scale`` is [out, 1, …] with ``wd_on_output``, else
    [1, in, …] (LyCORIS before ``wd_on_output``, and its default when off)."""
    shapes = DORA_KINDS[kind]
    tensors = factors(9, **shapes)
    gen = np.random.default_rng(10)
    base = gen.standard_normal((16, 8, 3, 3) if kind == "locon" else (16, 24))
    plain = delta_weight(tensors, alpha=3.0, base=base).weight.astype(np.float64)
    axis = 0 if on_output else 1
    magnitude_shape = tuple(base.shape[i] if i == axis else 1 for i in range(base.ndim))
    dora_scale = np.abs(gen.standard_normal(magnitude_shape)) + 0.5
    ours = delta_weight({**tensors, "dora_scale": dora_scale}, alpha=3.0, base=base)
    assert ours.kind == f"{kind}+dora"
    merged = weight_decompose(t(base + plain), t(dora_scale), 1, on_output, backend="torch")
    assert_matches(base + ours.weight, merged)


# --- OFT, BOFT -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("blocks", "size", "rest"), [(4, 4, (24,)), (2, 8, (8, 3, 3)), (6, 2, (5,)), (1, 16, (16,))])
@pytest.mark.parametrize("constraint", [0.0, 0.05, 100.0])
@pytest.mark.parametrize("rescale", [False, True])
def test_diagonal_oft(blocks: int, size: int, rest: tuple[int, ...], constraint: float, rescale: bool) -> None:
    gen = np.random.default_rng(11)
    out = blocks * size
    base = gen.standard_normal((out, *rest))
    tensors: dict[str, Any] = {"oft_blocks": 0.1 * gen.standard_normal((blocks, size, size))}
    if rescale:
        tensors["oft_rescale"] = 1 + 0.1 * gen.standard_normal((out, *([1] * len(rest))))
    ours = delta_weight(tensors, alpha=constraint, base=base).weight
    theirs = diag_oft.diff_weight(
        t32(base), t32(tensors["oft_blocks"]), t32(tensors.get("oft_rescale")), constraint=constraint, backend="torch"
    )
    assert_matches(ours, theirs, F32_TOL)


BOFT_SHAPES = [(1, 4, 4, (8,)), (2, 4, 4, (8,)), (3, 4, 4, (6,)), (2, 2, 8, (4, 3, 3)), (4, 8, 2, (5,))]
"""(stages, blocks, block size, the rest of the base shape)."""


@pytest.mark.parametrize("shape", BOFT_SHAPES)
@pytest.mark.parametrize("constraint", [0.0, 0.1])
@pytest.mark.parametrize("rescale", [False, True])
def test_butterfly_oft(shape: tuple[int, int, int, tuple[int, ...]], constraint: float, rescale: bool) -> None:
    stages, blocks, size, rest = shape
    gen = np.random.default_rng(12)
    out = blocks * size
    base = gen.standard_normal((out, *rest))
    tensors: dict[str, Any] = {"oft_blocks": 0.1 * gen.standard_normal((stages, blocks, size, size))}
    if rescale:
        tensors["oft_rescale"] = 1 + 0.1 * gen.standard_normal((out, *([1] * len(rest))))
    ours = delta_weight(tensors, alpha=constraint, base=base).weight
    theirs = boft.diff_weight(
        t32(base), t32(tensors["oft_blocks"]), t32(tensors.get("oft_rescale")), constraint=constraint, backend="torch"
    )
    assert_matches(ours, theirs, F32_TOL)


# --- GLoRA, IA3 ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("out", "inp", "rank", "kernel"), [(16, 24, 4, ()), (8, 8, 2, ()), (5, 30, 3, ()),
                                                             (12, 8, 4, (3, 3)), (6, 4, 2, (1, 3))])  # fmt: skip
def test_glora(out: int, inp: int, rank: int, kernel: tuple[int, ...]) -> None:
    """The current LyCORIS layout: ``a1`` [in, r], ``a2`` [r, in], ``b1`` [out, r], ``b2`` [r, in] (1×1 convs
    around the base, and ``b2`` with the kernel, on a conv); scale alpha/r."""
    gen = np.random.default_rng(13)
    base = gen.standard_normal((out, inp, *kernel))
    one = (1,) * len(kernel)
    tensors = factors(14, glora_a1=(inp, rank, *one), glora_a2=(rank, inp, *one), glora_b1=(out, rank, *one),
                      glora_b2=(rank, inp, *kernel))  # fmt: skip
    theirs = _glora_weight(t(base), *(t(tensors[f"glora_{n}"]) for n in ("a1", "a2", "b1", "b2")), None, 6.0 / rank)
    assert_matches(delta_weight(tensors, alpha=6.0, base=base).weight, theirs)


@pytest.mark.parametrize("on_input", [False, True])
@pytest.mark.parametrize(("out", "inp"), [(16, 24), (7, 3)])
def test_ia3(out: int, inp: int, on_input: bool) -> None:
    gen = np.random.default_rng(15)
    base = gen.standard_normal((out, inp))
    vector = gen.standard_normal(inp if on_input else out)
    tensors: dict[str, Any] = {"ia3_weight": vector}
    if on_input:
        tensors["ia3_on_input"] = np.array(1)
    theirs = _ia3_weight(t(base), t(vector), on_input, 1.0, True)
    assert_matches(delta_weight(tensors, alpha=None, base=base).weight, theirs)
