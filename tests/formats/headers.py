"""Header builders for the format tests: real key names and shapes, no tensor data, no torch."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lorahub.files.dtypes import DTYPE_BITS
from lorahub.files.safetensors import TensorInfo
from lorahub.formats.base import Layout

Shapes = dict[str, list[int]]


def header(shapes: Mapping[str, Sequence[int]], dtype: str = "F16") -> dict[str, TensorInfo]:
    """``{key: shape}`` as the reader would give it: the dtype, consecutive offsets, the header's order."""
    tensors: dict[str, TensorInfo] = {}
    offset = 0
    for key, shape in shapes.items():
        nbytes = math.prod(shape) * DTYPE_BITS[dtype] // 8
        tensors[key] = TensorInfo(name=key, dtype=dtype, shape=tuple(shape), begin=offset, end=offset + nbytes)
        offset += nbytes
    return tensors


def lora(
    name: str,
    in_dim: int,
    out_dim: int,
    rank: int = 4,
    *,
    down: str = ".lora_down.weight",
    up: str = ".lora_up.weight",
    alpha: str | None = ".alpha",
) -> Shapes:
    """One LoRA module's tensors under the given spellings (kohya by default)."""
    shapes = {name + down: [rank, in_dim], name + up: [out_dim, rank]}
    if alpha is not None:
        shapes[name + alpha] = []
    return shapes


def peft(name: str, in_dim: int, out_dim: int, rank: int = 4) -> Shapes:
    return lora(name, in_dim, out_dim, rank, down=".lora_A.weight", up=".lora_B.weight", alpha=None)


def merge(*parts: Shapes) -> Shapes:
    merged: Shapes = {}
    for part in parts:
        merged.update(part)
    return merged


def placed_keys(layout: Layout) -> list[str]:
    """Every key the layout accounts for, once per place it appears."""
    placed = [info.name for module in layout.modules for info in module.tensors.values()]
    placed += [key for embedding in layout.embeddings for key in embedding.keys]
    return placed + list(layout.unmatched)


def assert_partition(keys: Mapping[str, TensorInfo], layout: Layout) -> None:
    """Each key of the file is in exactly one module, embedding or the unmatched list."""
    assert sorted(placed_keys(layout)) == sorted(keys)


def keylist(path: Path) -> tuple[str, Shapes]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data["description"], data["tensors"]
