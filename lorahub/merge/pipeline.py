"""Bake adapters into a whole diffusers pipeline folder, written as a new, self-contained pipeline folder.

Each component the adapters touch (``unet`` or ``transformer``, ``text_encoder``, …) is baked from its safetensors
file by the streaming single-file bake (:mod:`lorahub.merge.bake`); every other file is copied, through the
Hugging Face cache's symlinks, so the output owns its bytes. Nothing in the source (cache blobs included) is opened
for writing. Every refusal (family, layers that land nowhere or do not fit, a sharded component) comes before the
first byte is written, and the folder is written as a hidden sibling of ``out`` and renamed into place at the end:
a failure leaves no half-written pipeline.

The report's base and output digests are the weights digests of the two folders (:mod:`lorahub.files.folders`: the
base's is the digest training records for the same base), gathered while the files are copied and baked rather than
in a second pass; each baked component file's own digests are listed beside them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lorahub import errors
from lorahub.adapters.canonical import CanonicalAdapter
from lorahub.files.atomic import fsync_directory
from lorahub.files.folders import WEIGHT_SUFFIXES, copy_file, folder_digest, is_digested, model_files
from lorahub.merge.arith import Backend
from lorahub.merge.bake import AdapterSource, BakeReport, bake, base_names, check_bake

__all__ = ["PIPELINE_LAYOUT", "bake_pipeline"]

PIPELINE_LAYOUT = "diffusers-pipeline"
SHARD_INDEX = ".safetensors.index.json"


def bake_pipeline(
    base_path: str | os.PathLike[str],
    adapters: Sequence[tuple[CanonicalAdapter, float]],
    out_path: str | os.PathLike[str],
    *,
    sources: Sequence[AdapterSource] | None = None,
    components: Sequence[str] | None = None,
    engine: Backend = "auto",
) -> BakeReport:
    """Write the pipeline folder ``out_path`` (new, or an empty folder): ``base_path`` with every adapter layer baked
    into its component. ``components`` bakes only those components' layers and lists the others as skipped.

    A baked component's other weight files (``.bin`` and the like, which bake cannot write) are left out of the
    output rather than copied unbaked beside the baked file; the report lists them under ``skipped_files``.
    """
    started = time.perf_counter()
    base, out = Path(base_path), Path(out_path)
    if not (base / "model_index.json").is_file():
        raise errors.NotAFileError(
            f"{base} is a folder but not a diffusers pipeline (no model_index.json)",
            hint="Give a pipeline folder written by save_pretrained, a Hugging Face repo id, or a checkpoint file.",
        )
    _check_out(base, out)
    by_component: dict[str, list[str]] = {}
    for adapter, _ in adapters:
        for name in adapter.layers:
            by_component.setdefault(name.partition(".")[0], []).append(name)
    wanted = sorted(c for c in by_component if components is None or c in components)
    if not wanted:
        raise errors.MergeOptionError(
            f"none of the adapters' layers are in the components asked for ({', '.join(components or [])})",
            hint=f"The adapters change {', '.join(sorted(by_component))}.",
        )
    files = {component: _weight_files(base, component, by_component[component]) for component in wanted}
    for component, (baked, _) in files.items():
        for file in baked:
            check_bake(file, adapters, [component])
    targets = {f.relative_to(base).as_posix(): c for c, (baked, _) in files.items() for f in baked}
    left_out = {f.relative_to(base).as_posix() for baked, others in files.values() for f in others}

    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        digests: dict[str, tuple[str, str]] = {}
        reports: dict[str, BakeReport] = {}
        for source in model_files(base):
            relative = source.relative_to(base).as_posix()
            if relative in left_out:
                continue
            target = work / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if relative in targets:
                report = bake(source, adapters, target, sources=sources, components=[targets[relative]], engine=engine)
                reports[relative] = report
                digests[relative] = (report.base_sha256, report.output_sha256)
            else:
                sha256 = copy_file(source, target)
                digests[relative] = (sha256, sha256)
        for folder, _, _ in os.walk(work):
            fsync_directory(Path(folder))
        _rename(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    weights = {relative: pair for relative, pair in digests.items() if is_digested(Path(relative))}
    first = next(iter(reports.values()))
    records = [  # each component file's record counts that component's layers; the pipeline bakes them all
        {**record, "layers": sum(name.partition(".")[0] in wanted for name in adapter.layers)}
        for record, (adapter, _) in zip(first.adapters, adapters, strict=True)
    ]
    return BakeReport(
        **base_names(base),
        out=str(out),
        layout=PIPELINE_LAYOUT,
        family=first.family,
        base_sha256=folder_digest({relative: pair[0] for relative, pair in weights.items()}),
        output_sha256=folder_digest({relative: pair[1] for relative, pair in weights.items()}),
        tensors=sum(r.tensors for r in reports.values()),
        changed_tensors=sum(r.changed_tensors for r in reports.values()),
        layers=sum(record["layers"] for record in records),
        adapters=records,
        skipped_layers=[name for c, names in by_component.items() if c not in wanted for name in names],
        skipped_files=sorted(left_out),
        engine=first.engine,
        seconds=time.perf_counter() - started,
        components=[_component(relative, targets[relative], r) for relative, r in reports.items()],
    )


def _check_out(base: Path, out: Path) -> None:
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise errors.MergeOptionError(
            f"{out} already exists and is not an empty folder",
            hint="A pipeline bake writes a new folder: give one that does not exist yet (or is empty).",
        )
    if out.resolve().is_relative_to(base.resolve()):
        raise errors.MergeOptionError(
            f"{out} is inside the base pipeline {base}", hint="Write the baked pipeline outside the base's folder."
        )
    if not out.parent.is_dir():
        raise errors.PathNotFoundError(f"{out.parent}: no such folder", hint="Create it, or give another --out.")


def _weight_files(base: Path, component: str, layers: Sequence[str]) -> tuple[list[Path], list[Path]]:
    """The component's safetensors files to bake (each variant: ``….fp16.safetensors`` too) and its other weight
    files, which are left out."""
    folder = base / component
    if not folder.is_dir():
        raise errors.UnmatchedLayersError(
            f"{len(layers)} adapter layer(s) are for {component}, which the pipeline {base} does not have: "
            + ", ".join(layers[:5])
            + (" …" if len(layers) > 5 else "")
        )
    inside = model_files(folder)
    present = [p for p in inside if p.suffix in WEIGHT_SUFFIXES]
    index = next((p for p in inside if p.name.endswith(SHARD_INDEX)), None)
    if index is not None:
        raise errors.UnsupportedFileError(
            f"{component} is sharded ({index.name}); bake streams one safetensors file per component",
            hint="Save the pipeline with a max_shard_size larger than the component (save_pretrained) and bake "
            "that folder, or bake an LDM/SGM single-file checkpoint.",
        )
    baked = [p for p in present if p.suffix == ".safetensors"]
    if not baked:
        raise errors.UnsupportedFileError(
            f"{component} holds no safetensors weights; bake writes safetensors only",
            hint="Save the pipeline with safe_serialization=True (the default) and bake that folder.",
        )
    return baked, [p for p in present if p.suffix != ".safetensors"]


def _rename(work: Path, out: Path) -> None:
    """``work`` becomes ``out``; an empty folder at ``out`` is replaced, anything else refused."""
    try:
        os.replace(work, out)
    except OSError:
        raise errors.MergeOptionError(
            f"{out} appeared while the pipeline was baked and is not empty; nothing was written",
            hint="Give a folder that does not exist yet.",
        ) from None
    fsync_directory(out.parent)


def _component(relative: str, component: str, report: BakeReport) -> dict[str, Any]:
    return {
        "component": component,
        "file": relative,
        "layout": report.layout,
        "tensors": report.tensors,
        "changed_tensors": report.changed_tensors,
        "base_sha256": report.base_sha256,
        "output_sha256": report.output_sha256,
    }
