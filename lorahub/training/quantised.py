"""Training against a quantised FLUX transformer, so that a FLUX.1 LoRA fits in a 24 GB GPU.

FLUX.1's transformer has 11.9 B parameters: 23.8 GB in bf16 before a single activation, so a 24 GB card cannot
train a LoRA on it as it is. Its frozen weights are loaded quantised instead (QLoRA): ``nf4`` (4-bit NormalFloat,
about 6.7 GB) or ``int8`` (LLM.int8, about 12 GB), computing in the run's mixed precision, while the LoRA
parameters peft adds stay in fp32 and are trained as usual. diffusers does the loading, through its
``BitsAndBytesConfig``, as its ``train_dreambooth_lora_flux.py`` does with ``--bnb_quantization_config_path``.

bitsandbytes quantises on CUDA only (diffusers refuses it elsewhere), and it is an optional package: the
``quantize`` extra. Both are checked before anything loads, with a hint, never a traceback from deep inside
diffusers. The setting is a hyperparameter, so the card records it (``training.hyperparameters.quantization``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from typing import Any

from lorahub import errors
from lorahub.training.base import Base

PACKAGE = "bitsandbytes"
MINIMUM = (0, 43, 3)
"""The oldest bitsandbytes diffusers' quantizer accepts (diffusers 0.3x–0.4x check for it)."""
EXTRA = "quantize"


def check_quantization(quantization: str | None, base: Base) -> None:
    """Refuse, before torch loads, a quantisation that cannot run: not a FLUX base, or no bitsandbytes."""
    if quantization is None:
        return
    if base.family != "flux1":
        raise errors.TrainingError(
            f"--quantize {quantization} applies to FLUX.1 transformers; {base.name} is {base.family}",
            hint="Leave --quantize out: SD and SDXL UNets fit in 24 GB with --gradient-checkpointing.",
        )
    if importlib.util.find_spec(PACKAGE) is None:
        raise errors.MissingExtraError(f"training against a {quantization}-quantised FLUX transformer", EXTRA)
    version = importlib.metadata.version(PACKAGE)
    if _version_tuple(version) < MINIMUM:
        raise errors.TrainingError(
            f"--quantize needs {PACKAGE} ≥ {'.'.join(map(str, MINIMUM))}; {version} is installed",
            hint=f"pip install -U 'lorahub[{EXTRA}]'",
        )


def quantised_denoiser(
    diffusers: Any, base: Base, quantization: str | None, compute_dtype: Any, device: Any
) -> dict[str, Any]:
    """The pipeline's ``transformer`` loaded quantised, as a ``from_pretrained`` keyword (none when not asked)."""
    if quantization is None:
        return {}
    check_quantization(quantization, base)
    if device.type != "cuda":
        raise errors.TrainingError(
            f"--quantize {quantization} needs a CUDA GPU: bitsandbytes quantises on CUDA only (device: {device})",
            hint="Train on a GPU, or leave --quantize out on CPU.",
        )
    if quantization == "nf4":
        config = diffusers.BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype
        )
    else:
        config = diffusers.BitsAndBytesConfig(load_in_8bit=True)
    transformer = diffusers.FluxTransformer2DModel.from_pretrained(
        str(base.path), subfolder=base.denoiser, quantization_config=config, torch_dtype=compute_dtype
    )
    return {base.denoiser: transformer}


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for part in version.split(".")[:3]:
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)
