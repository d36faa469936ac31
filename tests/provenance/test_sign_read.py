"""Signing images and reading them back, end to end with c2pa-python: formats, tampering, trust, catalog."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from lorahub import Hub, errors
from lorahub.provenance import (
    DEFAULT_TRAINING_MINING,
    GENERATION_LABEL,
    TRAINED_ALGORITHMIC_MEDIA,
    AdapterUse,
    BaseRef,
    C2paCredentials,
    inspect_image,
    sign_image,
)
from tests.provenance.helpers import SUFFIX, encoded, flip_image_byte, make_home, noise_image

BASE = BaseRef("stabilityai/stable-diffusion-v1-5", "b" * 64, "CreativeML-OpenRAIL-M", family="sd1")


def _sign(hub: Hub, image: object, out: Path, adapters: list[str] | None = None, **kwargs: object) -> Path:
    uses = hub.adapter_uses(adapters or [])
    signed = hub.sign_image(image, base=BASE, adapters=uses, out=out, **kwargs)  # type: ignore[arg-type]
    assert signed.path == out
    return out


@pytest.mark.parametrize("kind", ["png", "jpeg", "webp"])
def test_round_trip_is_trusted_with_the_home_ca(hub: Hub, catalogued: list[str], tmp_path: Path, kind: str) -> None:
    source = tmp_path / f"in{SUFFIX[kind]}"
    source.write_bytes(encoded(noise_image(), kind))
    out = _sign(hub, source, tmp_path / f"out{SUFFIX[kind]}", ["pixel-art:0.7", "watercolor@1:0.3"], seed=7)
    report = hub.inspect_image(out)
    assert (report.state, report.codes, report.format) == ("Trusted", (), kind)
    assert report.signer["identity"] == "Alice Maker <alice@studio.example>"
    assert report.signer["name"] == "Alice Maker" and report.signer["organization"] == "lorahub"
    leaf = hub.certificate().chain[0]
    assert report.signer["not_after"].replace("+00:00", "Z") == leaf.not_after
    assert report.signer["issuer"].startswith("lorahub local root CA ")
    [action] = report.actions
    assert action["action"] == "c2pa.created"
    assert action["digital_source_type"] == TRAINED_ALGORITHMIC_MEDIA
    assert action["software_agent"]["name"] == "lorahub"
    assert report.parameters == {"seed": 7}


def test_flipped_byte_is_invalid_with_data_hash_mismatch(hub: Hub, tmp_path: Path) -> None:
    for kind in ("png", "jpeg", "webp"):
        out = _sign(hub, noise_image(), tmp_path / f"out{SUFFIX[kind]}")
        damaged = tmp_path / f"damaged{SUFFIX[kind]}"
        damaged.write_bytes(flip_image_byte(out.read_bytes(), kind))
        report = hub.inspect_image(damaged)
        assert report.state == "Invalid", kind
        assert "assertion.dataHash.mismatch" in report.codes, (kind, report.codes)
        assert not report.valid


def test_other_homes_ca_is_valid_but_untrusted_until_trust_add_ca(hub: Hub, tmp_path: Path) -> None:
    other = make_home(tmp_path / "other", "Bob Elsewhere <bob@elsewhere.example>")
    out = _sign(other, noise_image(), tmp_path / "bob.png")
    before = hub.inspect_image(out)
    assert (before.state, before.codes) == ("Valid", ("signingCredential.untrusted",))
    assert before.valid and not before.trusted
    assert before.signer["identity"] is None  # not one of this home's certificates
    hub.trust_add_ca(other.certificate_authority.root_path.read_bytes())
    after = hub.inspect_image(out)
    assert (after.state, after.codes) == ("Trusted", ())
    assert [c.source for c in hub.trusted_cas()] == ["local-ca", "trusted-root"]


def test_without_a_home_nothing_is_trusted_but_anchors_can_be_given(hub: Hub, tmp_path: Path) -> None:
    out = _sign(hub, noise_image(), tmp_path / "out.png")
    assert inspect_image(out).state == "Valid"
    anchored = inspect_image(out, anchors=hub.certificate_authority.root_pem())
    assert anchored.state == "Trusted"
    assert anchored.adapters == () and anchored.base is not None and anchored.base["digest"] == "b" * 64


def test_listed_adapters_match_the_catalog(hub: Hub, catalogued: list[str], tmp_path: Path) -> None:
    out = _sign(hub, noise_image(), tmp_path / "out.png", ["pixel-art:0.7", "watercolor:-0.25"])
    report = hub.inspect_image(out)
    by_name = {a.name: a for a in report.adapters}
    assert list(by_name) == ["pixel-art", "watercolor"]
    for name, weight in (("pixel-art", 0.7), ("watercolor", -0.25)):
        version = hub.version(name)
        listed = by_name[name]
        assert listed.content_digest == version.content_digest
        assert (listed.version, listed.weight, listed.known, listed.catalog_ref) == (1, weight, True, f"{name}@1")
        assert listed.license == version.license_id == listed.catalog_license
        assert listed.signers == version.signers and listed.card_trusted is True
        assert listed.consent == "unknown"
    data = report.as_dict()
    assert {"state", "codes", "signer", "adapters", "base"} <= set(data)
    assert set(data["adapters"][0]) >= {"name", "content_digest", "weight", "known", "license"}
    assert data["base"]["name"] == BASE.name


def test_an_adapter_this_catalog_does_not_know_is_reported_unknown(
    hub: Hub, catalogued: list[str], tmp_path: Path
) -> None:
    out = _sign(hub, noise_image(), tmp_path / "out.png", ["pixel-art"])
    stranger = make_home(tmp_path / "stranger", "Carol <carol@example.org>")
    stranger.trust_add_ca(hub.certificate_authority.root_pem())
    [listed] = stranger.inspect_image(out).adapters
    assert (listed.known, listed.catalog_ref, listed.card_trusted) == (False, None, None)
    assert listed.license == "LicenseRef-CreativeML-OpenRAIL-M"  # as the manifest says


def test_manifest_contents(hub: Hub, catalogued: list[str], tmp_path: Path) -> None:
    uses = hub.adapter_uses(["pixel-art:0.5"])
    signed = hub.sign_image(
        noise_image(),
        base=BASE,
        adapters=uses,
        prompt="a lighthouse <lora:pixel-art:0.5>",
        negative_prompt="blurry",
        steps=20,
        scheduler="EulerDiscreteScheduler",
        training_mining={"ai_inference": "notAllowed", "com.example.archive": "allowed"},
        record=False,
    )
    assert signed.path is None and signed.format == "png"
    assert signed.sha256 == hashlib.sha256(signed.data).hexdigest()
    report = inspect_image(signed.data, hub)
    assert report.state == "Trusted"
    assert report.parameters == {
        "prompt": "a lighthouse <lora:pixel-art:0.5>",
        "negative_prompt": "blurry",
        "steps": 20,
        "scheduler": "EulerDiscreteScheduler",
    }
    expected = {k: {"use": v} for k, v in DEFAULT_TRAINING_MINING.items()}
    expected |= {"cawg.ai_inference": {"use": "notAllowed"}, "com.example.archive": {"use": "allowed"}}
    assert report.training_mining == expected
    assertions = [a["label"] for a in signed.manifest["assertions"]]
    assert assertions == ["c2pa.actions", GENERATION_LABEL, "cawg.training-mining"]
    ingredients = [(i["label"], i["relationship"]) for i in signed.manifest["ingredients"]]
    assert ingredients == [("base_model", "inputTo"), ("adapter_0", "inputTo")]
    assert hub.audit(action="generate") == []  # record=False


def test_sign_image_with_explicit_credentials_and_bytes(hub: Hub, tmp_path: Path) -> None:
    credentials = hub.c2pa_credentials()
    assert isinstance(credentials, C2paCredentials)
    data = encoded(noise_image(), "jpeg")
    signed = sign_image(data, base=BASE, adapters=[], signer=credentials, out=tmp_path / "x.jpeg")
    assert signed.format == "jpeg" and (tmp_path / "x.jpeg").read_bytes() == signed.data
    assert hub.inspect_image(signed.path or "").state == "Trusted"
    with pytest.raises(errors.LorahubError, match="needs credentials"):
        sign_image(data, base=BASE, adapters=[])


def test_bad_inputs_are_clear_errors(hub: Hub, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(errors.ImageFormatError):
        hub.sign_image(text, base=BASE, adapters=[])
    png = tmp_path / "in.png"
    png.write_bytes(encoded(noise_image(), "png"))
    with pytest.raises(errors.ImageFormatError, match="names another format"):
        hub.sign_image(png, base=BASE, adapters=[], out=tmp_path / "out.jpg")
    with pytest.raises(errors.ImageFormatError):
        hub.sign_image(noise_image(), base=BASE, adapters=[], out=tmp_path / "out.gif")
    with pytest.raises(errors.LorahubError, match="training-and-data-mining"):
        hub.sign_image(png, base=BASE, adapters=[], training_mining={"ai_training": "maybe"})
    with pytest.raises(errors.LorahubError, match="not a CAWG"):
        hub.sign_image(png, base=BASE, adapters=[], training_mining={"cawg.everything": "allowed"})
    with pytest.raises(errors.PathNotFoundError):
        hub.sign_image(tmp_path / "missing.png", base=BASE, adapters=[])
    with pytest.raises(errors.ContentCredentialsMissingError):
        hub.inspect_image(png)
    for kind in ("jpeg", "webp"):
        with pytest.raises(errors.ContentCredentialsMissingError):
            hub.inspect_image(encoded(noise_image(), kind))
    signed = hub.sign_image(noise_image(), base=BASE, adapters=[], record=False)
    with pytest.raises(errors.ContentCredentialsInvalidError, match="cannot be parsed"):
        hub.inspect_image(signed.data[:2000])
    with pytest.raises(errors.AdapterNotFoundError):
        hub.adapter_uses(["no-such-adapter:0.5"])
    with pytest.raises(errors.LorahubError, match="must be a number"):
        hub.adapter_uses(["pixel-art:heavy"])
    with pytest.raises(errors.LorahubError, match="not a SHA-256"):
        BaseRef("sd15", digest="abc")
    with pytest.raises(errors.LorahubError, match="not a finite number"):
        AdapterUse("x", "a" * 64, weight=float("nan"))
    assert not list(tmp_path.glob("out.*"))


def test_generate_events_are_listed_by_adapter(hub: Hub, catalogued: list[str], tmp_path: Path) -> None:
    first = hub.sign_image(
        noise_image(), base=BASE, adapters=hub.adapter_uses(["pixel-art:0.7"]), out=tmp_path / "a.png"
    )
    both = hub.adapter_uses(["pixel-art:0.5", "watercolor:0.5"])
    second = hub.sign_image(noise_image(seed=1), base=BASE, adapters=both, out=tmp_path / "b.png")
    # A base model named like an adapter must not make its images show up under that adapter.
    hub.record_generation("c" * 64, base=BaseRef("watercolor"), adapters=hub.adapter_uses(["pixel-art"]))
    pixel = [e for e in hub.audit(adapter="pixel-art") if e["action"] == "generate"]
    water = [e for e in hub.audit(adapter="watercolor") if e["action"] == "generate"]
    assert [e["details"]["image_sha256"] for e in pixel] == [first.sha256, second.sha256, "c" * 64]
    assert [e["details"]["image_sha256"] for e in water] == [second.sha256]
    event = water[0]["details"]
    assert event["out"] == str(tmp_path / "b.png")
    assert event["base"]["name"] == BASE.name
    assert event["adapters"][1] == {
        "name": "watercolor",
        "version": 1,
        "content_digest": hub.version("watercolor").content_digest,
        "weight": 0.5,
    }
    assert hub.verify_audit() == []


@pytest.mark.parametrize("kind", ["png", "jpeg", "webp"])
def test_signing_an_image_with_credentials_needs_replace(hub: Hub, tmp_path: Path, kind: str) -> None:
    from lorahub.provenance.sign import carries_manifest

    source = tmp_path / f"in{SUFFIX[kind]}"
    source.write_bytes(encoded(noise_image(), kind))
    assert not carries_manifest(source.read_bytes(), kind)
    first = _sign(hub, source, tmp_path / f"first{SUFFIX[kind]}")
    assert carries_manifest(first.read_bytes(), kind)
    with pytest.raises(errors.ContentCredentialsPresentError) as caught:
        _sign(hub, first, tmp_path / f"second{SUFFIX[kind]}")
    assert caught.value.code == "credentials-present" and "--replace" in (caught.value.hint or "")
    second = _sign(hub, first, tmp_path / f"second{SUFFIX[kind]}", replace=True)
    assert hub.inspect_image(second).state == "Trusted"


def test_base_ref_digests_pipeline_folders_and_files_with_the_file_cache(hub: Hub, tmp_path: Path) -> None:
    pipeline = tmp_path / "tiny-sd"
    (pipeline / "unet").mkdir(parents=True)
    (pipeline / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    weights = pipeline / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(b"\0" * 4096)
    (pipeline / ".cache").mkdir()
    (pipeline / ".cache" / "lock").write_text("ignored")
    ref = hub.base_ref(pipeline, license="CreativeML-OpenRAIL-M", family="sd1")
    assert (ref.name, ref.license, ref.family) == ("tiny-sd", "CreativeML-OpenRAIL-M", "sd1")
    assert ref.digest is not None and len(ref.digest) == 64
    stat = weights.stat()
    cached = hub.catalog.file_cache_get(str(weights.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    assert cached is not None and cached.sha256 == hashlib.sha256(b"\0" * 4096).hexdigest()
    assert hub.base_ref(pipeline).digest == ref.digest  # stable (and served from the cache)
    (pipeline / ".cache" / "lock").write_text("still ignored")
    assert hub.base_ref(pipeline).digest == ref.digest
    weights.write_bytes(b"\1" * 4097)  # another size: the cache cannot mistake it even on coarse mtimes
    assert hub.base_ref(pipeline).digest != ref.digest
    assert hub.base_ref(weights).digest == hashlib.sha256(b"\1" * 4097).hexdigest()
    hub_id = hub.base_ref("stabilityai/stable-diffusion-xl-base-1.0")
    assert (hub_id.name, hub_id.digest) == ("stabilityai/stable-diffusion-xl-base-1.0", None)


def test_optional_thumbnail_is_a_small_jpeg(hub: Hub) -> None:
    import io
    import json

    import c2pa

    def thumbnail_of(data: bytes) -> dict[str, str] | None:
        with c2pa.Reader("image/webp", io.BytesIO(data)) as reader:
            store = json.loads(reader.json())
        thumbnail: dict[str, str] | None = store["manifests"][store["active_manifest"]].get("thumbnail")
        return thumbnail

    webp = encoded(noise_image(512), "webp")
    plain = hub.sign_image(webp, base=BASE, adapters=[], record=False)
    with_thumbnail = hub.sign_image(webp, base=BASE, adapters=[], record=False, thumbnail=True)
    assert thumbnail_of(plain.data) is None
    thumbnail = thumbnail_of(with_thumbnail.data)
    assert thumbnail is not None and thumbnail["format"] == "image/jpeg"
    assert hub.inspect_image(with_thumbnail.data).state == "Trusted"
