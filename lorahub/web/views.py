"""What each page and API answer shows, assembled from the SDK: plain data, no HTTP.

The HTML pages (:mod:`lorahub.web.pages`) and the JSON API (:mod:`lorahub.web.api`) read the same functions, so
the browser and an API client always see the same facts.
"""

from __future__ import annotations

import base64
import json
import mimetypes
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

from lorahub import errors
from lorahub.registry.catalog import COMMERCIAL_USES, Filters
from lorahub.sdk.records import summary
from lorahub.web import svg

if TYPE_CHECKING:
    from lorahub.registry.catalog import AdapterVersion
    from lorahub.registry.locations import LocationRow
    from lorahub.sdk.adding import AddResult
    from lorahub.sdk.hub import Hub
    from lorahub.sdk.lineage import ChildIndex
    from lorahub.signing.trust import StaticTrust, TrustLookup

LICENSE_QUESTIONS: Final = (
    ("commercial", "outputs", "sell or use images commercially"),
    ("non-commercial", "outputs", "use images non-commercially"),
    ("research", "outputs", "use images for research"),
    ("commercial", "model", "use or sell the adapter itself commercially"),
)
"""The licence questions an adapter page answers: (use, subject, what it means in words)."""

HASH_LABELS: Final = (
    ("sha256", "SHA-256"),
    ("autov2", "AutoV2"),
    ("autov3", "AutoV3"),
    ("autov1", "AutoV1"),
    ("blake3", "BLAKE3"),
    ("crc32", "CRC32"),
    ("content", "lorahub content"),
)
"""The hashes an adapter page lists, in the order people look for them (Civitai's AutoV2 and AutoV3 first)."""

PREVIEW_TYPES: Final = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif"})
"""Previews the pages show; videos beside an adapter (``NAME.mp4``) are recorded but not served."""
MAX_PREVIEW_BYTES: Final = 32 * 2**20

FILTER_FIELDS: Final = ("family", "format", "license", "commercial", "signer", "consent")


def adapter_url(ref: str) -> str:
    return f"/adapters/{quote(ref, safe='@')}"


# --- filters ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """The library's search text, filters and page, as the query string gives them (empty fields left out)."""

    text: str
    filters: Filters
    cursor: str | None
    values: dict[str, str]


def query_from(params: Mapping[str, str]) -> Query:
    """``q``, the ``list``/``search`` filters and ``cursor``, from a query string; ``commercial`` is ``yes`` or
    ``no``. A value that cannot be a filter is refused rather than ignored (an ignored filter shows everything)."""
    values = {key: params.get(key, "").strip() for key in ("q", *FILTER_FIELDS)}
    commercial = values["commercial"].lower()
    if commercial not in ("", "yes", "no"):
        raise errors.InvalidArgumentError(f"commercial={values['commercial']!r}: use yes or no")
    filters = Filters(
        family=values["family"] or None,
        format=values["format"] or None,
        license_id=values["license"] or None,
        commercial=None if not commercial else commercial == "yes",
        signer=values["signer"].lower() or None,
        consent_status=values["consent"] or None,
    )
    return Query(values["q"], filters, params.get("cursor") or None, {k: v for k, v in values.items() if v})


# --- the library ------------------------------------------------------------------------------------------------


def trust_snapshot(hub: Hub) -> StaticTrust:
    """The keys' trust as it stands when a request starts, read once for everything the page checks."""
    from lorahub.signing.trust import StaticTrust

    return StaticTrust(hub.trusted_keys())


def commercial_badge(uses: Sequence[str]) -> str:
    """The Civitai-style permission a card states, in words: ``commercial``, ``non-commercial`` or ``not stated``."""
    if any(use in COMMERCIAL_USES for use in uses):
        return "commercial"
    return "non-commercial" if "none" in uses else "not stated"


def library(hub: Hub, query: Query, *, limit: int, trust: TrustLookup) -> dict[str, Any]:
    """A page of the library: each version's summary with its badges, signature state, file state and preview."""
    page = hub.browse(query.text, query.filters, limit=limit, cursor=query.cursor)
    rows = hub.catalog.locations.of_sha256([v.blob_sha256 for v in page.versions])
    by_sha: dict[str, list[LocationRow]] = {}
    for row in rows:
        by_sha.setdefault(row.sha256, []).append(row)
    cards = []
    for version in page.versions:
        located = by_sha.get(version.blob_sha256, [])
        cards.append(
            summary(version)
            | {
                "ref": version.ref,
                "url": adapter_url(version.ref),
                "commercial": commercial_badge(version.commercial_use),
                "signature_state": svg.signature_state(signatures_over_card(version, trust)),
                "file_state": file_state(hub, version, located),
                "preview": preview_url(located),
            }
        )
    return {"versions": cards, "next": page.next, "previous": page.previous}


def signatures_over_card(version: AdapterVersion, trust: TrustLookup) -> list[dict[str, Any]]:
    """Each signature checked over the card's stored bytes against the keys this home knows, with the key's trust.

    What a library card's badge needs, at a fraction of the cost of parsing and re-canonicalising each card (the
    adapter page, ``show`` and "verify now" do that); the bytes checked are the ones the catalogue serves."""
    from lorahub.signing.dsse import Envelope, EnvelopeSignature, verify_envelope
    from lorahub.signing.signed import CARD_PAYLOAD_TYPE

    signatures = tuple(EnvelopeSignature(s.keyid, base64.b64decode(s.sig)) for s in version.signatures)
    records = {s.keyid: trust.lookup(s.keyid) for s in signatures}
    keys = {keyid: record.public_pem for keyid, record in records.items() if record is not None}
    checks = verify_envelope(Envelope(version.card_json.encode("utf-8"), CARD_PAYLOAD_TYPE, signatures), keys)
    found = []
    for check in checks:
        record = trust.lookup(check.keyid)
        found.append({"valid": check.valid, "trust": record.state if record is not None else "unknown"})
    return found


def file_state(hub: Hub, version: AdapterVersion, located: Sequence[LocationRow]) -> str:
    """``stored`` (in the blob store), ``in place`` (a library file, present), else the worst state its library
    locations were last seen in (``changed``, ``missing``)."""
    if any(row.state == "present" for row in located):
        return "in place"
    if hub.blobs.exists(version.blob_sha256):
        return "stored"
    states = {row.state for row in located}
    return "changed" if "changed" in states else "missing"


def preview_url(located: Sequence[LocationRow]) -> str | None:
    """The first image recorded beside one of the version's present files, named by location id and index: a URL
    never carries a path."""
    for row in sorted(located, key=lambda r: r.state != "present"):
        for index, neighbour in enumerate(row.neighbours):
            if neighbour.get("kind") == "preview" and _image_type(str(neighbour.get("name", ""))) is not None:
                return f"/previews/{row.id}/{index}"
    return None


def _image_type(name: str) -> str | None:
    guessed, _ = mimetypes.guess_type(name)
    kind = {"image/jpg": "image/jpeg"}.get(guessed or "", guessed)
    return kind if kind in PREVIEW_TYPES else None


@dataclass(frozen=True)
class PreviewFile:
    path: Path
    media_type: str
    sha256: str


def preview_file(hub: Hub, location_id: int, index: int) -> PreviewFile:
    """The preview recorded as neighbour ``index`` of location ``location_id``, if it is still the file the scan
    recorded: beside the adapter's file (after resolving links), a regular image of the recorded size and time.
    Anything else is "not found": nothing from the request ever becomes a path."""
    row = hub.catalog.locations.get(location_id)
    if row is None or not 0 <= index < len(row.neighbours):
        raise errors.PathNotFoundError(f"no preview {location_id}/{index} is recorded")
    neighbour = row.neighbours[index]
    name = str(neighbour.get("name", ""))
    media_type = _image_type(name)
    if neighbour.get("kind") != "preview" or media_type is None or PurePath(name).name != name:
        raise errors.PathNotFoundError(f"no preview {location_id}/{index} is recorded")
    folder = Path(row.path).parent
    path = folder / name
    try:
        resolved, stat = path.resolve(strict=True), path.stat()
        inside = resolved.parent == folder.resolve(strict=True)
    except OSError:
        raise errors.PathNotFoundError(f"the preview {name} is gone") from None
    recorded = (neighbour.get("size"), neighbour.get("mtime_ns"))
    if not inside or not path.is_file() or (stat.st_size, stat.st_mtime_ns) != recorded:
        raise errors.PathNotFoundError(f"the preview {name} changed since the library was scanned")
    if stat.st_size > MAX_PREVIEW_BYTES:
        raise errors.PathNotFoundError(f"the preview {name} is larger than the catalogue serves")
    return PreviewFile(path, media_type, str(neighbour.get("sha256", "")))


# --- an adapter -------------------------------------------------------------------------------------------------


def adapter(hub: Hub, ref: str, children: ChildIndex, *, trust: TrustLookup | None = None) -> dict[str, Any]:
    """Everything the adapter page shows: ``show``'s card, signatures, audit and files, plus the hashes in order,
    the licence verdicts, the versions of the name, the lineage graph and the loss curve. ``trust``: the keys'
    trust read once for the whole page."""
    details = hub.show(ref, trust=trust)
    exact = f"{details['name']}@{details['version']}"
    card = details["card"]
    tree = hub.lineage(exact, trust=trust).as_dict()
    kids = [child.as_dict() for child in children.children(details["content_digest"])]
    training = card.get("training")
    points = svg.loss_points((training or {}).get("loss_curve"))
    loss = svg.loss_svg(points, title=f"training loss of {exact}") if training else None
    return details | {
        "ref": exact,
        "url": adapter_url(exact),
        "hashes": [(label, card["hashes"].get(key)) for key, label in HASH_LABELS if card["hashes"].get(key)],
        "commercial": commercial_badge(card["license"]["commercial_use"]),
        "signature_state": svg.signature_state(details["signatures"]),
        "licence_verdicts": licence_verdicts(hub, exact),
        "versions": versions_of(hub, details["name"]),
        "lineage": tree,
        "children": kids,
        "lineage_svg": svg.lineage_svg(tree, kids, href=adapter_url),
        "training": training,
        "training_settings": training_settings(training),
        "loss_points": points,
        "loss_svg": loss,
    }


def verify_now(hub: Hub, ref: str) -> dict[str, Any]:
    """The verify checklist of the catalogued version ``ref`` names, its file read again: the reference is looked
    up in the catalogue first, so no request can make the server verify (read) a file of its choosing."""
    return hub.verify_version(hub.version(ref), reread=True).as_dict()


def licence_verdicts(hub: Hub, ref: str) -> list[dict[str, Any]]:
    """The engine's answer to each of :data:`LICENSE_QUESTIONS`; a licence the engine does not know (a custom
    ``LicenseRef-…``) is answered ``unknown`` with the engine's reason, not an error page."""
    questions = [{"use": use, "subject": subject, "question": words} for use, subject, words in LICENSE_QUESTIONS]
    try:
        verdicts = [v.as_dict() for v in hub.license_answers(ref, [(q["use"], q["subject"]) for q in questions])]
    except errors.LorahubError as error:
        reason = {"text": error.message, "license": "", "clause": error.hint or ""}
        verdicts = [{"verdict": "unknown", "reasons": [reason], "obligations": [], "effective_license": []}] * len(
            questions
        )
    return [question | verdict for question, verdict in zip(questions, verdicts, strict=True)]


def versions_of(hub: Hub, name: str) -> list[dict[str, Any]]:
    found = hub.catalog.list_versions(Filters(name=name, include_removed=True))
    return [summary(v) | {"ref": v.ref, "url": adapter_url(v.ref)} for v in sorted(found, key=lambda v: -v.number)]


def training_settings(training: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """The settings of a training record worth a table: base, data, steps, seed, precision, hyperparameters."""
    if not training:
        return []
    base = training.get("base_model") or {}
    dataset = training.get("dataset") or {}
    steps = training.get("steps") or {}
    rows: list[tuple[str, Any]] = [
        ("base model", base.get("name")),
        ("objective", training.get("objective")),
        ("images", dataset.get("images")),
        ("excluded images", len(dataset.get("excluded") or [])),
        ("consent", (dataset.get("consent") or {}).get("status")),
        ("steps", f"{steps.get('done')} of {steps.get('total')}" if isinstance(steps, dict) else steps),
        ("seed", training.get("seed")),
        ("precision", (training.get("precision") or {}).get("used")),
        ("trainer", ((training.get("trainer") or {}).get("identity") or {}).get("name")),
        ("finished", training.get("finished_at")),
    ]
    rows += [(key, value) for key, value in sorted((training.get("hyperparameters") or {}).items())]
    return [(key, _setting(value)) for key, value in rows if value not in (None, "", [])]


def _setting(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return str(value)


# --- audit ------------------------------------------------------------------------------------------------------

AUDIT_FIELDS: Final = ("who", "adapter", "action", "since")
DEFAULT_AUDIT_LIMIT: Final = 200
MAX_AUDIT_LIMIT: Final = 5000


def audit(hub: Hub, params: Mapping[str, str], *, check: bool) -> dict[str, Any]:
    """The newest events matching the filters (newest first), the chain's head and, with ``check``, what
    ``audit --verify`` finds."""
    values = {key: params.get(key, "").strip() for key in AUDIT_FIELDS}
    limit = _limit(params.get("limit"))
    events = hub.audit(
        who=values["who"] or None,
        adapter=values["adapter"] or None,
        action=values["action"] or None,
        since=values["since"] or None,
        limit=limit,
    )
    head = hub.catalog.audit_head()
    chain: dict[str, Any] = {"head": {"seq": head[0], "hash": head[1]} if head else None, "checked": check}
    if check:
        problems = hub.verify_audit()
        chain |= {"ok": not problems, "problems": problems, "unsigned": hub.unsigned_audit_events()}
    return {
        "events": list(reversed(events)),
        "filters": {k: v for k, v in values.items() if v},
        "limit": limit,
        "chain": chain,
    }


def _limit(text: str | None) -> int:
    if not text:
        return DEFAULT_AUDIT_LIMIT
    if not text.isdigit() or not 1 <= int(text) <= MAX_AUDIT_LIMIT:
        raise errors.InvalidArgumentError(f"limit={text!r}: give a number from 1 to {MAX_AUDIT_LIMIT}")
    return int(text)


def generated_images(hub: Hub, limit: int = 20) -> list[dict[str, Any]]:
    """The newest images this home signed (``generate`` events) whose files are still where they were written."""
    found = []
    for event in reversed(hub.audit(action="generate", limit=limit)):
        out = event["details"].get("out")
        if isinstance(out, str) and Path(out).is_file():
            found.append({"seq": event["seq"], "time": event["time"], "name": Path(out).name, "adapters": [
                a.get("name") for a in event["details"].get("adapters", []) if isinstance(a, dict)
            ]})  # fmt: skip
    return found


def generated_image(hub: Hub, seq: int) -> Path:
    """The image file the ``generate`` event ``seq`` wrote: the one path a provenance request may point at."""
    events = [e for e in hub.catalog.audit_events(action="generate") if e.seq == seq]
    if not events:
        raise errors.PathNotFoundError(f"no image generation is recorded as event {seq}")
    out = json.loads(events[0].details).get("out")
    if not isinstance(out, str) or not Path(out).is_file():
        raise errors.PathNotFoundError(f"the image event {seq} wrote is no longer at its path")
    return Path(out)


def provenance(hub: Hub, image: bytes | Path) -> dict[str, Any]:
    """``provenance inspect`` of an uploaded image (bytes, never written anywhere) or a generated one, with a link
    into the catalogue for each adapter it names that this home knows."""
    report = hub.inspect_image(image).as_dict()
    for item in report["adapters"]:
        item["url"] = adapter_url(item["catalog_ref"]) if item.get("catalog_ref") else None
    return report


# --- writing ----------------------------------------------------------------------------------------------------


def add_upload(hub: Hub, data: bytes, file_name: str, form: Mapping[str, Any]) -> AddResult:
    """Catalogue an uploaded adapter file as ``lorahub add`` does (copied into the blob store, signed): it is
    written to a temporary folder outside the home, under its own base name only, and deleted after."""
    from lorahub.sdk.adding import AddOptions

    safe_name = Path(file_name).name or "upload.safetensors"
    if not safe_name.endswith(".safetensors"):
        raise errors.InvalidArgumentError(f"{safe_name}: the catalogue adds .safetensors files only")
    options = AddOptions(
        name=str(form.get("name", "")).strip() or None,
        license=str(form.get("license", "")).strip() or None,
        triggers=[t.strip() for t in str(form.get("triggers", "")).split(",") if t.strip()],
        description=str(form.get("description", "")).strip() or None,
    )
    with tempfile.TemporaryDirectory(prefix="lorahub-upload-") as folder:
        path = Path(folder) / safe_name
        path.write_bytes(data)
        return hub.add(path, options)
