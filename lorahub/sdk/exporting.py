"""Catalogued conversions and exports for the tools people use (``lorahub export NAME DIR --for a1111|comfyui|hf``).

A conversion of a catalogued version is itself catalogued: a new signed version whose card names its parent with
``converted-from`` (format, dtype, largest ΔW error as parameters) and whose audit event is ``convert``
(:func:`lorahub.sdk.derive.add_derived`). Converting the same thing twice finds the same content and reuses the
version catalogued the first time. The source is read from the blob store only after its bytes and card check out,
so a tampered store cannot launder a file into a freshly signed version.

An export writes the file in the layout the tool reads, with the signed card embedded in its header and beside it
(``FILE.lorahub.json``), and the tool's own sidecars (:mod:`lorahub.sdk.sidecars`):

=========  ===============================  ======================================================================
tool       adapter file                     sidecars
=========  ===============================  ======================================================================
a1111      ``NAME.safetensors`` (kohya)      ``NAME.json`` (A1111/Forge user metadata), ``NAME.civitai.info``
comfyui    ``NAME.safetensors`` (kohya)      ``NAME.civitai.info`` (read by ComfyUI-Lora-Manager)
hf         ``pytorch_lora_weights``          ``README.md`` (Hub model card)
           ``.safetensors`` (diffusers)
=========  ===============================  ======================================================================

A version already in a layout the tool reads natively (LyCORIS for A1111, say) is exported as it is.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lorahub import errors
from lorahub.sdk.refs import is_catalogue_ref

if TYPE_CHECKING:
    from lorahub.adapters.convert import ConversionReport
    from lorahub.adapters.resize import ResizeReport
    from lorahub.registry.catalog import AdapterVersion
    from lorahub.sdk.hub import Hub
    from lorahub.sdk.sidecars import LineageEntry, WrittenFile
    from lorahub.signing.signed import SignedCard

Dtype = Literal["fp16", "bf16", "fp32"]


@dataclass(frozen=True)
class ToolTarget:
    """What one tool reads: the layout a conversion produces, the layouts it already reads, and the file name."""

    format: Literal["kohya", "diffusers"]
    native: frozenset[str]
    file_name: str | None
    """A fixed adapter file name (diffusers looks for ``pytorch_lora_weights.safetensors``); None: ``NAME``."""
    sidecars: tuple[str, ...]


TARGETS: Mapping[str, ToolTarget] = {
    "a1111": ToolTarget("kohya", frozenset({"kohya", "lycoris"}), None, ("a1111", "civitai")),
    "comfyui": ToolTarget("kohya", frozenset({"kohya", "lycoris", "comfyui"}), None, ("civitai",)),
    "hf": ToolTarget("diffusers", frozenset({"diffusers"}), "pytorch_lora_weights.safetensors", ("readme",)),
}
TOOLS: tuple[str, ...] = tuple(TARGETS)


@dataclass(frozen=True)
class ConvertResult:
    """A conversion and, when catalogued, the version it became (``reused``: that content was catalogued already)."""

    report: ConversionReport | ResizeReport
    output: Path
    parent: AdapterVersion | None = None
    version: AdapterVersion | None = None
    reused: bool = False

    def as_dict(self) -> dict[str, Any]:
        from lorahub.adapters.convert import ConversionReport
        from lorahub.sdk.records import summary

        report = self.report
        return {
            "output": str(self.output),
            "report": report_dict(report) if isinstance(report, ConversionReport) else resize_dict(report),
            "parent": self.parent.ref if self.parent else None,
            "catalogued": summary(self.version) if self.version else None,
            "reused": self.reused,
        }


@dataclass(frozen=True)
class ExportResult:
    """What :meth:`Hub.export` wrote for a tool (``a1111``, ``comfyui``, ``hf``): the files by role and, when the
    tool needed another layout, the conversion that was made and catalogued first."""

    tool: str
    requested: AdapterVersion
    version: AdapterVersion
    """The version written: ``requested`` itself, or its conversion to the tool's layout."""
    files: dict[str, Path] = field(default_factory=dict)
    conversion: ConvertResult | None = None

    @property
    def converted(self) -> bool:
        return self.conversion is not None

    def as_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "requested": self.requested.ref,
            "exported": self.version.ref,
            "format": self.version.format,
            "content_digest": self.version.content_digest,
            "converted": self.conversion.as_dict() if self.conversion else None,
            "files": {role: str(path) for role, path in self.files.items()},
        }


def resize_dict(report: ResizeReport) -> dict[str, Any]:
    """A resize report as JSON (the same shape as ``lorahub resize --json``)."""
    return {
        "modules": report.modules,
        "output": report.output,
        "source_format": report.source_format,
        "target": report.target,
        "min_kept_energy": report.min_kept_energy,
        "max_abs_error": report.max_abs_error,
        "max_rel_error": report.max_rel_error,
        "per_module": {name: dataclasses.asdict(layer) for name, layer in report.per_module.items()},
    }


def report_dict(report: ConversionReport) -> dict[str, Any]:
    """A conversion report as JSON (the same shape as ``lorahub convert --json``)."""
    autov3 = report.autov3  # computed here if the conversion left it for later
    data: dict[str, Any] = {
        "autov3" if key == "_autov3" else key: autov3 if key == "_autov3" else value
        for key, value in dataclasses.asdict(report).items()
    }
    data["per_module"] = {name: {"abs": a, "rel": r} for name, (a, r) in report.per_module.items()}
    return data


# --- reading a catalogued version safely ------------------------------------------------------------------------


def verified_blob(hub: Hub, version: AdapterVersion) -> Path:
    """The stored file of ``version`` after checking that its bytes are the ones catalogued, its tensors are the
    ones the card names, and no signature a known key made is broken."""
    from lorahub.files.digests import digest_file
    from lorahub.files.safetensors import read_header
    from lorahub.sdk.locating import version_file
    from lorahub.signing.signed import verify_card

    path = version_file(hub, version).path
    hashes = digest_file(path, read_header(path), check_values=False).hashes
    signed = hub.signed_card(version)
    if hashes.sha256 != version.blob_sha256 or hashes.content != signed.card.content_digest:
        raise errors.HashMismatchError(
            f"the stored file of {version.ref} is not the one catalogued (sha256 {hashes.sha256[:16]}…, catalogue "
            f"says {version.blob_sha256[:16]}…)",
            hint="The blob store was modified; run `lorahub verify` on the version and restore it from a backup.",
        )
    broken = [c for c in verify_card(signed, hub).signatures if not c.valid and c.trust != "unknown"]
    if broken:
        raise errors.SignatureInvalidError(
            f"{version.ref}: the card's signature by {broken[0].keyid[:16]}… does not verify ({broken[0].reason})",
            hint="Run `lorahub verify` on the version; a card whose signature fails must not be re-signed.",
        )
    return path


# --- conversion ------------------------------------------------------------------------------------------------


def _source(
    hub: Hub, source: str | os.PathLike[str], catalogue: bool | None
) -> tuple[Path, AdapterVersion | None, bool]:
    """(file to read, catalogued parent, whether to catalogue the output). A reference is read from its verified
    blob and catalogued by default; a file only when asked, and then its content must be catalogued already."""
    if not is_catalogue_ref(source):
        path = Path(source)
        return path, _catalogued_content(hub, path) if catalogue else None, bool(catalogue)
    parent = hub.version(os.fspath(source))
    return verified_blob(hub, parent), parent, True if catalogue is None else catalogue


def convert(
    hub: Hub,
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    to: str,
    dtype: Dtype | None = None,
    catalogue: bool | None = None,
    check: bool = True,
    lossy: bool = False,
    rank: int | None = None,
    base: str | os.PathLike[str] | None = None,
) -> ConvertResult:
    """Convert a catalogued version (``name``, ``name@N``, digest) or a file to ``out``.

    ``catalogue`` (default: when ``source`` is a reference) adds the output as a new signed version converted from
    its parent; for a file, the parent is the catalogued version with the file's content, and there must be one.
    A ``peft`` folder is not a single file, so it is never catalogued.
    """
    from lorahub.adapters.convert import convert as convert_file

    path, parent, catalogue = _source(hub, source, catalogue)
    catalogue = catalogue and to != "peft"
    if catalogue:
        hub.audit_actor()  # no identity to sign with: say so before converting, not after
    report = convert_file(path, out, to=to, dtype=dtype, check=check, lossy=lossy, rank=rank, base=base)  # type: ignore[arg-type]
    result = ConvertResult(report, Path(out), parent)
    if not catalogue or parent is None:
        return result
    parameters = {
        "format": report.target,
        "dtype": dtype,
        "max_abs_error": _number(report.max_abs_error),
        "max_rel_error": _number(report.max_rel_error),
    } | ({"lossy": True, "rank": rank} if report.lossy else {})
    return _catalogue_output(hub, result, parent, parameters, relation="converted-from", action="convert")


def repair(
    hub: Hub, source: str | os.PathLike[str], out: str | os.PathLike[str], *, catalogue: bool | None = None,
    check: bool = True,
) -> ConvertResult:  # fmt: skip
    """Write a copy of a catalogued version or a file with its misnamed keys renamed as loaders expect
    (:func:`lorahub.adapters.repair.repair`); a catalogued source's output becomes its next version, converted from
    it with ``repair`` recorded."""
    from lorahub.adapters.repair import repair as repair_file

    path, parent, catalogue = _source(hub, source, catalogue)
    if catalogue:
        hub.audit_actor()
    report = repair_file(path, out, check=check)
    result = ConvertResult(report, Path(out), parent)
    if not catalogue or parent is None:
        return result
    parameters = {"format": report.target, "repair": True, "renamed": len(report.renamed)}
    return _catalogue_output(hub, result, parent, parameters, relation="converted-from", action="convert")


def resize(
    hub: Hub,
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    rank: int | None = None,
    energy: float | None = None,
    dtype: Dtype | None = None,
    catalogue: bool | None = None,
) -> ConvertResult:
    """Resize a catalogued version or a file (see :func:`lorahub.adapters.resize.resize`); a catalogued source's
    output becomes its next version, ``resized-from`` it, with the kept energy and error in the card."""
    from lorahub.adapters.resize import resize as resize_file

    path, parent, catalogue = _source(hub, source, catalogue)
    if catalogue:
        hub.audit_actor()
    report = resize_file(path, out, rank=rank, energy=energy, dtype=dtype)
    result = ConvertResult(report, Path(out), parent)
    if not catalogue or parent is None:
        return result
    parameters = {
        "rank": rank,
        "energy": _number(energy) if energy is not None else None,
        "min_kept_energy": _number(report.min_kept_energy),
        "max_rel_error": _number(report.max_rel_error),
    }
    return _catalogue_output(hub, result, parent, parameters, relation="resized-from", action="resize")


def _catalogued_content(hub: Hub, path: Path) -> AdapterVersion:
    from lorahub.files.digests import digest_file
    from lorahub.files.safetensors import check_path, read_header

    source = check_path(path)
    content = digest_file(source, read_header(source), check_values=False).hashes.content or ""
    found = hub.catalog.find_by_content(content)
    if found is None:
        raise errors.AdapterNotFoundError(
            f"{path} is not catalogued (content {content[:16]}…), so its conversion has no parent to name",
            hint="Add it first (`lorahub add FILE`), or convert without cataloguing.",
        )
    return found


def _number(value: float) -> str:
    """A float for a card parameter: cards hold no floats, so it goes in as text (``repr`` round-trips)."""
    return repr(float(value)) if math.isfinite(value) else "unchecked"


def _catalogue_output(
    hub: Hub, result: ConvertResult, parent: AdapterVersion, parameters: dict[str, Any], *, relation: str, action: str
) -> ConvertResult:
    """Add the output as ``parent``'s next version, or find the version that already has its content."""
    from lorahub.sdk.derive import add_derived

    try:
        added = add_derived(hub, result.output, [(parent, parameters)], relation=relation, action=action)
    except errors.DuplicateContentError:
        existing = _existing(hub, result.output)
        return dataclasses.replace(result, version=existing, reused=True)
    version = hub.catalog.get(added.name, added.version)
    return dataclasses.replace(result, version=version, reused=added.already)


def _existing(hub: Hub, path: Path) -> AdapterVersion:
    from lorahub.files.digests import digest_file
    from lorahub.files.safetensors import read_header

    content = digest_file(path, read_header(path), check_values=False).hashes.content or ""
    found = hub.catalog.find_by_content(content)
    assert found is not None  # DuplicateContentError said it is catalogued
    return found


# --- export ----------------------------------------------------------------------------------------------------


def export_for(
    hub: Hub,
    ref: str,
    out_dir: str | os.PathLike[str],
    tool: str,
    *,
    weight: float | None = None,
    dtype: Dtype | None = None,
) -> ExportResult:
    """Write ``ref`` into ``out_dir`` for ``tool`` (a1111, comfyui, hf): the adapter in the tool's layout, the
    signed card (embedded and beside it) and the tool's sidecars. Files already there are replaced atomically."""
    target = TARGETS.get(tool)
    if target is None:
        raise errors.UnknownChoiceError(f"unknown export target {tool!r}", hint=f"choose one of {', '.join(TOOLS)}")
    requested = hub.version(ref)
    directory = _directory(out_dir)
    file_name = target.file_name or f"{requested.name}.safetensors"
    version, conversion = requested, None
    if requested.format not in target.native or dtype is not None:
        conversion = _convert_into(hub, requested, directory, file_name, to=target.format, dtype=dtype)
        assert conversion.version is not None
        version = conversion.version
    signed = hub.signed_card(version)
    adapter = directory / file_name
    files = _write_adapter(hub, version, signed, adapter)
    written = _written(adapter)
    for sidecar in target.sidecars:
        files[sidecar] = SIDECAR_WRITERS[sidecar](hub, signed, written, directory, weight)
    return ExportResult(tool, requested, version, files, conversion)


def _directory(out_dir: str | os.PathLike[str]) -> Path:
    directory = Path(out_dir)
    if directory.exists() and not directory.is_dir():
        raise errors.NotAFolderError(
            f"{directory} is a file; an export for a tool writes a folder of files",
            hint="Name a folder (it is created), or drop --for to write one file.",
        )
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _convert_into(
    hub: Hub,
    version: AdapterVersion,
    directory: Path,
    file_name: str,
    *,
    to: Literal["kohya", "diffusers"],
    dtype: Dtype | None,
) -> ConvertResult:
    """Convert in a private folder inside the export folder (same filesystem), catalogue, and clean up: the
    exported bytes then come from the blob store like any other export."""
    scratch = Path(tempfile.mkdtemp(prefix=".lorahub-convert-", dir=directory))
    try:
        return convert(hub, version.ref, scratch / file_name, to=to, dtype=dtype, catalogue=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _write_adapter(hub: Hub, version: AdapterVersion, signed: SignedCard, adapter: Path) -> dict[str, Path]:
    from lorahub.signing.embed import embed_card, write_sidecar

    embed_card(verified_blob(hub, version), signed, out=adapter)
    return {"adapter": adapter, "card": write_sidecar(adapter, signed)}


def _written(path: Path) -> WrittenFile:
    from lorahub.files.digests import digest_file
    from lorahub.files.safetensors import read_header
    from lorahub.sdk.sidecars import WrittenFile

    header = read_header(path)
    hashes = digest_file(path, header, check_values=False).hashes
    dtypes = [t.dtype for t in header.tensors.values() if len(t.shape) > 0]
    return WrittenFile(path.name, path.stat().st_size, hashes, dtypes)


def _write_text(path: Path, text: str) -> Path:
    from lorahub.files.atomic import atomic_write

    data = text.encode("utf-8")
    atomic_write(path, lambda out: out.write(data), mode=0o644)
    return path


def _write_json(path: Path, data: Mapping[str, Any]) -> Path:
    return _write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _notes(signed: SignedCard, file_name: str) -> str:
    from lorahub.files.neighbours import SIDECAR_SUFFIX

    card = signed.card
    return (
        f"lorahub {card.name}@{card.version}, content digest {card.content_digest}, licence {card.license.id}. "
        f"The signed card is in the file's header and in {file_name}{SIDECAR_SUFFIX}; check it with "
        f"`lorahub verify {file_name}`."
    )


def _a1111(hub: Hub, signed: SignedCard, written: WrittenFile, directory: Path, weight: float | None) -> Path:
    from lorahub.sdk.sidecars import a1111_user_metadata

    data = a1111_user_metadata(signed.card, weight=weight, notes=_notes(signed, written.name))
    return _write_json(directory / f"{Path(written.name).stem}.json", data)


def _civitai(hub: Hub, signed: SignedCard, written: WrittenFile, directory: Path, weight: float | None) -> Path:
    from lorahub.sdk.sidecars import civitai_info

    return _write_json(directory / f"{Path(written.name).stem}.civitai.info", civitai_info(signed.card, written))


def _readme(hub: Hub, signed: SignedCard, written: WrittenFile, directory: Path, weight: float | None) -> Path:
    from lorahub.sdk.sidecars import hf_readme

    text = hf_readme(
        signed, file_name=written.name, folder=directory.resolve().name, lineage=_lineage(hub, signed), weight=weight
    )
    return _write_text(directory / "README.md", text)


def _lineage(hub: Hub, signed: SignedCard) -> list[LineageEntry]:
    from lorahub.sdk.sidecars import LineageEntry

    entries = []
    for parent in signed.card.lineage:
        found = hub.catalog.find_by_content(parent.digest, include_removed=True)
        entries.append(LineageEntry(parent.relation, parent.digest, parent.parameters, found.ref if found else None))
    return entries


SIDECAR_WRITERS = {"a1111": _a1111, "civitai": _civitai, "readme": _readme}
