"""Bake adapters into a base checkpoint: ``W ← W + Σ wᵢ·ΔWᵢ``, streamed tensor by tensor.

Why streaming: a full SDXL or FLUX checkpoint does not fit comfortably in RAM next to a copy of itself, and the
naive "load everything, merge, save" needs about twice the model. Here the base is memory-mapped and read once,
in file order; each output tensor is computed alone (float32 accumulation, float64 for F64 bases), narrowed to the
base tensor's own dtype and written; the mapped pages are dropped as soon as a tensor is done. Peak memory is one
tensor's worth (plus the adapters), whatever the base's size.

The output header is known before any data (same tensors, same shapes and dtypes), so it is written first; the
base's SHA-256, which the metadata records, is computed during the same pass and patched into the header at the
end (the hex digest has a fixed length, so the header keeps its size). The whole output goes through a temporary
file and a rename: a refusal or a crash leaves nothing behind.

Refusals come before the first byte is written: an adapter of another family, a layer that lands on no base tensor
(never a silent partial bake), a ΔW whose size does not fit its tensor, a base tensor type that cannot be written
back exactly (fp8, integer).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import queue
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from lorahub import errors
from lorahub.adapters.canonical import CanonicalAdapter, CanonicalLayer
from lorahub.adapters.delta import needs_base
from lorahub.files.atomic import atomic_file
from lorahub.files.bases import cache_identity
from lorahub.files.folders import cached_sha256
from lorahub.files.safetensors import METADATA_KEY, SafetensorsFile, TensorInfo, read_header
from lorahub.merge.arith import WRITABLE, Arithmetic, Backend, backend, numel
from lorahub.merge.layouts import BaseLayout, Target, detect_layout

__all__ = ["BAKE_METADATA_KEY", "AdapterSource", "BakeReport", "bake", "base_names", "check_bake"]

Array = npt.NDArray[Any]

BAKE_METADATA_KEY = "lorahub.bake"
"""The ``__metadata__`` entry that records what was baked: base digest, adapters, weights (JSON)."""
BAKE_FORMAT = "lorahub.bake/v1"
STALE_METADATA = frozenset({"sshs_model_hash", "sshs_legacy_hash", "modelspec.hash_sha256"})
"""Base metadata that states a hash of the base's tensors: wrong for the baked file, so it is not copied."""
_BIAS_ROLES = frozenset({"diff_b", "up_bias", "b_norm"})
_COPY_CHUNK = 64 * 1024 * 1024
_UNMATCHED_SHOWN = 20
_WRITEBACK = 256 * 1024 * 1024
_PLACEHOLDER = "0" * 64


@dataclass(frozen=True)
class AdapterSource:
    """Where an adapter came from, for the output's metadata: catalogued name, version and content digest."""

    name: str | None = None
    version: int | None = None
    content_digest: str | None = None


@dataclass
class BakeReport:
    """What a bake did; ``as_dict`` is the JSON of ``lorahub bake --json``. ``base`` names the base as records do: its
    repo id when it lies in the Hugging Face cache (``revision`` then says which commit), else its path; ``path`` is
    where it was read. A pipeline bake lists each baked component file in ``components`` (its layout, tensor counts
    and base and output digests; its own digests are then over the pipeline folders, :mod:`lorahub.files.folders`)
    and in ``skipped_files`` the weight files of baked components it left out (formats bake cannot write)."""

    base: str
    path: str
    out: str
    layout: str
    family: str
    base_sha256: str
    output_sha256: str
    tensors: int
    changed_tensors: int
    layers: int
    adapters: list[dict[str, Any]]
    skipped_layers: list[str] = field(default_factory=list)
    engine: str = "numpy"
    seconds: float = 0.0
    revision: str | None = None
    components: list[dict[str, Any]] = field(default_factory=list)
    skipped_files: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "revision": self.revision,
            "path": self.path,
            "out": self.out,
            "layout": self.layout,
            "family": self.family,
            "base_sha256": self.base_sha256,
            "output_sha256": self.output_sha256,
            "tensors": self.tensors,
            "changed_tensors": self.changed_tensors,
            "layers": self.layers,
            "adapters": self.adapters,
            "skipped_layers": self.skipped_layers,
            "skipped_files": self.skipped_files,
            "components": self.components,
            "engine": self.engine,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class _Contribution:
    """One adapter layer's share of one base tensor."""

    layer: CanonicalLayer
    weight: float
    target: Target


@dataclass
class _Plan:
    by_tensor: dict[str, list[_Contribution]] = field(default_factory=dict)
    bias_layers: list[_Contribution] = field(default_factory=list)
    layers: int = 0
    skipped: list[str] = field(default_factory=list)
    per_adapter: list[int] = field(default_factory=list)


# --- planning (nothing is written until all of this passes) --------------------------------------------------------


def _check_family(layout: BaseLayout, adapters: Sequence[tuple[CanonicalAdapter, float]], base: Path) -> str:
    for index, (adapter, _) in enumerate(adapters):
        if adapter.family not in layout.families:
            expected = " or ".join(sorted(layout.families))
            raise errors.FamilyMismatchError(
                f"adapter {index + 1} is for {adapter.family}, but {base.name} is a {expected} base ({layout.name})"
            )
    families = sorted({a.family for a, _ in adapters}) or sorted(layout.families)
    return families[0] if len(families) == 1 else "+".join(families)


def _expected_size(layer: CanonicalLayer) -> int | None:
    """ΔW's element count for factorised LoRA kinds (known without computing it); None for other kinds."""
    down, up = layer.tensors.get("down"), layer.tensors.get("up")
    if down is None or up is None or "mid" in layer.tensors:
        return None
    return int(up.shape[0]) * math.prod(down.shape[1:])


def _region_shape(info: TensorInfo, target: Target) -> tuple[int, ...]:
    shape = info.shape
    if target.rows is not None:
        part = target.row_slice(shape[0])
        shape = (part.stop - part.start, *shape[1:])
    if target.transpose:
        shape = tuple(reversed(shape))
    return shape


def _check_target(layer: CanonicalLayer, target: Target, tensors: Mapping[str, TensorInfo]) -> str | None:
    """Why this layer cannot be baked into its target (None: it can)."""
    info = tensors[target.weight]
    if info.dtype not in WRITABLE:
        return f"{layer.name}: base tensor {info.name} is {info.dtype}, which bake cannot write back exactly"
    if target.rows is not None and info.shape[0] % target.rows[2]:
        return f"{layer.name}: {info.name} rows ({info.shape[0]}) do not split into {target.rows[2]} parts"
    size = _expected_size(layer)
    region = math.prod(_region_shape(info, target))
    if size is not None and size != region:
        return f"{layer.name}: ΔW has {size} elements but {info.name} (shape {list(info.shape)}) needs {region}"
    if _BIAS_ROLES & set(layer.tensors) and target.bias is None:
        return f"{layer.name}: the layer changes a bias, but the base has no bias for {info.name}"
    return None


def _plan(
    layout: BaseLayout,
    adapters: Sequence[tuple[CanonicalAdapter, float]],
    tensors: Mapping[str, TensorInfo],
    components: Sequence[str] | None,
) -> _Plan:
    plan = _Plan()
    unmatched: list[str] = []
    problems: list[str] = []
    for adapter, weight in adapters:
        count = 0
        for name, layer in adapter.layers.items():
            if components is not None and name.partition(".")[0] not in components:
                plan.skipped.append(name)
                continue
            target = layout.resolve(name)
            if target is None:
                unmatched.append(name if name == layer.source_name else f"{name} ({layer.source_name})")
                continue
            problem = _check_target(layer, target, tensors)
            if problem is not None:
                problems.append(problem)
                continue
            contribution = _Contribution(layer, weight, target)
            plan.by_tensor.setdefault(target.weight, []).append(contribution)
            if _BIAS_ROLES & set(layer.tensors):
                plan.bias_layers.append(contribution)
            count += 1
        plan.per_adapter.append(count)
        plan.layers += count
    if unmatched:
        shown = ", ".join(unmatched[:_UNMATCHED_SHOWN])
        more = f" and {len(unmatched) - _UNMATCHED_SHOWN} more" if len(unmatched) > _UNMATCHED_SHOWN else ""
        raise errors.UnmatchedLayersError(
            f"{len(unmatched)} adapter layer(s) match no tensor of the base ({layout.name}): {shown}{more}"
        )
    if problems:
        raise errors.LayersUnfitError(
            f"{len(problems)} adapter layer(s) do not fit the base: " + "; ".join(problems[:_UNMATCHED_SHOWN]),
            hint="The adapter was trained for a different model (or a different size of it).",
        )
    return plan


# --- the arithmetic ------------------------------------------------------------------------------------------------


def _region(array: Any, target: Target) -> Any:
    """The view of a base tensor (numpy or torch) that a layer's ΔW, in the layer's orientation, adds to."""
    view = array[target.row_slice(array.shape[0])] if target.rows is not None else array
    return view.T if target.transpose else view


def _needs_original(contribution: _Contribution) -> bool:
    return needs_base(contribution.layer.kind, contribution.layer.tensors)


def _delta(contribution: _Contribution, region: Array) -> tuple[Array, Array | None]:
    """ΔW (and bias ΔW) of one layer from :mod:`lorahub.adapters.delta`; kinds that need it get the base region."""
    layer = contribution.layer
    base = region if _needs_original(contribution) else None
    delta = layer.delta(base)
    if delta.weight.size != region.size:
        raise errors.LayersUnfitError(
            f"{layer.name}: ΔW has shape {list(delta.weight.shape)}, its base tensor region {list(region.shape)}",
            hint="The adapter was trained for a different model (or a different size of it).",
        )
    return delta.weight.reshape(region.shape), delta.bias


def _merged(
    arith: Arithmetic, container: SafetensorsFile, info: TensorInfo, contributions: Sequence[_Contribution]
) -> Any:
    """``W + Σ wᵢ·ΔWᵢ`` for one base tensor; every ΔW is taken against the original W. Plain LoRA/LoCon layers are
    applied from their factors (one float32 product); every other kind through ΔW."""
    original = arith.widen(container.raw(info.name), info)
    result = arith.copy(original) if any(_needs_original(c) for c in contributions) else original
    for contribution in contributions:
        layer = contribution.layer
        region = _region(result, contribution.target)
        factors = layer.factors()
        swap = contribution.target.swap_halves
        if factors is not None and factors[0].shape[0] * factors[1].shape[1] == numel(region):
            up, down, scale = factors
            arith.add_lora(region, _swapped_halves(up) if swap else up, down, contribution.weight * scale)
            continue
        base = arith.to_numpy(_region(original, contribution.target))
        weight, _ = _delta(contribution, _swapped_halves(base) if swap else base)
        weight = _swapped_halves(weight) if swap else weight
        arith.add(region, (contribution.weight * weight).astype(np.float32, copy=False))
    return result


def _swapped_halves(array: Array) -> Array:
    """The two row halves exchanged: ``[scale, shift]`` ↔ ``[shift, scale]`` (its own inverse)."""
    half = array.shape[0] // 2
    return np.concatenate([array[half:], array[:half]])


def _bias_deltas(arith: Arithmetic, container: SafetensorsFile, plan: _Plan) -> dict[str, Array]:
    """Σ wᵢ·Δbᵢ per base bias tensor, computed up front: a bias may come before its weight in the file."""
    sums: dict[str, Array] = {}
    tensors = container.header.tensors
    for contribution in plan.bias_layers:
        info = tensors[contribution.target.weight]
        weight = arith.to_numpy(arith.widen(container.raw(info.name), info))
        region = _region(weight, contribution.target)
        _, bias = _delta(contribution, _swapped_halves(region) if contribution.target.swap_halves else region)
        container.release(info.begin, info.end)
        key = contribution.target.bias
        if bias is None or key is None:
            continue
        bias_info = tensors[key]
        part = (contribution.weight * bias.astype(np.float64)).reshape(-1)
        if contribution.target.swap_halves:
            part = _swapped_halves(part)
        if contribution.target.rows is not None:
            full = np.zeros(bias_info.numel, dtype=np.float64)
            full[contribution.target.row_slice(bias_info.numel)] = part
            part = full
        if part.size != bias_info.numel:
            raise errors.LayersUnfitError(f"{contribution.layer.name}: bias ΔW does not fit {key} {bias_info.shape}")
        sums[key] = sums.get(key, np.zeros(bias_info.numel, dtype=np.float64)) + part
    return sums


# --- writing -------------------------------------------------------------------------------------------------------


def _output_header(order: Sequence[TensorInfo], metadata: Mapping[str, str]) -> bytes:
    entries: dict[str, Any] = {METADATA_KEY: dict(metadata)}
    offset = 0
    for info in order:
        entries[info.name] = {
            "dtype": info.dtype,
            "shape": list(info.shape),
            "data_offsets": [offset, offset + info.nbytes],
        }
        offset += info.nbytes
    raw = json.dumps(entries, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def _output_metadata(base: Mapping[str, str], record: Mapping[str, Any]) -> dict[str, str]:
    kept = {k: v for k, v in base.items() if k not in STALE_METADATA and k != BAKE_METADATA_KEY}
    kept[BAKE_METADATA_KEY] = json.dumps(record, sort_keys=True, separators=(",", ":"))
    return kept


class _Output:
    """The output side of the pass, on three threads so that the main thread only computes:

    * the writer writes the header (with a placeholder base digest of the same length) and then each tensor's bytes
      as the main thread hands them over through a bounded queue, and starts write-back of what is hashed already;
    * the base hasher reads the base file once (the page cache it fills serves the main thread's map), unless it is
      a Hugging Face cache blob, whose name is its SHA-256;
    * the output hasher, once the base digest is known, hashes the final header and then reads the data back from
      the temporary file as it grows.

    ``finish`` writes the final header over the placeholder. Any thread's error is raised in the main thread."""

    def __init__(self, out: BinaryIO, tmp: Path, base: Path, header_for: Callable[[str], bytes]) -> None:
        self._out, self._tmp, self._base, self._header_for = out, tmp, base, header_for
        self._header_length = len(header_for(_PLACEHOLDER))
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=3)
        self._cond = threading.Condition()
        self._written = 0
        self._hashed = 0
        self._flushed = 0
        self._closed = False
        self._aborted = False
        self._failed: list[BaseException] = []
        self.base_sha256 = ""
        self.output_sha256 = ""
        self._base_thread = self._start(self._hash_base, "bake-base-sha256")
        self._threads = [
            self._base_thread,
            self._start(self._write, "bake-writer"),
            self._start(self._hash_output, "bake-output-sha256"),
        ]

    def _start(self, target: Callable[[], None], name: str) -> threading.Thread:
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # handed to the main thread
                with self._cond:
                    self._failed.append(exc)
                    self._aborted = self._closed = True
                    self._cond.notify_all()

        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        return thread

    # --- main thread ---

    def put(self, data: bytes) -> None:
        while True:
            self._raise()
            try:
                self._queue.put(data, timeout=0.2)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        self._queue.put(None)
        for thread in self._threads:
            thread.join()
        self._raise()
        self._out.seek(0)
        self._out.write(self._header_for(self.base_sha256))
        self._out.seek(0, os.SEEK_END)

    def abort(self) -> None:
        with self._cond:
            self._aborted = self._closed = True
            self._cond.notify_all()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put(None)
        for thread in self._threads:
            thread.join()

    def _raise(self) -> None:
        if self._failed:
            raise self._failed[0]

    # --- threads ---

    def _write(self) -> None:
        self._out.write(self._header_for(_PLACEHOLDER))
        self._advance(self._header_length)
        while (data := self._queue.get()) is not None and not self._aborted:
            self._out.write(data)
            self._advance(len(data))
            if self._hashed - self._flushed >= _WRITEBACK and hasattr(os, "posix_fadvise"):
                # write-back of bytes both written and hashed: the final fsync then has little left to wait for
                os.posix_fadvise(
                    self._out.fileno(), self._flushed, self._hashed - self._flushed, os.POSIX_FADV_DONTNEED
                )
                self._flushed = self._hashed
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _advance(self, count: int) -> None:
        self._out.flush()
        with self._cond:
            self._written += count
            self._cond.notify_all()

    def _hash_base(self) -> None:
        if known := cached_sha256(self._base):  # a cache blob's name is its SHA-256
            self.base_sha256 = known
            return
        digest = hashlib.sha256()
        with open(self._base, "rb") as handle:
            while chunk := handle.read(_COPY_CHUNK):
                if self._aborted:
                    return
                digest.update(chunk)
        self.base_sha256 = digest.hexdigest()

    def _hash_output(self) -> None:
        self._base_thread.join()
        if not self.base_sha256:
            return
        digest = hashlib.sha256(self._header_for(self.base_sha256))
        position = self._header_length
        fd = os.open(self._tmp, os.O_RDONLY)
        try:
            while True:
                with self._cond:
                    while self._written <= position and not self._closed:
                        self._cond.wait()
                    available, closed = self._written, self._closed
                if self._aborted or (closed and position >= available):
                    break
                while position < available:
                    chunk = os.pread(fd, min(_COPY_CHUNK, available - position), position)
                    digest.update(chunk)
                    position += len(chunk)
                    self._hashed = position
        finally:
            os.close(fd)
        self.output_sha256 = digest.hexdigest()


@dataclass
class _Stream:
    """The main thread's pass over the base: every tensor in file order is copied, or merged and narrowed, and
    handed to the output; its mapped pages are dropped as soon as it is done."""

    arith: Arithmetic
    container: SafetensorsFile
    plan: _Plan
    biases: dict[str, Array]

    def run(self, output: _Output, order: Sequence[TensorInfo]) -> None:
        for info in order:
            if info.name in self.plan.by_tensor:
                merged = _merged(self.arith, self.container, info, self.plan.by_tensor[info.name])
                output.put(self.arith.encode(merged, info.dtype))
            elif info.name in self.biases:
                array = self.arith.widen(self.container.raw(info.name), info).reshape(-1)
                self.arith.add(array, self.biases[info.name].astype(np.float32))
                output.put(self.arith.encode(array.reshape(info.shape), info.dtype))
            else:
                raw = self.container.raw(info.name)
                for start in range(0, info.nbytes, _COPY_CHUNK):
                    output.put(bytes(raw[start : start + _COPY_CHUNK]))
                    self.container.release(info.begin + start, info.begin + start + _COPY_CHUNK)
                raw.release()
            self.container.release(info.begin, info.end)


def _adapter_records(
    adapters: Sequence[tuple[CanonicalAdapter, float]], sources: Sequence[AdapterSource] | None, counts: list[int]
) -> list[dict[str, Any]]:
    records = []
    for index, (adapter, weight) in enumerate(adapters):
        source = sources[index] if sources is not None else AdapterSource()
        records.append(
            {
                "name": source.name,
                "version": source.version,
                "content_digest": source.content_digest,
                "weight": weight,
                "family": adapter.family,
                "format": adapter.source_format,
                "layers": counts[index],
            }
        )
    return records


def base_names(base: Path) -> dict[str, Any]:
    """A report's ``base``, ``path`` and ``revision`` (see :class:`BakeReport`)."""
    repo_id, revision = cache_identity(base)
    return {"base": repo_id or str(base), "path": str(base), "revision": revision}


def _prepare(
    tensors: Mapping[str, TensorInfo],
    base: Path,
    adapters: Sequence[tuple[CanonicalAdapter, float]],
    components: Sequence[str] | None,
    layout: BaseLayout | None,
) -> tuple[BaseLayout, str, _Plan]:
    found = layout or detect_layout(tensors, base)
    return found, _check_family(found, adapters, base), _plan(found, adapters, tensors, components)


def check_bake(
    base_path: Path, adapters: Sequence[tuple[CanonicalAdapter, float]], components: Sequence[str] | None = None
) -> None:
    """Raise what :func:`bake` would refuse (family, layers that land nowhere or do not fit), from the base file's
    header alone: a pipeline bake checks every component before it writes the first."""
    _prepare(read_header(base_path).tensors, base_path, adapters, components, None)


def bake(
    base_path: str | os.PathLike[str],
    adapters: Sequence[tuple[CanonicalAdapter, float]],
    out_path: str | os.PathLike[str],
    *,
    sources: Sequence[AdapterSource] | None = None,
    components: Sequence[str] | None = None,
    layout: BaseLayout | None = None,
    engine: Backend = "auto",
) -> BakeReport:
    """Write ``out_path``: the base with every adapter layer merged in (``W + Σ wᵢ·ΔWᵢ``), dtypes kept.

    ``sources`` (one per adapter) name the adapters in the output metadata. ``components`` bakes only the layers
    of those components (``unet``, ``text_encoder`` …) and lists the others as skipped — for a diffusers component
    file, whose base holds one component; without it every layer must land on a base tensor. ``layout`` overrides
    detection; ``engine`` picks the arithmetic backend (torch when installed, else numpy). Raises, and writes
    nothing, on a family mismatch or a layer that lands nowhere.
    """
    started = time.perf_counter()
    base, out = Path(base_path), Path(out_path)
    if not adapters:
        raise errors.MergeOptionError(
            "nothing to bake: name at least one adapter", hint="Name an adapter: lorahub bake BASE A:1.0 --out OUT"
        )
    if sources is not None and len(sources) != len(adapters):
        raise ValueError("sources must name every adapter")
    if out.resolve() == base.resolve():
        raise errors.MergeOptionError(f"{out} is the base itself", hint="Write the baked checkpoint to a new file.")
    if out.is_dir():
        raise errors.MergeOptionError(
            f"{out} is a folder; a checkpoint file is baked into a file", hint="Give the baked checkpoint's file name."
        )
    arith = backend(engine)
    with SafetensorsFile(base) as container:
        found, family, plan = _prepare(container.header.tensors, base, adapters, components, layout)
        biases = _bias_deltas(arith, container, plan)
        record: dict[str, Any] = {
            "format": BAKE_FORMAT,
            "base": {"file": base.name, "sha256": _PLACEHOLDER, "layout": found.name},
            "adapters": _adapter_records(adapters, sources, plan.per_adapter),
        }
        order = container.header.in_file_order()
        base_metadata = container.metadata

        def header_for(digest: str) -> bytes:
            record["base"]["sha256"] = digest
            return _output_header(order, _output_metadata(base_metadata, record))

        with atomic_file(out) as (handle, tmp):
            output = _Output(handle, tmp, base, header_for)
            try:
                _Stream(arith, container, plan, biases).run(output, order)
                output.finish()
            except BaseException:
                output.abort()
                raise
    return BakeReport(
        **base_names(base),
        out=str(out),
        layout=found.name,
        family=family,
        base_sha256=output.base_sha256,
        output_sha256=output.output_sha256,
        tensors=len(order),
        changed_tensors=len(plan.by_tensor) + len(biases),
        layers=plan.layers,
        adapters=record["adapters"],
        skipped_layers=plan.skipped,
        engine=arith.name,
        seconds=time.perf_counter() - started,
    )
