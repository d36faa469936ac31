"""lorahub's ΔW patch on bare torch layers: the forward of every layer class it knows equals the layer with
``W + w·ΔW``; it follows the layer's dtype and device, comes off cleanly, and composes with PEFT's LoRA layers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from lorahub import errors
from lorahub.adapters.canonical import CanonicalLayer
from lorahub.sdk.patching import PATCH_ATTRIBUTE, install, patched, uninstall

torch = pytest.importorskip("torch")
nn = torch.nn


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 6)
        self.conv = nn.Conv2d(4, 6, 3, padding=1)
        self.layer_norm = nn.LayerNorm(6)
        self.group_norm = nn.GroupNorm(2, 6)
        self.embedding = nn.Embedding(10, 6)


class Holder:
    """A stand-in for a pipeline: lorahub keeps its records on whatever object holds the components."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.model = Model()


def _layer(name: str, tensors: dict[str, Any], alpha: float | None = None) -> CanonicalLayer:
    from lorahub.adapters.delta import kind_of

    arrays = {role: np.asarray(array, dtype=np.float32) for role, array in tensors.items()}
    return CanonicalLayer(name=name, kind=kind_of(arrays), tensors=arrays, alpha=alpha, dtype="F32")


def _layers() -> dict[str, CanonicalLayer]:
    gen = np.random.default_rng(0)
    lokr = {
        "lokr_w1": gen.standard_normal((2, 2)),
        "lokr_w2": gen.standard_normal((3, 4)),
        "diff_b": gen.standard_normal(6),
    }
    loha = {
        f"hada_w{n}_{side}": gen.standard_normal((6, 2) if side == "a" else (2, 36)) for n in (1, 2) for side in "ab"
    }
    return {
        "linear": _layer("linear", lokr),
        "conv": _layer("conv", loha, alpha=2.0),
        "layer_norm": _layer("layer_norm", {"w_norm": gen.standard_normal(6), "b_norm": gen.standard_normal(6)}),
        "group_norm": _layer("group_norm", {"diff": gen.standard_normal(6)}),
    }


INPUTS = {"linear": (3, 8), "conv": (2, 4, 5, 5), "layer_norm": (3, 6), "group_norm": (2, 6, 4, 4)}


def _expected(module: Any, layer: CanonicalLayer, weight: float, x: Any) -> Any:
    """The layer's own forward after its parameters had ``weight·ΔW`` added (a copy of the layer)."""
    import copy

    delta = layer.delta()
    fused = copy.deepcopy(module)
    for attribute in (PATCH_ATTRIBUTE, "forward"):
        fused.__dict__.pop(attribute, None)
    with torch.no_grad():
        fused.weight += weight * torch.from_numpy(delta.weight).reshape(fused.weight.shape)
        if delta.bias is not None:
            fused.bias += weight * torch.from_numpy(delta.bias)
    return fused(x)


def test_every_layer_class_computes_with_the_delta_added_at_its_weight() -> None:
    holder = Holder()
    weights = {"a": 0.7}
    layers = _layers()
    install(holder, "model", layers, "a", weights)
    gen = torch.Generator().manual_seed(1)
    for path, layer in layers.items():
        module = holder.model.get_submodule(path)
        x = torch.randn(*INPUTS[path], generator=gen)
        torch.testing.assert_close(module(x), _expected(module, layer, 0.7, x), rtol=1e-5, atol=1e-5)
    weights["a"] = -0.3  # the pipeline's record of weights is read at each forward
    x = torch.randn(3, 8, generator=gen)
    torch.testing.assert_close(holder.model.linear(x), _expected(holder.model.linear, layers["linear"], -0.3, x))
    uninstall(holder, "a")
    assert not patched(holder)
    assert all("forward" not in m.__dict__ and not hasattr(m, PATCH_ATTRIBUTE) for m in holder.model.modules())


def test_the_delta_follows_the_layers_dtype() -> None:
    holder = Holder()
    layers = {"linear": _layers()["linear"]}
    install(holder, "model", layers, "a", {"a": 1.0})
    x = torch.randn(3, 8, dtype=torch.float64)
    holder.model.linear(x.float())
    holder.model.to(torch.float64)
    out = holder.model.linear(x)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, _expected(holder.model.linear, layers["linear"], 1.0, x), rtol=1e-12, atol=1e-12)


def test_adapters_stack_on_one_layer_and_under_a_peft_lora() -> None:
    from peft import LoraConfig, inject_adapter_in_model

    holder = Holder()
    weights = {"a": 0.5, "b": 1.5}
    first, second = _layers()["linear"], _layer("linear", {"diff": np.ones((6, 8))})
    install(holder, "model", {"linear": first}, "a", weights)
    inject_adapter_in_model(LoraConfig(r=2, target_modules=["linear"], init_lora_weights=False), holder.model)
    install(holder, "model", {"linear": second}, "b", weights)  # onto the layer PEFT now wraps
    wrapper = holder.model.linear
    x = torch.randn(3, 8)
    base = wrapper.base_layer
    with torch.no_grad():
        lora = wrapper(x) - base(x)  # what PEFT adds on top of the patched layer
        plain = torch.nn.functional.linear(x, base.weight, base.bias)
        deltas = [torch.from_numpy(layer.delta().weight) for layer in (first, second)]
        expected = plain + x @ (0.5 * deltas[0] + 1.5 * deltas[1]).T + 0.5 * torch.from_numpy(first.delta().bias)
        torch.testing.assert_close(base(x), expected, rtol=1e-5, atol=1e-5)
        assert float(lora.abs().max()) > 0
    uninstall(holder, "a")
    assert list(base.__dict__[PATCH_ATTRIBUTE].deltas) == ["b"]
    uninstall(holder, "b")
    assert "forward" not in base.__dict__


def test_a_layer_class_the_patch_does_not_know_is_refused() -> None:
    from lorahub.sdk.patching import check_fits

    layer = _layer("embedding", {"diff": np.zeros((10, 6))})
    with pytest.raises(errors.AdapterNotLoadableError, match="Embedding"):
        check_fits(layer, Holder().model.embedding, "embedding")
