"""LyCORIS-format adapters of every kind with random factors (numpy, no torch), at given module names and shapes.

For the tests (every kind applied to tiny pipelines) and the benchmarks (LoKr and LoHa on a full-size SD1.5 UNet);
the tensors and suffixes are those LyCORIS' modules write (``lycoris/modules``), under kohya module names.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Collection, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from lorahub.files.safetensors import write

__all__ = ["KINDS", "factor_pair", "lycoris_tensors", "write_example_lycoris"]

Array = npt.NDArray[Any]
Shape = tuple[int, ...]
Maker = Callable[[np.random.Generator, Shape, int, "Array | None"], dict[str, Array]]


def factor_pair(dimension: int, cap: int = -1) -> tuple[int, int]:
    """``dimension = m·n`` with ``m ≤ n`` as close as possible (``m ≤ cap`` when a cap is given): how LyCORIS splits a
    width between the two Kronecker factors."""
    best = 1
    for m in range(1, math.isqrt(dimension) + 1):
        if dimension % m == 0 and (cap < 0 or m <= cap):
            best = m
    return best, dimension // best


def _normal(gen: np.random.Generator, *shape: int, std: float = 1.0) -> Array:
    return (gen.standard_normal(shape) * std).astype(np.float32)


def _lowrank(gen: np.random.Generator, out: int, inner: Shape, rank: int) -> tuple[Array, Array]:
    """An (up, down) pair whose product has entries of about 0.1 whatever the sizes."""
    fan_in = math.prod(inner)
    return _normal(gen, out, rank, std=0.3 / math.sqrt(rank)), _normal(gen, rank, *inner, std=0.3 / math.sqrt(fan_in))


def _lora(gen: np.random.Generator, shape: Shape, rank: int, base: Array | None) -> dict[str, Array]:
    """Plain LoRA (LoCon on a conv: the kernel in ``down``), for comparisons at equal parameter counts."""
    up, down = _lowrank(gen, shape[0], shape[1:], rank)
    return {"up": up[:, :, None, None] if len(shape) > 2 else up, "down": down}


def _loha(gen: np.random.Generator, shape: Shape, rank: int, base: Array | None) -> dict[str, Array]:
    out, inner = shape[0], (math.prod(shape[1:]),)
    tensors = {}
    for n in (1, 2):
        up, down = _lowrank(gen, out, inner, rank)
        tensors[f"hada_w{n}_a"], tensors[f"hada_w{n}_b"] = up * 3, down * 3
    return tensors


def _loha_tucker(gen: np.random.Generator, shape: Shape, rank: int, base: Array | None) -> dict[str, Array]:
    out, fan_in, kernel = shape[0], shape[1], shape[2:]
    tensors = {}
    for n in (1, 2):
        tensors[f"hada_w{n}_a"] = _normal(gen, rank, out, std=0.5)
        tensors[f"hada_w{n}_b"] = _normal(gen, rank, fan_in, std=0.5 / math.sqrt(fan_in))
        tensors[f"hada_t{n}"] = _normal(gen, rank, rank, *kernel, std=1 / math.sqrt(rank))
    return tensors


def _lokr_halves(shape: Shape, cap: int) -> tuple[tuple[int, int], tuple[int, int]]:
    (out1, out2), (in1, in2) = factor_pair(shape[0], cap), factor_pair(shape[1], cap)
    return (out1, in1), (out2, in2)


def _lokr(gen: np.random.Generator, shape: Shape, rank: int, base: Array | None) -> dict[str, Array]:
    """``w1`` whole, ``w2`` low-rank (LyCORIS' default when the rank is small); conv ``w2_b`` keeps the kernel."""
    (out1, in1), (out2, in2) = _lokr_halves(shape, 8)
    up, down = _lowrank(gen, out2, (in2, *shape[2:]), rank)
    return {"lokr_w1": _normal(gen, out1, in1, std=0.5), "lokr_w2_a": up, "lokr_w2_b": down}


def _lokr_full(gen: np.random.Generator, shape: Shape, rank: int, base: Array | None) -> dict[str, Array]:
    (out1, in1), (out2, in2) = _lokr_halves(shape, 4)
    fan_in = in2 * math.prod(shape[2:])
    return {"lokr_w1": _normal(gen, out1, in1, std=0.5), "lokr_w2": _normal(gen, out2, in2, *shape[2:],
                                                                            std=0.2 / math.sqrt(fan_in))}  # fmt: skip


def _lokr_both(gen: np.random.Generator, shape: Shape, rank: int, base: Array | None) -> dict[str, Array]:
    (out1, in1), (out2, in2) = _lokr_halves(shape, -1)
    up1, down1 = _lowrank(gen, out1, (in1,), rank)
    up2, down2 = _lowrank(gen, out2, (in2, *shape[2:]), rank)
    return {"lokr_w1_a": up1 * 3, "lokr_w1_b": down1 * 3, "lokr_w2_a": up2, "lokr_w2_b": down2}


def _lokr_tucker(gen: np.random.Generator, shape: Shape, rank: int, base: Array | None) -> dict[str, Array]:
    (out1, in1), (out2, in2) = _lokr_halves(shape, 8)
    return {
        "lokr_w1": _normal(gen, out1, in1, std=0.5),
        "lokr_w2_a": _normal(gen, rank, out2, std=0.5),
        "lokr_w2_b": _normal(gen, rank, in2, std=0.5 / math.sqrt(in2)),
        "lokr_t2": _normal(gen, rank, rank, *shape[2:], std=0.3 / math.sqrt(rank)),
    }


def _full(gen: np.random.Generator, shape: Shape, rank: int, base: Array | None) -> dict[str, Array]:
    diff = _normal(gen, *shape, std=0.1 / math.sqrt(math.prod(shape[1:])))
    return {"diff": diff, "diff_b": _normal(gen, shape[0], std=0.05)}


def _dora(gen: np.random.Generator, shape: Shape, rank: int, base: Array | None) -> dict[str, Array]:
    """LoRA factors and a ``dora_scale`` [out, 1, …]: the rows' norms of the base (when given) times about 1."""
    up, down = _lowrank(gen, shape[0], shape[1:], rank)
    if len(shape) > 2:  # LoCon: the kernel is in down, up is 1×1
        up = up[:, :, None, None]
    norms = np.ones(shape[0]) if base is None else np.linalg.norm(base.reshape(shape[0], -1), axis=1)
    magnitude = norms * (1 + 0.2 * gen.standard_normal(shape[0]))
    return {"down": down, "up": up, "dora_scale": magnitude.reshape(-1, *([1] * (len(shape) - 1))).astype(np.float32)}


def _ia3(gen: np.random.Generator, shape: Shape, rank: int, base: Array | None) -> dict[str, Array]:
    return {"ia3_weight": _normal(gen, shape[0], std=0.3)}


def _oft(gen: np.random.Generator, shape: Shape, rank: int, base: Array | None) -> dict[str, Array]:
    size, blocks = factor_pair(shape[0], max(rank, 1))
    return {"oft_blocks": _normal(gen, blocks, size, size, std=0.2)}


def _boft(gen: np.random.Generator, shape: Shape, rank: int, base: Array | None) -> dict[str, Array]:
    """Blocks of 4 (2 for widths not divisible by 4), two butterfly stages when the block count is even."""
    size = 4 if shape[0] % 4 == 0 else 2
    blocks = shape[0] // size
    stages = 2 if blocks % 2 == 0 else 1
    return {"oft_blocks": _normal(gen, stages, blocks, size, size, std=0.1)}


def _glora(gen: np.random.Generator, shape: Shape, rank: int, base: Array | None) -> dict[str, Array]:
    out, fan_in = shape[0], shape[1]
    one = (1,) * (len(shape) - 2)
    return {
        "glora_a1": _normal(gen, fan_in, rank, *one, std=0.3 / math.sqrt(fan_in)),
        "glora_a2": _normal(gen, rank, fan_in, *one, std=0.3 / math.sqrt(rank)),
        "glora_b1": _normal(gen, out, rank, *one, std=0.3 / math.sqrt(rank)),
        "glora_b2": _normal(gen, rank, fan_in, *shape[2:], std=0.3 / math.sqrt(math.prod(shape[1:]))),
    }


def _norm(gen: np.random.Generator, shape: Shape, rank: int, base: Array | None) -> dict[str, Array]:
    return {"w_norm": _normal(gen, shape[0], std=0.2), "b_norm": _normal(gen, shape[0], std=0.2)}


KINDS: Mapping[str, Maker] = {
    "lora": _lora,
    "loha": _loha,
    "loha-tucker": _loha_tucker,
    "lokr": _lokr,
    "lokr-full": _lokr_full,
    "lokr-both": _lokr_both,
    "lokr-tucker": _lokr_tucker,
    "full": _full,
    "dora": _dora,
    "ia3": _ia3,
    "oft": _oft,
    "boft": _boft,
    "glora": _glora,
    "norm": _norm,
}
"""Example name → the module tensors by role for a layer weight shape ([out, in, kh, kw] or [out, in] or [c] for
norms). The ``-tucker`` kinds need a conv kernel larger than 1×1."""

SUFFIXES: Mapping[str, str] = {
    "down": "lora_down.weight", "up": "lora_up.weight", "dora_scale": "dora_scale",
    "oft_rescale": "rescale", "ia3_weight": "weight", "ia3_on_input": "on_input",
    "glora_a1": "a1.weight", "glora_a2": "a2.weight", "glora_b1": "b1.weight", "glora_b2": "b2.weight",
}  # fmt: skip
"""Role → LyCORIS key suffix, where they differ (the rest are spelt as their role)."""

ALPHA_KINDS = frozenset(
    {"lora", "loha", "loha-tucker", "lokr", "lokr-both", "lokr-tucker", "dora", "glora", "oft", "boft"}
)


def lycoris_tensors(
    kind: str,
    shape: Shape,
    *,
    rank: int,
    gen: np.random.Generator,
    base: Array | None = None,
) -> dict[str, Array]:
    """One module's tensors by role (see :data:`KINDS`)."""
    return KINDS[kind](gen, shape, rank, base)


def write_example_lycoris(
    path: str | os.PathLike[str],
    layers: Mapping[str, Shape],
    *,
    kind: str | Mapping[str, str],
    rank: int = 4,
    alpha: float | None = None,
    seed: int = 0,
    bases: Mapping[str, Array] | None = None,
    without_bias: Collection[str] = (),
) -> dict[str, dict[str, Array]]:
    """Write a LyCORIS file with a module of ``kind`` (one for all, or per module) for each kohya module name →
    layer weight shape; ``alpha`` (default ``rank``, scale 1) is written for the kinds that read it, as the OFT
    constraint for OFT/BOFT (0: none). ``bases`` gives DoRA its layers' weights; modules in ``without_bias`` (their
    layer has no bias) get no bias delta. Returns the tensors by module and role, for tests that compute what the
    file should do."""
    gen = np.random.default_rng(seed)
    written: dict[str, tuple[str, tuple[int, ...], bytes]] = {}
    modules: dict[str, dict[str, Array]] = {}
    for name, shape in layers.items():
        module_kind = kind if isinstance(kind, str) else kind[name]
        tensors = lycoris_tensors(module_kind, shape, rank=rank, gen=gen, base=(bases or {}).get(name))
        if name in without_bias:
            tensors = {role: array for role, array in tensors.items() if role not in ("diff_b", "b_norm")}
        modules[name] = tensors
        for role, array in tensors.items():
            data = np.ascontiguousarray(array, dtype=np.float32)
            written[f"{name}.{SUFFIXES.get(role, role)}"] = ("F32", data.shape, data.tobytes())
        if module_kind in ALPHA_KINDS:
            value = np.float32(0.0 if module_kind in ("oft", "boft") else rank if alpha is None else alpha)
            written[f"{name}.alpha"] = ("F32", (), value.tobytes())
    algos = sorted({kind} if isinstance(kind, str) else set(kind.values()))
    metadata = {
        "ss_network_module": "lycoris.kohya",
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(rank if alpha is None else alpha),
        "ss_network_args": json.dumps({"algo": ",".join(algos)}),
    }
    write(path, written, metadata)
    return modules
