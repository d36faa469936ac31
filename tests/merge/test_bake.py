"""Baking adapters into a tiny SD1 base: the same tensors and image as diffusers' own load + fuse, every refusal
writes nothing, dtypes survive, the output names its base and adapters."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
from safetensors.torch import load_file, save_file

from lorahub import Hub, errors
from lorahub.adapters.delta import delta_weight
from lorahub.adapters.model import read_adapter
from lorahub.adapters.names import from_canonical
from lorahub.files.safetensors import read_header
from lorahub.merge import bake
from lorahub.merge.bake import BAKE_METADATA_KEY
from lorahub.merge.layouts import detect_layout, unet_spec_from_diffusers, unet_spec_from_sgm
from lorahub.sdk.adding import AddOptions
from tests.merge import tiny

WEIGHTS = (0.7, -0.4)
LDM_TE = "cond_stage_model.transformer."


class Base:
    """The tiny pipeline saved as diffusers files and as an LDM single file, two kohya adapters, and the pipeline
    with both adapters fused by diffusers (the reference)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        pipe = tiny.pipeline()
        pipe.save_pretrained(root / "pipe")
        self.unet = root / "pipe" / "unet" / "diffusion_pytorch_model.safetensors"
        self.text_encoder = root / "pipe" / "text_encoder" / "model.safetensors"
        self.ldm = root / "sd1.safetensors"
        save_file(tiny.ldm_state_dict(pipe), str(self.ldm))
        self.adapters = [
            tiny.kohya_adapter(pipe, root / "a.safetensors", seed=1),
            tiny.kohya_adapter(pipe, root / "b.safetensors", seed=2, rank=2, alpha=1.0),
        ]
        self.config = dict(pipe.unet.config)
        self.pipe = pipe

    def fresh(self) -> Any:
        from diffusers import StableDiffusionPipeline

        return StableDiffusionPipeline.from_pretrained(self.root / "pipe", safety_checker=None)

    def fused(self) -> Any:
        pipe = self.fresh()
        for name, path in zip(("style", "ink"), self.adapters, strict=True):
            pipe.load_lora_weights(str(path), adapter_name=name)
        pipe.set_adapters(["style", "ink"], adapter_weights=list(WEIGHTS))
        pipe.fuse_lora(components=["unet", "text_encoder"], adapter_names=["style", "ink"])
        pipe.unload_lora_weights()
        return pipe

    def read(self) -> list[tuple[Any, float]]:
        return [(read_adapter(p), w) for p, w in zip(self.adapters, WEIGHTS, strict=True)]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    return Base(tmp_path_factory.mktemp("bake"))


@pytest.fixture(scope="module")
def fused(base: Base) -> Any:
    return base.fused()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12))


def _assert_close(baked: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert set(baked) == set(expected)
    worst = max(_rel(baked[k], expected[k]) for k in expected)
    assert worst <= 1e-5, worst


def _te_state(model: Any) -> dict[str, torch.Tensor]:
    return {k.removeprefix("text_model."): v for k, v in model.state_dict().items()}


def _no_output(out: Path) -> None:
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.*"))  # no temporary file left behind


def test_ldm_names_agree_with_diffusers_converter(base: Base) -> None:
    """The test's LDM file is what diffusers reads back as this UNet, and both layouts give the same geometry."""
    ldm = load_file(str(base.ldm))
    back = convert_ldm_unet_checkpoint(ldm, base.config)
    original = base.pipe.unet.state_dict()
    assert set(back) == set(original)
    assert all(torch.equal(back[k], original[k]) for k in original)
    ldm_header, unet_header = read_header(base.ldm), read_header(base.unet)
    assert unet_spec_from_sgm(ldm_header.tensors, "model.diffusion_model.") == unet_spec_from_diffusers(
        unet_header.tensors
    )
    assert detect_layout(ldm_header.tensors, base.ldm).families == {"sd1"}
    assert detect_layout(unet_header.tensors, base.unet).name == "diffusers-unet"


def test_diffusers_files_equal_fused_pipeline_tensors_and_image(base: Base, fused: Any, tmp_path: Path) -> None:
    adapters = base.read()
    unet_out, te_out = tmp_path / "unet.safetensors", tmp_path / "te.safetensors"
    report = bake(base.unet, adapters, unet_out, components=["unet"])
    assert report.layout == "diffusers-unet" and report.family == "sd1"
    assert report.layers == 2 * len(tiny.UNET_TARGETS) and len(report.skipped_layers) == 2 * len(tiny.TE_TARGETS)
    bake(base.text_encoder, adapters, te_out, components=["text_encoder"])
    baked_unet, baked_te = load_file(str(unet_out)), load_file(str(te_out))
    _assert_close(baked_unet, fused.unet.state_dict())
    _assert_close({k.removeprefix("text_model."): v for k, v in baked_te.items()}, _te_state(fused.text_encoder))
    pipe = base.fresh()
    pipe.unet.load_state_dict(baked_unet)
    pipe.text_encoder.load_state_dict(baked_te)
    np.testing.assert_allclose(tiny.image(pipe), tiny.image(fused), atol=1e-4)
    assert np.abs(tiny.image(pipe) - tiny.image(base.fresh())).max() > 1e-3  # the adapters do change the image


@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_ldm_single_file_equals_fused_pipeline(base: Base, fused: Any, tmp_path: Path, engine: Any) -> None:
    out = tmp_path / "baked.safetensors"
    report = bake(base.ldm, base.read(), out, engine=engine)
    assert report.engine == engine
    assert report.layout == "ldm" and report.layers == 2 * (len(tiny.UNET_TARGETS) + len(tiny.TE_TARGETS))
    baked = load_file(str(out))
    _assert_close(convert_ldm_unet_checkpoint(baked, base.config), fused.unet.state_dict())
    text = {k.removeprefix(LDM_TE + "text_model."): v for k, v in baked.items() if k.startswith(LDM_TE)}
    _assert_close(text, _te_state(fused.text_encoder))


def test_metadata_names_base_digest_and_adapters(base: Base, tmp_path: Path) -> None:
    out = tmp_path / "baked.safetensors"
    report = bake(base.ldm, base.read(), out)
    record = json.loads(read_header(out).metadata[BAKE_METADATA_KEY])
    base_sha256 = hashlib.sha256(base.ldm.read_bytes()).hexdigest()
    assert record["base"] == {"file": base.ldm.name, "sha256": base_sha256, "layout": "ldm"}
    assert report.base_sha256 == base_sha256
    assert report.output_sha256 == hashlib.sha256(out.read_bytes()).hexdigest()
    assert [a["weight"] for a in record["adapters"]] == list(WEIGHTS)
    assert [a["layers"] for a in record["adapters"]] == [len(tiny.UNET_TARGETS) + len(tiny.TE_TARGETS)] * 2


@pytest.mark.parametrize("engine", ["numpy", "torch"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dtype_preserved_and_rounded_like_torch(base: Base, tmp_path: Path, dtype: torch.dtype, engine: Any) -> None:
    state = {k: v.to(dtype) for k, v in load_file(str(base.unet)).items()}
    low = tmp_path / "unet" / "diffusion_pytorch_model.safetensors"
    low.parent.mkdir()
    save_file(state, str(low))
    fp32_out, out = tmp_path / "fp32.safetensors", tmp_path / "baked.safetensors"
    adapters = base.read()
    bake(low, adapters, out, components=["unet"], engine=engine)
    # the fp32 reference: the same low-precision base, widened, baked in fp32
    wide = tmp_path / "wide" / "unet" / "diffusion_pytorch_model.safetensors"
    wide.parent.mkdir(parents=True)
    save_file({k: v.float() for k, v in state.items()}, str(wide))
    bake(wide, adapters, fp32_out, components=["unet"], engine=engine)
    baked, reference = load_file(str(out)), load_file(str(fp32_out))
    assert {k: v.dtype for k, v in baked.items()} == {k: dtype for k in state}
    for key, value in baked.items():
        assert torch.equal(value, reference[key].to(dtype)), key  # round-to-nearest-even, as torch narrows
    unchanged = [k for k in state if torch.equal(reference[k], state[k].float())]
    assert unchanged and all(torch.equal(baked[k], state[k]) for k in unchanged)


def test_unmatched_layer_is_an_error_and_writes_nothing(base: Base, tmp_path: Path) -> None:
    # down_blocks.1 has attention in SD 1.5 (so the name maps) but not in the tiny UNet (so no tensor matches)
    extra = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    path = tiny.kohya_adapter(
        base.pipe,
        tmp_path / "extra.safetensors",
        extra={
            f"{extra}.lora_down.weight": np.zeros((4, 64), np.float32),
            f"{extra}.lora_up.weight": np.zeros((64, 4), np.float32),
        },
    )
    out = tmp_path / "out.safetensors"
    with pytest.raises(errors.UnmatchedLayersError, match=re.escape("down_blocks.1.attentions.0")) as caught:
        bake(base.ldm, [(read_adapter(path), 1.0)], out)
    assert "1 adapter layer(s)" in caught.value.message
    _no_output(out)
    with pytest.raises(errors.UnmatchedLayersError, match="text_encoder"):  # a UNet file has no text encoder
        bake(base.unet, base.read(), out)
    _no_output(out)


def test_family_mismatch_is_an_error_and_writes_nothing(base: Base, tmp_path: Path) -> None:
    name = from_canonical("sdxl", "kohya", "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q")
    path = tmp_path / "sdxl.safetensors"
    save_file(
        {f"{name}.lora_down.weight": torch.zeros(4, 640), f"{name}.lora_up.weight": torch.zeros(640, 4)},
        str(path),
        metadata={"ss_base_model_version": "sdxl_base_v1-0"},
    )
    adapter = read_adapter(path, family="sdxl")
    out = tmp_path / "out.safetensors"
    with pytest.raises(errors.FamilyMismatchError, match="sdxl"):
        bake(base.ldm, [(adapter, 1.0)], out)
    _no_output(out)


def test_other_kinds_go_through_delta_with_the_base_weight(base: Base, tmp_path: Path) -> None:
    """LoHa, a full diff with a bias diff, and DoRA (which needs the base weight): W + w·ΔW as delta.py computes it."""
    rng = np.random.default_rng(5)
    unet = {k: v.numpy() for k, v in load_file(str(base.unet)).items()}
    block = "down_blocks.0.attentions.0.transformer_blocks.0"
    loha, full, dora = f"{block}.attn1.to_q", f"{block}.ff.net.2", f"{block}.attn2.to_v"
    q, ff, v = unet[f"{loha}.weight"], unet[f"{full}.weight"], unet[f"{dora}.weight"]

    def r(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    kohya = {name: f"lora_unet_{name.replace('.', '_')}" for name in (loha, full, dora)}
    tensors = {
        **{f"{kohya[loha]}.hada_w{n}_a": r(q.shape[0], 2) for n in (1, 2)},
        **{f"{kohya[loha]}.hada_w{n}_b": r(2, q.shape[1]) for n in (1, 2)},
        f"{kohya[loha]}.alpha": np.array(1.0, np.float32),
        f"{kohya[full]}.diff": r(*ff.shape),
        f"{kohya[full]}.diff_b": r(ff.shape[0]),
        f"{kohya[dora]}.lora_down.weight": r(4, v.shape[1]),
        f"{kohya[dora]}.lora_up.weight": r(v.shape[0], 4),
        f"{kohya[dora]}.alpha": np.array(4.0, np.float32),
        f"{kohya[dora]}.dora_scale": (np.abs(r(v.shape[0], 1)) + 1).astype(np.float32),
    }
    path = tmp_path / "lycoris.safetensors"
    save_file({k: torch.from_numpy(a) for k, a in tensors.items()}, str(path))
    adapter = read_adapter(path, family="sd1")
    assert {layer.kind for layer in adapter.layers.values()} == {"loha", "full", "lora"}
    out = tmp_path / "baked.safetensors"
    bake(base.unet, [(adapter, 0.5)], out)
    baked = {k: v.numpy() for k, v in load_file(str(out)).items()}
    for name, base_weight in ((loha, q), (full, ff), (dora, v)):
        layer = adapter.layers[f"unet.{name}"]
        delta = delta_weight(layer.tensors, alpha=layer.alpha, base=base_weight)
        np.testing.assert_allclose(baked[f"{name}.weight"], base_weight + 0.5 * delta.weight, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        baked[f"{full}.bias"], unet[f"{full}.bias"] + 0.5 * tensors[f"{kohya[full]}.diff_b"], rtol=1e-6, atol=1e-7
    )
    untouched = [k for k in unet if not k.startswith((loha, full, dora))]
    assert all(np.array_equal(baked[k], unet[k]) for k in untouched)


# --- through the Hub: licences, verification, audit ---------------------------------------------------------------


def _add(hub: Hub, path: Path, name: str, license_id: str | None) -> None:
    hub.add(path, AddOptions(name=name, license=license_id, commercial_use=["image"] if license_id else None))


def test_hub_bake_records_and_audits(hub: Hub, base: Base, tmp_path: Path) -> None:
    _add(hub, base.adapters[0], "style", "MIT")
    _add(hub, base.adapters[1], "ink", "MIT")
    out = tmp_path / "baked.safetensors"
    result = hub.bake(base.ldm, [f"style:{WEIGHTS[0]}", f"ink@1:{WEIGHTS[1]}"], out)
    assert result.license.verdict in ("allowed", "allowed-with-obligations")
    record = json.loads(read_header(out).metadata[BAKE_METADATA_KEY])
    style, ink = hub.version("style"), hub.version("ink")
    assert [(a["name"], a["version"], a["content_digest"], a["weight"]) for a in record["adapters"]] == [
        ("style", 1, style.content_digest, WEIGHTS[0]),
        ("ink", 1, ink.content_digest, WEIGHTS[1]),
    ]
    events = [e for e in hub.audit() if e["action"] == "bake"]
    assert len(events) == 1
    details = events[0]["details"]
    assert details["output_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert details["base_sha256"] == hashlib.sha256(base.ldm.read_bytes()).hexdigest()
    (baked,) = hub.lineage("style").baked_into  # the lineage names the file each adapter was baked into
    assert baked["output"] == str(out) and baked["sha256"] == details["output_sha256"]
    assert details["accepted_uncertain"] is False
    assert hub.verify_audit() == []


def test_hub_bake_licence_refusal_writes_nothing(hub: Hub, base: Base, tmp_path: Path) -> None:
    _add(hub, base.adapters[0], "style", "CC-BY-NC-4.0")
    out = tmp_path / "baked.safetensors"
    with pytest.raises(errors.LicenseForbiddenError):
        hub.bake(base.ldm, ["style:0.5"], out, use="commercial")
    _no_output(out)
    assert not [e for e in hub.audit() if e["action"] == "bake"]


def test_hub_bake_uncertain_needs_acceptance_which_is_audited(hub: Hub, base: Base, tmp_path: Path) -> None:
    _add(hub, base.adapters[0], "style", None)  # no licence: the engine cannot say
    out = tmp_path / "baked.safetensors"
    with pytest.raises(errors.LicenseUncertainError):
        hub.bake(base.ldm, ["style"], out)
    _no_output(out)
    result = hub.bake(base.ldm, ["style"], out, accept_uncertain=True)
    assert result.accepted_uncertain and out.exists()
    (event,) = [e for e in hub.audit() if e["action"] == "bake"]
    assert event["details"]["accepted_uncertain"] is True and event["details"]["license"] == "uncertain"


def test_hub_bake_refuses_a_tampered_blob(hub: Hub, base: Base, tmp_path: Path) -> None:
    _add(hub, base.adapters[0], "style", "MIT")
    blob = hub.blobs.path_for(hub.version("style").blob_sha256)
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[-3] ^= 0xFF  # a byte inside the last tensor
    blob.write_bytes(bytes(data))
    out = tmp_path / "baked.safetensors"
    with pytest.raises(errors.VerificationFailedError):
        hub.bake(base.ldm, ["style"], out)
    _no_output(out)
