"""ΔW for every kind against references written here independently (loops, torch ops, layer forwards)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lorahub import errors
from lorahub.adapters.delta import Delta, delta_weight, lora_scale, module_delta, written_alpha
from lorahub.files.safetensors import SafetensorsFile, write
from lorahub.formats.base import Module

OUT, IN, R, K = 12, 8, 4, 3


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def randn(gen: np.random.Generator, *shape: int) -> Any:
    return gen.standard_normal(shape).astype(np.float32)


def assert_close(actual: Any, expected: Any, tol: float = 1e-5) -> None:
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape
    scale = max(float(np.abs(expected).max()), 1e-12)
    assert float(np.abs(actual - expected).max()) <= tol * scale


def matmul_loops(a: Any, b: Any) -> Any:
    out = np.zeros((a.shape[0], b.shape[1]))
    for i, j in itertools.product(range(a.shape[0]), range(b.shape[1])):
        out[i, j] = sum(float(a[i, k]) * float(b[k, j]) for k in range(a.shape[1]))
    return out


# --- LoRA / LoCon / Tucker ---------------------------------------------------------------------------------------


def test_lora_linear_matches_loops_and_scale() -> None:
    gen = rng(1)
    down, up = randn(gen, R, IN), randn(gen, OUT, R)
    delta = delta_weight({"down": down, "up": up}, alpha=2.0)
    assert delta.kind == "lora"
    assert delta.scale == pytest.approx(0.5)
    assert delta.weight.dtype == np.float32
    assert_close(delta.weight, 0.5 * matmul_loops(up, down))


def test_lora_without_alpha_has_scale_one() -> None:
    gen = rng(2)
    down, up = randn(gen, R, IN), randn(gen, OUT, R)
    delta = delta_weight({"down": down, "up": up}, alpha=None)
    assert delta.scale == 1.0
    assert_close(delta.weight, matmul_loops(up, down))


def test_rslora_scale_is_alpha_over_sqrt_rank() -> None:
    gen = rng(3)
    down, up = randn(gen, R, IN), randn(gen, OUT, R)
    delta = delta_weight({"down": down, "up": up}, alpha=8.0, rslora=True)
    assert delta.scale == pytest.approx(8.0 / math.sqrt(R))
    assert_close(delta.weight, 8.0 / math.sqrt(R) * matmul_loops(up, down))


def test_written_alpha_keeps_the_scale_under_the_targets_rule() -> None:
    assert written_alpha(8.0, 4, rslora=True) == 16.0  # kohya: alpha'/r = alpha/√r
    assert written_alpha(8.0, 4, rslora=True, to_rslora=True) == 8.0
    assert written_alpha(6.0, 4, to_rslora=True) == 3.0  # a plain module in an rsLoRA config
    assert written_alpha(None, 9, rslora=True, to_rslora=True) == 3.0  # no alpha: scale 1 under either rule
    assert written_alpha(None, 9) == 9.0
    for alpha, rank, rslora in ((8.0, 8, True), (3.0, 7, False), (5.0, 3, True)):
        for to_rslora in (False, True):
            written = written_alpha(alpha, rank, rslora=rslora, to_rslora=to_rslora)
            assert lora_scale(written, rank, rslora=to_rslora) == pytest.approx(lora_scale(alpha, rank, rslora=rslora))


def test_up_bias_and_diff_b_become_the_bias_delta() -> None:
    gen = rng(4)
    down, up, up_bias, diff_b = randn(gen, R, IN), randn(gen, OUT, R), randn(gen, OUT), randn(gen, OUT)
    delta = delta_weight({"down": down, "up": up, "up_bias": up_bias, "diff_b": diff_b}, alpha=2.0)
    assert delta.bias is not None
    assert_close(delta.bias, 0.5 * up_bias + diff_b)


def test_lora_linear_matches_torch_forward() -> None:
    torch = pytest.importorskip("torch")
    gen = rng(5)
    weight, down, up, x = randn(gen, OUT, IN), randn(gen, R, IN), randn(gen, OUT, R), randn(gen, 5, IN)
    scale = 3.0 / R
    w, a, b, xt = (torch.from_numpy(t).double() for t in (weight, down, up, x))
    expected = torch.nn.functional.linear(xt, w) + scale * torch.nn.functional.linear(
        torch.nn.functional.linear(xt, a), b
    )
    delta = delta_weight({"down": down, "up": up}, alpha=3.0)
    merged = torch.nn.functional.linear(xt, w + torch.from_numpy(delta.weight).double())
    assert_close(merged.numpy(), expected.numpy())


def test_locon_conv_matches_loops_and_torch_forward() -> None:
    gen = rng(6)
    down, up = randn(gen, R, IN, K, K), randn(gen, OUT, R, 1, 1)
    delta = delta_weight({"down": down, "up": up}, alpha=1.0)
    assert delta.kind == "locon"
    expected = np.zeros((OUT, IN, K, K))
    for o, i, h, w in itertools.product(range(OUT), range(IN), range(K), range(K)):
        expected[o, i, h, w] = sum(float(up[o, r, 0, 0]) * float(down[r, i, h, w]) for r in range(R)) / R
    assert_close(delta.weight, expected)

    torch = pytest.importorskip("torch")
    f = torch.nn.functional
    weight, x = torch.randn(OUT, IN, K, K, dtype=torch.float64), torch.randn(2, IN, 9, 9, dtype=torch.float64)
    lora_out = f.conv2d(f.conv2d(x, torch.from_numpy(down).double(), padding=1), torch.from_numpy(up).double())
    expected_y = f.conv2d(x, weight, padding=1) + lora_out / R
    merged_y = f.conv2d(x, weight + torch.from_numpy(delta.weight).double(), padding=1)
    assert_close(merged_y.numpy(), expected_y.numpy())


def test_lora_tucker_matches_torch_forward_of_three_convs() -> None:
    torch = pytest.importorskip("torch")
    f = torch.nn.functional
    gen = rng(7)
    down, mid, up = randn(gen, R, IN, 1, 1), randn(gen, R, R, K, K), randn(gen, OUT, R, 1, 1)
    delta = delta_weight({"down": down, "mid": mid, "up": up}, alpha=2.0)
    assert delta.kind == "lora-tucker"
    assert delta.weight.shape == (OUT, IN, K, K)
    x = torch.randn(2, IN, 7, 7, dtype=torch.float64)
    d, m, u = (torch.from_numpy(t).double() for t in (down, mid, up))
    expected = f.conv2d(f.conv2d(f.conv2d(x, d), m, padding=1), u) * (2.0 / R)
    actual = f.conv2d(x, torch.from_numpy(delta.weight).double(), padding=1)
    assert_close(actual.numpy(), expected.numpy())


# --- LoHa ----------------------------------------------------------------------------------------------------------


def test_loha_matches_loops() -> None:
    gen = rng(8)
    t = {
        "hada_w1_a": randn(gen, OUT, R),
        "hada_w1_b": randn(gen, R, IN),
        "hada_w2_a": randn(gen, OUT, R),
        "hada_w2_b": randn(gen, R, IN),
    }
    delta = delta_weight(t, alpha=2.0)
    expected = matmul_loops(t["hada_w1_a"], t["hada_w1_b"]) * matmul_loops(t["hada_w2_a"], t["hada_w2_b"]) * 0.5
    assert delta.kind == "loha"
    assert_close(delta.weight, expected)


def tucker_loops(core: Any, b: Any, a: Any) -> Any:
    """m[p, q, k, l] = Σ_ij core[i, j, k, l] · b[j, q] · a[i, p]  (a: [r, out], b: [r, in])."""
    rank, _, kh, kw = core.shape
    out = np.zeros((a.shape[1], b.shape[1], kh, kw))
    for p, q, k, l_ in itertools.product(range(a.shape[1]), range(b.shape[1]), range(kh), range(kw)):
        out[p, q, k, l_] = sum(
            float(core[i, j, k, l_]) * float(b[j, q]) * float(a[i, p]) for i in range(rank) for j in range(rank)
        )
    return out


def test_loha_tucker_matches_loops() -> None:
    gen = rng(9)
    t = {
        "hada_w1_a": randn(gen, R, OUT),
        "hada_w1_b": randn(gen, R, IN),
        "hada_t1": randn(gen, R, R, K, K),
        "hada_w2_a": randn(gen, R, OUT),
        "hada_w2_b": randn(gen, R, IN),
        "hada_t2": randn(gen, R, R, K, K),
    }
    delta = delta_weight(t, alpha=1.0)
    expected = (
        tucker_loops(t["hada_t1"], t["hada_w1_b"], t["hada_w1_a"])
        * tucker_loops(t["hada_t2"], t["hada_w2_b"], t["hada_w2_a"])
        / R
    )
    assert_close(delta.weight, expected)


def test_loha_conv_without_tucker_takes_the_base_shape() -> None:
    gen = rng(10)
    t = {
        "hada_w1_a": randn(gen, OUT, R),
        "hada_w1_b": randn(gen, R, IN * K * K),
        "hada_w2_a": randn(gen, OUT, R),
        "hada_w2_b": randn(gen, R, IN * K * K),
    }
    flat = delta_weight(t, alpha=None)
    assert flat.weight.shape == (OUT, IN * K * K)
    shaped = delta_weight(t, alpha=None, base=np.zeros((OUT, IN, K, K), dtype=np.float32))
    assert shaped.weight.shape == (OUT, IN, K, K)
    assert_close(shaped.weight.reshape(OUT, -1), flat.weight)


# --- LoKr ----------------------------------------------------------------------------------------------------------


def kron_loops(w1: Any, w2: Any) -> Any:
    o1, i1 = w1.shape[:2]
    o2, i2 = w2.shape[:2]
    out = np.zeros((o1 * o2, i1 * i2, *w2.shape[2:]))
    for a, b, c, d in itertools.product(range(o1), range(i1), range(o2), range(i2)):
        out[a * o2 + c, b * i2 + d] = float(w1[a, b]) * w2[c, d]
    return out


def test_lokr_decomposed_w2_scale_uses_w2_rank() -> None:
    gen = rng(11)
    w1, w2a, w2b = randn(gen, 3, 2), randn(gen, 4, 2), randn(gen, 2, 4)
    delta = delta_weight({"lokr_w1": w1, "lokr_w2_a": w2a, "lokr_w2_b": w2b}, alpha=1.0)
    assert delta.scale == pytest.approx(0.5)
    assert delta.weight.shape == (OUT, IN)
    assert_close(delta.weight, 0.5 * kron_loops(w1, matmul_loops(w2a, w2b)))


def test_lokr_decomposed_w1_only_uses_w1_rank() -> None:
    gen = rng(12)
    w1a, w1b, w2 = randn(gen, 3, 1), randn(gen, 1, 2), randn(gen, 4, 4)
    delta = delta_weight({"lokr_w1_a": w1a, "lokr_w1_b": w1b, "lokr_w2": w2}, alpha=3.0)
    assert delta.scale == pytest.approx(3.0)
    assert_close(delta.weight, 3.0 * kron_loops(matmul_loops(w1a, w1b), w2))


def test_full_rank_lokr_ignores_alpha() -> None:
    gen = rng(13)
    w1, w2 = randn(gen, 3, 2), randn(gen, 4, 4)
    delta = delta_weight({"lokr_w1": w1, "lokr_w2": w2}, alpha=16.0)
    assert delta.scale == 1.0
    assert_close(delta.weight, kron_loops(w1, w2))


def test_lokr_conv_tucker_matches_loops() -> None:
    gen = rng(14)
    w1, w2a, w2b, t2 = randn(gen, 3, 2), randn(gen, 2, 4), randn(gen, 2, 4), randn(gen, 2, 2, K, K)
    delta = delta_weight({"lokr_w1": w1, "lokr_w2_a": w2a, "lokr_w2_b": w2b, "lokr_t2": t2}, alpha=1.0)
    assert delta.weight.shape == (OUT, IN, K, K)
    assert_close(delta.weight, 0.5 * kron_loops(w1, tucker_loops(t2, w2b, w2a)))


def test_lokr_conv_flat_w2_takes_the_base_shape() -> None:
    gen = rng(15)
    w1, w2a, w2b = randn(gen, 3, 2), randn(gen, 4, 2), randn(gen, 2, 4 * K * K)
    base = np.zeros((OUT, IN, K, K), dtype=np.float32)
    delta = delta_weight({"lokr_w1": w1, "lokr_w2_a": w2a, "lokr_w2_b": w2b}, alpha=None, base=base)
    w2 = matmul_loops(w2a, w2b).reshape(4, 4, K, K)
    assert_close(delta.weight, kron_loops(w1, w2))


# --- full, norm, set, IA3 ------------------------------------------------------------------------------------------


def test_full_diff_and_bias() -> None:
    gen = rng(16)
    diff, diff_b = randn(gen, OUT, IN), randn(gen, OUT)
    delta = delta_weight({"diff": diff, "diff_b": diff_b}, alpha=7.0)
    assert (delta.kind, delta.scale) == ("full", 1.0)
    assert_close(delta.weight, diff)
    assert delta.bias is not None
    assert_close(delta.bias, diff_b)


def test_set_weight_is_a_replacement() -> None:
    gen = rng(17)
    base, new = randn(gen, OUT), randn(gen, OUT)
    delta = delta_weight({"set_weight": new}, alpha=None, base=base)
    assert_close(base + delta.weight, new)


@pytest.mark.parametrize("on_input", [False, True])
def test_ia3_scales_one_axis(on_input: bool) -> None:
    gen = rng(18)
    base = randn(gen, OUT, IN)
    vector = randn(gen, IN if on_input else OUT)
    tensors = {"ia3_weight": vector, "ia3_on_input": np.array(on_input, dtype=np.float32)}
    delta = delta_weight(tensors, alpha=None, base=base)
    expected = np.zeros((OUT, IN))
    for o, i in itertools.product(range(OUT), range(IN)):
        expected[o, i] = base[o, i] * vector[i if on_input else o]
    assert_close(delta.weight, expected)


# --- GLoRA ---------------------------------------------------------------------------------------------------------


def test_glora_new_layout() -> None:
    gen = rng(19)
    base = randn(gen, OUT, IN)
    t = {
        "glora_a1": randn(gen, IN, R),
        "glora_a2": randn(gen, R, IN),
        "glora_b1": randn(gen, OUT, R),
        "glora_b2": randn(gen, R, IN),
    }
    delta = delta_weight(t, alpha=2.0, base=base)
    expected = matmul_loops(matmul_loops(base, t["glora_a1"]), t["glora_a2"]) + matmul_loops(
        t["glora_b1"], t["glora_b2"]
    )
    assert delta.scale == pytest.approx(0.5)
    assert_close(delta.weight, 0.5 * expected)


def test_glora_new_layout_conv() -> None:
    torch = pytest.importorskip("torch")
    gen = rng(20)
    base = randn(gen, OUT, IN, K, K)
    a1, a2, b1, b2 = randn(gen, IN, R), randn(gen, R, IN), randn(gen, OUT, R), randn(gen, R, IN, K, K)
    t = {"glora_a1": a1, "glora_a2": a2, "glora_b1": b1, "glora_b2": b2}
    delta = delta_weight(t, alpha=None, base=base)
    w = torch.from_numpy(base).double()
    # apply a1·a2 on the input-channel axis: W[o, :, h, w] ↦ W[o, :, h, w] @ a1 @ a2
    mixed = (w.permute(0, 2, 3, 1) @ torch.from_numpy(a1).double() @ torch.from_numpy(a2).double()).permute(0, 3, 1, 2)
    expected = mixed + (torch.from_numpy(b1).double() @ torch.from_numpy(b2).double().flatten(1)).reshape(w.shape)
    assert_close(delta.weight, expected.numpy())


def test_glora_old_layout() -> None:
    gen = rng(21)
    base = randn(gen, OUT, IN)
    t = {
        "glora_a1": randn(gen, R, IN),
        "glora_a2": randn(gen, IN, R),
        "glora_b1": randn(gen, R, IN),
        "glora_b2": randn(gen, OUT, R),
    }
    delta = delta_weight(t, alpha=2.0, base=base)
    expected = matmul_loops(t["glora_b2"], t["glora_b1"]) + matmul_loops(
        matmul_loops(base, t["glora_a2"]), t["glora_a1"]
    )
    assert_close(delta.weight, 0.5 * expected)


# --- OFT / BOFT ----------------------------------------------------------------------------------------------------


def torch_cayley(torch: Any, blocks: Any, constraint: float) -> Any:
    q = blocks - blocks.transpose(-1, -2)
    norm = torch.linalg.norm(q.flatten())
    if constraint > 0 and norm > constraint:
        q = q * constraint / norm
    eye = torch.eye(blocks.shape[-1], dtype=blocks.dtype)
    return (eye + q) @ torch.linalg.inv(eye - q)


def test_oft_matches_block_diagonal_rotation() -> None:
    torch = pytest.importorskip("torch")
    gen = rng(22)
    blocks = 0.1 * randn(gen, 3, 4, 4)  # 3 blocks of 4 rows = OUT
    base = randn(gen, OUT, IN, K, K)
    delta = delta_weight({"oft_blocks": blocks}, alpha=None, base=base)
    assert (delta.kind, delta.scale) == ("oft", 1.0)
    rot = torch_cayley(torch, torch.from_numpy(blocks).double(), 0.0)
    full = torch.block_diag(*rot)
    w = torch.from_numpy(base).double().flatten(1)
    expected = (full.T @ w - w).reshape(base.shape)
    assert_close(delta.weight, expected.numpy())


def test_oft_rescale_multiplies_rows() -> None:
    torch = pytest.importorskip("torch")
    gen = rng(23)
    blocks, base, rescale = 0.1 * randn(gen, 3, 4, 4), randn(gen, OUT, IN), randn(gen, OUT, 1)
    delta = delta_weight({"oft_blocks": blocks, "oft_rescale": rescale}, alpha=None, base=base)
    full = torch.block_diag(*torch_cayley(torch, torch.from_numpy(blocks).double(), 0.0)).numpy()
    assert_close(delta.weight, rescale * (full.T @ base) - base)


def test_oft_constraint_clamps_the_norm_of_q() -> None:
    gen = rng(24)
    blocks = randn(gen, 3, 4, 4)
    q_norm = float(np.linalg.norm(blocks - blocks.transpose(0, 2, 1)))
    constraint = q_norm / 10
    base = np.eye(OUT, dtype=np.float32)
    delta = delta_weight({"oft_blocks": blocks}, alpha=constraint, base=base)
    rotation = (base + delta.weight).astype(np.float64).T  # W' = blockdiag(R)ᵀ·I
    assert_close(rotation @ rotation.T, np.eye(OUT), tol=1e-5)
    recovered = 0.0
    for k in range(3):
        block = rotation[4 * k : 4 * k + 4, 4 * k : 4 * k + 4]
        q = (block - np.eye(4)) @ np.linalg.inv(block + np.eye(4))  # inverse Cayley
        recovered += float(np.sum(q * q))
    assert math.sqrt(recovered) == pytest.approx(constraint, rel=1e-4)
    unconstrained = delta_weight({"oft_blocks": blocks}, alpha=q_norm * 2, base=base)
    free = delta_weight({"oft_blocks": blocks}, alpha=None, base=base)
    assert_close(unconstrained.weight, free.weight)


def comfy_boft_reference(torch: Any, blocks: Any, base: Any, constraint: float) -> Any:
    """ComfyUI ``BOFTAdapter.calculate_weight`` (strength 1) transcribed in torch."""
    m, _, b, _ = blocks.shape
    r = torch_cayley(torch, blocks, constraint)
    inp = org = base
    for i in range(m):
        g, k = 2, 2**i * (b // 2)
        inp = inp.unflatten(0, (-1, g, k)).transpose(1, 2).flatten(0, 2).unflatten(0, (-1, b))
        inp = torch.einsum("b i j, b j ...-> b i ...", r[i], inp)
        inp = inp.flatten(0, 1).unflatten(0, (-1, k, g)).transpose(1, 2).flatten(0, 2)
    return inp - org


def test_boft_matches_comfyui_and_is_a_rotation() -> None:
    torch = pytest.importorskip("torch")
    gen = rng(25)
    blocks = randn(gen, 2, 4, 4, 4)  # 2 stages, 4 blocks of 4: 16 outputs
    base = randn(gen, 16, IN)
    delta = delta_weight({"oft_blocks": blocks}, alpha=1.5, base=base)
    assert delta.kind == "boft"
    expected = comfy_boft_reference(torch, torch.from_numpy(blocks).double(), torch.from_numpy(base).double(), 1.5)
    assert_close(delta.weight, expected.numpy())
    eye = np.eye(16, dtype=np.float32)
    rotation = eye + delta_weight({"oft_blocks": blocks}, alpha=None, base=eye).weight.astype(np.float64)
    assert_close(rotation @ rotation.T, np.eye(16))


# --- DoRA ----------------------------------------------------------------------------------------------------------


def peft_dora(torch: Any, base: Any, down: Any, up: Any, *, scale: float, magnitude: Any, dim: int) -> Any:
    """PEFT ``W' = m ⊙ (W + sBA) / ‖W + sBA‖`` (dim 1: per output row); dim 0: per input column (LyCORIS)."""
    combined = base + scale * (up @ down)
    norm = torch.linalg.norm(combined, dim=dim, keepdim=True)
    return magnitude * combined / norm - base


@pytest.mark.parametrize(("role", "shape", "dim"), [("magnitude", (OUT,), 1), ("dora_scale", (OUT, 1), 1)])
def test_dora_output_axis_matches_peft(role: str, shape: tuple[int, ...], dim: int) -> None:
    torch = pytest.importorskip("torch")
    gen = rng(26)
    base, down, up, magnitude = randn(gen, OUT, IN), randn(gen, R, IN), randn(gen, OUT, R), randn(gen, *shape)
    delta = delta_weight({"down": down, "up": up, role: magnitude}, alpha=2.0, base=base)
    assert delta.kind == "lora+dora"
    t = [torch.from_numpy(x).double() for x in (base, down, up)]
    expected = peft_dora(torch, *t, scale=0.5, magnitude=torch.from_numpy(magnitude).double().reshape(OUT, 1), dim=dim)
    assert_close(delta.weight, expected.numpy())


def test_dora_input_axis() -> None:
    torch = pytest.importorskip("torch")
    gen = rng(27)
    base, down, up, magnitude = randn(gen, OUT, IN), randn(gen, R, IN), randn(gen, OUT, R), randn(gen, 1, IN)
    delta = delta_weight({"down": down, "up": up, "dora_scale": magnitude}, alpha=None, base=base)
    t = [torch.from_numpy(x).double() for x in (base, down, up)]
    expected = peft_dora(torch, *t, scale=1.0, magnitude=torch.from_numpy(magnitude).double(), dim=0)
    assert_close(delta.weight, expected.numpy())


def test_dora_conv_output_axis() -> None:
    gen = rng(28)
    base, down, up = randn(gen, OUT, IN, K, K), randn(gen, R, IN, K, K), randn(gen, OUT, R, 1, 1)
    magnitude = randn(gen, OUT, 1, 1, 1)
    delta = delta_weight({"down": down, "up": up, "dora_scale": magnitude}, alpha=None, base=base)
    combined = base.astype(np.float64) + np.einsum("or,rihw->oihw", up[:, :, 0, 0], down)
    expected = np.zeros_like(combined)
    for o in range(OUT):
        expected[o] = magnitude[o, 0, 0, 0] * combined[o] / math.sqrt(float(np.sum(combined[o] ** 2)))
    assert_close(delta.weight, expected - base)


# --- errors and dtypes ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tensors",
    [
        {
            "glora_a1": np.ones((IN, R)),
            "glora_a2": np.ones((R, IN)),
            "glora_b1": np.ones((OUT, R)),
            "glora_b2": np.ones((R, IN)),
        },
        {"oft_blocks": np.ones((3, 4, 4))},
        {"oft_blocks": np.ones((2, 4, 4, 4))},
        {"ia3_weight": np.ones(OUT)},
        {"down": np.ones((R, IN)), "up": np.ones((OUT, R)), "magnitude": np.ones(OUT)},
    ],
    ids=["glora", "oft", "boft", "ia3", "dora"],
)
def test_kinds_needing_the_base_say_so(tensors: dict[str, Any]) -> None:
    with pytest.raises(errors.LorahubError, match="needs the base weight") as info:
        delta_weight(tensors, alpha=1.0)
    assert info.value.hint


def test_unknown_module_is_refused() -> None:
    with pytest.raises(errors.LorahubError):
        delta_weight({"alpha": np.ones(())}, alpha=1.0)


def test_half_precision_inputs_are_widened() -> None:
    gen = rng(29)
    down, up = randn(gen, R, IN).astype(np.float16), randn(gen, OUT, R).astype(np.float16)
    delta = delta_weight({"down": down, "up": up}, alpha=2.0)
    assert delta.weight.dtype == np.float32
    assert_close(delta.weight, 0.5 * matmul_loops(up.astype(np.float64), down.astype(np.float64)))


def bf16_bytes(array: Any) -> bytes:
    return (np.ascontiguousarray(array, dtype=np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()


def widen_bf16(array: Any) -> Any:
    """What a bf16 round trip leaves of a float32 array (truncation, as :func:`bf16_bytes` writes)."""
    bits = np.frombuffer(bf16_bytes(array), "<u2").astype(np.uint32) << 16
    return bits.view(np.float32).reshape(array.shape)


def test_module_delta_reads_bf16_factors_and_alpha_tensor(tmp_path: Path) -> None:
    gen = rng(30)
    down, up = randn(gen, R, IN), randn(gen, OUT, R)
    path = tmp_path / "m.safetensors"
    write(
        path,
        {
            "m.lora_down.weight": ("BF16", (R, IN), bf16_bytes(down)),
            "m.lora_up.weight": ("BF16", (OUT, R), bf16_bytes(up)),
            "m.alpha": ("F16", (), np.array(2.0, dtype="<f2").tobytes()),
        },
    )
    with SafetensorsFile(path) as container:
        infos = container.header.tensors
        module = Module(
            name="m",
            component="unet",
            tensors={"down": infos["m.lora_down.weight"], "up": infos["m.lora_up.weight"], "alpha": infos["m.alpha"]},
            config_alpha=99.0,
        )
        delta = module_delta(container, module)
    assert isinstance(delta, Delta)
    assert delta.scale == pytest.approx(0.5)
    assert_close(delta.weight, 0.5 * matmul_loops(widen_bf16(up), widen_bf16(down)))


def test_module_delta_falls_back_to_config_alpha(tmp_path: Path) -> None:
    gen = rng(31)
    down, up = randn(gen, R, IN), randn(gen, OUT, R)
    path = tmp_path / "p.safetensors"
    write(path, {"a": ("F32", (R, IN), down.tobytes()), "b": ("F32", (OUT, R), up.tobytes())})
    with SafetensorsFile(path) as container:
        infos = container.header.tensors
        module = Module("p", "unet", {"down": infos["a"], "up": infos["b"]}, config_alpha=8.0, rslora=True)
        delta = module_delta(container, module)
    assert delta.scale == pytest.approx(8.0 / 2.0)
    assert_close(delta.weight, 4.0 * matmul_loops(up, down))


def test_a1111_scale_tensor_overrides_alpha() -> None:
    gen = rng(32)
    down, up = randn(gen, R, IN), randn(gen, OUT, R)
    delta = delta_weight({"down": down, "up": up, "scale": np.array(0.3, dtype=np.float32)}, alpha=2.0)
    assert delta.scale == pytest.approx(0.3)
    assert_close(delta.weight, 0.3 * matmul_loops(up, down))


def test_linear_factors_take_a_1x1_conv_base_shape_and_refuse_a_wrong_one() -> None:
    gen = rng(33)
    down, up = randn(gen, R, IN), randn(gen, OUT, R)
    shaped = delta_weight(
        {"down": down, "up": up, "magnitude": np.ones(OUT)}, alpha=None, base=randn(gen, OUT, IN, 1, 1)
    )
    assert shaped.weight.shape == (OUT, IN, 1, 1)
    with pytest.raises(errors.LorahubError, match="base weight has shape"):
        delta_weight({"down": down, "up": up, "magnitude": np.ones(OUT)}, alpha=None, base=randn(gen, OUT, IN + 1))


def test_lokr_decompose_both_scales_by_the_w2_rank() -> None:
    gen = rng(34)
    w1a, w1b, w2a, w2b = randn(gen, 3, 1), randn(gen, 1, 2), randn(gen, 4, 2), randn(gen, 2, 4)
    tensors = {"lokr_w1_a": w1a, "lokr_w1_b": w1b, "lokr_w2_a": w2a, "lokr_w2_b": w2b}
    delta = delta_weight(tensors, alpha=1.0)
    assert delta.scale == pytest.approx(0.5)
    assert_close(delta.weight, 0.5 * kron_loops(matmul_loops(w1a, w1b), matmul_loops(w2a, w2b)))
