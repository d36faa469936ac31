"""Push to and pull from a real OCI registry (Debian's docker-registry on loopback): the version comes back byte for
byte with its card and every signature, and a tampered layer, a swapped card or an untrusted signer make the pull
refuse with nothing written to the pulling home."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from lorahub import Hub, errors
from lorahub.dev.example_lora import write_example_lora
from lorahub.oci import modelpack as mp
from lorahub.oci.client import MANIFEST_MEDIA_TYPE, RegistryClient, sha256_digest
from lorahub.oci.reference import parse_oci_reference
from lorahub.sdk.adding import AddOptions
from tests.cli.test_catalog_cli import EXIT_VERIFY_FAILED, Home


@pytest.fixture
def published(hub: Hub, tmp_path: Path) -> tuple[Hub, str]:
    """Alice's home with one signed version, co-signed by Bob (a curator), ready to push."""
    path = tmp_path / "pixel.safetensors"
    write_example_lora(path, rank=2, name="pixel")
    hub.add(path, AddOptions(name="pixel", license="MIT"))
    hub.create_identity("Bob <bob@example.com>")
    hub.sign("pixel@1", key="Bob")
    return hub, "pixel@1"


@pytest.fixture
def consumer(tmp_path: Path, published: tuple[Hub, str]) -> Hub:
    """A verify-only home (no identity of its own) that trusts Alice's key, not Bob's."""
    home = Hub.open(tmp_path / "consumer")
    home.trust_add(published[0].keys.export_public("Alice"), name="alice")
    return home


def state_of(home: Hub) -> dict[str, Any]:
    """Everything a pull could write: versions, blobs, audit events."""
    return {
        "versions": [v.ref for v in home.catalog.list_versions()],
        "blobs": sorted(home.blobs.iter_blobs()),
        "events": len(home.catalog.audit_events()),
    }


def test_round_trip_is_byte_identical_with_card_and_signatures(
    published: tuple[Hub, str], consumer: Hub, registry: str
) -> None:
    hub, ref = published
    pushed = hub.push(ref, f"oci://{registry}/studio/pixel", insecure=True)
    assert pushed.tags == ["v1", "latest"] and pushed.uploaded
    assert pushed.attached == [mp.CARD_ARTIFACT_TYPE, mp.SIGSTORE_BUNDLE_MEDIA_TYPE]

    pulled = consumer.pull(f"oci://{registry}/studio/pixel:v1", insecure=True)
    assert pulled.digest == pushed.digest and pulled.report.ok
    (bundle,) = [c for c in pulled.report.checks if c.name == "model-signing bundle"]
    alice = hub.keys.default()
    assert alice is not None and bundle.ok and bundle.detail.startswith(f"by {alice.fingerprint[:16]}")
    original, copy = hub.version(ref), consumer.version(ref)
    assert copy.blob_sha256 == original.blob_sha256
    assert (
        consumer.blobs.path_for(copy.blob_sha256).read_bytes() == hub.blobs.path_for(original.blob_sha256).read_bytes()
    )
    mine, theirs = hub.signed_card(original), consumer.signed_card(copy)
    assert theirs.payload == mine.payload
    assert {(s.keyid, s.sig) for s in theirs.envelope.signatures} == {
        (s.keyid, s.sig) for s in mine.envelope.signatures
    }
    assert len(theirs.envelope.signatures) == 2
    pulls = [e for e in consumer.catalog.audit_events() if e.action == "pull"]
    assert len(pulls) == 1 and pushed.digest in pulls[0].details
    assert consumer.verify(ref).ok

    again = consumer.pull(pushed.reference, insecure=True)  # by digest; already there, nothing new
    assert again.added.already and len(consumer.catalog.list_versions()) == 1


def test_the_artifact_follows_modelpack(published: tuple[Hub, str], registry: str) -> None:
    hub, ref = published
    pushed = hub.push(ref, f"oci://{registry}/studio/layout:release", insecure=True)
    reference = parse_oci_reference(pushed.reference)
    with RegistryClient(reference, insecure=True) as client:
        fetched = client.fetch_manifest(pushed.digest)
        manifest = fetched.json()
        config = json.loads(client.read_blob(manifest["config"]["digest"], manifest["config"]["size"]))
    version = hub.version(ref)
    assert manifest["artifactType"] == "application/vnd.cncf.model.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.cncf.model.config.v1+json"
    [layer] = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.cncf.model.weight.v1.raw"
    assert layer["digest"] == f"sha256:{version.blob_sha256}"
    assert layer["annotations"]["org.cncf.model.filepath"] == "pixel.safetensors"
    assert manifest["annotations"]["dev.lorahub.content-digest"] == version.content_digest
    assert manifest["annotations"]["dev.lorahub.card-digest"] == sha256_digest(hub.signed_card(version).payload)
    assert set(config) == {"descriptor", "config", "modelfs"}
    assert config["descriptor"]["name"] == "pixel" and config["descriptor"]["licenses"] == ["MIT"]
    assert config["descriptor"]["family"] == "sd1" and config["config"] == {"format": "safetensors"}
    assert config["modelfs"] == {"type": "layers", "diff_ids": [layer["digest"]]}
    assert pushed.tags == ["release"]


def test_a_registry_without_the_referrers_api_lists_attachments_under_the_fallback_tag(
    published: tuple[Hub, str], registry: str
) -> None:
    hub, ref = published
    pushed = hub.push(ref, f"oci://{registry}/studio/fallback", insecure=True)
    base = f"http://{registry}/v2/studio/fallback"
    assert httpx.get(f"{base}/referrers/{pushed.digest}").status_code == 404  # distribution 2.8 has no such API
    fallback = f"{base}/manifests/{mp.fallback_tag(pushed.digest)}"
    listed = httpx.get(fallback, headers={"Accept": mp.INDEX_MEDIA_TYPE}).json()["manifests"]
    assert [m["artifactType"] for m in listed] == [mp.CARD_ARTIFACT_TYPE, mp.SIGSTORE_BUNDLE_MEDIA_TYPE]
    hub.push(ref, f"oci://{registry}/studio/fallback:again", insecure=True)  # the same artifact: listed once
    again = httpx.get(fallback, headers={"Accept": mp.INDEX_MEDIA_TYPE}).json()["manifests"]
    assert [m["digest"] for m in again] == [m["digest"] for m in listed]


def test_an_untrusted_signer_is_refused_and_nothing_is_written(
    published: tuple[Hub, str], tmp_path: Path, registry: str
) -> None:
    hub, ref = published
    hub.push(ref, f"oci://{registry}/studio/untrusted", insecure=True)
    stranger = Hub.open(tmp_path / "stranger")
    before = state_of(stranger)
    with pytest.raises(errors.PullRefusedError) as refused:
        stranger.pull(f"oci://{registry}/studio/untrusted", insecure=True)
    failed = {c.name for c in refused.value.report.checks if not c.ok}
    assert failed == {"signatures valid", "signer trusted"}
    (bundle,) = [c for c in refused.value.report.checks if c.name == "model-signing bundle"]
    assert bundle.ok and "not checkable" in bundle.detail  # a key this home has never seen
    assert state_of(stranger) == before
    assert not any((stranger.settings.home / "downloads").iterdir())


def test_a_swapped_weight_layer_is_refused(
    published: tuple[Hub, str], consumer: Hub, registry: str, tmp_path: Path
) -> None:
    """Someone with push rights replaces the weights and re-attaches the original (validly signed) card."""
    hub, ref = published
    pushed = hub.push(ref, f"oci://{registry}/studio/swapped", insecure=True)
    other = tmp_path / "other.safetensors"
    write_example_lora(other, rank=2, seed=7, name="pixel")
    reference = parse_oci_reference(pushed.reference)
    with RegistryClient(reference, insecure=True) as client:
        manifest = client.fetch_manifest(pushed.digest).json()
        data = other.read_bytes()
        layer = mp.Descriptor(
            mp.WEIGHT_RAW_MEDIA_TYPE, sha256_digest(data), len(data), {mp.FILEPATH_ANNOTATION: "pixel.safetensors"}
        )
        client.push_blob(layer.digest, layer.size, data)
        config = mp.Descriptor.from_json(manifest["config"], "config")
        body = mp.manifest_bytes(config, [layer], artifact_type=mp.MODEL_ARTIFACT_TYPE)
        client.push_manifest("evil", body)
        subject = mp.Descriptor(MANIFEST_MEDIA_TYPE, sha256_digest(body), len(body))
        card = json.dumps(hub.signed_card(hub.version(ref)).envelope.to_json()).encode()
        mp.attach(client, subject, mp.CARD_ARTIFACT_TYPE, mp.DSSE_MEDIA_TYPE, card)
    before = state_of(consumer)
    with pytest.raises(errors.PullRefusedError) as refused:
        consumer.pull(f"oci://{registry}/studio/swapped:evil", insecure=True)
    assert [c.name for c in refused.value.report.checks if not c.ok] == ["card matches file"]
    assert state_of(consumer) == before


def test_a_swapped_card_is_refused(published: tuple[Hub, str], consumer: Hub, registry: str, tmp_path: Path) -> None:
    """The weights are the ones pushed, but the card attached is another adapter's (signed by a trusted key)."""
    hub, ref = published
    decoy = tmp_path / "decoy.safetensors"
    write_example_lora(decoy, rank=2, seed=3, name="decoy")
    hub.add(decoy, AddOptions(name="decoy", license="MIT"))
    pushed = hub.push(ref, f"oci://{registry}/studio/cardswap", insecure=True)
    reference = parse_oci_reference(pushed.reference)
    with RegistryClient(reference, insecure=True) as client:
        manifest = client.fetch_manifest(pushed.digest).json()
        manifest.pop("annotations")  # a manifest of its own, so the genuine card is not among its referrers
        body = json.dumps(manifest).encode()
        client.push_manifest("swapped", body)
        subject = mp.Descriptor(MANIFEST_MEDIA_TYPE, sha256_digest(body), len(body))
        decoy_card = json.dumps(hub.signed_card(hub.version("decoy@1")).envelope.to_json()).encode()
        mp.attach(client, subject, mp.CARD_ARTIFACT_TYPE, mp.DSSE_MEDIA_TYPE, decoy_card)
    before = state_of(consumer)
    with pytest.raises(errors.PullRefusedError) as refused:
        consumer.pull(f"oci://{registry}/studio/cardswap:swapped", insecure=True)
    assert "card matches file" in {c.name for c in refused.value.report.checks if not c.ok}
    assert state_of(consumer) == before


def test_bytes_altered_in_the_registry_are_refused(
    published: tuple[Hub, str], consumer: Hub, registry: str, registry_storage: Path
) -> None:
    """The registry's own storage is altered behind its back: the layer no longer has the digest it is served
    under, and the pull stops while reading it."""
    hub, ref = published
    hub.push(ref, f"oci://{registry}/studio/rotten", insecure=True)
    blob = hub.version(ref).blob_sha256
    stored = registry_storage / "docker/registry/v2/blobs/sha256" / blob[:2] / blob / "data"
    original = stored.read_bytes()
    try:
        stored.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        before = state_of(consumer)
        with pytest.raises(errors.ArtifactInvalidError, match="digest"):
            consumer.pull(f"oci://{registry}/studio/rotten:v1", insecure=True)
        assert state_of(consumer) == before
    finally:
        stored.write_bytes(original)  # the session's registry is shared by the other tests


def test_what_is_not_a_lorahub_model_is_refused_clearly(consumer: Hub, registry: str) -> None:
    reference = parse_oci_reference(f"oci://{registry}/other/image:1")
    with RegistryClient(reference, insecure=True) as client:
        config = b"{}"
        client.push_blob(sha256_digest(config), len(config), config)
        descriptor = mp.Descriptor("application/vnd.oci.image.config.v1+json", sha256_digest(config), len(config))
        client.push_manifest("1", mp.manifest_bytes(descriptor, [], artifact_type="application/vnd.example"))
    with pytest.raises(errors.ArtifactInvalidError, match="not a ModelPack model"):
        consumer.pull(str(reference), insecure=True)
    with pytest.raises(errors.ArtifactNotFoundError):
        consumer.pull(f"oci://{registry}/other/image:2", insecure=True)


def test_references_and_transport_are_checked_before_anything_is_sent(consumer: Hub) -> None:
    with pytest.raises(errors.InsecureRegistryError):
        consumer.pull("oci://registry.example.com/a/b:1", insecure=True)
    for bad in ("https://host/a:1", "oci://host", "oci://host/UPPER:1", "oci://host/a@sha256:abc"):
        with pytest.raises(errors.InvalidArgumentError):
            consumer.pull(bad)
    with pytest.raises(errors.RegistryUnreachableError, match="cannot reach"):
        consumer.pull("oci://127.0.0.1:9/a/b:1", insecure=True)  # the discard port: nothing listens


def test_cli_push_pull_and_refusal(tmp_path: Path, registry: str) -> None:
    alice, bob = Home(tmp_path / "alice"), Home(tmp_path / "bob")
    alice.run("keys", "create", "Alice <alice@studio.example>")
    path = tmp_path / "style.safetensors"
    write_example_lora(path, rank=1, name="style")
    alice.run("add", str(path), "--license", "MIT")
    pushed = json.loads(alice.run("push", "style", f"oci://{registry}/cli/style", "--insecure", "--json").stdout)
    assert pushed["tags"] == ["v1", "latest"]

    refused = bob.run("pull", f"oci://{registry}/cli/style", "--insecure", check=False)
    assert refused.returncode == EXIT_VERIFY_FAILED
    assert "error[pull-refused]" in refused.stderr and "✗ signer trusted" in refused.stdout
    assert json.loads(bob.run("list", "--json").stdout) == []

    key = tmp_path / "alice.pem"
    key.write_text(alice.run("keys", "export", "Alice").stdout)
    bob.run("trust", "add", str(key))
    done = bob.run("pull", f"oci://{registry}/cli/style", "--insecure")
    assert "catalogued style@1" in done.stdout
    exported = tmp_path / "exported.safetensors"
    bob.run("export", "style@1", str(exported))
    assert bob.run("verify", str(exported)).returncode == 0
    shown = json.loads(bob.run("show", "style", "--json").stdout)
    assert shown["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
