"""Every input a converter accepts, read into the canonical model: safetensors files, PEFT adapter directories,
ComfyUI-named files, and pickled checkpoints that pass the opcode scan. Also the base checkpoint (``--base``).

Why here and not in :mod:`lorahub.adapters.model`: ``read_adapter`` reads one safetensors file; the inputs below are
thin wrappers around it (a pickle becomes the equivalent safetensors file, a PEFT directory carries its alpha in
``adapter_config.json``, ComfyUI names map through the same tables as kohya names), so they sit on top of it.

Pickles are untrusted: :func:`lorahub.files.pickles.scan_pickle_file` walks the opcodes first and anything outside
the allow-list is refused with :class:`~lorahub.errors.UnsafePickleError`; only then is the file loaded, with
``torch.load(weights_only=True)`` (torch's own restricted unpickler, a second line of defence), memory-mapped when
the archive allows.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from lorahub import errors
from lorahub.adapters.model import CanonicalAdapter, CanonicalLayer, read_adapter
from lorahub.adapters.names import FAMILIES, from_canonical, inventory, to_canonical
from lorahub.files.numeric import to_float32
from lorahub.files.safetensors import SafetensorsFile, TensorInfo, check_path, looks_like_safetensors, write
from lorahub.formats import detect
from lorahub.formats.diffusers import AdapterConfig, alpha_patterns, config_alpha
from lorahub.formats.families import detect_family
from lorahub.formats.layers import layer_kind

__all__ = [
    "PEFT_CONFIG",
    "PEFT_WEIGHTS",
    "PICKLE_SUFFIXES",
    "BaseWeights",
    "comfyui_canonical",
    "comfyui_name",
    "load_adapter",
    "safetensors_view",
]

Array = npt.NDArray[Any]

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
_PEFT_PREFIX = "base_model.model."
_COMPONENTS = ("unet", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3")

# ComfyUI's CLIP state-dict prefixes (comfy/sd1_clip.py, sd2_clip.py, sdxl_clip.py: ``clip_l``, ``clip_h``,
# ``clip_g``, each wrapping its transformers model as ``.transformer``), read generically as ``text_encoders.<key>``.
_COMFY_CLIP: Mapping[str, Mapping[str, str]] = {
    "sd1": {"text_encoder": "clip_l"},
    "sd2": {"text_encoder": "clip_h"},
    "sdxl": {"text_encoder": "clip_l", "text_encoder_2": "clip_g"},
}


# --- names -----------------------------------------------------------------------------------------------------------


def comfyui_name(family: str, canonical: str) -> str | None:
    """The ComfyUI module name of a canonical path: ``diffusion_model.<SGM path>`` for the UNet (name tables),
    ``text_encoders.<clip_x>.transformer.<path>`` for the CLIP encoders (ComfyUI's generic text-encoder keys)."""
    component, _, path = canonical.partition(".")
    clip = _COMFY_CLIP.get(family, {}).get(component)
    if clip is not None:
        return f"text_encoders.{clip}.transformer.{path}"
    return from_canonical(family, "comfyui", canonical)


def comfyui_canonical(family: str, name: str) -> str | None:
    """The canonical path of a ComfyUI module name (the inverse of :func:`comfyui_name`), None when the family's
    tables do not know it."""
    for component, clip in _COMFY_CLIP.get(family, {}).items():
        prefix = f"text_encoders.{clip}.transformer."
        if name.startswith(prefix):
            found = f"{component}.{name.removeprefix(prefix)}"
            return found if found in set(inventory(family, component)) else None
    return to_canonical(family, "comfyui", name)


def _remap_comfyui(adapter: CanonicalAdapter) -> CanonicalAdapter:
    """``read_adapter`` keeps ComfyUI names as they are; map them when the family's tables know them."""
    if adapter.source_format != "comfyui" or adapter.family not in FAMILIES:
        return adapter
    layers: dict[str, CanonicalLayer] = {}
    unmapped: list[str] = []
    for name, layer in adapter.layers.items():
        canonical = comfyui_canonical(adapter.family, layer.source_name) if name in adapter.unmapped else name
        if canonical is None or canonical in layers:
            canonical = name
            unmapped.append(name)
        layer.name = canonical
        layers[canonical] = layer
    adapter.layers, adapter.unmapped = layers, unmapped
    return adapter


# --- pickles ---------------------------------------------------------------------------------------------------------

_TORCH_DTYPES = {
    "float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64", "int64": "I64", "int32": "I32",
    "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL", "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2",
}  # fmt: skip


def _torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``, memory-mapped when the file is a torch zip archive. Call only after the
    opcode scan passed."""
    try:
        import torch
    except ImportError:
        raise errors.MissingExtraError("reading pickled checkpoints", "torch") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
        pass
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's restricted unpickler refuses: report, never fall back to a full unpickler
        raise errors.InvalidFileError(f"{path}: torch could not load it as tensors: {exc}") from None


def _state_dict(loaded: Any, path: Path) -> dict[str, Any]:
    """The flat ``{name: tensor}`` a LoRA checkpoint holds (``{"state_dict": {...}}`` wrappers are opened)."""
    import torch

    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping):
        raise errors.UnsupportedFileError(f"{path} holds a {type(loaded).__name__}, not a state dict of tensors")
    tensors = {str(k): v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise errors.UnsupportedFileError(f"{path} holds no tensors")
    return tensors


def _tensor_entry(name: str, tensor: Any) -> tuple[str, tuple[int, ...], bytes]:
    import torch

    dtype = _TORCH_DTYPES.get(str(tensor.dtype).removeprefix("torch."))
    if dtype is None:
        raise errors.UnsupportedFileError(f"tensor {name} has dtype {tensor.dtype}, which safetensors cannot store")
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    raw = flat.view(torch.uint8) if flat.numel() else flat.to(torch.uint8)
    return dtype, tuple(tensor.shape), raw.numpy().tobytes()


@contextmanager
def safetensors_view(path: str | os.PathLike[str]) -> Iterator[Path]:
    """The input as a safetensors file: itself, or, for a pickle that passes the opcode scan, the equivalent
    safetensors file in a temporary directory (removed on exit). Dangerous pickles raise ``UnsafePickleError``."""
    from lorahub.files.pickles import looks_like_pickle, raise_if_dangerous, scan_pickle_file

    source = check_path(path)
    with open(source, "rb") as handle:
        prefix = handle.read(16)
    if not (source.suffix.lower() in PICKLE_SUFFIXES or looks_like_pickle(prefix)) or looks_like_safetensors(prefix):
        yield source
        return
    raise_if_dangerous(scan_pickle_file(source), source)  # never unpickle before this passes
    tensors = {name: _tensor_entry(name, t) for name, t in _state_dict(_torch_load(source), source).items()}
    with tempfile.TemporaryDirectory(prefix="lorahub-pickle-") as tmp:
        converted = Path(tmp) / f"{source.stem}.safetensors"
        write(converted, tensors)
        del tensors
        yield converted


# --- PEFT directories ----------------------------------------------------------------------------------------------


def _peft_parts(directory: Path) -> list[tuple[str | None, Path]]:
    """``(component, folder)`` for a PEFT adapter folder, or one with a PEFT adapter per component subfolder."""
    if (directory / PEFT_CONFIG).is_file():
        return [(None, directory)]
    parts: list[tuple[str | None, Path]] = [
        (c, directory / c) for c in _COMPONENTS if (directory / c / PEFT_CONFIG).is_file()
    ]
    if not parts:
        raise errors.UnsupportedFileError(
            f"{directory} is a directory without {PEFT_CONFIG}",
            hint="pass a .safetensors file, or a PEFT adapter folder (adapter_model.safetensors + adapter_config.json)",
        )
    return parts


def _peft_config(folder: Path) -> tuple[AdapterConfig, dict[str, Any]]:
    try:
        raw = json.loads((folder / PEFT_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise errors.InvalidFileError(f"{folder / PEFT_CONFIG}: {exc}") from None
    if not isinstance(raw, dict):
        raise errors.InvalidFileError(f"{folder / PEFT_CONFIG} is not a JSON object")
    alpha = raw.get("lora_alpha", raw.get("r"))
    config = AdapterConfig(
        lora_alpha=float(alpha) if isinstance(alpha, int | float) and not isinstance(alpha, bool) else None,
        alpha_patterns=alpha_patterns(raw.get("alpha_pattern")),
        use_rslora=raw.get("use_rslora") is True,
    )
    return config, raw


@dataclass
class _PeftPart:
    component: str
    path: Path
    config: AdapterConfig
    raw_config: dict[str, Any] = field(default_factory=dict)


def _component_of(folder_component: str | None, raw: Mapping[str, Any], names: list[str]) -> str:
    if folder_component is not None:
        return folder_component
    if any(n.startswith(("text_model.", "encoder.layers.")) for n in names):
        return "text_encoder"
    return "transformer" if any(n.startswith(("transformer_blocks.", "single_transformer")) for n in names) else "unet"


def _read_peft_dir(directory: Path, family: str | None) -> CanonicalAdapter:
    """Each component's ``adapter_model.safetensors`` under its PEFT config: module paths lose ``base_model.model.``
    and gain the component, alpha comes from ``lora_alpha``/``alpha_pattern`` as PEFT matches them, and
    ``use_rslora`` marks every layer of the folder (scale alpha/√rank)."""
    layers: dict[str, CanonicalLayer] = {}
    metadata: dict[str, str] = {}
    pending: list[tuple[str, str, dict[str, Array], float | None, str, bool]] = []
    for folder_component, folder in _peft_parts(directory):
        config, raw_config = _peft_config(folder)
        weights = folder / PEFT_WEIGHTS
        with SafetensorsFile(check_path(weights)) as container:
            metadata.update(container.metadata)
            layout = detect(container.header.tensors, container.metadata)
            names = [m.name.removeprefix(_PEFT_PREFIX) for m in layout.modules]
            component = _component_of(folder_component, raw_config, names)
            configs = {component: config}
            for module, path in zip(layout.modules, names, strict=True):
                module.name = f"{component}.{path}"
                tensors = {
                    role: np.ascontiguousarray(to_float32(container.raw(info.name), info))
                    for role, info in module.tensors.items()
                    if role != "alpha"
                }
                dtypes = [info.dtype for role, info in module.tensors.items() if role != "alpha"]
                dtype = dtypes[0] if dtypes else "F32"
                alpha = config_alpha(module, configs)
                pending.append((module.name, layer_kind(module), tensors, alpha, dtype, config.use_rslora))
    if family is None:
        family = _family_of([name for name, *_ in pending], metadata)
    unmapped: list[str] = []
    for name, kind, tensors, alpha, dtype, rslora in pending:
        canonical = to_canonical(family, "diffusers", name) if family in FAMILIES else None
        if canonical is None or canonical in layers:
            unmapped.append(name)
            canonical = name
        layers[canonical] = CanonicalLayer(canonical, kind, tensors, alpha, dtype, source_name=name, rslora=rslora)
    return CanonicalAdapter(family=family, layers=layers, metadata=metadata, source_format="peft", unmapped=unmapped)


def _family_of(names: list[str], metadata: Mapping[str, str]) -> str:
    """The family whose inventory holds every module (the smallest such, SD1 before SD2 before SDXL); the
    header-based detector is asked when the names alone do not decide."""
    for family in FAMILIES:
        known = set(inventory(family))
        if names and all(to_canonical(family, "diffusers", n) in known for n in names):
            return family
    fake = {f"{n}.lora_A.weight": TensorInfo(f"{n}.lora_A.weight", "F32", (1, 1), 0, 4) for n in names}
    return detect_family(detect(fake, metadata), metadata).family or "unknown"


# --- entry point -------------------------------------------------------------------------------------------------


def load_adapter(
    path: str | os.PathLike[str], *, family: str | None = None, materialize_fused: bool = False
) -> CanonicalAdapter:
    """Read any accepted input into the canonical model (see the module docstring)."""
    source = Path(path)
    if source.is_dir():
        return _read_peft_dir(source, family)
    with safetensors_view(source) as view:
        adapter = read_adapter(view, family=family, materialize_fused=materialize_fused)
    return _remap_comfyui(adapter)


# --- the base checkpoint ---------------------------------------------------------------------------------------------


class BaseWeights:
    """A base checkpoint (safetensors, memory-mapped): only the tensors a module needs are read.

    Keys tried for a canonical module ``unet.down_blocks.0….to_q``: the diffusers path with and without its component
    prefix (a whole-pipeline file or one component's file), with and without ``text_model.`` (transformers 5), the
    SGM name (``model.diffusion_model.…``, as single-file checkpoints store the UNet) and the module's own name in the
    adapter file; each with ``.weight``.
    """

    def __init__(self, path: str | os.PathLike[str], family: str) -> None:
        self.path = check_path(path)
        self.family = family
        self._file = SafetensorsFile(self.path)

    def __enter__(self) -> BaseWeights:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def candidates(self, layer: CanonicalLayer) -> list[str]:
        component, _, path = layer.name.partition(".")
        names = [layer.name, path, path.removeprefix("text_model."), f"{component}.{path.removeprefix('text_model.')}"]
        sgm = from_canonical(self.family, "comfyui", layer.name) if self.family in FAMILIES else None
        if sgm is not None:
            names += [f"model.{sgm}", sgm]
        if layer.source_name:
            names.append(layer.source_name)
        return list(dict.fromkeys(f"{n}.weight" for n in names if n))

    def weight(self, layer: CanonicalLayer) -> Array:
        tensors = self._file.header.tensors
        for key in self.candidates(layer):
            info = tensors.get(key)
            if info is not None:
                return np.asarray(to_float32(self._file.raw(key), info), dtype=np.float32)
        tried = ", ".join(self.candidates(layer)[:4])
        raise errors.BaseWeightMissingError(
            f"{self.path} has no weight for {layer.name} (tried {tried}, …)",
            hint="pass the base checkpoint the adapter was trained on, as diffusers-named or SGM-named safetensors",
        )
