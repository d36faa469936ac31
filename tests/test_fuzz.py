"""Hostile and damaged files: only lorahub errors escape, nothing hangs, memory stays bounded.

The watchdog (an interval timer) exists to turn a hang into a failure; it is not a performance assertion.
"""

from __future__ import annotations

import json
import signal
import struct
import tempfile
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lorahub
from lorahub.errors import LorahubError
from lorahub.files.safetensors import write

HANG_SECONDS = 10
MEMORY_LIMIT = 64 * 1024 * 1024
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _seed_file() -> bytes:
    rng = np.random.default_rng(0)
    tensors: dict[str, tuple[str, tuple[int, ...], bytes]] = {}
    for i, (fan_in, fan_out) in enumerate([(320, 320), (768, 640), (1280, 1280)]):
        key = f"lora_unet_down_blocks_{i}_attentions_0_transformer_blocks_0_attn2_to_k"
        tensors[f"{key}.lora_down.weight"] = (
            "F16",
            (4, fan_in),
            rng.standard_normal((4, fan_in)).astype("f2").tobytes(),
        )
        tensors[f"{key}.lora_up.weight"] = (
            "F16",
            (fan_out, 4),
            rng.standard_normal((fan_out, 4)).astype("f2").tobytes(),
        )
        tensors[f"{key}.alpha"] = ("F32", (), np.float32(2).tobytes())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "seed.safetensors"
        write(path, tensors, {"ss_base_model_version": "sd_v1", "sshs_model_hash": "0x00"})
        return path.read_bytes()


SEED = _seed_file()
HEADER_END = 8 + struct.unpack("<Q", SEED[:8])[0]


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise TimeoutError("inspect did not finish: a hang")


@contextmanager
def _guarded() -> Iterator[None]:
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, HANG_SECONDS)
    tracemalloc.start()
    try:
        yield
        _, peak = tracemalloc.get_traced_memory()
        assert peak < MEMORY_LIMIT, f"inspect used {peak:,} bytes"
    finally:
        tracemalloc.stop()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _judge(content: bytes, suffix: str = ".safetensors") -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"fuzz{suffix}"
        path.write_bytes(content)
        with _guarded():
            try:
                report = lorahub.inspect(path)
            except LorahubError as error:
                assert error.code and error.hint, f"{type(error).__name__} without code or hint"
            else:
                assert report.hashes.sha256


@FUZZ
@given(st.integers(min_value=0, max_value=len(SEED) - 1))
def test_truncated_anywhere(cut: int) -> None:
    _judge(SEED[:cut])


@FUZZ
@given(st.lists(st.tuples(st.integers(0, HEADER_END - 1), st.integers(0, 255)), min_size=1, max_size=8))
def test_header_bytes_flipped(flips: list[tuple[int, int]]) -> None:
    content = bytearray(SEED)
    for position, value in flips:
        content[position] = value
    _judge(bytes(content))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=25,
)
ENTRIES = st.fixed_dictionaries(
    {},
    optional={
        "dtype": st.sampled_from(["F16", "F32", "BF16", "F8_E4M3", "F4", "I64", "XX"]) | JSON_VALUES,
        "shape": st.lists(st.integers(-2, 2**40), max_size=4) | JSON_VALUES,
        "data_offsets": st.lists(st.integers(-2, 2**40), max_size=3) | JSON_VALUES,
    },
)


@FUZZ
@given(
    st.dictionaries(st.text(max_size=60), ENTRIES | JSON_VALUES, max_size=6),
    st.binary(max_size=4096),
    st.booleans(),
)
def test_arbitrary_headers(entries: dict[str, object], data: bytes, lie_about_length: bool) -> None:
    header = json.dumps(entries).encode()
    length = len(header) + (17 if lie_about_length else 0)
    _judge(struct.pack("<Q", length) + header + data)


@FUZZ
@given(st.binary(max_size=2048), st.sampled_from([".safetensors", ".ckpt", ".pt", ".bin"]))
def test_random_bytes_under_any_name(content: bytes, suffix: str) -> None:
    _judge(content, suffix)


@FUZZ
@given(st.binary(min_size=1, max_size=512))
def test_pickle_and_zip_lookalikes(tail: bytes) -> None:
    _judge(b"\x80\x04" + tail, ".ckpt")
    _judge(b"PK\x03\x04" + tail, ".pt")
