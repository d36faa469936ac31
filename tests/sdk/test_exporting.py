"""Exports for A1111/Forge, ComfyUI and the Hugging Face Hub, and catalogued conversions, through the SDK.

The sidecars are parsed as their readers parse them (JSON; the model card by ``huggingface_hub``), and the hf file is
loaded by diffusers into an SD 1.5 UNet built from its config on the meta device (no weights, no download).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

from lorahub import Hub, errors
from lorahub.dev.model_configs import CLIP_L, SD15_UNET
from lorahub.files.digests import digest_file
from lorahub.files.safetensors import read_header
from lorahub.sdk.adding import AddOptions
from lorahub.sdk.sidecars import civitai_base_model, hf_license, yaml_front_matter
from lorahub.signing.card import BaseModel, Card, License
from lorahub.signing.embed import read_embedded, read_sidecar
from tests.sdk.sd15_files import write_sd15_lora
from tests.support import real_file

DESCRIPTION = "Ink drawings: bold lines."
TRIGGERS = ["inky style", "ink: bold"]


@pytest.fixture
def ink(hub: Hub, tmp_path: Path) -> Hub:
    """``ink@1``: a small kohya SD 1.5 LoRA with a licence, trigger words, a description and a tag."""
    source = write_sd15_lora(tmp_path / "ink.safetensors")
    options = AddOptions(name="ink", license="CC-BY-4.0", triggers=TRIGGERS, description=DESCRIPTION, tags=["ink"])
    hub.add(source, options)
    return hub


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _signed_file_matches(hub: Hub, path: Path, ref: str) -> None:
    """The exported file carries the catalogued signed card, in its header and in the sidecar, for its content."""
    catalogued = hub.signed_card(hub.version(ref))
    header = read_header(path)
    embedded, beside = read_embedded(header.metadata), read_sidecar(path)
    assert embedded is not None and beside is not None
    assert embedded.envelope == catalogued.envelope == beside.envelope
    assert digest_file(path, header, check_values=False).hashes.content == catalogued.card.content_digest


# --- a1111 and comfyui -----------------------------------------------------------------------------------------


def test_a1111_export_writes_kohya_with_the_sidecars_a1111_reads(ink: Hub, tmp_path: Path) -> None:
    out = tmp_path / "a1111"
    result = ink.export("ink", out, tool="a1111", weight=0.8)

    assert result.conversion is None and result.version.ref == "ink@1"  # kohya already: exported as it is
    assert sorted(p.name for p in out.iterdir()) == [
        "ink.civitai.info",
        "ink.json",
        "ink.safetensors",
        "ink.safetensors.lorahub.json",
    ]
    _signed_file_matches(ink, out / "ink.safetensors", "ink@1")
    assert (
        read_header(out / "ink.safetensors").tensors.keys()
        == read_header(ink.blobs.path_for(result.version.blob_sha256)).tensors.keys()
    )

    user = _json(out / "ink.json")
    assert user["activation text"] == "inky style, ink: bold"
    assert user["preferred weight"] == 0.8
    assert user["sd version"] == "SD1"
    assert user["description"] == DESCRIPTION
    assert "ink@1" in user["notes"] and result.version.content_digest in user["notes"]

    info = _json(out / "ink.civitai.info")
    assert info["trainedWords"] == TRIGGERS
    assert info["baseModel"] == "SD 1.5"
    assert info["model"] == {"name": "ink", "type": "LORA", "tags": ["ink"]}
    assert "id" not in info and "modelId" not in info  # never invented
    [entry] = info["files"]
    written = digest_file(out / "ink.safetensors", check_values=False).hashes
    assert entry["primary"] is True and entry["name"] == "ink.safetensors"
    assert entry["hashes"]["SHA256"] == written.sha256.upper()
    assert entry["hashes"]["AutoV2"] == written.autov2.upper()
    assert entry["sizeKB"] * 1024 == (out / "ink.safetensors").stat().st_size
    assert entry["metadata"] == {"format": "SafeTensor", "fp": "fp16"}


def test_another_home_reads_the_a1111_export_back(ink: Hub, tmp_path: Path) -> None:
    ink.export("ink", tmp_path / "a1111", tool="a1111")
    other = Hub.open(tmp_path / "other")
    other.create_identity("Bob <bob@example.com>")
    added = other.add(tmp_path / "a1111" / "ink.safetensors")
    card = other.signed_card(other.version(f"{added.name}@{added.version}")).card
    assert card.trigger_words == tuple(TRIGGERS)  # from ink.json / ink.civitai.info, as add reads neighbours
    assert card.content_digest == ink.version("ink").content_digest
    report = other.verify(tmp_path / "a1111" / "ink.safetensors")
    checks = {c.name: c.ok for c in report.checks}
    assert report.card_source == "embedded" and checks["card matches file"]  # the card travelled with the file


def test_weight_is_left_out_when_not_given(ink: Hub, tmp_path: Path) -> None:
    ink.export("ink", tmp_path / "a", tool="a1111")
    assert "preferred weight" not in _json(tmp_path / "a" / "ink.json")  # A1111 then uses its default multiplier


def test_comfyui_export_has_the_civitai_info_but_no_a1111_json(ink: Hub, tmp_path: Path) -> None:
    out = tmp_path / "comfy"
    ink.export("ink@1", out, tool="comfyui")
    assert sorted(p.name for p in out.iterdir()) == [
        "ink.civitai.info",
        "ink.safetensors",
        "ink.safetensors.lorahub.json",
    ]
    assert _json(out / "ink.civitai.info")["trainedWords"] == TRIGGERS
    _signed_file_matches(ink, out / "ink.safetensors", "ink@1")


def test_export_is_audited_with_its_target(ink: Hub, tmp_path: Path) -> None:
    ink.export("ink", tmp_path / "c", tool="comfyui")
    [event] = ink.audit(adapter="ink", action="export")
    assert event["details"]["for"] == "comfyui" and "ink.civitai.info" in event["details"]["files"]


# --- hf ----------------------------------------------------------------------------------------------------------


def test_hf_export_converts_catalogues_and_writes_a_model_card(ink: Hub, tmp_path: Path) -> None:
    out = tmp_path / "hf"
    result = ink.export("ink@1", out, tool="hf")

    assert result.conversion is not None and not result.conversion.reused
    assert result.version.ref == "ink@2" and result.version.format == "diffusers"
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "pytorch_lora_weights.safetensors",
        "pytorch_lora_weights.safetensors.lorahub.json",
    ]  # the scratch folder of the conversion is gone
    _signed_file_matches(ink, out / "pytorch_lora_weights.safetensors", "ink@2")

    parent = ink.version("ink@1")
    card = ink.signed_card(result.version).card
    [lineage] = card.lineage
    assert (lineage.digest, lineage.relation) == (parent.content_digest, "converted-from")
    assert lineage.parameters["format"] == "diffusers" and lineage.parameters["dtype"] is None
    assert float(lineage.parameters["max_abs_error"]) == result.conversion.report.max_abs_error <= 1e-6
    assert card.trigger_words == tuple(TRIGGERS) and card.license.id == "CC-BY-4.0"  # said what its parent said
    [event] = ink.audit(adapter="ink", action="convert")
    assert event["subject_version"] == 2 and event["details"]["parents"][0]["ref"] == "ink@1"

    readme = (out / "README.md").read_text(encoding="utf-8")
    assert "`inky style`" in readme and "load_lora_weights" in readme
    assert parent.content_digest in readme and "converted-from" in readme and "`ink@1`" in readme


def test_hf_model_card_front_matter_parses_with_the_required_keys(ink: Hub, tmp_path: Path) -> None:
    huggingface_hub = pytest.importorskip("huggingface_hub")
    ink.export("ink", tmp_path / "hf", tool="hf")
    data = huggingface_hub.ModelCard.load(tmp_path / "hf" / "README.md").data.to_dict()
    assert data["base_model"] == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert data["base_model_relation"] == "adapter"
    assert data["license"] == "cc-by-4.0" and "license_name" not in data
    assert data["instance_prompt"] == "inky style, ink: bold"
    assert {"lora", "diffusers", "text-to-image", "ink"} <= set(data["tags"])
    assert data["library_name"] == "diffusers"


def test_exporting_again_reuses_the_catalogued_conversion(ink: Hub, tmp_path: Path) -> None:
    first = ink.export("ink@1", tmp_path / "one", tool="hf")
    again = ink.export("ink@1", tmp_path / "two", tool="hf")
    assert again.conversion is not None and again.conversion.reused
    assert again.version.ref == first.version.ref == "ink@2"
    assert len(ink.audit(adapter="ink", action="convert")) == 1
    assert [v.number for v in ink.list_versions()] == [2, 1]
    # the diffusers version exports for hf as it is, and for A1111 converts back to the kohya content of ink@1
    assert ink.export("ink@2", tmp_path / "three", tool="hf").conversion is None


def test_a_conversion_whose_content_is_catalogued_elsewhere_reuses_that_version(ink: Hub, tmp_path: Path) -> None:
    ink.convert("ink", tmp_path / "d.safetensors", to="diffusers", catalogue=False)
    ink.add(tmp_path / "d.safetensors", AddOptions(name="ink-diffusers"))
    result = ink.export("ink@1", tmp_path / "hf", tool="hf")
    assert result.conversion is not None and result.conversion.reused
    assert result.version.ref == "ink-diffusers@1"
    assert not ink.audit(adapter="ink", action="convert")


def test_hf_file_loads_into_a_diffusers_sd15_unet_without_missing_or_unexpected_keys(ink: Hub, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    peft_utils = pytest.importorskip("peft.utils")
    ink.export("ink", tmp_path / "hf", tool="hf")
    state, alphas, metadata = diffusers.StableDiffusionPipeline.lora_state_dict(
        str(tmp_path / "hf"), weight_name="pytorch_lora_weights.safetensors", return_lora_metadata=True
    )
    with torch.device("meta"):
        unet = diffusers.UNet2DConditionModel(**SD15_UNET)
    diffusers.StableDiffusionPipeline.load_lora_into_unet(
        state, alphas, unet, adapter_name="ink", metadata=metadata, low_cpu_mem_usage=True
    )
    loaded = peft_utils.get_peft_model_state_dict(unet, adapter_name="ink")
    in_file = {k.removeprefix("unet."): v for k, v in state.items() if k.startswith("unet.")}
    assert set(loaded) == set(in_file) and len(in_file) == 2 * 24  # nothing missing, nothing unexpected
    for key, value in in_file.items():  # the model's LoRA layers (on meta: shapes, no values) fit the file's
        assert loaded[key].shape == value.shape, key
    config = unet.peft_config["ink"]
    assert config.lora_alpha / config.r == 2.0 / 2  # the example's alpha over its rank: ΔW scale kept


def test_a_real_old_style_diffusers_file_exports_for_hf_and_loads(hub: Hub, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    peft_utils = pytest.importorskip("peft.utils")
    source = real_file("catundchat_sd15_lora__pytorch_lora_weights.safetensors")  # attention-processor keys
    hub.add(source, AddOptions(name="catundchat", license="MIT", base_model="runwayml/stable-diffusion-v1-5"))
    result = hub.export("catundchat", tmp_path / "hf", tool="hf")
    assert result.conversion is not None and result.requested.format == "diffusers-old"
    assert result.version.format == "diffusers" and result.conversion.report.max_rel_error <= 1e-6
    state, alphas, metadata = diffusers.StableDiffusionPipeline.lora_state_dict(
        str(tmp_path / "hf"), weight_name="pytorch_lora_weights.safetensors", return_lora_metadata=True
    )
    with torch.device("meta"):
        unet = diffusers.UNet2DConditionModel(**SD15_UNET)
    diffusers.StableDiffusionPipeline.load_lora_into_unet(
        state, alphas, unet, adapter_name="cat", metadata=metadata, low_cpu_mem_usage=True
    )
    loaded = peft_utils.get_peft_model_state_dict(unet, adapter_name="cat")
    assert set(loaded) == {k.removeprefix("unet.") for k in state} and len(loaded) == 2 * 128
    data = _json_front_matter(tmp_path / "hf" / "README.md")
    assert data["base_model"] == "runwayml/stable-diffusion-v1-5" and data["license"] == "mit"


def _json_front_matter(readme: Path) -> dict[str, Any]:
    """The front matter as written: one ``key: "json string"`` or ``- "json string"`` per line."""
    lines = readme.read_text(encoding="utf-8").split("---\n")[1].splitlines()
    data: dict[str, Any] = {}
    key = ""
    for line in lines:
        if line.startswith("- "):
            data[key].append(json.loads(line[2:]))
        else:
            key, _, value = line.partition(": ")
            data[key.rstrip(":")] = json.loads(value) if value else []
            key = key.rstrip(":")
    return data


def test_hf_file_loads_into_a_transformers_5_clip_text_encoder(ink: Hub, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    transformers = pytest.importorskip("transformers")
    peft_utils = pytest.importorskip("peft.utils")
    ink.export("ink", tmp_path / "hf", tool="hf")
    state, alphas, metadata = diffusers.StableDiffusionPipeline.lora_state_dict(
        str(tmp_path / "hf"), weight_name="pytorch_lora_weights.safetensors", return_lora_metadata=True
    )
    with torch.device("meta"):
        encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig(**CLIP_L))
    diffusers.StableDiffusionPipeline.load_lora_into_text_encoder(
        state, alphas, encoder, adapter_name="ink", metadata=metadata, low_cpu_mem_usage=True
    )
    loaded = peft_utils.get_peft_model_state_dict(encoder, adapter_name="ink")
    assert len(loaded) == 2 * 6


# --- catalogued conversions ------------------------------------------------------------------------------------


def test_converting_a_ref_catalogues_it_and_converting_a_file_does_not(ink: Hub, tmp_path: Path) -> None:
    result = ink.convert("ink@1", tmp_path / "k.safetensors", to="diffusers", dtype="fp32")
    assert result.version is not None and result.version.ref == "ink@2" and result.parent is not None
    card = ink.signed_card(result.version).card
    assert card.lineage[0].parameters["dtype"] == "fp32"
    assert {t.dtype for t in read_header(tmp_path / "k.safetensors").tensors.values()} == {"F32"}

    plain = ink.convert(tmp_path / "k.safetensors", tmp_path / "back.safetensors", to="kohya")
    assert plain.version is None and plain.parent is None
    assert ink.convert("ink@1", tmp_path / "x.safetensors", to="kohya", catalogue=False).version is None
    assert [v.number for v in ink.list_versions()] == [2, 1]


def test_converting_a_catalogued_file_names_its_parent(ink: Hub, tmp_path: Path) -> None:
    source = write_sd15_lora(tmp_path / "same.safetensors")  # the same tensors as ink@1
    result = ink.convert(source, tmp_path / "d.safetensors", to="diffusers", catalogue=True)
    assert result.parent is not None and result.parent.ref == "ink@1"
    assert result.version is not None and result.version.ref == "ink@2"

    stranger = write_sd15_lora(tmp_path / "other.safetensors", seed=5)
    with pytest.raises(errors.AdapterNotFoundError, match="not catalogued"):
        ink.convert(stranger, tmp_path / "o.safetensors", to="diffusers", catalogue=True)


def test_unknown_ref_is_adapter_not_found(ink: Hub, tmp_path: Path) -> None:
    with pytest.raises(errors.AdapterNotFoundError):
        ink.export("nope", tmp_path / "x", tool="a1111")
    assert not (tmp_path / "x").exists()
    with pytest.raises(errors.AdapterNotFoundError):
        ink.convert("nope@3", tmp_path / "x.safetensors", to="kohya")
    assert not (tmp_path / "x.safetensors").exists()


def test_a_tampered_blob_is_not_converted(ink: Hub, tmp_path: Path) -> None:
    blob = ink.blobs.path_for(ink.version("ink").blob_sha256)
    os.chmod(blob, stat.S_IRUSR | stat.S_IWUSR)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0x01
    blob.write_bytes(bytes(data))
    with pytest.raises(errors.HashMismatchError, match="not the one catalogued"):
        ink.export("ink", tmp_path / "hf", tool="hf")
    assert not (tmp_path / "hf" / "pytorch_lora_weights.safetensors").exists()
    assert [v.number for v in ink.list_versions()] == [1]


def test_catalogued_conversion_needs_an_identity_before_it_converts(ink: Hub, tmp_path: Path) -> None:
    shutil.rmtree(ink.settings.keys_dir)  # a home whose identity went away (another machine, say)
    keyless = Hub.open(ink.settings.home)
    with pytest.raises(errors.KeyNotFoundError, match="no identity"):
        keyless.convert("ink", tmp_path / "out.safetensors", to="diffusers")
    assert not (tmp_path / "out.safetensors").exists()


def test_export_for_refuses_a_file_as_the_folder(ink: Hub, tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("x")
    with pytest.raises(errors.LorahubError, match="is a file"):
        ink.export("ink", tmp_path / "taken", tool="a1111")


# --- the sidecar tables ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("license_id", "expected"),
    [
        ("CC-BY-4.0", ("cc-by-4.0", None, None)),
        ("LicenseRef-CreativeML-OpenRAIL-M", ("creativeml-openrail-m", None, None)),
        ("LicenseRef-CreativeML-OpenRAIL-PP-M", ("openrail++", None, None)),
        (
            "LicenseRef-FLUX-1-dev-Non-Commercial",
            (
                "other",
                "flux-1-dev-non-commercial-license",
                "https://github.com/black-forest-labs/flux/blob/main/model_licenses/LICENSE-FLUX1-dev",
            ),
        ),
        ("LicenseRef-Studio-Internal", ("other", "studio-internal", None)),
        ("unknown", ("unknown", None, None)),
    ],
)
def test_hf_licences(license_id: str, expected: tuple[str, str | None, str | None]) -> None:
    found = hf_license(license_id)
    assert (found.license, found.name, found.link) == expected


def test_yaml_front_matter_keeps_awkward_values_as_strings() -> None:
    yaml = pytest.importorskip("yaml")
    fields: dict[str, str | list[str]] = {
        "instance_prompt": 'yes: "no"\n# not a comment',
        "tags": ["1.0", "null", "- x"],
    }
    text = yaml_front_matter(fields)
    assert text.startswith("---\n") and text.endswith("---\n")
    assert yaml.safe_load(text.strip().strip("-")) == fields


def _card(family: str, base: str | None) -> Card:
    return Card(
        name="x",
        version=1,
        content_digest="0" * 64,
        format="kohya",
        base_model=BaseModel(family=family, name=base),
        license=License(id="MIT"),
        creator=None,
    )


@pytest.mark.parametrize(
    ("family", "base", "label"),
    [
        ("sd1", None, "SD 1.5"),
        ("sd1", "CompVis/stable-diffusion-v1-4", "SD 1.4"),
        ("sdxl", None, "SDXL 1.0"),
        ("flux1", "black-forest-labs/FLUX.1-dev", "Flux.1 D"),
        ("flux1", None, None),  # dev or schnell? not said, so not written
        ("qwen-image", None, None),
    ],
)
def test_civitai_base_models(family: str, base: str | None, label: str | None) -> None:
    assert civitai_base_model(_card(family, base)) == label
