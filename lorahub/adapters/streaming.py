"""The lean path of exact LoRA conversion: tensors go from the memory-mapped source to the output without being
widened, and the check reads the output back one module at a time.

Why: the canonical model holds every tensor widened to float32, which for a bf16 SDXL LoRA (≈230 MB) is ≈460 MB,
and a second copy for the read-back doubles it. For the common case (kohya/diffusers-named SD 1.x/2.x/SDXL
LoRA/LoCon files, converted to kohya, diffusers or comfyui) nothing needs widening: a factor keeps its bytes unless
``dtype`` changes it or a Tucker ``mid`` is folded. Names, alphas and the PEFT config come from the same tables and
rules as the canonical path (:mod:`lorahub.adapters.names`, :func:`lorahub.adapters.model.canonical_name`), and the
output is byte-identical to it (tested).

The check is the same statement as the canonical path's: ΔW of every written module equals the source's. When a
written module has the same kind, the same roles with the same dtype, shape and bytes, and the same scale, its ΔW
is identical without computing it; otherwise both modules are widened and ΔW compared through delta.py, one module
at a time. Pages of both maps are released as the passes go, so peak RSS stays near one file size.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import struct
from collections.abc import Callable, Iterator
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lorahub.adapters.canonical import CanonicalLayer
from lorahub.adapters.check import ConversionReport, module_errors
from lorahub.adapters.delta import LOWRANK_KINDS, folded_down, lora_scale, written_alpha
from lorahub.adapters.encoding import DTYPES, encode, hash_claims, kept_metadata
from lorahub.adapters.model import canonical_name
from lorahub.adapters.names import from_canonical
from lorahub.adapters.peft_config import config_path, lora_config
from lorahub.adapters.sources import comfyui_canonical, comfyui_name
from lorahub.files.atomic import atomic_file
from lorahub.files.digests import data_section_digest
from lorahub.files.numeric import scalar, to_float32
from lorahub.files.safetensors import METADATA_KEY, SafetensorsFile
from lorahub.formats import detect
from lorahub.formats.base import Layout, Module
from lorahub.formats.families import detect_family
from lorahub.formats.layers import layer_kind

__all__ = ["STREAM_FAMILIES", "stream_convert"]

STREAM_FAMILIES = ("sd1", "sd2", "sdxl")
_FORMATS = ("kohya", "lycoris", "diffusers")
_TARGETS = ("kohya", "diffusers", "comfyui")
_ROLES = frozenset({"down", "up", "mid", "alpha"})
_RELEASE_BYTES = 32 * 1024 * 1024
Entry = tuple[str, tuple[int, ...], "bytes | memoryview"]


@dataclass
class _Plan:
    module: Module
    canonical: str
    alpha: float | None


def _alpha(container: SafetensorsFile, module: Module) -> float | None:
    info = module.tensors.get("alpha")
    if info is not None:
        stored = scalar(container.raw(info.name), info)
        if stored is not None:
            return stored
    return module.config_alpha


def _plan(container: SafetensorsFile, to: str) -> tuple[str, Layout, list[_Plan]] | None:
    """Module plans when every module is a plain LoRA that maps into an SD 1.x/2.x/SDXL table; else None."""
    metadata = container.metadata
    layout = detect(container.header.tensors, metadata)
    if to not in _TARGETS or layout.format not in _FORMATS or layout.unmatched or not layout.modules:
        return None
    family = detect_family(layout, metadata).family
    if family not in STREAM_FAMILIES or any(module.rslora for module in layout.modules):
        return None  # rsLoRA: the canonical path rewrites alpha where the target has no rsLoRA flag
    plans: list[_Plan] = []
    seen: set[str] = set()
    for module in layout.modules:
        name = canonical_name(family, layout.format, module)
        if name is None or name in seen or layer_kind(module) not in LOWRANK_KINDS:
            return None
        if not set(module.tensors) <= _ROLES or "down" not in module.tensors or "up" not in module.tensors:
            return None
        if any(info.dtype not in ("F16", "BF16", "F32") for info in module.tensors.values()):
            return None
        seen.add(name)
        plans.append(_Plan(module, name, _alpha(container, module)))
    return family, layout, plans


class _Tensors:
    """Output entries: source bytes passed through where the storage dtype is kept, re-encoded otherwise."""

    def __init__(self, container: SafetensorsFile, dtype: str | None) -> None:
        self.container = container
        self.storage = DTYPES[dtype] if dtype is not None else None
        self.entries: dict[str, Entry] = {}

    def add(self, name: str, module: Module, role: str) -> None:
        info = module.tensors[role]
        storage = self.storage or info.dtype
        if storage == info.dtype:
            self.entries[name] = (storage, info.shape, self.container.raw(info.name))
            return
        self.add_array(name, to_float32(self.container.raw(info.name), info), storage)

    def add_array(self, name: str, array: Any, storage: str) -> None:
        self.entries[name] = (storage, tuple(array.shape), encode(array, storage))


def _folded(container: SafetensorsFile, module: Module) -> Any:
    tensors = {r: to_float32(container.raw(i.name), i) for r, i in module.tensors.items() if r in ("down", "mid")}
    return folded_down(tensors)


def _entries(
    container: SafetensorsFile, family: str, plans: list[_Plan], to: str, dtype: str | None
) -> tuple[dict[str, Entry], dict[str, Any] | None]:
    out = _Tensors(container, dtype)
    layers: dict[str, list[tuple[str, CanonicalLayer]]] = {}
    for plan in plans:
        module = plan.module
        rank = module.tensors["down"].shape[0]
        if to == "diffusers":
            name = from_canonical(family, "diffusers", plan.canonical)
            assert name is not None
            if "mid" in module.tensors:
                storage = out.storage or module.tensors["down"].dtype
                out.add_array(f"{name}.lora_A.weight", _folded(container, module), storage)
            else:
                out.add(f"{name}.lora_A.weight", module, "down")
            out.add(f"{name}.lora_B.weight", module, "up")
            component, _, path = name.partition(".")
            shape_only = CanonicalLayer(path, "lora", {"down": np.empty((rank, 0), np.float32)}, plan.alpha, "F32")
            layers.setdefault(component, []).append((config_path(path), shape_only))
            continue
        written = (
            from_canonical(family, "kohya", plan.canonical) if to == "kohya" else comfyui_name(family, plan.canonical)
        )
        assert written is not None
        for role, suffix in (("down", "lora_down.weight"), ("up", "lora_up.weight"), ("mid", "lora_mid.weight")):
            if role in module.tensors:
                out.add(f"{written}.{suffix}", module, role)
        out.entries[f"{written}.alpha"] = ("F32", (), np.float32(written_alpha(plan.alpha, rank)).tobytes())
    if to != "diffusers":
        return out.entries, None
    config: dict[str, Any] = {}
    for component in ("unet", "text_encoder", "text_encoder_2"):
        if component in layers:
            for key, value in lora_config(layers[component]).items():
                config[f"{component}.{key}"] = value
    return out.entries, config


def _sha256(entries: dict[str, Entry], order: list[str]) -> str:
    digest = hashlib.sha256()
    for name in order:
        digest.update(entries[name][2])  # releases the GIL: runs beside the writer thread
    return digest.hexdigest()


def _write_hashed(
    out: Path,
    entries: dict[str, Entry],
    metadata: dict[str, str],
    claims: Callable[[str], dict[str, str]],
    *,
    verify: Callable[[Path], None] | None = None,
) -> str | None:
    """:func:`~lorahub.files.safetensors.write`'s exact bytes, with the hash claims (``claims(autov3)``) in the
    header, in one pass: the data section is hashed in a thread while it is written, and the fixed-length claims are
    filled into the header before the file is fsynced and renamed. Returns AutoV3 (lowercase hex), or None when the
    header states no claim: then nothing is hashed here (the report computes it if asked).

    ``verify`` reads the file back (by its temporary path) while one thread finishes the hash and another fsyncs
    the bytes: the check and the hash are CPU work on two cores, the fsync waits on the disk, so they hide each
    other; only the claims' digits are written after the check (same length: nothing it reads), and the file gets
    its name after all of them. An exception in ``verify`` leaves no output."""
    placeholder = "0" * 64
    header_meta = {**metadata, **claims(placeholder)}
    order = sorted(entries)
    layout: dict[str, Any] = {METADATA_KEY: header_meta} if header_meta else {}
    offset = 0
    for name in order:
        dtype, shape, data = entries[name]
        layout[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    header = json.dumps(layout, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    header += b" " * (-len(header) % 8)
    with ThreadPoolExecutor(max_workers=2) as pool, atomic_file(out) as (handle, temporary):
        hashing = pool.submit(_sha256, entries, order) if claims(placeholder) else None
        handle.write(struct.pack("<Q", len(header)))
        handle.write(header)
        for name in order:
            handle.write(entries[name][2])
        handle.flush()
        syncing = pool.submit(os.fsync, handle.fileno())
        try:
            if verify is not None:
                verify(temporary)
            final = hashing.result() if hashing is not None else None
        finally:
            futures.wait([syncing])  # the file closes when an error leaves the block
        if final is not None:
            handle.seek(8)
            handle.write(_with_claims(header, claims, placeholder, final))
        syncing.result()
        return final


def _with_claims(header: bytes, claims: Callable[[str], dict[str, str]], placeholder: str, final: str) -> bytes:
    """The header with the placeholder's digits in each hash claim replaced by the final digest (same length)."""
    patched = header
    for key, value in claims(final).items():
        fake = json.dumps({key: claims(placeholder)[key]}, separators=(",", ":"), ensure_ascii=False)
        real = json.dumps({key: value}, separators=(",", ":"), ensure_ascii=False)
        fragment, replacement = fake[1:-1].encode(), real[1:-1].encode()
        assert len(fragment) == len(replacement) and patched.count(fragment) == 1
        patched = patched.replace(fragment, replacement)
    return patched


# --- the check ---------------------------------------------------------------------------------------------------


def _written_modules(written: SafetensorsFile, family: str, to: str) -> Iterator[tuple[str | None, Module]]:
    layout = detect(written.header.tensors, written.metadata)
    for module in layout.modules:
        if to == "comfyui":
            yield comfyui_canonical(family, module.name), module
        else:
            yield canonical_name(family, layout.format, module), module


def _same(source: SafetensorsFile, plan: _Plan, written: SafetensorsFile, module: Module) -> bool:
    roles = set(plan.module.tensors) - {"alpha"}
    if roles != set(module.tensors) - {"alpha"}:
        return False
    for role in roles:
        a, b = plan.module.tensors[role], module.tensors[role]
        if (a.dtype, a.shape) != (b.dtype, b.shape):
            return False
        if not _equal_bytes(source.raw(a.name), written.raw(b.name)):
            return False
    rank = plan.module.tensors["down"].shape[0]
    return lora_scale(plan.alpha, rank) == lora_scale(_alpha(written, module), rank)


def _equal_bytes(a: memoryview, b: memoryview) -> bool:
    """Byte equality, compared as 8-byte words where the length allows (8× fewer elements than bytes)."""
    if len(a) != len(b):
        return False
    word = np.uint64 if len(a) % 8 == 0 else np.uint8
    return bool(np.array_equal(np.frombuffer(a, word), np.frombuffer(b, word)))


def _layer(container: SafetensorsFile, module: Module, alpha: float | None) -> CanonicalLayer:
    tensors = {r: to_float32(container.raw(i.name), i) for r, i in module.tensors.items() if r != "alpha"}
    return CanonicalLayer(module.name, layer_kind(module), tensors, alpha, "F32")


def _check(
    source: SafetensorsFile, written: SafetensorsFile, family: str, plans: list[_Plan], to: str
) -> tuple[dict[str, tuple[float, float]], list[str]]:
    by_name = {plan.canonical: plan for plan in plans}
    found: dict[str, tuple[float, float]] = {}
    unmapped: list[str] = []
    done = 0
    for canonical, module in _written_modules(written, family, to):
        plan = by_name.get(canonical or "")
        if plan is None:
            unmapped.append(module.name)
            continue
        if _same(source, plan, written, module):
            found[plan.canonical] = (0.0, 0.0)
        else:
            before = _layer(source, plan.module, plan.alpha)
            found[plan.canonical] = module_errors(before, _layer(written, module, _alpha(written, module)))
        done += sum(i.nbytes for i in module.tensors.values())
        if done > _RELEASE_BYTES:
            source.release_pages()
            written.release_pages()
            done = 0
    per_module = {plan.canonical: found.get(plan.canonical, (math.inf, math.inf)) for plan in plans}
    return per_module, unmapped


def _close(container: SafetensorsFile) -> None:
    """Close the map; if an error left tensor views alive (in its traceback), leave the map to the garbage
    collector rather than hide that error behind a BufferError."""
    with contextlib.suppress(BufferError):
        container.close()


# --- entry point -------------------------------------------------------------------------------------------------


def stream_convert(src: Path, out: Path, *, to: str, dtype: str | None, check: bool) -> ConversionReport | None:
    """The conversion through the lean path, or None when the file needs the canonical one (see the docstring)."""
    with ExitStack() as stack:
        source = SafetensorsFile(src)
        stack.callback(_close, source)
        planned = _plan(source, to)
        if planned is None:
            return None
        family, layout, plans = planned
        metadata = kept_metadata(source.metadata)
        entries, config = _entries(source, family, plans, to, dtype)
        if config is not None:
            metadata = {
                "format": "pt",
                **metadata,
                "lora_adapter_metadata": json.dumps(config, indent=2, sort_keys=True),
            }
        report = ConversionReport(
            modules=len(plans), max_abs_error=math.nan, max_rel_error=math.nan, source_format=layout.format,
            target=to, family=family, output=str(out),
        )  # fmt: skip

        def verify(path: Path) -> None:
            source.release_pages()
            written = SafetensorsFile(path)
            stack.callback(_close, written)
            report.per_module, report.unmapped = _check(source, written, family, plans, to)
            report.max_abs_error = max((e[0] for e in report.per_module.values()), default=0.0)
            report.max_rel_error = max((e[1] for e in report.per_module.values()), default=0.0)

        claims = functools.partial(hash_claims, source.metadata, to)
        autov3 = _write_hashed(out, entries, metadata, claims, verify=verify if check else None)
        report.autov3 = autov3 or functools.partial(data_section_digest, out)
        del entries
        source.release_pages()
        return report
