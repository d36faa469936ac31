"""Our diffusers output in a real (tiny) diffusers pipeline: it loads with no missing or unexpected keys, and the image
equals the one made by adding ΔW (delta.py) to the weights directly (issue 4's peer check)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lorahub.adapters.convert import convert
from lorahub.adapters.delta import delta_weight
from lorahub.adapters.model import read_adapter
from tests.sdk.pipes import image, make_adapter, tiny

pytest.importorskip("diffusers")


def _add_delta(pipe: Any, path: Path, family: str) -> None:
    import torch

    adapter = read_adapter(path, family=family)
    assert not adapter.unmapped
    with torch.no_grad():
        for name, layer in adapter.layers.items():
            component, _, module_path = name.partition(".")
            model = getattr(pipe, component)
            if not hasattr(model, "text_model"):
                module_path = module_path.removeprefix("text_model.")
            weight = model.get_submodule(module_path).weight
            delta = delta_weight(layer.tensors, alpha=layer.alpha).weight
            weight += torch.from_numpy(delta.reshape(weight.shape)).to(weight.dtype)


def _declared(path: Path, family: str) -> Path:
    """Tiny geometry leaves the family open; kohya's ``ss_base_model_version`` states it, as trainers write it."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), "pt") as handle:
        metadata = dict(handle.metadata() or {})
    version = {"sd1": "sd_v1", "sdxl": "sdxl_base_v1-0"}[family]
    save_file(load_file(str(path)), str(path), metadata={**metadata, "ss_base_model_version": version})
    return path


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_our_diffusers_output_loads_cleanly_and_matches_adding_delta_w(
    tmp_path: Path, family: str, caplog: pytest.LogCaptureFixture
) -> None:
    trained = _declared(make_adapter(family, tmp_path / "trained", seed=3, text_encoder=family == "sd1"), family)
    kohya = tmp_path / "kohya.safetensors"
    convert(trained, kohya, to="kohya")
    ours = tmp_path / "ours.safetensors"
    report = convert(kohya, ours, to="diffusers")
    assert report.max_rel_error <= 1e-6
    loaded = tiny(family)
    with caplog.at_level(logging.WARNING):
        loaded.load_lora_weights(str(ours))
    assert not [r for r in caplog.records if "unexpected keys" in r.getMessage() or "missing keys" in r.getMessage()]
    direct = tiny(family)
    _add_delta(direct, ours, family)
    np.testing.assert_allclose(image(loaded, family), image(direct, family), atol=2e-5)
