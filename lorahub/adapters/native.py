"""Between file modules and canonical layers for families whose native modules are fused (SD3, FLUX.1).

Reading (:func:`expand`): one module of a file becomes the canonical layer(s) it holds — renamed, swapped
(``swap_scale_shift``) or split into parts through :mod:`lorahub.adapters.fused`. Writing (:func:`written_layers`):
canonical layers become the modules a format spells, fused again for native-named formats (kohya, ComfyUI). For
the SD families every module maps one to one, so :func:`written_layers` is just the name tables; writers call it
for every family and never need to know which ones fuse.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from lorahub import errors
from lorahub.adapters import dit_names, fused
from lorahub.adapters.canonical import CanonicalAdapter, CanonicalLayer
from lorahub.adapters.names import from_canonical

__all__ = ["Expanded", "expand", "written_layers"]

FAMILIES = dit_names.FAMILIES


@dataclass
class Expanded:
    """What one file module became: canonical layers, or the reason it must stay whole (``unsplit``)."""

    layers: list[CanonicalLayer]
    unsplit: str | None = None


def expand(
    family: str, module_name: str, component: str | None, layer: CanonicalLayer, *, materialize: bool = False
) -> Expanded | None:
    """The canonical layers of one module read from a file (``layer`` carries its tensors under any name), or None
    when the name is not one of the family's modules. ``materialize`` (a ``--lossy`` conversion) turns a delta that
    cannot be split exactly (a LoKr over fused qkv) into its dense ΔW, which splits exactly by rows; the lossy
    converter then decomposes each part and reports the error."""
    native = dit_names.lookup(family, module_name, component)
    if native is None:
        return None
    if native.identity:
        return Expanded([replace(layer, name=native.parts[0])])
    reason = fused.splittable(layer.tensors)
    if reason is not None and materialize:
        layer = _materialized(layer)
        reason = fused.splittable(layer.tensors)
    if reason is not None:
        if not native.fused:  # a modulation whose [shift, scale] halves may need swapping
            reason = f"the [shift, scale] rows of a {layer.kind} delta cannot be swapped exactly"
        return Expanded([], f"{module_name}: {reason}")
    return _transformed(native, module_name, layer)


def _materialized(layer: CanonicalLayer) -> CanonicalLayer:
    delta = layer.delta()
    tensors = {"diff": delta.weight.reshape(delta.weight.shape[0], -1)}
    if delta.bias is not None:
        tensors["diff_b"] = delta.bias
    return replace(layer, kind="full", tensors=tensors, alpha=None, rslora=False)


def _transformed(native: dit_names.Native, module_name: str, layer: CanonicalLayer) -> Expanded:
    """Swap the modulation rows and/or split a fused module (its delta is known to be splittable)."""
    tensors = layer.tensors
    if native.swap and fused.swapped(native.swap, tensors):
        if fused.rows(tensors) % 2:
            return Expanded([], f"{module_name}: an odd number of modulation rows cannot be [shift, scale]")
        tensors = fused.swap_scale_shift(tensors)
    if not native.fused:
        return Expanded([replace(layer, name=native.parts[0], tensors=tensors)])
    widths = fused.part_widths(fused.rows(tensors), native.ratios)
    if widths is None:
        shares = "+".join(map(str, native.ratios))
        return Expanded([], f"{module_name}: {fused.rows(tensors)} output rows do not split as {shares} equal widths")
    layer = layer.plain()  # fused.py keeps each part's scale through alpha/rank
    parts = fused.split(tensors, layer.alpha, widths)
    return Expanded(
        [
            replace(layer, name=name, tensors=part.tensors, alpha=part.alpha)
            for name, part in zip(native.parts, parts, strict=True)
            if part is not None
        ]
    )


def _unnamed(canonical: str, family: str, fmt: str) -> errors.LayerUnnamedError:
    return errors.LayerUnnamedError(
        f"{canonical} has no {fmt} name in the {family} tables",
        hint="convert to a format that names this module (diffusers names every canonical layer)",
    )


def written_layers(
    adapter: CanonicalAdapter, fmt: str, *, transformers5: bool = False
) -> list[tuple[str, CanonicalLayer]]:
    """``(name in fmt, layer)`` for every module ``fmt`` writes: canonical layers renamed, and for SD3/FLUX in a
    native-named format (kohya, comfyui) swapped and fused back into one module per native Linear. Raises a
    :class:`~lorahub.errors.LayerUnnamedError` for a layer the format cannot name (nothing is dropped silently)."""
    family = adapter.family
    if family not in FAMILIES or fmt not in dit_names.NATIVE_FORMATS:
        out = []
        for canonical, layer in adapter.layers.items():
            name = from_canonical(family, fmt, canonical, transformers5=transformers5)
            if name is None:
                raise _unnamed(canonical, family, fmt)
            out.append((name, layer))
        return out
    return list(_native_layers(adapter.layers.values(), family, fmt))


def _native_layers(layers: Iterable[CanonicalLayer], family: str, fmt: str) -> Iterable[tuple[str, CanonicalLayer]]:
    groups: dict[dit_names.Native, list[CanonicalLayer | None]] = {}
    for layer in layers:
        found = dit_names.native_of(family, layer.name)
        if found is None:
            raise _unnamed(layer.name, family, fmt)
        native, index = found
        groups.setdefault(native, [None] * len(native.parts))[index] = layer
    for native, parts in groups.items():
        name = dit_names.written_name(family, fmt, native)
        if name is None:
            raise _unnamed(native.parts[0], family, fmt)
        yield name, _native_layer(native, parts)


def _native_layer(native: dit_names.Native, parts: list[CanonicalLayer | None]) -> CanonicalLayer:
    first = next(part for part in parts if part is not None)
    for part in parts:
        if part is not None and fused.splittable(part.tensors) is not None and not native.identity:
            raise errors.FusedLayerError(
                f"{part.name} ({part.kind}) cannot be written into the fused {native.path}",
                hint="only LoRA and full deltas are fused exactly",
            )
    if native.fused:
        units = {fused.rows(p.tensors) // native.ratios[i] for i, p in enumerate(parts) if p is not None}
        if len(units) != 1:
            raise errors.FusedLayerError(f"the parts of {native.path} have inconsistent widths")
        unit = units.pop()
        widths = [ratio * unit for ratio in native.ratios]
        plain = [None if p is None else p.plain() for p in parts]  # fused.py computes scales as alpha/rank
        try:
            merged = fused.fuse([None if p is None else fused.Part(p.tensors, p.alpha) for p in plain], widths)
        except fused.FuseError as exc:
            raise errors.FusedLayerError(f"cannot fuse the parts of {native.path}: {exc}") from exc
        tensors, alpha, rslora = merged.tensors, merged.alpha, False
    else:
        tensors, alpha, rslora = first.tensors, first.alpha, first.rslora
    if native.swap and fused.swapped(native.swap, tensors):
        tensors = fused.swap_scale_shift(tensors)
    return replace(first, name=native.path, tensors=tensors, alpha=alpha, rslora=rslora)
