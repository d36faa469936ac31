"""Format conversion of adapters for SD 1.x/2.x, SDXL, SD3 and FLUX.1: kohya, diffusers, peft, comfyui, full.

The file is read into the canonical model (:mod:`lorahub.adapters.model`), written out in the target format, read
back, and ΔW of every module before and after is recomputed through :mod:`lorahub.adapters.delta` and compared; the
report carries the largest error (DESIGN decision 1). What cannot be converted exactly is refused before anything is
written (``formats.md`` §10):

* kinds other than LoRA/LoCon (LoHa, LoKr, full, OFT, …), DoRA magnitudes, PEFT ``lora_B`` biases, A1111 ``scale``
  tensors, rsLoRA configs;
* modules whose names do not map to the family's canonical paths (they would be dropped), families without name
  tables yet;
* fused SD3/FLUX modules whose delta cannot be split exactly into the diffusers projections (a LoKr over
  ``img_attn.qkv``): ``read_adapter`` keeps them whole and lists them in ``unsplit``.

SD3/FLUX fused projections (``img_attn.qkv``, ``linear1``, ``attn.qkv``) and swapped modulations are split when read
and fused again when written to kohya (:mod:`lorahub.adapters.native`, maths in :mod:`lorahub.adapters.fused`).

kohya output carries the *true* alpha of every module (diffusers' own ``convert_state_dict_to_kohya`` writes
alpha = rank, §10.1); a source without alpha gets alpha = rank, i.e. scale 1, which is what it meant. diffusers output
stores ``lora_A``/``lora_B`` under ``unet.``/``text_encoder.``/``text_encoder_2.`` with the PEFT config that diffusers
0.42 reads back (``lora_adapter_metadata``: ``<component>.r``, ``.lora_alpha``, ``.rank_pattern``,
``.alpha_pattern``, ``.target_modules``), so ``lora_alpha/r`` of every module equals the source scale. A LoCon-Tucker
``lora_mid`` is folded into ``lora_A`` for diffusers (the down projection is 1×1, so the fold is exact).

The ``peft``, ``comfyui`` and ``full`` writers are in :mod:`lorahub.adapters.writers`; inputs (pickles that pass
the opcode scan, PEFT folders, ComfyUI names) are read by :mod:`lorahub.adapters.sources`. With ``lossy`` the kinds a
plain LoRA cannot hold (LoHa, LoKr, full, GLoRA, OFT/BOFT, IA3, DoRA) become LoRA/LoCon by truncated SVD
(:mod:`lorahub.adapters.resize`) and the check reports what that cost; kinds whose ΔW depends on the base weight
read it from ``base``.

``ss_*`` and ``modelspec.*`` metadata are kept; ``sshs_model_hash`` (and ``modelspec.hash_sha256``, ``0x``-prefixed)
are recomputed from the written file (AutoV3 covers the data section only, so rewriting the header keeps it), and
``sshs_legacy_hash`` is dropped rather than left stale (§10.7).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from lorahub import errors
from lorahub.adapters.delta import BASE_KINDS, delta_weight
from lorahub.adapters.model import CanonicalAdapter, CanonicalLayer
from lorahub.adapters.names import FAMILIES
from lorahub.adapters.native import written_layers
from lorahub.adapters.sources import BaseWeights, load_adapter
from lorahub.files.digests import digest_file
from lorahub.files.safetensors import read_header, write
from lorahub.formats.diffusers import adapter_configs

__all__ = ["DTYPES", "TARGETS", "ConversionRefusedError", "ConversionReport", "convert"]

Array = npt.NDArray[Any]
Target = Literal["kohya", "diffusers", "peft", "comfyui", "full"]
TARGETS: tuple[str, ...] = ("kohya", "diffusers", "peft", "comfyui", "full")
DTYPES: Mapping[str, str] = {"fp16": "F16", "bf16": "BF16", "fp32": "F32"}
"""``--dtype`` choices → safetensors dtype."""

_CONVERTIBLE_KINDS = frozenset({"lora", "locon", "lora-tucker"})
_CONVERTIBLE_ROLES = frozenset({"down", "up", "mid"})
_WRITABLE = {"F16": "<f2", "F32": "<f4", "F64": "<f8", "BF16": "<u2"}
_KEPT_PREFIXES = ("ss_", "modelspec.")
_STALE_KEYS = ("sshs_model_hash", "sshs_legacy_hash", "modelspec.hash_sha256")
_COMPONENTS = ("unet", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3")


@dataclass
class ConversionReport:
    """What a conversion did: modules written, the largest ΔW errors (absolute, and relative to each module's
    largest |ΔW| entry), per-module errors, and what stood in the way (``unmapped``/``refused``, empty on success)."""

    modules: int
    max_abs_error: float
    max_rel_error: float
    per_module: dict[str, tuple[float, float]] = field(default_factory=dict)
    unmapped: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    source_format: str = ""
    target: str = ""
    family: str = ""
    output: str = ""
    autov3: str | None = None
    lossy: list[str] = field(default_factory=list)
    """Modules converted by truncated SVD (``--lossy``); their errors are in ``per_module``."""
    ranks: dict[str, int] = field(default_factory=dict)
    """Rank each lossy module was given."""


ConversionRefusedError = errors.ConversionRefusedError


# --- refusal ---------------------------------------------------------------------------------------------------------


def exact_lora(layer: CanonicalLayer) -> bool:
    """Whether a plain LoRA writer can hold the layer exactly (LoRA/LoCon/Tucker factors and nothing else)."""
    extra = set(layer.tensors) - _CONVERTIBLE_ROLES
    return layer.kind in _CONVERTIBLE_KINDS and not extra and "down" in layer.tensors and "up" in layer.tensors


def _refusals(adapter: CanonicalAdapter) -> list[str]:
    refused = []
    for name, layer in adapter.layers.items():
        if not exact_lora(layer):
            extra = sorted(set(layer.tensors) - _CONVERTIBLE_ROLES)
            refused.append(f"{name} ({layer.kind}{', ' + ', '.join(extra) if extra else ''})")
    return refused


def _check_convertible(adapter: CanonicalAdapter, target: str, src: Path, *, lossy: bool = False) -> None:
    def refuse(message: str, hint: str, **lists: list[str]) -> None:
        report = ConversionReport(
            modules=len(adapter.layers), max_abs_error=math.nan, max_rel_error=math.nan,
            unmapped=lists.get("unmapped", []), refused=lists.get("refused", []),
            source_format=adapter.source_format, target=target, family=adapter.family,
        )  # fmt: skip
        raise ConversionRefusedError(message, report=report, hint=hint)

    if target not in TARGETS:
        raise errors.LorahubError(f"unknown target format {target!r}", hint=f"choose one of {', '.join(TARGETS)}")
    if not adapter.layers:
        refuse(f"{src}: no adapter modules found", "check that this is a LoRA file")
    if adapter.family not in FAMILIES and target != "full":
        refuse(
            f"{src}: {adapter.family} adapters cannot be converted yet (names are mapped for SD 1.x/2.x, SDXL, SD3 and "
            "FLUX.1)",
            "name maps for this family are not yet supported",
            unmapped=list(adapter.unmapped),
        )
    if any(config.use_rslora for config in adapter_configs(adapter.metadata).values()):
        refuse(f"{src}: rsLoRA (alpha/sqrt(r)) cannot be converted yet", "convert it with the tool that wrote it")
    if adapter.unsplit:
        refuse(
            f"{src}: {len(adapter.unsplit)} fused or row-swapped module(s) have no exact diffusers form: "
            f"{', '.join(adapter.unsplit[:3])}",
            "a non-LoRA delta over a fused qkv/linear1 has no exact per-projection form; --lossy --rank N splits its "
            "dense ΔW by rows and decomposes each part, with the error reported",
            refused=list(adapter.unsplit),
        )
    refused = _refusals(adapter) if target != "full" else []
    if refused and not lossy:
        shown = ", ".join(refused[:5]) + (f" and {len(refused) - 5} more" if len(refused) > 5 else "")
        refuse(
            f"{src}: {len(refused)} module(s) cannot be converted exactly to plain LoRA: {shown}",
            "LoHa, LoKr, DoRA and other kinds become LoRA only approximately: pass --lossy (and --rank N) to convert "
            "them by truncated SVD with the error reported, or --to full to keep ΔW exactly",
            refused=refused,
        )
    if adapter.unmapped and target != "full":
        shown = ", ".join(adapter.unmapped[:5])
        refuse(
            f"{src}: {len(adapter.unmapped)} module(s) do not map to {adapter.family} layers and would be dropped: "
            f"{shown}",
            "the file's module names are not in the family's inventory; convert it with the tool that wrote it",
            unmapped=list(adapter.unmapped),
        )


# --- tensors ---------------------------------------------------------------------------------------------------------


def _encode(array: Array, dtype: str) -> bytes:
    """float32 values → little-endian bytes of ``dtype`` (bf16 rounded to nearest even, as torch does)."""
    if dtype == "BF16":
        values = np.ascontiguousarray(array, dtype=np.float32)
        bits = values.view(np.uint32)
        # uint32 is wide enough: only NaN bit patterns (replaced below) can wrap around
        with np.errstate(over="ignore"):
            rounded = ((bits + np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1))) >> 16).astype(np.uint16)
        rounded = np.where(np.isnan(values), np.uint16(0x7FC0), rounded)
        return rounded.astype("<u2").tobytes()
    return np.ascontiguousarray(array).astype(_WRITABLE[dtype]).tobytes()


def _storage(layer: CanonicalLayer, dtype: str | None) -> str:
    if dtype is not None:
        return DTYPES[dtype]
    return layer.dtype if layer.dtype in _WRITABLE else "F32"  # fp8 sources widen losslessly to fp32


def _alpha(layer: CanonicalLayer) -> float:
    """The alpha to write: the true one, or the rank when the source has none (scale 1)."""
    rank = layer.rank
    assert rank is not None  # checked by _refusals
    return float(rank) if layer.alpha is None else float(layer.alpha)


def _folded_down(layer: CanonicalLayer) -> Array:
    """LoCon-Tucker ``mid`` [r,r,kh,kw] after a 1×1 ``down`` [r,in,1,1] is one conv with kernel ``mid·down``."""
    down, mid = layer.tensors["down"], layer.tensors.get("mid")
    if mid is None:
        return down
    flat = down.reshape(down.shape[0], -1).astype(np.float64)
    folded: Array = np.einsum("rshw,si->rihw", mid.astype(np.float64), flat).astype(np.float32)
    return folded


def _kohya_tensors(adapter: CanonicalAdapter, dtype: str | None) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    out: dict[str, tuple[str, tuple[int, ...], bytes]] = {}
    for name, layer in written_layers(adapter, "kohya"):
        storage = _storage(layer, dtype)
        for role, suffix in (("down", "lora_down"), ("up", "lora_up"), ("mid", "lora_mid")):
            array = layer.tensors.get(role)
            if array is not None:
                out[f"{name}.{suffix}.weight"] = (storage, tuple(array.shape), _encode(array, storage))
        alpha = np.float32(_alpha(layer))
        out[f"{name}.alpha"] = ("F32", (), alpha.tobytes())
    return out


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else float(value)


def _pattern_keys(paths: Mapping[str, object]) -> dict[str, str]:
    r"""PEFT matches a pattern key at the end of a path (``(.*\.)?(key)$``), so FLUX's top-level ``proj_out`` would
    also claim every ``single_transformer_blocks.N.proj_out``: such keys are anchored with ``^``, as diffusers does
    for its own rank patterns (peft#2419)."""
    suffixes = {path.split(".", i)[i] for path in paths for i in range(1, path.count(".") + 1)}
    return {path: f"^{path}" if path in suffixes else path for path in paths}


def config_path(path: str) -> str:
    """A module path as the PEFT config names it. PEFT matches target_modules and patterns as path suffixes:
    without ``text_model.`` the config fits text encoders of transformers 4 (which nest it) and 5 (which dropped
    it); the tensor keys keep it."""
    return path.removeprefix("text_model.")


def _peft_config(layers: list[tuple[str, CanonicalLayer]]) -> dict[str, Any]:
    """One component's ``LoraConfig`` fields: the most common rank and alpha, patterns for the rest."""
    ranks = {path: int(layer.rank or 0) for path, layer in layers}
    alphas = {path: _alpha(layer) for path, layer in layers}
    r = Counter(ranks.values()).most_common(1)[0][0]
    lora_alpha = Counter(alphas.values()).most_common(1)[0][0]
    key = _pattern_keys(ranks)
    return {
        "r": r,
        "lora_alpha": _number(lora_alpha),
        "rank_pattern": {key[path]: rank for path, rank in ranks.items() if rank != r},
        "alpha_pattern": {key[path]: _number(alpha) for path, alpha in alphas.items() if alpha != lora_alpha},
        "target_modules": sorted(ranks),
        "use_dora": False,
        "use_rslora": False,
        "lora_bias": False,
        "init_lora_weights": True,
    }


def _diffusers_tensors(
    adapter: CanonicalAdapter, dtype: str | None
) -> tuple[dict[str, tuple[str, tuple[int, ...], bytes]], dict[str, Any]]:
    out: dict[str, tuple[str, tuple[int, ...], bytes]] = {}
    by_component: dict[str, list[tuple[str, CanonicalLayer]]] = {}
    for name, layer in written_layers(adapter, "diffusers"):
        storage = _storage(layer, dtype)
        down, up = _folded_down(layer), layer.tensors["up"]
        out[f"{name}.lora_A.weight"] = (storage, tuple(down.shape), _encode(down, storage))
        out[f"{name}.lora_B.weight"] = (storage, tuple(up.shape), _encode(up, storage))
        component, _, path = name.partition(".")
        by_component.setdefault(component, []).append((config_path(path), layer))
    config: dict[str, Any] = {}
    for component in _COMPONENTS:
        if component in by_component:
            for key, value in _peft_config(by_component[component]).items():
                config[f"{component}.{key}"] = value
    return out, config


# --- metadata and hashes ------------------------------------------------------------------------------------------


def _kept_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in metadata.items() if k.startswith(_KEPT_PREFIXES) and k not in _STALE_KEYS}


def _hash_claims(source: Mapping[str, str], target: str, autov3: str) -> dict[str, str]:
    claims = {}
    if target == "kohya" or "sshs_model_hash" in source:
        claims["sshs_model_hash"] = autov3
    if "modelspec.hash_sha256" in source or any(k.startswith("modelspec.") for k in source):
        claims["modelspec.hash_sha256"] = f"0x{autov3}"
    return claims


# --- check -----------------------------------------------------------------------------------------------------------


BaseOf = Callable[[CanonicalLayer], "Array | None"]


def _no_base(layer: CanonicalLayer) -> None:
    return None


def _scale(layer: CanonicalLayer) -> float:
    from lorahub.adapters.resize import _lowrank_scale

    return _lowrank_scale(layer)


def _same_factors(before: CanonicalLayer, after: CanonicalLayer) -> bool:
    """The same LoRA factors (values and shapes) and the same scale give the same ΔW, so it need not be built: a
    FLUX LoRA's ΔW has about 12 billion entries, while most modules of an exact conversion come back bit for bit."""
    if not (exact_lora(before) and exact_lora(after)) or before.tensors.keys() != after.tensors.keys():
        return False
    for role, array in before.tensors.items():
        other = after.tensors[role]
        if array.shape != other.shape or not np.array_equal(array, other):
            return False
    return _scale(before) == _scale(after)


def _errors(before: CanonicalLayer, after: CanonicalLayer | None, base_of: BaseOf = _no_base) -> tuple[float, float]:
    """Largest |ΔW_before − ΔW_after| and that over the largest |ΔW_before| (both ΔW from delta.py)."""
    if after is None:
        return math.inf, math.inf
    if _same_factors(before, after):
        return 0.0, 0.0
    expected = delta_weight(before.tensors, alpha=before.alpha, base=base_of(before)).weight
    actual = delta_weight(after.tensors, alpha=after.alpha, base=base_of(after) if _needs_base(after) else None).weight
    if expected.shape != actual.shape and expected.size == actual.size:  # a flattened conv delta (no base given)
        actual = actual.reshape(expected.shape)
    if expected.shape != actual.shape:
        return math.inf, math.inf
    diff = float(np.max(np.abs(expected - actual), initial=0.0))
    size = float(np.max(np.abs(expected), initial=0.0))
    return diff, diff / size if size > 0 else diff


def _compare(
    source: CanonicalAdapter, written: CanonicalAdapter, base_of: BaseOf = _no_base
) -> dict[str, tuple[float, float]]:
    """Per-module errors; modules run in threads (the matrix products release the GIL)."""
    names = list(source.layers)
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda name: _errors(source.layers[name], written.layers.get(name), base_of), names)
        return dict(zip(names, results, strict=True))


def _needs_base(layer: CanonicalLayer) -> bool:
    return layer.kind in BASE_KINDS or "dora_scale" in layer.tensors or "magnitude" in layer.tensors


# --- writing ---------------------------------------------------------------------------------------------------


def _output_files(out: Path, to: str) -> list[Path]:
    if to != "peft":
        return [out]
    from lorahub.adapters.sources import PEFT_WEIGHTS

    return sorted(out.rglob(PEFT_WEIGHTS))


def write_adapter(
    adapter: CanonicalAdapter,
    out: Path,
    *,
    to: Target,
    dtype: Literal["fp16", "bf16", "fp32"] | None = None,
    base_of: BaseOf = _no_base,
) -> CanonicalAdapter:
    """Write ``adapter`` as ``to`` at ``out`` (a folder for ``peft``) with kept metadata and recomputed hash claims,
    and return the written file(s) read back, for the check."""
    from lorahub.adapters import writers

    metadata = _kept_metadata(adapter.metadata)
    config: dict[str, Any] | None = None
    if to == "kohya":
        tensors = _kohya_tensors(adapter, dtype)
    elif to == "diffusers":
        tensors, config = _diffusers_tensors(adapter, dtype)
        metadata = {"format": "pt", **metadata, "lora_adapter_metadata": json.dumps(config, indent=2, sort_keys=True)}
    elif to == "comfyui":
        tensors = writers.comfyui_tensors(adapter, dtype, _encode, _storage)
    elif to == "full":
        tensors = writers.full_tensors(adapter, dtype, _encode, _storage, base_of)
    else:
        writers.write_peft(adapter, out, dtype=dtype, encode=_encode, storage=_storage, metadata=metadata)
        return load_adapter(out, family=adapter.family)
    autov3 = _data_section_sha256(tensors)  # AutoV3 covers the data section only: known before writing
    write(out, tensors, {**metadata, **_hash_claims(adapter.metadata, to, autov3)})
    del tensors
    return load_adapter(out, family=adapter.family)


def _data_section_sha256(tensors: Mapping[str, tuple[str, tuple[int, ...], bytes]]) -> str:
    """SHA-256 of the data section :func:`~lorahub.files.safetensors.write` lays out (tensors in name order)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(tensors[name][2])
    return digest.hexdigest()


# --- lossy -----------------------------------------------------------------------------------------------------------

_CONV_LEAVES = ("conv1", "conv2", "conv", "conv_shortcut", "conv_in", "conv_out")


def _flattened_conv(layer: CanonicalLayer, family: str) -> bool:
    """A conv layer whose factors lost the kernel shape (LoHa/LoKr/GLoRA store [r, in·kh·kw]): without the base
    weight a plain LoRA could only be written with the wrong shape."""
    leaf = layer.name.rpartition(".")[2]
    return family in FAMILIES and leaf in _CONV_LEAVES and all(a.ndim <= 2 for a in layer.tensors.values())


def _plain_lora(
    adapter: CanonicalAdapter, rank: int | None, base_of: BaseOf
) -> tuple[CanonicalAdapter, dict[str, int]]:
    """Layers a plain LoRA cannot hold, replaced by their truncated SVD; the others as they are."""
    from lorahub.adapters.resize import approximate

    layers: dict[str, CanonicalLayer] = {}
    ranks: dict[str, int] = {}
    for name, layer in adapter.layers.items():
        if exact_lora(layer):
            layers[name] = layer
            continue
        if layer.kind in ("norm", "set", "unknown"):
            raise errors.ConversionRefusedError(
                f"{name} is a {layer.kind} layer, which no LoRA can express",
                report=None,
                hint="keep it with --to full (or convert with the tool that wrote it)",
            )
        base = base_of(layer)
        if base is None and _flattened_conv(layer, adapter.family):
            raise errors.LorahubError(
                f"{name} is a convolution whose {layer.kind} factors do not record the kernel size",
                hint="pass --base with the base model so the LoRA can be written with the conv kernel's shape",
            )
        layers[name], resized = approximate(layer, rank=rank, base=base)
        ranks[name] = resized.rank_after
    plain = CanonicalAdapter(
        family=adapter.family,
        layers=layers,
        metadata=dict(adapter.metadata),
        source_format=adapter.source_format,
        unmapped=list(adapter.unmapped),
    )
    return plain, ranks


class _Bases:
    """The ``--base`` checkpoint, read only for the layers whose ΔW needs it (and cached per layer for the check)."""

    def __init__(self, path: str | os.PathLike[str] | None, family: str, *, everything: bool = False) -> None:
        self.file = BaseWeights(path, family) if path is not None else None
        self.everything = everything
        self.cache: dict[str, Array] = {}

    def __call__(self, layer: CanonicalLayer) -> Array | None:
        if self.file is None or not (self.everything or _needs_base(layer)):
            return None
        found = self.cache.get(layer.name)
        if found is None:
            found = self.cache[layer.name] = self.file.weight(layer)
        return found

    def close(self) -> None:
        self.cache.clear()
        if self.file is not None:
            self.file.close()


# --- entry point -------------------------------------------------------------------------------------------------


def convert(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    to: Target,
    dtype: Literal["fp16", "bf16", "fp32"] | None = None,
    check: bool = True,
    lossy: bool = False,
    rank: int | None = None,
    base: str | os.PathLike[str] | None = None,
) -> ConversionReport:
    """Convert ``src`` to ``to`` (``kohya``, ``diffusers``, ``peft``, ``comfyui`` or ``full``) at ``out``, atomically.

    ``src`` may be a safetensors file, a PEFT adapter folder, or a pickled checkpoint that passes the opcode scan.
    ``dtype`` re-stores the factors (fp16, bf16, fp32); by default each module keeps its source dtype. ΔW is always
    computed in float (delta.py). With ``check`` (the default) the written file is read back and every module's ΔW
    compared with the source's; the report gives the errors. Raises :class:`ConversionRefusedError` (a
    ``LorahubError``) before writing anything when the conversion cannot be exact, unless ``lossy``: then kinds a
    plain LoRA cannot hold are converted by truncated SVD at ``rank`` (default: the module's own rank, or 32).
    ``base`` is a safetensors base checkpoint for kinds whose ΔW depends on the base weight (GLoRA, OFT, BOFT, IA3,
    DoRA); only the tensors those layers need are read.
    """
    src_path, out_path = Path(src), Path(out)
    if dtype is not None and dtype not in DTYPES:
        raise errors.LorahubError(f"unknown dtype {dtype!r}", hint=f"choose one of {', '.join(DTYPES)}")
    if rank is not None and rank < 1:
        raise errors.LorahubError(f"--rank must be at least 1, not {rank}")
    if _streamable(src_path, to, lossy=lossy, base=base):
        from lorahub.adapters.streaming import stream_convert

        streamed = stream_convert(src_path, out_path, to=to, dtype=dtype, check=check)
        if streamed is not None:
            _refuse_if_lost(streamed, out_path, to)
            return streamed  # type: ignore[no-any-return]
    adapter = load_adapter(src_path, materialize_fused=lossy)
    _check_convertible(adapter, to, src_path, lossy=lossy)
    bases = _Bases(base, adapter.family)
    try:
        return _convert(adapter, out_path, to=to, dtype=dtype, check=check, lossy=lossy, rank=rank, bases=bases)
    finally:
        bases.close()


def _convert(
    adapter: CanonicalAdapter,
    out_path: Path,
    *,
    to: Target,
    dtype: Literal["fp16", "bf16", "fp32"] | None,
    check: bool,
    lossy: bool,
    rank: int | None,
    bases: _Bases,
) -> ConversionReport:
    prepared, ranks = (adapter, {}) if to == "full" else _plain_lora(adapter, rank, bases) if lossy else (adapter, {})
    written = write_adapter(prepared, out_path, to=to, dtype=dtype, base_of=bases)
    autov3 = None
    if to != "peft":
        autov3 = (
            read_header(out_path).metadata.get("sshs_model_hash")
            or digest_file(out_path, read_header(out_path), check_values=False).hashes.autov3
        )
    report = ConversionReport(
        modules=len(adapter.layers), max_abs_error=math.nan, max_rel_error=math.nan,
        source_format=adapter.source_format, target=to, family=adapter.family, output=str(out_path), autov3=autov3,
        lossy=sorted(ranks), ranks=ranks,
    )  # fmt: skip
    if check:
        report.per_module = _compare(adapter, written, bases)
        report.unmapped = list(written.unmapped) if to != "full" else []
        report.max_abs_error = max((e[0] for e in report.per_module.values()), default=0.0)
        report.max_rel_error = max((e[1] for e in report.per_module.values()), default=0.0)
        _refuse_if_lost(report, out_path, to)
    return report


def _refuse_if_lost(report: ConversionReport, out_path: Path, to: str) -> None:
    """A module missing or reshaped in the output is a bug: remove the output and say so."""
    if math.isfinite(report.max_abs_error) or math.isnan(report.max_abs_error):
        return
    missing = [name for name, (diff, _) in report.per_module.items() if not math.isfinite(diff)]
    for path in _output_files(out_path, to):
        path.unlink(missing_ok=True)
    raise ConversionRefusedError(
        f"the written file lost or reshaped {len(missing)} module(s): {', '.join(missing[:5])}",
        report=report,
        hint="this is a lorahub bug; please report it with the source file's format",
    )


def _streamable(src: Path, to: str, *, lossy: bool, base: object) -> bool:
    """Whether to try the lean path (:mod:`lorahub.adapters.streaming`): an exact conversion of a safetensors file."""
    if lossy or base is not None or to not in ("kohya", "diffusers", "comfyui") or not src.is_file():
        return False
    from lorahub.adapters.sources import _is_safetensors

    with open(src, "rb") as handle:
        return _is_safetensors(handle.read(16))
