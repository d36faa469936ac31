"""Adapters of every kind in a diffusers pipeline, exactly: lorahub's ΔW patch on the model's own layers.

Plain LoRA/LoCon adapters go to PEFT's LoRA layers through diffusers (:mod:`lorahub.sdk.pipelines`). Every other
adapter (LoHa, LoKr, full diffs, DoRA, IA3, OFT/BOFT, GLoRA, norm diffs, LoRA with a bias delta or an A1111 scale)
is applied here: each adapted torch layer computes with ``W + Σ wᵢ·ΔWᵢ`` and ``b + Σ wᵢ·Δbᵢ`` instead of ``W`` and
``b``, where ``ΔWᵢ`` is :func:`lorahub.adapters.delta.delta_weight` of adapter ``i``'s module: the formulas bake,
merge, convert and inspect use, tested against LyCORIS' own code. So a pipeline with an adapter at weight ``w`` is the
pipeline whose weights had ``w·ΔW`` added (what ``lorahub bake`` writes, and how A1111 and ComfyUI apply every kind).

Why lorahub's own patch rather than PEFT's LoHa, LoKr, OFT, BOFT, IA3 tuners and its DoRA (docs/loading.md):

* one meaning of weight: ``W + w·ΔW`` for every kind. PEFT's DoRA re-normalises at each weight, and its IA3 and OFT
  layers have no weight at all, so ``stack``, ``set_weight`` and a later bake would disagree;
* conventions PEFT does not express: LyCORIS' OFT rotates the output rows under one norm constraint over all blocks,
  PEFT's OFT the input under a constraint per block; DoRA on the input axis (LyCORIS before ``wd_on_output``); full
  diffs and GLoRA have no PEFT tuner; PEFT derives a LoKr's factor shapes from its config, a file has its own;
* kinds mixed in one stack: PEFT supports several tuner types on one model through its separate mixed model
  (``PeftMixedModel``), which diffusers' adapter methods do not use, and its hotswap is LoRA-only. Patches stack with
  each other and with PEFT's LoRA layers on the same layer.

How: the patch replaces the layer *instance's* ``forward`` (class, parameters, state dict and ``isinstance`` stay, so
PEFT can still wrap the layer, and a LoRA on it adds to the patched output); removing the last adapter restores it.
ΔW is computed the first time the adapter takes part in a forward, for all its layers at once, in threads (in
float32 arithmetic for float32 and narrower layers, whose ΔW keeps no more digits; float64 for float64 layers), then
kept in the layer's dtype and device: loading costs what reading the factors costs, an adapter that stays inactive
(``apply_prompt`` keeps earlier adapters injected) costs nothing, and changing a weight costs nothing. Each forward
then adds ``w·ΔW`` to the weight (one elementwise pass per active adapter); memory holds one ΔW per adapted layer
and adapter. Kinds that multiply the base weight (DoRA, OFT, IA3, GLoRA, set) take the
layer's weight as it is at that first forward.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lorahub import errors

if TYPE_CHECKING:
    from lorahub.adapters.canonical import CanonicalLayer

__all__ = [
    "WIDENED_INPUTS",
    "LayerPatch",
    "install",
    "patch_of",
    "patched",
    "target_layer",
    "uninstall",
    "widen",
    "widening",
]

PATCHES_ATTRIBUTE = "_lorahub_patches"
"""On the pipeline: adapter name → component → the layer patches that hold that adapter."""
PATCH_ATTRIBUTE = "_lorahub_patch"
"""On a patched torch layer: its :class:`LayerPatch`."""


# --- the layer operations --------------------------------------------------------------------------------------


def _linear(module: Any, x: Any, weight: Any, bias: Any) -> Any:
    import torch.nn.functional as F

    return F.linear(x, weight, bias)


def _conv(module: Any, x: Any, weight: Any, bias: Any) -> Any:
    return module._conv_forward(x, weight, bias)


def _layer_norm(module: Any, x: Any, weight: Any, bias: Any) -> Any:
    import torch.nn.functional as F

    return F.layer_norm(x, module.normalized_shape, weight, bias, module.eps)


def _group_norm(module: Any, x: Any, weight: Any, bias: Any) -> Any:
    import torch.nn.functional as F

    return F.group_norm(x, module.num_groups, weight, bias, module.eps)


def _rms_norm(module: Any, x: Any, weight: Any, bias: Any) -> Any:
    import torch.nn.functional as F

    return F.rms_norm(x, module.normalized_shape, weight, module.eps)


def _own_forward(module: Any, x: Any, weight: Any, bias: Any) -> Any:
    """The layer class's own forward with the weight and bias swapped in for the call: for norms whose arithmetic
    (dtype casts, eps placement) is the model library's own, such as diffusers' ``RMSNorm``."""
    params = module._parameters
    kept = params["weight"], params.get("bias")
    params["weight"] = weight
    if kept[1] is not None:
        params["bias"] = bias
    try:
        return type(module).forward(module, x)
    finally:
        params["weight"] = kept[0]
        if kept[1] is not None:
            params["bias"] = kept[1]


Operation = Callable[[Any, Any, Any, Any], Any]


def _operations() -> tuple[tuple[type, Operation], ...]:
    """Layer class → its forward with a given weight and bias: the layers adapters target in diffusers models."""
    from torch import nn

    known: tuple[tuple[type, Operation], ...] = (
        (nn.Linear, _linear),
        (nn.Conv1d, _conv),
        (nn.Conv2d, _conv),
        (nn.Conv3d, _conv),
        (nn.LayerNorm, _layer_norm),
        (nn.GroupNorm, _group_norm),
        (nn.RMSNorm, _rms_norm),  # FLUX's QK norms, which a FLUX Control LoRA replaces
    )
    try:
        from diffusers.models.normalization import RMSNorm
    except ImportError:  # pragma: no cover - diffusers is there wherever pipelines are
        return known
    return (*known, (RMSNorm, _own_forward))


def operation(module: Any) -> Operation | None:
    """The forward of ``module`` with another weight and bias, or None for a layer class the patch does not know."""
    if getattr(module, "weight", None) is None:
        return None
    return next((op for cls, op in _operations() if type(module) is cls or isinstance(module, cls)), None)


# --- one patched layer ---------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Delta:
    """One adapter's module on one layer: its canonical layer, and ΔW and Δb once computed, for the device and dtype
    they were made for. ``group`` holds every module of the adapter installed on the component with it: when one is
    first needed, all are computed, in threads (numpy and torch release the GIL), since the forward that needs one
    needs the others moments later."""

    layer: CanonicalLayer
    module: Any
    group: list[_Delta]
    weight: Any = None
    bias: Any = None
    made_for: tuple[Any, Any] | None = None

    def current(self) -> bool:
        weight = self.module.weight
        return self.made_for == (weight.device, weight.dtype)

    def made(self) -> tuple[Any, Any]:
        """ΔW and Δb in the layer's dtype and device (computed with the rest of the group when stale)."""
        if not self.current():
            stale = [delta for delta in self.group if not delta.current()] or [self]
            workers = min(len(stale), os.cpu_count() or 1, _BUILD_THREADS)
            if workers > 1:
                with ThreadPoolExecutor(max_workers=workers) as pool:
                    list(pool.map(_Delta.refresh, stale))
            else:
                for delta in stale:
                    delta.refresh()
        return self.weight, self.bias

    def refresh(self) -> None:
        """Move ΔW to the layer's device when only that changed; compute it again when its dtype changed."""
        weight = self.module.weight
        if self.weight is not None and self.made_for is not None and self.made_for[1] == weight.dtype:
            self.weight = self.weight.to(weight.device)
            self.bias = None if self.bias is None else self.bias.to(weight.device)
        else:
            self.weight, self.bias = _compute(self.layer, self.module)
        self.made_for = (weight.device, weight.dtype)


_BUILD_THREADS = 8


class LayerPatch:
    """The adapters lorahub applied to one torch layer, and the forward that applies them with their weights.

    ``weights`` is the pipeline's record of lorahub's adapters and their weights (:func:`lorahub.sdk.pipelines.
    applied`): an adapter absent from it, or at weight 0, does not take part, so weights change without touching
    the patch."""

    def __init__(self, module: Any, weights: Mapping[str, float]) -> None:
        op = operation(module)
        if op is None:
            raise errors.AdapterNotLoadableError(f"lorahub cannot patch a {type(module).__name__} layer")
        self.module = module
        self.weights = weights
        self.deltas: dict[str, _Delta] = {}
        self._op = op
        setattr(module, PATCH_ATTRIBUTE, self)
        module.forward = self.forward

    def forward(self, x: Any) -> Any:
        weight, bias = self.effective()
        return self._op(self.module, x, weight, bias)

    def effective(self) -> tuple[Any, Any]:
        """The weight and bias the layer computes with now: its own plus ``w·ΔW`` of each active adapter."""
        import torch

        weight, bias = self.module.weight, getattr(self.module, "bias", None)
        for name, delta in self.deltas.items():
            scale = float(self.weights.get(name, 0.0))
            if scale == 0.0:
                continue
            delta_weight, delta_bias = delta.made()
            weight = torch.add(weight, delta_weight, alpha=scale)
            if delta_bias is not None:
                bias = delta_bias * scale if bias is None else torch.add(bias, delta_bias, alpha=scale)
        return weight, bias

    def prepare(self) -> None:
        """Compute ΔW of the active adapters now, as the first forward would (for a benchmark, or a server that
        would rather pay for it at load)."""
        for name, delta in self.deltas.items():
            if float(self.weights.get(name, 0.0)) != 0.0:
                delta.made()

    def remove(self) -> None:
        """Give the layer its own forward back."""
        module = self.module
        if module.__dict__.get("forward") == self.forward:
            del module.forward
        if getattr(module, PATCH_ATTRIBUTE, None) is self:
            delattr(module, PATCH_ATTRIBUTE)


def _compute(layer: CanonicalLayer, module: Any) -> tuple[Any, Any]:
    """ΔW and Δb of ``layer`` for ``module``, from :mod:`lorahub.adapters.delta` (float64), in the module's dtype."""
    import numpy as np
    import torch

    from lorahub.adapters.delta import needs_base

    weight = module.weight
    wide = weight.dtype.itemsize > 4  # a float64 layer gets a float64 ΔW; float32 and narrower, float32 arithmetic
    precision, torch_precision = (np.float64, torch.float64) if wide else (np.float32, torch.float32)
    base = None
    if needs_base(layer.kind, layer.tensors):
        base = weight.detach().to("cpu", torch_precision).numpy()
    with torch.no_grad():
        delta = layer.delta(base, precision=precision)
        if delta.weight.size != weight.numel():
            raise errors.DeltaShapeError(
                f"{layer.name}: ΔW has {delta.weight.size} entries, its layer's weight {list(weight.shape)}",
                hint="The adapter was made for another model (or another size of it).",
            )
        delta_weight = torch.from_numpy(np.ascontiguousarray(delta.weight)).reshape(weight.shape)
        delta_bias = None
        if delta.bias is not None:
            delta_bias = torch.from_numpy(np.ascontiguousarray(delta.bias)).reshape(-1)
            delta_bias = delta_bias.to(weight.device, weight.dtype)
        return delta_weight.to(weight.device, weight.dtype), delta_bias


# --- the pipeline's record ---------------------------------------------------------------------------------------


def patched(pipe: Any) -> dict[str, dict[str, list[LayerPatch]]]:
    """Adapter name → component → the layer patches holding it (the pipeline owns this record)."""
    record: dict[str, dict[str, list[LayerPatch]]] | None = getattr(pipe, PATCHES_ATTRIBUTE, None)
    if record is None:
        record = {}
        setattr(pipe, PATCHES_ATTRIBUTE, record)
    return record


def patch_of(module: Any) -> LayerPatch | None:
    """The patch on a torch layer (the innermost one under PEFT's wrappers), if any."""
    patch: LayerPatch | None = getattr(target_layer(module), PATCH_ATTRIBUTE, None)
    return patch


def target_layer(module: Any) -> Any:
    """The torch layer itself: under a PEFT wrapper (a LoRA already on it), its base layer."""
    while hasattr(module, "base_layer"):
        module = module.base_layer
    return module


WIDENED_INPUTS: Mapping[str, str] = {"x_embedder": "in_channels"}
"""Layers whose input a FLUX Control LoRA widens (its ``img_in`` takes the control latents beside the image latents),
and the model config field that records the width: what diffusers' ``FluxLoraLoaderMixin`` expands
(``_MODULE_NAME_TO_ATTRIBUTE_MAP_FLUX``), so ``FluxControlPipeline`` sizes its latents from it."""


def widening(layer: CanonicalLayer, module: Any, path: str) -> int | None:
    """The input width a LoRA asks of a narrower ``Linear`` it may widen (:data:`WIDENED_INPUTS`), else None."""
    from torch import nn

    down, up = layer.tensors.get("down"), layer.tensors.get("up")
    if path not in WIDENED_INPUTS or not isinstance(module, nn.Linear) or down is None or up is None:
        return None
    if down.ndim != 2 or up.shape[0] != module.out_features or down.shape[1] <= module.in_features:
        return None
    return int(down.shape[1])


def widen(model: Any, path: str, width: int) -> None:
    """Replace the ``Linear`` at ``path`` (under PEFT's wrapper, if any) by one taking ``width`` inputs whose extra
    columns are zero, and record the width in the model's config, as diffusers does for a Control LoRA: the model
    computes as before on its original inputs, and the LoRA's ΔW then has the weight's shape. Unloading the adapter
    keeps the wider layer (as diffusers does, unless asked to reset it)."""
    import torch
    from torch import nn

    holder = model.get_submodule(path.rpartition(".")[0]) if "." in path else model
    attribute, module = path.rpartition(".")[2], model.get_submodule(path)
    while hasattr(module, "base_layer"):
        holder, attribute, module = module, "base_layer", module.base_layer
    wider = nn.Linear(width, module.out_features, bias=module.bias is not None)
    with torch.no_grad():
        wider.weight.zero_()
        wider.weight[:, : module.in_features] = module.weight
        if module.bias is not None:
            wider.bias.copy_(module.bias)
    setattr(holder, attribute, wider.to(module.weight.device, module.weight.dtype))
    field = WIDENED_INPUTS.get(path)
    if field is not None and hasattr(model, "register_to_config"):
        model.register_to_config(**{field: width})


def check_fits(layer: CanonicalLayer, module: Any, where: str, *, in_features: int | None = None) -> None:
    """Refuse, before anything is applied, a module the layer cannot take: an unknown layer class, a layer without a
    weight, or factors whose ΔW does not have the weight's size (``in_features``: once the layer is widened)."""
    from lorahub.adapters.delta import delta_size

    if operation(module) is None:
        raise errors.AdapterNotLoadableError(
            f"{where} is a {type(module).__name__}, which lorahub cannot apply a {layer.kind} module to",
            hint="Bake the adapter into the base (lorahub bake) instead.",
        )
    size = delta_size(layer.tensors)
    expected = module.weight.numel() if in_features is None else module.weight.shape[0] * in_features
    if size is not None and size != expected:
        raise errors.DeltaShapeError(
            f"{where}: the {layer.kind} module's ΔW has {size} entries, the layer's weight {list(module.weight.shape)}",
            hint="The adapter was made for another model (or another size of it).",
        )


def install(
    pipe: Any,
    component: str,
    layers: Mapping[str, CanonicalLayer],
    adapter_name: str,
    weights: Mapping[str, float],
    *,
    widened: Mapping[str, int] | None = None,
) -> None:
    """Put ``adapter_name``'s layers (module path → canonical layer) on ``component``'s torch layers; ``weights`` is
    the pipeline's record of adapter weights (:func:`lorahub.sdk.pipelines.applied`), which the patches read.
    ``widened`` (path → input width) names the layers to :func:`widen` first."""
    model = getattr(pipe, component)
    for path, width in (widened or {}).items():
        if target_layer(model.get_submodule(path)).in_features < width:
            widen(model, path, width)
    holders = patched(pipe).setdefault(adapter_name, {}).setdefault(component, [])
    group: list[_Delta] = []
    for path, layer in layers.items():
        module = target_layer(model.get_submodule(path))
        patch = getattr(module, PATCH_ATTRIBUTE, None)
        if patch is None:
            patch = LayerPatch(module, weights)
        patch.deltas[adapter_name] = _Delta(layer, module, group)
        group.append(patch.deltas[adapter_name])
        holders.append(patch)


def uninstall(pipe: Any, adapter_name: str, component: str | None = None) -> None:
    """Take ``adapter_name`` off the layers of ``component`` (of every component when None); a layer left without
    adapters gets its own forward back."""
    record = patched(pipe)
    components = record.get(adapter_name, {})
    for name in [component] if component is not None else list(components):
        for patch in components.pop(name, []):
            patch.deltas.pop(adapter_name, None)
            if not patch.deltas:
                patch.remove()
    if not components:
        record.pop(adapter_name, None)
