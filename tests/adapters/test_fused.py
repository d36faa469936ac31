"""Fused ↔ split maths against explicit references: ΔW of the fused module = the parts' ΔW stacked by rows.

The reference ΔW is written out here (``up @ down · alpha/rank`` in float64, stacked with ``np.vstack``), never
through lorahub's ΔW code.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from lorahub.adapters.fused import FuseError, Part, fuse, part_widths, split, splittable, swap_scale_shift, swapped

RNG = np.random.default_rng(7)


def _delta(down: Any, up: Any, alpha: float | None) -> Any:
    rank = down.shape[0]
    scale = 1.0 if alpha is None else alpha / rank
    return up.astype(np.float64) @ down.astype(np.float64) * scale


def _part_delta(part: Part) -> Any:
    return _delta(part.tensors["down"], part.tensors["up"], part.alpha)


def _random(*shape: int) -> Any:
    return RNG.standard_normal(shape).astype(np.float32)


def _block_diagonal(ups: list[Any]) -> Any:
    rows, rank = sum(u.shape[0] for u in ups), sum(u.shape[1] for u in ups)
    out = np.zeros((rows, rank), dtype=np.float32)
    r = c = 0
    for up in ups:
        out[r : r + up.shape[0], c : c + up.shape[1]] = up
        r, c = r + up.shape[0], c + up.shape[1]
    return out


def _close(actual: Any, expected: Any) -> None:
    scale = max(float(np.max(np.abs(expected))), 1e-30)
    assert actual.shape == expected.shape
    assert float(np.max(np.abs(actual - expected))) / scale <= 1e-6


def test_widths_come_from_the_tensor_not_from_flux_dev() -> None:
    assert part_widths(9216, (1, 1, 1)) == [3072, 3072, 3072]
    assert part_widths(21504, (1, 1, 1, 4)) == [3072, 3072, 3072, 12288]
    assert part_widths(28, (1, 1, 1, 4)) == [4, 4, 4, 16]  # a tiny FLUX
    assert part_widths(30, (1, 1, 1, 4)) is None


def test_dense_up_duplicates_the_whole_down() -> None:
    """sd-scripts ``convert_flux_lora.py``: a shared down cannot be chunked (mflux#423/#458)."""
    down, up, alpha = _random(6, 10), _random(12, 6), 3.0
    parts = split({"down": down, "up": up}, alpha, [4, 4, 4])
    reference = _delta(down, up, alpha)
    for i, part in enumerate(parts):
        assert part is not None
        assert np.array_equal(part.tensors["down"], down)
        assert part.alpha == alpha
        _close(_part_delta(part), reference[4 * i : 4 * i + 4])


def test_block_sparse_up_chunks_down_by_rank_even_for_unequal_ranks() -> None:
    downs = [_random(2, 10), _random(3, 10), _random(1, 10)]
    ups = [_random(4, 2), _random(4, 3), _random(8, 1)]
    down, up, alpha = np.concatenate(downs), _block_diagonal(ups), 4.5
    parts = split({"down": down, "up": up}, alpha, [4, 4, 8])
    reference = _delta(down, up, alpha)
    for part, d, u, (a, b) in zip(parts, downs, ups, [(0, 4), (4, 8), (8, 16)], strict=True):
        assert part is not None
        assert np.array_equal(part.tensors["down"], d) and np.array_equal(part.tensors["up"], u)
        assert part.alpha is not None and part.alpha / d.shape[0] == pytest.approx(alpha / 6)
        _close(_part_delta(part), reference[a:b])


def test_a_part_without_rows_is_left_out_and_a_zero_module_is_kept() -> None:
    down, up = _random(4, 10), _block_diagonal([_random(4, 2), _random(4, 2)])
    up = np.concatenate([up, np.zeros((16, 4), dtype=np.float32)])  # linear1 of a LoRA without proj_mlp
    parts = split({"down": down, "up": up}, None, [4, 4, 16])
    assert parts[2] is None and parts[0] is not None and parts[0].alpha is None
    zero = split({"down": down, "up": np.zeros((12, 4), dtype=np.float32)}, 8.0, [4, 4, 4])
    assert all(part is not None and part.alpha == 8.0 for part in zero)


def test_fuse_is_block_diagonal_with_alpha_rank_times_parts() -> None:
    """ai-toolkit → sd-scripts (``convert_to_sd_scripts_cat``): parts of rank r and alpha r fuse to alpha r·n."""
    parts = [Part({"down": _random(4, 10), "up": _random(6, 4)}, 4.0) for _ in range(3)]
    merged = fuse(parts, [6, 6, 6])
    assert merged.tensors["down"].shape == (12, 10) and merged.alpha == 12.0
    expected = np.vstack([_part_delta(part) for part in parts])
    _close(_delta(merged.tensors["down"], merged.tensors["up"], merged.alpha), expected)
    assert np.array_equal(merged.tensors["up"], _block_diagonal([p.tensors["up"] for p in parts]))


def test_fuse_folds_different_scales_and_fills_missing_parts_with_zero_rows() -> None:
    parts: list[Part | None] = [
        Part({"down": _random(2, 10), "up": _random(4, 2)}, 1.0),
        None,
        Part({"down": _random(3, 10), "up": _random(4, 3)}, 6.0),
        Part({"down": _random(2, 10), "up": _random(16, 2)}, None),
    ]
    merged = fuse(parts, [4, 4, 4, 16])
    expected = np.vstack(
        [_part_delta(parts[0]), np.zeros((4, 10)), _part_delta(parts[2]), _part_delta(parts[3])]  # type: ignore[arg-type]
    )
    _close(_delta(merged.tensors["down"], merged.tensors["up"], merged.alpha), expected)
    again = split(merged.tensors, merged.alpha, [4, 4, 4, 16])
    assert again[1] is None
    for part, back in zip(parts, again, strict=True):
        if part is not None:
            assert back is not None
            _close(_part_delta(back), _part_delta(part))


def test_split_and_fuse_invert_each_other_exactly() -> None:
    """Dense: the shared down comes back as one down (rank r, not 3r). Sparse: the same blocks come back."""
    dense = {"down": _random(4, 10), "up": _random(12, 4)}
    back = fuse(split(dense, 2.0, [4, 4, 4]), [4, 4, 4])
    assert back.alpha == 2.0
    assert all(np.array_equal(back.tensors[k], dense[k]) for k in dense)
    sparse = {"down": _random(6, 10), "up": _block_diagonal([_random(4, 2), _random(4, 2), _random(4, 2)])}
    back = fuse(split(sparse, 3.0, [4, 4, 4]), [4, 4, 4])
    assert back.alpha == pytest.approx(3.0)
    assert all(np.array_equal(back.tensors[k], sparse[k]) for k in sparse)


def test_bias_and_full_deltas_split_by_rows() -> None:
    lora = {"down": _random(3, 5), "up": _random(9, 3), "up_bias": _random(9)}
    parts = split(lora, None, [3, 3, 3])
    assert all(
        p is not None and np.array_equal(p.tensors["up_bias"], lora["up_bias"][3 * i : 3 * i + 3])
        for i, p in enumerate(parts)
    )
    full = {"diff": _random(9, 5), "diff_b": _random(9)}
    pieces = split(full, None, [3, 3, 3])
    merged = fuse(pieces, [3, 3, 3])
    assert np.array_equal(merged.tensors["diff"], full["diff"]) and np.array_equal(
        merged.tensors["diff_b"], full["diff_b"]
    )


def test_swap_scale_shift_matches_diffusers_definition() -> None:
    """diffusers ``swap_scale_shift``: ``shift, scale = w.chunk(2); cat([scale, shift])`` — rows of ``up`` here."""
    up, down = _random(8, 2), _random(2, 4)
    swapped_up = swap_scale_shift({"down": down, "up": up})["up"]
    shift, scale = np.split(up, 2)
    assert np.array_equal(swapped_up, np.concatenate([scale, shift]))
    assert np.array_equal(swap_scale_shift({"up": swapped_up})["up"], up)
    assert swapped("always", {"down": down, "up": up})
    assert swapped("pre-only", {"down": down, "up": up})  # 8 rows = 2 × 4 inputs: SD3's last context block
    assert not swapped("pre-only", {"down": _random(2, 4), "up": _random(24, 2)})  # 6 × hidden: any other block


def test_lokr_and_inconsistent_parts_are_refused() -> None:
    assert "LoKr" in (splittable({"lokr_w1": _random(2, 2), "lokr_w2": _random(3, 3)}) or "")
    assert splittable({"down": _random(2, 4, 3, 3), "up": _random(4, 2, 1, 1)}) is not None
    with pytest.raises(FuseError):
        fuse(
            [
                Part({"down": _random(2, 4), "up": _random(3, 2)}, None),
                Part({"down": _random(2, 5), "up": _random(3, 2)}, None),
            ],
            [3, 3],
        )
    with pytest.raises(FuseError):
        fuse([None, None], [3, 3])
