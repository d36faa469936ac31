"""``Hub.bake``: catalogued adapters, licence-checked and verified, baked into a base checkpoint, audited.

The base is a checkpoint file, or a whole diffusers pipeline found where ``train`` and ``generate`` find one (a
folder anywhere, a Hugging Face cache snapshot, a repo id in the local cache): a pipeline is baked into a new
pipeline folder (:mod:`lorahub.merge.pipeline`).

Order matters, and is the point of this module: the licence engine is asked before any tensor is read (a
forbidden combination never costs a 5 GB pass), every adapter blob is verified against the home policy and its
catalogued content digest before it is read, and only then is the base streamed. The audit event records what
was baked, with which weights, from which base (by repo id and revision when it came from the cache, and by
SHA-256), and whether an uncertain licence answer was accepted.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorahub import errors

if TYPE_CHECKING:
    from lorahub.adapters.model import CanonicalAdapter
    from lorahub.licenses import Verdict
    from lorahub.merge.bake import BakeReport
    from lorahub.registry.catalog import AdapterVersion
    from lorahub.sdk.hub import Hub

__all__ = ["BakeResult", "WeightedVersion", "bake", "resolve_weighted"]


@dataclass(frozen=True)
class WeightedVersion:
    """One ``NAME[@V][:W]`` spec resolved against the catalog."""

    spec: str
    version: AdapterVersion
    weight: float


@dataclass(frozen=True)
class BakeResult:
    """What :meth:`Hub.bake` wrote (the bake report: base and output digests, adapters, tensors changed) and the licence
    verdict it was allowed under, with whether an uncertain verdict was accepted."""

    report: BakeReport
    license: Verdict
    accepted_uncertain: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.report.as_dict(),
            "license": self.license.as_dict(),
            "accepted_uncertain": self.accepted_uncertain,
        }


def resolve_weighted(hub: Hub, specs: Sequence[str]) -> list[WeightedVersion]:
    """Each spec parsed (``parse_weighted``) and looked up; unknown names fail here, before anything is read."""
    from lorahub.sdk.refs import parse_weighted

    if not specs:
        raise errors.MissingArgumentError(
            "name at least one adapter", hint="e.g. lorahub bake BASE pixel-art:0.7 --out OUT"
        )
    resolved = []
    for spec in specs:
        ref, weight = parse_weighted(spec)
        resolved.append(WeightedVersion(spec, hub.version(ref), weight))
    return resolved


def _verified(hub: Hub, version: AdapterVersion) -> CanonicalAdapter:
    """The catalogued blob, verified as ``load`` verifies it, read as the family the catalogue recorded (or, when the
    geometry left it open, the first family whose names all its modules map to; the bake then checks the base's)."""
    from lorahub.adapters.names import FAMILIES
    from lorahub.sdk.loading import resolve, settle_family

    verified = resolve(hub, version.ref)
    settle_family(verified, [version.family] if version.family in FAMILIES else FAMILIES)
    return verified.adapter


def bake(
    hub: Hub,
    base: str | os.PathLike[str],
    specs: Sequence[str],
    out: str | os.PathLike[str],
    *,
    use: str | None = None,
    base_license: str | None = None,
    accept_uncertain: bool = False,
    components: Sequence[str] | None = None,
) -> BakeResult:
    """Licence gate, verification, streaming bake, audit event ``bake`` — in that order."""
    from lorahub.files.bases import locate_base
    from lorahub.merge.bake import AdapterSource
    from lorahub.merge.bake import bake as bake_file
    from lorahub.merge.pipeline import bake_pipeline
    from lorahub.sdk.licensing import require_license

    location = locate_base(base)
    resolved = resolve_weighted(hub, specs)
    verdict = require_license(
        hub,
        [r.version.ref for r in resolved],
        use=use,
        merge=True,
        base_license=base_license,
        subject="model",
        accept_uncertain=accept_uncertain,
        action="bake",
    )
    actor = hub.audit_actor()  # before the long pass: a home that cannot sign the event fails now
    adapters = [(_verified(hub, r.version), r.weight) for r in resolved]
    sources = [AdapterSource(r.version.name, r.version.number, r.version.content_digest) for r in resolved]
    bake_base = bake_pipeline if location.path.is_dir() else bake_file
    report = bake_base(location.path, adapters, out, sources=sources, components=components)
    accepted = verdict.verdict == "uncertain"
    hub.catalog.log(
        "bake",
        audit=actor,
        details={
            "base": report.base,
            "revision": report.revision,
            "path": report.path,
            "base_sha256": report.base_sha256,
            "out": str(Path(out)),
            "output_sha256": report.output_sha256,
            "layout": report.layout,
            "components": report.components,
            "adapters": report.adapters,
            "use": use,
            "license": verdict.verdict,
            "accepted_uncertain": accepted,
        },
    )
    return BakeResult(report, verdict, accepted)
