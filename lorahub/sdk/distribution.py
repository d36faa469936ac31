"""``lorahub push`` and ``lorahub pull``: catalogued versions to and from OCI registries.

Push writes the version's file as a ModelPack model and attaches its signed card (and, when the home has an
identity, an OpenSSF model-signing bundle) as referrers. Pull reads them back into a temporary folder, runs the
same checklist as ``lorahub verify FILE`` (signatures, trust, policy) and catalogues the file under the card it came
with only when every check passed: a refused pull leaves the home as it was.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorahub import errors
from lorahub.oci import modelpack as mp
from lorahub.oci.client import MANIFEST_MEDIA_TYPE, RegistryClient, file_chunks, sha256_digest
from lorahub.oci.reference import parse_oci_reference

if TYPE_CHECKING:
    from lorahub.registry.catalog import AdapterVersion
    from lorahub.sdk.adding import AddResult
    from lorahub.sdk.hub import Hub
    from lorahub.sdk.verifying import VerifyReport
    from lorahub.signing.signed import SignedCard

MAX_CARD_BYTES = 1024 * 1024
LATEST = "latest"


@dataclass(frozen=True)
class PushResult:
    """Where a version went: the manifest's digest (its identity), the tags written, what was attached, and
    whether the file's bytes were sent (False when the registry had them already)."""

    ref: str
    reference: str
    digest: str
    tags: list[str]
    attached: list[str]
    uploaded: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "reference": self.reference,
            "digest": self.digest,
            "tags": self.tags,
            "attached": self.attached,
            "uploaded": self.uploaded,
        }


@dataclass(frozen=True)
class PullResult:
    """A pulled version: what was catalogued (or found already catalogued) and the checklist it passed."""

    source: str
    digest: str
    added: AddResult
    report: VerifyReport

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "digest": self.digest,
            "ref": f"{self.added.name}@{self.added.version}",
            "already_catalogued": self.added.already,
            "verification": self.report.as_dict(),
        }


def push(hub: Hub, ref: str, target: str, *, insecure: bool = False) -> PushResult:
    from lorahub.sdk.locating import version_file

    version = hub.version(ref)
    destination = parse_oci_reference(target)
    if destination.digest is not None:
        raise errors.InvalidArgumentError(
            f"{target} names a digest; a push names a tag (or none)", hint="Push to oci://HOST/REPO[:TAG]."
        )
    located = version_file(hub, version)
    signed = hub.signed_card(version)
    tags = [destination.tag] if destination.tag else _default_tags(hub, version)
    with RegistryClient(destination, insecure=insecure) as client:
        weight = mp.Descriptor(
            mp.WEIGHT_RAW_MEDIA_TYPE,
            f"sha256:{version.blob_sha256}",
            located.path.stat().st_size,
            annotations={mp.FILEPATH_ANNOTATION: version.file_name, mp.TITLE_ANNOTATION: version.file_name},
        )
        uploaded = client.push_blob(weight.digest, weight.size, file_chunks(str(located.path)))
        config_data = _config(signed, weight.digest)
        config = mp.blob_descriptor(mp.MODEL_CONFIG_MEDIA_TYPE, config_data)
        client.push_blob(config.digest, config.size, config_data)
        body = mp.manifest_bytes(
            config, [weight], artifact_type=mp.MODEL_ARTIFACT_TYPE, annotations=_annotations(signed)
        )
        for tag in tags:
            client.push_manifest(tag, body)
        subject = mp.Descriptor(MANIFEST_MEDIA_TYPE, sha256_digest(body), len(body))
        attached = [_attach_card(client, subject, signed)]
        attached += _attach_bundles(hub, client, subject, version)
    return PushResult(
        version.ref, str(destination.with_digest(subject.digest)), subject.digest, tags, attached, uploaded
    )


def pull(hub: Hub, source: str, *, insecure: bool = False, policy: str | os.PathLike[str] | None = None) -> PullResult:
    from lorahub.sdk.adding import add_signed
    from lorahub.sdk.verifying import verify
    from lorahub.signing.embed import write_sidecar

    reference = parse_oci_reference(source)
    if reference.tag is None and reference.digest is None:
        reference = reference.with_tag(LATEST)
    with RegistryClient(reference, insecure=insecure) as client:
        fetched = client.fetch_manifest(reference.target)
        model = mp.read_model_manifest(fetched.json(), fetched.digest)
        signed = _attached_card(client, fetched.digest)
        downloads = hub.settings.home / "downloads"
        downloads.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".pull-", dir=downloads) as folder:
            path = Path(folder) / model.file_name
            with path.open("wb") as sink:
                client.read_blob(model.weight.digest, model.weight.size, sink)
            write_sidecar(path, signed)
            report = verify(hub, path, hub.policy(policy))
            _check_bundles(hub, client, fetched.digest, path, report)
            report.target = str(reference.with_digest(fetched.digest))
            if not report.ok:
                failed = ", ".join(c.name for c in report.checks if not c.ok)
                raise errors.PullRefusedError(
                    f"{reference}: verification failed ({failed}); nothing was catalogued", report=report
                )
            details = {"source": str(reference.with_digest(fetched.digest))}
            added = add_signed(hub, path, signed, action="pull", details=details)
    return PullResult(str(reference), fetched.digest, added, report)


def _default_tags(hub: Hub, version: AdapterVersion) -> list[str]:
    """``vN``, and ``latest`` too when this is the newest version of its name (what a pull without a tag gets)."""
    from lorahub.registry.catalog import Filters

    newest = max(v.number for v in hub.catalog.list_versions(Filters(name=version.name)))
    return [f"v{version.number}", LATEST] if version.number == newest else [f"v{version.number}"]


def _config(signed: SignedCard, layer_digest: str) -> bytes:
    card = signed.card
    return mp.model_config(
        name=card.name,
        version=card.version,
        family=card.base_model.family,
        license_id=card.license.id,
        created=card.created,
        authors=[card.creator.name] if card.creator else [],
        layer_digest=layer_digest,
    )


def _annotations(signed: SignedCard) -> dict[str, str]:
    card = signed.card
    return {
        mp.CREATED_ANNOTATION: card.created,
        mp.NAME_ANNOTATION: card.name,
        mp.VERSION_ANNOTATION: str(card.version),
        mp.CONTENT_DIGEST_ANNOTATION: card.content_digest,
        mp.CARD_DIGEST_ANNOTATION: sha256_digest(signed.payload),
    }


def _attach_card(client: RegistryClient, subject: mp.Descriptor, signed: SignedCard) -> str:
    envelope = json.dumps(signed.envelope.to_json(), sort_keys=True).encode("utf-8")
    mp.attach(client, subject, mp.CARD_ARTIFACT_TYPE, mp.DSSE_MEDIA_TYPE, envelope)
    return mp.CARD_ARTIFACT_TYPE


def _attach_bundles(hub: Hub, client: RegistryClient, subject: mp.Descriptor, version: AdapterVersion) -> list[str]:
    """An OpenSSF model-signing bundle over the weight layer, by this home's identity (none in a verify-only
    home: the card's own signatures still travel), so model_signing's own verifier can check the pulled file."""
    from lorahub.signing.oms import key_hint, oms_bundle_for_digest, read_bundle

    if hub.keys.default() is None:
        return []
    signer = hub.signer()
    for referrer in mp.referrers(client, subject.digest, mp.SIGSTORE_BUNDLE_MEDIA_TYPE):
        attached = mp.read_attached(client, referrer, subject.digest, mp.SIGSTORE_BUNDLE_MEDIA_TYPE, MAX_CARD_BYTES)
        if read_bundle(attached)[1] == key_hint(signer.identity.public_pem):
            return [mp.SIGSTORE_BUNDLE_MEDIA_TYPE]  # pushed before: a signature is random, so not made twice
    bundle = oms_bundle_for_digest(version.blob_sha256, signer, name=version.file_name)
    mp.attach(client, subject, mp.SIGSTORE_BUNDLE_MEDIA_TYPE, mp.SIGSTORE_BUNDLE_MEDIA_TYPE, bundle)
    return [mp.SIGSTORE_BUNDLE_MEDIA_TYPE]


def _check_bundles(hub: Hub, client: RegistryClient, subject: str, path: Path, report: VerifyReport) -> None:
    """Every model-signing bundle attached must hold for the pulled file when this home knows its key; one by a
    key the home has never seen cannot be checked and is listed, as an unknown co-signer of a card is."""
    from lorahub.signing.oms import key_hint, verify_oms_bundle

    records = hub.trusted_keys()
    keys = {r.fingerprint: r.public_pem for r in records}
    for referrer in mp.referrers(client, subject, mp.SIGSTORE_BUNDLE_MEDIA_TYPE):
        bundle = mp.read_attached(client, referrer, subject, mp.SIGSTORE_BUNDLE_MEDIA_TYPE, MAX_CARD_BYTES)
        check = verify_oms_bundle(path, bundle, keys)
        if check.signature_valid:
            detail = f"by {check.signer[:16] if check.signer else ''}…: {check.reason}"
            report.add("model-signing bundle", check.ok, detail)
        elif check.key_hint in {key_hint(r.public_pem) for r in records}:
            report.add("model-signing bundle", False, check.reason)
        else:
            report.add("model-signing bundle", True, "by a key this home does not know: listed, not checkable")


def _attached_card(client: RegistryClient, subject: str) -> SignedCard:
    """The signed card attached to a model; several attachments of the same card (pushed again after a co-signer
    signed) give one card with every signature. Different cards for one file are refused as ambiguous."""
    from lorahub.signing.dsse import Envelope
    from lorahub.signing.signed import SignedCard

    envelopes = []
    for referrer in mp.referrers(client, subject, mp.CARD_ARTIFACT_TYPE):
        data = mp.read_attached(client, referrer, subject, mp.DSSE_MEDIA_TYPE, MAX_CARD_BYTES)
        try:
            envelopes.append(Envelope.from_json(json.loads(data)))
        except (ValueError, errors.CardError) as error:
            raise errors.ArtifactInvalidError(f"the card attached as {referrer.digest} is damaged: {error}") from None
    if not envelopes:
        raise errors.ArtifactInvalidError(
            f"{subject} has no signed card attached",
            hint="lorahub pulls only what carries its card; push it with `lorahub push` (which attaches it).",
        )
    if len({e.payload for e in envelopes}) > 1:
        raise errors.ArtifactInvalidError(f"{subject} has {len(envelopes)} different cards attached; refusing to pick")
    signatures = {s.keyid: s for e in envelopes for s in e.signatures}
    merged = Envelope(envelopes[0].payload, envelopes[0].payload_type, tuple(signatures.values()))
    try:
        return SignedCard.from_envelope(merged)
    except errors.CardError as error:
        raise errors.ArtifactInvalidError(f"the card attached to {subject} is damaged: {error}") from None
