"""The frozen FLUX transformer's weight bytes in bf16 and as ``--quantize int8`` loads it (torchao int8 weight-only).

Measured on the tiny FLUX pipeline (loaded both ways through diffusers, bytes counted from the tensors' storage:
torchao's ``Int8Tensor`` holds int8 ``qdata``, and an fp32 ``scale`` and an int8 ``zero_point`` per output row),
then computed for FLUX.1-dev's geometry (built on torch's ``meta`` device: shapes, no weights, nothing downloaded)
with the same rule, which the script first checks against the tiny model's measured bytes. Weights only:
activations, gradients and the optimiser's state are not counted, and no peak memory is measured (that needs a GPU).

    python benchmarks/flux_quantised_memory.py [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from lorahub.dev.model_configs import FLUX1_DEV_TRANSFORMER


def storage_bytes(tensor: Any) -> int:
    """Bytes a tensor holds, looking inside torchao's tensor subclasses (their ``__tensor_flatten__`` parts)."""
    import torch

    if type(tensor) in (torch.Tensor, torch.nn.Parameter) and type(tensor.data) is torch.Tensor:
        return int(tensor.numel() * tensor.element_size())
    names, _ = tensor.__tensor_flatten__()
    return sum(storage_bytes(getattr(tensor, name)) for name in names if getattr(tensor, name) is not None)


def frozen_bytes(model: Any) -> int:
    return sum(storage_bytes(p) for name, p in model.named_parameters() if "lora_" not in name)


def int8_rule(model: Any) -> int:
    """Bytes after int8 weight-only quantisation: each Linear weight one byte per value plus an fp32 scale and an
    int8 zero point per output row; everything else (biases, norms) stays bf16."""
    import torch

    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    weights = sum(m.weight.numel() for m in linear)
    rows = sum(m.out_features for m in linear)
    other = sum(p.numel() for p in model.parameters()) - weights
    return weights + 5 * rows + 2 * other


def measure() -> dict[str, Any]:
    import accelerate
    import diffusers
    import torch
    import torchao.quantization

    from lorahub.dev.tiny_pipeline import write_tiny_pipeline

    logging.getLogger("torchao").setLevel(logging.ERROR)  # CUDA kernels a CPU install lacks: beside the point
    with tempfile.TemporaryDirectory() as scratch:
        folder = write_tiny_pipeline(Path(scratch), "flux1")
        load = diffusers.FluxTransformer2DModel.from_pretrained
        plain = load(folder, subfolder="transformer", torch_dtype=torch.bfloat16)
        config = diffusers.TorchAoConfig(torchao.quantization.Int8WeightOnlyConfig())
        quantised = load(folder, subfolder="transformer", torch_dtype=torch.bfloat16, quantization_config=config)
    tiny = {"parameters": sum(p.numel() for p in plain.parameters()), "bf16": frozen_bytes(plain)}
    tiny |= {"int8": frozen_bytes(quantised), "int8_rule": int8_rule(plain)}
    with accelerate.init_empty_weights():
        flux = diffusers.FluxTransformer2DModel(**FLUX1_DEV_TRANSFORMER)
    parameters = sum(p.numel() for p in flux.parameters())
    dev = {"parameters": parameters, "bf16": 2 * parameters, "int8_rule": int8_rule(flux)}
    return {"tiny": tiny, "flux1_dev": dev, "rule_matches_tiny": tiny["int8"] == tiny["int8_rule"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure()
    if args.json:
        print(json.dumps(result, indent=2))
        return
    tiny, dev = result["tiny"], result["flux1_dev"]
    print(
        f"tiny FLUX ({tiny['parameters']:,} parameters): bf16 {tiny['bf16']:,} B, int8 {tiny['int8']:,} B "
        f"({tiny['int8'] / tiny['bf16']:.2f}×); the rule gives {tiny['int8_rule']:,} B "
        f"({'matches' if result['rule_matches_tiny'] else 'DOES NOT MATCH'})"
    )
    print(
        f"FLUX.1-dev ({dev['parameters'] / 1e9:.2f} B parameters): bf16 {dev['bf16'] / 1e9:.2f} GB, "
        f"int8 {dev['int8_rule'] / 1e9:.2f} GB ({dev['int8_rule'] / dev['bf16']:.3f}×)"
    )


if __name__ == "__main__":
    main()
