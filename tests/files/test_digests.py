"""Every hash against an independent computation, the shared table and Civitai's test vectors."""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from pathlib import Path

import blake3
import numpy as np
import pytest
from safetensors.numpy import load_file

from lorahub.files import digests
from lorahub.files.digests import check_claims, content_digest, digest_file
from lorahub.files.safetensors import read_header, write
from tests.support import REAL_FILES, raw_safetensors, real_file


@pytest.mark.parametrize("name", sorted(REAL_FILES))
def test_real_files_match_the_published_table(name: str) -> None:
    path = real_file(name)
    hashes = digest_file(path, read_header(path)).hashes
    expected = REAL_FILES[name]
    assert hashes.sha256 == expected["sha256"]
    assert hashes.autov2 == expected["sha256"][:10]
    assert hashes.autov3 == expected["autov3"]
    assert hashes.autov1 == expected["autov1"]
    data = path.read_bytes()
    assert hashes.crc32 == f"{zlib.crc32(data):08x}"
    assert hashes.blake3 == blake3.blake3(data).hexdigest()


@pytest.mark.parametrize("name", sorted(REAL_FILES))
def test_content_digest_matches_an_independent_computation(name: str) -> None:
    path = real_file(name)
    header = read_header(path)
    arrays = load_file(str(path))
    entries = [
        (header.tensors[k], hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()) for k, a in arrays.items()
    ]
    assert digest_file(path, header).hashes.content == content_digest(entries)


def test_civitai_test_vectors(tmp_path: Path) -> None:
    path = tmp_path / "hello.txt"
    path.write_bytes(b"hello world")
    hashes = digest_file(path).hashes
    assert hashes.sha256 == "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
    assert hashes.autov2 == "b94d27b993"
    assert hashes.autov1 is None
    assert hashes.crc32 == "0d4a1185"  # zlib, 7-zip and `crc32` order
    assert bytes.fromhex(hashes.crc32)[::-1].hex() == "85114a0d"  # Civitai prints the same bytes little-endian
    assert hashes.blake3 == "d74981efa70a0c880b8d8c1985d075dbcbf679b99a5f9914e5aaf96b831a9e24"
    assert hashes.autov3 is None and hashes.content is None


def test_autov1_is_the_64k_window_at_one_mib(tmp_path: Path) -> None:
    data = np.random.default_rng(1).integers(0, 255, 3 * 1024 * 1024, dtype=np.uint8).tobytes()
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    assert digest_file(path).hashes.autov1 == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]


def _two_tensor_file(path: Path, order: tuple[str, str], metadata: dict[str, str] | None = None) -> Path:
    arrays = {"a.weight": np.arange(6, dtype=np.float16), "b.weight": np.ones(3, dtype=np.float32)}
    entries: dict[str, object] = {"__metadata__": metadata or {}}
    blobs, offset = [], 0
    for key in order:
        raw = arrays[key].tobytes()
        dtype = "F16" if arrays[key].dtype == np.float16 else "F32"
        entries[key] = {"dtype": dtype, "shape": list(arrays[key].shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    path.write_bytes(raw_safetensors(entries, b"".join(blobs)))
    return path


def _hashes(path: Path) -> digests.Hashes:
    return digest_file(path, read_header(path)).hashes


def test_content_digest_ignores_metadata_and_physical_order_but_not_names(tmp_path: Path) -> None:
    base = _hashes(_two_tensor_file(tmp_path / "1.safetensors", ("a.weight", "b.weight")))
    reordered = _hashes(_two_tensor_file(tmp_path / "2.safetensors", ("b.weight", "a.weight")))
    edited = _hashes(_two_tensor_file(tmp_path / "3.safetensors", ("a.weight", "b.weight"), {"ss_output_name": "x"}))
    assert base.content == reordered.content == edited.content
    assert base.autov3 == edited.autov3 != reordered.autov3
    assert base.sha256 != edited.sha256
    renamed = tmp_path / "4.safetensors"
    renamed.write_bytes((tmp_path / "1.safetensors").read_bytes().replace(b'"b.weight"', b'"c.weight"'))
    assert _hashes(renamed).content != base.content
    assert _hashes(renamed).autov3 == base.autov3


def test_value_checks_across_dtypes_and_chunk_boundaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    finite = np.linspace(-1, 1, 1001, dtype=np.float32)
    with_nan = finite.copy()
    with_nan[777] = np.nan
    with_inf = finite.copy()
    with_inf[5] = np.inf
    bf16 = lambda a: (a.view(np.uint32) >> 16).astype(np.uint16).tobytes()  # noqa: E731 - truncating cast
    tensors = {
        "f16_ok": ("F16", (1001,), finite.astype(np.float16).tobytes()),
        "f16_nan": ("F16", (1001,), with_nan.astype(np.float16).tobytes()),
        "bf16_inf": ("BF16", (1001,), bf16(with_inf)),
        "bf16_ok": ("BF16", (1001,), bf16(finite)),
        "f32_inf": ("F32", (1001,), with_inf.tobytes()),
        "f32_zero": ("F32", (1001,), bytes(4004)),
        "f16_zero": ("F16", (7,), bytes(14)),
    }
    path = tmp_path / "values.safetensors"
    write(path, tensors)
    header = read_header(path)
    reference = digest_file(path, header)
    monkeypatch.setattr(digests, "CHUNK_BYTES", 333)  # odd: elements straddle chunk edges
    chunked = digest_file(path, header)
    assert chunked == reference
    flagged = {name for name, check in chunked.tensors.items() if check.non_finite}
    zeros = {name for name, check in chunked.tensors.items() if check.all_zero}
    assert flagged == {"f16_nan", "bf16_inf", "f32_inf"}
    assert zeros == {"f32_zero", "f16_zero"}


def test_claims_are_checked_not_trusted() -> None:
    autov3 = "ab" * 32
    claims = {c.key: c for c in check_claims({"sshs_model_hash": "0x" + autov3.upper()}, autov3)}
    assert claims["sshs_model_hash"].status == "match"
    assert claims["modelspec.hash_sha256"].status == "absent"
    wrong = check_claims({"modelspec.hash_sha256": "0x" + digests.EMPTY_SHA256}, autov3)[1]
    assert wrong.status == "mismatch"
    assert wrong.note is not None and "ai-toolkit" in wrong.note


def test_empty_tensors_and_header_only_files(tmp_path: Path) -> None:
    path = tmp_path / "empty-tensor.safetensors"
    path.write_bytes(raw_safetensors({"x": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}}, b""))
    digest = digest_file(path, read_header(path))
    assert digest.hashes.autov3 == hashlib.sha256(b"").hexdigest()
    assert digest.tensors["x"].sha256 == hashlib.sha256(b"").hexdigest()
    assert json.loads(path.read_bytes()[8:].decode())["x"]["shape"] == [0]
    assert struct.unpack("<Q", path.read_bytes()[:8])[0] % 8 == 0
