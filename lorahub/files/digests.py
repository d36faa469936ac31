"""Every digest of a file in one sequential read.

The file is read once, in large chunks; each chunk is fed to the hashers in parallel threads (hashlib, zlib,
blake3 and numpy release the GIL on large buffers), so the wall time is close to that of the slowest hasher.

The lorahub **content digest** identifies an adapter by its tensors alone (docs/concepts/architecture.md, decision 2):
renaming a tensor changes it; editing ``__metadata__`` or re-ordering tensors in the file does not. To compute it in the
same sequential pass, each tensor's bytes are hashed on their own (in file order), and the digest is the SHA-256 of a
manifest in name order::

    lorahub-content-v1\\n
    ["<name>","<dtype>",[<shape>],"<sha256 of the tensor's bytes>"]\\n      (one JSON line per tensor, by name)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import zlib
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import blake3

from lorahub import errors
from lorahub.files.safetensors import Header, TensorInfo, check_path

CHUNK_BYTES = 16 * 1024 * 1024
AUTOV1_OFFSET = 0x100000
AUTOV1_LENGTH = 0x10000
AUTOV1_MIN_FILE = 0x200000  # Civitai reports no AutoV1 for files under 2 MiB
CONTENT_MANIFEST_MAGIC = b"lorahub-content-v1\n"

HASH_CLAIM_KEYS = ("sshs_model_hash", "modelspec.hash_sha256")
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@dataclass(frozen=True)
class Hashes:
    """All identifiers of one file, lowercase hex. ``autov3`` and ``content`` exist only for safetensors; an
    identity-only pass (:func:`digest_file`) leaves ``autov3``, ``blake3`` and ``crc32`` unset."""

    sha256: str
    autov1: str | None
    autov2: str
    autov3: str | None
    blake3: str | None
    crc32: str | None
    content: str | None

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)


@dataclass(frozen=True)
class TensorCheck:
    """What the byte pass learned about one tensor's values."""

    sha256: str
    all_zero: bool
    non_finite: bool


@dataclass(frozen=True)
class Digest:
    hashes: Hashes
    tensors: Mapping[str, TensorCheck] = field(default_factory=dict)


@dataclass(frozen=True)
class Claim:
    """An embedded hash claim checked against the file: ``match``, ``mismatch`` or ``absent``."""

    key: str
    status: str
    value: str | None = None
    expected: str | None = None
    note: str | None = None


def normalise_hex(value: str) -> str:
    value = value.strip().lower()
    return value[2:] if value.startswith("0x") else value


def check_claims(metadata: Mapping[str, str], autov3: str | None) -> list[Claim]:
    """Compare ``sshs_model_hash`` and ``modelspec.hash_sha256`` with the AutoV3 the file actually has."""
    claims = []
    for key in HASH_CLAIM_KEYS:
        raw = metadata.get(key)
        if raw is None:
            claims.append(Claim(key=key, status="absent"))
            continue
        value = normalise_hex(raw)
        status = "match" if value == autov3 else "mismatch"
        note = None
        if status == "mismatch":
            note = (
                "sha256 of empty input: a known ai-toolkit bug (ostris/ai-toolkit#130)"
                if value == EMPTY_SHA256
                else "written before the file was last changed, or by a tool that hashes tensors in its own order"
            )
        claims.append(Claim(key=key, status=status, value=raw, expected=autov3, note=note))
    return claims


def content_digest(entries: Iterable[tuple[TensorInfo, str]]) -> str:
    """The content digest from (tensor, sha256-of-its-bytes) pairs, in any order."""
    manifest = hashlib.sha256(CONTENT_MANIFEST_MAGIC)
    for info, tensor_sha in sorted(entries, key=lambda entry: entry[0].name):
        line = json.dumps(
            [info.name, info.dtype, list(info.shape), tensor_sha], ensure_ascii=False, separators=(",", ":")
        )
        manifest.update(line.encode("utf-8") + b"\n")
    return manifest.hexdigest()


class _Crc32:
    def __init__(self) -> None:
        self.value = 0

    def update(self, data: memoryview) -> None:
        self.value = zlib.crc32(data, self.value)


class _TensorHasher:
    """Hashes and checks tensors as their bytes stream past in file order, one chunk at a time."""

    def __init__(self, header: Header, check_values: bool) -> None:
        self._queue = [t for t in header.in_file_order()]
        self._data_start = header.data_start
        self._check_values = check_values
        self._index = 0
        self._sha = hashlib.sha256()
        self._zero = True
        self._finite = True
        self._carry = b""
        self.results: dict[str, TensorCheck] = {}
        self._finish_empty_tensors()

    def update(self, chunk: memoryview, chunk_start: int) -> None:
        chunk_end = chunk_start + len(chunk)
        while self._index < len(self._queue):
            tensor = self._queue[self._index]
            begin, end = self._data_start + tensor.begin, self._data_start + tensor.end
            if begin >= chunk_end:
                return
            lo, hi = max(begin, chunk_start), min(end, chunk_end)
            if hi > lo:
                self._feed(tensor, chunk[lo - chunk_start : hi - chunk_start])
            if end > chunk_end:
                return
            self._finish(tensor)

    def _feed(self, tensor: TensorInfo, piece: memoryview) -> None:
        self._sha.update(piece)
        if not self._check_values or (not self._zero and not self._finite):
            return
        width = max(1, len(piece) and _element_width(tensor))
        data = self._carry + bytes(piece) if self._carry else piece
        usable = len(data) - len(data) % width
        self._carry = bytes(data[usable:])
        if usable:
            zero, finite = _scan_values(memoryview(data)[:usable], tensor.dtype)
            self._zero &= zero
            self._finite &= finite

    def _finish(self, tensor: TensorInfo) -> None:
        self.results[tensor.name] = TensorCheck(self._sha.hexdigest(), self._zero, not self._finite)
        self._sha, self._zero, self._finite, self._carry = hashlib.sha256(), True, True, b""
        self._index += 1
        self._finish_empty_tensors()

    def _finish_empty_tensors(self) -> None:
        while self._index < len(self._queue) and self._queue[self._index].nbytes == 0:
            self._finish(self._queue[self._index])


_WIDTH = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8, "F8_E4M3": 1, "F8_E5M2": 1}


def _element_width(tensor: TensorInfo) -> int:
    return _WIDTH.get(tensor.dtype, 1)


def _scan_values(data: memoryview, dtype: str) -> tuple[bool, bool]:
    """(all bytes zero, all values finite) for one aligned slice of a tensor.

    numpy is imported here, not with the module: most commands open the catalog and never scan a tensor, and
    numpy is a fifth of a second of every command's start."""
    import numpy as np

    if dtype == "F16":
        bits = np.frombuffer(data, dtype="<u2")
        return not bits.any(), not np.any((bits & 0x7C00) == 0x7C00)
    if dtype == "BF16":
        bits = np.frombuffer(data, dtype="<u2")
        return not bits.any(), not np.any((bits & 0x7F80) == 0x7F80)
    if dtype in ("F32", "F64"):
        values = np.frombuffer(data, dtype="<f4" if dtype == "F32" else "<f8")
        return not values.any(), bool(np.isfinite(values).all())
    raw = np.frombuffer(data, dtype=np.uint8)
    if dtype == "F8_E4M3":
        return not raw.any(), not np.any((raw & 0x7F) == 0x7F)
    if dtype == "F8_E5M2":
        return not raw.any(), not np.any((raw & 0x7C) == 0x7C)
    return not raw.any(), True


def digest_file(
    path: str | os.PathLike[str],
    header: Header | None = None,
    *,
    check_values: bool = True,
    workers: int | None = None,
    sink: Callable[[memoryview], object] | None = None,
    identity_only: bool = False,
) -> Digest:
    """Read ``path`` once and compute every hash; with a safetensors ``header``, also AutoV3, the content digest
    and per-tensor checks (all-zero, NaN/Inf). ``sink`` receives every chunk in order (a blob store copying the file
    in the same read).

    ``identity_only`` computes what identifies the file and nothing else: its SHA-256 and (with a header) the
    content digest, two SHA-256 streams that two cores run side by side. An in-place library scan reads
    terabytes it does not copy, so its speed is the hashing's; AutoV3, BLAKE3, CRC32 and the value checks are
    left to ``inspect`` and ``verify``.
    """
    p = check_path(path)
    full, crc, b3 = hashlib.sha256(), _Crc32(), blake3.blake3()
    data_hash = hashlib.sha256() if header is not None and not identity_only else None
    tensors = _TensorHasher(header, check_values and not identity_only) if header is not None else None
    data_start = header.data_start if header is not None else 0

    def whole_file(chunk: memoryview, _start: int) -> None:
        full.update(chunk)
        if not identity_only:
            crc.update(chunk)

    def blake(chunk: memoryview, _start: int) -> None:
        b3.update(chunk)

    tasks: list[Callable[[memoryview, int], None]] = [whole_file] if identity_only else [whole_file, blake]
    if tensors is not None:
        tasks.append(tensors.update)
    if data_hash is not None:

        def data_section(chunk: memoryview, start: int) -> None:
            skip = max(0, data_start - start)
            if skip < len(chunk):
                data_hash.update(chunk[skip:])

        tasks.append(data_section)
    if sink is not None:
        write = sink

        def copy(chunk: memoryview, _start: int) -> None:
            write(chunk)

        tasks.append(copy)
    workers = workers or min(len(tasks), os.cpu_count() or 1)
    try:
        with open(p, "rb") as handle, ThreadPoolExecutor(max_workers=workers) as pool:
            size = os.fstat(handle.fileno()).st_size
            autov1 = _autov1(handle.fileno(), size)
            _stream(handle, pool, tasks, size)
    except OSError as exc:
        raise errors.FileReadError(f"{p}: {exc.strerror or exc}") from None
    sha = full.hexdigest()
    hashes = Hashes(
        sha256=sha,
        autov1=autov1,
        autov2=sha[:10],
        autov3=data_hash.hexdigest() if data_hash is not None else None,
        blake3=None if identity_only else b3.hexdigest(),
        crc32=None if identity_only else f"{crc.value:08x}",
        content=None,
    )
    if header is None or tensors is None:
        return Digest(hashes=hashes)
    checks = tensors.results
    content = content_digest((info, checks[name].sha256) for name, info in header.tensors.items())
    return Digest(hashes=dataclasses.replace(hashes, content=content), tensors=checks)


def _autov1(fd: int, size: int) -> str | None:
    if size < AUTOV1_MIN_FILE:
        return None
    return hashlib.sha256(os.pread(fd, AUTOV1_LENGTH, AUTOV1_OFFSET)).hexdigest()[:8]


def _stream(handle: Any, pool: ThreadPoolExecutor, tasks: list[Callable[[memoryview, int], None]], size: int) -> None:
    """Double-buffered: the next chunk is read while the hashers work on the current one."""
    if size <= CHUNK_BYTES:  # one chunk: handing it to threads would cost more than hashing it here
        chunk = memoryview(handle.read())
        for task in tasks:
            task(chunk, 0)
        return
    chunk_bytes = CHUNK_BYTES
    buffers = [bytearray(chunk_bytes), bytearray(chunk_bytes)]
    position, which = 0, 0
    count = handle.readinto(buffers[which])
    while count:
        chunk = memoryview(buffers[which])[:count]
        futures = [pool.submit(task, chunk, position) for task in tasks]
        which ^= 1
        next_count = handle.readinto(buffers[which])
        for future in futures:
            future.result()
        position += count
        count = next_count


def data_section_digest(path: str | os.PathLike[str]) -> str:
    """AutoV3 of a safetensors file alone (the SHA-256 of its data section), one sequential read: what a caller
    that needs nothing else pays, instead of :func:`digest_file`'s every hash."""
    from lorahub.files.safetensors import read_header

    p = check_path(path)
    start = read_header(p).data_start
    try:
        with open(p, "rb") as handle:
            handle.seek(start)
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        raise errors.FileReadError(f"{p}: {exc.strerror or exc}") from None


def digest_path(path: str | os.PathLike[str]) -> Hashes:
    """Hashes of any file (safetensors or not) without tensor checks; the content digest only for safetensors."""
    from lorahub.files.safetensors import read_header

    try:
        header: Header | None = read_header(path)
    except errors.InvalidFileError:
        header = None
    return digest_file(Path(path), header, check_values=False).hashes
