"""What lorahub can do with each kind of adapter layer, as data: convert exactly, convert lossily, load, bake.

One table, read by the code that acts on it: the converter refuses (or, with ``--lossy``, approximates) exactly the
layers whose kind or extras this table marks ``lossy``; the pipeline loader hands PEFT exactly the adapters whose
every layer is marked ``peft`` and applies the others through lorahub's ΔW patches
(:mod:`lorahub.sdk.patching`); ``inspect`` reports it per file; and ``docs/reference/support-matrix.md`` is generated
from it (a test checks the page against this module).

A layer is described by its kind (:func:`lorahub.formats.layers.layer_kind`) and its *extras*: tensors a plain LoRA
writer or PEFT's LoRA layers cannot hold beside the factors (a DoRA magnitude, a bias delta, an A1111 ``scale``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from lorahub.adapters.delta import BASE_KINDS, DORA_ROLES, KINDS

__all__ = [
    "EXTRAS",
    "KIND_SUPPORT",
    "LAYOUT_EXTRAS",
    "Capabilities",
    "KindSupport",
    "ModuleFacts",
    "capabilities",
    "exactly_convertible",
    "layer_extras",
    "peft_loadable",
    "rows_of",
]

Convert = Literal["exact", "lossy", "full-only"]
Load = Literal["peft", "delta"]


@dataclass(frozen=True)
class KindSupport:
    """One row of the support matrix.

    ``convert``: into the LoRA layouts (kohya, diffusers, PEFT, ComfyUI): ``exact`` (the factors are written as they
    are, ΔW checked), ``lossy`` (only with ``--lossy``: a truncated SVD of ΔW, the error reported) or ``full-only``
    (a layer that is no low-rank update of its weight, such as a norm's diff or a replaced weight). Every kind
    converts exactly into the ``full`` layout (ΔW itself), with ``--base`` when ``needs_base``.
    ``load``: how ``load``/``stack``/``apply_prompt`` apply it to a diffusers pipeline, exactly either way: ``peft``
    (PEFT's own LoRA layers, through diffusers) or ``delta`` (lorahub's ΔW patch on the model's layer).
    ``bake``: written into a base checkpoint (``W + w·ΔW``).
    """

    kind: str
    label: str
    convert: Convert
    load: Load
    bake: bool
    needs_base: bool


def _row(kind: str, label: str, convert: Convert = "lossy", load: Load = "delta") -> KindSupport:
    return KindSupport(kind, label, convert, load, bake=True, needs_base=kind in BASE_KINDS)


KIND_SUPPORT: Mapping[str, KindSupport] = {
    row.kind: row
    for row in (
        _row("lora", "LoRA (linear)", "exact", "peft"),
        _row("locon", "LoCon (conv)", "exact", "peft"),
        _row("lora-tucker", "LoCon with a Tucker core (lora_mid)", "exact", "peft"),
        _row("loha", "LoHa (Hadamard product; Tucker and conv too)"),
        _row("lokr", "LoKr (Kronecker product; every factorisation, Tucker, conv)"),
        _row("full", "full diff (diff, diff_b)"),
        _row("norm", "norm layer diff (w_norm, b_norm)", "full-only"),
        _row("set", "weight replacement (set_weight)", "full-only"),
        _row("glora", "GLoRA"),
        _row("oft", "OFT (diagonal)"),
        _row("boft", "BOFT (butterfly)"),
        _row("ia3", "(IA)³"),
    )
}
"""Kind → what lorahub does with it. Every kind with a ΔW rule (:data:`lorahub.adapters.delta.KINDS`) has a row."""

EXTRAS: Mapping[str, tuple[frozenset[str], str]] = {
    "dora": (DORA_ROLES, "DoRA magnitude (dora_scale, lora_magnitude_vector) on any kind"),
    "bias": (frozenset({"diff_b", "up_bias"}), "bias delta beside LoRA factors (diff_b, PEFT lora_B.bias)"),
    "scale": (frozenset({"scale"}), "A1111 per-module scale tensor"),
}
"""Extras that make a LoRA layer more than PEFT's LoRA layers and the LoRA writers hold: such a layer converts
lossily and loads through the ΔW patch (DoRA then needs the base weight, which a pipeline has)."""

EXTRA_SUPPORT: Mapping[str, KindSupport] = {
    name: KindSupport(name, label, "lossy", "delta", bake=True, needs_base=name == "dora")
    for name, (_, label) in EXTRAS.items()
}


def layer_extras(roles: Iterable[str]) -> list[str]:
    """The extras a layer with these tensor roles carries (see :data:`EXTRAS`)."""
    present = set(roles)
    return [name for name, (extra_roles, _) in EXTRAS.items() if present & extra_roles]


LORA_LAYOUTS = ("kohya", "diffusers", "peft", "comfyui", "bfl-control")
"""The layouts ``convert`` writes factors into (``full`` holds every kind as ΔW)."""
LORA_ROLES = frozenset({"down", "up", "mid"})
"""What PEFT's LoRA layers and the LoRA writers hold: the factors (a Tucker ``mid`` folds into ``down``)."""


def peft_loadable(kind: str, roles: Iterable[str]) -> bool:
    """Whether PEFT's LoRA layers hold this layer exactly: a kind marked ``peft`` with its factors and nothing else."""
    row = KIND_SUPPORT.get(kind)
    present = set(roles)
    return row is not None and row.load == "peft" and {"down", "up"} <= present <= LORA_ROLES


LAYOUT_EXTRAS: Mapping[str, frozenset[str]] = {
    "diffusers": frozenset({"bias", "set"}),
    "bfl-control": frozenset({"bias", "set"}),
    "peft": frozenset({"bias"}),
}
"""Layouts that hold more than LoRA factors, exactly: a bias delta as PEFT's ``lora_B.bias`` (``lora_bias``, which
diffusers and PEFT load), and FLUX's QK-norm weights replaced whole (``set``), as BFL's FLUX Control LoRAs ship them
(``…norm.query_norm.scale``) and diffusers' ``FluxLoraLoaderMixin`` loads them (``…attn.norm_q.weight``). kohya and
ComfyUI files hold LoRA factors only (ComfyUI reads Control LoRAs in BFL's own layout)."""
QK_NORM = re.compile(r"transformer\.(?:single_)?transformer_blocks\.[0-9]+\.attn\.norm_(?:added_)?[qk]")
"""The canonical names of FLUX's QK norms, the only layers whose ``set`` a layout of :data:`LAYOUT_EXTRAS` holds."""
BIAS_ROLES = frozenset({"up_bias"})


def exactly_convertible(kind: str, roles: Iterable[str], target: str | None = None, name: str = "") -> bool:
    """Whether the LoRA writers hold this layer exactly: a kind marked ``exact`` with its factors and nothing else;
    or, for a ``target`` of :data:`LAYOUT_EXTRAS`, a LoRA with a ``lora_B.bias`` or a FLUX QK-norm ``set`` (``name``
    is the layer's canonical name) where that layout holds it."""
    row = KIND_SUPPORT.get(kind)
    present = set(roles)
    if row is not None and row.convert == "exact" and {"down", "up"} <= present <= LORA_ROLES:
        return True
    extras = LAYOUT_EXTRAS.get(target or "", frozenset())
    if kind == "lora" and "bias" in extras:
        return {"down", "up"} <= present <= LORA_ROLES | BIAS_ROLES
    return kind == "set" and "set" in extras and present == {"set_weight"} and bool(QK_NORM.fullmatch(name))


@dataclass(frozen=True)
class ModuleFacts:
    """What the support of one module depends on: its kind, its tensor roles, and where its name goes
    (:func:`lorahub.adapters.model.where_modules_go`: ``mapped``, ``fused`` or ``unmapped``)."""

    kind: str
    roles: frozenset[str]
    fate: str = "mapped"
    name: str = ""
    """The canonical name, where known (a ``set`` is exact in some layouts only on FLUX's QK norms)."""


@dataclass(frozen=True)
class Capabilities:
    """What lorahub can do with a whole file: each of ``convert_exact`` (into the LoRA layouts), ``convert_lossy``,
    ``load`` and ``bake`` holds when it holds for every module. ``load_via`` says how a pipeline takes it (``peft``
    when every module is plain LoRA, else ``delta``: lorahub's ΔW patch); ``needs_base`` lists the kinds whose ΔW
    needs the base weight (``--base`` for ``--lossy`` and ``--to full``; a pipeline and ``bake`` have it);
    ``reasons`` says why something is not possible."""

    convert_exact: bool
    convert_lossy: bool
    load: bool
    load_via: Load | None
    bake: bool
    needs_base: list[str]
    reasons: list[str]
    exact_into: list[str]
    """The layouts every module converts into exactly (all LoRA layouts when ``convert_exact``; some layouts for a
    FLUX Control LoRA's biases and norms, :data:`LAYOUT_EXTRAS`)."""

    def as_dict(self) -> dict[str, object]:
        return {
            "convert_exact": self.convert_exact,
            "exact_into": self.exact_into,
            "convert_lossy": self.convert_lossy,
            "load": self.load,
            "load_via": self.load_via,
            "bake": self.bake,
            "needs_base": self.needs_base,
            "reasons": self.reasons,
        }


def rows_of(module: ModuleFacts) -> list[KindSupport]:
    """The support rows a module is subject to: its kind's and its extras' (empty for a kind lorahub cannot apply)."""
    row = KIND_SUPPORT.get(module.kind)
    if row is None or module.kind not in KINDS:
        return []
    return [row, *(EXTRA_SUPPORT[extra] for extra in layer_extras(module.roles))]


def capabilities(modules: Iterable[ModuleFacts], *, family: str | None = None) -> Capabilities:
    """What lorahub can do with a file of these modules, by the rules the converter, loader and bake follow: a module
    whose name does not map is dropped by none of them (so nothing is possible); one of a kind without a ΔW rule
    neither; a non-LoRA delta over a fused SD3/FLUX module (``img_attn.qkv``) is applied and baked as its dense ΔW
    split by rows, which a kind that depends on the base weight does not allow."""
    facts = list(modules)
    reasons: list[str] = []
    unmapped = [m for m in facts if m.fate == "unmapped"]
    unknown = sorted({m.kind for m in facts if not rows_of(m)})
    if not facts:
        reasons.append("no adapter modules")
    if unmapped and family == "unknown":
        reasons.append("the base family is unknown, so module names map to no model's paths (load still applies it "
                       "to a pipeline of a family all its modules map to)")  # fmt: skip
    elif unmapped:
        reasons.append(f"{len(unmapped)} module(s) do not map to {family or 'the family'}'s model paths")
    if unknown:
        reasons.append(f"no ΔW rule for {', '.join(unknown)} modules")
    rows = [row for m in facts for row in rows_of(m)]
    needs_base = sorted({row.kind for row in rows if row.needs_base})
    fused_base = [m for m in facts if m.fate == "fused" and any(row.needs_base for row in rows_of(m))]
    if fused_base:
        reasons.append(f"{len(fused_base)} fused module(s) with a delta that depends on the base weight")
    usable = not reasons
    exact = usable and all(exactly_convertible(m.kind, m.roles) for m in facts)
    peft = all(peft_loadable(m.kind, m.roles) for m in facts)
    into = list(LORA_LAYOUTS) if exact else []
    if usable and not exact:
        into = [t for t in LORA_LAYOUTS if all(exactly_convertible(m.kind, m.roles, t, m.name) for m in facts)]
    return Capabilities(
        convert_exact=exact,
        exact_into=into,
        convert_lossy=usable and all(row.convert != "full-only" for row in rows),
        load=usable,
        load_via=("peft" if peft else "delta") if usable else None,
        bake=usable and all(row.bake for row in rows),
        needs_base=needs_base,
        reasons=reasons,
    )


# --- the generated page (docs/reference/support-matrix.md) ------------------------------------------------------

_CONVERT_CELL = {"exact": "exact", "lossy": "lossy (`--lossy`, error reported)", "full-only": "no (only `--to full`)"}
_LOAD_CELL = {"peft": "exact: PEFT's LoRA layers", "delta": "exact: lorahub's ΔW patch"}
_LORA_ROLE_KINDS = {"mid": "lora-tucker"}


def _convert_cell(row: KindSupport) -> str:
    """The kind's rule, and the layouts of :data:`LAYOUT_EXTRAS` that hold it exactly anyway."""
    into = [f"`{layout}`" for layout, extras in LAYOUT_EXTRAS.items() if row.kind in extras]
    if row.convert == "exact" or not into:
        return _CONVERT_CELL[row.convert]
    where = " (FLUX QK norms)" if row.kind == "set" else " (as `lora_B.bias`)"
    return f"exact into {', '.join(into)}{where}; else {_CONVERT_CELL[row.convert]}"


def _kind_row(row: KindSupport) -> str:
    full = "exact, with `--base`" if row.needs_base else "exact"
    base = "yes" if row.needs_base else "no"
    cells = [f"`{row.kind}`", row.label, _convert_cell(row), full, _LOAD_CELL[row.load],
             "yes" if row.bake else "no", base]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def _layout_roles(fmt: object) -> frozenset[str]:
    """The roles a layout's key spellings can carry: its scheme's suffix table (cloneofsimo: up and down only)."""
    import importlib

    scheme = getattr(fmt, "scheme", None) or getattr(importlib.import_module(type(fmt).__module__), "SCHEME", None)
    if scheme is None:
        return frozenset({"down", "up"})
    return frozenset(scheme.suffixes.values())


def _layout_kinds(roles: frozenset[str]) -> list[str]:
    from lorahub.formats.layers import ROLE_KIND

    kinds = {ROLE_KIND[role][1] for role in roles if role in ROLE_KIND}
    if "lora" in kinds:
        kinds |= {"locon"} | {_LORA_ROLE_KINDS[role] for role in roles if role in _LORA_ROLE_KINDS}
    if "oft" in kinds:
        kinds.add("boft")
    order = list(KIND_SUPPORT)
    return sorted(kinds, key=order.index) + layer_extras(roles)


def support_matrix() -> str:
    """The tables of docs/reference/support-matrix.md, from :data:`KIND_SUPPORT`, :data:`EXTRAS`, the registered
    layouts (:data:`lorahub.formats.FORMATS`) and how the reader maps their names
    (:data:`lorahub.adapters.model.SD_SPELLINGS`)."""
    from lorahub.adapters.model import SD_SPELLINGS
    from lorahub.formats import FORMATS

    lines = [
        "| kind | what | convert into LoRA layouts | convert into `full` | load, stack, prompt, switch | bake | "
        "needs the base weight |",
        "|---|---|---|---|---|---|---|",
        *(_kind_row(row) for row in KIND_SUPPORT.values()),
        *(_kind_row(row) for row in EXTRA_SUPPORT.values()),
        "",
        "| layout | what | kinds its keys can hold | module names read as model paths (SD 1.x/2.x/SDXL) |",
        "|---|---|---|---|",
    ]
    for fmt in FORMATS:
        kinds = ", ".join(f"`{kind}`" for kind in _layout_kinds(_layout_roles(fmt))) or "-"
        spelling = SD_SPELLINGS.get(fmt.id)
        mapped = f"yes ({spelling} names)" if spelling else "no"
        description = fmt.description.replace("|", "\\|")
        lines.append(f"| `{fmt.id}` | {description} | {kinds} | {mapped} |")
    return "\n".join(lines) + "\n"
