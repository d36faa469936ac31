"""Training against a quantised FLUX transformer, so that a FLUX.1 LoRA fits in a 24 GB GPU.

FLUX.1's transformer has 11.9 B parameters: 23.8 GB in bf16 before a single activation, so a 24 GB card cannot
train a LoRA on it as it is. Its frozen weights are loaded quantised instead (QLoRA), computing in the run's
mixed precision, while the LoRA parameters peft adds stay in fp32 and are trained as usual. diffusers does the
loading, through a quantisation config on ``FluxTransformer2DModel.from_pretrained``:

- ``int8``: torchao's int8 weight-only quantisation (``TorchAoConfig(Int8WeightOnlyConfig())``: an int8 per weight
  and a scale per output row, about 11.9 GB for FLUX.1). torchao quantises on the CPU as well as on a GPU, so the
  option runs (and is tested) on CPU, and the quantised weights move to the training device like any tensor.
- ``nf4``: bitsandbytes' 4-bit NormalFloat (``BitsAndBytesConfig``, about 6.7 GB), as diffusers'
  ``train_dreambooth_lora_flux.py`` does with ``--bnb_quantization_config_path``. bitsandbytes quantises on CUDA
  only (diffusers refuses it elsewhere) and places the weights on the GPU itself.

Why ``nf4`` is not torchao's too (measured with torchao 0.18, diffusers 0.42, torch 2.13 on CPU): diffusers'
``TorchAoConfig`` takes only a torchao ``AOBaseConfig`` and torchao's NF4 (``NF4Tensor``, torchtune's QLoRA) has
none; ``Int4WeightOnlyConfig`` refuses the CPU in every packing format (``plain`` needs the mslk package,
``tile_packed_to_4d`` CUDA, ``plain_int32`` "does not support device 'cpu'", ``opaque`` is not a format any more);
``IntxWeightOnlyConfig(weight_dtype=torch.int4)`` loads and trains on CPU but keeps each 4-bit value in a byte,
no smaller than ``int8``.

Both packages are optional (the ``quantize`` and ``quantize-nf4`` extras) and checked before anything loads,
with a hint, never a traceback from deep inside diffusers. The setting is a hyperparameter, so the card records it
(``training.hyperparameters.quantization``).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from typing import Any

from lorahub import errors
from lorahub.training.base import Base


@dataclass(frozen=True)
class Backend:
    """The package that quantises one ``--quantize`` choice."""

    package: str
    minimum: tuple[int, ...]
    cuda_only: bool
    extra: str


BACKENDS: dict[str, Backend] = {
    "int8": Backend(
        "torchao", (0, 18, 0), cuda_only=False, extra="quantize"
    ),  # the version tested; diffusers 0.42 needs ≥ 0.15
    "nf4": Backend(
        "bitsandbytes", (0, 43, 3), cuda_only=True, extra="quantize-nf4"
    ),  # the oldest diffusers' quantizer accepts
}


def check_quantization(quantization: str | None, base: Base) -> None:
    """Refuse, before torch loads, a quantisation that cannot run: not a FLUX base, or its package missing."""
    if quantization is None:
        return
    if base.family != "flux1":
        raise errors.TrainingError(
            f"--quantize {quantization} applies to FLUX.1 transformers; {base.name} is {base.family}",
            hint="Leave --quantize out: SD and SDXL UNets fit in 24 GB with --gradient-checkpointing.",
        )
    backend = BACKENDS[quantization]
    if importlib.util.find_spec(backend.package) is None:
        raise errors.MissingExtraError(
            f"training against a {quantization}-quantised FLUX transformer ({backend.package})", backend.extra
        )
    version = importlib.metadata.version(backend.package)
    if _version_tuple(version) < backend.minimum:
        raise errors.TrainingError(
            f"--quantize {quantization} needs {backend.package} ≥ {'.'.join(map(str, backend.minimum))}; "
            f"{version} is installed",
            hint=f"pip install -U 'lorahub[{backend.extra}]'",
        )


def quantised_denoiser(
    diffusers: Any, base: Base, quantization: str | None, compute_dtype: Any, device: Any
) -> dict[str, Any]:
    """The pipeline's ``transformer`` loaded quantised, as a ``from_pretrained`` keyword (none when not asked)."""
    if quantization is None:
        return {}
    check_quantization(quantization, base)
    if BACKENDS[quantization].cuda_only and device.type != "cuda":
        raise errors.TrainingError(
            f"--quantize {quantization} needs a CUDA GPU: bitsandbytes quantises on CUDA only (device: {device})",
            hint="Use --quantize int8 (torchao, any device), train on a GPU, or leave --quantize out.",
        )
    transformer = diffusers.FluxTransformer2DModel.from_pretrained(
        str(base.path),
        subfolder=base.denoiser,
        quantization_config=_config(diffusers, quantization, compute_dtype),
        torch_dtype=compute_dtype,
    )
    return {base.denoiser: transformer}


def placed_on_load(component: Any) -> bool:
    """Whether the loader put ``component`` on its device itself (bitsandbytes does, and refuses to be moved on
    older versions); torchao's quantised tensors move with ``.to`` like any other."""
    return bool(getattr(component, "quantization_method", None) == "bitsandbytes")  # a str enum in diffusers


def _config(diffusers: Any, quantization: str, compute_dtype: Any) -> Any:
    if quantization == "nf4":
        return diffusers.BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype
        )
    torchao = importlib.import_module("torchao.quantization")
    return diffusers.TorchAoConfig(torchao.Int8WeightOnlyConfig())


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for part in version.split(".")[:3]:
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)
