"""Format conversion of adapters for SD 1.x/2.x, SDXL, SD3, FLUX.1/2 and Qwen-Image: kohya, diffusers,
peft, comfyui, bfl-control, full.

The file is read into the canonical model (:mod:`lorahub.adapters.model`), written out in the target format, read
back, and ΔW of every module before and after is recomputed through :mod:`lorahub.adapters.delta` and compared; the
report carries the largest error (docs/concepts/architecture.md, decision 1). What cannot be converted exactly is
refused before anything is written (docs/convert.md, "What is refused, and --lossy"):

* kinds other than LoRA/LoCon (LoHa, LoKr, full, OFT, …), DoRA magnitudes, PEFT ``lora_B`` biases, A1111 ``scale``
  tensors;
* modules whose names do not map to the family's canonical paths (they would be dropped), families without name
  tables yet;
* fused SD3/FLUX modules whose delta cannot be split exactly into the diffusers projections (a LoKr over
  ``img_attn.qkv``): ``read_adapter`` keeps them whole and lists them in ``unsplit``.

rsLoRA (scale alpha/√rank) converts exactly: diffusers and PEFT targets keep ``use_rslora``; targets without an rsLoRA
flag (kohya, ComfyUI) get the equivalent alpha·√rank, listed in the report's ``rslora_alpha``.

SD3/FLUX fused projections (``img_attn.qkv``, ``linear1``, ``attn.qkv``) and swapped modulations are split when read
and fused again when written to kohya (:mod:`lorahub.adapters.native`, maths in :mod:`lorahub.adapters.fused`).

Every writer is in :mod:`lorahub.adapters.writers` (bytes, kept metadata and hash claims in
:mod:`lorahub.adapters.encoding`), the check in :mod:`lorahub.adapters.check`; inputs (pickles that pass the opcode
scan, PEFT folders, ComfyUI names) are read by :mod:`lorahub.adapters.sources`, and plain LoRA files of the SD
families take the lean path of :mod:`lorahub.adapters.streaming`. With ``lossy`` the kinds a plain LoRA cannot hold
(LoHa, LoKr, full, GLoRA, OFT/BOFT, IA3, DoRA) become LoRA/LoCon by truncated SVD (:mod:`lorahub.adapters.resize`)
and the check reports what that cost; kinds whose ΔW depends on the base weight read it from ``base``.
:func:`repair` (:mod:`lorahub.adapters.repair`) renames misnamed keys instead, keeping the layout.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path
from typing import Any, Literal

import numpy.typing as npt

from lorahub import errors
from lorahub.adapters.canonical import BaseOf, CanonicalAdapter, CanonicalLayer
from lorahub.adapters.check import ConversionReport, compare, exact_lora
from lorahub.adapters.delta import needs_base
from lorahub.adapters.encoding import DTYPES
from lorahub.adapters.names import FAMILIES
from lorahub.adapters.repair import repair
from lorahub.adapters.resize import approximate
from lorahub.adapters.sources import BaseWeights, load_adapter
from lorahub.adapters.streaming import stream_convert
from lorahub.adapters.support import KIND_SUPPORT, LAYOUT_EXTRAS
from lorahub.adapters.writers import TARGETS, Target, output_files, write_adapter
from lorahub.files.digests import data_section_digest
from lorahub.files.safetensors import looks_like_safetensors, read_header

__all__ = ["DTYPES", "TARGETS", "ConversionRefusedError", "ConversionReport", "convert", "repair"]

Array = npt.NDArray[Any]

_LORA_ROLES = frozenset({"down", "up", "mid"})

ConversionRefusedError = errors.ConversionRefusedError


# --- refusal ---------------------------------------------------------------------------------------------------------


def _refusals(adapter: CanonicalAdapter, target: str) -> list[str]:
    refused = []
    for name, layer in adapter.layers.items():
        if not exact_lora(layer, target):
            extra = sorted(set(layer.tensors) - _LORA_ROLES)
            refused.append(f"{name} ({layer.kind}{', ' + ', '.join(extra) if extra else ''})")
    return refused


def _check_convertible(adapter: CanonicalAdapter, target: str, src: Path, *, lossy: bool = False) -> None:
    def refuse(message: str, hint: str, **lists: list[str]) -> None:
        report = ConversionReport(
            modules=len(adapter.layers), max_abs_error=math.nan, max_rel_error=math.nan,
            unmapped=lists.get("unmapped", []), refused=lists.get("refused", []),
            source_format=adapter.source_format, target=target, family=adapter.family,
        )  # fmt: skip
        raise ConversionRefusedError(message, report=report, hint=hint)

    if target not in TARGETS:
        raise errors.ConversionOptionError(
            f"unknown target format {target!r}", hint=f"choose one of {', '.join(TARGETS)}"
        )
    if not adapter.layers:
        refuse(f"{src}: no adapter modules found", "check that this is a LoRA file")
    if adapter.family not in FAMILIES and target != "full":
        refuse(
            f"{src}: {adapter.family} adapters cannot be converted yet (names are mapped for SD 1.x/2.x, SDXL, SD3, "
            "FLUX.1, FLUX.2 and Qwen-Image)",
            "name maps for this family are not yet supported",
            unmapped=list(adapter.unmapped),
        )
    if target == "bfl-control" and adapter.family != "flux1":
        refuse(
            f"{src}: a {adapter.family} adapter has no BFL names (bfl-control is the layout of FLUX.1 Control LoRAs)",
            f"choose another target: {', '.join(t for t in TARGETS if t != 'bfl-control')}",
        )
    if adapter.unsplit:
        refuse(
            f"{src}: {len(adapter.unsplit)} fused or row-swapped module(s) have no exact diffusers form: "
            f"{', '.join(adapter.unsplit[:3])}",
            "a non-LoRA delta over a fused qkv/linear1 has no exact per-projection form; --lossy --rank N splits its "
            "dense ΔW by rows and decomposes each part, with the error reported",
            refused=list(adapter.unsplit),
        )
    refused = _refusals(adapter, target) if target != "full" else []
    if refused and not lossy:
        shown = ", ".join(refused[:5]) + (f" and {len(refused) - 5} more" if len(refused) > 5 else "")
        refuse(
            f"{src}: {len(refused)} module(s) cannot be converted exactly to {target}: {shown}",
            _refusal_hint(adapter, target),
            refused=refused,
        )
    if adapter.unmapped and target != "full":
        shown = ", ".join(adapter.unmapped[:5])
        refuse(
            f"{src}: {len(adapter.unmapped)} module(s) do not map to {adapter.family} layers and would be dropped: "
            f"{shown}",
            "the file's module names are not in the family's inventory; convert it with the tool that wrote it",
            unmapped=list(adapter.unmapped),
        )


_CONTROL_EXTRAS = (("bias", "LoRA biases (lora_B.bias)"), ("set", "whole QK-norm weights"))


def _refusal_hint(adapter: CanonicalAdapter, target: str) -> str:
    """What to do instead: another layout where one holds every module (a FLUX Control LoRA's biases and QK norms),
    else --lossy or --to full."""
    layers = adapter.layers.values()
    into = [t for t in LAYOUT_EXTRAS if all(exact_lora(layer, t) for layer in layers)]
    if into:
        held = LAYOUT_EXTRAS.get(target, frozenset())
        missing = [what for extra, what in _CONTROL_EXTRAS if extra not in held]
        return (
            f"{target} cannot hold the {' and '.join(missing)} of a FLUX Control LoRA: convert it --to "
            f"{' or --to '.join(into)}, which hold them exactly, or --to full --base BASE"
        )
    return (
        "LoHa, LoKr, DoRA and other kinds become LoRA only approximately: pass --lossy (and --rank N) to convert them "
        "by truncated SVD with the error reported, or --to full to keep ΔW exactly"
    )


# --- lossy -----------------------------------------------------------------------------------------------------------

_CONV_LEAVES = ("conv1", "conv2", "conv", "conv_shortcut", "conv_in", "conv_out")


def _flattened_conv(layer: CanonicalLayer, family: str) -> bool:
    """A conv layer whose factors lost the kernel shape (LoHa/LoKr/GLoRA store [r, in·kh·kw]): without the base
    weight a plain LoRA could only be written with the wrong shape."""
    leaf = layer.name.rpartition(".")[2]
    return family in FAMILIES and leaf in _CONV_LEAVES and all(a.ndim <= 2 for a in layer.tensors.values())


def _plain_lora(
    adapter: CanonicalAdapter, rank: int | None, base_of: BaseOf
) -> tuple[CanonicalAdapter, dict[str, int]]:
    """Layers a plain LoRA cannot hold, replaced by their truncated SVD; the others as they are."""
    layers: dict[str, CanonicalLayer] = {}
    ranks: dict[str, int] = {}
    for name, layer in adapter.layers.items():
        if exact_lora(layer):
            layers[name] = layer
            continue
        row = KIND_SUPPORT.get(layer.kind)
        if row is None or row.convert == "full-only":
            raise errors.ConversionRefusedError(
                f"{name} is a {layer.kind} layer, which no LoRA can express",
                report=None,
                hint="keep it with --to full (or convert with the tool that wrote it)",
            )
        base = base_of(layer)
        if base is None and _flattened_conv(layer, adapter.family):
            raise errors.BaseWeightRequiredError(
                f"{name} is a convolution whose {layer.kind} factors do not record the kernel size",
                hint="pass --base with the base model so the LoRA can be written with the conv kernel's shape",
            )
        layers[name], resized = approximate(layer, rank=rank, base=base)
        ranks[name] = resized.rank_after
    plain = CanonicalAdapter(
        family=adapter.family,
        layers=layers,
        metadata=dict(adapter.metadata),
        source_format=adapter.source_format,
        unmapped=list(adapter.unmapped),
    )
    return plain, ranks


class _Bases:
    """The ``--base`` checkpoint, read only for the layers whose ΔW needs it (and cached per layer for the check)."""

    def __init__(self, path: str | os.PathLike[str] | None, family: str, *, everything: bool = False) -> None:
        self.file = BaseWeights(path, family) if path is not None else None
        self.everything = everything
        self.cache: dict[str, Array] = {}

    def __call__(self, layer: CanonicalLayer) -> Array | None:
        if self.file is None or not (self.everything or needs_base(layer.kind, layer.tensors)):
            return None
        found = self.cache.get(layer.name)
        if found is None:
            found = self.cache[layer.name] = self.file.weight(layer)
        return found

    def close(self) -> None:
        self.cache.clear()
        if self.file is not None:
            self.file.close()


# --- entry point -------------------------------------------------------------------------------------------------


def convert(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    to: Target,
    dtype: Literal["fp16", "bf16", "fp32"] | None = None,
    check: bool = True,
    lossy: bool = False,
    rank: int | None = None,
    base: str | os.PathLike[str] | None = None,
) -> ConversionReport:
    """Convert ``src`` to ``to`` (``kohya``, ``diffusers``, ``peft``, ``comfyui`` or ``full``) at ``out``, atomically.

    ``src`` may be a safetensors file, a PEFT adapter folder, or a pickled checkpoint that passes the opcode scan.
    ``dtype`` re-stores the factors (fp16, bf16, fp32); by default each module keeps its source dtype. ΔW is always
    computed in float (delta.py). With ``check`` (the default) the written file is read back and every module's ΔW
    compared with the source's; the report gives the errors. Raises :class:`ConversionRefusedError` (a
    ``LorahubError``) before writing anything when the conversion cannot be exact, unless ``lossy``: then kinds a
    plain LoRA cannot hold are converted by truncated SVD at ``rank`` (default: the module's own rank, or 32).
    ``base`` is a safetensors base checkpoint for kinds whose ΔW depends on the base weight (GLoRA, OFT, BOFT, IA3,
    DoRA); only the tensors those layers need are read.
    """
    src_path, out_path = Path(src), Path(out)
    if dtype is not None and dtype not in DTYPES:
        raise errors.ConversionOptionError(f"unknown dtype {dtype!r}", hint=f"choose one of {', '.join(DTYPES)}")
    if rank is not None and rank < 1:
        raise errors.ConversionOptionError(f"--rank must be at least 1, not {rank}")
    if _streamable(src_path, to, lossy=lossy, base=base):
        streamed = stream_convert(src_path, out_path, to=to, dtype=dtype, check=check)
        if streamed is not None:
            _refuse_if_lost(streamed, out_path, to)
            return streamed
    adapter = load_adapter(src_path, materialize_fused=lossy)
    _check_convertible(adapter, to, src_path, lossy=lossy)
    bases = _Bases(base, adapter.family)
    try:
        return _convert(adapter, out_path, to=to, dtype=dtype, check=check, lossy=lossy, rank=rank, bases=bases)
    finally:
        bases.close()


def _convert(
    adapter: CanonicalAdapter,
    out_path: Path,
    *,
    to: Target,
    dtype: Literal["fp16", "bf16", "fp32"] | None,
    check: bool,
    lossy: bool,
    rank: int | None,
    bases: _Bases,
) -> ConversionReport:
    prepared, ranks = (adapter, {}) if to == "full" else _plain_lora(adapter, rank, bases) if lossy else (adapter, {})
    written = write_adapter(prepared, out_path, to=to, dtype=dtype, base_of=bases)
    report = ConversionReport(
        modules=len(adapter.layers), max_abs_error=math.nan, max_rel_error=math.nan,
        source_format=adapter.source_format, target=to, family=adapter.family, output=str(out_path),
        lossy=sorted(ranks), ranks=ranks, rslora_alpha=_rslora_rewritten(prepared, written, to),
    )  # fmt: skip
    if to != "peft":
        claimed = read_header(out_path).metadata.get("sshs_model_hash")
        report.autov3 = claimed or functools.partial(data_section_digest, out_path)
    if check:
        report.per_module = compare(adapter, written, bases)
        report.unmapped = list(written.unmapped) if to != "full" else []
        report.max_abs_error = max((e[0] for e in report.per_module.values()), default=0.0)
        report.max_rel_error = max((e[1] for e in report.per_module.values()), default=0.0)
        _refuse_if_lost(report, out_path, to)
    return report


def _rslora_rewritten(source: CanonicalAdapter, written: CanonicalAdapter, to: str) -> list[str]:
    """rsLoRA layers that came back under the plain rule: the target wrote them with the equivalent alpha·√rank."""
    if to == "full":  # ΔW itself is written: no alpha, no rule
        return []
    return sorted(
        name
        for name, layer in source.layers.items()
        if layer.rslora and (back := written.layers.get(name)) is not None and not back.rslora
    )


def _refuse_if_lost(report: ConversionReport, out_path: Path, to: str) -> None:
    """A module missing or reshaped in the output is a bug: remove the output and say so."""
    if math.isfinite(report.max_abs_error) or math.isnan(report.max_abs_error):
        return
    missing = [name for name, (diff, _) in report.per_module.items() if not math.isfinite(diff)]
    for path in output_files(out_path, to):
        path.unlink(missing_ok=True)
    raise ConversionRefusedError(
        f"the written file lost or reshaped {len(missing)} module(s): {', '.join(missing[:5])}",
        report=report,
        hint="this is a lorahub bug; please report it with the source file's format",
    )


def _streamable(src: Path, to: str, *, lossy: bool, base: object) -> bool:
    """Whether to try the lean path (:mod:`lorahub.adapters.streaming`): an exact conversion of a safetensors file."""
    if lossy or base is not None or to not in ("kohya", "diffusers", "comfyui") or not src.is_file():
        return False
    with open(src, "rb") as handle:
        return looks_like_safetensors(handle.read(16))
