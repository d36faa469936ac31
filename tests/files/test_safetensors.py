"""The strict reader and the atomic writer, against the safetensors library and the shared real files."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from lorahub import errors
from lorahub.files.safetensors import MAX_HEADER_BYTES, SafetensorsFile, read_header, write
from tests.support import REAL_FILES, raw_safetensors, real_file


@pytest.mark.parametrize("name", sorted(REAL_FILES))
def test_real_files_parse_like_the_safetensors_library(name: str) -> None:
    path = real_file(name)
    header = read_header(path)
    reference = load_file(str(path))
    assert len(header.tensors) == REAL_FILES[name]["tensors"] == len(reference)
    assert header.file_size == REAL_FILES[name]["size"]
    assert header.unreferenced_bytes == 0
    with SafetensorsFile(path) as container:
        for key, array in reference.items():
            assert header.tensors[key].shape == array.shape
            np.testing.assert_array_equal(container.array(key), array)


def test_writer_output_is_read_by_the_safetensors_library(tmp_path: Path) -> None:
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = np.ones((2,), dtype=np.float16)
    path = tmp_path / "out.safetensors"
    write(path, {"b": ("F16", b.shape, b.tobytes()), "a": ("F32", a.shape, a.tobytes())}, {"note": "hi"})
    loaded = load_file(str(path))
    np.testing.assert_array_equal(loaded["a"], a)
    np.testing.assert_array_equal(loaded["b"], b)
    header = read_header(path)
    assert header.metadata == {"note": "hi"}
    assert header.header_length % 8 == 0


def test_write_replaces_atomically_and_leaves_no_temp_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "out.safetensors"
    save_file({"x": np.zeros(4, dtype=np.float32)}, str(path))
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write(path, {"x": ("F32", (1,), 12345)})  # type: ignore[dict-item]
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.safetensors"]


def _entry(dtype: str, shape: list[int], begin: int, end: int) -> dict[str, object]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


BAD_FILES: dict[str, tuple[bytes, type[errors.LorahubError]]] = {
    "empty": (b"", errors.EmptyFileError),
    "shorter than the length": (b"\x01\x02\x03", errors.TruncatedFileError),
    "header longer than file": (struct.pack("<Q", 500) + b"{}", errors.TruncatedFileError),
    "header over the limit": (struct.pack("<Q", MAX_HEADER_BYTES + 1) + b"{}", errors.HeaderTooLargeError),
    "not json": (struct.pack("<Q", 5) + b"{,,,}", errors.HeaderJSONError),
    "not utf-8": (struct.pack("<Q", 3) + b'"\xff"', errors.HeaderJSONError),
    "json array": (struct.pack("<Q", 2) + b"[]", errors.HeaderSchemaError),
    "unknown dtype": (raw_safetensors({"x": _entry("F128", [1], 0, 16)}, bytes(16)), errors.UnknownDtypeError),
    "negative shape": (raw_safetensors({"x": _entry("F32", [-1], 0, 4)}, bytes(4)), errors.HeaderSchemaError),
    "float shape": (raw_safetensors({"x": _entry("F32", [1.0], 0, 4)}, bytes(4)), errors.HeaderSchemaError),
    "offsets past the end": (raw_safetensors({"x": _entry("F32", [2], 0, 8)}, bytes(4)), errors.TensorOffsetsError),
    "offsets reversed": (raw_safetensors({"x": _entry("F32", [0], 4, 0)}, bytes(4)), errors.TensorOffsetsError),
    "size mismatch": (raw_safetensors({"x": _entry("F32", [3], 0, 8)}, bytes(8)), errors.TensorSizeError),
    "overlap": (
        raw_safetensors({"x": _entry("F32", [2], 0, 8), "y": _entry("F32", [2], 4, 12)}, bytes(12)),
        errors.TensorOverlapError,
    ),
    "metadata not strings": (raw_safetensors({"__metadata__": {"a": 1}}, b""), errors.MetadataError),
    "duplicate names": (
        struct.pack("<Q", 2 * 65 + 3)
        + (b'{"x":' + json.dumps(_entry("F32", [1], 0, 4)).encode() + b',"x":')
        + json.dumps(_entry("F32", [1], 0, 4)).encode()
        + b"}",
        errors.HeaderSchemaError,
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_each_damage_has_its_own_error_and_hint(tmp_path: Path, case: str) -> None:
    content, expected = BAD_FILES[case]
    if case == "duplicate names":  # build with the exact header length
        body = content[8:]
        content = struct.pack("<Q", len(body)) + body + bytes(4)
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(expected) as caught:
        read_header(path)
    assert type(caught.value) is expected
    assert caught.value.hint


def test_path_errors(tmp_path: Path) -> None:
    with pytest.raises(errors.PathNotFoundError):
        read_header(tmp_path / "missing.safetensors")
    with pytest.raises(errors.NotAFileError):
        read_header(tmp_path)


def test_bytes_no_tensor_covers_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "gap.safetensors"
    path.write_bytes(raw_safetensors({"x": _entry("F32", [1], 8, 12)}, bytes(16)))
    assert read_header(path).unreferenced_bytes == 12
