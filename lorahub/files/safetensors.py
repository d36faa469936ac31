"""A strict safetensors reader and an atomic writer (through :mod:`lorahub.files.atomic`).

The reader validates the whole header before anything else looks at the file: every later step (digests,
detection, conversion) may then assume offsets are in bounds, tensors do not overlap and sizes add up. It never
trusts the header's numbers to allocate memory; tensors are served lazily from a memory map.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from lorahub import errors
from lorahub.files.atomic import atomic_write
from lorahub.files.dtypes import DTYPE_BITS

MAX_HEADER_BYTES = 100 * 1024 * 1024
"""Upper bound on the JSON header; safetensors itself refuses more than 100 MB."""

METADATA_KEY = "__metadata__"


@dataclass(frozen=True)
class TensorInfo:
    """One tensor entry of the header. ``begin``/``end`` are offsets inside the data section."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True)
class Header:
    """The validated header of a safetensors file.

    ``tensors`` keeps the header's own order; ``data_start`` is the absolute offset of the data section
    (8 + header length), so tensor ``t`` lives at ``data_start + t.begin`` in the file.
    """

    header_length: int
    file_size: int
    tensors: Mapping[str, TensorInfo]
    metadata: Mapping[str, str] = field(default_factory=dict)
    unreferenced_bytes: int = 0
    """Bytes of the data section that no tensor covers. The safetensors library refuses such files; data can
    hide there, so inspect reports it."""

    @property
    def data_start(self) -> int:
        return 8 + self.header_length

    @property
    def data_length(self) -> int:
        return self.file_size - self.data_start

    def in_file_order(self) -> list[TensorInfo]:
        return sorted(self.tensors.values(), key=lambda t: (t.begin, t.end))


def parse_header(prefix: bytes, file_size: int, *, source: str = "file") -> Header:
    """Validate a header given the file's first bytes (at least 8 + N of them) and its size.

    Split from I/O so the fuzz tests can drive it directly with any bytes.
    """
    if file_size == 0:
        raise errors.EmptyFileError(f"{source} is empty (0 bytes)")
    if file_size < 8 or len(prefix) < 8:
        raise errors.TruncatedFileError(
            f"{source} has {file_size} bytes, fewer than the 8 of a safetensors header length"
        )
    (header_length,) = struct.unpack("<Q", prefix[:8])
    if header_length > MAX_HEADER_BYTES:
        raise errors.HeaderTooLargeError(
            f"{source} declares a {header_length:,}-byte header; the limit is {MAX_HEADER_BYTES:,}",
            hint="This is not a safetensors file, or it is damaged. Pickled files should be named .ckpt/.pt/.bin.",
        )
    if 8 + header_length > file_size or len(prefix) < 8 + header_length:
        raise errors.TruncatedFileError(
            f"{source} declares a {header_length:,}-byte header but has only {file_size - 8:,} bytes after the length"
        )
    raw = prefix[8 : 8 + header_length]
    try:
        document = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except _DuplicateKeyError as exc:
        raise errors.HeaderSchemaError(
            f"{source}: the header names {str(exc)[:80]!r} twice",
            hint="Readers disagree on which entry wins; this file may be crafted to show different tensors to each.",
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise errors.HeaderJSONError(
            f"{source}: the safetensors header is not UTF-8 JSON ({exc.__class__.__name__}: {str(exc)[:120]})",
            hint="The file is damaged or not a safetensors file. Fetch it again.",
        ) from None
    if not isinstance(document, dict):
        raise errors.HeaderSchemaError(
            f"{source}: the safetensors header is a JSON {type(document).__name__}, not an object",
            hint="The file is damaged or not a safetensors file.",
        )
    metadata = _parse_metadata(document.pop(METADATA_KEY, None), source)
    data_length = file_size - 8 - header_length
    tensors = {name: _parse_entry(name, entry, data_length, source) for name, entry in document.items()}
    covered = _covered_bytes(tensors.values(), source)
    return Header(
        header_length=header_length,
        file_size=file_size,
        tensors=tensors,
        metadata=metadata,
        unreferenced_bytes=data_length - covered,
    )


class _DuplicateKeyError(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """The object, refusing a key given twice. Built by ``dict`` (C) and compared by length: a loop in Python over
    every pair was most of a large header's parse (thousands of tensor entries), read at every load and convert."""
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKeyError(key)
            seen.add(key)
    return result


def _parse_metadata(value: Any, source: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise errors.MetadataError(
            f"{source}: __metadata__ must map strings to strings",
            hint="Some tool wrote structured metadata without encoding it as a string. Other readers will refuse it.",
        )
    return value


def _parse_entry(name: str, entry: Any, data_length: int, source: str) -> TensorInfo:
    where = f"{source}: tensor {name!r}"
    if not isinstance(entry, dict):
        raise errors.HeaderSchemaError(f"{where} is described by a {type(entry).__name__}, not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str):
        raise errors.HeaderSchemaError(f"{where} has no dtype")
    if dtype not in DTYPE_BITS:
        raise errors.UnknownDtypeError(f"{where} has unknown dtype {dtype[:40]!r}")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise errors.HeaderSchemaError(f"{where} has a shape that is not a list of non-negative integers")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets):
        raise errors.TensorOffsetsError(f"{where} has data_offsets that are not two non-negative integers")
    begin, end = offsets
    if begin > end or end > data_length:
        raise errors.TensorOffsetsError(
            f"{where} spans bytes {begin}..{end} of a {data_length:,}-byte data section",
            hint="The file is truncated or its header is damaged. Fetch it again.",
        )
    bits = math.prod(shape) * DTYPE_BITS[dtype]
    if bits % 8 or bits // 8 != end - begin:
        raise errors.TensorSizeError(
            f"{where}: shape {shape} of {dtype} needs {bits / 8:g} bytes but the offsets give {end - begin}",
            hint="The header is damaged. Fetch the file again.",
        )
    return TensorInfo(name=name, dtype=dtype, shape=tuple(shape), begin=begin, end=end)


def _is_count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _covered_bytes(tensors: Any, source: str) -> int:
    """Refuse tensors that share bytes; return how many bytes the tensors cover."""
    previous: TensorInfo | None = None
    covered = 0
    for tensor in sorted(tensors, key=lambda t: (t.begin, t.end)):
        if tensor.begin == tensor.end:
            continue
        if previous is not None and tensor.begin < previous.end:
            raise errors.TensorOverlapError(
                f"{source}: tensors {previous.name!r} and {tensor.name!r} share bytes",
                hint="Overlapping tensors are a sign of a crafted or damaged file; do not load it elsewhere either.",
            )
        covered += tensor.nbytes
        previous = tensor
    return covered


def looks_like_safetensors(prefix: bytes) -> bool:
    """Whether a file's first bytes say "safetensors": a u64 header length of plausible size, then ``{``."""
    return len(prefix) >= 9 and prefix[8:9] == b"{" and int.from_bytes(prefix[:8], "little") < 2**40


def check_path(path: str | os.PathLike[str]) -> Path:
    """Resolve a user-given path to a regular file, or raise the error that says why not."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise errors.PathNotFoundError(f"{p}: no such file") from None
    except OSError as exc:
        raise errors.FileReadError(f"{p}: {exc.strerror}") from None
    if p.is_dir():
        raise errors.NotAFileError(f"{p} is a directory")
    if not p.is_file():
        raise errors.NotAFileError(f"{p} is not a regular file")
    if st.st_size == 0:
        raise errors.EmptyFileError(f"{p} is empty (0 bytes)")
    return p


def read_header(path: str | os.PathLike[str]) -> Header:
    """Read and validate only the header: cheap, whatever the file's size."""
    p = check_path(path)
    with open(p, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        prefix = handle.read(8)
        if len(prefix) == 8:
            (n,) = struct.unpack("<Q", prefix)
            if n <= MAX_HEADER_BYTES and 8 + n <= size:
                prefix += handle.read(n)
    return parse_header(prefix, size, source=str(p))


class SafetensorsFile:
    """A validated safetensors file with lazy, memory-mapped tensor access.

    Use as a context manager; tensors returned by :meth:`array` are views into the map and must not outlive it.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = check_path(path)
        self.header = read_header(self.path)
        with open(self.path, "rb") as handle:  # the map keeps its own reference to the file
            self._map: mmap.mmap | None = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None

    @property
    def metadata(self) -> Mapping[str, str]:
        return self.header.metadata

    def keys(self) -> list[str]:
        return list(self.header.tensors)

    def release_pages(self) -> None:
        """Let the kernel drop this map's resident pages (``MADV_DONTNEED``; they are re-read from the page cache
        when touched again), so a pass over a large file does not keep it all in the process's RSS."""
        if self._map is not None and hasattr(mmap, "MADV_DONTNEED") and len(self._map):
            self._map.madvise(mmap.MADV_DONTNEED)

    def raw(self, name: str) -> memoryview:
        """The tensor's bytes, straight from the map (no copy)."""
        if self._map is None:
            raise ValueError("file is closed")
        info = self.header.tensors[name]
        start = self.header.data_start + info.begin
        return memoryview(self._map)[start : start + info.nbytes]

    def array(self, name: str) -> Any:
        """The tensor as a numpy array view (float types widened only by :func:`lorahub.files.numeric.to_float32`)."""
        from lorahub.files.numeric import as_numpy

        return as_numpy(self.raw(name), self.header.tensors[name])

    def iter_tensors(self) -> Iterator[TensorInfo]:
        return iter(self.header.tensors.values())

    def release(self, begin: int, end: int) -> None:
        """Drop the mapped pages of data-section bytes ``[begin, end)`` from this process's resident set.

        Why: pages of a file map that were read stay resident (and count in RSS) until the kernel needs them, so a
        streaming pass over a 5 GB file would otherwise "use" 5 GB. The bytes stay in the page cache; reading them
        again faults them back in. No-op where ``madvise`` is unavailable.
        """
        if self._map is None or end <= begin or not hasattr(mmap, "MADV_DONTNEED"):
            return
        page = mmap.PAGESIZE
        start = (self.header.data_start + begin) // page * page
        stop = min(self.header.data_start + end, len(self._map))
        self._map.madvise(mmap.MADV_DONTNEED, start, stop - start)


def write(
    path: str | os.PathLike[str],
    tensors: Mapping[str, tuple[str, tuple[int, ...], bytes | memoryview]],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write a safetensors file atomically: temp file in the same directory, fsync, rename, fsync the directory.

    ``tensors`` maps a name to ``(dtype, shape, raw little-endian bytes)``. Tensors are laid out in name order,
    header padded to 8 bytes, as safetensors does. A crash leaves either the old file or the new one.
    """
    entries: dict[str, Any] = {}
    if metadata:
        entries[METADATA_KEY] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    order = sorted(tensors)
    for name in order:
        dtype, shape, data = tensors[name]
        nbytes = len(memoryview(data).cast("B"))
        entries[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header = json.dumps(entries, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    header += b" " * (-len(header) % 8)
    chunks: list[bytes | memoryview] = [struct.pack("<Q", len(header)), header]
    chunks += [tensors[name][2] for name in order]
    atomic_write(Path(path), chunks)
