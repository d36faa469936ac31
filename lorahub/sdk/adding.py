"""``lorahub add``: a file becomes a signed, catalogued version.

One read of the file computes every digest and copies it into the blob store; the card is built from the options,
the detected facts and what the file's neighbours say; the version rows and the audit event commit in one
transaction. The blob is written first (content-addressed, so a crash leaves at most an unreferenced blob for
``gc``), under a write lease on its digest that keeps a concurrent ``gc`` from deleting it before the version that
references it is recorded (:mod:`lorahub.registry.leases`); nothing is written when the content is already
catalogued.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorahub import errors
from lorahub.files.safetensors import check_path
from lorahub.sdk.card_facts import Suggestions, suggest
from lorahub.sdk.inspect import Report, inspect
from lorahub.sdk.refs import check_name
from lorahub.signing.timestamps import utc_now

if TYPE_CHECKING:
    from lorahub.registry.blobs import BlobInfo
    from lorahub.registry.catalog import AdapterVersion, NewVersion
    from lorahub.registry.locations import Facts, NewLocation
    from lorahub.sdk.hub import Hub
    from lorahub.signing.card import Card, Consent, Parent
    from lorahub.signing.keys import Signer
    from lorahub.signing.signed import SignedCard

MAX_NUMBER_RACES = 5


@dataclass
class AddOptions:
    """What to record with a file added to the catalog (:meth:`Hub.add`, :meth:`Hub.add_url`, :meth:`Hub.add_tree`):
    its name and version, base model, licence, trigger words, consent and tags, and whether to sign it and write
    the signed card into the file or beside it. What is left unset is filled from the file's own metadata."""

    name: str | None = None
    version: int | None = None
    base_model: str | None = None
    license: str | None = None
    commercial_use: list[str] | None = None
    triggers: list[str] = field(default_factory=list)
    consent: Path | None = None
    description: str | None = None
    tags: list[str] = field(default_factory=list)
    sign: bool = True
    embed: bool = False
    sidecar: bool = False
    allow_duplicate: bool = False
    lineage: tuple[Parent, ...] = ()
    """Parents of a derived version (converted, resized, merged, trained, resumed): set by the SDK, not the CLI."""
    training: dict[str, Any] | None = None
    base_weights_digest: str | None = None
    inherit: Card | None = None
    """A parent's card whose base model, licence, triggers, description, tags and consent fill what the options
    leave unset: a converted or resized version says what its parent said."""
    audit_action: str = "add"
    audit_details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AddResult:
    """The catalogued version a file became: its ``name@version``, digests, who signed its card, where a card was
    written, what was filled from the file's metadata (``suggestions``) and the file's inspection ``report``."""

    name: str
    version: int
    content_digest: str
    sha256: str
    signed_by: list[str]
    embedded: bool
    sidecar: Path | None
    suggestions: dict[str, str]
    report: Report
    already: bool = False
    """The same content was already catalogued under this name; nothing was written."""
    location: Path | None = None
    """Where the file lies, when it was catalogued in place (not copied into the blob store)."""
    signed: SignedCard | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "content_digest": self.content_digest,
            "sha256": self.sha256,
            "signed_by": self.signed_by,
            "embedded": self.embedded,
            "sidecar": str(self.sidecar) if self.sidecar else None,
            "filled_from": self.suggestions,
            "already_catalogued": self.already,
            "in_place": str(self.location) if self.location else None,
            "format": self.report.format,
            "family": self.report.base_model.family,
        }


def add_file(hub: Hub, path: str | os.PathLike[str], options: AddOptions) -> AddResult:
    signer = hub.signer() if options.sign else None
    actor = hub.audit_actor(signer)
    result = commit(hub, prepare(hub, Path(path), options), options, signer=signer, actor=actor)
    if result.already:
        return result
    return _write_card_beside(result, Path(path), hub, options)


@dataclass(frozen=True)
class Prepared:
    """A file hashed, and copied into the blob store unless its content is already catalogued."""

    path: Path
    report: Report
    suggestions: Suggestions
    name: str
    blob: BlobInfo | None
    existing: AdapterVersion | None
    location: NewLocation | None = None
    """Where the file lies when it is catalogued in place instead of copied."""
    lease: int | None = None
    """The write lease on the stored blob, given up when the version is recorded (or nothing is)."""


def prepare(hub: Hub, path: Path, options: AddOptions) -> Prepared:
    """The slow, parallel-safe half of an add: one read hashes the file and copies it to the store. Content that
    is already catalogued is not stored again."""
    p = check_path(path)
    announced = _digest_first(p) if hub.blobs.digest_first else None
    # the lease comes before the store is trusted to keep the blob: before it is looked up, or stored
    lease = hub.catalog.leases.take(announced) if announced is not None else None
    try:
        with hub.blobs.writer(hashed_by_caller=True, sha256=announced, source=p) as blob:
            report = inspect(p, sink=blob.write)
            _require_safetensors(report, p)
            suggestions = suggest(p, report.raw_metadata)
            name = check_name(options.name or suggestions.name or "adapter")
            existing = hub.catalog.find_by_content(report.hashes.content or "")
            if existing is not None and not options.allow_duplicate:
                blob.abort()
                hub.catalog.leases.release([lease] if lease is not None else [])
                return Prepared(p, report, suggestions, name, None, existing)
            if lease is None:
                lease = hub.catalog.leases.take(report.hashes.sha256)
            info = blob.commit(report.hashes.sha256)
    except BaseException:
        hub.catalog.leases.release([lease] if lease is not None else [])
        raise
    return Prepared(p, report, suggestions, name, info, None, lease=lease)


def _digest_first(path: Path) -> str:
    """The file's SHA-256, for a store that uploads while the add reads (a remote one): a pass of hashing costs far
    less than the upload it lets overlap the add's own read; the add's read checks that the bytes did not change."""
    try:
        with path.open("rb") as source:
            return hashlib.file_digest(source, "sha256").hexdigest()
    except OSError as error:
        raise errors.FileReadError(f"{path}: {error.strerror or error}") from None


def prepare_in_place(
    path: Path, facts: Facts, options: AddOptions, *, neighbours: Sequence[dict[str, Any]] = ()
) -> Prepared:
    """An add that leaves the file where it is: one read computes its identity (SHA-256, content digest), nothing is
    copied; ``facts`` are the stat facts taken before the read (a file changed while it was read then no longer
    matches them, and is read again next time). Whether the content is known is the caller's question."""
    from lorahub.registry.blobs import BlobInfo
    from lorahub.registry.locations import NewLocation

    report = inspect(path, identity_only=True)
    _require_safetensors(report, path)
    suggestions = suggest(path, report.raw_metadata, listing=[n["name"] for n in neighbours])
    name = check_name(options.name or suggestions.name or "adapter")
    sha256, content = report.hashes.sha256, report.hashes.content or ""
    blob = BlobInfo(sha256=sha256, size=report.file_size, path=path, existed=False)
    location = NewLocation(str(path), sha256, content, facts, neighbours=neighbours)
    return Prepared(path, report, suggestions, name, blob, None, location)


def _require_safetensors(report: Report, path: Path) -> None:
    if report.container != "safetensors":
        raise errors.UnsupportedFileError(
            f"{path} is a pickled {report.container} file: lorahub catalogs only .safetensors",
            hint="Convert it to safetensors in a sandbox you trust, then add the result.",
        )


def commit(hub: Hub, prepared: Prepared, options: AddOptions, *, signer: Signer | None, actor: Any) -> AddResult:
    """The quick, serial half: sign the card and record version, signatures and audit event in one transaction.
    The same content under the same name is already done (re-running a script is not an error); under another
    name it is a duplicate. Checked again here: in a batch, another file with the same tensors may have been
    committed since this one was prepared."""
    existing = prepared.existing or hub.catalog.find_by_content(prepared.report.hashes.content or "")
    if existing is not None and (prepared.existing is not None or not options.allow_duplicate):
        release_leases(hub, [prepared])
        if existing.name != prepared.name:
            content = existing.content_digest
            raise errors.DuplicateContentError(
                f"{prepared.path.name} has the same tensors as {existing.ref} (content {content[:16]}…)",
                existing=existing.ref,
                hint="It is already catalogued; pass --allow-duplicate to catalogue it again under another name.",
            )
        return _already(hub, existing, prepared.report)
    return commit_new(hub, [prepared], options, signer=signer, actor=actor)[0]


def commit_new(
    hub: Hub, prepared: Sequence[Prepared], options: AddOptions, *, signer: Signer | None, actor: Any
) -> list[AddResult]:
    """Catalogue files whose content the caller found new, in one transaction (all or none); files with the same
    name get consecutive numbers."""
    try:
        signed = _catalogue(hub, prepared, options=options, signer=signer, actor=actor)
    except BaseException:
        release_leases(hub, prepared)
        raise
    return [
        AddResult(
            name=p.name,
            version=card.card.version,
            content_digest=card.card.content_digest,
            sha256=p.report.hashes.sha256,
            signed_by=[s.keyid for s in card.envelope.signatures],
            embedded=False,
            sidecar=None,
            suggestions=_used_suggestions(p.suggestions, options),
            report=p.report,
            signed=card,
            location=p.path if p.location is not None else None,
        )
        for p, card in zip(prepared, signed, strict=True)
    ]


def add_signed(hub: Hub, path: Path, signed: SignedCard, *, action: str, details: dict[str, Any]) -> AddResult:
    """Catalogue a file under the card it arrived with (a pull): the card keeps its name, number and every
    signature, so it is neither rebuilt nor re-signed. The caller has verified the card against the file."""
    card = signed.card
    options = AddOptions(name=card.name, version=card.version, sign=False, audit_action=action, audit_details=details)
    prepared = prepare(hub, path, options)
    try:
        return _add_prepared_signed(hub, path, signed, prepared, options)
    except BaseException:
        release_leases(hub, [prepared])
        raise


def _add_prepared_signed(
    hub: Hub, path: Path, signed: SignedCard, prepared: Prepared, options: AddOptions
) -> AddResult:
    card = signed.card
    if prepared.existing is not None:
        if (prepared.existing.name, prepared.existing.number) == (card.name, card.version):
            return _already(hub, prepared.existing, prepared.report)
        raise errors.DuplicateContentError(
            f"{card.name}@{card.version} has the same tensors as {prepared.existing.ref}, catalogued here",
            existing=prepared.existing.ref,
            hint="It is already in this home under that name; `lorahub show` it there.",
        )
    if prepared.report.hashes.content != card.content_digest:
        raise errors.HashMismatchError(
            f"{path.name} is not the file its card names ({card.content_digest[:16]}…)",
            hint="Verify the file against its card first (lorahub verify FILE); a pull does so before this.",
        )
    assert prepared.blob is not None
    news = [_new_version(signed, prepared.blob, path.name, options, None, lease=prepared.lease)]
    hub.catalog.add_versions(news, audit=hub.keyless_actor(), allow_duplicate=False)
    return AddResult(
        name=card.name,
        version=card.version,
        content_digest=card.content_digest,
        sha256=prepared.report.hashes.sha256,
        signed_by=[s.keyid for s in signed.envelope.signatures],
        embedded=False,
        sidecar=None,
        suggestions={},
        report=prepared.report,
        signed=signed,
    )


def _write_card_beside(result: AddResult, path: Path, hub: Hub, options: AddOptions) -> AddResult:
    """``--embed`` rewrites the file's header, ``--sidecar`` writes FILE.lorahub.json; the catalogued blob keeps the
    bytes that were added."""
    from lorahub.signing.embed import embed_card, sidecar_path, write_sidecar

    assert result.signed is not None
    sidecar = None
    if options.embed:
        embed_card(path, result.signed)
    if options.sidecar:
        write_sidecar(path, result.signed)
        sidecar = sidecar_path(path)
    return dataclasses.replace(result, embedded=options.embed, sidecar=sidecar)


OPTION_FOR_SUGGESTION = {
    "name": "name",
    "trigger_words": "triggers",
    "description": "description",
    "license": "license",
    "tags": "tags",
    "base_model_name": "base_model",
}


def _used_suggestions(suggestions: Suggestions, options: AddOptions) -> dict[str, str]:
    """Where each card field came from, for the fields the user's options did not set."""
    return {
        field_name: source
        for field_name, source in suggestions.sources.items()
        if not getattr(options, OPTION_FOR_SUGGESTION.get(field_name, field_name), None)
    }


def _already(hub: Hub, existing: AdapterVersion, report: Report) -> AddResult:
    signed = hub.signed_card(existing)
    return AddResult(
        name=existing.name,
        version=existing.number,
        content_digest=existing.content_digest,
        sha256=existing.blob_sha256,
        signed_by=[s.keyid for s in signed.envelope.signatures],
        embedded=False,
        sidecar=None,
        suggestions={},
        report=report,
        already=True,
        signed=signed,
    )


def _catalogue(
    hub: Hub, prepared: Sequence[Prepared], *, options: AddOptions, signer: Signer | None, actor: Any
) -> list[SignedCard]:
    from lorahub.signing.signed import sign_card, unsigned

    for _ in range(MAX_NUMBER_RACES):
        numbers = _numbers(hub, [p.name for p in prepared], options.version)
        signed, news = [], []
        for p, number in zip(prepared, numbers, strict=True):
            assert p.blob is not None
            card = build_card(p.name, number, p.report, suggestions=p.suggestions, options=options, signer=signer)
            signed.append(sign_card(card, signer) if signer else unsigned(card))
            news.append(_new_version(signed[-1], p.blob, p.path.name, options, p.location, lease=p.lease))
        try:
            hub.catalog.add_versions(news, audit=actor, allow_duplicate=options.allow_duplicate)
        except errors.VersionExistsError:
            if options.version is not None:
                raise
            continue  # another writer took a number between our read and our insert
        return signed
    names = ", ".join(sorted({p.name for p in prepared}))
    raise errors.DatabaseError(f"could not allocate a version number for {names} after {MAX_NUMBER_RACES} tries")


def _numbers(hub: Hub, names: Sequence[str], wanted: int | None) -> list[int]:
    """The number each name gets: ``wanted`` (one file), else the next free one, counting repeats in the batch."""
    if wanted is not None:
        return [wanted] * len(names)
    following = hub.catalog.next_numbers(names)
    numbers = []
    for name in names:
        numbers.append(following[name])
        following[name] += 1
    return numbers


def release_leases(hub: Hub, prepared: Sequence[Prepared]) -> None:
    """Give up the write leases of prepared files that will not be recorded (already catalogued, a failure)."""
    hub.catalog.leases.release([p.lease for p in prepared if p.lease is not None])


def _new_version(
    signed: SignedCard,
    blob: BlobInfo,
    file_name: str,
    options: AddOptions,
    location: NewLocation | None,
    *,
    lease: int | None = None,
) -> NewVersion:
    from lorahub.registry.catalog import NewVersion

    card = signed.card
    return NewVersion(
        name=card.name,
        number=card.version,
        content_digest=card.content_digest,
        blob=blob,
        file_name=file_name,
        format=card.format,
        family=card.base_model.family,
        license_id=card.license.id,
        commercial_use=tuple(card.license.commercial_use),
        consent_status=card.consent.status,
        description=card.description,
        trigger_words=card.trigger_words,
        tags=card.tags,
        card_json=signed.envelope.payload.decode("utf-8"),
        signatures=[(s.keyid, base64.b64encode(s.sig).decode("ascii")) for s in signed.envelope.signatures],
        action=options.audit_action,
        details=options.audit_details,
        location=location,
        lease=lease,
    )


def build_card(
    name: str, number: int, report: Report, *, suggestions: Suggestions, options: AddOptions, signer: Signer | None
) -> Card:
    from lorahub.signing.card import BaseModel, Card, Creator, License

    parent = options.inherit
    license_ = License(
        id=options.license or suggestions.license or "unknown", commercial_use=tuple(options.commercial_use or ())
    )
    if parent is not None and not options.license:
        license_ = parent.license
    return Card(
        name=name,
        version=number,
        content_digest=report.hashes.content or "",
        hashes={k: v for k, v in report.hashes.as_dict().items() if k != "content"},
        format=report.format,
        layer_kinds=tuple(report.layer_kinds),
        base_model=BaseModel(
            family=report.base_model.family,
            name=options.base_model or (parent.base_model.name if parent else suggestions.base_model_name),
            weights_digest=options.base_weights_digest
            or (parent.base_model.weights_digest if parent else suggestions.base_weights_digest),
        ),
        license=license_,
        trigger_words=tuple(options.triggers or (parent.trigger_words if parent else suggestions.trigger_words)),
        description=options.description or (parent.description if parent else suggestions.description) or "",
        tags=tuple(options.tags or (parent.tags if parent else suggestions.tags)),
        consent=_consent(options.consent, parent),
        lineage=tuple(options.lineage),
        training=options.training,
        creator=Creator(fingerprint=signer.keyid, name=signer.identity.user_id) if signer else None,
        created=utc_now(),
    )


def _consent(path: Path | None, parent: Card | None) -> Consent:
    """``--consent`` takes a dataset manifest (``lorahub dataset scan``: the card pins it by digest and carries its
    summary) or a plain JSON consent record with a ``status``."""
    from lorahub.signing.card import Consent

    if path is None:
        return parent.consent if parent is not None else Consent(status="unknown")
    try:
        record = json.loads(check_path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise errors.CardError(f"{path}: the consent record is not JSON ({exc})") from None
    from lorahub.consent.manifest import SCHEMA as MANIFEST_SCHEMA
    from lorahub.consent.manifest import load
    from lorahub.signing.card import CONSENT_STATUSES

    if isinstance(record, dict) and record.get("schema") == MANIFEST_SCHEMA:
        return load(path).card_consent()
    if not isinstance(record, dict) or record.get("status") not in CONSENT_STATUSES:
        raise errors.CardError(
            f"{path}: a consent record is a dataset manifest (lorahub dataset scan) or a JSON object whose "
            f"'status' is one of {', '.join(CONSENT_STATUSES)}"
        )
    return Consent(status=record["status"], record=record)
