"""``lorahub.inspect``: what an adapter file is, from its bytes alone.

One strict header parse, one detection pass over the keys, one sequential read for every hash and value check.
Pickled files are scanned, never unpickled.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lorahub import errors
from lorahub.files import numeric
from lorahub.files.digests import Claim, Digest, Hashes, check_claims, digest_file
from lorahub.files.metadata import decode_metadata
from lorahub.files.pickles import PickleScan, looks_like_pickle, scan_pickle_file
from lorahub.files.safetensors import Header, SafetensorsFile, check_path
from lorahub.formats import detect
from lorahub.formats.base import Layout, Module
from lorahub.formats.families import FamilyVerdict, detect_family
from lorahub.formats.layers import layer_kind, layer_kinds, problems_in, rank
from lorahub.formats.misnaming import LOADERS, Diagnosis, describe, diagnose, readable

REPORT_SCHEMA = "lorahub.inspect/v1"
UP_ROLES = ("up", "hada_w1_a", "hada_w2_a", "lokr_w1", "lokr_w1_a", "glora_b1")


@dataclass(frozen=True)
class Problem:
    """Something a user should know before using the file. ``severity`` is ``error`` or ``warning``."""

    code: str
    severity: str
    message: str
    keys: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Spread:
    """A per-module number (rank, alpha) that may vary: its range and how many modules have each value."""

    min: float | None
    max: float | None
    counts: dict[str, int]
    missing: int = 0

    @classmethod
    def of(cls, values: list[float | None]) -> Spread:
        present = [v for v in values if v is not None]
        missing = len(values) - len(present)
        counts = Counter(_number_text(v) for v in present)
        return cls(
            min=min(present) if present else None,
            max=max(present) if present else None,
            counts=dict(sorted(counts.items(), key=lambda kv: float(kv[0]))),
            missing=missing,
        )


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.6g}"


@dataclass(frozen=True)
class Report:
    """The answer of ``inspect``. :meth:`as_dict` is the documented, stable ``--json`` shape."""

    path: str
    file_size: int
    container: str
    format: str
    layer_kinds: list[str]
    base_model: FamilyVerdict
    components: dict[str, int]
    modules: int
    tensors: int
    parameters: int
    rank: Spread
    alpha: Spread
    scale_rule: dict[str, int]
    """Modules per scale rule: ``alpha/rank``, or ``alpha/sqrt(rank)`` where the file's PEFT config says
    ``use_rslora`` (rsLoRA); modules without a rank (full diffs, OFT, IA3) have no scale and are not counted."""
    dtypes: dict[str, int]
    hashes: Hashes
    claims: list[Claim]
    embeddings: list[dict[str, Any]]
    metadata: dict[str, dict[str, Any]]
    problems: list[Problem]
    unmatched_keys: list[str] = field(default_factory=list)
    pickle: PickleScan | None = None
    support: dict[str, Any] = field(default_factory=dict)
    """What lorahub can do with the file (:mod:`lorahub.adapters.support`): convert exactly or lossily, load (and
    how), bake, what needs the base weight and why not; ``kinds`` gives each kind's and extra's row of the support
    matrix with its module count."""
    raw_metadata: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    """The header's ``__metadata__`` as stored (``metadata`` is its decoded, grouped view)."""

    @property
    def dangerous(self) -> bool:
        return self.pickle is not None and bool(self.pickle.dangerous)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["raw_metadata"]
        data["hashes"] = self.hashes.as_dict()
        return {"schema": REPORT_SCHEMA, **data}

    def raise_if_dangerous(self) -> None:
        """Turn a dangerous pickle into its error, after the report has been shown."""
        if self.pickle is not None and self.pickle.dangerous:
            names = ", ".join(self.pickle.dangerous)
            raise errors.UnsafePickleError(
                f"{self.path} would import {names} when loaded", dangerous=list(self.pickle.dangerous)
            )


def inspect(
    path: str | os.PathLike[str], *, sink: Callable[[memoryview], object] | None = None, identity_only: bool = False
) -> Report:
    """Describe an adapter file: format, layers, base family, hashes, metadata and problems.

    ``sink`` receives the file's bytes as they are read for hashing, so a caller can store the file without a
    second read. ``identity_only`` computes only the SHA-256 and the content digest (see
    :func:`~lorahub.files.digests.digest_file`): no value checks, so no value problems either.
    """
    p = check_path(path)
    with open(p, "rb") as handle:
        prefix = handle.read(16)
    if looks_like_pickle(prefix):
        return _inspect_pickle(p)
    with SafetensorsFile(p) as container:
        header = container.header
        layout = detect(header.tensors, header.metadata)
        naming = diagnose(header.tensors, header.metadata, layout)
        digest = digest_file(p, header, sink=sink, identity_only=identity_only)
        alphas = {m.name: _alpha(container, m) for m in layout.modules}
    return _safetensors_report(p, header, layout, naming=naming, digest=digest, alphas=alphas)


def _alpha(container: SafetensorsFile, module: Module) -> float | None:
    info = module.tensors.get("alpha")
    if info is not None:
        return numeric.scalar(container.raw(info.name), info)
    return module.config_alpha


SCALE_RULES = {False: "alpha/rank", True: "alpha/sqrt(rank)"}
"""``Module.rslora`` → the rule's name in reports."""


def _scale_rules(modules: list[Module]) -> dict[str, int]:
    counts = Counter(SCALE_RULES[m.rslora] for m in modules if rank(m) is not None)
    return dict(sorted(counts.items()))


def _safetensors_report(
    path: Path, header: Header, layout: Layout, *, naming: Diagnosis, digest: Digest, alphas: dict[str, float | None]
) -> Report:
    family = detect_family(layout, header.metadata)
    claims = check_claims(header.metadata, digest.hashes.autov3)
    tensors = header.tensors.values()
    return Report(
        path=str(path),
        file_size=header.file_size,
        container="safetensors",
        format=layout.format,
        layer_kinds=sorted({kind for m in readable(layout) for kind in layer_kinds(m)}),
        base_model=family,
        components=dict(sorted(Counter(m.component for m in layout.modules).items())),
        modules=len(layout.modules),
        tensors=len(header.tensors),
        parameters=sum(t.numel for t in tensors),
        rank=Spread.of([rank(m) for m in layout.modules]),
        alpha=Spread.of([alphas[m.name] for m in layout.modules]),
        scale_rule=_scale_rules(layout.modules),
        dtypes=dict(sorted(Counter(t.dtype for t in tensors).items())),
        hashes=digest.hashes,
        claims=claims,
        embeddings=[asdict(e) for e in layout.embeddings],
        metadata=decode_metadata(header.metadata),
        raw_metadata=dict(header.metadata),
        problems=_problems(header, layout, naming, digest, family) + _claim_problems(claims),
        unmatched_keys=list(layout.unmatched),
        support=_support(layout, family.family or "unknown", header.metadata),
    )


def _canonical(family: str, module: Module) -> str:
    """A module's canonical name where it has one of its own (SD3/FLUX names in any spelling), else ""."""
    from lorahub.adapters.names import to_canonical

    component = module.component if module.component != "unknown" else None
    return to_canonical(family, "kohya", module.name, component) or ""


def _support(layout: Layout, family: str, metadata: Mapping[str, str]) -> dict[str, Any]:
    """The file's row of the support matrix, from the header alone."""
    from lorahub.adapters.model import where_modules_go
    from lorahub.adapters.support import ModuleFacts, capabilities, rows_of

    fates = where_modules_go(family, layout, metadata)
    facts = [
        ModuleFacts(
            layer_kind(m), frozenset(m.tensors) - {"alpha"}, fates.get(m.name, "unmapped"), _canonical(family, m)
        )
        for m in layout.modules
    ]
    counts = Counter(row.kind for fact in facts for row in rows_of(fact))
    kinds = {}
    for fact in facts:
        for row in rows_of(fact):
            kinds[row.kind] = {
                "label": row.label, "convert": row.convert, "load": row.load, "bake": row.bake,
                "needs_base": row.needs_base, "modules": counts[row.kind],
            }  # fmt: skip
    return {**capabilities(facts, family=family).as_dict(), "kinds": dict(sorted(kinds.items()))}


def _problems(
    header: Header, layout: Layout, naming: Diagnosis, digest: Digest, family: FamilyVerdict
) -> list[Problem]:
    found: list[Problem] = []
    if header.unreferenced_bytes:
        found.append(
            Problem(
                "unreferenced-bytes",
                "error",
                f"{header.unreferenced_bytes:,} byte(s) of the data section belong to no tensor: "
                "the safetensors library refuses such files, and data can hide there",
            )
        )
    found += _naming_problems(naming)
    for module in layout.modules:
        if module.name not in naming.repaired_modules:  # misnamed keys took its other half: said once, above
            found += [Problem("structure", "error", f"{module.name}: {text}") for text in problems_in(module)]
    non_finite = sorted(name for name, check in digest.tensors.items() if check.non_finite)
    if non_finite:
        found.append(Problem("non-finite", "error", f"{len(non_finite)} tensor(s) hold NaN or Inf", non_finite))
    zero_ups = sorted(
        info.name
        for module in layout.modules
        for role, info in module.tensors.items()
        if role in UP_ROLES and digest.tensors[info.name].all_zero
    )
    if zero_ups:
        found.append(
            Problem(
                "all-zero-up",
                "warning",
                f"{len(zero_ups)} up weight(s) are all zero: those modules change nothing (untrained or underflowed)",
                zero_ups,
            )
        )
    explained = {*naming.misnamed, *naming.fitting}
    unknown = [key for key in layout.unmatched if key not in explained]
    if unknown:
        found.append(
            Problem(
                "unknown-keys",
                "warning",
                f"{len(unknown)} key(s) match no known layout; loaders will ignore them",
                unknown,
            )
        )
    if family.disagreement:
        found.append(Problem("family-disagreement", "warning", family.disagreement))
    return found


def _naming_problems(naming: Diagnosis) -> list[Problem]:
    """``misnamed-keys`` (an error when no module would load at all) and ``nothing-loadable``."""
    found = []
    nothing = naming.lora_like and naming.readable_modules == 0
    if naming.misnamed:
        severity = "error" if nothing else "warning"
        found.append(Problem("misnamed-keys", severity, describe(naming), naming.misnamed))
    if nothing:
        why = "its keys are misnamed (see misnamed-keys)" if naming.misnamed else "no module is whole in a known layout"
        found.append(Problem("nothing-loadable", "error", f"no loader ({LOADERS}) would apply any module: {why}"))
    return found


def _claim_problems(claims: list[Claim]) -> list[Problem]:
    return [
        Problem(
            "hash-claim-mismatch", "warning", f"{c.key} says {c.value} but the tensors hash to {c.expected}", [c.key]
        )
        for c in claims
        if c.status == "mismatch"
    ]


def _inspect_pickle(path: Path) -> Report:
    scan = scan_pickle_file(path)
    digest = digest_file(path, None)
    problems = [
        Problem(
            "pickle",
            "warning",
            "pickled file: inspected by opcode scan only, tensors not read; convert it to .safetensors",
        )
    ]
    if scan.dangerous:
        problems.insert(
            0,
            Problem(
                "pickle-dangerous",
                "error",
                f"loading this file would import {', '.join(scan.dangerous)}",
                list(scan.dangerous),
            ),
        )
    return Report(
        path=str(path),
        file_size=path.stat().st_size,
        container=scan.kind,
        format="unknown",
        layer_kinds=[],
        base_model=FamilyVerdict(
            family="unknown", evidence=[], metadata_family=None, metadata_evidence=[], disagreement=None
        ),
        components={},
        modules=0,
        tensors=0,
        parameters=0,
        rank=Spread.of([]),
        alpha=Spread.of([]),
        scale_rule={},
        dtypes={},
        hashes=digest.hashes,
        claims=[],
        embeddings=[],
        metadata={},
        problems=problems,
        pickle=scan,
    )
