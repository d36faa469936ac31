"""What kind of layer a module is, its rank, its in/out widths, and what is wrong with its shapes.

Everything here reads roles and shapes only, so it works on any format's modules before a byte of tensor data is
read. The kind decides the ΔW formula downstream (:mod:`lorahub.adapters.delta`), which is why a module whose
tensors do not fit together is reported rather than guessed at.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from lorahub.files.safetensors import TensorInfo
from lorahub.formats.base import Module

KIND_BY_ROLES: tuple[tuple[str, frozenset[str]], ...] = (
    ("loha", frozenset({"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2"})),
    ("lokr", frozenset({"lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2"})),
    ("glora", frozenset({"glora_a1", "glora_a2", "glora_b1", "glora_b2"})),
    ("oft", frozenset({"oft_blocks", "oft_rescale"})),
    ("ia3", frozenset({"ia3_weight", "ia3_on_input"})),
    ("lora", frozenset({"down", "up", "mid", "up_bias"})),
    ("full", frozenset({"diff"})),
    ("norm", frozenset({"w_norm", "b_norm"})),
    ("set", frozenset({"set_weight"})),
)
"""Earlier entries win. ``diff_b`` is not listed: alone it is a bias-only ``full`` delta, next to another kind it
is that layer's bias delta (ComfyUI's LoRA extraction writes ``lora_up``/``lora_down`` plus ``diff_b`` on one
module)."""

EXTRA_KINDS: tuple[tuple[str, frozenset[str]], ...] = (("dora", frozenset({"dora_scale", "magnitude"})),)
"""Kinds that ride on another: DoRA rescales whatever delta the module has."""

SHARED_ROLES = frozenset({"alpha", "scale", "dora_scale", "magnitude", "diff_b"})
"""Roles any kind may carry, which therefore say nothing about the kind."""

RANK_AXES: Mapping[str, tuple[tuple[str, int], ...]] = {
    "lora": (("down", 0), ("up", 1)),
    "locon": (("down", 0), ("up", 1)),
    "lora-tucker": (("down", 0), ("mid", 0), ("up", 1)),
    "loha": (("hada_w1_b", 0), ("hada_w2_b", 0)),
    "lokr": (("lokr_w2_b", 0), ("lokr_w1_b", 0)),
}
"""Where a kind keeps its rank. LoKr without ``_b`` factors is full-rank (rank None), as ComfyUI and LyCORIS
treat it (alpha ignored). GLoRA's rank depends on its layout and is computed by :func:`_glora_rank`."""


def _shape(module: Module, role: str) -> tuple[int, ...] | None:
    info = module.tensors.get(role)
    return info.shape if info is not None else None


def _dim(module: Module, role: str, axis: int) -> int | None:
    shape = _shape(module, role)
    if shape is None or len(shape) <= axis:
        return None
    return shape[axis]


ROLE_KIND: Mapping[str, tuple[int, str]] = {
    role: (priority, kind) for priority, (kind, roles) in enumerate(KIND_BY_ROLES) for role in roles
}
"""Role → (priority, kind), derived from :data:`KIND_BY_ROLES` so lookups are one dict hit per tensor."""


def kinds_present(module: Module) -> list[str]:
    """Every primary kind whose tensors the module has, highest priority first (more than one is a problem)."""
    found = sorted({ROLE_KIND[role] for role in module.tensors if role in ROLE_KIND})
    kinds = list(dict.fromkeys(kind for _, kind in found))
    if not kinds and "diff_b" in module.tensors:
        kinds = ["full"]
    return kinds


def _primary_kind(module: Module) -> str | None:
    best: tuple[int, str] | None = None
    for role in module.tensors:
        entry = ROLE_KIND.get(role)
        if entry is not None and (best is None or entry < best):
            best = entry
    if best is not None:
        return best[1]
    return "full" if "diff_b" in module.tensors else None


def layer_kind(module: Module) -> str:
    """``lora``, ``locon``, ``lora-tucker``, ``loha``, ``lokr``, ``full``, ``norm``, ``oft``, ``boft``, ``glora``,
    ``ia3``, ``set``; ``unknown`` when the module has no weight tensor at all (only alpha, say)."""
    kind = _primary_kind(module)
    if kind is None:
        return "unknown"
    if kind == "oft":
        shape = _shape(module, "oft_blocks")
        return "boft" if shape is not None and len(shape) == 4 else "oft"
    if kind == "lora":
        if "mid" in module.tensors:
            return "lora-tucker"
        down = _shape(module, "down")
        if down is not None and len(down) == 4:
            return "locon"
    return kind


def layer_kinds(module: Module) -> list[str]:
    """The primary kind followed by extras (``dora`` when the module has a magnitude vector)."""
    extras = [extra for extra, roles in EXTRA_KINDS if module.tensors.keys() & roles]
    return [layer_kind(module), *extras]


def rank(module: Module) -> int | None:
    """The module's rank, or None for kinds without one (full, norm, set, OFT/BOFT, IA3, full-rank LoKr)."""
    kind = layer_kind(module)
    if kind == "glora":
        return _glora_rank(module)
    for role, axis in RANK_AXES.get(kind, ()):
        value = _dim(module, role, axis)
        if value is not None:
            return value
    return None


def _glora_layout(module: Module) -> str | None:
    """``new`` or ``old`` LyCORIS GLoRA factor layout, told apart by shapes as ComfyUI does; None if neither fits."""
    a1, a2, b1, b2 = (_shape(module, f"glora_{n}") for n in ("a1", "a2", "b1", "b2"))
    if a1 is None or a2 is None or b1 is None or b2 is None or min(map(len, (a1, a2, b1, b2))) < 2:
        return None
    if b2[0] == b1[1] == a1[1] == a2[0]:
        return "new"
    if b2[1] == b1[0] == a1[0] == a2[1]:
        return "old"
    return None


def _glora_rank(module: Module) -> int | None:
    layout = _glora_layout(module)
    if layout == "new":
        return _dim(module, "glora_a2", 0)
    if layout == "old":
        return _dim(module, "glora_a1", 0)
    return None


# --- widths --------------------------------------------------------------------------------------------------------


def _product(*values: int | None) -> int | None:
    result = 1
    for value in values:
        if value is None:
            return None
        result *= value
    return result


def _lokr_factor(module: Module, n: int) -> tuple[int | None, int | None]:
    whole = _shape(module, f"lokr_w{n}")
    if whole is not None and len(whole) >= 2:
        return whole[0], whole[1]
    return _dim(module, f"lokr_w{n}_a", 0), _dim(module, f"lokr_w{n}_b", 1)


def _io_lora(module: Module) -> tuple[int | None, int | None]:
    return _dim(module, "down", 1), _dim(module, "up", 0)


def _io_loha(module: Module) -> tuple[int | None, int | None]:
    if "hada_t1" in module.tensors:
        return _dim(module, "hada_w1_b", 1), _dim(module, "hada_w1_a", 1)
    return _dim(module, "hada_w1_b", 1), _dim(module, "hada_w1_a", 0)


def _io_lokr(module: Module) -> tuple[int | None, int | None]:
    out1, in1 = _lokr_factor(module, 1)
    out2, in2 = _lokr_factor(module, 2)
    return _product(in1, in2), _product(out1, out2)


def _io_glora(module: Module) -> tuple[int | None, int | None]:
    if _glora_layout(module) == "old":
        return _dim(module, "glora_b1", 1), _dim(module, "glora_b2", 0)
    return _dim(module, "glora_b2", 1), _dim(module, "glora_b1", 0)


def _io_full(module: Module) -> tuple[int | None, int | None]:
    return _dim(module, "diff", 1), _dim(module, "diff", 0) or _dim(module, "diff_b", 0)


def _io_oft(module: Module) -> tuple[int | None, int | None]:
    shape = _shape(module, "oft_blocks")
    if shape is None or len(shape) < 3:
        return None, None
    return None, shape[-3] * shape[-1]


IO_RULES: Mapping[str, Callable[[Module], tuple[int | None, int | None]]] = {
    "lora": _io_lora,
    "locon": _io_lora,
    "lora-tucker": _io_lora,
    "loha": _io_loha,
    "lokr": _io_lokr,
    "glora": _io_glora,
    "full": _io_full,
    "oft": _io_oft,
    "boft": _io_oft,
}


def io_dims(module: Module) -> tuple[int | None, int | None]:
    """``(in_features, out_features)`` of the adapted layer as far as the tensors tell (conv: channels)."""
    rule = IO_RULES.get(layer_kind(module))
    in_dim, out_dim = rule(module) if rule is not None else (None, None)
    if out_dim is None:
        out_dim = _dim(module, "magnitude", 0)
    return in_dim, out_dim


# --- problems ------------------------------------------------------------------------------------------------------


PAIRS: tuple[tuple[str, str, str], ...] = (
    ("down", "up", "a down (lora_down/lora_A) weight"),
    ("up", "down", "an up (lora_up/lora_B) weight"),
    ("mid", "down", "a Tucker mid weight"),
    ("up_bias", "up", "an up bias"),
    ("hada_w1_a", "hada_w1_b", "LoHa hada_w1_a"),
    ("hada_w1_b", "hada_w1_a", "LoHa hada_w1_b"),
    ("hada_w2_a", "hada_w2_b", "LoHa hada_w2_a"),
    ("hada_w2_b", "hada_w2_a", "LoHa hada_w2_b"),
    ("hada_w1_a", "hada_w2_a", "LoHa first factor"),
    ("hada_w2_a", "hada_w1_a", "LoHa second factor"),
    ("lokr_w1_a", "lokr_w1_b", "LoKr lokr_w1_a"),
    ("lokr_w1_b", "lokr_w1_a", "LoKr lokr_w1_b"),
    ("lokr_w2_a", "lokr_w2_b", "LoKr lokr_w2_a"),
    ("lokr_w2_b", "lokr_w2_a", "LoKr lokr_w2_b"),
    ("glora_a1", "glora_a2", "GLoRA a1"),
    ("glora_a2", "glora_a1", "GLoRA a2"),
    ("glora_b1", "glora_b2", "GLoRA b1"),
    ("glora_b2", "glora_b1", "GLoRA b2"),
    ("ia3_on_input", "ia3_weight", "an IA3 on_input flag"),
    ("oft_rescale", "oft_blocks", "an OFT rescale"),
)
"""(role, the role it needs, how to name it): a half of a factorisation is unusable alone."""


def _pairs(module: Module) -> list[str]:
    problems = []
    for role, partner, label in PAIRS:
        if role in module.tensors and partner not in module.tensors:
            problems.append(f"{label} without its {partner}")
    return problems


INNER_DIMS: tuple[tuple[str, int, str, int, str], ...] = (
    ("down", 0, "up", 1, "rank mismatch: down has rank {a}, up has rank {b}"),
    ("down", 0, "mid", 1, "Tucker mid takes rank {b} but down has rank {a}"),
    ("mid", 0, "up", 1, "Tucker mid gives rank {a} but up takes rank {b}"),
    ("up", 0, "up_bias", 0, "up bias has {b} entries for {a} outputs"),
    ("lokr_w1_a", 1, "lokr_w1_b", 0, "LoKr w1 factors disagree on the inner dimension ({a} vs {b})"),
)
"""(role, axis, role, axis, message): shapes that must agree in every layout of their kind."""

LOHA_PLAIN: tuple[tuple[str, int, str, int, str], ...] = (
    ("hada_w1_a", 1, "hada_w1_b", 0, "LoHa w1 factors disagree on the rank ({a} vs {b})"),
    ("hada_w2_a", 1, "hada_w2_b", 0, "LoHa w2 factors disagree on the rank ({a} vs {b})"),
    ("hada_w1_a", 0, "hada_w2_a", 0, "LoHa products have different output sizes ({a} vs {b})"),
    ("hada_w1_b", 1, "hada_w2_b", 1, "LoHa products have different input sizes ({a} vs {b})"),
)
LOHA_TUCKER: tuple[tuple[str, int, str, int, str], ...] = (
    ("hada_t1", 0, "hada_w1_a", 0, "LoHa Tucker core t1 and w1_a disagree ({a} vs {b})"),
    ("hada_t1", 1, "hada_w1_b", 0, "LoHa Tucker core t1 and w1_b disagree ({a} vs {b})"),
    ("hada_t2", 0, "hada_w2_a", 0, "LoHa Tucker core t2 and w2_a disagree ({a} vs {b})"),
    ("hada_t2", 1, "hada_w2_b", 0, "LoHa Tucker core t2 and w2_b disagree ({a} vs {b})"),
)
LOKR_W2_PLAIN: tuple[tuple[str, int, str, int, str], ...] = (
    ("lokr_w2_a", 1, "lokr_w2_b", 0, "LoKr w2 factors disagree on the inner dimension ({a} vs {b})"),
)
LOKR_W2_TUCKER: tuple[tuple[str, int, str, int, str], ...] = (
    ("lokr_t2", 0, "lokr_w2_a", 0, "LoKr Tucker core t2 and w2_a disagree ({a} vs {b})"),
    ("lokr_t2", 1, "lokr_w2_b", 0, "LoKr Tucker core t2 and w2_b disagree ({a} vs {b})"),
)


def _mismatches(module: Module, rules: tuple[tuple[str, int, str, int, str], ...]) -> list[str]:
    problems = []
    for role_a, axis_a, role_b, axis_b, message in rules:
        a, b = _dim(module, role_a, axis_a), _dim(module, role_b, axis_b)
        if a is not None and b is not None and a != b:
            problems.append(message.format(a=a, b=b))
    return problems


def _kind_checks(module: Module, kind: str) -> list[str]:
    if kind == "loha":
        return _mismatches(module, LOHA_TUCKER if "hada_t1" in module.tensors else LOHA_PLAIN)
    if kind == "lokr":
        lokr_w2 = LOKR_W2_TUCKER if "lokr_t2" in module.tensors else LOKR_W2_PLAIN
        return _mismatches(module, lokr_w2) + _missing_factors(module, kind)
    if kind == "glora" and len(module.tensors.keys() & {"glora_a1", "glora_a2", "glora_b1", "glora_b2"}) == 4:
        return [] if _glora_layout(module) else ["GLoRA factor shapes fit neither the old nor the new layout"]
    if kind == "oft":
        shape = _shape(module, "oft_blocks")
        if shape is not None and (len(shape) != 3 or shape[1] != shape[2]):
            return [f"OFT blocks have shape {list(shape)}, not [blocks, size, size]"]
    if kind == "boft":
        shape = _shape(module, "oft_blocks")
        if shape is not None and shape[2] != shape[3]:
            return [f"BOFT blocks have shape {list(shape)}, not [stages, blocks, size, size]"]
    return []


def _scalar_checks(module: Module) -> list[str]:
    problems = []
    for role in ("alpha", "scale"):
        info: TensorInfo | None = module.tensors.get(role)
        if info is not None and info.numel != 1:
            problems.append(f"{role} should be one number but has shape {list(info.shape)}")
    return problems


def _missing_factors(module: Module, kind: str) -> list[str]:
    if kind != "lokr":
        return []
    return [
        f"LoKr has no w{n} factor"
        for n in (1, 2)
        if not module.tensors.keys() & {f"lokr_w{n}", f"lokr_w{n}_a", f"lokr_w{n}_b"}
    ]


def is_whole(module: Module) -> bool:
    """The module has its kind's whole key pattern (a down with its up, all four LoHa factors, both LoKr factors) and
    tensors of one kind only: only then may the kind be claimed, since a loader skips a module it cannot complete."""
    present = kinds_present(module)
    return len(present) == 1 and not _pairs(module) and not _missing_factors(module, layer_kind(module))


def problems_in(module: Module) -> list[str]:
    """Structure problems a loader would trip over, as sentences; empty when the module is whole."""
    present = kinds_present(module)
    if not present:
        return ["no weight tensors, only " + ", ".join(sorted(module.tensors)) if module.tensors else "no tensors"]
    problems = []
    if len(present) > 1:
        problems.append("mixes tensors of several layer kinds: " + ", ".join(present))
    problems += _pairs(module)
    problems += _mismatches(module, INNER_DIMS)
    problems += _kind_checks(module, layer_kind(module))
    problems += _scalar_checks(module)
    if "dora_scale" in module.tensors and "magnitude" in module.tensors:
        problems.append("has both a kohya dora_scale and a PEFT lora_magnitude_vector")
    return problems
