"""Reading a safetensors file into the canonical adapter (docs/concepts/architecture.md, decision 1; the types
are in :mod:`lorahub.adapters.canonical` and re-exported here, where callers have always found them).

A layer is named by its canonical diffusers path; a module whose name does not map (an unknown architecture, a family
without name tables yet, a name outside the inventory) keeps the file's own name and is listed in
:attr:`CanonicalAdapter.unmapped`, never dropped. Tensors are the storage values widened to float32 (exact for
fp16/bf16/fp8 sources); ``dtype`` remembers the storage type so a writer can keep it. A reader that hands the
tensors on to torch (a pipeline load) may keep them as stored instead (``widen=False``): float16 stays float16, the
same values, and torch converts once to the pipeline's dtype; widening first costs more than the rest of the read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt

from lorahub.adapters import dit_names, native
from lorahub.adapters.canonical import CanonicalAdapter, CanonicalLayer
from lorahub.adapters.names import FAMILIES, to_canonical
from lorahub.files.numeric import as_numpy, scalar, to_float32
from lorahub.files.safetensors import SafetensorsFile, TensorInfo
from lorahub.formats import detect
from lorahub.formats.base import Layout, Module
from lorahub.formats.families import detect_family
from lorahub.formats.layers import layer_kind

__all__ = [
    "SD_SPELLINGS",
    "CanonicalAdapter",
    "CanonicalLayer",
    "canonical_name",
    "cloneofsimo_names",
    "read_adapter",
    "where_modules_go",
]

Array = npt.NDArray[Any]

SD_SPELLINGS: Mapping[str, str] = {
    "kohya": "kohya",
    "lycoris": "kohya",
    "diffusers": "diffusers",
    "diffusers-old": "diffusers-old",
    "peft": "peft",
    "cloneofsimo": "index",
}
"""Layout → how its module names are read as canonical paths in the SD 1.x/2.x/SDXL families (kohya's flattened
names, diffusers paths, diffusers-old attention-processor names, PEFT's ``base_model.model.`` paths, cloneofsimo's
module indices). Layouts not listed keep their own names there (SD3/FLUX names are resolved per module by
:mod:`lorahub.adapters.dit_names`, whatever the layout)."""
_DIFFUSERS_PREFIXES = ("unet.", "text_encoder.", "text_encoder_2.")


def _diffusers_old_name(name: str, component: str) -> tuple[str, str]:
    """diffusers-old spellings → diffusers PEFT paths: ``….processor.to_q_lora`` → ``….to_q``, ``to_out_lora`` →
    ``to_out.0``, ``….to_q.lora`` / ``….q_proj.lora_linear_layer`` → the layer; the component prefix is added when
    the file leaves it out (attn-proc files are UNet-only)."""
    if ".processor." in name and name.endswith("_lora"):
        parent, _, child = name.rpartition(".processor.")
        target = child.removesuffix("_lora")
        name = f"{parent}.{'to_out.0' if target == 'to_out' else target}"
    for suffix in (".lora_linear_layer", ".lora"):
        if name.endswith(suffix):
            name = name.removesuffix(suffix)
            break
    if not name.startswith(_DIFFUSERS_PREFIXES) and component in ("unet", "text_encoder", "text_encoder_2"):
        name = f"{component}.{name}"
    return name, component


def _peft_name(name: str) -> str:
    for prefix in ("base_model.model.",):
        if name.startswith(prefix):
            return name.removeprefix(prefix)
    return name


def canonical_name(family: str, fmt: str, module: Module) -> str | None:
    """The canonical path of a parsed module, or None when it does not map (see the module docstring)."""
    if family not in FAMILIES:
        return None
    component = module.component if module.component != "unknown" else None
    spelling = SD_SPELLINGS.get(fmt)
    if spelling == "kohya":
        return to_canonical(family, "kohya", module.name, component)
    if spelling == "diffusers":
        return to_canonical(family, "diffusers", module.name, component)
    if spelling == "diffusers-old":
        name, _ = _diffusers_old_name(module.name, module.component)
        return to_canonical(family, "diffusers", name, component)
    if spelling == "peft":
        return to_canonical(family, "diffusers", _peft_name(module.name), component)
    return None


# cloneofsimo/lora numbers modules in ``model.modules()`` order of the diffusers (0.10-era) model it injected into:
# the UNet's down_blocks, then up_blocks, then mid_block (registration order); inside each BasicTransformerBlock of
# that era ``attn1``, ``ff`` (GEGLU ``proj``), ``attn2``; CLIPAttention registers k, v, q, out. Default targets:
# UNet {CrossAttention, Attention, GEGLU}, text encoder {CLIPAttention}.
_SD_BLOCKS = (
    *(f"down_blocks.{b}.attentions.{a}" for b in range(3) for a in range(2)),
    *(f"up_blocks.{b}.attentions.{a}" for b in range(1, 4) for a in range(3)),
    "mid_block.attentions.0",
)
_ATTN = ("to_q", "to_k", "to_v", "to_out.0")


def cloneofsimo_names(family: str) -> dict[str, list[str]]:
    """Index → canonical name lists for cloneofsimo files of SD 1.x/2.x with the default targets (``unet`` 144 with
    GEGLU, 128 without; ``text_encoder`` 48)."""
    if family not in ("sd1", "sd2"):
        return {}
    with_geglu: list[str] = []
    without: list[str] = []
    for block in _SD_BLOCKS:
        base = f"unet.{block}.transformer_blocks.0"
        attn1 = [f"{base}.attn1.{p}" for p in _ATTN]
        attn2 = [f"{base}.attn2.{p}" for p in _ATTN]
        with_geglu += [*attn1, f"{base}.ff.net.0.proj", *attn2]
        without += [*attn1, *attn2]
    te = [
        f"text_encoder.text_model.encoder.layers.{i}.self_attn.{p}"
        for i in range(23 if family == "sd2" else 12)
        for p in ("k_proj", "v_proj", "q_proj", "out_proj")
    ]
    return {"unet": with_geglu, "unet-attention-only": without, "text_encoder": te}


_DEFAULT_TARGETS = {"unet": {"CrossAttention", "Attention", "GEGLU"}, "text_encoder": {"CLIPAttention"}}


def _default_targets(model: str, metadata: Mapping[str, str]) -> bool:
    """The metadata's target classes for ``model`` (when recorded) are within the defaults the tables assume."""
    recorded = metadata.get(model)
    if recorded is None:
        return True
    try:
        targets = json.loads(recorded)
    except ValueError:
        return False
    return isinstance(targets, list) and set(map(str, targets)) <= _DEFAULT_TARGETS.get(model, set())


def _cloneofsimo_map(family: str, layout: Layout, metadata: Mapping[str, str]) -> dict[str, str]:
    tables = cloneofsimo_names(family)
    if not tables:
        return {}
    by_model: dict[str, list[Module]] = {}
    for module in layout.modules:
        by_model.setdefault(module.name.partition(":")[0], []).append(module)
    mapping: dict[str, str] = {}
    for model, modules in by_model.items():
        indices = sorted(int(m.name.partition(":")[2]) for m in modules)
        if indices != list(range(len(indices))) or not _default_targets(model, metadata):
            continue
        candidates = [tables.get(model, [])]
        if model == "unet":
            candidates.append(tables["unet-attention-only"])
        table = next((c for c in candidates if len(c) == len(indices)), None)
        if table is None:
            continue
        for module in modules:
            mapping[module.name] = table[int(module.name.partition(":")[2])]
    return mapping


def _plausible_shapes(canonical: str, module: Module) -> bool:
    """A cheap guard for index-mapped names: GEGLU ``proj`` is 8× wider out than in, attention layers are not."""
    down, up = module.tensors.get("down"), module.tensors.get("up")
    if down is None or up is None:
        return False
    fan_in, fan_out = down.shape[-1], up.shape[0]
    return (fan_out == 8 * fan_in) == canonical.endswith("ff.net.0.proj")


def _index_map(family: str, layout: Layout, metadata: Mapping[str, str]) -> dict[str, str]:
    """cloneofsimo's index → canonical name map, when the whole file fits it (else empty: nothing maps)."""
    index_map = _cloneofsimo_map(family, layout, metadata) if layout.format == "cloneofsimo" else {}
    if index_map and not all(_plausible_shapes(index_map[m.name], m) for m in layout.modules if m.name in index_map):
        return {}
    return index_map


def where_modules_go(family: str, layout: Layout, metadata: Mapping[str, str]) -> dict[str, str]:
    """Each module's fate, from the header alone (what :func:`read_adapter` will do, without reading a tensor):
    ``mapped`` (to canonical paths), ``fused`` (a native SD3/FLUX module that stacks several canonical layers, or
    whose modulation rows are swapped: exact for LoRA factors, as a dense ΔW split by rows for other kinds), or
    ``unmapped`` (kept under the file's own name). For ``inspect``, which reads no tensors."""
    index_map = _index_map(family, layout, metadata)
    fates: dict[str, str] = {}
    for module in layout.modules:
        if family in native.FAMILIES:
            component = module.component if module.component != "unknown" else None
            entry = dit_names.lookup(family, module.name, component)
            fates[module.name] = "unmapped" if entry is None else "mapped" if entry.identity else "fused"
        else:
            name = index_map.get(module.name) or canonical_name(family, layout.format, module)
            fates[module.name] = "unmapped" if name is None else "mapped"
    return fates


def read_adapter(
    path: str | os.PathLike[str], *, family: str | None = None, materialize_fused: bool = False, widen: bool = True
) -> CanonicalAdapter:
    """Read any supported file into the canonical model: detect layout and family (unless ``family`` is given, as a
    converter does when it reads back what it wrote), map names, widen tensors. ``materialize_fused`` (lossy
    conversions) splits fused SD3/FLUX modules of kinds without exact per-part factors through their dense ΔW.

    ``widen=False`` keeps float16 and float64 tensors in their storage type (numpy holds them; bf16 and fp8 are
    still widened to float32, which holds them exactly): the values are the same, and the ΔW maths reads every
    tensor at its own precision (:mod:`lorahub.adapters.delta`), but code that assumes float32 bytes (the writers)
    must read widened. Why: numpy's float16 → float32 conversion runs at a few ns an entry on CPUs without a vector
    path for it, more than the rest of a load's own work, and a pipeline converts again to its own dtype anyway."""
    with SafetensorsFile(path) as container:
        metadata = dict(container.metadata)
        layout = detect(container.header.tensors, metadata)
        family = family or detect_family(layout, metadata).family or "unknown"
        index_map = _index_map(family, layout, metadata)
        layers: dict[str, CanonicalLayer] = {}
        unmapped: list[str] = []
        unsplit: list[str] = []
        for module, layer in zip(layout.modules, _read_layers(container, layout.modules, widen), strict=True):
            if family in native.FAMILIES:
                placed = _place_native(family, module, layer, unsplit, materialize=materialize_fused)
            else:
                name = index_map.get(module.name) or canonical_name(family, layout.format, module)
                placed = None if name is None else [replace(layer, name=name)]
            if placed is None or any(p.name in layers for p in placed):
                unmapped.append(module.name)
                placed = [layer]
            for item in placed:
                layers[item.name] = item
    return CanonicalAdapter(
        family=family,
        layers=layers,
        metadata=metadata,
        source_format=layout.format,
        unmapped=unmapped,
        unsplit=unsplit,
    )


def _read_layers(container: SafetensorsFile, modules: list[Module], widen: bool) -> list[CanonicalLayer]:
    """Every module's layer; widening runs in threads (numpy releases the GIL), which halves a load's read time.
    Copies without widening are faster than handing them to threads."""
    workers = min(4, os.cpu_count() or 1)
    if workers == 1 or len(modules) < 64 or not widen:
        return [_read_layer(container, m, widen) for m in modules]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda m: _read_layer(container, m, widen), modules, chunksize=32))


_KEPT_AS_STORED = frozenset({"F16", "F32", "F64"})
"""Float types numpy has: ``widen=False`` copies them out of the map as they are."""


def _read_layer(container: SafetensorsFile, module: Module, widen: bool = True) -> CanonicalLayer:
    """A module's tensors widened to float32 (or kept as stored, see :func:`read_adapter`), its alpha (tensor, else
    config) and scale rule, under the file's own name."""
    tensors = {
        role: _tensor(container.raw(info.name), info, widen) for role, info in module.tensors.items() if role != "alpha"
    }
    alpha = module.config_alpha
    alpha_info = module.tensors.get("alpha")
    if alpha_info is not None:
        stored = scalar(container.raw(alpha_info.name), alpha_info)
        alpha = stored if stored is not None else alpha
    dtypes = [info.dtype for role, info in module.tensors.items() if role != "alpha"]
    return CanonicalLayer(
        name=module.name,
        kind=layer_kind(module),
        tensors={role: np.ascontiguousarray(array) for role, array in tensors.items()},
        alpha=alpha,
        dtype=dtypes[0] if dtypes else "F32",
        source_name=module.name,
        rslora=module.rslora,
    )


def _tensor(raw: memoryview, info: TensorInfo, widen: bool) -> Array:
    if widen or info.dtype not in _KEPT_AS_STORED:
        widened: Array = to_float32(raw, info)
        return widened
    stored: Array = as_numpy(raw, info).copy()  # the map closes when the read ends
    return stored


def _place_native(
    family: str, module: Module, layer: CanonicalLayer, unsplit: list[str], *, materialize: bool = False
) -> list[CanonicalLayer] | None:
    """SD3/FLUX: the canonical layers of one module (split, swapped or renamed), None when it does not map; a fused
    module that cannot be split exactly is recorded in ``unsplit`` and kept whole."""
    component = module.component if module.component != "unknown" else None
    expanded = native.expand(family, module.name, component, layer, materialize=materialize)
    if expanded is None:
        return None
    if expanded.unsplit is not None:
        unsplit.append(expanded.unsplit)
        return None
    return expanded.layers
