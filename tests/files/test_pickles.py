"""lorahub.files.pickles: scanning pickled checkpoints without ever unpickling them.

The malicious fixtures here are real: each one's control test unpickles it (with the stdlib, in this process or a
child) and sees it create its marker file, so a scan that leaves the marker absent is meaningful.
"""

from __future__ import annotations

import _compat_pickle
import collections
import contextlib
import io
import os
import pickle
import pickletools
import struct
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lorahub import errors
from lorahub.files import pickles
from lorahub.files.pickles import (
    FRAME_STRADDLE,
    IMPORT_ONLY_GLOBALS,
    NOT_FULLY_SCANNED,
    SAFE_GLOBALS,
    UNRESOLVED,
    PickleScan,
    is_known_dangerous,
    looks_like_pickle,
    raise_if_dangerous,
    scan_pickle_bytes,
    scan_pickle_file,
)

SAFE = {f"{module}.{name}" for module, names in SAFE_GLOBALS.items() for name in names}
IMPORT_ONLY = {f"{module}.{name}" for module, names in IMPORT_ONLY_GLOBALS.items() for name in names}
LORA_KEY = "lora_unet_x.lora_down.weight"


# --- opcode builders -------------------------------------------------------------------------------------------


def proto(n: int) -> bytes:
    return b"\x80" + bytes([n])


def text(value: str) -> bytes:
    """SHORT_BINUNICODE (protocol 4+), or BINUNICODE when longer than 255 bytes."""
    raw = value.encode()
    if len(raw) < 256:
        return b"\x8c" + bytes([len(raw)]) + raw
    return b"X" + struct.pack("<I", len(raw)) + raw


def global_op(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def binget(slot: int) -> bytes:
    return b"h" + bytes([slot])


def long_binput(slot: int) -> bytes:
    return b"r" + struct.pack("<I", slot)


def long_binget(slot: int) -> bytes:
    return b"j" + struct.pack("<I", slot)


MEMOIZE, STACK_GLOBAL, TUPLE1, REDUCE, STOP, POP, MARK, TUPLE = b"\x94", b"\x93", b"\x85", b"R", b".", b"0", b"(", b"t"
EMPTY_DICT, EMPTY_TUPLE, SETITEM, BUILD, NEWOBJ = b"}", b")", b"s", b"b", b"\x81"


def ops(data: bytes) -> set[str]:
    return {op.name for op, _, _ in pickletools.genops(data)}


# --- malicious payloads (each takes the marker path it would create) -------------------------------------------


def exec_code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').close()"


class _Exec:
    """Pickles as builtins.exec(code), the way real malicious checkpoints do."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (self.code,))


def exec_pickle(marker: Path, protocol: int) -> bytes:
    return pickle.dumps(_Exec(exec_code(marker)), protocol=protocol)


def os_system_proto0(marker: Path) -> bytes:
    """Protocol 0, GLOBAL opcode, no memo: `os.system("touch MARKER")`."""
    return global_op("os", "system") + b"(S'touch " + str(marker).encode() + b"'\ntR."


def stack_global_from_memo(marker: Path) -> bytes:
    """Protocol 4: both STACK_GLOBAL strings come back from the memo (BINGET), after being popped."""
    return (
        proto(4)
        + text("builtins") + MEMOIZE + text("exec") + MEMOIZE + POP + POP
        + binget(0) + binget(1) + STACK_GLOBAL
        + text(exec_code(marker)) + TUPLE1 + REDUCE + STOP
    )  # fmt: skip


def stack_global_from_long_memo(marker: Path) -> bytes:
    """Like :func:`stack_global_from_memo` with LONG_BINPUT/LONG_BINGET at slots past 255."""
    return (
        proto(4)
        + text("builtins") + long_binput(300) + text("exec") + long_binput(301) + POP + POP
        + long_binget(300) + long_binget(301) + STACK_GLOBAL
        + text(exec_code(marker)) + TUPLE1 + REDUCE + STOP
    )  # fmt: skip


def unresolvable_stack_global(marker: Path) -> bytes:
    """The module string is built at load time (str("builtins")), so no scanner can read it off a string push."""
    return (
        proto(4)
        + text("builtins") + text("str") + STACK_GLOBAL + text("builtins") + TUPLE1 + REDUCE
        + text("exec") + STACK_GLOBAL
        + text(exec_code(marker)) + TUPLE1 + REDUCE + STOP
    )  # fmt: skip


def in_torch_zip(payload: bytes, folder: str = "archive") -> bytes:
    """A torch-style zip written by hand: the payload as <folder>/data.pkl."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{folder}/data.pkl", payload)
        archive.writestr(f"{folder}/byteorder", "little")
        archive.writestr(f"{folder}/version", "3\n")
    return buffer.getvalue()


PAYLOADS: dict[str, Callable[[Path], bytes]] = {
    "protocol-0-global-exec": lambda marker: exec_pickle(marker, 0),
    "protocol-2-exec": lambda marker: exec_pickle(marker, 2),
    "protocol-4-stack-global-exec": lambda marker: exec_pickle(marker, 4),
    "protocol-5-exec": lambda marker: exec_pickle(marker, 5),
    "stack-global-from-memo": stack_global_from_memo,
    "stack-global-from-long-memo": stack_global_from_long_memo,
    "unresolvable-stack-global": unresolvable_stack_global,
}
EXPECTED = {name: ["builtins.exec"] for name in PAYLOADS} | {"unresolvable-stack-global": [UNRESOLVED]}


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --- real torch.save files -------------------------------------------------------------------------------------


@pytest.fixture
def torch() -> Any:
    return pytest.importorskip("torch")


def test_torch_zip_state_dict_is_safe(tmp_path: Path, torch: Any) -> None:
    path = tmp_path / "lora.pt"
    torch.save({LORA_KEY: torch.zeros(4, 8)}, path)
    scan = scan_pickle_file(path)
    assert scan.kind == "torch-zip"
    assert scan.dangerous == [] and scan.is_safe and not scan.calls_dangerous
    assert {"torch._utils._rebuild_tensor_v2", "torch.FloatStorage", "collections.OrderedDict"} <= set(scan.globals)
    assert scan.members == ["lora/data.pkl"]
    assert "zip member lora/data.pkl scanned" in scan.notes and "protocol 2" in scan.notes
    raise_if_dangerous(scan, path)


def test_torch_legacy_state_dict_is_safe(tmp_path: Path, torch: Any) -> None:
    path = tmp_path / "lora.ckpt"
    torch.save({LORA_KEY: torch.zeros(4, 8)}, path, _use_new_zipfile_serialization=False)
    assert path.read_bytes()[:2] == b"\x80\x02"
    scan = scan_pickle_file(path)
    assert scan.kind == "torch-legacy"
    assert scan.dangerous == [] and scan.members == []
    assert {"torch._utils._rebuild_tensor_v2", "torch.FloatStorage", "collections.OrderedDict"} <= set(scan.globals)
    assert any(note.startswith("5 pickles in a row") for note in scan.notes)
    assert any("raw storage data" in note for note in scan.notes)
    raise_if_dangerous(scan, path)


def test_legacy_storage_bytes_are_not_scanned(tmp_path: Path, torch: Any) -> None:
    """The raw tensor bytes after the five pickles are data, even when they spell a malicious pickle."""
    evil = os_system_proto0(tmp_path / "never")
    tensor = torch.frombuffer(bytearray(evil), dtype=torch.uint8)
    path = tmp_path / "data.ckpt"
    torch.save({"w": tensor}, path, _use_new_zipfile_serialization=False)
    assert evil in path.read_bytes()
    scan = scan_pickle_file(path)
    assert scan.kind == "torch-legacy" and scan.dangerous == []


SAVED_DTYPES = [
    "float32", "float16", "bfloat16", "float64", "complex64", "complex128", "int8", "int16", "int32", "int64",
    "uint8", "uint16", "uint32", "uint64", "bool", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz",
    "float8_e5m2fnuz", "float8_e8m0fnu",
]  # fmt: skip


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_what_torch_save_emits_is_all_allowed(tmp_path: Path, torch: Any, legacy: bool) -> None:
    """Every dtype, a Parameter with and without attributes, a Size, a dtype and a device as values."""
    state: dict[str, Any] = {}
    for name in SAVED_DTYPES:
        dtype = getattr(torch, name, None)
        if dtype is not None:
            state[name] = torch.zeros(3, dtype=torch.float32).to(dtype)
    parameter = torch.nn.Parameter(torch.ones(2))
    tagged = torch.nn.Parameter(torch.ones(2))
    tagged.tag = "lora"
    state |= {"param": parameter, "tagged": tagged, "view": torch.arange(10.0)[2:5]}
    state |= {"size": torch.Size([2, 3]), "dtype": torch.float16, "device": torch.device("cpu")}
    path = tmp_path / "all.pt"
    torch.save(collections.OrderedDict(state), path, _use_new_zipfile_serialization=not legacy)
    scan = scan_pickle_file(path)
    assert scan.dangerous == [], scan.globals
    assert "torch._utils._rebuild_tensor_v3" in scan.globals  # float8 and wide unsigned types
    assert "torch.storage.UntypedStorage" in scan.globals
    assert "torch._utils._rebuild_parameter_with_state" in scan.globals


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_numpy_and_builtin_values_are_allowed(tmp_path: Path, protocol: int) -> None:
    np = pytest.importorskip("numpy")
    value = {
        "array": np.arange(6, dtype=np.float16).reshape(2, 3),
        "scalar": np.float32(1.5),
        "bytes": b"\x00\x01",
        "empty": b"",
        "set": {1, 2},
        "frozen": frozenset({3}),
        "slice": slice(1, 2),
        "complex": 1j,
        "bytearray": bytearray(b"z"),
    }
    scan = scan_pickle_file(write(tmp_path, "np.pkl", pickle.dumps(value, protocol=protocol)))
    assert scan.kind == "pickle"
    assert scan.dangerous == [], scan.globals
    if protocol == 2:  # protocol 2 names builtins as __builtin__; the unpickler maps them, and so does the scan
        assert "builtins.set" in scan.globals and "_codecs.encode" in scan.globals


def test_scanner_module_does_not_import_torch() -> None:
    code = "import sys, lorahub.files.pickles; print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "torch" not in result.stdout


def test_scanning_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, torch: Any) -> None:
    path = tmp_path / "lora.pt"
    torch.save({LORA_KEY: torch.zeros(2, 2)}, path)

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the scanner unpickled something")

    for module in (pickle, sys.modules["_pickle"]):
        for name in ("load", "loads", "Unpickler"):
            monkeypatch.setattr(module, name, forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    assert scan_pickle_file(path).is_safe
    marker = tmp_path / "MARKER"
    assert scan_pickle_file(write(tmp_path, "evil.pkl", exec_pickle(marker, 4))).dangerous == ["builtins.exec"]
    assert not marker.exists()


# --- malicious files -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_payloads_are_really_malicious(tmp_path: Path, name: str) -> None:
    """Control: unpickling the payload with the stdlib does create its marker (so the other tests mean something)."""
    marker = tmp_path / "CONTROL"
    pickle.loads(PAYLOADS[name](marker))  # deliberately: our own payload
    assert marker.exists()


@pytest.mark.skipif(os.name != "posix", reason="touch is a POSIX command")
def test_os_system_payload_is_really_malicious(tmp_path: Path) -> None:
    marker = tmp_path / "CONTROL"
    code = "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"
    subprocess.run([sys.executable, "-c", code], input=os_system_proto0(marker), check=True, cwd=tmp_path)
    assert marker.exists()


@pytest.mark.parametrize("container", ["plain", "torch-zip"])
@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_malicious_pickle_is_reported_and_not_run(tmp_path: Path, name: str, container: str) -> None:
    marker = tmp_path / "MARKER"
    payload = PAYLOADS[name](marker)
    data = payload if container == "plain" else in_torch_zip(payload)
    path = write(tmp_path, "model.ckpt", data)
    scan = scan_pickle_file(path)
    assert scan.kind == ("pickle" if container == "plain" else "torch-zip")
    assert scan.dangerous == EXPECTED[name]
    assert scan.calls_dangerous
    with pytest.raises(errors.UnsafePickleError) as caught:
        raise_if_dangerous(scan, path)
    assert caught.value.code == "pickle-dangerous"
    assert caught.value.dangerous == EXPECTED[name]
    assert f"{path} would import {EXPECTED[name][0]} when loaded" in str(caught.value)
    assert not marker.exists()


def test_payload_fixtures_use_the_opcodes_they_claim(tmp_path: Path) -> None:
    marker = tmp_path / "M"
    assert "GLOBAL" in ops(exec_pickle(marker, 0)) and "PROTO" not in ops(exec_pickle(marker, 0))
    assert {"STACK_GLOBAL", "MEMOIZE"} <= ops(exec_pickle(marker, 4))
    assert {"STACK_GLOBAL", "BINGET"} <= ops(stack_global_from_memo(marker))
    assert {"STACK_GLOBAL", "LONG_BINGET"} <= ops(stack_global_from_long_memo(marker))


def test_os_system_protocol_0(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    path = write(tmp_path, "model.ckpt", os_system_proto0(marker))
    scan = scan_pickle_file(path)
    assert scan.kind == "pickle" and scan.globals == ["os.system"] and scan.dangerous == ["os.system"]
    assert scan.calls_dangerous
    assert "protocol 0/1 (no PROTO opcode)" in scan.notes
    with pytest.raises(errors.UnsafePickleError, match=r"model\.ckpt would import os\.system when loaded") as caught:
        raise_if_dangerous(scan, path)
    assert caught.value.hint is not None and "os.system" in caught.value.hint
    assert not marker.exists()


def test_message_names_every_dangerous_global(tmp_path: Path) -> None:
    data = proto(2) + global_op("os", "system") + POP + global_op("builtins", "exec") + POP + b"N."
    path = write(tmp_path, "model.ckpt", data)
    scan = scan_pickle_file(path)
    assert scan.dangerous == ["builtins.exec", "os.system"]
    with pytest.raises(errors.UnsafePickleError, match=r"would import builtins\.exec, os\.system when loaded"):
        raise_if_dangerous(scan, path)


def test_naming_a_dangerous_global_without_calling_it(tmp_path: Path) -> None:
    """{"f": os.system}: still refused (importing runs module code), but calls_dangerous tells it apart."""
    data = proto(2) + EMPTY_DICT + text("f") + global_op("os", "system") + SETITEM + STOP
    scan = scan_pickle_file(write(tmp_path, "named.pkl", data))
    assert scan.dangerous == ["os.system"] and not scan.calls_dangerous
    with pytest.raises(errors.UnsafePickleError):
        raise_if_dangerous(scan, "named.pkl")


def test_dangerous_global_passed_to_a_safe_rebuild_function_is_a_call(tmp_path: Path) -> None:
    """torch._tensor._rebuild_from_type_v2(func, type, args, state) calls func: the argument is what matters."""
    data = (
        proto(2) + global_op("torch._tensor", "_rebuild_from_type_v2")
        + MARK + global_op("os", "system") + global_op("torch", "Tensor") + text("id") + TUPLE1 + EMPTY_DICT + TUPLE
        + REDUCE + STOP
    )  # fmt: skip
    scan = scan_pickle_file(write(tmp_path, "indirect.pkl", data))
    assert scan.dangerous == ["os.system"] and scan.calls_dangerous


def test_malicious_member_next_to_a_real_state_dict(tmp_path: Path, torch: Any) -> None:
    clean = tmp_path / "clean.pt"
    torch.save({LORA_KEY: torch.zeros(2, 2)}, clean)
    path = tmp_path / "mixed.pt"
    marker = tmp_path / "MARKER"
    with zipfile.ZipFile(clean) as source, zipfile.ZipFile(path, "w") as target:
        for info in source.infolist():
            target.writestr(info, source.read(info))
        target.writestr("clean/constants.pkl", exec_pickle(marker, 2))
    scan = scan_pickle_file(path)
    assert scan.members == ["clean/data.pkl", "clean/constants.pkl"]
    assert scan.dangerous == ["builtins.exec"]
    assert not marker.exists()


def test_any_of_the_legacy_pickles_can_carry_the_payload(tmp_path: Path, torch: Any) -> None:
    clean = tmp_path / "clean.ckpt"
    torch.save({LORA_KEY: torch.zeros(2, 2)}, clean, _use_new_zipfile_serialization=False)
    data = clean.read_bytes()
    stream = io.BytesIO(data)
    for _ in range(2):  # skip the magic number and protocol version pickles
        for _op in pickletools.genops(stream):
            pass
    cut = stream.tell()
    for _op in pickletools.genops(stream):  # the system info pickle
        pass
    marker = tmp_path / "MARKER"
    path = write(tmp_path, "evil.ckpt", data[:cut] + exec_pickle(marker, 2) + data[stream.tell() :])
    scan = scan_pickle_file(path)
    assert scan.kind == "torch-legacy" and scan.dangerous == ["builtins.exec"]
    assert not marker.exists()


def test_second_pickle_in_a_row_is_scanned(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    data = pickle.dumps({"a": 1}, protocol=2) + exec_pickle(marker, 4)
    scan = scan_pickle_file(write(tmp_path, "two.pkl", data))
    assert scan.kind == "pickle" and scan.dangerous == ["builtins.exec"]
    assert "2 pickles in a row" in scan.notes and "protocols 2, 4" in scan.notes


def test_truncated_malicious_pickle_is_still_dangerous(tmp_path: Path) -> None:
    """The unpickler runs exec before it notices the missing STOP, so the damage does not make it harmless."""
    marker = tmp_path / "MARKER"
    path = write(tmp_path, "cut.pkl", os_system_proto0(marker)[:-1])
    with pytest.raises(errors.UnsafePickleError, match=r"damaged pickle .* would import os\.system") as caught:
        scan_pickle_file(path)
    assert caught.value.dangerous == ["os.system"]
    assert not marker.exists()


def frame_straddle(marker: Path) -> bytes:
    """A pickle that pickle.loads() reads as a harmless string but pickle.load(file) (and torch.load) reads as
    exec(...): a string argument starts inside a FRAME and ends past it. From a file, the C unpickler drops the
    in-frame part and reads the whole argument from after the frame, so the two parse different opcodes."""
    code = exec_code(marker)
    head, tail = b"cbuiltins\nexec\n(V", b"\ntR"
    payload = head + code.ljust(256 - len(head) - len(tail)).encode() + tail  # 256 bytes: the length is ASCII
    assert len(payload) == 256
    hidden = b"X" + struct.pack("<I", len(payload))  # linear view: a string swallowing the payload
    inside = b"\x8c" + bytes([len(hidden) + 2]) + b"abcde"  # 5 of the string's 7 bytes are inside the frame
    return proto(4) + b"\x95" + struct.pack("<Q", len(inside)) + inside + b"fg" + hidden + payload + POP + STOP


def test_frame_straddle_payloads_are_really_malicious(tmp_path: Path) -> None:
    marker = tmp_path / "CONTROL"
    data = frame_straddle(marker)
    assert pickle.loads(data) == "abcdefg" and not marker.exists()  # what a linear reader sees
    pickle.load(io.BytesIO(data))  # deliberately: what torch.load and pickle.load(file) do
    assert marker.exists()
    assert "STACK_GLOBAL" not in ops(data) and "GLOBAL" not in ops(data)  # pickletools sees no import at all


def test_opcode_across_a_frame_boundary_is_flagged(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    path = write(tmp_path, "framed.pt", frame_straddle(marker))
    scan = scan_pickle_file(path)
    assert scan.dangerous == [FRAME_STRADDLE] and scan.globals == []
    assert any("runs past the end of its frame" in note for note in scan.notes)
    with pytest.raises(errors.UnsafePickleError, match="across a pickle frame boundary"):
        raise_if_dangerous(scan, path)
    nested = proto(4) + b"\x95" + struct.pack("<Q", 11) + b"\x95" + struct.pack("<Q", 2) + b"N."
    assert scan_pickle_file(write(tmp_path, "nested.pkl", nested)).dangerous == [FRAME_STRADDLE]
    assert not marker.exists()


def test_real_multi_frame_pickles_are_not_flagged(tmp_path: Path) -> None:
    value = {"blob": b"x" * 300_000, "numbers": list(range(60_000)), "names": [f"k{i}" for i in range(20_000)]}
    for protocol in (4, 5):
        data = pickle.dumps(value, protocol=protocol)
        assert sum(op.name == "FRAME" for op, _, _ in pickletools.genops(data)) > 3
        scan = scan_pickle_file(write(tmp_path, f"frames{protocol}.pkl", data))
        assert scan.dangerous == [], scan.notes


# --- STACK_GLOBAL, INST, OBJ, EXT, compat names ----------------------------------------------------------------


def test_stack_global_resolved_from_memo_when_safe(tmp_path: Path) -> None:
    data = (
        proto(4) + text("collections") + MEMOIZE + text("OrderedDict") + MEMOIZE + POP + POP
        + binget(0) + binget(1) + STACK_GLOBAL + EMPTY_TUPLE + REDUCE + STOP
    )  # fmt: skip
    scan = scan_pickle_file(write(tmp_path, "od.pkl", data))
    assert scan.globals == ["collections.OrderedDict"] and scan.dangerous == []
    assert pickle.loads(data) == collections.OrderedDict()  # our own benign bytes


def test_unresolvable_stack_global_is_flagged(tmp_path: Path) -> None:
    scan = scan_pickle_file(write(tmp_path, "u.pkl", unresolvable_stack_global(tmp_path / "never")))
    assert scan.dangerous == [UNRESOLVED]
    assert "builtins.str" in scan.globals and UNRESOLVED in scan.globals
    assert any(note.startswith("unresolvable STACK_GLOBAL argument at byte") for note in scan.notes)


def test_memo_indexes_are_read_like_the_c_unpickler(tmp_path: Path) -> None:
    """GET/PUT indexes are C strings to the unpickler: "0\\x00junk" is 0. INT accepts almost anything."""
    data = b"Vos\np0\x00junk\n0Vsystem\np1\n0g0\x00\ng1\n" + STACK_GLOBAL + b"I\x00\n0."
    assert pickle.loads(data) is os.system  # our own bytes; they only name os.system
    scan = scan_pickle_file(write(tmp_path, "nul.pkl", data))
    assert scan.dangerous == ["os.system"] and not scan.calls_dangerous


def test_inst_and_obj_import_and_call(tmp_path: Path) -> None:
    inst = MARK + b"S'echo'\n" + b"ios\nsystem\n" + STOP
    obj = MARK + global_op("os", "system") + b"S'echo'\n" + b"o" + STOP
    for name, data in {"inst.pkl": inst, "obj.pkl": obj}.items():
        scan = scan_pickle_file(write(tmp_path, name, data))
        assert scan.dangerous == ["os.system"] and scan.calls_dangerous, name


def test_extension_codes_cannot_be_resolved(tmp_path: Path) -> None:
    data = proto(2) + b"\x82\x07" + EMPTY_TUPLE + REDUCE + STOP
    scan = scan_pickle_file(write(tmp_path, "ext.pkl", data))
    assert scan.dangerous == ["<extension 7>"] and scan.calls_dangerous


def test_python2_names_are_mapped_like_the_unpickler_does(tmp_path: Path) -> None:
    old = global_op("__builtin__", "eval") + b"(S'1'\ntR."
    assert scan_pickle_file(write(tmp_path, "p0.pkl", old)).dangerous == ["builtins.eval"]
    new = proto(3) + global_op("__builtin__", "set") + POP + b"N."  # protocol 3+: no mapping, no such module
    assert scan_pickle_file(write(tmp_path, "p3.pkl", new)).dangerous == ["__builtin__.set"]


def test_model_checkpoint_key_is_allowed_only_while_not_called(tmp_path: Path) -> None:
    """SD 1.x .ckpt files key their callbacks dict by the pytorch-lightning ModelCheckpoint class."""
    checkpoint = global_op("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint")
    as_key = proto(2) + EMPTY_DICT + text("callbacks") + EMPTY_DICT + checkpoint + EMPTY_DICT + SETITEM + SETITEM
    scan = scan_pickle_file(write(tmp_path, "sd.ckpt", as_key + STOP))
    assert scan.dangerous == [] and scan.globals == ["pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"]
    called = proto(2) + checkpoint + EMPTY_TUPLE + REDUCE + STOP
    scan = scan_pickle_file(write(tmp_path, "called.ckpt", called))
    assert scan.dangerous == ["pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"]
    assert scan.calls_dangerous


# --- damaged and foreign files ---------------------------------------------------------------------------------


def test_truncated_state_dict_pickle(tmp_path: Path) -> None:
    data = pickle.dumps(collections.OrderedDict({LORA_KEY: [0.0] * 64}), protocol=2)
    with pytest.raises(errors.TruncatedFileError, match="ends"):
        scan_pickle_file(write(tmp_path, "cut.pkl", data[: len(data) // 2]))


def test_truncated_legacy_file(tmp_path: Path, torch: Any) -> None:
    path = tmp_path / "cut.ckpt"
    torch.save({LORA_KEY: torch.zeros(4, 8)}, path, _use_new_zipfile_serialization=False)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(errors.TruncatedFileError, match="legacy torch file"):
        scan_pickle_file(path)


def test_truncated_torch_zip(tmp_path: Path, torch: Any) -> None:
    path = tmp_path / "cut.pt"
    torch.save({LORA_KEY: torch.zeros(64, 64)}, path)
    path.write_bytes(path.read_bytes()[:4000])
    with pytest.raises(errors.TruncatedFileError, match="end-of-archive"):
        scan_pickle_file(path)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\x00\x01\x02 not a pickle at all", errors.UnsupportedFileError),
        (b"hello world, this is a text file\n", errors.UnsupportedFileError),
        (b"\x89PNG\r\n\x1a\n" + bytes(64), errors.UnsupportedFileError),
        (b"\x80\x02\xff\xfe\xfd", errors.InvalidFileError),
        (b"\x80\x09N.", errors.InvalidFileError),
        (b"\x80\x02h\x05.", errors.InvalidFileError),  # BINGET of a slot never written
        (b"\x80\x02R.", errors.InvalidFileError),  # REDUCE on an empty stack
        (b"\x80\x02t.", errors.InvalidFileError),  # TUPLE without MARK
        (b"\x80\x02X\xff\xff\x00\x00ab.", errors.TruncatedFileError),
        (b"\x80\x04\x95\xff\x00\x00\x00\x00\x00\x00\x00N.", errors.TruncatedFileError),  # FRAME past the end
    ],
    ids=["binary", "text", "png", "bad-opcode", "protocol-9", "memo", "underflow", "no-mark", "string", "frame"],
)
def test_damaged_or_foreign_bytes(tmp_path: Path, data: bytes, error: type[errors.LorahubError]) -> None:
    with pytest.raises(errors.LorahubError) as caught:
        scan_pickle_file(write(tmp_path, "x.bin", data))
    assert type(caught.value) is error, caught.value
    assert str(tmp_path / "x.bin") in str(caught.value)
    assert caught.value.hint


def test_empty_zip(tmp_path: Path) -> None:
    path = tmp_path / "empty.pt"
    zipfile.ZipFile(path, "w").close()
    with pytest.raises(errors.UnsupportedFileError, match="empty zip archive") as caught:
        scan_pickle_file(path)
    assert type(caught.value) is errors.UnsupportedFileError


def test_zip_without_pickle(tmp_path: Path) -> None:
    path = tmp_path / "notes.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/readme.txt", "hello")
        archive.writestr("archive/data/0", bytes(16))
    with pytest.raises(errors.UnsupportedFileError, match=r"no \.pkl member \(archive/readme\.txt") as caught:
        scan_pickle_file(path)
    assert type(caught.value) is errors.UnsupportedFileError


def test_zip_with_damaged_pickle_member(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.pt", in_torch_zip(b"\x80\x02}q\x00(X\x01"))
    with pytest.raises(errors.TruncatedFileError, match=r"zip member archive/data\.pkl"):
        scan_pickle_file(path)


def test_zip_member_with_bad_crc(tmp_path: Path) -> None:
    data = bytearray(in_torch_zip(pickle.dumps({"a": 1}, protocol=2)))
    # inside data.pkl's bytes, which are stored uncompressed: searched from the member's name, since a "}" byte can
    # also be in the header before it (the DOS modification time of any minute's 58th and 59th second)
    at = data.index(b"}", data.index(b"archive/data.pkl"))
    data[at] = ord("]")
    with pytest.raises(errors.InvalidFileError, match="damaged zip archive"):
        scan_pickle_file(write(tmp_path, "crc.pt", bytes(data)))


def test_path_errors(tmp_path: Path) -> None:
    with pytest.raises(errors.PathNotFoundError):
        scan_pickle_file(tmp_path / "missing.ckpt")
    with pytest.raises(errors.NotAFileError):
        scan_pickle_file(tmp_path)
    with pytest.raises(errors.EmptyFileError):
        scan_pickle_file(write(tmp_path, "empty.ckpt", b""))
    with pytest.raises(errors.EmptyFileError):
        scan_pickle_bytes(b"")


# --- limits ----------------------------------------------------------------------------------------------------


def test_member_larger_than_the_limit_is_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A zip bomb: a small deflated member that inflates past the limit is never read into memory."""
    monkeypatch.setattr(pickles, "MAX_MEMBER_BYTES", 1024 * 1024)
    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02N" + bytes(4 * 1024 * 1024) + b".")
    assert path.stat().st_size < 64 * 1024
    scan = scan_pickle_file(path)
    assert scan.dangerous == [NOT_FULLY_SCANNED] and scan.members == []
    assert any("over the 1,048,576 limit" in note for note in scan.notes)
    with pytest.raises(errors.UnsafePickleError, match="not fully scanned"):
        raise_if_dangerous(scan, path)


def test_opcode_limit(tmp_path: Path, torch: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "many.pt"
    torch.save({f"t{i}": torch.zeros(1) for i in range(20)}, path)
    assert scan_pickle_file(path).is_safe
    monkeypatch.setattr(pickles, "MAX_OPCODES", 50)
    scan = scan_pickle_file(path)
    assert scan.dangerous == [NOT_FULLY_SCANNED]
    assert any("stopped after 50 opcodes" in note for note in scan.notes)


def test_pickles_in_a_row_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pickles, "MAX_PICKLES", 3)
    scan = scan_pickle_file(write(tmp_path, "row.pkl", pickle.dumps(1, protocol=2) * 5))
    assert scan.dangerous == [NOT_FULLY_SCANNED]


def test_zip_directory_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pickles, "MAX_ZIP_DIRECTORY_BYTES", 10)
    with pytest.raises(errors.InvalidFileError, match="zip directory claims"):
        scan_pickle_file(write(tmp_path, "dir.pt", in_torch_zip(pickle.dumps(1, protocol=2))))


def test_trailing_garbage_after_a_pickle_is_noted_not_fatal(tmp_path: Path) -> None:
    scan = scan_pickle_file(write(tmp_path, "tail.pkl", pickle.dumps([1], protocol=2) + b"\xff\xfe junk"))
    assert scan.is_safe
    assert any("trailing bytes" in note for note in scan.notes)


# --- routing and the allow-list --------------------------------------------------------------------------------


def test_looks_like_pickle(tmp_path: Path, torch: Any) -> None:
    zipped, legacy = tmp_path / "z.pt", tmp_path / "l.pt"
    torch.save({"a": torch.zeros(1)}, zipped)
    torch.save({"a": torch.zeros(1)}, legacy, _use_new_zipfile_serialization=False)
    torch.save({"a": torch.zeros(1)}, tmp_path / "p0.pt", _use_new_zipfile_serialization=False, pickle_protocol=1)
    for path in (zipped, legacy, tmp_path / "p0.pt"):
        assert looks_like_pickle(path.read_bytes()[:64]), path
    for protocol in (2, 3, 4, 5):
        assert looks_like_pickle(pickle.dumps({}, protocol=protocol))
    for prefix in (b"", b"\x80", b"\x80\x06", b"\x80\x01", b'{"a": 1}', b"\x08\x00\x00\x00\x00\x00\x00\x00{}"):
        assert not looks_like_pickle(prefix), prefix
    assert scan_pickle_file(tmp_path / "p0.pt").kind == "torch-legacy"


def test_allow_list_and_known_dangerous_are_disjoint() -> None:
    assert not [name for name in SAFE | IMPORT_ONLY if is_known_dangerous(name)]
    for name in ("os.system", "posix.system", "nt.system", "subprocess.Popen", "builtins.exec", "builtins.eval"):
        assert is_known_dangerous(name) and name not in SAFE, name
    for name in (
        "builtins.getattr",
        "builtins.__import__",
        "sys.modules",
        "importlib.import_module",
        "runpy._run_code",
    ):
        assert is_known_dangerous(name), name
    for name in ("pty.spawn", "socket.socket", "shutil.rmtree", "webbrowser.open", "pickle.loads", "_pickle.loads"):
        assert is_known_dangerous(name), name
    for name in ("marshal.loads", "types.FunctionType", "operator.attrgetter", "operator.methodcaller", "os.path.join"):
        assert is_known_dangerous(name), name
    assert not is_known_dangerous("collections.OrderedDict")


def test_allowed_torch_globals_exist(torch: Any) -> None:
    """No typo in the allow-list: every torch name resolves in this torch (dtypes new to it may be missing)."""
    import importlib

    missing = []
    for module, names in SAFE_GLOBALS.items():
        if not module.startswith("torch"):
            continue
        imported = importlib.import_module(module)
        missing += [f"{module}.{name}" for name in names if not hasattr(imported, name)]
    assert missing == []


def test_scan_is_frozen(tmp_path: Path) -> None:
    scan = scan_pickle_file(write(tmp_path, "one.pkl", pickle.dumps(1, protocol=4)))
    assert isinstance(scan, PickleScan) and scan.kind == "pickle" and scan.globals == []
    with pytest.raises(AttributeError):
        scan.kind = "torch-zip"  # type: ignore[misc]


# --- soundness against the real unpickler, on hostile bytes ----------------------------------------------------


class _Inert:
    """What the oracle builds instead of anything real."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass

    def add(self, item: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass


class _Oracle(pickle.Unpickler):
    """The C unpickler torch.load uses, with find_class replaced so that it imports nothing: it records every
    global asked for and every call made on one, and hands back inert stand-ins."""

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.imported: list[tuple[str, str]] = []
        self.called: list[tuple[str, str]] = []

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        self.imported.append(key)
        called = self.called

        class Fake(_Inert):
            def __new__(cls, *args: Any, **kwargs: Any) -> Any:
                called.append(key)
                return object.__new__(cls)

            def __setstate__(self, state: Any) -> None:
                called.append(key)

        return Fake

    def persistent_load(self, pid: Any) -> Any:
        return _Inert()


def _grows_a_huge_memo(data: bytes) -> bool:
    """The C unpickler sizes its memo array by the largest PUT index: skip inputs that would take gigabytes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # invalid escapes in mutated STRING arguments
        try:
            for op, arg, _ in pickletools.genops(data):
                if op.name in ("PUT", "LONG_BINPUT") and isinstance(arg, int) and arg > 100_000:
                    return True
        except Exception:  # genops stops at the damage, as the oracle does
            return False
    return False


def _spellings(module: str, name: str) -> set[str]:
    """The global as the scan may name it: with or without pickle's Python 2 mapping (protocol < 3)."""
    mapped_module, mapped_name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
    if (module, name) not in _compat_pickle.NAME_MAPPING:
        mapped_module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    return {f"{module}.{name}", f"{mapped_module}.{mapped_name}"}


def _seeds() -> list[bytes]:
    marker = Path("/nonexistent/never")
    benign = [
        collections.OrderedDict({LORA_KEY: [1.0, 2.0], "alpha": 4}),
        {"nested": [{1, 2}, frozenset({3}), (1, 2, 3), b"bytes", "text", 1.5, None, True]},
    ]
    seeds = [pickle.dumps(value, protocol=protocol) for value in benign for protocol in range(6)]
    seeds += [payload(marker) for payload in PAYLOADS.values()] + [os_system_proto0(marker)]
    return seeds


SEEDS = _seeds()


@st.composite
def hostile_bytes(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "splice"]))
        if action == "flip":
            data[at] = draw(st.integers(0, 255))
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif action == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif action == "truncate":
            del data[at:]
        else:
            other = draw(st.sampled_from(SEEDS))
            data[at:] = other[draw(st.integers(0, len(other) - 1)) :]
    return bytes(data)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(hostile_bytes(), st.binary(min_size=1, max_size=200)))
def test_scan_sees_whatever_the_unpickler_would_import(data: bytes) -> None:
    """Property: on any bytes, the scanner raises only lorahub errors, and every global the real (C) unpickler
    would ask for before it stops is one the scan names, or the scan refuses the bytes anyway."""
    assume(not _grows_a_huge_memo(data))
    oracle = _Oracle(data)
    with contextlib.suppress(Exception), warnings.catch_warnings():  # stopping is expected: what it saw counts
        warnings.simplefilter("ignore", DeprecationWarning)
        oracle.load()
    unsafe_seen = [key for key in oracle.imported if not _spellings(*key) & (SAFE | IMPORT_ONLY)]
    try:
        scan = scan_pickle_bytes(data)
    except errors.UnsafePickleError as exc:
        assert exc.dangerous
        return
    except errors.InvalidFileError:
        # "damaged, and nothing dangerous before the damage": the unpickler must not have reached anything either
        assert unsafe_seen == []
        return
    if not scan.dangerous:
        assert unsafe_seen == [], (unsafe_seen, scan)
    if any(name.startswith("<") for name in scan.dangerous):
        return  # the scan could not follow the unpickler (and says so), so it vouches for nothing
    names = set(scan.globals)
    for key in oracle.imported:
        assert _spellings(*key) & names, (key, scan)
    if any(not _spellings(*key) & SAFE for key in oracle.called):
        assert scan.calls_dangerous, (oracle.called, scan)


def _zip_seeds() -> list[bytes]:
    seeds = []
    for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", method) as archive:
            archive.writestr("archive/data.pkl", pickle.dumps(collections.OrderedDict(a=[1.0] * 8), protocol=2))
            archive.writestr("archive/data/0", bytes(64))
            archive.writestr("archive/version", "3\n")
        seeds.append(buffer.getvalue())
    return seeds


ZIP_SEEDS = _zip_seeds()


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(ZIP_SEEDS), st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=4))
def test_damaged_zip_archives_raise_only_lorahub_errors(seed: bytes, edits: list[tuple[float, int]]) -> None:
    data = bytearray(seed)
    for where, value in edits:
        data[int(where * (len(data) - 1))] = value
    try:
        scan = scan_pickle_bytes(bytes(data))
    except errors.LorahubError as exc:
        assert isinstance(exc, errors.InvalidFileError)
        return
    assert scan.kind in ("torch-zip", "pickle", "torch-legacy")
