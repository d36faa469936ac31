"""How written adapters are encoded: tensor bytes in a storage dtype, the metadata that is kept, the hash claims.

Every writer (:mod:`lorahub.adapters.writers`, the lean :mod:`lorahub.adapters.streaming` path, bake's numpy
backend) encodes through here, so a tensor written by any of them has the same bytes.

``ss_*`` and ``modelspec.*`` metadata are kept; ``sshs_model_hash`` (and ``modelspec.hash_sha256``, ``0x``-prefixed)
are recomputed from the written file (AutoV3 covers the data section only, so rewriting the header keeps it), and
``sshs_legacy_hash`` is dropped rather than left stale (docs/reference/digests.md, "Embedded claims").
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from lorahub.adapters.canonical import CanonicalLayer

__all__ = [
    "DTYPES",
    "WRITABLE",
    "Tensors",
    "data_section_sha256",
    "encode",
    "hash_claims",
    "kept_metadata",
    "number",
    "storage_dtype",
]

Array = npt.NDArray[Any]
Tensors = dict[str, tuple[str, tuple[int, ...], bytes]]
"""Tensors to write: name → (safetensors dtype, shape, little-endian bytes)."""

DTYPES: Mapping[str, str] = {"fp16": "F16", "bf16": "BF16", "fp32": "F32"}
"""``--dtype`` choices → safetensors dtype."""
WRITABLE: Mapping[str, str] = {"F16": "<f2", "F32": "<f4", "F64": "<f8", "BF16": "<u2"}
"""Storage dtypes a writer can produce from float values → their numpy layout (BF16 as raw bits)."""
KEPT_PREFIXES = ("ss_", "modelspec.")
STALE_KEYS = ("sshs_model_hash", "sshs_legacy_hash", "modelspec.hash_sha256")


def encode(array: Array, dtype: str) -> bytes:
    """float values → little-endian bytes of ``dtype`` (bf16 rounded to nearest even, as torch does)."""
    if dtype == "BF16":
        values = np.ascontiguousarray(array, dtype=np.float32)
        bits = values.view(np.uint32)
        # uint32 is wide enough: only NaN bit patterns (replaced below) can wrap around
        with np.errstate(over="ignore"):
            rounded = ((bits + np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1))) >> 16).astype(np.uint16)
        rounded = np.where(np.isnan(values), np.uint16(0x7FC0), rounded)
        return rounded.astype("<u2").tobytes()
    return np.ascontiguousarray(array).astype(WRITABLE[dtype]).tobytes()


def storage_dtype(layer: CanonicalLayer, dtype: str | None) -> str:
    """The dtype a layer is written in: the ``--dtype`` choice, else the layer's own (fp8 sources widen losslessly
    to fp32, which every reader can load)."""
    if dtype is not None:
        return DTYPES[dtype]
    return layer.dtype if layer.dtype in WRITABLE else "F32"


def number(value: float) -> float | int:
    """A JSON number as PEFT writes one: integral values as ints (``8``, not ``8.0``)."""
    return int(value) if float(value).is_integer() else float(value)


def kept_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """The source's training metadata that stays true after conversion (see the module docstring)."""
    return {k: v for k, v in metadata.items() if k.startswith(KEPT_PREFIXES) and k not in STALE_KEYS}


def hash_claims(source: Mapping[str, str], target: str, autov3: str) -> dict[str, str]:
    """The hash entries the written file's header states, from its AutoV3: kohya files always carry
    ``sshs_model_hash``; others where the source did."""
    claims = {}
    if target == "kohya" or "sshs_model_hash" in source:
        claims["sshs_model_hash"] = autov3
    if "modelspec.hash_sha256" in source or any(k.startswith("modelspec.") for k in source):
        claims["modelspec.hash_sha256"] = f"0x{autov3}"
    return claims


def data_section_sha256(tensors: Mapping[str, tuple[str, tuple[int, ...], bytes]]) -> str:
    """SHA-256 of the data section :func:`~lorahub.files.safetensors.write` lays out (tensors in name order)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(tensors[name][2])
    return digest.hexdigest()
