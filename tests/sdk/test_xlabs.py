"""XLabs FLUX LoRAs (``double_blocks.N.processor.qkv_lora1.down.weight``): read into the canonical layers diffusers'
own XLabs converter gives, converted exactly, and loaded into a FLUX pipeline as diffusers loads them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import lorahub
from lorahub import Hub
from lorahub.adapters.convert import convert
from lorahub.adapters.model import read_adapter
from lorahub.sdk.adding import AddOptions
from tests.sdk.pipes import image, tiny

pytest.importorskip("diffusers")
pytest.importorskip("peft")


def _xlabs(path: Path, transformer: Any, *, rank: int = 2, seed: int = 3) -> Path:
    """Every processor LoRA XLabs writes, shaped for ``transformer``: double blocks' qkv/proj for both streams,
    single blocks' qkv (linear1's q, k, v rows) and proj (linear2)."""
    rng = np.random.default_rng(seed)
    hidden = transformer.config.num_attention_heads * transformer.config.attention_head_dim
    shapes = {}  # module → (rows, columns)
    for i in range(transformer.config.num_layers):
        for stream in ("1", "2"):
            shapes[f"double_blocks.{i}.processor.qkv_lora{stream}"] = (3 * hidden, hidden)
            shapes[f"double_blocks.{i}.processor.proj_lora{stream}"] = (hidden, hidden)
    for i in range(transformer.config.num_single_layers):
        shapes[f"single_blocks.{i}.processor.qkv_lora"] = (3 * hidden, hidden)
        shapes[f"single_blocks.{i}.processor.proj_lora"] = (hidden, 5 * hidden)  # linear2 reads attention + 4× MLP
    tensors = {}
    for module, (rows, columns) in shapes.items():
        tensors[f"{module}.down.weight"] = torch.from_numpy(rng.standard_normal((rank, columns)).astype(np.float32))
        tensors[f"{module}.up.weight"] = torch.from_numpy(0.3 * rng.standard_normal((rows, rank)).astype(np.float32))
    save_file(tensors, str(path))
    return path


def test_xlabs_layers_are_those_of_diffusers_converter(tmp_path: Path) -> None:
    from diffusers.loaders.lora_conversion_utils import _convert_xlabs_flux_lora_to_diffusers

    path = _xlabs(tmp_path / "xlabs.safetensors", tiny("flux1").transformer)
    reference = _convert_xlabs_flux_lora_to_diffusers(load_file(str(path)))
    expected = {
        key.removesuffix(".lora_A.weight"): (reference[key.replace("lora_A", "lora_B")] @ reference[key]).numpy()
        for key in reference
        if key.endswith(".lora_A.weight")
    }
    adapter = read_adapter(path)
    assert adapter.family == "flux1" and sorted(adapter.layers) == sorted(expected)
    for name, layer in adapter.layers.items():
        np.testing.assert_allclose(layer.delta().weight, expected[name], rtol=1e-6, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("target", ["diffusers", "kohya", "peft"])
def test_xlabs_converts_exactly(tmp_path: Path, target: str) -> None:
    path = _xlabs(tmp_path / "xlabs.safetensors", tiny("flux1").transformer)
    out = tmp_path / ("out" if target == "peft" else "out.safetensors")
    report = convert(path, out, to=target)  # type: ignore[arg-type]
    assert report.max_abs_error <= 1e-6
    original = read_adapter(path)
    converted = read_adapter(out if target != "peft" else out / "adapter_model.safetensors", family="flux1")
    for name, layer in original.layers.items():
        np.testing.assert_allclose(converted.layers[name].delta().weight, layer.delta().weight, atol=1e-6)
    for name in set(converted.layers) - set(original.layers):  # kohya fuses q, k, v into linear1 with its MLP rows
        assert name.endswith("proj_mlp") and not converted.layers[name].delta().weight.any()


def test_xlabs_loads_as_diffusers_loads_it(hub: Hub, tmp_path: Path) -> None:
    pipe = tiny("flux1")
    path = _xlabs(tmp_path / "xlabs.safetensors", pipe.transformer)
    hub.add(path, AddOptions(name="xlabs-style", license="MIT"))
    base = image(pipe, "flux1")
    handle = lorahub.load("xlabs-style", pipe, weight=0.8, hub=hub)
    ours = image(pipe, "flux1")
    reference = tiny("flux1")
    reference.load_lora_weights(str(path), adapter_name="ref")
    reference.set_adapters(["ref"], adapter_weights=[0.8])
    np.testing.assert_allclose(ours, image(reference, "flux1"), atol=1e-5)
    assert np.abs(ours - base).max() > 1e-3
    handle.unload()
    np.testing.assert_allclose(image(pipe, "flux1"), base, atol=1e-5)
