"""``lorahub convert --repair``: a copy of a misnamed LoRA with the names loaders expect.

The renaming is :func:`lorahub.formats.misnaming.diagnose`'s, and only an unambiguous one is written: every tensor
keeps its bytes, dtype and shape, only its key changes. As for any conversion the output is read back and ΔW of every
module recomputed from it and from the source's tensors (under their old names), and compared; the report lists what
was renamed. The hash claims are recomputed (the data section is laid out in the new name order).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from lorahub import errors
from lorahub.adapters.check import ConversionReport
from lorahub.adapters.delta import module_delta
from lorahub.adapters.encoding import data_section_sha256
from lorahub.files.safetensors import SafetensorsFile, check_path, looks_like_safetensors, read_header, write
from lorahub.formats import detect
from lorahub.formats.base import Layout, Module
from lorahub.formats.families import detect_family
from lorahub.formats.misnaming import Diagnosis, diagnose, readable

__all__ = ["repair"]

_CLAIMS = {"sshs_model_hash": "{}", "modelspec.hash_sha256": "0x{}"}
_STALE = ("sshs_legacy_hash",)


def _refuse(message: str, hint: str) -> errors.RepairRefusedError:
    return errors.RepairRefusedError(message, hint=hint)


def _renaming(src: Path, diagnosis: Diagnosis, layout: Layout) -> dict[str, str]:
    if diagnosis.ambiguous:
        key, options = next(iter(diagnosis.ambiguous.items()))
        raise _refuse(
            f"{src}: {len(diagnosis.ambiguous)} key(s) could be repaired more than one way (or two keys would get one "
            f"name), e.g. {key!r} → {' or '.join(map(repr, options[:3]))}",
            "the intent is not clear from the names: rename those keys yourself, or ask the file's author for a copy "
            "written by the training tool; `lorahub inspect` lists them",
        )
    if not diagnosis.renames:
        if readable(layout) and not layout.unmatched:
            raise _refuse(f"{src}: nothing to repair, the keys are named as loaders expect", "use the file as it is")
        raise _refuse(
            f"{src}: the keys that no loader reads do not look like any known layout with a naming error",
            "`lorahub inspect` lists them; a file written by an unknown tool needs that tool's converter",
        )
    return {rename.key: rename.expected for rename in diagnosis.renames}


def repair(src: str | os.PathLike[str], out: str | os.PathLike[str], *, check: bool = True) -> ConversionReport:
    """Write ``src`` to ``out`` with misnamed keys renamed as loaders expect them, atomically.

    Raises :class:`lorahub.errors.RepairRefusedError` (nothing written) when nothing is misnamed, when the misnamed
    keys fit no layout, or when a key could be repaired more than one way. With ``check`` the output is read back
    and every module's ΔW compared with the source tensors' under their old names; the report's ``renamed`` maps each
    old key to its new one.
    """
    src_path, out_path = check_path(src), Path(out)
    with open(src_path, "rb") as handle:
        if not looks_like_safetensors(handle.read(16)):
            raise _refuse(f"{src_path}: --repair reads safetensors files only", "convert the file to safetensors first")
    header = read_header(src_path)
    layout = detect(header.tensors, header.metadata)
    renaming = _renaming(src_path, diagnose(header.tensors, header.metadata, layout), layout)
    with SafetensorsFile(src_path) as source:
        tensors = {  # copies: views into the map must not outlive it
            renaming.get(key, key): (info.dtype, info.shape, bytes(source.raw(key)))
            for key, info in header.tensors.items()
        }
        autov3 = data_section_sha256(tensors)
        metadata = {k: v for k, v in header.metadata.items() if k not in _STALE}
        metadata |= {key: form.format(autov3) for key, form in _CLAIMS.items() if key in metadata}
        write(out_path, tensors, metadata)
        repaired = read_header(out_path)
        out_layout = detect(repaired.tensors, repaired.metadata)
        report = ConversionReport(
            modules=len(readable(out_layout)), max_abs_error=math.nan, max_rel_error=math.nan,
            unmapped=list(out_layout.unmatched), source_format=layout.format, target=out_layout.format,
            family=detect_family(out_layout, repaired.metadata).family, output=str(out_path),
            renamed=renaming,
        )  # fmt: skip
        report.autov3 = autov3
        if check:
            _check(source, out_path, out_layout, {new: old for old, new in renaming.items()}, report)
    return report


def _check(
    source: SafetensorsFile, out_path: Path, layout: Layout, old_names: dict[str, str], report: ConversionReport
) -> None:
    """ΔW of each repaired module, from the output and from the source under the old names; a module whose ΔW needs
    the base weight (or that is incomplete) is compared tensor by tensor instead: renaming cannot change a value, so
    equal bytes are equal ΔW."""
    with SafetensorsFile(out_path) as written:
        for module in layout.modules:
            before = Module(
                name=module.name,
                component=module.component,
                tensors={
                    role: source.header.tensors[old_names.get(i.name, i.name)] for role, i in module.tensors.items()
                },
                config_alpha=module.config_alpha,
                rslora=module.rslora,
            )
            report.per_module[module.name] = _errors(source, before, written, module)
    report.max_abs_error = max((e[0] for e in report.per_module.values()), default=0.0)
    report.max_rel_error = max((e[1] for e in report.per_module.values()), default=0.0)
    if report.max_abs_error != 0.0:
        out_path.unlink(missing_ok=True)
        worst = [name for name, (diff, _) in report.per_module.items() if diff != 0.0]
        raise errors.ConversionRefusedError(
            f"the repaired file changed ΔW of {len(worst)} module(s): {', '.join(worst[:5])}",
            report=report,
            hint="this is a lorahub bug; please report it with the source file's key names",
        )


def _errors(source: SafetensorsFile, before: Module, written: SafetensorsFile, after: Module) -> tuple[float, float]:
    try:
        old, new = module_delta(source, before), module_delta(written, after)
    except errors.LorahubError:  # base-dependent kinds, incomplete modules: compare what renaming could change
        same = all(
            bytes(source.raw(before.tensors[role].name)) == bytes(written.raw(info.name))
            for role, info in after.tensors.items()
        )
        return (0.0, 0.0) if same else (math.inf, math.inf)
    if old.weight.shape != new.weight.shape:
        return math.inf, math.inf
    diff = float(abs(old.weight.astype("float64") - new.weight.astype("float64")).max(initial=0.0))
    scale = float(abs(old.weight).max(initial=0.0))
    return diff, diff / scale if scale else diff
