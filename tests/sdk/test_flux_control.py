"""BFL FLUX Control LoRAs (FLUX.1 Canny/Depth ``-lora``): LoRA factors with ``lora_B.bias``, QK-norm scales shipped
whole, and an ``img_in`` that takes the control latents beside the image latents. They convert exactly into the
layouts that hold those extras (diffusers, bfl-control), are refused with a hint by those that do not (kohya,
ComfyUI, PEFT), and load into a ``FluxControlPipeline`` as the pipeline whose weights were summed by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import lorahub
from lorahub import Hub, errors
from lorahub.adapters.convert import convert
from lorahub.adapters.model import read_adapter
from tests.sdk.pipes import tiny

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("peft")

RANK = 2


def _control_lora(path: Path, transformer: Any, *, seed: int = 0, norms: bool = True) -> Path:
    """A Control LoRA in BFL's layout shaped for ``transformer`` (the modules of BFL's FLUX.1-Depth-dev-lora but
    ``guidance_in``, which the tiny model has not): every LoRA with a bias, ``img_in`` twice as wide as the model's,
    and the QK-norm scales of every block."""
    config = transformer.config
    hidden, head = config.num_attention_heads * config.attention_head_dim, config.attention_head_dim
    rng = np.random.default_rng(seed)
    shapes = {  # module → (rows, columns)
        "img_in": (hidden, 2 * config.in_channels),
        "txt_in": (hidden, config.joint_attention_dim),
        "time_in.in_layer": (hidden, 256),
        "time_in.out_layer": (hidden, hidden),
        "vector_in.in_layer": (hidden, config.pooled_projection_dim),
        "vector_in.out_layer": (hidden, hidden),
        "final_layer.linear": (config.in_channels, hidden),
        "final_layer.adaLN_modulation.1": (2 * hidden, hidden),
    }
    scales = []
    for i in range(config.num_layers):
        for stream in ("img", "txt"):
            shapes[f"double_blocks.{i}.{stream}_attn.qkv"] = (3 * hidden, hidden)
            shapes[f"double_blocks.{i}.{stream}_attn.proj"] = (hidden, hidden)
            shapes[f"double_blocks.{i}.{stream}_mod.lin"] = (6 * hidden, hidden)
            shapes[f"double_blocks.{i}.{stream}_mlp.0"] = (4 * hidden, hidden)
            shapes[f"double_blocks.{i}.{stream}_mlp.2"] = (hidden, 4 * hidden)
            scales += [f"double_blocks.{i}.{stream}_attn.norm.{q}_norm.scale" for q in ("query", "key")]
    for i in range(config.num_single_layers):
        shapes[f"single_blocks.{i}.linear1"] = (7 * hidden, hidden)
        shapes[f"single_blocks.{i}.linear2"] = (hidden, 5 * hidden)
        shapes[f"single_blocks.{i}.modulation.lin"] = (3 * hidden, hidden)
        scales += [f"single_blocks.{i}.norm.{q}_norm.scale" for q in ("query", "key")]
    arrays: dict[str, np.ndarray] = {}
    for module, (rows, columns) in shapes.items():
        arrays[f"{module}.lora_A.weight"] = rng.standard_normal((RANK, columns))
        arrays[f"{module}.lora_B.weight"] = 0.3 * rng.standard_normal((rows, RANK))
        arrays[f"{module}.lora_B.bias"] = 0.1 * rng.standard_normal(rows)
    for key in scales if norms else ():
        arrays[key] = 1 + 0.3 * rng.standard_normal(head)
    save_file({k: torch.from_numpy(v.astype(np.float32)) for k, v in arrays.items()}, str(path))
    return path


def _control_pipe() -> Any:
    parts = {k: v for k, v in tiny("flux1").components.items() if k not in ("image_encoder", "feature_extractor")}
    return diffusers.FluxControlPipeline(**parts)


def _image(pipe: Any) -> np.ndarray:
    from PIL import Image

    control = np.full((64, 64, 3), 128, dtype=np.uint8)
    control[:32] = 230
    generator = torch.Generator("cpu").manual_seed(0)
    result = pipe(
        "a photo of sks cat", control_image=Image.fromarray(control), generator=generator, output_type="np",
        num_inference_steps=2, height=64, width=64, guidance_scale=3.5, max_sequence_length=16,
    )  # fmt: skip
    return np.asarray(result.images[0], dtype=np.float64)


def _summed_by_hand(path: Path, weight: float) -> Any:
    """The tiny control pipeline whose transformer had ``weight``·ΔW added to each layer, its x_embedder widened
    with zero columns first and its QK norms moved ``weight`` of the way to the file's scales."""
    pipe = _control_pipe()
    transformer = pipe.transformer
    adapter = read_adapter(path)
    old = transformer.x_embedder
    wider = torch.nn.Linear(2 * old.in_features, old.out_features)
    with torch.no_grad():
        wider.weight.zero_()
        wider.weight[:, : old.in_features] = old.weight
        wider.bias.copy_(old.bias)
    transformer.x_embedder = wider
    transformer.register_to_config(in_channels=2 * old.in_features)
    with torch.no_grad():
        for name, layer in adapter.layers.items():
            module = transformer.get_submodule(name.removeprefix("transformer."))
            if layer.kind == "set":
                target = torch.from_numpy(layer.tensors["set_weight"])
                module.weight.add_(weight * (target - module.weight))
                continue
            up, down = torch.from_numpy(layer.tensors["up"]), torch.from_numpy(layer.tensors["down"])
            module.weight.add_(weight * layer.scale * (up @ down))
            module.bias.add_(weight * layer.scale * torch.from_numpy(layer.tensors["up_bias"]))
    return pipe


def test_bfl_names_norms_and_biases_map_to_the_diffusers_model(tmp_path: Path) -> None:
    transformer = tiny("flux1").transformer
    path = _control_lora(tmp_path / "control.safetensors", transformer)
    adapter = read_adapter(path)
    assert (adapter.family, adapter.source_format, adapter.unmapped, adapter.unsplit) == (
        "flux1",
        "bfl-control",
        [],
        [],
    )
    norms = {name for name, layer in adapter.layers.items() if layer.kind == "set"}
    assert norms == {
        "transformer.transformer_blocks.0.attn.norm_q", "transformer.transformer_blocks.0.attn.norm_k",
        "transformer.transformer_blocks.0.attn.norm_added_q", "transformer.transformer_blocks.0.attn.norm_added_k",
        "transformer.single_transformer_blocks.0.attn.norm_q", "transformer.single_transformer_blocks.0.attn.norm_k",
    }  # fmt: skip
    modules = dict(transformer.named_modules())
    assert all(name.removeprefix("transformer.") in modules for name in adapter.layers)


@pytest.mark.parametrize("target", ["diffusers", "bfl-control"])
def test_control_lora_converts_exactly_to_and_fro(tmp_path: Path, target: str) -> None:
    path = _control_lora(tmp_path / "control.safetensors", tiny("flux1").transformer)
    out, back = tmp_path / f"out-{target}.safetensors", tmp_path / "back.safetensors"
    report = convert(path, out, to=target)  # type: ignore[arg-type]
    assert report.max_abs_error <= 1e-6 and report.modules == len(read_adapter(path).layers)
    assert convert(out, back, to="bfl-control").max_abs_error <= 1e-6
    original, returned = read_adapter(path), read_adapter(back)
    assert sorted(original.layers) == sorted(returned.layers)
    for name, layer in original.layers.items():
        np.testing.assert_allclose(returned.layers[name].tensors["set_weight" if layer.kind == "set" else "up"],
                                   layer.tensors["set_weight" if layer.kind == "set" else "up"], atol=1e-6)  # fmt: skip


@pytest.mark.parametrize(("target", "missing"), [
    ("kohya", "LoRA biases (lora_B.bias) and whole QK-norm weights"),
    ("comfyui", "LoRA biases (lora_B.bias) and whole QK-norm weights"),
    ("peft", "whole QK-norm weights"),
])  # fmt: skip
def test_layouts_without_the_extras_refuse_with_a_hint(tmp_path: Path, target: str, missing: str) -> None:
    path = _control_lora(tmp_path / "control.safetensors", tiny("flux1").transformer)
    out = tmp_path / "out"
    with pytest.raises(errors.ConversionRefusedError) as refused:
        convert(path, out, to=target)  # type: ignore[arg-type]
    assert missing in (refused.value.hint or "") and "--to diffusers or --to bfl-control" in (refused.value.hint or "")
    assert not out.exists()


def test_control_lora_loads_as_its_weights_summed_by_hand(hub: Hub, tmp_path: Path) -> None:
    pipe = _control_pipe()
    path = _control_lora(tmp_path / "control.safetensors", pipe.transformer)
    handle = lorahub.load(path, pipe, weight=0.7, hub=hub, verify=False)
    assert pipe.transformer.config.in_channels == 2 * 16 and pipe.transformer.x_embedder.in_features == 32
    ours = _image(pipe)
    np.testing.assert_allclose(ours, _image(_summed_by_hand(path, 0.7)), atol=1e-5)
    handle.set_weight(1.0)
    full = _image(pipe)
    np.testing.assert_allclose(full, _image(_summed_by_hand(path, 1.0)), atol=1e-5)
    assert np.abs(full - ours).max() > 1e-3


def test_diffusers_loads_the_converted_file_as_the_bfl_one(hub: Hub, tmp_path: Path) -> None:
    """diffusers' own loader of our diffusers-layout output equals lorahub's load of the BFL file at weight 1 (where
    diffusers' whole-norm replacement and lorahub's ``W + w·(S − W)`` agree)."""
    pipe = _control_pipe()
    path = _control_lora(tmp_path / "control.safetensors", pipe.transformer)
    convert(path, tmp_path / "diffusers.safetensors", to="diffusers")
    lorahub.load(path, pipe, hub=hub, verify=False)
    reference = _control_pipe()
    reference.load_lora_weights(str(tmp_path / "diffusers.safetensors"), adapter_name="ref")
    np.testing.assert_allclose(_image(pipe), _image(reference), atol=1e-5)


def test_a_plain_flux_pipeline_is_refused_and_left_as_it_was(hub: Hub, tmp_path: Path) -> None:
    pipe = tiny("flux1")
    path = _control_lora(tmp_path / "control.safetensors", pipe.transformer)
    with pytest.raises(errors.AdapterNotLoadableError) as refused:
        lorahub.load(path, pipe, hub=hub, verify=False)
    assert "FluxControlPipeline" in (refused.value.hint or "")
    assert pipe.transformer.x_embedder.in_features == pipe.transformer.config.in_channels == 16


def test_peft_holds_the_biases_of_a_lora_without_norms(tmp_path: Path) -> None:
    """PEFT's ``lora_bias``: every layer of the folder gets a ``lora_B.bias``, which PEFT itself loads back (into
    the transformer with its x_embedder widened, as a Control LoRA needs)."""
    from peft import PeftModel

    from lorahub.sdk.patching import widen

    transformer = tiny("flux1").transformer
    path = _control_lora(tmp_path / "biased.safetensors", transformer, norms=False)
    assert convert(path, tmp_path / "peft", to="peft").max_abs_error <= 1e-6
    widen(transformer, "x_embedder", 2 * transformer.config.in_channels)
    model = PeftModel.from_pretrained(transformer, str(tmp_path / "peft"))
    layer = model.base_model.model.transformer_blocks[0].attn.to_q
    expected = read_adapter(path).layers["transformer.transformer_blocks.0.attn.to_q"].tensors["up_bias"]
    np.testing.assert_allclose(layer.lora_B["default"].bias.detach().numpy(), expected, atol=1e-6)
