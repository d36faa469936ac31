"""Scan pickled checkpoints (.ckpt/.pt/.pth/.bin) without ever unpickling them.

Loading a pickle runs whatever code it names, so this module never calls ``pickle.load``, ``torch.load`` or an
``Unpickler`` on a file. Instead it walks the opcodes itself (the same grammar as :mod:`pickletools`, with
:data:`pickletools.opcodes` as the opcode table) and simulates the unpickler's stack and memo symbolically: no
object is ever built, no module imported. That is enough to know every global a pickle would import (``GLOBAL``,
``STACK_GLOBAL`` with its two strings traced through the memo, ``INST``, ``OBJ``, ``EXT*``) and whether one of
them, or anything built from one, reaches an opcode that calls code during loading (``REDUCE``, ``NEWOBJ``,
``BUILD``, …).

Three containers are understood, routed by content, not by extension:

* ``torch-zip``: ``torch.save``'s default since 1.6, a zip archive whose ``<folder>/data.pkl`` holds the
  object and whose ``<folder>/data/N`` members hold raw tensor bytes. Only ``.pkl`` members are read.
* ``torch-legacy``: ``torch.save(..., _use_new_zipfile_serialization=False)``: five pickles in a row (magic
  number, protocol version, system info, the object, storage keys), then raw storage bytes, which are skipped.
* ``pickle``: anything else that parses as a pickle (possibly several in a row).

A global is *safe* only if it is on :data:`SAFE_GLOBALS`, the few constructors a plain state dict of tensors needs;
everything else is dangerous. The scanner is bounded on hostile input (opcodes, pickles, zip members and their
sizes, the zip directory) and raises nothing but :class:`lorahub.errors.LorahubError` subclasses.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import io
import mmap
import os
import pickletools
import struct
import warnings
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import BinaryIO, Final, Literal

from lorahub import errors
from lorahub.files.safetensors import check_path

PickleKind = Literal["torch-zip", "torch-legacy", "pickle"]

# --- the allow-list --------------------------------------------------------------------------------------------

_STORAGE_TYPES: Final = (
    "FloatStorage", "HalfStorage", "BFloat16Storage", "DoubleStorage", "LongStorage", "IntStorage", "ShortStorage",
    "CharStorage", "ByteStorage", "BoolStorage", "ComplexFloatStorage", "ComplexDoubleStorage",
)  # fmt: skip
_QUANTIZED_STORAGE_TYPES: Final = (
    "QInt8Storage",
    "QUInt8Storage",
    "QInt32Storage",
    "QUInt4x2Storage",
    "QUInt2x4Storage",
)
_DTYPES: Final = (
    "float16", "float32", "float64", "bfloat16", "complex32", "complex64", "complex128", "bool",
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu", "float4_e2m1fn_x2",
    "qint8", "quint8", "qint32", "quint4x2", "quint2x4",
    "int1", "int2", "int3", "int4", "int5", "int6", "int7",
    "uint1", "uint2", "uint3", "uint4", "uint5", "uint6", "uint7",
    "bits1x8", "bits2x4", "bits4x2", "bits8", "bits16",
)  # fmt: skip
_NUMPY_RECONSTRUCT: Final = frozenset({"_reconstruct", "scalar"})

SAFE_GLOBALS: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        # The container of every state dict. Its REDUCE takes no arguments and it is filled by SETITEMS.
        "collections": frozenset({"OrderedDict"}),
        # Tensor rebuilders: they take a storage (built by the loader's own persistent_load, from raw bytes),
        # an offset, sizes, strides and flags, and return a tensor. _v3 is what torch >= 2.1 emits for dtypes
        # the legacy typed storages cannot name (float8, uint16/32/64, …); _with_state sets plain attributes on
        # a Parameter; _rebuild_from_type_v2(func, type, args, state) only calls a func and type the pickle had
        # to import itself, so those are checked on their own.
        "torch._utils": frozenset(
            {
                "_rebuild_tensor",
                "_rebuild_tensor_v2",
                "_rebuild_tensor_v3",
                "_rebuild_parameter",
                "_rebuild_parameter_with_state",
            }
        ),
        "torch._tensor": frozenset({"_rebuild_from_type_v2"}),
        # Storage classes are only tags in the persistent id (the loader reads their dtype); dtypes are inert
        # values; Size is a tuple; device parses a string; Tensor and Parameter are the classes a tensor
        # (subclass) is rebuilt as.
        "torch": frozenset({*_STORAGE_TYPES, *_QUANTIZED_STORAGE_TYPES, *_DTYPES, "Size", "device", "Tensor"}),
        "torch.storage": frozenset({"UntypedStorage", "TypedStorage"}),
        # torch < 1.0 tagged GPU tensors with the CUDA storage classes; importing them needs no GPU.
        "torch.cuda": frozenset(_STORAGE_TYPES),
        "torch.nn.parameter": frozenset({"Parameter"}),
        # numpy arrays and scalars (numpy 1 spells the module numpy.core, numpy 2 numpy._core): they build an
        # array from a shape, a dtype and raw bytes. Object arrays carry their items as pickled objects, whose
        # globals are checked like any other.
        "numpy": frozenset({"dtype", "ndarray"}),
        "numpy.core.multiarray": _NUMPY_RECONSTRUCT,
        "numpy._core.multiarray": _NUMPY_RECONSTRUCT,
        "numpy.core.numeric": frozenset({"_frombuffer"}),
        "numpy._core.numeric": frozenset({"_frombuffer"}),
        # How protocol 2 pickles bytes: _codecs.encode(text, "latin1"). Codec lookup only imports from the
        # stdlib `encodings` package, and encoding a string runs no user code.
        "_codecs": frozenset({"encode"}),
        # Constructors of plain values; none of them calls back into an argument except through the argument's
        # own class, which had to be imported (and checked) first.
        "builtins": frozenset(
            {"set", "frozenset", "slice", "range", "complex", "bytearray", "bytes", "dict", "list", "tuple"}
            | {"int", "float", "bool", "str"}
        ),
    }
)
"""Globals a state dict of tensors legitimately imports, module → names. Everything else is dangerous."""

IMPORT_ONLY_GLOBALS: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        # Stable Diffusion 1.x .ckpt files (pytorch-lightning <= 1.4) key their "callbacks" dict by this class:
        # loading imports it and uses it as a dict key, never calls it. Importing an installed library runs
        # only that library's own code. A pickle that calls it (REDUCE, NEWOBJ, BUILD, …) is flagged.
        "pytorch_lightning.callbacks.model_checkpoint": frozenset({"ModelCheckpoint"}),
    }
)
"""Globals that are harmless when merely imported and used as values, and dangerous once called."""

KNOWN_DANGEROUS_MODULES: Final = frozenset(
    {
        "os", "posix", "nt", "subprocess", "_posixsubprocess", "_winapi", "commands", "pty", "sys", "importlib",
        "runpy", "code", "codeop", "pdb", "bdb", "pydoc", "timeit", "profile", "cProfile", "trace", "socket",
        "ssl", "http", "httplib", "urllib", "urllib2", "ftplib", "smtplib", "telnetlib", "requests", "httpx",
        "aiohttp", "webbrowser", "shutil", "tempfile", "pickle", "_pickle", "cPickle", "marshal", "shelve",
        "dill", "cloudpickle", "joblib", "types", "ctypes", "_ctypes", "asyncio", "multiprocessing", "signal",
        "pip", "ensurepip", "venv", "distutils", "setuptools", "numpy.f2py", "numpy.testing", "torch.jit",
        "torch._inductor", "torch._dynamo", "torch.utils.collect_env", "torch.utils.bottleneck",
    }
)  # fmt: skip
"""Modules any of whose globals is a known code-execution, file, network or nested-pickle primitive."""

KNOWN_DANGEROUS_GLOBALS: Final = frozenset(
    {f"{module}.{name}" for module in ("builtins", "__builtin__") for name in (
        "eval", "exec", "execfile", "compile", "open", "file", "input", "getattr", "setattr", "delattr",
        "__import__", "globals", "locals", "vars", "breakpoint", "help", "apply", "reload", "memoryview",
    )}
    | {f"{module}.{name}" for module in ("operator", "_operator") for name in (
        "attrgetter", "itemgetter", "methodcaller", "call",
    )}
    | {"functools.partial", "functools.reduce", "_functools.partial", "_functools.reduce", "copyreg._reconstructor"}
    | {"torch.load", "torch.serialization.load", "torch.hub.load", "numpy.load", "numpy.lib.npyio.load"}
)  # fmt: skip
"""Single globals that are known code-execution (or nested-pickle) primitives."""

_SAFE: Final = frozenset(f"{module}.{name}" for module, names in SAFE_GLOBALS.items() for name in names)
_IMPORT_ONLY: Final = frozenset(f"{module}.{name}" for module, names in IMPORT_ONLY_GLOBALS.items() for name in names)

UNRESOLVED: Final = "<unresolved>"
"""Stands for a STACK_GLOBAL whose module or name is not a string constant the scanner can follow."""
NOT_FULLY_SCANNED: Final = "<not fully scanned>"
"""Stands for the part of a file a scan limit kept the scanner from reading: it cannot be called safe."""
FRAME_STRADDLE: Final = "<opcode across a frame boundary>"
"""Stands for an opcode that starts inside a protocol 4+ frame and ends past it (or a frame inside a frame). No
pickler writes one, and the C unpickler reading from a file drops the in-frame part of such an argument, so it
parses different opcodes from there on than a linear scan does: a known way to hide a payload from scanners."""
_FLAGS: Final = frozenset({NOT_FULLY_SCANNED, FRAME_STRADDLE})

# --- limits ----------------------------------------------------------------------------------------------------

MAX_OPCODES: Final = 1_000_000
"""Opcodes walked per file. A state dict costs ~25 per tensor, so this is ~40,000 tensors."""
MAX_PICKLES: Final = 64
"""Pickles in a row followed in one plain pickle file or zip member."""
MAX_PICKLE_MEMBERS: Final = 64
"""``.pkl`` members scanned in one zip archive."""
MAX_MEMBER_BYTES: Final = 100 * 1024 * 1024
"""Bytes read into memory for one ``.pkl`` zip member, whatever its header claims (zip bombs)."""
MAX_ZIP_DIRECTORY_BYTES: Final = 64 * 1024 * 1024
"""Size of a zip's central directory, checked before :mod:`zipfile` reads it (~1.4 M entries)."""
MAX_CONST_BYTES: Final = 4096
"""Longest string argument decoded to follow STACK_GLOBAL and GLOBAL; longer ones are skipped, not copied."""
MAX_DECIMAL_LINE: Final = 1024 * 1024
"""Longest decimal argument (GET, PUT, INT) parsed; a longer one is called damage."""

# --- recognising files -----------------------------------------------------------------------------------------

TORCH_LEGACY_MAGIC: Final = 0x1950A86A20F9469CFC6C
"""The int ``torch.save`` pickles first in its legacy (non-zip) format."""
_LEGACY_PREFIX_TEXT: Final = b"L%dL\n" % TORCH_LEGACY_MAGIC
_ZIP_LOCAL: Final = b"PK\x03\x04"
_ZIP_EMPTY: Final = b"PK\x05\x06"
_HIGHEST_PROTOCOL: Final = 5


def _zip_read_errors() -> tuple[type[Exception], ...]:
    """What zipfile raises on a damaged archive: its own error, the decompressors' and the parsers' errors."""
    found: tuple[type[Exception], ...] = (zipfile.BadZipFile, zlib.error, ValueError, OverflowError, struct.error)
    try:
        import lzma
    except ImportError:  # a Python built without lzma: zipfile cannot open such members either
        return (*found, OSError)
    return (*found, lzma.LZMAError, OSError)  # bz2 reports damage as OSError


_ZIP_READ_ERRORS: Final = _zip_read_errors()


def looks_like_pickle(prefix: bytes) -> bool:
    """Whether a file's first bytes say "pickled checkpoint": a zip archive (torch.save's format), a pickle
    that opens with PROTO 2-5, or the legacy torch magic number. Protocol 0/1 pickles have no signature."""
    if prefix.startswith((_ZIP_LOCAL, _LEGACY_PREFIX_TEXT)):
        return True
    return len(prefix) >= 2 and prefix[0] == 0x80 and 2 <= prefix[1] <= 5


# --- the result ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PickleScan:
    """What loading a pickled file would import and do.

    ``globals`` lists every global imported, in order of first appearance; ``dangerous`` the sorted ones outside
    :data:`SAFE_GLOBALS`, plus :data:`UNRESOLVED`, ``<extension N>``, :data:`FRAME_STRADDLE` or
    :data:`NOT_FULLY_SCANNED` where the scanner cannot vouch for what the unpickler would do.
    ``calls_dangerous`` says whether one of them, or anything built from one, reaches an opcode that runs code
    while loading (it may be False when dangerous globals are only named; importing them alone still runs module
    code). ``members`` are the zip members scanned.
    """

    kind: PickleKind
    globals: list[str]
    dangerous: list[str]
    calls_dangerous: bool
    members: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def is_safe(self) -> bool:
        return not self.dangerous


def is_known_dangerous(name: str) -> bool:
    """Whether a global is a known code-execution primitive (every non-allow-listed global is dangerous anyway)."""
    if name in KNOWN_DANGEROUS_GLOBALS:
        return True
    parts = name.split(".")
    return any(".".join(parts[:i]) in KNOWN_DANGEROUS_MODULES for i in range(1, len(parts)))


def raise_if_dangerous(scan: PickleScan, path: str | os.PathLike[str]) -> None:
    """Raise :class:`~lorahub.errors.UnsafePickleError` naming the dangerous globals, if there are any."""
    if not scan.dangerous:
        return
    source = os.fspath(path)
    named = [name for name in scan.dangerous if name not in _FLAGS]
    parts = []
    if named:
        calls = ", and calls them while unpickling" if scan.calls_dangerous else ""
        parts.append(f"{source} would import {_names(named)} when loaded{calls}")
    if FRAME_STRADDLE in scan.dangerous:
        parts.append(f"{source} has an opcode across a pickle frame boundary, which hides opcodes from scanners")
    if NOT_FULLY_SCANNED in scan.dangerous:
        parts.append(f"{source} was not fully scanned (a scan limit was reached), so it cannot be called safe")
    raise errors.UnsafePickleError("; ".join(parts), dangerous=list(scan.dangerous), hint=_hint(scan.dangerous))


def _hint(dangerous: list[str]) -> str | None:
    known = [name for name in dangerous if is_known_dangerous(name)]
    if known:
        return f"{_names(known)} can run any code on your machine. {errors.UnsafePickleError.default_hint}"
    if set(dangerous) <= _FLAGS:
        return "No real checkpoint looks like this; the file is crafted or damaged. Do not load it anywhere."
    return None


def _names(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"


# --- the symbolic unpickler ------------------------------------------------------------------------------------


class _Value:
    """One symbolic stack item: a string/int constant when known, and the non-safe globals it derives from."""

    __slots__ = ("const", "taint")

    def __init__(self, const: str | int | None = None, taint: set[str] | None = None) -> None:
        self.const = const
        self.taint = taint


_PLAIN: Final = _Value()
"""Shared by immutable scalars (None, bools, floats, bytes, empty tuples): never mutated."""


class _Damage(Exception):
    """The pickle cannot be unpickled from here on."""

    def __init__(self, truncated: bool, pos: int, detail: str) -> None:
        super().__init__(detail)
        self.truncated = truncated
        self.pos = pos
        self.detail = detail


class _LimitReached(Exception):
    pass


class _Scan:
    """What the walks of one file accumulate."""

    def __init__(self) -> None:
        self.globals: dict[str, None] = {}
        self.called: set[str] = set()
        self.notes: list[str] = []
        self.protocols: dict[str, None] = {}
        self.opcodes = 0
        self.flags: set[str] = set()

    def global_value(self, name: str) -> _Value:
        self.globals.setdefault(name, None)
        return _Value(None, None if name in _SAFE else {name})

    def call(self, values: Iterable[_Value]) -> _Value:
        taint = _union(values)
        if taint:
            self.called |= taint
        return _Value(None, taint)

    def limit(self, note: str) -> None:
        self.flags.add(NOT_FULLY_SCANNED)
        self.notes.append(note)

    def dangerous(self) -> list[str]:
        found = {name for name in self.globals if name not in _SAFE and name not in _IMPORT_ONLY}
        found |= self.called & _IMPORT_ONLY
        found |= self.flags
        return sorted(found)

    def result(self, kind: PickleKind, members: list[str]) -> PickleScan:
        protocols = list(self.protocols)
        notes = [f"protocol{'s' if len(protocols) > 1 else ''} {', '.join(protocols)}"] if protocols else []
        return PickleScan(
            kind=kind,
            globals=list(self.globals),
            dangerous=self.dangerous(),
            calls_dangerous=bool(self.called),
            members=members,
            notes=notes + self.notes,
        )


def _union(values: Iterable[_Value]) -> set[str] | None:
    out: set[str] | None = None
    for value in values:
        if value.taint:
            out = set(value.taint) if out is None else out | value.taint
    return out


def _mutate(stack: list[_Value], scan: _Scan, added: set[str] | None) -> None:
    """An opcode that calls a method of the object on top of the stack (append, __setitem__, add, __setstate__)."""
    target = stack[-1]
    if target.taint:
        scan.called |= target.taint
    if added:
        if target is _PLAIN:
            stack[-1] = _Value(None, set(added))
        elif target.taint is None:
            target.taint = set(added)
        else:
            target.taint |= added


def _qualified(module: str, name: str, proto: int) -> str:
    """The global the unpickler would import: Python 2 names are mapped for protocols < 3, as pickle does."""
    if proto < 3:
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{name}"


_Buffer = bytes | mmap.mmap

# Opcode byte → (name, argument kind) from pickletools' own table.
_OPCODES: Final[dict[int, tuple[str, str | None]]] = {
    ord(op.code): (op.name, op.arg.name if op.arg is not None else None) for op in pickletools.opcodes
}
# INT's value is never needed, and the C unpickler reads it with strtol, which accepts almost anything ("I\n" is 0):
# skip it like FLOAT's rather than risk calling damage where the unpickler goes on.
_OPCODES[ord("I")] = ("INT", "floatnl")
_FIXED_ARGS: Final = {
    "uint1": (1, False), "uint2": (2, False), "int4": (4, True), "uint4": (4, False), "uint8": (8, False),
    "float8": (8, False),
}  # fmt: skip
_COUNTED_ARGS: Final = {
    "long1": (1, True), "long4": (4, True), "string1": (1, False), "string4": (4, True),
    "bytes1": (1, False), "bytes4": (4, False), "bytes8": (8, False), "bytearray8": (8, False),
    "unicodestring1": (1, False), "unicodestring4": (4, False), "unicodestring8": (8, False),
}  # fmt: skip
_CONST_OPS: Final = frozenset(
    {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING"}
    | {"BININT", "BININT1", "BININT2", "INT", "LONG", "LONG1", "LONG4"}
)
_SCALAR_OPS: Final = frozenset(
    {"NONE", "NEWTRUE", "NEWFALSE", "FLOAT", "BINFLOAT", "EMPTY_TUPLE", "NEXT_BUFFER"}
    | {"BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8"}
)
_MARK_BUILDERS: Final = frozenset({"TUPLE", "LIST", "DICT", "FROZENSET"})
_MARK_MUTATORS: Final = frozenset({"APPENDS", "SETITEMS", "ADDITEMS"})
_TUPLE_SIZES: Final = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}

_Arg = str | int | tuple[str, str] | None


def _read_arg(data: _Buffer, pos: int, end: int, kind: str) -> tuple[_Arg, int]:
    """Decode (or skip) one opcode argument; returns it and the position after it."""
    if kind in _FIXED_ARGS:
        width, signed = _FIXED_ARGS[kind]
        if pos + width > end:
            raise _Damage(True, pos, f"the pickle ends inside a {width}-byte argument")
        if kind == "float8":
            return None, pos + width
        return int.from_bytes(data[pos : pos + width], "little", signed=signed), pos + width
    if kind in _COUNTED_ARGS:
        return _read_counted(data, pos, end, kind)
    return _read_line_arg(data, pos, end, kind)


def _read_counted(data: _Buffer, pos: int, end: int, kind: str) -> tuple[_Arg, int]:
    width, signed = _COUNTED_ARGS[kind]
    if kind == "long1":
        signed = False  # the count is unsigned, the number it prefixes is signed
    if pos + width > end:
        raise _Damage(True, pos, "the pickle ends inside a length prefix")
    count = int.from_bytes(data[pos : pos + width], "little", signed=signed)
    pos += width
    if count < 0:
        raise _Damage(False, pos - width, f"negative length {count}")
    if count > end - pos:
        raise _Damage(True, pos, f"a {count:,}-byte argument but only {end - pos:,} bytes remain")
    after = pos + count
    if count > MAX_CONST_BYTES or kind.startswith(("bytes", "bytearray")):
        return None, after
    payload = data[pos:after]
    if kind.startswith("long"):
        return int.from_bytes(payload, "little", signed=True), after
    if kind.startswith("string"):
        return payload.decode("latin-1"), after
    try:
        return payload.decode("utf-8", "surrogatepass"), after
    except UnicodeDecodeError:
        raise _Damage(False, pos, "a unicode string that is not UTF-8") from None


def _line(data: _Buffer, pos: int, end: int, limit: int = MAX_CONST_BYTES) -> tuple[bytes | None, int]:
    """The newline-terminated argument at ``pos`` (None when longer than ``limit``) and the position after it."""
    newline = data.find(b"\n", pos, end)
    if newline < 0:
        raise _Damage(True, pos, "the pickle ends inside a newline-terminated argument")
    return (data[pos:newline] if newline - pos <= limit else None), newline + 1


def _read_line_arg(data: _Buffer, pos: int, end: int, kind: str) -> tuple[_Arg, int]:
    if kind == "decimalnl_short":  # GET, PUT: padding (spaces, a NUL and junk) is legal, so read more
        line, after = _line(data, pos, end, MAX_DECIMAL_LINE)
        return _decimal(line, pos), after
    line, after = _line(data, pos, end)
    if kind == "stringnl_noescape_pair":  # GLOBAL, INST
        second, after = _line(data, after, end)
        return _name_pair(line, second, pos), after
    if line is None or kind in ("stringnl_noescape", "floatnl"):  # PERSID, FLOAT: nothing to follow
        return None, after
    return _decode_line(line, kind, pos), after


def _name_pair(module: bytes | None, name: bytes | None, pos: int) -> tuple[str, str] | None:
    if module is None or name is None:
        return None
    try:
        return module.decode("utf-8"), name.decode("utf-8")
    except UnicodeDecodeError:
        raise _Damage(False, pos, "a global name that is not UTF-8") from None


def _decimal(line: bytes | None, pos: int) -> int:
    """A GET/PUT memo index, parsed as the C unpickler does: PyLong_FromString on a C string, so a NUL byte ends
    the number there ("0\\x00junk" reads as 0, and must here too)."""
    digits = line.split(b"\x00", 1)[0] if line is not None else b""
    try:
        return int(digits, 10)
    except ValueError:
        raise _Damage(False, pos, "a memo index that is not a number") from None


def _decode_line(line: bytes, kind: str, pos: int) -> str | int | None:
    if kind == "decimalnl_long":  # LONG: only the legacy torch magic number matters
        try:
            digits = line.split(b"\x00", 1)[0]
            return int(digits[:-1] if digits.endswith(b"L") else digits, 0)
        except ValueError:
            return None
    try:
        if kind == "stringnl":  # STRING: a quoted, backslash-escaped literal
            if len(line) < 2 or line[0] != line[-1] or line[:1] not in (b"'", b'"'):
                raise _Damage(False, pos, "a STRING argument that is not quoted")
            if b"\\" not in line:
                return line[1:-1].decode("latin-1")
            with warnings.catch_warnings():  # an invalid escape is only deprecated; hostile input is full of them
                warnings.simplefilter("ignore", DeprecationWarning)
                return codecs.escape_decode(line[1:-1])[0].decode("latin-1")
        return str(line, "raw-unicode-escape")  # UNICODE
    except ValueError:  # UnicodeDecodeError included
        raise _Damage(False, pos, "an undecodable string argument") from None


def _walk(data: _Buffer, pos: int, end: int, scan: _Scan) -> tuple[int, _Value]:  # noqa: C901, PLR0912, PLR0915
    """Walk one pickle from ``pos`` to its STOP, as the unpickler would, without building anything.

    Returns the position after STOP and the symbolic result. Raises :class:`_Damage` where the real unpickler
    would fail, :class:`_LimitReached` when the file's opcode budget is spent.
    """
    stack: list[_Value] = []
    metastack: list[list[_Value]] = []
    memo: dict[int, _Value] = {}
    proto = 0
    protocol_note = "0/1 (no PROTO opcode)"
    frame_end: int | None = None
    budget = MAX_OPCODES - scan.opcodes
    count = 0
    try:
        while True:
            if pos >= end:
                raise _Damage(True, pos, "the pickle ends before its STOP opcode")
            if count >= budget:
                raise _LimitReached
            count += 1
            start = pos
            code = data[pos]
            op = _OPCODES.get(code)
            if op is None:
                raise _Damage(False, pos, f"byte 0x{code:02x} is not a pickle opcode")
            name, kind = op
            arg: _Arg = None
            pos += 1
            if frame_end is not None and start >= frame_end:
                frame_end = None
            if kind is not None:
                arg, pos, frame_end = _read_framed_arg(data, pos, end, kind, frame_end=frame_end, scan=scan, name=name)
            try:
                if name in ("BINPUT", "LONG_BINPUT", "PUT"):
                    if not isinstance(arg, int) or arg < 0:
                        raise _Damage(False, start, "a negative memo index")
                    memo[arg] = stack[-1]
                elif name in ("BINGET", "LONG_BINGET", "GET"):
                    value = memo.get(arg) if isinstance(arg, int) else None
                    if value is None:
                        raise _Damage(False, start, f"{name} reads memo slot {arg}, which was never written")
                    stack.append(value)
                elif name == "MEMOIZE":
                    memo[len(memo)] = stack[-1]
                elif name in _CONST_OPS:
                    stack.append(_Value(arg if isinstance(arg, str | int) else None))
                elif name in _SCALAR_OPS:
                    stack.append(_PLAIN)
                elif name in ("EMPTY_DICT", "EMPTY_LIST", "EMPTY_SET"):
                    stack.append(_Value())
                elif name == "MARK":
                    metastack.append(stack)
                    stack = []
                elif name in _MARK_BUILDERS:
                    items, stack = stack, _pop_mark(metastack, start, name)
                    stack.append(_Value(None, _union(items)))
                elif name in _TUPLE_SIZES:
                    size = _TUPLE_SIZES[name]
                    if len(stack) < size:
                        raise IndexError
                    items = stack[-size:]
                    del stack[-size:]
                    stack.append(_Value(None, _union(items)))
                elif name == "REDUCE":
                    args = stack.pop()
                    stack[-1] = scan.call((stack[-1], args))
                elif name in ("GLOBAL", "INST"):
                    if isinstance(arg, tuple):
                        qualified = _qualified(arg[0], arg[1], proto)
                    else:
                        qualified = UNRESOLVED
                        scan.notes.append(f"{name} argument at byte {start:,} too long to follow")
                    found = scan.global_value(qualified)
                    if name == "GLOBAL":
                        stack.append(found)
                    else:
                        items, stack = stack, _pop_mark(metastack, start, name)
                        stack.append(scan.call([found, *items]))
                elif name == "STACK_GLOBAL":
                    global_name, module = stack.pop(), stack.pop()
                    if isinstance(module.const, str) and isinstance(global_name.const, str):
                        stack.append(scan.global_value(_qualified(module.const, global_name.const, proto)))
                    else:
                        scan.notes.append(f"unresolvable STACK_GLOBAL argument at byte {start:,}")
                        found = scan.global_value(UNRESOLVED)
                        found.taint = (found.taint or set()) | (_union((module, global_name)) or set())
                        stack.append(found)
                elif name in ("EXT1", "EXT2", "EXT4"):
                    scan.notes.append(f"{name} at byte {start:,} names extension code {arg}, unknown statically")
                    stack.append(scan.global_value(f"<extension {arg}>"))
                elif name in ("APPEND", "BUILD"):
                    value = stack.pop()
                    _mutate(stack, scan, value.taint)
                    if name == "BUILD" and value.taint:
                        scan.called |= value.taint  # the state goes to __setstate__
                elif name == "SETITEM":
                    value, key = stack.pop(), stack.pop()
                    _mutate(stack, scan, _union((key, value)))
                elif name in _MARK_MUTATORS:
                    items, stack = stack, _pop_mark(metastack, start, name)
                    _mutate(stack, scan, _union(items))
                elif name in ("NEWOBJ", "NEWOBJ_EX"):
                    arguments = [stack.pop() for _ in range(1 if name == "NEWOBJ" else 2)]
                    stack[-1] = scan.call([stack[-1], *arguments])
                elif name == "OBJ":
                    items, stack = stack, _pop_mark(metastack, start, name)
                    if not items:
                        raise IndexError
                    stack.append(scan.call(items))
                elif name == "BINPERSID":
                    stack[-1] = scan.call((stack[-1],))
                elif name == "PERSID":
                    stack.append(_Value())
                elif name == "DUP":
                    stack.append(stack[-1])
                elif name == "POP":
                    if stack:
                        stack.pop()
                    else:
                        stack = _pop_mark(metastack, start, name)
                elif name == "POP_MARK":
                    stack = _pop_mark(metastack, start, name)
                elif name == "READONLY_BUFFER":
                    if not stack:
                        raise IndexError
                elif name == "PROTO":
                    if not isinstance(arg, int) or arg > _HIGHEST_PROTOCOL:
                        raise _Damage(False, start, f"unsupported pickle protocol {arg}")
                    proto = arg
                    protocol_note = str(arg)
                elif name == "FRAME":
                    if not isinstance(arg, int) or arg > end - pos:
                        raise _Damage(True, start, f"a {arg:,}-byte frame but only {end - pos:,} bytes remain")
                    if frame_end is not None:
                        _straddle(scan, "a FRAME inside a frame", start)
                    frame_end = pos + arg
                elif name == "STOP":
                    result = stack.pop()
                    scan.protocols.setdefault(protocol_note, None)
                    return pos, result
                else:  # pragma: no cover - every opcode of pickletools.opcodes is handled above
                    raise _Damage(False, start, f"opcode {name} is not understood")
            except IndexError:
                raise _Damage(False, start, f"{name} finds too few items on the stack") from None
    finally:
        scan.opcodes += count


def _read_framed_arg(
    data: _Buffer, pos: int, end: int, kind: str, *, frame_end: int | None, scan: _Scan, name: str
) -> tuple[_Arg, int, int | None]:
    """Read an argument, noticing when it runs past the end of the current frame.

    Reading from a file, the C unpickler holds a frame in a buffer and, for an argument the buffer cannot
    satisfy, drops the buffered rest and reads the argument afresh from after the frame: from there on it parses
    other opcodes than a linear reader. Such a pickle is flagged; the linear walk goes on. Returns the argument,
    the position after it, and the frame end still in force.
    """
    if frame_end is None or frame_end >= end:  # no frame, or one that ends with the data: nothing differs
        arg, after = _read_arg(data, pos, end, kind)
        return arg, after, frame_end
    try:
        arg, after = _read_arg(data, pos, frame_end, kind)
    except _Damage as damage:
        if not damage.truncated:
            raise
        _straddle(scan, f"{name}'s argument runs past the end of its frame at byte {frame_end:,}", pos - 1)
        arg, after = _read_arg(data, pos, end, kind)
        return arg, after, None
    return arg, after, frame_end


def _straddle(scan: _Scan, what: str, start: int) -> None:
    scan.flags.add(FRAME_STRADDLE)
    scan.notes.append(f"{what} (byte {start:,}): the unpickler reads such a pickle differently from a scanner")


def _pop_mark(metastack: list[list[_Value]], pos: int, name: str) -> list[_Value]:
    if not metastack:
        raise _Damage(False, pos, f"{name} without a preceding MARK")
    return metastack.pop()


# --- containers ------------------------------------------------------------------------------------------------


def scan_pickle_file(path: str | os.PathLike[str]) -> PickleScan:
    """Report what loading a pickled file would import and call, without loading it.

    Raises :class:`~lorahub.errors.UnsupportedFileError` for a file that is no pickle, torch zip or legacy torch
    file, :class:`~lorahub.errors.TruncatedFileError` / :class:`~lorahub.errors.InvalidFileError` for a damaged
    one, and :class:`~lorahub.errors.UnsafePickleError` when a damaged pickle names dangerous globals before the
    damage (the real unpickler would run them before failing). A dangerous but well-formed file is *returned*:
    pass the scan to :func:`raise_if_dangerous` to refuse it.
    """
    p = check_path(path)
    source = str(p)
    try:
        with open(p, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            head = handle.read(4)
            if not head:
                raise errors.EmptyFileError(f"{source} is empty (0 bytes)")
            if head in (_ZIP_LOCAL, _ZIP_EMPTY):
                return _scan_zip(handle, size, source)
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return _scan_stream_file(data, len(data), source)
    except errors.LorahubError:
        raise
    except OSError as exc:
        raise errors.FileReadError(f"{source}: {exc.strerror or exc}") from None


def scan_pickle_bytes(data: bytes, *, source: str = "<bytes>") -> PickleScan:
    """:func:`scan_pickle_file` for bytes already in memory (a download, a member of another archive)."""
    if not data:
        raise errors.EmptyFileError(f"{source} is empty (0 bytes)")
    if data[:4] in (_ZIP_LOCAL, _ZIP_EMPTY):
        return _scan_zip(io.BytesIO(data), len(data), source)
    return _scan_stream_file(data, len(data), source)


def _scan_stream_file(data: _Buffer, size: int, source: str) -> PickleScan:
    scan = _Scan()
    claims_pickle = data[0] == 0x80
    try:
        pos, first = _walk(data, 0, size, scan)
    except _Damage as damage:
        raise _damage_error(scan, damage, source, "", claims_pickle=claims_pickle or bool(scan.globals)) from None
    except _LimitReached:
        scan.limit(f"stopped after {MAX_OPCODES:,} opcodes; the rest of the pickle was not scanned")
        return scan.result("pickle", [])
    if first.const != TORCH_LEGACY_MAGIC:
        _scan_following(data, pos, size, scan, where="")
        return scan.result("pickle", [])
    names = ("protocol version", "system info", "object", "storage keys")
    for what in names:
        try:
            pos, _ = _walk(data, pos, size, scan)
        except _Damage as damage:
            damage.detail = f"legacy torch file, {what} pickle: {damage.detail}"
            raise _damage_error(scan, damage, source, "", claims_pickle=True) from None
        except _LimitReached:
            scan.limit(f"stopped after {MAX_OPCODES:,} opcodes in the {what} pickle; the rest was not scanned")
            return scan.result("torch-legacy", [])
    scan.notes.append(
        "5 pickles in a row (legacy torch.save: magic number, protocol version, system info, object, storage keys)"
    )
    scan.notes.append(f"{size - pos:,} bytes of raw storage data after byte {pos:,} not scanned")
    return scan.result("torch-legacy", [])


def _scan_following(data: _Buffer, pos: int, end: int, scan: _Scan, *, where: str) -> None:
    """Scan the pickles that may follow the first one (a loader may call pickle.load again)."""
    count = 1
    while pos < end:
        if count >= MAX_PICKLES:
            scan.limit(f"stopped after {MAX_PICKLES} pickles in a row{where}; {end - pos:,} bytes not scanned")
            return
        try:
            pos, _ = _walk(data, pos, end, scan)
        except _Damage as damage:
            scan.notes.append(
                f"{end - pos:,} trailing bytes after byte {pos:,}{where} are not a complete pickle "
                f"({damage.detail}); only their opcodes up to byte {damage.pos:,} were scanned"
            )
            break
        except _LimitReached:
            scan.limit(f"stopped after {MAX_OPCODES:,} opcodes{where}; the rest was not scanned")
            return
        count += 1
    if count > 1:
        scan.notes.append(f"{count} pickles in a row{where}")


def _damage_error(
    scan: _Scan, damage: _Damage, source: str, where: str, *, claims_pickle: bool
) -> errors.InvalidFileError:
    at = f"byte {damage.pos:,}{where}"
    dangerous = scan.dangerous()
    if dangerous:
        named = [name for name in dangerous if name not in _FLAGS]
        before = f"it would import {_names(named)} when loaded" if named else f"it shows {_names(dangerous)}"
        return errors.UnsafePickleError(
            f"{source} is a damaged pickle ({damage.detail} at {at}), and before the damage {before}",
            dangerous=dangerous,
            hint=_hint(dangerous),
        )
    if not claims_pickle:
        return errors.UnsupportedFileError(
            f"{source} is not a pickle, a torch zip archive or a legacy torch file ({damage.detail} at {at})"
        )
    if damage.truncated:
        return errors.TruncatedFileError(f"{source}: {damage.detail} at {at}")
    return errors.InvalidFileError(
        f"{source} is not a valid pickle: {damage.detail} at {at}",
        hint="The file is damaged or was not written by torch.save or pickle. Do not load it; fetch it again.",
    )


def _check_zip_directory(handle: BinaryIO, size: int, source: str) -> None:
    """Refuse a zip whose end record is missing or whose central directory is too large to read."""
    tail_length = min(size, 65_536 + 22)
    handle.seek(size - tail_length)
    tail: bytes = handle.read(tail_length)
    at = tail.rfind(_ZIP_EMPTY)
    if at < 0 or len(tail) - at < 22:
        raise errors.TruncatedFileError(
            f"{source} starts like a zip archive but has no end-of-archive record",
            hint="The download or copy did not finish, or the file is damaged. Fetch it again.",
        )
    entries, directory_size = struct.unpack_from("<HI", tail, at + 10)
    locator = at - 20
    if (
        (entries == 0xFFFF or directory_size == 0xFFFFFFFF)
        and locator >= 0
        and tail[locator : locator + 4] == b"PK\x06\x07"
    ):
        (record_at,) = struct.unpack_from("<Q", tail, locator + 8)
        handle.seek(min(record_at, size))
        record: bytes = handle.read(56)
        if len(record) == 56 and record.startswith(b"PK\x06\x06"):
            entries, directory_size = struct.unpack_from("<QQ", record, 32)
    if directory_size > MAX_ZIP_DIRECTORY_BYTES:
        raise errors.InvalidFileError(
            f"{source}: the zip directory claims {directory_size:,} bytes ({entries:,} entries); "
            f"the limit is {MAX_ZIP_DIRECTORY_BYTES:,}",
            hint="No torch checkpoint has a directory that large; the file is damaged or crafted. Do not load it.",
        )
    handle.seek(0)


def _scan_zip(handle: BinaryIO, size: int, source: str) -> PickleScan:
    _check_zip_directory(handle, size, source)
    scan = _Scan()
    try:
        with zipfile.ZipFile(handle) as archive:
            infos = archive.infolist()
            if not infos:
                raise errors.UnsupportedFileError(f"{source} is an empty zip archive, not a torch checkpoint")
            pickles = [info for info in infos if info.filename.lower().endswith(".pkl") and not info.is_dir()]
            if not pickles:
                shown = ", ".join(info.filename for info in infos[:5]) + (", …" if len(infos) > 5 else "")
                raise errors.UnsupportedFileError(
                    f"{source} is a zip archive with no .pkl member ({shown}), not a torch checkpoint"
                )
            members = [_scan_member(archive, info, scan, source) for info in pickles[:MAX_PICKLE_MEMBERS]]
            if len(pickles) > MAX_PICKLE_MEMBERS:
                scan.limit(
                    f"{len(pickles) - MAX_PICKLE_MEMBERS} .pkl members after the first {MAX_PICKLE_MEMBERS} not scanned"
                )
            if any(info.filename.endswith(".py") and "/code/" in f"/{info.filename}" for info in infos):
                scan.notes.append(
                    "TorchScript archive: its code/ members are TorchScript, not pickles, and were not scanned"
                )
    except errors.LorahubError:
        raise
    except (RuntimeError, NotImplementedError) as exc:  # encrypted, or a compression zipfile cannot read
        raise errors.UnsupportedFileError(f"{source}: cannot read the zip archive ({exc})") from None
    except EOFError as exc:
        raise errors.TruncatedFileError(f"{source}: the zip archive ends early ({exc})") from None
    except _ZIP_READ_ERRORS as exc:
        raise errors.InvalidFileError(
            f"{source} is a damaged zip archive ({exc.__class__.__name__}: {str(exc)[:160]})",
            hint="The file is damaged or crafted. Do not load it; fetch it again.",
        ) from None
    return scan.result("torch-zip", [member for member in members if member is not None])


def _scan_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, scan: _Scan, source: str) -> str | None:
    member = info.filename
    where = f" of zip member {member}"
    if info.file_size > MAX_MEMBER_BYTES:
        scan.limit(
            f"zip member {member} declares {info.file_size:,} bytes, over the {MAX_MEMBER_BYTES:,} limit; not scanned"
        )
        return None
    with archive.open(info) as stream:
        data = stream.read(MAX_MEMBER_BYTES + 1)
    if len(data) > MAX_MEMBER_BYTES:
        scan.limit(f"zip member {member} holds more than {MAX_MEMBER_BYTES:,} bytes; not scanned")
        return None
    try:
        pos, _ = _walk(data, 0, len(data), scan)
    except _Damage as damage:
        raise _damage_error(scan, damage, source, where, claims_pickle=True) from None
    except _LimitReached:
        scan.limit(f"stopped after {MAX_OPCODES:,} opcodes{where}; the rest was not scanned")
        return member
    _scan_following(data, pos, len(data), scan, where=where)
    scan.notes.append(f"zip member {member} scanned")
    return member
