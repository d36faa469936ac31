"""An adapter as a CNCF ModelPack artifact, and the artifacts that refer to it.

The model manifest is an OCI image manifest with the ModelPack artifact type; its config says what the model is
(name, version, family, format, licences) and its one layer is the adapter file as it is catalogued, raw, annotated
with the path it had. Things about the model that others sign (lorahub's card as a DSSE envelope, an OpenSSF
model-signing bundle) are separate manifests whose ``subject`` is the model manifest: they can be added later
without changing the model's digest. Registries without the referrers API list them under the
``sha256-<hex>`` tag the OCI distribution spec defines as the fallback.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lorahub import errors
from lorahub.oci.client import INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, RegistryClient, sha256_digest

MODEL_ARTIFACT_TYPE = "application/vnd.cncf.model.manifest.v1+json"
MODEL_CONFIG_MEDIA_TYPE = "application/vnd.cncf.model.config.v1+json"
WEIGHT_RAW_MEDIA_TYPE = "application/vnd.cncf.model.weight.v1.raw"
FILEPATH_ANNOTATION = "org.cncf.model.filepath"
TITLE_ANNOTATION = "org.opencontainers.image.title"
CREATED_ANNOTATION = "org.opencontainers.image.created"
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_JSON = b"{}"

CARD_ARTIFACT_TYPE = "application/vnd.lorahub.card.v1+json"
DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
SIGSTORE_BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"

ANNOTATION_PREFIX = "dev.lorahub."
CONTENT_DIGEST_ANNOTATION = ANNOTATION_PREFIX + "content-digest"
CARD_DIGEST_ANNOTATION = ANNOTATION_PREFIX + "card-digest"
NAME_ANNOTATION = ANNOTATION_PREFIX + "name"
VERSION_ANNOTATION = ANNOTATION_PREFIX + "version"


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] | None = None
    artifact_type: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.artifact_type:
            data["artifactType"] = self.artifact_type
        if self.annotations:
            data["annotations"] = dict(self.annotations)
        return data

    @classmethod
    def from_json(cls, data: Any, where: str) -> Descriptor:
        if not isinstance(data, dict):
            raise errors.ArtifactInvalidError(f"{where} is not an OCI descriptor")
        media_type, digest, size = data.get("mediaType"), data.get("digest"), data.get("size")
        annotations = data.get("annotations") or {}
        if not (isinstance(media_type, str) and isinstance(digest, str) and digest.startswith("sha256:")):
            raise errors.ArtifactInvalidError(f"{where} needs a mediaType and a sha256 digest")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise errors.ArtifactInvalidError(f"{where} has no valid size")
        if not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values()):
            raise errors.ArtifactInvalidError(f"{where} has annotations that are not strings")
        artifact_type = data.get("artifactType")
        return cls(media_type, digest, size, annotations, artifact_type if isinstance(artifact_type, str) else None)


def blob_descriptor(media_type: str, data: bytes) -> Descriptor:
    return Descriptor(media_type, sha256_digest(data), len(data))


def manifest_bytes(
    config: Descriptor,
    layers: list[Descriptor],
    *,
    artifact_type: str,
    annotations: Mapping[str, str] | None = None,
    subject: Descriptor | None = None,
) -> bytes:
    """The manifest as sent: these bytes are what its digest names, so they are built once and never re-encoded."""
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": artifact_type,
        "config": config.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    if subject is not None:
        manifest["subject"] = subject.to_json()
    if annotations:
        manifest["annotations"] = dict(annotations)
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode("utf-8")


def model_config(
    *, name: str, version: int, family: str, license_id: str, created: str, authors: list[str], layer_digest: str
) -> bytes:
    """The ModelPack config; a licence lorahub does not know (``NOASSERTION``) is left out, not claimed."""
    descriptor: dict[str, Any] = {"name": name, "version": str(version), "family": family, "createdAt": created}
    if license_id != "NOASSERTION":
        descriptor["licenses"] = [license_id]
    if authors:
        descriptor["authors"] = authors
    config = {
        "descriptor": descriptor,
        "config": {"format": "safetensors"},
        "modelfs": {"type": "layers", "diff_ids": [layer_digest]},
    }
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True)
class ModelManifest:
    """What a pulled model manifest says: its digest, its one weight layer and the path that layer had."""

    digest: str
    weight: Descriptor
    file_name: str
    annotations: Mapping[str, str]


def read_model_manifest(manifest: dict[str, Any], digest: str) -> ModelManifest:
    """Check that a manifest is a ModelPack model with exactly one raw weight layer whose path is a plain file
    name (no folder, nothing hidden: it becomes a file name on this machine)."""
    if manifest.get("mediaType") != MANIFEST_MEDIA_TYPE or manifest.get("artifactType") != MODEL_ARTIFACT_TYPE:
        raise errors.ArtifactInvalidError(
            f"{digest} is not a ModelPack model (artifactType {manifest.get('artifactType')!r})"
        )
    config = Descriptor.from_json(manifest.get("config"), "the config descriptor")
    if config.media_type != MODEL_CONFIG_MEDIA_TYPE:
        raise errors.ArtifactInvalidError(f"{digest}: the config is {config.media_type}, not a ModelPack config")
    raw_layers = manifest.get("layers")
    if not isinstance(raw_layers, list):
        raise errors.ArtifactInvalidError(f"{digest} has no layers list")
    layers = [Descriptor.from_json(layer, f"layer {i}") for i, layer in enumerate(raw_layers)]
    weights = [layer for layer in layers if layer.media_type == WEIGHT_RAW_MEDIA_TYPE]
    if len(weights) != 1:
        raise errors.ArtifactInvalidError(
            f"{digest} has {len(weights)} raw weight layers; lorahub pulls a model of exactly one adapter file"
        )
    weight = weights[0]
    file_name = (weight.annotations or {}).get(FILEPATH_ANNOTATION, "")
    if not file_name.endswith(".safetensors") or "/" in file_name or "\\" in file_name or file_name.startswith("."):
        raise errors.ArtifactInvalidError(f"{digest}: the weight layer's path {file_name!r} is not a .safetensors name")
    annotations = manifest.get("annotations") or {}
    return ModelManifest(digest, weight, file_name, annotations if isinstance(annotations, dict) else {})


def fallback_tag(digest: str) -> str:
    return digest.replace(":", "-", 1)


def attach(client: RegistryClient, subject: Descriptor, artifact_type: str, media_type: str, data: bytes) -> Descriptor:
    """Push ``data`` as an artifact whose subject is ``subject``, and list it where pullers look: a registry with
    the referrers API does that itself (it answers with ``OCI-Subject``); for one without, the fallback tag's
    index gets the new descriptor."""
    empty = blob_descriptor(EMPTY_MEDIA_TYPE, EMPTY_JSON)
    client.push_blob(empty.digest, empty.size, EMPTY_JSON)
    layer = blob_descriptor(media_type, data)
    client.push_blob(layer.digest, layer.size, data)
    body = manifest_bytes(empty, [layer], artifact_type=artifact_type, subject=subject)
    descriptor = Descriptor(MANIFEST_MEDIA_TYPE, sha256_digest(body), len(body), artifact_type=artifact_type)
    headers = client.push_manifest(descriptor.digest, body)
    if "OCI-Subject" not in headers:
        _add_to_fallback_index(client, subject.digest, descriptor)
    return descriptor


def referrers(client: RegistryClient, subject_digest: str, artifact_type: str) -> list[Descriptor]:
    """The artifacts of one type that refer to a manifest: from the referrers API, else from the fallback tag."""
    listed = client.referrers(subject_digest)
    if listed is None:
        listed = _fallback_index(client, subject_digest)
    found = [Descriptor.from_json(d, "a referrer descriptor") for d in listed]
    return [d for d in found if d.artifact_type == artifact_type]


def read_attached(client: RegistryClient, referrer: Descriptor, subject: str, media_type: str, limit: int) -> bytes:
    """The one layer of a referrer manifest, checked: it must name ``subject`` and hold ``media_type``."""
    manifest = client.fetch_manifest(referrer.digest).json()
    named = (manifest.get("subject") or {}).get("digest") if isinstance(manifest.get("subject"), dict) else None
    layers = manifest.get("layers")
    if named != subject or not isinstance(layers, list) or len(layers) != 1:
        raise errors.ArtifactInvalidError(f"referrer {referrer.digest} does not attach one layer to {subject}")
    layer = Descriptor.from_json(layers[0], f"the layer of {referrer.digest}")
    if layer.media_type != media_type or layer.size > limit:
        raise errors.ArtifactInvalidError(f"referrer {referrer.digest} holds {layer.media_type}, {layer.size} bytes")
    return client.read_blob(layer.digest, layer.size)


def _fallback_index(client: RegistryClient, subject_digest: str) -> list[dict[str, Any]]:
    try:
        index = client.fetch_manifest(fallback_tag(subject_digest)).json()
    except errors.ArtifactNotFoundError:
        return []
    manifests = index.get("manifests", [])
    return [m for m in manifests if isinstance(m, dict)] if isinstance(manifests, list) else []


def _add_to_fallback_index(client: RegistryClient, subject_digest: str, descriptor: Descriptor) -> None:
    """Read, extend and write back the fallback index. Two writers at once can lose one's entry (the spec's
    fallback has no compare-and-swap); pushing again restores it, as the entry is keyed by digest."""
    listed = _fallback_index(client, subject_digest)
    if any(m.get("digest") == descriptor.digest for m in listed):
        return
    index = {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": [*listed, descriptor.to_json()]}
    body = json.dumps(index, sort_keys=True, separators=(",", ":")).encode("utf-8")
    client.push_manifest(fallback_tag(subject_digest), body, INDEX_MEDIA_TYPE)
