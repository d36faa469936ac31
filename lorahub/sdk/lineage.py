"""``lorahub lineage``: where an adapter came from, as a tree of signed cards.

Each node is a catalogued version (or a digest this home has never seen), with the relation that links it to its
child, the parameters of that step (weight, method, rank, format), who signed its card and whether that signature
holds and is trusted here, and its licence. Training facts (base weights, dataset manifest) come from the card's
``training`` record; the checkpoints an adapter was baked into come from the audit log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lorahub.registry.catalog import AdapterVersion
    from lorahub.sdk.hub import Hub

MAX_DEPTH = 32
"""Cards cannot form cycles (a parent's digest is fixed before the child exists), but a damaged catalogue could."""


@dataclass
class LineageNode:
    """One adapter in the tree :meth:`Hub.lineage` returns: how it was made from its ``parents`` (``relation``
    and ``parameters``), its licence, signers, training record and the bakes it went into. A parent that this
    home has not catalogued is a node with only its content digest (``known`` is false)."""

    content_digest: str
    relation: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    version: AdapterVersion | None = None
    license: str | None = None
    signers: list[dict[str, Any]] = field(default_factory=list)
    training: dict[str, Any] | None = None
    baked_into: list[dict[str, Any]] = field(default_factory=list)
    parents: list[LineageNode] = field(default_factory=list)

    @property
    def known(self) -> bool:
        return self.version is not None

    def as_dict(self) -> dict[str, Any]:
        version = self.version
        return {
            "ref": version.ref if version else None,
            "content_digest": self.content_digest,
            "known": self.known,
            "relation": self.relation,
            "parameters": self.parameters,
            "license": self.license,
            "signers": self.signers,
            "training": _training_summary(self.training),
            "baked_into": self.baked_into,
            "parents": [p.as_dict() for p in self.parents],
        }


def _training_summary(training: dict[str, Any] | None) -> dict[str, Any] | None:
    """The facts a lineage reader wants from a ``lorahub.training/v1`` record (the card has all of it)."""
    if training is None:
        return None
    base = training.get("base_model") or {}
    dataset = training.get("dataset") or {}
    steps = training.get("steps") or {}
    identity = (training.get("trainer") or {}).get("identity") or {}
    summary = {
        "base": base.get("name"),
        "base_digest": base.get("weights_digest"),
        "dataset_manifest": dataset.get("manifest_digest"),
        "images": dataset.get("images"),
        "excluded": len(dataset.get("excluded") or []),
        "consent": (dataset.get("consent") or {}).get("status"),
        "steps": steps.get("done") if isinstance(steps, dict) else steps,
        "seed": training.get("seed"),
        "trainer": identity.get("name"),
    }
    return {k: v for k, v in summary.items() if v is not None}


def _signers(hub: Hub, version: AdapterVersion) -> list[dict[str, Any]]:
    from lorahub.signing.signed import verify_card

    checked = verify_card(hub.signed_card(version), hub)
    return [{"fingerprint": s.keyid, "name": s.name, "valid": s.valid, "trust": s.trust} for s in checked.signatures]


def _baked_into(events: list[dict[str, Any]], digest: str) -> list[dict[str, Any]]:
    found = []
    for event in events:
        details = event["details"]
        if any(a.get("content_digest") == digest for a in details.get("adapters", [])):
            found.append({"output": details.get("out"), "sha256": details.get("output_sha256"), "time": event["time"]})
    return found


def _node(
    hub: Hub, digest: str, relation: str | None, parameters: dict[str, Any], *, bakes: list[Any], depth: int
) -> LineageNode:
    version = hub.catalog.find_by_content(digest, include_removed=True)
    node = LineageNode(content_digest=digest, relation=relation, parameters=parameters, version=version)
    node.baked_into = _baked_into(bakes, digest)
    if version is None:
        return node
    card = hub.signed_card(version).card
    node.license, node.training, node.signers = card.license.id, card.training, _signers(hub, version)
    if depth < MAX_DEPTH:
        node.parents = [
            _node(hub, p.digest, p.relation, dict(p.parameters), bakes=bakes, depth=depth + 1) for p in card.lineage
        ]
    return node


def lineage(hub: Hub, ref: str) -> LineageNode:
    version = hub.version(ref)
    return _node(hub, version.content_digest, None, {}, bakes=hub.audit(action="bake"), depth=0)
