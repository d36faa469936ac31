"""``lorahub lineage``: where an adapter came from, as a tree of signed cards.

Each node is a catalogued version (or a digest this home has never seen), with the relation that links it to its
child, the parameters of that step (weight, method, rank, format), who signed its card and whether that signature
holds and is trusted here, and its licence. Training facts (base weights, dataset manifest) come from the card's
``training`` record; the checkpoints an adapter was baked into come from the audit log.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lorahub.registry.catalog import AdapterVersion
    from lorahub.sdk.hub import Hub
    from lorahub.signing.trust import TrustLookup

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


def _signers(hub: Hub, version: AdapterVersion, trust: TrustLookup | None) -> list[dict[str, Any]]:
    from lorahub.signing.signed import verify_card

    checked = verify_card(hub.signed_card(version), trust or hub)
    return [{"fingerprint": s.keyid, "name": s.name, "valid": s.valid, "trust": s.trust} for s in checked.signatures]


def _baked_into(events: list[dict[str, Any]], digest: str) -> list[dict[str, Any]]:
    found = []
    for event in events:
        details = event["details"]
        if any(a.get("content_digest") == digest for a in details.get("adapters", [])):
            found.append({"output": details.get("out"), "sha256": details.get("output_sha256"), "time": event["time"]})
    return found


def _node(
    hub: Hub,
    digest: str,
    relation: str | None,
    parameters: dict[str, Any],
    *,
    bakes: list[Any],
    depth: int,
    trust: TrustLookup | None,
) -> LineageNode:
    version = hub.catalog.find_by_content(digest, include_removed=True)
    node = LineageNode(content_digest=digest, relation=relation, parameters=parameters, version=version)
    node.baked_into = _baked_into(bakes, digest)
    if version is None:
        return node
    card = hub.signed_card(version).card
    node.license, node.training, node.signers = card.license.id, card.training, _signers(hub, version, trust)
    if depth < MAX_DEPTH:
        node.parents = [
            _node(hub, p.digest, p.relation, dict(p.parameters), bakes=bakes, depth=depth + 1, trust=trust)
            for p in card.lineage
        ]
    return node


def lineage(hub: Hub, ref: str, *, trust: TrustLookup | None = None) -> LineageNode:
    """The tree of ``ref``'s parents; signatures judged by ``trust`` when given (one snapshot for every node),
    else by the hub."""
    version = hub.version(ref)
    return _node(hub, version.content_digest, None, {}, bakes=hub.audit(action="bake"), depth=0, trust=trust)


# --- children: the versions made from one ----------------------------------------------------------------------


@dataclass(frozen=True)
class Child:
    """A catalogued version whose card names another as its parent, with the relation and its parameters."""

    version: AdapterVersion
    relation: str
    parameters: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "ref": self.version.ref,
            "content_digest": self.version.content_digest,
            "relation": self.relation,
            "parameters": self.parameters,
            "license": self.version.license_id,
            "removed": self.version.removed,
        }


class ChildIndex:
    """Which versions name each content digest as a parent. A card says who its parents are, never its children,
    so finding children means reading the cards that have parents; since cards never change, the index only grows,
    and a caller that keeps one (the web catalogue) reads only the versions added since its last question."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._lock = threading.Lock()
        self._last_id = 0
        self._edges: dict[str, list[tuple[int, str, dict[str, Any]]]] = {}

    def refresh(self) -> None:
        with self._lock:
            highest, rows = self._hub.catalog.derived_cards(after=self._last_id)
            for version_id, card_json in rows:
                for parent in json.loads(card_json).get("lineage") or ():
                    edge = (version_id, str(parent["relation"]), dict(parent.get("parameters") or {}))
                    self._edges.setdefault(str(parent["digest"]), []).append(edge)
            self._last_id = highest

    def children(self, content_digest: str) -> list[Child]:
        """The versions made from ``content_digest`` (removed ones too: a lineage keeps them), oldest first."""
        self.refresh()
        edges = self._edges.get(content_digest, [])
        versions = self._hub.catalog.by_ids([version_id for version_id, _, _ in edges])
        by_id = {version.id: version for version in versions}
        return [Child(by_id[i], relation, parameters) for i, relation, parameters in edges if i in by_id]
