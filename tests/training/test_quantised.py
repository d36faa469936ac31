"""``--quantize int8`` on the tiny FLUX pipeline, for real and on CPU: the transformer's frozen Linear weights are
torchao int8 tensors while the LoRA trains in fp32 beside them, the card records the setting, and the adapter
written is an ordinary FLUX LoRA that loads into the unquantised pipeline. (The refusals: test_samples.py.)"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import lorahub
from lorahub import Hub
from lorahub.training.base import describe_base
from lorahub.training.config import TrainConfig
from lorahub.training.data import read_dataset
from lorahub.training.loop import Step, Trainer
from tests.training.conftest import write_squares

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
pytest.importorskip("torchao")

FAST = {"resolution": 64, "batch": 1, "log_every": 1, "lr": 1e-2}


def _frozen_linears(denoiser: Any) -> dict[str, Any]:
    """The base weight of every Linear the model had before peft (LoRA's own A/B Linears left out)."""
    return {
        name: module.weight
        for name, module in denoiser.named_modules()
        if isinstance(module, torch.nn.Linear) and ".lora_" not in name
    }


def _transformer_output(transformer: Any) -> Any:
    generator = torch.Generator().manual_seed(0)
    inputs = {
        "hidden_states": torch.randn(1, 16, 16, generator=generator),
        "encoder_hidden_states": torch.randn(1, 8, 32, generator=generator),
        "pooled_projections": torch.randn(1, 32, generator=generator),
        "timestep": torch.tensor([0.5]),
        "img_ids": torch.zeros(16, 3),
        "txt_ids": torch.zeros(8, 3),
    }
    with torch.no_grad():
        return transformer(**inputs, return_dict=False)[0]


def test_int8_trains_against_torchao_weights(tiny_bases: Mapping[str, Path], tmp_path: Path) -> None:
    from torchao.quantization import Int8Tensor

    examples = read_dataset(write_squares(tmp_path / "data", 2)).examples
    config = TrainConfig(rank=4, steps=2, lr=1e-2, resolution=64, batch=1, seed=0, quantization="int8").check()
    trainer = Trainer(describe_base(tiny_bases["flux1"]), config, examples)
    frozen = _frozen_linears(trainer.denoiser)
    assert frozen and all(type(w) is Int8Tensor and w.qdata.dtype == torch.int8 for w in frozen.values()), {
        name: type(w).__name__ for name, w in frozen.items()
    }
    assert all(not w.requires_grad for w in frozen.values())
    assert trainer.params and all(p.dtype == torch.float32 and type(p.data) is torch.Tensor for p in trainer.params)
    before = [p.detach().clone() for p in trainer.params]
    losses: list[float] = []
    trainer.train(2, on_step=lambda step: losses.append(step.loss))
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
    assert all(not torch.equal(b, p) for b, p in zip(before, trainer.params, strict=True))  # every LoRA tensor moved
    assert all(type(w) is Int8Tensor for w in _frozen_linears(trainer.denoiser).values())  # still quantised


def test_int8_adapter_is_recorded_and_loads_into_the_unquantised_pipeline(
    hub: Hub, tiny_bases: Mapping[str, Path], tmp_path: Path
) -> None:
    steps: list[Step] = []
    result = lorahub.train(
        tiny_bases["flux1"], write_squares(tmp_path / "data", 2), name="q8", trigger="sks", hub=hub, steps=2,
        quantization="int8", on_step=steps.append, **FAST,
    )  # fmt: skip
    assert result.training["hyperparameters"]["quantization"] == "int8"
    assert [s.step for s in steps] == [1, 2] and all(math.isfinite(s.loss) for s in steps)
    pipe = diffusers.DiffusionPipeline.from_pretrained(tiny_bases["flux1"])
    assert not getattr(pipe.transformer, "is_quantized", False)
    before = _transformer_output(pipe.transformer)
    lorahub.load("q8", pipe, hub=hub)
    assert (_transformer_output(pipe.transformer) - before).abs().max() > 1e-4
