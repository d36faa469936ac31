"""``lorahub lineage NAME --format cyclonedx``: an adapter and where it came from, as a CycloneDX 1.6 ML-BOM.

Compliance tools read CycloneDX; lorahub's own records (the signed cards, the lineage they form, the signatures and
this home's trust in them, the training records and their consent manifests) already hold every fact an ML-BOM asks
for. So the BOM is built as plain JSON from those records, with no CycloneDX library at run time:

- ``metadata.component`` is the adapter, a ``machine-learning-model`` with the file's SHA-256 (and BLAKE3),
  its licences (SPDX ids, ``LicenseRef-…`` in an SPDX expression), its creator as author and a ``modelCard``
  (task, base family, the datasets behind it, training-data consent as an ethical consideration, training facts);
- its parents are ``pedigree.ancestors``, recursively, each with its relation (``trained-from``, ``resumed-from``,
  ``merged-from``, ``converted-from``, ``resized-from``) and that step's parameters as properties;
- ``components`` holds the base models (each adapter depends on its own, in ``dependencies``) and the datasets, as
  ``data`` components carrying their consent summary;
- facts CycloneDX has no field for go into ``properties`` named ``lorahub:…``: the content digest, the card's own
  licence text and Civitai-style permissions, the signatures with their validity and trust *in the home that wrote
  the BOM*. The schema's ``signature`` field is a JSF signature over the BOM's own JSON; lorahub signs its cards with
  DSSE, not BOMs with JSF, so it never fills that field.

The output is deterministic: the same records give the same bytes (see :func:`serial_number`).
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import rfc8785

from lorahub import errors
from lorahub.version import __version__

if TYPE_CHECKING:
    from lorahub.licenses import CatalogueLicense
    from lorahub.registry.catalog import AdapterVersion
    from lorahub.sdk.hub import Hub
    from lorahub.sdk.lineage import LineageNode
    from lorahub.signing.card import BaseModel, Card, Consent, Creator, License

__all__ = ["SPEC_VERSION", "cyclonedx_bom", "json_text", "serial_number", "write_json"]

SPEC_VERSION = "1.6"
SCHEMA_URL = "http://cyclonedx.org/schema/bom-1.6.schema.json"
SERIAL_NAMESPACE = uuid.UUID("5b0b6a43-2f4e-4d7c-9a51-3c1e8f0d2a77")
"""The namespace of lorahub's name-based (version 5) BOM serial numbers. Fixed for good: changing it would give
every BOM already written a new serial for the same content."""

PREFIX = "lorahub:"
"""The namespace of lorahub's own properties, as CycloneDX's property taxonomy asks of a tool."""
TASK = "text-to-image"
TRAINING_SCHEMA = "lorahub.training/v1"
CONJUNCTION = " AND "
"""How a merge's card names its parents' licences (:func:`lorahub.sdk.merging.merged_license`)."""
NOT_STATED = frozenset({"unknown", "noassertion"})
"""Card licence texts that state no licence: a BOM then lists none, rather than a licence called "unknown"."""
LICENSE_REF = re.compile(r"^LicenseRef-[A-Za-z0-9.-]+$")
"""An SPDX ``LicenseRef-…`` identifier, the only non-SPDX id an SPDX expression (and so CycloneDX) accepts."""
USER_ID = re.compile(r"^(?P<name>[^<>]+?)\s*<(?P<email>[^<>\s]+@[^<>\s]+)>$")
"""An identity's ``Name <email>``, the form ``lorahub keys create`` asks for."""
MODEL = "machine-learning-model"


# --- the document --------------------------------------------------------------------------------------------------


def cyclonedx_bom(hub: Hub, ref: str) -> dict[str, Any]:
    """The CycloneDX 1.6 ML-BOM of the version ``ref`` (``NAME``, ``NAME@V`` or a content digest) and its lineage,
    as JSON data (:func:`json_text` writes it). Signature validity and trust are this home's view of them."""
    root = hub.lineage(ref)
    assert root.version is not None  # Hub.lineage resolves ref to a catalogued version
    builder = _Builder(hub)
    subject = builder.model(root)
    document: dict[str, Any] = {
        "$schema": SCHEMA_URL,
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "serialNumber": "",
        "version": 1,
        "metadata": {
            "timestamp": builder.card(root.version).created,
            "lifecycles": [{"phase": "post-build"}],
            "tools": {"components": [{"type": "application", "name": "lorahub", "version": __version__}]},
            "component": subject,
        },
        "components": builder.components(),
        "dependencies": builder.dependencies(),
    }
    document["serialNumber"] = serial_number(document)
    return document


def serial_number(document: Mapping[str, Any]) -> str:
    """The serial number of a BOM: a name-based UUID (RFC 9562 version 5) of the RFC 8785 bytes of everything else
    in it, the subject's content digest included.

    Why not a random UUID, as CycloneDX suggests: a BOM is a pure function of the catalogue's signed records, and
    writing it twice must give the same bytes (a BOM in version control, or one compared with last week's, changes
    only when its facts do). Why not the content digest alone: the same adapter's BOM does change when its facts
    do (a second signature, a key trusted or revoked here, another lorahub writing it), and two different documents
    must not claim to be the same BOM; with the serial derived from the whole content, they never do."""
    body = {key: value for key, value in document.items() if key != "serialNumber"}
    digest = hashlib.sha256(rfc8785.dumps(body)).hexdigest()
    return f"urn:uuid:{uuid.uuid5(SERIAL_NAMESPACE, digest)}"


def json_text(document: Any) -> str:
    """A JSON document as lorahub writes it to stdout or a file: two-space indent, UTF-8, key order kept (the BOM
    reads top-down: format, metadata, subject, components), one final newline. The same data gives the same text."""
    return json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n"


def write_json(document: Any, path: str | Path) -> Path:
    """Write :func:`json_text` to ``path`` atomically (a reader never sees half a BOM), readable by others: a BOM
    is made to be shared."""
    from lorahub.files.atomic import atomic_write

    target = Path(path)
    if not target.parent.is_dir():
        raise errors.PathNotFoundError(f"cannot write {target}: the folder {target.parent} does not exist")
    data = json_text(document).encode("utf-8")
    atomic_write(target, [data], mode=0o644)
    return target


# --- building it ---------------------------------------------------------------------------------------------------


@dataclass
class _Builder:
    """Walks the lineage tree once, collecting the components every model refers to (base models, datasets) so
    that each appears once, with one ``bom-ref``, however many adapters share it."""

    hub: Hub
    emitted: set[str] = field(default_factory=set)
    bases: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """base bom-ref → what each card (and training record) naming that base says of it."""
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    depends: dict[str, str] = field(default_factory=dict)
    """model bom-ref → its base model's bom-ref."""
    datasets_below: dict[str, list[str]] = field(default_factory=dict)
    cards: dict[str, Card] = field(default_factory=dict)

    def card(self, version: AdapterVersion) -> Card:
        if version.content_digest not in self.cards:
            self.cards[version.content_digest] = self.hub.signed_card(version).card
        return self.cards[version.content_digest]

    def components(self) -> list[dict[str, Any]]:
        return [*(_base_component(ref, said) for ref, said in self.bases.items()), *self.datasets.values()]

    def dependencies(self) -> list[dict[str, Any]]:
        """Each adapter needs its base model to run; bases and datasets need nothing, which CycloneDX asks to be
        said (an absent entry means "unknown"). Ancestors are not dependencies: they are history, not parts."""
        models = [{"ref": model, "dependsOn": [base]} for model, base in self.depends.items()]
        return models + [{"ref": ref} for ref in (*self.bases, *self.datasets)]

    def model(self, node: LineageNode) -> dict[str, Any]:
        """The component of one adapter in the tree, with its ancestors inside it. An adapter met a second time
        (two parents sharing a grandparent) is named again without its ``bom-ref`` or its ancestors: a ``bom-ref``
        is unique in a BOM, and the first occurrence has the rest."""
        ref = adapter_ref(node.content_digest)
        first = ref not in self.emitted
        self.emitted.add(ref)
        if node.version is None:
            self.datasets_below.setdefault(ref, [])
            return _unknown_adapter(node, ref if first else None)
        card = self.card(node.version)
        base = self.depends[ref] = self.base(card.base_model, node.training)
        ancestors = [self.model(parent) for parent in node.parents] if first else []
        if first:
            below = [r for p in node.parents for r in self.datasets_below.get(adapter_ref(p.content_digest), [])]
            self.datasets_below[ref] = list(dict.fromkeys(self.own_datasets(node, card) + below))
        component: dict[str, Any] = {"type": MODEL, **({"bom-ref": ref} if first else {})}
        component |= _identity(card, node.version)
        component |= _licensing(card.license)
        if ancestors:
            component["pedigree"] = {"ancestors": ancestors, "notes": _pedigree_notes(node)}
        if first:
            component["modelCard"] = _model_card(card, node.training, self.datasets_below[ref])
        component["properties"] = _adapter_properties(card, node, base, first=first)
        if card.tags:
            component["tags"] = list(card.tags)
        return component

    def base(self, base: BaseModel, training: Mapping[str, Any] | None) -> str:
        """The bom-ref of a base model's component, with what this card and its training record say of it."""
        ref = base_ref(base)
        trained_on = _mapping(_mapping(training).get("base_model"))
        said = {
            "name": base.name,
            "family": None if base.family == "unknown" else base.family,
            "weights-digest": base.weights_digest,
            "pipeline": trained_on.get("pipeline"),
            "prediction-type": trained_on.get("prediction_type"),
            "revision": trained_on.get("revision"),
        }
        self.bases.setdefault(ref, []).append(said)
        return ref

    def own_datasets(self, node: LineageNode, card: Card) -> list[str]:
        """The datasets this adapter was trained on: from its lorahub training record (the images, and any prior-
        preservation images), else from the consent manifest its card pins (``lorahub add --consent``)."""
        name = f"{card.name}@{card.version}"
        training = _mapping(node.training)
        found = [
            _DatasetFacts.from_training(_mapping(training.get(key)), role)
            for key, role in (("dataset", "training images"), ("prior", "prior-preservation images"))
        ]
        if not training:
            found.append(_DatasetFacts.from_consent(card.consent))
        refs = []
        for facts in found:
            if facts is not None:
                ref = dataset_ref(facts.manifest_digest)
                self.datasets.setdefault(ref, facts.component(ref, name))
                refs.append(ref)
        return refs


def adapter_ref(content_digest: str) -> str:
    """An adapter's bom-ref: its content digest, which names it in every card and every home alike."""
    return f"{PREFIX}adapter:{content_digest}"


def base_ref(base: BaseModel) -> str:
    """A base model's bom-ref: its weights digest when the card has one, else its family and name."""
    if base.weights_digest is not None:
        return f"{PREFIX}base:{base.weights_digest}"
    return f"{PREFIX}base:{base.family}:{base.name or 'unnamed'}"


def dataset_ref(manifest_digest: str) -> str:
    """A dataset's bom-ref: the digest of its consent manifest (one record per image, each by SHA-256)."""
    return f"{PREFIX}dataset:{manifest_digest}"


# --- the adapter -----------------------------------------------------------------------------------------------


def _identity(card: Card, version: AdapterVersion) -> dict[str, Any]:
    """Who made it, what it is called, and the hashes of its file."""
    identity: dict[str, Any] = {}
    if card.creator is not None:
        identity["authors"] = [_contact(card.creator)]
    identity |= {"name": card.name, "version": str(card.version)}
    if card.description:
        identity["description"] = card.description
    identity["hashes"] = _hashes(card, version)
    return identity


def _contact(creator: Creator) -> dict[str, str]:
    match = USER_ID.match(creator.name)
    if match is None:
        return {"name": creator.name}
    return {"name": match["name"], "email": match["email"]}


def _hashes(card: Card, version: AdapterVersion) -> list[dict[str, str]]:
    """The SHA-256 of the stored file, and its BLAKE3 when the card's hashes are of that same file (the card names
    the file it was made from; a file catalogued where it lies could have changed since)."""
    hashes = [{"alg": "SHA-256", "content": version.blob_sha256}]
    blake3 = card.hashes.get("blake3")
    if blake3 and card.hashes.get("sha256") == version.blob_sha256:
        hashes.append({"alg": "BLAKE3", "content": blake3})
    return hashes


def _unknown_adapter(node: LineageNode, ref: str | None) -> dict[str, Any]:
    """A parent this home has never catalogued: all anyone knows of it is the digest its child's card names."""
    return {
        "type": MODEL,
        **({"bom-ref": ref} if ref else {}),
        "name": node.content_digest,
        "description": "Not catalogued in the home that wrote this BOM: known only by the content digest that "
        "its child's signed card names.",
        "properties": [
            _property("content-digest", node.content_digest),
            _property("catalogued", "false"),
            *_edge_properties(node),
        ],
    }


def _adapter_properties(card: Card, node: LineageNode, base: str, *, first: bool) -> list[dict[str, str]]:
    version = node.version
    assert version is not None
    properties = [
        _property("ref", version.ref),
        _property("content-digest", card.content_digest),
        _property("format", card.format),
        _property("layer-kinds", ",".join(card.layer_kinds)),
        _property("base-model", base),
        *_license_properties(card.license),
        *_consent_properties(card.consent),
        *(_property("trigger-word", word) for word in card.trigger_words),
        *_other_hashes(card, version),
        _property("created", card.created),
    ]
    if version.removed:
        properties.append(_property("removed", "true"))
    if not first:
        properties.append(_property("described-above", adapter_ref(card.content_digest)))
    return properties + _edge_properties(node) + _signature_properties(node.signers)


def _other_hashes(card: Card, version: AdapterVersion) -> list[dict[str, str]]:
    """The hashes other tools look adapters up by (AutoV2 on Civitai, …), which CycloneDX has no algorithm for."""
    if card.hashes.get("sha256") != version.blob_sha256:
        return []
    listed = ("sha256", "blake3")  # in the component's hashes
    return [_property(f"hash:{name}", value) for name, value in card.hashes.items() if value and name not in listed]


def _edge_properties(node: LineageNode) -> list[dict[str, str]]:
    """How this adapter led to the one whose ancestor it is: the relation and that step's parameters."""
    if node.relation is None:
        return []
    params = [_property(f"lineage:{key}", _text(value)) for key, value in node.parameters.items()]
    return [_property("lineage:relation", node.relation), *params]


def _signature_properties(signers: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Each DSSE signature on the card, numbered from 1: key fingerprint, the name this home knows the key by,
    whether it verifies, and the key's trust state here (``own``, ``trusted``, ``revoked``, ``unknown``)."""
    properties = []
    for number, signer in enumerate(signers, start=1):
        at = f"signature:{number}:"
        properties.append(_property(f"{at}keyid", str(signer["fingerprint"])))
        if signer.get("name"):
            properties.append(_property(f"{at}signer", str(signer["name"])))
        properties.append(_property(f"{at}valid", _text(bool(signer["valid"]))))
        properties.append(_property(f"{at}trust", str(signer["trust"])))
    return properties


def _pedigree_notes(node: LineageNode) -> str:
    """One line per parent, for a person reading the BOM: relation, reference, parameters."""
    lines = []
    for parent in node.parents:
        name = parent.version.ref if parent.version is not None else f"uncatalogued {parent.content_digest}"
        params = ", ".join(f"{key}={_text(value)}" for key, value in parent.parameters.items())
        lines.append(f"{parent.relation} {name}" + (f" ({params})" if params else ""))
    return "\n".join(lines)


# --- licences --------------------------------------------------------------------------------------------------


def _licensing(card_license: License) -> dict[str, Any]:
    """``licenses`` and the licence texts' ``externalReferences`` (CycloneDX asks for both when a URL is known)."""
    parts = _licence_parts(card_license.id)
    out: dict[str, Any] = {}
    licenses = _licenses(parts)
    if licenses:
        out["licenses"] = licenses
    references = [
        {"url": entry.url, "comment": f"{entry.id}: {entry.name}", "type": "license"}
        for _, entry in parts
        if entry is not None and entry.url and entry.id.casefold() not in NOT_STATED
    ]
    if references:
        out["externalReferences"] = references
    return out


def _licence_parts(card_id: str) -> list[tuple[str, CatalogueLicense | None]]:
    """Each licence a card names (a merge names ``A AND B``), with its catalogue entry when lorahub knows it (by
    id or alias, so ``creativeml-openrail-m`` becomes ``LicenseRef-CreativeML-OpenRAIL-M``)."""
    from lorahub.licenses import get_license

    parts = []
    for text in dict.fromkeys(part.strip() for part in card_id.split(CONJUNCTION)):
        try:
            entry: CatalogueLicense | None = get_license(text)
        except errors.LorahubError:
            entry = None
        parts.append((entry.id if entry is not None else text, entry))
    return parts


def _licenses(parts: list[tuple[str, CatalogueLicense | None]]) -> list[dict[str, Any]]:
    """CycloneDX's licence choice, by the schema's rules: a ``license.id`` must be on the SPDX list (the catalogue
    says which of its ids are); a ``LicenseRef-…`` may appear only in an SPDX expression, which is also the one
    precise way to say that several licences all apply. Anything else (free text a card was given) is a named
    licence. All of them are what the card's signer declared."""
    if all(ident.casefold() in NOT_STATED for ident, _ in parts):
        return []
    declared = {"acknowledgement": "declared"}
    spdx = [entry is not None and entry.spdx for _, entry in parts]
    if len(parts) == 1 and spdx[0]:
        ident, entry = parts[0]
        assert entry is not None
        return [{"license": {"id": ident, **({"url": entry.url} if entry.url else {}), **declared}}]
    if all(is_spdx or LICENSE_REF.match(ident) for (ident, _), is_spdx in zip(parts, spdx, strict=True)):
        return [{"expression": CONJUNCTION.join(ident for ident, _ in parts), **declared}]
    return [
        {"license": ({"id": ident} if is_spdx else {"name": ident}) | declared}
        for (ident, _), is_spdx in zip(parts, spdx, strict=True)
    ]


def _license_properties(card_license: License) -> list[dict[str, str]]:
    """The card's licence exactly as signed, and the creator's Civitai-style permissions (unset ones left out)."""
    properties = [_property("license", card_license.id)]
    if card_license.commercial_use:
        properties.append(_property("license:commercial-use", ",".join(card_license.commercial_use)))
    for name, value in (
        ("credit-required", card_license.credit_required),
        ("derivatives-allowed", card_license.derivatives_allowed),
        ("different-license-allowed", card_license.different_license_allowed),
    ):
        if value is not None:
            properties.append(_property(f"license:{name}", _text(value)))
    return properties


# --- model card, base model, datasets ---------------------------------------------------------------------------


def _model_card(card: Card, training: Mapping[str, Any] | None, datasets: list[str]) -> dict[str, Any]:
    """What CycloneDX's model card has room for. ``datasets`` are every dataset behind the weights, this adapter's
    own and its ancestors' (a merge of a trained adapter learnt from that adapter's images too)."""
    kinds = "+".join(card.layer_kinds) or "LoRA"
    parameters: dict[str, Any] = {
        "task": TASK,
        "architectureFamily": card.base_model.family,
        "modelArchitecture": f"{kinds} adapter for {card.base_model.family} base models ({card.format} layout)",
    }
    if datasets:
        parameters["datasets"] = [{"ref": ref} for ref in datasets]
    parameters |= {"inputs": [{"format": "text"}], "outputs": [{"format": "image"}]}
    family = card.base_model.family
    on = f"a base model of the {family} family" if family != "unknown" else "its base model"
    considerations: dict[str, Any] = {
        "technicalLimitations": [f"An adapter, not a whole model: it works applied to {on}."],
        "ethicalConsiderations": [_consent_risk(card.consent, _mapping(_mapping(training).get("dataset")))],
    }
    if card.trigger_words:
        considerations["useCases"] = [f"Prompts with the trigger word(s) {', '.join(card.trigger_words)}."]
    model_card: dict[str, Any] = {"modelParameters": parameters, "considerations": considerations}
    properties = _training_properties(_mapping(training))
    if properties:
        model_card["properties"] = properties
    return model_card


def _consent_risk(consent: Consent, dataset: Mapping[str, Any]) -> dict[str, str]:
    """Training-data consent where model-card readers look for it; the mitigation says what training excluded."""
    summary = _mapping(_mapping(dataset.get("consent")).get("summary")) or _mapping(
        _mapping(consent.record).get("summary")
    )
    counts = ", ".join(f"{count} {status}" for status, count in summary.items() if count)
    risk = {"name": f"Training-data consent: {consent.status}" + (f" ({counts})" if counts else "")}
    excluded = dataset.get("excluded")
    if isinstance(excluded, list) and excluded:
        risk["mitigationStrategy"] = (
            f"{len(excluded)} image(s) whose consent did not allow training were excluded before training; the "
            "consent manifest the card pins records each one."
        )
    return risk


def _training_properties(training: Mapping[str, Any]) -> list[dict[str, str]]:
    """The facts of a training run that a model card has no field for: run, objective, steps, seed, trainer,
    tool, times and every hyperparameter. Read defensively: a card's ``training`` may come from another tool."""
    if not training:
        return []
    steps = _mapping(training.get("steps"))
    trainer = _mapping(training.get("trainer"))
    identity = _mapping(trainer.get("identity"))
    facts = {
        "schema": training.get("schema"),
        "run-id": training.get("run_id"),
        "objective": training.get("objective"),
        "steps-done": steps.get("done"),
        "steps-total": steps.get("total"),
        "seed": training.get("seed"),
        "precision": _mapping(training.get("precision")).get("used"),
        "tool": " ".join(str(v) for v in (trainer.get("tool"), trainer.get("version")) if v) or None,
        "trainer": identity.get("name"),
        "trainer-fingerprint": identity.get("fingerprint"),
        "started-at": training.get("started_at"),
        "finished-at": training.get("finished_at"),
    }
    properties = [_property(f"training:{name}", _text(value)) for name, value in facts.items() if value is not None]
    hyper = _mapping(training.get("hyperparameters"))
    return properties + [_property(f"training:hyperparameter:{key}", _text(value)) for key, value in hyper.items()]


def _base_component(ref: str, said: list[dict[str, Any]]) -> dict[str, Any]:
    """A base model as the cards that name it describe it: a family, perhaps a name and a weights digest, and what
    a training record adds (pipeline class, prediction type, revision). Each fact is taken from the first card that
    states it, in lineage order: a merge's card may say less of the same base (a kohya file without metadata reads
    as family ``unknown``) than the trained parent's card does. The weights digest is a property, not a hash: for a
    pipeline folder it is lorahub's digest over the folder's files, which no CycloneDX algorithm names."""
    facts = {key: next((s[key] for s in said if s[key] is not None), None) for key in said[0]}
    family = facts["family"] or "unknown"
    return {
        "type": MODEL,
        "bom-ref": ref,
        "name": facts.pop("name") or f"unnamed {family} base model",
        "modelCard": {"modelParameters": {"task": TASK, "architectureFamily": family}},
        "properties": [_property(f"base-model:{k}", _text(v)) for k, v in facts.items() if v is not None],
    }


@dataclass(frozen=True)
class _DatasetFacts:
    """A dataset as lorahub records it: its consent manifest's digest, the consent summary, and (from a training
    record) how many images were trained on and how many were excluded."""

    manifest_digest: str
    role: str
    status: str | None
    summary: Mapping[str, Any]
    images: Any = None
    excluded: int | None = None
    uncaptioned: Any = None
    kind: Any = None

    @classmethod
    def from_training(cls, dataset: Mapping[str, Any], role: str) -> _DatasetFacts | None:
        digest = dataset.get("manifest_digest")
        if not isinstance(digest, str):
            return None
        consent = _mapping(dataset.get("consent"))
        excluded = dataset.get("excluded")
        return cls(
            manifest_digest=digest,
            role=role,
            status=consent.get("status"),
            summary=_mapping(consent.get("summary")),
            images=dataset.get("images"),
            excluded=len(excluded) if isinstance(excluded, list) else None,
            uncaptioned=dataset.get("uncaptioned"),
            kind=dataset.get("kind"),
        )

    @classmethod
    def from_consent(cls, consent: Consent) -> _DatasetFacts | None:
        if consent.manifest_digest is None:
            return None
        record = _mapping(consent.record)
        return cls(
            manifest_digest=consent.manifest_digest,
            role="images",
            status=consent.status,
            summary=_mapping(record.get("summary")),
            images=record.get("items"),
        )

    def component(self, ref: str, adapter: str) -> dict[str, Any]:
        name = f"{self.role} of {adapter}"
        return {
            "type": "data",
            "bom-ref": ref,
            "name": name,
            "data": [{"type": "dataset", "name": name, "description": self.description()}],
            "properties": self.properties(),
        }

    def description(self) -> str:
        images = f"{self.images} image(s)" if self.images is not None else "Images"
        excluded = f", {self.excluded} excluded for their consent" if self.excluded else ""
        listed = f"each listed by SHA-256 in the consent manifest {self.manifest_digest}"
        counts = ", ".join(f"{n} {status}" for status, n in self.summary.items() if n)
        consent = f"consent {self.status or 'unknown'}" + (f" ({counts})" if counts else "")
        return f"{images}{excluded}; {consent}; {listed}."

    def properties(self) -> list[dict[str, str]]:
        facts = {
            "dataset:manifest-digest": self.manifest_digest,
            "dataset:kind": self.kind,
            "dataset:images": self.images,
            "dataset:excluded": self.excluded,
            "dataset:uncaptioned": self.uncaptioned,
            "consent:status": self.status,
        }
        properties = [_property(name, _text(value)) for name, value in facts.items() if value is not None]
        counts = [_property(f"consent:count:{status}", _text(n)) for status, n in self.summary.items() if n]
        return properties + counts


def _consent_properties(consent: Consent) -> list[dict[str, str]]:
    properties = [_property("consent:status", consent.status)]
    if consent.manifest_digest is not None:
        properties.append(_property("consent:manifest-digest", consent.manifest_digest))
    return properties


# --- small helpers ---------------------------------------------------------------------------------------------


def _property(name: str, value: str) -> dict[str, str]:
    return {"name": PREFIX + name, "value": value}


def _text(value: Any) -> str:
    """A property value: strings as they are, anything else as its JSON (``4``, ``true``, ``null``, ``["a"]``)."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)


def _mapping(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a JSON object, else an empty one: card fields from other tools may have any shape."""
    return value if isinstance(value, Mapping) else {}
