"""Tensor bytes as numpy arrays, without torch.

numpy has no bfloat16 or float8, so those are widened to float32 by bit manipulation and lookup tables:
inspect and verify must work on a machine with no torch.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class TensorInfo(Protocol):
    """What these functions read of a tensor entry (:class:`lorahub.files.safetensors.TensorInfo` has it): stated
    here so that the container module may use these functions without the two depending on each other."""

    @property
    def dtype(self) -> str: ...

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def numel(self) -> int: ...


_NATIVE: dict[str, str] = {
    "BOOL": "?",
    "U8": "u1",
    "I8": "i1",
    "I16": "<i2",
    "U16": "<u2",
    "F16": "<f2",
    "I32": "<i4",
    "U32": "<u4",
    "F32": "<f4",
    "C64": "<c8",
    "F64": "<f8",
    "I64": "<i8",
    "U64": "<u8",
    "BF16": "<u2",
    "F8_E4M3": "u1",
    "F8_E5M2": "u1",
    "F8_E8M0": "u1",
}


def as_numpy(raw: memoryview, info: TensorInfo) -> Any:
    """A read-only view of the tensor in its storage type (bf16/fp8 as unsigned ints of the same width)."""
    if info.dtype not in _NATIVE:
        raise ValueError(f"no numpy view for {info.dtype}")
    return np.frombuffer(raw, dtype=np.dtype(_NATIVE[info.dtype])).reshape(info.shape)


def _fp8_table(exponent_bits: int, mantissa_bits: int, *, finite_only: bool) -> Any:
    codes = np.arange(256, dtype=np.uint32)
    sign = np.where(codes >> 7, -1.0, 1.0)
    exponent = (codes >> mantissa_bits) & ((1 << exponent_bits) - 1)
    mantissa = codes & ((1 << mantissa_bits) - 1)
    bias = (1 << (exponent_bits - 1)) - 1
    normal = (1 + mantissa / (1 << mantissa_bits)) * np.power(2.0, exponent.astype(np.float64) - bias)
    subnormal = (mantissa / (1 << mantissa_bits)) * 2.0 ** (1 - bias)
    values = sign * np.where(exponent == 0, subnormal, normal)
    if finite_only:  # e4m3fn: only S.1111.111 is NaN, no infinities
        values[(codes & 0x7F) == 0x7F] = np.nan
    else:  # e5m2: IEEE-like
        top = exponent == (1 << exponent_bits) - 1
        values[top & (mantissa == 0)] = np.inf * sign[top & (mantissa == 0)]
        values[top & (mantissa != 0)] = np.nan
    return values.astype(np.float32)


_FP8_TABLES = {
    "F8_E4M3": _fp8_table(4, 3, finite_only=True),
    "F8_E5M2": _fp8_table(5, 2, finite_only=False),
}


def to_float32(raw: memoryview, info: TensorInfo) -> Any:
    """The tensor widened to float32 (a copy). Raises ValueError for types with no float meaning here."""
    array = as_numpy(raw, info)
    if info.dtype == "BF16":
        return (array.astype(np.uint32) << 16).view(np.float32)
    if info.dtype in _FP8_TABLES:
        return _FP8_TABLES[info.dtype][array]
    if info.dtype == "F8_E8M0":
        return np.where(array == 255, np.float32(np.nan), np.exp2(array.astype(np.float32) - 127))
    return array.astype(np.float32)


def scalar(raw: memoryview, info: TensorInfo) -> float | None:
    """A one-element tensor as a Python float (alpha values); None when it is not a single number."""
    if info.numel != 1 or info.dtype not in _NATIVE or info.dtype == "C64":
        return None
    return float(to_float32(raw, info).reshape(-1)[0])
