"""LyCORIS kinds in pipelines, exactly (issue 16, point 1): ``load``/``stack``/``apply_prompt``/switching give the
pipeline whose weights had ``w·ΔW`` added, checked against what ``lorahub bake`` writes into the same base (a
separate, streaming code path) at the weight level and the image level; ΔW itself is checked against LyCORIS' own
code in ``tests/adapters/test_lycoris_oracle.py``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import lorahub
from lorahub import Hub, errors
from lorahub.adapters.model import read_adapter
from lorahub.sdk.adding import AddOptions
from lorahub.sdk.patching import patched
from tests.sdk.lycoris_files import (
    FLUX_KINDS,
    SD1_EVERY_KIND,
    SDXL_KINDS,
    assert_same_weights,
    no_patches,
    write_flux_lycoris,
    write_lycoris,
)
from tests.sdk.pipes import image, make_adapter

pytest.importorskip("diffusers")
pytest.importorskip("peft")

SD1 = ("unet", "text_encoder")
LOKR_ATTENTION: Mapping[str, str] = {
    f"unet.{block}.transformer_blocks.0.{attn}.{proj}": "lokr"
    for block in ("down_blocks.0.attentions.0", "up_blocks.1.attentions.1")
    for attn in ("attn1", "attn2")
    for proj in ("to_q", "to_k", "to_v", "to_out.0")
}
LOHA_MIXED: Mapping[str, str] = {
    **{name.replace("lokr", "x"): "loha" for name in list(LOKR_ATTENTION)[:4]},
    "unet.down_blocks.0.resnets.0.conv1": "loha-tucker",
    "unet.up_blocks.1.resnets.0.conv2": "loha",
}


def _pipe(base: Path) -> Any:
    from diffusers import DiffusionPipeline

    return DiffusionPipeline.from_pretrained(base)


def _add(hub: Hub, path: Path, name: str) -> None:
    hub.add(path, AddOptions(name=name, license="MIT"))


def _baked(hub: Hub, base: Path, specs: list[str], out: Path) -> Any:
    hub.bake(base, specs, out)
    return _pipe(out)


@pytest.fixture
def sd1(tiny_bases: Mapping[str, Path]) -> Path:
    return tiny_bases["sd1"]


def test_every_kind_equals_the_baked_pipeline_and_the_weight_changes_and_unloads(
    hub: Hub, sd1: Path, tmp_path: Path
) -> None:
    pipe = _pipe(sd1)
    base_image = image(pipe, "sd1")
    write_lycoris(pipe, "sd1", tmp_path / "every.safetensors", SD1_EVERY_KIND, seed=1)
    _add(hub, tmp_path / "every.safetensors", "every")
    layers = read_adapter(tmp_path / "every.safetensors", family="sd1").layers.values()
    assert {layer.kind for layer in layers} == {"loha", "lokr", "full", "lora", "locon", "ia3", "oft", "boft", "glora"}
    assert {"hada_t1", "lokr_t2", "lokr_w1_a", "lokr_w2", "dora_scale"} <= {
        r for layer in layers for r in layer.tensors
    }
    baked = _baked(hub, sd1, ["every:0.7"], tmp_path / "baked")

    handle = lorahub.load("every", pipe, hub=hub, weight=0.7)
    assert set(patched(pipe)) == {handle.adapter_name} and set(handle.targets) == set(SD1)
    assert len(handle.targets["unet"]) + len(handle.targets["text_encoder"]) == len(SD1_EVERY_KIND)
    assert_same_weights(pipe, baked, SD1)
    ours = image(pipe, "sd1")
    np.testing.assert_allclose(ours, image(baked, "sd1"), atol=2e-5)
    assert np.abs(ours - base_image).max() > 1e-2

    handle.set_weight(0.0)
    np.testing.assert_allclose(image(pipe, "sd1"), base_image, atol=1e-6)
    handle.set_weight(0.7)
    np.testing.assert_allclose(image(pipe, "sd1"), ours, atol=1e-6)
    handle.unload()
    assert no_patches(pipe, SD1) and not patched(pipe) and not pipe._lorahub_weights
    np.testing.assert_allclose(image(pipe, "sd1"), base_image, atol=1e-6)


def test_a_stack_mixing_lora_lokr_and_loha_on_shared_layers_equals_their_bake(
    hub: Hub, sd1: Path, tmp_path: Path
) -> None:
    pipe = _pipe(sd1)
    _add(hub, make_adapter("sd1", tmp_path / "lora", seed=1, text_encoder=True), "lora")
    write_lycoris(pipe, "sd1", tmp_path / "lokr.safetensors", LOKR_ATTENTION, seed=2)
    write_lycoris(pipe, "sd1", tmp_path / "loha.safetensors", {**LOHA_MIXED, **dict(list(LOKR_ATTENTION.items())[:4])},
                  seed=3)  # fmt: skip
    _add(hub, tmp_path / "lokr.safetensors", "lokr")
    _add(hub, tmp_path / "loha.safetensors", "loha")
    specs = ["lora:0.6", "lokr:0.8", "loha:-0.5"]
    handles = lorahub.stack(pipe, specs, hub=hub)
    assert [h.weight for h in handles] == [0.6, 0.8, -0.5]
    assert set(patched(pipe)) == {handles[1].adapter_name, handles[2].adapter_name}
    assert handles[0].adapter_name in pipe.get_list_adapters()["unet"]  # the LoRA is PEFT's, on the same to_q
    baked = _baked(hub, sd1, specs, tmp_path / "baked")
    np.testing.assert_allclose(image(pipe, "sd1"), image(baked, "sd1"), atol=2e-5)

    handles[1].set_weight(0.0)
    handles[2].unload()
    handles[0].unload()
    assert list(patched(pipe)) == [handles[1].adapter_name]  # LoKr at weight 0 stays, on its own layers only
    assert np.array_equal(image(pipe, "sd1"), image(_pipe(sd1), "sd1"))
    handles[1].unload()
    assert no_patches(pipe, SD1) and not patched(pipe)


def test_switching_between_kinds_and_lora_matches_fresh_loads(hub: Hub, sd1: Path, tmp_path: Path) -> None:
    pipe = _pipe(sd1)
    write_lycoris(pipe, "sd1", tmp_path / "lokr.safetensors", LOKR_ATTENTION, seed=2)
    write_lycoris(pipe, "sd1", tmp_path / "loha.safetensors", LOHA_MIXED, seed=3)
    for name in ("lokr", "loha"):
        _add(hub, tmp_path / f"{name}.safetensors", name)
    _add(hub, make_adapter("sd1", tmp_path / "lora", seed=1), "lora")

    def fresh(name: str, weight: float) -> Any:
        other = _pipe(sd1)
        lorahub.load(name, other, hub=hub, weight=weight)
        return other

    handle = lorahub.load("lokr", pipe, hub=hub, weight=0.8)
    lorahub.load("loha", pipe, hub=hub, weight=0.6, replace=handle)
    assert handle.hotswapped and len(patched(pipe)) == 1
    assert_same_weights(pipe, fresh("loha", 0.6), SD1)
    lorahub.load("lora", pipe, hub=hub, weight=0.9, replace=handle)  # a LoRA into the slot: PEFT layers now
    assert not handle.hotswapped and not patched(pipe) and no_patches(pipe, SD1)
    np.testing.assert_allclose(image(pipe, "sd1"), image(fresh("lora", 0.9), "sd1"), atol=1e-6)
    lorahub.load("lokr", pipe, hub=hub, replace=handle)
    assert not any(pipe.get_list_adapters().values())
    assert_same_weights(pipe, fresh("lokr", 1.0), SD1)


def test_the_prompt_syntax_activates_exactly_the_prompts_adapters(hub: Hub, sd1: Path, tmp_path: Path) -> None:
    pipe = _pipe(sd1)
    base_image = image(pipe, "sd1")
    write_lycoris(pipe, "sd1", tmp_path / "lokr.safetensors", LOKR_ATTENTION, seed=2)
    _add(hub, tmp_path / "lokr.safetensors", "lokr")
    _add(hub, make_adapter("sd1", tmp_path / "lora", seed=1), "lora")
    lorahub.apply_prompt(pipe, "a cat <lora:lokr:0.5> <lora:lora:0.3>", hub=hub)
    reference = _pipe(sd1)
    lorahub.stack(reference, ["lokr:0.5", "lora:0.3"], hub=hub)
    np.testing.assert_allclose(image(pipe, "sd1"), image(reference, "sd1"), atol=1e-6)
    lorahub.apply_prompt(pipe, "a cat <lora:lora:0.3>", hub=hub)
    assert patched(pipe)  # the LoKr stays on its layers, inactive
    lorahub.apply_prompt(pipe, "a cat", hub=hub)
    np.testing.assert_allclose(image(pipe, "sd1"), base_image, atol=1e-6)


def test_a_module_that_does_not_fit_its_layer_is_refused_before_anything_is_applied(
    hub: Hub, sd1: Path, tmp_path: Path
) -> None:
    from lorahub.dev.example_lycoris import write_example_lycoris

    pipe = _pipe(sd1)
    write_example_lycoris(
        tmp_path / "wrong.safetensors",
        {
            "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q": (32, 32),
            "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k": (48, 32),
        },
        kind="lokr",
    )
    _add(hub, tmp_path / "wrong.safetensors", "wrong")
    with pytest.raises(errors.DeltaShapeError, match=r"attn1\.to_k"):
        lorahub.load("wrong", pipe, hub=hub)
    assert no_patches(pipe, SD1) and not patched(pipe)


def test_a_peft_dora_file_equals_diffusers_own_load_at_weight_one(hub: Hub, sd1: Path, tmp_path: Path) -> None:
    """A diffusers/PEFT file with ``lora_magnitude_vector`` (``use_dora``): PEFT's DoRA at weight 1 is the ΔW-fused
    pipeline, so diffusers' own load is an independent reference (at other weights PEFT re-normalises, lorahub
    scales ΔW, as bake does)."""
    path = make_adapter("sd1", tmp_path / "dora", seed=4, dora=True)
    _add(hub, path, "dora")
    pipe = _pipe(sd1)
    handle = lorahub.load("dora", pipe, hub=hub)
    assert patched(pipe) == {handle.adapter_name: patched(pipe)[handle.adapter_name]}
    reference = _pipe(sd1)
    reference.load_lora_weights(str(path), adapter_name="ref")
    np.testing.assert_allclose(image(pipe, "sd1"), image(reference, "sd1"), atol=2e-5)


def test_sdxl_every_kind_with_the_second_text_encoder_equals_the_baked_pipeline(
    hub: Hub, tiny_bases: Mapping[str, Path], tmp_path: Path
) -> None:
    base = tiny_bases["sdxl"]
    pipe = _pipe(base)
    write_lycoris(pipe, "sdxl", tmp_path / "xl.safetensors", SDXL_KINDS, seed=5)
    _add(hub, tmp_path / "xl.safetensors", "xl")
    baked = _baked(hub, base, ["xl:0.8"], tmp_path / "baked")
    handle = lorahub.load("xl", pipe, hub=hub, weight=0.8)
    assert set(handle.targets) == {"unet", "text_encoder_2"}
    assert_same_weights(pipe, baked, ("unet", "text_encoder", "text_encoder_2"))
    np.testing.assert_allclose(image(pipe, "sdxl"), image(baked, "sdxl"), atol=2e-5)


def test_flux_kinds_over_fused_modules_equal_the_baked_pipeline(
    hub: Hub, tiny_bases: Mapping[str, Path], tmp_path: Path
) -> None:
    """A LoKr over ``img_attn.qkv`` and a LoHa over ``linear1`` have no exact per-projection factors: their dense ΔW
    splits by rows exactly, and the patches apply it to ``to_q``/``to_k``/``to_v``/``proj_mlp``."""
    base = tiny_bases["flux1"]
    pipe = _pipe(base)
    write_flux_lycoris(pipe, tmp_path / "flux.safetensors", FLUX_KINDS, seed=6)
    _add(hub, tmp_path / "flux.safetensors", "flux")
    assert read_adapter(tmp_path / "flux.safetensors").unsplit  # what convert refuses without --lossy
    baked = _baked(hub, base, ["flux:0.7"], tmp_path / "baked")
    handle = lorahub.load("flux", pipe, hub=hub, weight=0.7)
    assert len(handle.targets["transformer"]) == 10
    assert_same_weights(pipe, baked, ("transformer",))
    np.testing.assert_allclose(image(pipe, "flux1"), image(baked, "flux1"), atol=2e-5)


def test_a_base_dependent_kind_over_a_fused_module_is_refused_with_its_reason(
    hub: Hub, tiny_bases: Mapping[str, Path], tmp_path: Path
) -> None:
    pipe = _pipe(tiny_bases["flux1"])
    write_flux_lycoris(pipe, tmp_path / "dora.safetensors", {"lora_unet_double_blocks_0_img_attn_qkv": "dora"})
    _add(hub, tmp_path / "dora.safetensors", "dora-qkv")
    with pytest.raises(errors.AdapterNotLoadableError, match=r"fused module.*img_attn"):
        lorahub.load("dora-qkv", pipe, hub=hub)
    assert no_patches(pipe, ("transformer",)) and not patched(pipe)


def test_lora_with_a_bias_delta_or_an_a1111_scale_is_applied_whole(hub: Hub, sd1: Path, tmp_path: Path) -> None:
    """PEFT's LoRA layers would drop a ``diff_b`` (ComfyUI's extraction) and an A1111 ``scale`` tensor, so such a
    LoRA goes through the ΔW patch, with both: the pipeline equals the baked one."""
    from lorahub.files.safetensors import write

    gen = np.random.default_rng(7)
    prefix = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0"
    tensors: dict[str, np.ndarray] = {}
    for module in ("attn2_to_out_0", "attn1_to_q"):
        tensors[f"{prefix}_{module}.lora_down.weight"] = gen.standard_normal((4, 32)) * 0.2
        tensors[f"{prefix}_{module}.lora_up.weight"] = gen.standard_normal((32, 4)) * 0.2
        tensors[f"{prefix}_{module}.alpha"] = np.array(4.0)
    tensors[f"{prefix}_attn2_to_out_0.diff_b"] = gen.standard_normal(32) * 0.1
    tensors[f"{prefix}_attn1_to_q.scale"] = np.array(2.5)
    write(tmp_path / "extras.safetensors", {
        key: ("F32", value.shape, value.astype(np.float32).tobytes()) for key, value in tensors.items()
    })  # fmt: skip
    _add(hub, tmp_path / "extras.safetensors", "extras")
    pipe = _pipe(sd1)
    handle = lorahub.load("extras", pipe, hub=hub, weight=0.9)
    assert set(patched(pipe)) == {handle.adapter_name}
    assert_same_weights(pipe, _baked(hub, sd1, ["extras:0.9"], tmp_path / "baked"), SD1)
