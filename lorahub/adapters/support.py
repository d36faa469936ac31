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

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from lorahub.adapters.delta import BASE_KINDS, DORA_ROLES, KINDS

__all__ = [
    "EXTRAS",
    "KIND_SUPPORT",
    "Capabilities",
    "KindSupport",
    "capabilities",
    "exactly_convertible",
    "layer_extras",
    "peft_loadable",
]

Convert = Literal["exact", "lossy"]
Load = Literal["peft", "delta"]


@dataclass(frozen=True)
class KindSupport:
    """One row of the support matrix.

    ``convert``: into the LoRA layouts (kohya, diffusers, PEFT, ComfyUI): ``exact`` (the factors are written as they
    are, ΔW checked) or ``lossy`` (only with ``--lossy``: a truncated SVD of ΔW, the error reported). Every kind
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
        _row("norm", "norm layer diff (w_norm, b_norm)"),
        _row("set", "weight replacement (set_weight)"),
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


LORA_ROLES = frozenset({"down", "up", "mid"})
"""What PEFT's LoRA layers and the LoRA writers hold: the factors (a Tucker ``mid`` folds into ``down``)."""


def peft_loadable(kind: str, roles: Iterable[str]) -> bool:
    """Whether PEFT's LoRA layers hold this layer exactly: a kind marked ``peft`` with its factors and nothing else."""
    row = KIND_SUPPORT.get(kind)
    present = set(roles)
    return row is not None and row.load == "peft" and {"down", "up"} <= present <= LORA_ROLES


def exactly_convertible(kind: str, roles: Iterable[str]) -> bool:
    """Whether the LoRA writers hold this layer exactly: a kind marked ``exact`` with its factors and nothing else."""
    row = KIND_SUPPORT.get(kind)
    present = set(roles)
    return row is not None and row.convert == "exact" and {"down", "up"} <= present <= LORA_ROLES


@dataclass(frozen=True)
class Capabilities:
    """What lorahub can do with a set of layers (a whole file, or one kind): each of ``convert_exact``,
    ``convert_lossy``, ``load``, ``bake`` is true when it holds for every layer; ``load_via`` says how a pipeline
    takes it (``peft`` when every layer is PEFT LoRA, else ``delta``); ``needs_base`` lists what needs the base
    weight (for ``--lossy`` and ``--to full``; a pipeline and ``bake`` have it)."""

    convert_exact: bool
    convert_lossy: bool
    load: bool
    load_via: Load | None
    bake: bool
    needs_base: list[str]

    def as_dict(self) -> dict[str, object]:
        return {
            "convert_exact": self.convert_exact,
            "convert_lossy": self.convert_lossy,
            "load": self.load,
            "load_via": self.load_via,
            "bake": self.bake,
            "needs_base": self.needs_base,
        }


def capabilities(layers: Iterable[tuple[str, Iterable[str]]], *, names_map: bool = True) -> Capabilities:
    """What lorahub can do with layers given as ``(kind, roles)``; ``names_map`` is false when some module names do
    not map to the family's model paths (then nothing but inspection is possible: a converter would drop them, a
    loader would not know where they go, a bake would not find their tensors)."""
    rows: list[KindSupport] = []
    peft = True
    exact = True
    for kind, layer_roles in layers:
        roles = list(layer_roles)
        row = KIND_SUPPORT.get(kind)
        if row is None or kind not in KINDS:
            return Capabilities(False, False, False, None, False, [])
        rows.append(row)
        rows.extend(EXTRA_SUPPORT[extra] for extra in layer_extras(roles))
        peft = peft and peft_loadable(kind, roles)
        exact = exact and exactly_convertible(kind, roles)
    known = bool(rows) and names_map
    return Capabilities(
        convert_exact=known and exact,
        convert_lossy=known,
        load=known,
        load_via=("peft" if peft else "delta") if known else None,
        bake=known and all(row.bake for row in rows),
        needs_base=sorted({row.kind for row in rows if row.needs_base}),
    )
