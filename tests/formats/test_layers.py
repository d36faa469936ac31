"""Layer kinds, ranks, widths and structure problems, from roles and shapes (LyCORIS 3.2 toy-model shapes)."""

from __future__ import annotations

import pytest

from lorahub.formats.base import Module
from lorahub.formats.layers import io_dims, layer_kind, layer_kinds, problems_in, rank
from tests.formats.headers import header


def module(roles: dict[str, list[int]]) -> Module:
    """A module of Linear(64→96) / Conv2d(32→48, 3×3) geometry, the toy model LyCORIS' docs use."""
    infos = header({f"m.{role}": shape for role, shape in roles.items()})
    return Module(name="m", component="unet", tensors={key[2:]: info for key, info in infos.items()})


KINDS: dict[str, tuple[dict[str, list[int]], list[str], int | None, tuple[int | None, int | None]]] = {
    "lora": ({"down": [8, 64], "up": [96, 8], "alpha": []}, ["lora"], 8, (64, 96)),
    "locon": ({"down": [8, 32, 3, 3], "up": [48, 8, 1, 1], "alpha": []}, ["locon"], 8, (32, 48)),
    "lora-tucker": (
        {"down": [8, 32, 1, 1], "mid": [8, 8, 3, 3], "up": [48, 8, 1, 1]},
        ["lora-tucker"],
        8,
        (32, 48),
    ),
    "peft-dora": ({"down": [8, 64], "up": [96, 8], "magnitude": [96]}, ["lora", "dora"], 8, (64, 96)),
    "loha": (
        {"hada_w1_a": [96, 4], "hada_w1_b": [4, 64], "hada_w2_a": [96, 4], "hada_w2_b": [4, 64], "alpha": []},
        ["loha"],
        4,
        (64, 96),
    ),
    "loha-tucker": (
        {
            "hada_t1": [4, 4, 3, 3],
            "hada_w1_a": [4, 48],
            "hada_w1_b": [4, 32],
            "hada_t2": [4, 4, 3, 3],
            "hada_w2_a": [4, 48],
            "hada_w2_b": [4, 32],
        },
        ["loha"],
        4,
        (32, 48),
    ),
    "lokr": ({"lokr_w1": [8, 8], "lokr_w2_a": [12, 4], "lokr_w2_b": [4, 8]}, ["lokr"], 4, (64, 96)),
    "lokr-both": (
        {"lokr_w1_a": [8, 2], "lokr_w1_b": [2, 8], "lokr_w2_a": [12, 4], "lokr_w2_b": [4, 8]},
        ["lokr"],
        4,
        (64, 96),
    ),
    "lokr-full-rank": ({"lokr_w1": [8, 8], "lokr_w2": [12, 8], "alpha": []}, ["lokr"], None, (64, 96)),
    "lokr-dora": (
        {"lokr_w1": [8, 8], "lokr_w2": [12, 8], "dora_scale": [96, 1]},
        ["lokr", "dora"],
        None,
        (64, 96),
    ),
    "full": ({"diff": [96, 64], "diff_b": [96]}, ["full"], None, (64, 96)),
    "bias-only": ({"diff_b": [96]}, ["full"], None, (None, 96)),
    "norm": ({"w_norm": [96], "b_norm": [96]}, ["norm"], None, (None, None)),
    "oft": ({"oft_blocks": [16, 6, 6], "alpha": []}, ["oft"], None, (None, 96)),
    "boft": ({"oft_blocks": [4, 8, 12, 12]}, ["boft"], None, (None, 96)),
    "glora": (
        {"glora_a1": [64, 4], "glora_a2": [4, 64], "glora_b1": [96, 4], "glora_b2": [4, 64]},
        ["glora"],
        4,
        (64, 96),
    ),
    "ia3": ({"ia3_weight": [96], "ia3_on_input": []}, ["ia3"], None, (None, None)),
    "set": ({"set_weight": [128]}, ["set"], None, (None, None)),
}


@pytest.mark.parametrize("case", sorted(KINDS))
def test_kind_rank_and_widths(case: str) -> None:
    roles, kinds, expected_rank, dims = KINDS[case]
    found = module(roles)
    assert layer_kinds(found) == kinds
    assert rank(found) == expected_rank
    assert io_dims(found) == dims
    assert problems_in(found) == []


def test_old_glora_layout_rank() -> None:
    old = module({"glora_a1": [4, 64], "glora_a2": [64, 4], "glora_b1": [4, 96], "glora_b2": [64, 4]})
    assert (layer_kind(old), rank(old), problems_in(old)) == ("glora", 4, [])


PROBLEMS: dict[str, tuple[dict[str, list[int]], list[str]]] = {
    "down without up": (
        {"down": [8, 64], "alpha": []},
        ["a down (lora_down/lora_A) weight without its up"],
    ),
    "up without down": ({"up": [96, 8]}, ["an up (lora_up/lora_B) weight without its down"]),
    "rank mismatch": ({"down": [8, 64], "up": [96, 4]}, ["rank mismatch: down has rank 8, up has rank 4"]),
    "tucker mid": (
        {"down": [8, 32, 1, 1], "mid": [4, 4, 3, 3], "up": [48, 8, 1, 1]},
        ["Tucker mid takes rank 4 but down has rank 8", "Tucker mid gives rank 4 but up takes rank 8"],
    ),
    "up bias": ({"down": [8, 64], "up": [96, 8], "up_bias": [64]}, ["up bias has 64 entries for 96 outputs"]),
    "loha inner": (
        {"hada_w1_a": [96, 4], "hada_w1_b": [2, 64], "hada_w2_a": [96, 4], "hada_w2_b": [4, 64]},
        ["LoHa w1 factors disagree on the rank (4 vs 2)"],
    ),
    "loha products": (
        {"hada_w1_a": [96, 4], "hada_w1_b": [4, 64], "hada_w2_a": [48, 4], "hada_w2_b": [4, 64]},
        ["LoHa products have different output sizes (96 vs 48)"],
    ),
    "loha half": (
        {"hada_w1_a": [96, 4], "hada_w1_b": [4, 64]},
        ["LoHa first factor without its hada_w2_a"],
    ),
    "lokr inner": (
        {"lokr_w1": [8, 8], "lokr_w2_a": [12, 4], "lokr_w2_b": [2, 8]},
        ["LoKr w2 factors disagree on the inner dimension (4 vs 2)"],
    ),
    "lokr w1 inner": (
        {"lokr_w1_a": [8, 2], "lokr_w1_b": [3, 8], "lokr_w2": [12, 8]},
        ["LoKr w1 factors disagree on the inner dimension (2 vs 3)"],
    ),
    "lokr missing w2": ({"lokr_w1": [8, 8]}, ["LoKr has no w2 factor"]),
    "glora shapes": (
        {"glora_a1": [64, 4], "glora_a2": [5, 64], "glora_b1": [96, 4], "glora_b2": [4, 64]},
        ["GLoRA factor shapes fit neither the old nor the new layout"],
    ),
    "oft shape": ({"oft_blocks": [16, 6, 5]}, ["OFT blocks have shape [16, 6, 5], not [blocks, size, size]"]),
    "alpha not scalar": (
        {"down": [8, 64], "up": [96, 8], "alpha": [8]},
        ["alpha should be one number but has shape [8]"],
    ),
    "two kinds": (
        {"down": [8, 64], "up": [96, 8], "hada_w1_a": [96, 4], "hada_w1_b": [4, 64]},
        ["mixes tensors of several layer kinds: loha, lora", "LoHa first factor without its hada_w2_a"],
    ),
    "only alpha": ({"alpha": []}, ["no weight tensors, only alpha"]),
    "two dora spellings": (
        {"down": [8, 64], "up": [96, 8], "dora_scale": [96, 1], "magnitude": [96]},
        ["has both a kohya dora_scale and a PEFT lora_magnitude_vector"],
    ),
    "ia3 flag alone": ({"ia3_on_input": []}, ["an IA3 on_input flag without its ia3_weight"]),
}


@pytest.mark.parametrize("case", sorted(PROBLEMS))
def test_problems(case: str) -> None:
    roles, expected = PROBLEMS[case]
    assert problems_in(module(roles)) == expected


def test_only_alpha_is_unknown_kind() -> None:
    found = module({"alpha": []})
    assert (layer_kind(found), rank(found), io_dims(found)) == ("unknown", None, (None, None))


def test_odd_shapes_never_raise() -> None:
    odd: tuple[dict[str, list[int]], ...] = (
        {"down": [], "up": []},
        {"oft_blocks": [3]},
        {"oft_blocks": []},
        {"lokr_w1": [0], "lokr_w2": []},
        {"glora_a1": [1], "glora_a2": [], "glora_b1": [2], "glora_b2": [3]},
        {"hada_w1_a": [], "hada_t1": [1], "hada_w1_b": [0, 0, 0, 0, 0]},
        {"diff": [7]},
    )
    for roles in odd:
        found = module(roles)
        layer_kinds(found)
        rank(found)
        io_dims(found)
        assert isinstance(problems_in(found), list)
