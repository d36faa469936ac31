"""Adapters in diffusers pipelines: family checks, our converted PEFT state dict, weights, hotswap.

An adapter whose every layer PEFT's LoRA layers hold exactly (plain LoRA/LoCon factors: the ``peft`` rows of
:mod:`lorahub.adapters.support`) goes to PEFT: lorahub hands diffusers the state dict it converted itself (canonical
model → PEFT ``lora_A``/``lora_B`` keys) with the LoRA config of every component (rank, the *true* alpha, rank and
alpha patterns), component by component: UNets and transformers through the pipeline's ``load_lora_into_*``
methods, text encoders through PEFT itself. diffusers' own file readers lose alpha when the metadata is missing and
cannot read every layout lorahub reads (docs/loading.md). Every other adapter (LoHa, LoKr, full, DoRA, IA3, OFT,
BOFT, GLoRA, …) is applied exactly by lorahub's ΔW patches (:mod:`lorahub.sdk.patching`); handles, weights,
stacks, unloading and switching work the same for both, and both may sit on one layer.

The weights of the adapters lorahub applied to a pipeline are kept on the pipeline (``_lorahub_weights``) and set
together after every change, because ``set_adapters`` replaces the whole active set.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lorahub import errors

if TYPE_CHECKING:
    from lorahub.adapters.model import CanonicalAdapter, CanonicalLayer
    from lorahub.sdk.verified import VerifiedAdapter

WEIGHTS_ATTRIBUTE = "_lorahub_weights"
CONTENTS_ATTRIBUTE = "_lorahub_contents"
STATES_ATTRIBUTE = "_lorahub_states"
PREPARED_KEPT = 8
"""Adapters whose converted tensors a pipeline keeps ready (switching back and forth skips reading and converting)."""
MODEL_COMPONENTS = ("unet", "transformer")
TEXT_COMPONENTS = ("text_encoder", "text_encoder_2")

PIPELINE_FAMILIES: Mapping[str, tuple[str, ...]] = {
    "StableDiffusionXL": ("sdxl",),
    "StableDiffusion3": ("sd3",),
    "StableDiffusion": ("sd1", "sd2"),
    "Flux2": ("flux2",),
    "Flux": ("flux1",),
    "QwenImage": ("qwen-image",),
}
"""Pipeline class name prefix → families whose adapters it takes (longest prefixes first)."""

SD_CROSS_ATTENTION = {768: "sd1", 1024: "sd2"}
"""SD 1.x and 2.x share pipeline classes; the UNet's cross-attention width tells them apart at real size."""


def pipeline_family(pipe: Any) -> tuple[str, ...]:
    """The families whose adapters fit ``pipe``, from its class and, for SD 1/2, its UNet's text width."""
    name = type(pipe).__name__
    for prefix, families in PIPELINE_FAMILIES.items():
        if name.startswith(prefix):
            if families == ("sd1", "sd2"):
                width = getattr(getattr(getattr(pipe, "unet", None), "config", None), "cross_attention_dim", None)
                exact = SD_CROSS_ATTENTION.get(width) if isinstance(width, int) else None
                return (exact,) if exact else families
            return families
    raise errors.UnsupportedPipelineError(f"lorahub does not know how to apply adapters to a {name}")


def check_family(adapter: CanonicalAdapter, pipe: Any, label: str) -> None:
    families = pipeline_family(pipe)
    if adapter.family not in families:
        raise errors.FamilyMismatchError(
            f"{label} is a {adapter.family} adapter; this {type(pipe).__name__} takes {' or '.join(families)} adapters",
            hint="Load it into a pipeline of its own base model family (lorahub inspect shows the family).",
        )


def check_loadable(adapter: CanonicalAdapter, label: str) -> None:
    """Refuse what cannot be applied exactly: layers of no known kind, modules whose names do not map."""
    from lorahub.adapters.support import KIND_SUPPORT

    other = sorted({layer.kind for layer in adapter.layers.values() if layer.kind not in KIND_SUPPORT})
    if other:
        raise errors.AdapterNotLoadableError(
            f"{label} has {', '.join(other)} layers, whose effect on the model lorahub does not know",
            hint="lorahub inspect shows the file's modules and their problems.",
        )
    if adapter.unsplit:
        raise errors.AdapterNotLoadableError(
            f"{label}: {len(adapter.unsplit)} fused module(s) have no exact per-layer form in this pipeline "
            f"(first: {adapter.unsplit[0]})",
            hint="A delta that depends on the base weight over a fused qkv/linear1 is not split; bake the adapter "
            "into the base checkpoint (lorahub bake) instead.",
        )
    if adapter.unmapped:
        raise errors.AdapterNotLoadableError(
            f"{label}: {len(adapter.unmapped)} module(s) do not map to {adapter.family} model paths "
            f"(first: {adapter.unmapped[0]})",
            hint="lorahub inspect lists them; such files cannot be applied exactly.",
        )


# --- the state dict diffusers is given -------------------------------------------------------------------------


@dataclass
class ComponentState:
    """One component's PEFT tensors (keys prefixed with the component) and its LoRA config; or, for an adapter PEFT
    cannot hold exactly, its canonical layers by module path (``deltas``), which :mod:`lorahub.sdk.patching`
    applies."""

    tensors: dict[str, Any] = field(default_factory=dict)
    """Views of one flat buffer; PEFT may keep what it is given as the layer's parameters (and a hotswap writes
    into them), so injections get :meth:`fresh` copies and these stay as converted."""
    config: dict[str, Any] = field(default_factory=dict)
    targets: dict[str, int] = field(default_factory=dict)
    """Module path → rank: what hotswap compares."""
    deltas: dict[str, CanonicalLayer] = field(default_factory=dict)
    """Module path → canonical layer, for lorahub's ΔW patches (empty for PEFT states)."""
    widened: dict[str, int] = field(default_factory=dict)
    """Module path → the input width a FLUX Control LoRA gives it (:func:`lorahub.sdk.patching.widen`)."""

    def lora_config(self, component: str) -> Any:
        """The component's PEFT ``LoraConfig`` (the config's keys are prefixed with the component)."""
        from peft import LoraConfig

        return LoraConfig(**{key.removeprefix(f"{component}."): value for key, value in self.config.items()})

    def fresh(self) -> dict[str, Any]:
        """A private copy of the tensors in one allocation (a copy per tensor costs more than the data)."""
        import torch

        if not self.tensors:
            return {}
        flat = torch.cat([t.reshape(-1) for t in self.tensors.values()])
        pieces = torch.split(flat, [t.numel() for t in self.tensors.values()])
        return {k: p.view(t.shape) for (k, t), p in zip(self.tensors.items(), pieces, strict=True)}


def prepare(adapter: CanonicalAdapter, pipe: Any) -> dict[str, ComponentState]:
    """The adapter as ``pipe`` takes it: PEFT states when PEFT's LoRA layers hold every layer exactly, else the
    layers for lorahub's ΔW patches, checked against the layers they will patch."""
    from lorahub.adapters.support import peft_loadable

    if all(peft_loadable(layer.kind, layer.tensors) for layer in adapter.layers.values()):
        return peft_state(adapter, pipe)
    return delta_state(adapter, pipe)


def _module_path(adapter: CanonicalAdapter, canonical: str, pipe: Any) -> tuple[str, str, str]:
    """(component, diffusers name, path inside the component) of a canonical layer in ``pipe``."""
    from lorahub.adapters.names import from_canonical

    component = canonical.partition(".")[0]
    module = getattr(pipe, component, None)
    if module is None:
        raise errors.AdapterNotLoadableError(
            f"the adapter has {component} layers but this {type(pipe).__name__} has no {component}",
            hint="Load it into the pipeline of its base model.",
        )
    new_style = component in TEXT_COMPONENTS and not hasattr(module, "text_model")
    name = from_canonical(adapter.family, "diffusers", canonical, transformers5=new_style)
    if name is None:
        raise errors.AdapterNotLoadableError(
            f"{canonical} has no diffusers name in the {adapter.family} tables",
            hint="lorahub's name tables miss this module: please report it, with `lorahub inspect --json` output.",
        )
    return component, name, name.partition(".")[2]


def delta_state(adapter: CanonicalAdapter, pipe: Any) -> dict[str, ComponentState]:
    """The adapter's layers by component and module path, for :func:`lorahub.sdk.patching.install`; each checked
    against its torch layer (class, ΔW size) so a refusal comes before anything is applied."""
    from lorahub.sdk.patching import check_fits, target_layer, widening

    states: dict[str, ComponentState] = {}
    for canonical, layer in adapter.layers.items():
        component, name, path = _module_path(adapter, canonical, pipe)
        try:
            module = target_layer(getattr(pipe, component).get_submodule(path))
        except AttributeError:
            raise errors.AdapterNotLoadableError(
                f"{name}: this {type(pipe).__name__} has no such layer",
                hint="The adapter was made for another model (or another size of it).",
            ) from None
        width = widening(layer, module, path)
        if width is not None and "Control" not in type(pipe).__name__:
            raise errors.AdapterNotLoadableError(
                f"{name} takes {width} input channels, this {type(pipe).__name__}'s {module.in_features}: a FLUX "
                "Control LoRA reads the control image's latents beside the image's",
                hint="Load it into a FluxControlPipeline (FluxControlPipeline.from_pipe(pipe) shares the weights).",
            )
        check_fits(layer, module, name, in_features=width)
        state = states.setdefault(component, ComponentState())
        if width is not None:
            state.widened[path] = width
        state.deltas[path] = layer
        state.targets[path] = int(layer.rank or 0)
    return states


def peft_state(adapter: CanonicalAdapter, pipe: Any) -> dict[str, ComponentState]:
    """The adapter as diffusers' PEFT integration takes it, component by component, tensors in each component's
    dtype."""
    from lorahub.adapters.delta import folded_down
    from lorahub.adapters.peft_config import lora_config

    by_component: dict[str, list[tuple[str, Any]]] = {}
    states: dict[str, ComponentState] = {}
    arrays: dict[str, dict[str, Any]] = {}
    modules: dict[str, dict[str, Any]] = {}  # one walk per component: a dict is faster than get_submodule per layer
    for canonical, layer in adapter.layers.items():
        component, name, path = _module_path(adapter, canonical, pipe)
        if component not in modules:
            modules[component] = dict(getattr(pipe, component).named_modules(remove_duplicate=False))
        state = states.setdefault(component, ComponentState())
        down, up = _shaped_like(modules[component].get(path), folded_down(layer.tensors), layer.tensors["up"])
        arrays.setdefault(component, {}).update({f"{name}.lora_A.weight": down, f"{name}.lora_B.weight": up})
        state.targets[path] = int(layer.rank or 0)
        by_component.setdefault(component, []).append((path, layer))
    for component, layers in by_component.items():
        states[component].config = {f"{component}.{k}": v for k, v in lora_config(layers).items()}
        states[component].tensors = _as_torch(arrays[component], getattr(pipe, component).dtype)
    return states


def _as_torch(arrays: Mapping[str, Any], dtype: Any) -> dict[str, Any]:
    """Arrays (as stored: float16 files stay float16, see :attr:`VerifiedAdapter.stored`) → tensors of ``dtype`` in
    one conversion, none when the file's type is the pipeline's: a ``.to()`` per tensor costs more than the data
    (hundreds of small tensors), and ``ModelMixin.dtype`` walks every module, so it is asked once (diffusers#4975).
    Arrays of several types are concatenated in the widest, which holds the others exactly."""
    import numpy as np
    import torch

    flat = torch.from_numpy(np.concatenate([a.reshape(-1) for a in arrays.values()])).to(dtype)
    pieces = torch.split(flat, [a.size for a in arrays.values()])
    return {key: piece.view(a.shape) for (key, a), piece in zip(arrays.items(), pieces, strict=True)}


def _shaped_like(target: Any, down: Any, up: Any) -> tuple[Any, Any]:
    """A 1×1 projection is a Conv2d in some models (SD 1.x ``proj_in``) and a Linear in others, and files store
    its factors either way: shape them like the layer PEFT will wrap (the maths is the same). No ``target`` (no such
    module): as they are, and diffusers reports the unknown module itself."""
    weight = getattr(target, "weight", None)
    if weight is None or weight.ndim == down.ndim:
        return down, up
    if weight.ndim == 4 and tuple(weight.shape[2:]) == (1, 1) and down.ndim == 2:
        return down[:, :, None, None], up[:, :, None, None]
    if weight.ndim == 2 and down.ndim == 4 and down.shape[2:] == (1, 1):
        return down[:, :, 0, 0], up.reshape(up.shape[0], up.shape[1])
    return down, up


def _call(method: Callable[..., Any], **kwargs: Any) -> None:
    """Call a ``load_lora_into_*`` with the arguments its signature has (they differ between pipelines)."""
    accepted = inspect.signature(method).parameters
    method(**{k: v for k, v in kwargs.items() if k in accepted})


def inject(pipe: Any, states: Mapping[str, ComponentState], adapter_name: str, *, copy: bool = True) -> None:
    """Load each component's state under ``adapter_name`` through the pipeline's own ``load_lora_into_*``. PEFT may
    keep the given tensors as the layer's parameters: without ``copy`` the caller hands over the state's tensors
    (and must drop the state before anything writes into that adapter's weights, see :class:`PreparedStates`).
    States of lorahub's ΔW patches are installed instead (:func:`lorahub.sdk.patching.install`)."""
    from lorahub.sdk.patching import install

    for component, state in states.items():
        if state.deltas:
            install(pipe, component, state.deltas, adapter_name, applied(pipe), widened=state.widened)
            continue
        common = {
            "state_dict": state.fresh() if copy else state.tensors,
            "network_alphas": None,
            "adapter_name": adapter_name,
            "metadata": state.config,
            "_pipeline": pipe,
            "low_cpu_mem_usage": True,
        }
        if component == "unet":
            _call(pipe.load_lora_into_unet, unet=pipe.unet, **common)
        elif component == "transformer":
            _call(pipe.load_lora_into_transformer, transformer=pipe.transformer, **common)
        else:
            _inject_text_encoder(pipe, component, common["state_dict"], state.lora_config(component), adapter_name)


def _inject_text_encoder(pipe: Any, component: str, tensors: Mapping[str, Any], lora: Any, adapter_name: str) -> None:
    """Through PEFT itself, as diffusers does for UNets and transformers, not through transformers' PEFT
    integration (what ``load_lora_into_text_encoder`` calls): that integration refuses PEFT releases older than
    the one it was built against (transformers 5.25 asks for a PEFT that is not released yet). lorahub already
    has the complete LoRA config, so nothing of diffusers' config guessing is needed."""
    from peft import inject_adapter_in_model, set_peft_model_state_dict

    encoder = getattr(pipe, component)
    state = {key.removeprefix(f"{component}."): value for key, value in tensors.items()}
    inject_adapter_in_model(lora, encoder, adapter_name=adapter_name, low_cpu_mem_usage=True)
    result = set_peft_model_state_dict(encoder, state, adapter_name=adapter_name, low_cpu_mem_usage=True)
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise errors.AdapterNotLoadableError(
            f"{len(unexpected)} {component} tensors match no LoRA layer (first: {unexpected[0]})",
            hint="This is a bug in lorahub's name tables for this text encoder; please report it.",
        )
    encoder._hf_peft_config_loaded = True  # what diffusers and transformers look at to find adapters on it
    encoder.to(device=encoder.device, dtype=encoder.dtype)


def hotswap(pipe: Any, component: str, state: ComponentState, adapter_name: str) -> None:
    """Replace the weights of an injected adapter in place (no new layers: a fraction of a load, docs/benchmarks.md),
    for UNets, transformers and text encoders alike, through PEFT's ``hotswap_adapter_from_state_dict``.

    PEFT updates each layer's ``scaling`` but not the ``lora_alpha``/``r`` that ``set_adapters`` later computes the
    scaling from, so a swapped-in adapter with another alpha/rank ratio would silently get the old one's strength
    back on the next weight change; each layer's ``lora_alpha`` is therefore set to match the new scaling.
    """
    from peft.tuners.lora import LoraLayer
    from peft.utils.hotswap import hotswap_adapter_from_state_dict

    from lorahub.adapters.delta import alpha_for_scale

    model = getattr(pipe, component)
    prefix = f"{component}."
    tensors = {
        key.removeprefix(prefix).replace(".lora_A.weight", f".lora_A.{adapter_name}.weight")
        .replace(".lora_B.weight", f".lora_B.{adapter_name}.weight"): value
        for key, value in state.fresh().items()
    }  # fmt: skip
    hotswap_adapter_from_state_dict(model, tensors, adapter_name, state.lora_config(component))
    for path in state.targets:
        module = model.get_submodule(path)
        if isinstance(module, LoraLayer) and adapter_name in module.scaling:
            rslora = module.use_rslora.get(adapter_name, False)
            scaling = float(module.scaling[adapter_name])
            module.lora_alpha[adapter_name] = alpha_for_scale(scaling, module.r[adapter_name], rslora=rslora)


# --- weights, handles ------------------------------------------------------------------------------------------


def applied(pipe: Any) -> dict[str, float]:
    """The adapters lorahub applied to ``pipe`` and their weights (the pipeline owns this record)."""
    weights: dict[str, float] | None = getattr(pipe, WEIGHTS_ATTRIBUTE, None)
    if weights is None:
        weights = {}
        setattr(pipe, WEIGHTS_ATTRIBUTE, weights)
    return weights


class PreparedStates:
    """Content digest → the converted PEFT state for one pipeline, the most recent :data:`PREPARED_KEPT`. Content
    is immutable, so an entry never goes stale; verification still runs on every load.

    The first injection of a content hands its tensors to PEFT without a copy (the load stays as fast as diffusers'
    own); those tensors may then be the live adapter's parameters, so before a hotswap writes into a slot, the entry
    of the content that slot held is dropped (:meth:`drop`)."""

    def __init__(self) -> None:
        self._states: dict[str, dict[str, ComponentState]] = {}

    def get(self, digest: str) -> dict[str, ComponentState] | None:
        states = self._states.pop(digest, None)
        if states is not None:
            self._states[digest] = states  # most recent last
        return states

    def drop(self, digest: str | None) -> None:
        if digest is not None:
            self._states.pop(digest, None)

    def put(self, digest: str, states: dict[str, ComponentState]) -> dict[str, ComponentState]:
        self._states[digest] = states
        while len(self._states) > PREPARED_KEPT:
            del self._states[next(iter(self._states))]
        return states


def prepared_states(pipe: Any) -> PreparedStates:
    cache: PreparedStates | None = getattr(pipe, STATES_ATTRIBUTE, None)
    if cache is None:
        cache = PreparedStates()
        setattr(pipe, STATES_ATTRIBUTE, cache)
    return cache


def injected_contents(pipe: Any) -> dict[str, str]:
    """Adapter name → content digest of what lorahub injected under that name (a swapped slot changes content)."""
    contents: dict[str, str] | None = getattr(pipe, CONTENTS_ATTRIBUTE, None)
    if contents is None:
        contents = {}
        setattr(pipe, CONTENTS_ATTRIBUTE, contents)
    return contents


def peft_loaded(pipe: Any) -> set[str]:
    """Every adapter name injected into any component of ``pipe`` as PEFT layers (lorahub's or not)."""
    if not hasattr(pipe, "get_list_adapters"):
        return set()
    return {name for names in pipe.get_list_adapters().values() for name in names}


def loaded(pipe: Any) -> set[str]:
    """Every adapter name on ``pipe``: PEFT layers (lorahub's or not) and lorahub's ΔW patches."""
    from lorahub.sdk.patching import patched

    return peft_loaded(pipe) | set(patched(pipe))


def activate(pipe: Any) -> None:
    """Make every lorahub adapter on ``pipe`` active with its weight. PEFT's through ``set_adapters``, which replaces
    the active set; ΔW patches read their weights from :func:`applied` at each forward."""
    from lorahub.sdk.patching import patched

    on_patches = patched(pipe)
    weights = {name: weight for name, weight in applied(pipe).items() if name not in on_patches}
    if weights:
        if getattr(pipe, "_lorahub_disabled", False):
            pipe.enable_lora()
            pipe._lorahub_disabled = False
        pipe.set_adapters(list(weights), adapter_weights=list(weights.values()))
    elif peft_loaded(pipe):
        pipe.disable_lora()
        pipe._lorahub_disabled = True


def active_as_injected(pipe: Any, adapter_name: str) -> bool:
    """Whether PEFT already left ``pipe`` as :func:`activate` would: the adapter just injected is the only one on
    it, at weight 1 (layers injected with it alone are active at their own scale), and LoRA is not disabled. Then
    ``set_adapters``, a walk over every layer of every component, can be skipped (about 10 ms of a load)."""
    return (
        applied(pipe) == {adapter_name: 1.0}
        and peft_loaded(pipe) == {adapter_name}
        and not getattr(pipe, "_lorahub_disabled", False)
    )


@dataclass
class AdapterHandle:
    """An adapter applied to a pipeline: change its weight, swap another adapter into its place, or unload it."""

    pipe: Any
    adapter_name: str
    adapter: VerifiedAdapter
    targets: dict[str, dict[str, int]] = field(default_factory=dict)
    hotswapped: bool = False
    """Whether the last switch into this slot (``load(..., replace=handle)``) reused the injected layers: PEFT's
    hotswap, or ΔW patches replaced by ΔW patches (nothing injected into diffusers either way)."""

    @property
    def weight(self) -> float:
        return applied(self.pipe)[self.adapter_name]

    def set_weight(self, weight: float) -> None:
        applied(self.pipe)[self.adapter_name] = float(weight)
        activate(self.pipe)

    def deactivate(self) -> None:
        """Keep the adapter injected (a later load of the same content is instant) but stop applying it."""
        applied(self.pipe).pop(self.adapter_name, None)
        activate(self.pipe)

    def unload(self) -> None:
        from lorahub.sdk.patching import patched, uninstall

        if self.adapter_name in patched(self.pipe):
            uninstall(self.pipe, self.adapter_name)
        if self.adapter_name in peft_loaded(self.pipe):
            self.pipe.delete_adapters([self.adapter_name])
        applied(self.pipe).pop(self.adapter_name, None)
        injected_contents(self.pipe).pop(self.adapter_name, None)
        activate(self.pipe)


def hotswappable(old: Mapping[str, Mapping[str, int]], new: Mapping[str, Mapping[str, int]]) -> frozenset[str]:
    """The components whose weights can be swapped in place: the new adapter targets the same modules as the
    injected one there, or a subset (PEFT's hotswap raises on a superset). The others are re-injected."""
    return frozenset(c for c in new if c in old and set(new[c]) <= set(old[c]))


def delete_component_adapter(pipe: Any, component: str, adapter_name: str) -> None:
    """Take ``adapter_name`` off one component, whether PEFT layers or lorahub's ΔW patches hold it there."""
    from diffusers.utils.peft_utils import delete_adapter_layers

    from lorahub.sdk.patching import patched, uninstall

    if component in patched(pipe).get(adapter_name, {}):
        uninstall(pipe, adapter_name, component)
        return
    model = getattr(pipe, component)
    if component in MODEL_COMPONENTS:
        model.delete_adapters([adapter_name])
    else:
        delete_adapter_layers(model, adapter_name)  # type: ignore[no-untyped-call]
