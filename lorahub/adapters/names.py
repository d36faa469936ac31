"""Module names of SD 1.x/2.x and SDXL LoRAs: every file format's spelling ↔ the canonical diffusers path.

The canonical name of a module is its path in the diffusers model of its component, with the component as prefix
(``unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q``,
``text_encoder.text_model.encoder.layers.0.self_attn.q_proj``, ``text_encoder_2.…``) — docs/concepts/architecture.md,
decision 1. Text encoders keep ``text_model.`` in the canonical name although transformers ≥ 5 dropped it from
``CLIPTextModel``: kohya, A1111 and ComfyUI all spell it, so it is the stable form.

Every mapping is a dictionary look-up over the enumerated module inventory (``name_tables``), never string surgery:
kohya names replace each ``.`` with ``_`` and cannot be split back without knowing the real paths, and an unknown
name must come back as ``None`` rather than a plausible guess.

Formats:

* ``kohya``: ``lora_unet_…``/``lora_te_…`` (SD 1/2), ``lora_te1_``/``lora_te2_`` (SDXL). SDXL UNet names are SGM
  (``input_blocks_4_1_…``) on output; diffusers-named (``down_blocks_1_…``) and SGM names are both read for every
  family, and text-encoder names with or without ``text_model_`` are read.
* ``diffusers``: PEFT module paths ``unet.…``/``text_encoder.…``/``text_encoder_2.…``; read with or without
  ``text_model.``, written with it unless ``transformers5=True``.
* ``comfyui``: ``diffusion_model.<SGM path>`` for the UNet and ``text_encoders.clip_l.transformer.<path>`` for
  CLIP-L; the OpenCLIP-H/G spellings are not confirmed by a real ComfyUI-saved file, so those modules map to ``None``.

SD3 and FLUX.1 (``sd3``, ``flux1``) are answered from :mod:`lorahub.adapters.dit_names`. There some native modules
hold several canonical layers (FLUX's ``img_attn.qkv`` is ``to_q``/``to_k``/``to_v``): those have no one-to-one name,
so :func:`to_canonical` and :func:`from_canonical` return None for them and readers/writers go through
:mod:`lorahub.adapters.native`, which splits and fuses them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

from lorahub.adapters import dit_names
from lorahub.adapters import name_tables as t

__all__ = ["COMPONENTS", "FAMILIES", "FORMATS", "from_canonical", "inventory", "to_canonical"]

SD_FAMILIES = ("sd1", "sd2", "sdxl")
FAMILIES = (*SD_FAMILIES, *dit_names.FAMILIES)
FORMATS = ("kohya", "diffusers", "comfyui")
COMPONENTS = ("unet", "text_encoder", "text_encoder_2")
_TEXT_MODEL = "text_model."
_KOHYA_TE_PREFIX: dict[str, dict[str, str]] = {
    "sd1": {"text_encoder": "lora_te"},
    "sd2": {"text_encoder": "lora_te"},
    "sdxl": {"text_encoder": "lora_te1", "text_encoder_2": "lora_te2"},
}
# ComfyUI text-encoder prefixes, as the ComfyUI-saved FLUX files spell them (diffusers reads them in
# ``_convert_kohya_flux_lora_to_diffusers``, ``loaders/lora_conversion_utils.py``).
_COMFY_TE_PREFIX: dict[str, dict[str, str]] = {
    "sd1": {"text_encoder": "text_encoders.clip_l.transformer."},
    "sdxl": {"text_encoder": "text_encoders.clip_l.transformer."},
}


@dataclass
class _Maps:
    """One family's name tables: canonical → written name, and every accepted spelling → canonical."""

    inventory: tuple[str, ...]
    write: dict[str, dict[str, str]] = field(default_factory=dict)  # fmt → canonical → name
    read: dict[str, dict[str, str]] = field(default_factory=dict)  # fmt → name → canonical

    def add(self, fmt: str, canonical: str, written: str, *aliases: str) -> None:
        """Register the name a format writes for ``canonical`` and the spellings it reads."""
        self.write.setdefault(fmt, {})[canonical] = written
        reads = self.read.setdefault(fmt, {})
        for name in (written, *aliases):
            reads[name] = canonical


def _kohya(prefix: str, path: str) -> str:
    """kohya's rule: ``(prefix + "." + path).replace(".", "_")`` (sd-scripts ``networks/lora.py``)."""
    return f"{prefix}_{path.replace('.', '_')}"


def _add_unet(maps: _Maps, family: str) -> list[str]:
    """UNet modules: kohya writes SGM names for SDXL (sd-scripts trains on its SGM UNet), diffusers names otherwise."""
    canonical: list[str] = []
    sgm_writer = family == "sdxl"
    for path, sgm in t.unet_modules(t.UNETS[family]):
        name = f"unet.{path}"
        canonical.append(name)
        diffusers_kohya, sgm_kohya = _kohya("lora_unet", path), _kohya("lora_unet", sgm)
        if sgm_writer:
            maps.add("kohya", name, sgm_kohya, diffusers_kohya)
        else:
            maps.add("kohya", name, diffusers_kohya, sgm_kohya)
        maps.add("diffusers", name, name)
        maps.add("comfyui", name, f"diffusion_model.{sgm}")
    return canonical


def _add_text_encoder(maps: _Maps, family: str, component: str, spec: t.TextEncoderSpec) -> list[str]:
    """Text-encoder modules, read with and without ``text_model.`` (transformers ≥ 5 writers drop it)."""
    canonical: list[str] = []
    kohya_prefix = _KOHYA_TE_PREFIX[family][component]
    comfy_prefix = _COMFY_TE_PREFIX.get(family, {}).get(component)
    for path in t.text_encoder_modules(spec):
        name = f"{component}.{path}"
        flat = path.removeprefix(_TEXT_MODEL)
        canonical.append(name)
        maps.add("kohya", name, _kohya(kohya_prefix, path), _kohya(kohya_prefix, flat))
        maps.add("diffusers", name, name, f"{component}.{flat}")
        if comfy_prefix is not None:
            maps.add("comfyui", name, f"{comfy_prefix}{path}")
    return canonical


@cache
def _maps(family: str) -> _Maps:
    """Build (once) every table of a family from the inventories in ``name_tables``."""
    maps = _Maps(inventory=())
    names = _add_unet(maps, family)
    for component, spec in t.TEXT_ENCODERS[family].items():
        names += _add_text_encoder(maps, family, component, spec)
    maps.inventory = tuple(names)
    return maps


def _checked(family: str, fmt: str) -> _Maps | None:
    """The family's tables, or None for a family/format these tables do not cover (callers then return None)."""
    if family not in SD_FAMILIES or fmt not in FORMATS:
        return None
    return _maps(family)


def inventory(family: str, component: str | None = None) -> tuple[str, ...]:
    """Every canonical module a LoRA of ``family`` may target (all Linear/Conv2d of the UNet and CLIP encoders)."""
    if family in dit_names.FAMILIES:
        return dit_names.inventory(family, component)
    if family not in SD_FAMILIES:
        return ()
    names = _maps(family).inventory
    if component is None:
        return names
    return tuple(n for n in names if n.startswith(f"{component}."))


def to_canonical(family: str, fmt: str, module_name: str, component: str | None = None) -> str | None:
    """The canonical path of ``module_name`` (a key without its tensor suffix), or None if it is not a module.

    ``component`` restricts the answer to one component; for ``diffusers`` names written without a component prefix
    (raw PEFT files of one model) it is also the prefix to assume.
    """
    if family in dit_names.FAMILIES:
        return _dit_to_canonical(family, fmt, module_name, component)
    maps = _checked(family, fmt)
    if maps is None:
        return None
    reads = maps.read.get(fmt, {})
    found = reads.get(module_name)
    if found is None and fmt == "diffusers" and component is not None:
        found = reads.get(f"{component}.{module_name}")
    if found is None or (component is not None and not found.startswith(f"{component}.")):
        return None
    return found


def from_canonical(family: str, fmt: str, canonical: str, *, transformers5: bool = False) -> str | None:
    """The name ``fmt`` uses for ``canonical``, or None if the module is unknown or the format cannot name it.

    ``transformers5`` writes diffusers text-encoder paths without ``text_model.``, as diffusers does when it runs
    on transformers ≥ 5; readers of both versions accept that form, older ones only the default.
    """
    if family in dit_names.FAMILIES:
        return _dit_from_canonical(family, fmt, canonical, transformers5)
    maps = _checked(family, fmt)
    if maps is None:
        return None
    written = maps.write.get(fmt, {}).get(canonical)
    if written is not None and transformers5 and fmt == "diffusers":
        component, _, path = written.partition(".")
        if path.startswith(_TEXT_MODEL):
            written = f"{component}.{path.removeprefix(_TEXT_MODEL)}"
    return written


def _dit_to_canonical(family: str, fmt: str, module_name: str, component: str | None) -> str | None:
    """SD3/FLUX: the one canonical layer a name holds, in any of the family's spellings; None for fused modules.
    The final-layer modulation maps by name, but its rows are swapped: :mod:`lorahub.adapters.native` does that."""
    if fmt not in FORMATS:
        return None
    found = dit_names.lookup(family, module_name, component)
    if found is None or found.fused:
        return None
    canonical = found.parts[0]
    if component is not None and not canonical.startswith(f"{component}."):
        return None
    return canonical


def _dit_from_canonical(family: str, fmt: str, canonical: str, transformers5: bool) -> str | None:
    found = dit_names.native_of(family, canonical)
    if found is None or fmt not in FORMATS:
        return None
    native, _ = found
    if fmt == "diffusers":
        component, _, path = canonical.partition(".")
        return f"{component}.{path.removeprefix(_TEXT_MODEL)}" if transformers5 else canonical
    if native.fused:
        return None
    return dit_names.written_name(family, fmt, native)
