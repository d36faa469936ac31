"""What the FLUX.2 and Qwen-Image tests check alike: an adapter saved by diffusers from PEFT layers on a tiny
transformer, loaded by lorahub (from the kohya layout) as the transformer whose weights were summed by hand and as
diffusers' own load, on the transformer and on the whole tiny pipeline, and baked into a diffusers transformer file.
Each test module describes its family with a :class:`DitFamily`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import lorahub
from lorahub import Hub
from lorahub.adapters.convert import convert
from lorahub.adapters.model import read_adapter


@dataclass(frozen=True)
class DitFamily:
    family: str
    """lorahub's family name, also ``lorahub dev tiny-pipeline --family``'s."""
    pipeline: Any
    """The diffusers pipeline class (its ``save_lora_weights`` writes the reference file)."""
    transformer: Callable[[], Any]
    """A fresh tiny transformer, the same weights each call."""
    targets: Sequence[str]
    forward: Callable[[Any], np.ndarray]
    """The transformer's output on fixed inputs, as float64."""

    def pipe(self) -> Any:
        """The pipeline around a fresh tiny transformer, without text encoder or VAE."""
        return self.pipeline(
            scheduler=_module("diffusers").FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None,
            tokenizer=None, transformer=self.transformer(),
        )  # fmt: skip

    def diffusers_lora(self, folder: Path, *, seed: int = 1, transformer: Any = None) -> Path:
        """A LoRA saved by diffusers' own ``save_lora_weights`` from PEFT layers (alpha ≠ rank)."""
        from peft import LoraConfig
        from peft.utils import get_peft_model_state_dict

        transformer = transformer if transformer is not None else self.transformer()
        torch.manual_seed(seed)
        config = LoraConfig(r=4, lora_alpha=8, target_modules=list(self.targets), init_lora_weights=False)
        transformer.add_adapter(config, "x")
        with torch.no_grad():
            for name, param in transformer.named_parameters():
                if "lora_B" in name:
                    param.mul_(0.2)
        self.pipeline.save_lora_weights(
            folder, transformer_lora_layers=get_peft_model_state_dict(transformer, adapter_name="x"),
            transformer_lora_adapter_metadata=transformer.peft_config["x"].to_dict(),
        )  # fmt: skip
        return folder / "pytorch_lora_weights.safetensors"


def _module(name: str) -> Any:
    import importlib

    return importlib.import_module(name)


def check_load_as_summed_by_hand(dit: DitFamily, hub: Hub, tmp_path: Path) -> None:
    """The kohya-layout file loaded at weight 0.6 gives the transformer with W + 0.6·ΔW, and diffusers' own load of
    the original file; unloading gives the base back."""
    source = dit.diffusers_lora(tmp_path / "src")
    kohya = tmp_path / "kohya.safetensors"
    convert(source, kohya, to="kohya")
    pipe = dit.pipe()
    base = dit.forward(pipe.transformer)
    handle = lorahub.load(kohya, pipe, weight=0.6, hub=hub, verify=False)
    ours = dit.forward(pipe.transformer)
    summed = dit.transformer()
    with torch.no_grad():
        for name, layer in read_adapter(source).layers.items():
            module = summed.get_submodule(name.removeprefix("transformer."))
            module.weight.add_(0.6 * torch.from_numpy(layer.delta().weight.astype(np.float32)))
    np.testing.assert_allclose(ours, dit.forward(summed), atol=1e-5)
    assert np.abs(ours - base).max() > 1e-3
    reference = dit.pipe()
    reference.load_lora_weights(str(source), adapter_name="ref")
    reference.set_adapters(["ref"], adapter_weights=[0.6])
    np.testing.assert_allclose(ours, dit.forward(reference.transformer), atol=1e-5)
    handle.unload()
    np.testing.assert_allclose(dit.forward(pipe.transformer), base, atol=1e-6)


def check_the_tiny_pipeline_generates_as_with_diffusers_own_load(dit: DitFamily, hub: Hub, tmp_path: Path) -> None:
    """Image level, on ``lorahub dev tiny-pipeline --family FAMILY`` (text encoder included)."""
    from lorahub.dev.tiny_pipeline import CALL_KWARGS, build_tiny_pipeline

    def image(pipe: Any) -> np.ndarray:
        generator = torch.Generator("cpu").manual_seed(0)
        result = pipe(prompt="a photo of sks cat", num_inference_steps=2, height=64, width=64, output_type="np",
                      generator=generator, **CALL_KWARGS[dit.family])  # fmt: skip
        return np.asarray(result.images[0], dtype=np.float64)

    pipe = build_tiny_pipeline(dit.family)
    source = dit.diffusers_lora(tmp_path / "src", transformer=build_tiny_pipeline(dit.family).transformer)
    kohya = tmp_path / "kohya.safetensors"
    convert(source, kohya, to="kohya")
    base = image(pipe)
    lorahub.load(kohya, pipe, weight=0.8, hub=hub, verify=False)
    reference = build_tiny_pipeline(dit.family)
    reference.load_lora_weights(str(source), adapter_name="ref")
    reference.set_adapters(["ref"], adapter_weights=[0.8])
    ours = image(pipe)
    np.testing.assert_allclose(ours, image(reference), atol=1e-5)
    assert np.abs(ours - base).max() > 1e-3


def check_bakes_into_a_diffusers_transformer_file(dit: DitFamily, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from lorahub.merge.bake import bake

    state = {k: v.detach().clone().contiguous() for k, v in dit.transformer().state_dict().items()}
    base = tmp_path / "transformer" / "diffusion_pytorch_model.safetensors"
    base.parent.mkdir()
    save_file(state, str(base))
    adapter = read_adapter(dit.diffusers_lora(tmp_path / "src"))
    bake(base, [(adapter, 0.5)], tmp_path / "baked.safetensors", components=["transformer"])
    baked = load_file(str(tmp_path / "baked.safetensors"))
    for name, layer in adapter.layers.items():
        key = f"{name.removeprefix('transformer.')}.weight"
        expected = state[key].numpy() + 0.5 * layer.delta().weight
        np.testing.assert_allclose(baked[key].numpy(), expected, rtol=1e-5, atol=1e-6, err_msg=key)
