"""The conversion check: ΔW of every written module against the source's, and its report.

Both sides are recomputed through :mod:`lorahub.adapters.delta`, so the check states one thing for every writer
(convert, resize, the lean streaming path): what was written does to the base model what the source did, up to the
errors reported. That is what a correct conversion means (docs/concepts/architecture.md, decision 1).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from lorahub.adapters.canonical import BaseOf, CanonicalAdapter, CanonicalLayer, no_base
from lorahub.adapters.delta import needs_base
from lorahub.adapters.support import exactly_convertible

__all__ = ["ConversionReport", "compare", "exact_lora", "module_errors"]


@dataclass
class ConversionReport:
    """What a conversion did: modules written, the largest ΔW errors (absolute, and relative to each module's
    largest |ΔW| entry), per-module errors, and what stood in the way (``unmapped``/``refused``, empty on success)."""

    modules: int
    max_abs_error: float
    max_rel_error: float
    per_module: dict[str, tuple[float, float]] = field(default_factory=dict)
    unmapped: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    source_format: str = ""
    target: str = ""
    family: str = ""
    output: str = ""
    _autov3: str | Callable[[], str] | None = field(default=None, init=False, repr=False, compare=False)
    lossy: list[str] = field(default_factory=list)
    """Modules converted by truncated SVD (``--lossy``); their errors are in ``per_module``."""
    ranks: dict[str, int] = field(default_factory=dict)
    """Rank each lossy module was given."""
    renamed: dict[str, str] = field(default_factory=dict)
    """``--repair``: each misnamed key → the name it was written under."""
    rslora_alpha: list[str] = field(default_factory=list)
    """rsLoRA modules (scale alpha/√rank) the target cannot flag as rsLoRA (kohya, ComfyUI, or a PEFT config whose
    component mixes both rules): written with the equivalent alpha·√rank, which gives the same scale, and ΔW, under
    the target's alpha/rank."""

    @property
    def autov3(self) -> str | None:
        """AutoV3 of the written file (its data section's SHA-256, lowercase hex); None for a PEFT folder.

        A conversion computes it while writing only when the header states it (``sshs_model_hash``,
        ``modelspec.hash_sha256``); otherwise it is computed here, on first use, from the output as it then is
        (one read of the file), and kept: the SHA-256 of an SDXL LoRA is the largest piece of work a conversion
        would do that a plain load-and-save does not (docs/benchmarks.md), and most callers never ask."""
        if callable(self._autov3):
            self._autov3 = self._autov3()
        return self._autov3

    @autov3.setter
    def autov3(self, value: str | Callable[[], str] | None) -> None:
        """A digest, or a function that computes it when first asked."""
        self._autov3 = value


def exact_lora(layer: CanonicalLayer, target: str | None = None) -> bool:
    """Whether a plain LoRA writer can hold the layer exactly (LoRA/LoCon/Tucker factors and nothing else): the
    support table's ``convert`` column (:mod:`lorahub.adapters.support`); with a ``target``, also what that layout
    holds beside factors (a ``lora_B.bias``, FLUX QK norms)."""
    return exactly_convertible(layer.kind, layer.tensors, target, layer.name)


def _same_factors(before: CanonicalLayer, after: CanonicalLayer) -> bool:
    """The same LoRA factors (values and shapes) and the same scale give the same ΔW, so it need not be built: a
    FLUX LoRA's ΔW has about 12 billion entries, while most modules of an exact conversion come back bit for bit."""
    if not (exact_lora(before) and exact_lora(after)) or before.tensors.keys() != after.tensors.keys():
        return False
    for role, array in before.tensors.items():
        other = after.tensors[role]
        if array.shape != other.shape or not np.array_equal(array, other):
            return False
    return before.scale == after.scale


def module_errors(
    before: CanonicalLayer, after: CanonicalLayer | None, base_of: BaseOf = no_base
) -> tuple[float, float]:
    """Largest |ΔW_before − ΔW_after| and that over the largest |ΔW_before| (both ΔW from delta.py); infinite when
    the module is missing from, or reshaped in, what was written."""
    if after is None:
        return math.inf, math.inf
    if _same_factors(before, after):
        return 0.0, 0.0
    if before.kind == after.kind == "set" and base_of(before) is None:  # the same replacement: the same ΔW on any base
        return _errors(before.tensors["set_weight"], after.tensors["set_weight"])
    expected_delta = before.delta(base_of(before))
    after_base = base_of(after) if needs_base(after.kind, after.tensors) else None
    actual_delta = after.delta(after_base)
    expected, actual = expected_delta.weight, actual_delta.weight
    if expected.shape != actual.shape and expected.size == actual.size:  # a flattened conv delta (no base given)
        actual = actual.reshape(expected.shape)
    weight_errors = _errors(expected, actual)
    if expected_delta.bias is None and actual_delta.bias is None:
        return weight_errors
    zero = np.zeros(expected.shape[0])
    bias = expected_delta.bias if expected_delta.bias is not None else zero
    bias_errors = _errors(bias, actual_delta.bias if actual_delta.bias is not None else zero)
    return max(weight_errors[0], bias_errors[0]), max(weight_errors[1], bias_errors[1])


def _errors(expected: np.ndarray, actual: np.ndarray) -> tuple[float, float]:
    """Largest absolute difference, and that over the largest |expected| entry; infinite for different shapes."""
    if expected.shape != actual.shape:
        return math.inf, math.inf
    diff = float(np.max(np.abs(expected - actual), initial=0.0))
    size = float(np.max(np.abs(expected), initial=0.0))
    return diff, diff / size if size > 0 else diff


def compare(
    source: CanonicalAdapter, written: CanonicalAdapter, base_of: BaseOf = no_base
) -> dict[str, tuple[float, float]]:
    """Per-module errors; modules run in threads (the matrix products release the GIL)."""
    names = list(source.layers)
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda name: module_errors(source.layers[name], written.layers.get(name), base_of), names)
        return dict(zip(names, results, strict=True))
