"""Tiny pipelines (``lorahub.dev.tiny_pipeline``) and adapters made on them with PEFT, as a diffusers user would."""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


def tiny(family: str) -> Any:
    from lorahub.dev.tiny_pipeline import build_tiny_pipeline

    return build_tiny_pipeline(family)  # type: ignore[arg-type]


def make_adapter(
    family: str,
    out: Path,
    *,
    seed: int,
    rank: int = 4,
    alpha: float = 8.0,
    targets: list[str] | None = None,
    text_encoder: bool = False,
    rslora: bool = False,
    dora: bool = False,
) -> Path:
    """A LoRA trained-looking file (random B, so it changes the output) saved by diffusers' own save_lora_weights
    with its adapter metadata: the format diffusers' training scripts write (``rslora``: PEFT's ``use_rslora``, which
    that metadata records; ``dora``: PEFT's ``use_dora``, magnitudes moved off their initial norms). The same
    arguments give the same bytes, so each file is made once per session and copied
    to ``out``."""
    recipe = _Recipe(family, seed, rank, alpha, tuple(targets or TARGETS), text_encoder, rslora, dora)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "pytorch_lora_weights.safetensors"
    path.write_bytes(_adapter_bytes(recipe))
    return path


@dataclass(frozen=True)
class _Recipe:
    family: str
    seed: int
    rank: int
    alpha: float
    targets: tuple[str, ...]
    text_encoder: bool
    rslora: bool
    dora: bool = False


@functools.cache
def _adapter_bytes(recipe: _Recipe) -> bytes:
    """Made in a folder of its own, with torch's global random state left as it was."""
    import torch

    with tempfile.TemporaryDirectory(prefix="lorahub-adapter-") as folder, torch.random.fork_rng(devices=[]):
        return _save_adapter(recipe, Path(folder)).read_bytes()


def _save_adapter(recipe: _Recipe, out: Path) -> Path:
    import torch
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    pipe = tiny(recipe.family)
    torch.manual_seed(recipe.seed)
    model_name = "unet" if hasattr(pipe, "unet") else "transformer"
    model = getattr(pipe, model_name)
    config = LoraConfig(
        r=recipe.rank,
        lora_alpha=recipe.alpha,
        target_modules=list(recipe.targets),
        init_lora_weights=False,
        use_rslora=recipe.rslora,
        use_dora=recipe.dora,
    )
    model.add_adapter(config, adapter_name="x")
    with torch.no_grad():  # random B large enough to change a 2-step image visibly
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.mul_(0.2)
            if "lora_magnitude_vector" in name:  # initialised to ‖W + ΔW‖, where DoRA changes nothing
                param.mul_(1 + 0.3 * torch.randn_like(param))
    layers: dict[str, Any] = {
        f"{model_name}_lora_layers": convert_state_dict_to_diffusers(
            get_peft_model_state_dict(model, adapter_name="x")
        ),
        f"{model_name}_lora_adapter_metadata": model.peft_config["x"].to_dict(),
    }
    if recipe.text_encoder:
        te_config = LoraConfig(
            r=recipe.rank,
            lora_alpha=recipe.alpha,
            target_modules=TEXT_TARGETS,
            init_lora_weights=False,
            use_rslora=recipe.rslora,
        )
        # PEFT itself, not transformers' integration (``add_adapter``), which refuses PEFT releases older than the
        # one it was built against (transformers 5.25 asks for a PEFT that does not exist yet).
        inject_adapter_in_model(te_config, pipe.text_encoder, adapter_name="x")
        layers["text_encoder_lora_layers"] = convert_state_dict_to_diffusers(
            get_peft_model_state_dict(pipe.text_encoder, adapter_name="x")
        )
        layers["text_encoder_lora_adapter_metadata"] = pipe.text_encoder.peft_config["x"].to_dict()
    type(pipe).save_lora_weights(out, **layers)
    return out / "pytorch_lora_weights.safetensors"


CALL = {
    "sd1": {"num_inference_steps": 2, "height": 64, "width": 64, "guidance_scale": 1.0},
    "sdxl": {"num_inference_steps": 2, "height": 64, "width": 64, "guidance_scale": 1.0},
    "flux1": {"num_inference_steps": 2, "height": 64, "width": 64, "guidance_scale": 3.5, "max_sequence_length": 16},
}


def image(pipe: Any, family: str, prompt: str = "a photo of sks cat") -> np.ndarray:
    import torch

    generator = torch.Generator("cpu").manual_seed(0)
    result = pipe(prompt, generator=generator, output_type="np", **CALL[family])
    return np.asarray(result.images[0], dtype=np.float64)
