"""rsLoRA end to end (issue 16): a file saved by diffusers from a PEFT ``LoraConfig(use_rslora=True)`` scales each
module by alpha/√rank. lorahub reads, loads, converts, merges and bakes it with that scale, checked against diffusers
and PEFT themselves or against ΔW written out in this file (PEFT's rule, never lorahub's)."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import lorahub
from lorahub import Hub
from lorahub.adapters.convert import convert
from lorahub.adapters.model import read_adapter
from lorahub.sdk.adding import AddOptions
from lorahub.sdk.inspect import inspect
from tests.sdk.pipes import image, make_adapter, tiny

pytest.importorskip("diffusers")
pytest.importorskip("peft")

RANK, ALPHA = 4, 8.0
RSLORA_SCALE = ALPHA / math.sqrt(RANK)  # 4.0, where the plain rule would give 2.0
_SUFFIXES = {".lora.down.weight": ".lora.up.weight", ".lora_linear_layer.down.weight": ".lora_linear_layer.up.weight"}


def _rslora_file(out: Path, *, text_encoder: bool = True) -> Path:
    return make_adapter("sd1", out, seed=1, rank=RANK, alpha=ALPHA, text_encoder=text_encoder, rslora=True)


def _plain_file(out: Path) -> Path:
    return make_adapter("sd1", out, seed=2, rank=2, alpha=2.0, targets=["to_q", "to_v"])


def _declared(path: Path) -> Path:
    """Tiny geometry leaves the family open; ``ss_base_model_version`` states it, as trainers write it."""
    from safetensors.torch import load_file, save_file

    metadata = _metadata(path)
    save_file(load_file(str(path)), str(path), metadata={**metadata, "ss_base_model_version": "sd_v1"})
    return path


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), "np") as handle:
        return dict(handle.metadata() or {})


def _explicit_deltas(path: Path) -> dict[str, np.ndarray]:
    """ΔW of every module of a file diffusers saved, by PEFT's rule written out here: ``lora_alpha/√r`` with
    ``use_rslora``, ``lora_alpha/r`` without (these files have no alpha patterns)."""
    from safetensors.numpy import load_file

    config = json.loads(_metadata(path)["lora_adapter_metadata"])
    tensors = load_file(str(path))
    deltas = {}
    for key, down in tensors.items():
        for down_suffix, up_suffix in _SUFFIXES.items():
            if key.endswith(down_suffix):
                module = key.removesuffix(down_suffix)
                component = module.partition(".")[0]
                assert not config[f"{component}.alpha_pattern"] and not config.get(f"{component}.rank_pattern")
                alpha, rank = config[f"{component}.lora_alpha"], down.shape[0]
                scale = alpha / math.sqrt(rank) if config[f"{component}.use_rslora"] else alpha / rank
                up = tensors[module + up_suffix].astype(np.float64)
                deltas[module] = scale * (up @ down.astype(np.float64))
    return deltas


def _submodule(pipe: Any, module: str) -> Any:
    component, _, path = module.partition(".")
    model = getattr(pipe, component)
    try:
        return model.get_submodule(path)
    except AttributeError:
        return model.get_submodule(f"text_model.{path}")  # transformers 4 nests the encoder in text_model


def _with_deltas(pipe: Any, weighted: list[tuple[Mapping[str, np.ndarray], float]]) -> Any:
    """``pipe`` with ``W + Σ wᵢ·ΔWᵢ`` written into its weights directly."""
    import torch

    with torch.no_grad():
        for deltas, weight in weighted:
            for module, delta in deltas.items():
                target = _submodule(pipe, module).weight
                target += torch.from_numpy(weight * delta.reshape(target.shape)).to(target.dtype)
    return pipe


def _diffusers_image(files: list[tuple[Path, float]]) -> np.ndarray:
    """What diffusers alone makes of the files at these weights."""
    pipe = tiny("sd1")
    names = []
    for i, (path, _) in enumerate(files):
        pipe.load_lora_weights(str(path), adapter_name=f"ref{i}")
        names.append(f"ref{i}")
    pipe.set_adapters(names, adapter_weights=[w for _, w in files])
    return image(pipe, "sd1")


def _add(hub: Hub, path: Path, name: str) -> None:
    hub.add(path, AddOptions(name=name, license="MIT"))


# --- reading --------------------------------------------------------------------------------------------------------


def test_an_rslora_file_reads_with_scale_alpha_over_sqrt_rank_and_inspect_says_so(tmp_path: Path) -> None:
    path = _rslora_file(tmp_path / "rs")
    adapter = read_adapter(path, family="sd1")
    explicit = _explicit_deltas(path)
    assert adapter.layers and not adapter.unmapped
    assert {layer.source_name for layer in adapter.layers.values()} == set(explicit)
    for layer in adapter.layers.values():
        assert layer.rslora and layer.scale == pytest.approx(RSLORA_SCALE)
        np.testing.assert_allclose(layer.delta().weight, explicit[layer.source_name], rtol=1e-5, atol=1e-7)
    assert inspect(path).scale_rule == {"alpha/sqrt(rank)": len(explicit)}
    plain = _plain_file(tmp_path / "plain")
    assert inspect(plain).scale_rule == {"alpha/rank": len(_explicit_deltas(plain))}


# --- load -------------------------------------------------------------------------------------------------------------


def test_load_of_an_rslora_file_equals_diffusers_own_load_and_its_explicit_delta(hub: Hub, tmp_path: Path) -> None:
    path = _rslora_file(tmp_path / "rs")
    _add(hub, path, "rs")
    pipe = tiny("sd1")
    base = image(pipe, "sd1")
    lorahub.load("rs", pipe, weight=0.7, hub=hub)
    ours = image(pipe, "sd1")
    np.testing.assert_allclose(ours, _diffusers_image([(path, 0.7)]), atol=1e-5)
    direct = image(_with_deltas(tiny("sd1"), [(_explicit_deltas(path), 0.7)]), "sd1")
    np.testing.assert_allclose(ours, direct, atol=2e-5)
    assert np.abs(ours - base).max() > 1e-3


def test_an_rslora_adapter_hotswapped_into_a_plain_ones_slot_keeps_its_scale(hub: Hub, tmp_path: Path) -> None:
    """PEFT's hotswap takes the new config's rule for ``scaling``; lorahub then sets ``lora_alpha`` under the slot's
    own rule, so a later weight change (``set_adapters`` recomputes from alpha) keeps alpha/√r."""
    plain = make_adapter("sd1", tmp_path / "plain", seed=3)  # alpha 8, rank 4: scale 2 where rsLoRA's is 4
    rs = _rslora_file(tmp_path / "rs", text_encoder=False)
    _add(hub, plain, "plain")
    _add(hub, rs, "rs")
    pipe = tiny("sd1")
    handle = lorahub.load("plain", pipe, hub=hub)
    lorahub.load("rs", pipe, hub=hub, weight=0.6, replace=handle)
    assert handle.hotswapped
    np.testing.assert_allclose(image(pipe, "sd1"), _diffusers_image([(rs, 0.6)]), atol=1e-5)
    handle.set_weight(1.3)
    np.testing.assert_allclose(image(pipe, "sd1"), _diffusers_image([(rs, 1.3)]), atol=1e-5)


# --- convert ----------------------------------------------------------------------------------------------------------


def test_rslora_converts_exactly_keeping_the_flag_or_writing_the_equivalent_alpha(tmp_path: Path) -> None:
    source = _declared(_rslora_file(tmp_path / "rs"))
    modules = len(_explicit_deltas(source))
    reference = _diffusers_image([(source, 1.0)])

    kohya = tmp_path / "rs-kohya.safetensors"
    report = convert(source, kohya, to="kohya")
    assert report.max_rel_error <= 1e-6 and len(report.rslora_alpha) == modules
    from safetensors.numpy import load_file

    alphas = [float(v) for k, v in load_file(str(kohya)).items() if k.endswith(".alpha")]
    np.testing.assert_allclose(alphas, [ALPHA * math.sqrt(RANK)] * modules)  # alpha'/r = alpha/√r
    assert inspect(kohya).scale_rule == {"alpha/rank": modules}
    np.testing.assert_allclose(_diffusers_image([(kohya, 1.0)]), reference, atol=1e-5)

    ours = tmp_path / "rs-diffusers.safetensors"
    report = convert(kohya, ours, to="diffusers")  # from kohya: plain alpha·√r now, which diffusers reads the same
    assert report.max_rel_error <= 1e-6 and report.rslora_alpha == []
    np.testing.assert_allclose(_diffusers_image([(ours, 1.0)]), reference, atol=1e-5)

    kept = tmp_path / "rs-kept.safetensors"
    report = convert(source, kept, to="diffusers")
    config = json.loads(_metadata(kept)["lora_adapter_metadata"])
    assert report.max_rel_error <= 1e-6 and report.rslora_alpha == []
    assert config["unet.use_rslora"] is True and config["unet.lora_alpha"] == ALPHA
    np.testing.assert_allclose(_diffusers_image([(kept, 1.0)]), reference, atol=1e-5)

    folder = tmp_path / "rs-peft"
    report = convert(source, folder, to="peft")
    assert report.max_rel_error <= 1e-6 and report.rslora_alpha == []
    for component in ("unet", "text_encoder"):
        peft_config = json.loads((folder / component / "adapter_config.json").read_text())
        assert peft_config["use_rslora"] is True and peft_config["lora_alpha"] == ALPHA
    back = tmp_path / "rs-from-peft.safetensors"
    report = convert(folder, back, to="diffusers")  # a PEFT folder saying use_rslora reads as rsLoRA
    assert report.max_rel_error <= 1e-6 and report.rslora_alpha == []
    assert json.loads(_metadata(back)["lora_adapter_metadata"])["text_encoder.use_rslora"] is True
    np.testing.assert_allclose(_diffusers_image([(back, 1.0)]), reference, atol=1e-5)

    comfy = tmp_path / "rs-comfy.safetensors"
    report = convert(source, comfy, to="comfyui")
    assert report.max_rel_error <= 1e-6 and len(report.rslora_alpha) == modules


def test_flux_rslora_fused_into_kohya_keeps_each_projections_delta(tmp_path: Path) -> None:
    """FLUX's q, k, v become one native ``img_attn.qkv``: fusing computes with alpha/rank, so rsLoRA parts must
    enter with their equivalent alpha. The fused module's ΔW (read here from the kohya tensors) is the stacked ΔW of
    the three projections by PEFT's rsLoRA rule."""
    from safetensors.numpy import load_file, save_file

    rng = np.random.default_rng(4)
    width, rank = 8, 2
    parts = ("to_q", "to_k", "to_v")
    tensors = {}
    for part in parts:
        name = f"transformer.transformer_blocks.0.attn.{part}"
        tensors[f"{name}.lora_A.weight"] = rng.standard_normal((rank, width)).astype(np.float32)
        tensors[f"{name}.lora_B.weight"] = rng.standard_normal((width, rank)).astype(np.float32)
    config = {"transformer.r": rank, "transformer.lora_alpha": 3.0, "transformer.use_rslora": True}
    source = tmp_path / "flux-rs.safetensors"
    metadata = {"lora_adapter_metadata": json.dumps(config), "ss_base_model_version": "flux1"}
    save_file(tensors, str(source), metadata=metadata)
    out = tmp_path / "flux-kohya.safetensors"
    report = convert(source, out, to="kohya")
    assert report.max_rel_error <= 1e-6 and len(report.rslora_alpha) == 3
    written = load_file(str(out))
    prefix = "lora_unet_double_blocks_0_img_attn_qkv"
    up, down = written[f"{prefix}.lora_up.weight"].astype(np.float64), written[f"{prefix}.lora_down.weight"]
    fused = float(written[f"{prefix}.alpha"]) / down.shape[0] * (up @ down.astype(np.float64))
    scale = 3.0 / math.sqrt(rank)
    expected = np.concatenate(
        [
            scale
            * tensors[f"transformer.transformer_blocks.0.attn.{p}.lora_B.weight"].astype(np.float64)
            @ tensors[f"transformer.transformer_blocks.0.attn.{p}.lora_A.weight"].astype(np.float64)
            for p in parts
        ]
    )
    np.testing.assert_allclose(fused, expected, rtol=1e-5, atol=1e-6)


# --- merge and bake ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["cat", "svd"])
def test_a_merge_of_rslora_and_plain_is_their_summed_delta(hub: Hub, tmp_path: Path, method: str) -> None:
    rs, plain = _rslora_file(tmp_path / "rs", text_encoder=False), _plain_file(tmp_path / "plain")
    _add(hub, rs, "rs")
    _add(hub, plain, "plain")
    hub.merge(["rs:0.7", "plain:-0.4"], out="both", method=method, dtype="fp32")
    merged = read_adapter(lorahub.load("both", hub=hub).path, family="sd1")
    rs_deltas, plain_deltas = _explicit_deltas(rs), _explicit_deltas(plain)
    assert set(merged.layers) == set(rs_deltas) | set(plain_deltas)
    for name, layer in merged.layers.items():
        assert not layer.rslora  # kohya: the plain rule, written out here from the merged file's own alpha and rank
        down, up = layer.tensors["down"].astype(np.float64), layer.tensors["up"].astype(np.float64)
        actual = layer.alpha / down.shape[0] * (up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1))
        expected = 0.7 * rs_deltas.get(name, 0.0) - 0.4 * plain_deltas.get(name, 0.0)
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6, err_msg=name)
    loaded = tiny("sd1")
    lorahub.load("both", loaded, hub=hub)
    np.testing.assert_allclose(image(loaded, "sd1"), _diffusers_image([(rs, 0.7), (plain, -0.4)]), atol=1e-5)


def test_a_bake_of_rslora_and_plain_adds_their_summed_delta(
    hub: Hub, tmp_path: Path, tiny_bases: Mapping[str, Path]
) -> None:
    from safetensors.numpy import load_file

    rs, plain = _rslora_file(tmp_path / "rs"), _plain_file(tmp_path / "plain")
    _add(hub, rs, "rs")
    _add(hub, plain, "plain")
    base = Path(shutil.copytree(tiny_bases["sd1"], tmp_path / "base"))
    hub.bake(base, ["rs:0.7", "plain:-0.4"], tmp_path / "baked")
    expected: dict[str, np.ndarray] = {}
    for deltas, weight in ((_explicit_deltas(rs), 0.7), (_explicit_deltas(plain), -0.4)):
        for module, delta in deltas.items():
            expected[module] = expected.get(module, 0.0) + weight * delta
    files = {"unet": "unet/diffusion_pytorch_model.safetensors", "text_encoder": "text_encoder/model.safetensors"}
    before = {c: load_file(str(base / f)) for c, f in files.items()}
    after = {c: load_file(str(tmp_path / "baked" / f)) for c, f in files.items()}
    changed = {
        f"{c}.{key.removesuffix('.weight').removeprefix('text_model.')}"
        for c in files
        for key in before[c]
        if not np.array_equal(before[c][key], after[c][key])
    }
    assert changed == set(expected)
    for module, delta in expected.items():
        component, _, path = module.partition(".")
        key = next(k for k in (f"{path}.weight", f"text_model.{path}.weight") if k in before[component])
        actual = after[component][key].astype(np.float64) - before[component][key].astype(np.float64)
        np.testing.assert_allclose(actual, delta, rtol=1e-4, atol=1e-6, err_msg=module)
