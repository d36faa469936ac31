"""Merging in canonical space, against ΔW computed explicitly in the test."""

from __future__ import annotations

import numpy as np
import pytest

from lorahub import errors
from lorahub.adapters.delta import delta_weight
from lorahub.adapters.model import CanonicalAdapter, CanonicalLayer
from lorahub.merge.combine import merge_adapters

Q = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
CONV = "unet.down_blocks.0.resnets.0.conv1"
K = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k"


def _lora(name: str, rng: np.random.Generator, *, rank: int, alpha: float | None, conv: bool = False) -> CanonicalLayer:
    if conv:
        down = rng.standard_normal((rank, 8, 3, 3)).astype(np.float32)
        up = rng.standard_normal((6, rank, 1, 1)).astype(np.float32)
    else:
        down = rng.standard_normal((rank, 16)).astype(np.float32)
        up = rng.standard_normal((12, rank)).astype(np.float32)
    return CanonicalLayer(name, "locon" if conv else "lora", {"down": down, "up": up}, alpha, "F32")


def _adapter(seed: int, *, rank: int, alpha: float | None, names: tuple[str, ...] = (Q, CONV)) -> CanonicalAdapter:
    rng = np.random.default_rng(seed)
    layers = {n: _lora(n, rng, rank=rank, alpha=alpha, conv=n == CONV) for n in names}
    return CanonicalAdapter("sd1", layers, {}, "kohya")


def _explicit(layer: CanonicalLayer) -> np.ndarray:
    """ΔW = (α/r)·up·down written out, independent of delta.py."""
    down, up = layer.tensors["down"].astype(np.float64), layer.tensors["up"].astype(np.float64)
    rank = down.shape[0]
    scale = 1.0 if layer.alpha is None else layer.alpha / rank
    product = up.reshape(up.shape[0], rank) @ down.reshape(rank, -1)
    return scale * product.reshape(up.shape[0], *down.shape[1:])


def _delta(layer: CanonicalLayer) -> np.ndarray:
    return delta_weight(layer.tensors, alpha=layer.alpha).weight.astype(np.float64)


def test_cat_is_the_weighted_sum_exactly_with_rank_the_sum_of_ranks() -> None:
    a, b = _adapter(0, rank=4, alpha=8.0), _adapter(1, rank=2, alpha=None, names=(Q, CONV, K))
    merged, report = merge_adapters([(a, 0.7), (b, -0.4)], method="cat")
    assert set(merged.layers) == {Q, CONV, K}
    for name in (Q, CONV):
        expected = 0.7 * _explicit(a.layers[name]) - 0.4 * _explicit(b.layers[name])
        np.testing.assert_allclose(_delta(merged.layers[name]), expected, rtol=1e-5, atol=1e-5)
        assert merged.layers[name].rank == 6
    np.testing.assert_allclose(_delta(merged.layers[K]), -0.4 * _explicit(b.layers[K]), rtol=1e-5, atol=1e-6)
    assert merged.layers[CONV].tensors["down"].shape == (6, 8, 3, 3)
    assert report.max_rank == 6 and report.max_rel_error == 0.0


def test_svd_to_full_rank_is_exact_and_truncation_reports_the_error() -> None:
    a, b = _adapter(2, rank=4, alpha=4.0), _adapter(3, rank=4, alpha=2.0)
    exact, report = merge_adapters([(a, 1.0), (b, 1.0)], method="svd", rank=8)
    expected = _explicit(a.layers[Q]) + _explicit(b.layers[Q])
    np.testing.assert_allclose(_delta(exact.layers[Q]), expected, rtol=1e-4, atol=1e-4)
    assert report.max_rel_error < 1e-6
    small, report = merge_adapters([(a, 1.0), (b, 1.0)], method="svd", rank=3)
    got = _delta(small.layers[Q])
    singular = np.linalg.svd(expected.reshape(expected.shape[0], -1), compute_uv=False)
    best = np.sqrt(np.sum(singular[3:] ** 2) / np.sum(singular**2))  # Eckart-Young: the best rank-3 error
    assert small.layers[Q].rank == 3
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) == pytest.approx(best, rel=1e-4)
    assert report.per_module[Q]["error"] == pytest.approx(best, rel=1e-4)
    assert 0 < report.min_kept_energy < 1


def test_lycoris_layers_merge_through_delta_with_svd_and_are_refused_by_cat() -> None:
    rng = np.random.default_rng(4)
    loha = CanonicalLayer(
        Q,
        "loha",
        {k: rng.standard_normal(s).astype(np.float32) for k, s in
         {"hada_w1_a": (12, 2), "hada_w1_b": (2, 16), "hada_w2_a": (12, 2), "hada_w2_b": (2, 16)}.items()},
        2.0,
        "F32",
    )  # fmt: skip
    a = CanonicalAdapter("sd1", {Q: loha}, {}, "lycoris")
    b = _adapter(5, rank=2, alpha=2.0, names=(Q,))
    with pytest.raises(errors.LorahubError, match="cannot be concatenated") as refused:
        merge_adapters([(a, 1.0), (b, 1.0)], method="cat")
    assert "--method svd" in str(refused.value.hint)
    merged, _ = merge_adapters([(a, 0.5), (b, 1.0)], method="svd", rank=12)
    t = {k: v.astype(np.float64) for k, v in loha.tensors.items()}
    loha_delta = (t["hada_w1_a"] @ t["hada_w1_b"]) * (t["hada_w2_a"] @ t["hada_w2_b"]) * (2.0 / 2)
    expected = 0.5 * loha_delta + _explicit(b.layers[Q])
    np.testing.assert_allclose(_delta(merged.layers[Q]), expected, rtol=1e-4, atol=1e-4)


def test_family_mismatch_is_refused() -> None:
    a = _adapter(0, rank=2, alpha=2.0)
    b = CanonicalAdapter("sdxl", dict(_adapter(1, rank=2, alpha=2.0).layers), {}, "kohya")
    with pytest.raises(errors.FamilyMismatchError, match="sd1, sdxl"):
        merge_adapters([(a, 1.0), (b, 1.0)])
