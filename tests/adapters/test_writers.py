"""The peft, comfyui and full writers: ΔW preserved through each (read back by lorahub and, for peft, by PEFT's own
config parser), names as the consuming tools spell them, and full diffs against an explicit ``up @ down · alpha/r``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lorahub.adapters.convert import convert
from lorahub.adapters.model import read_adapter
from lorahub.adapters.sources import load_adapter
from lorahub.dev.example_lora import write_example_lora
from lorahub.files.numeric import scalar, to_float32
from lorahub.files.safetensors import SafetensorsFile, read_header, write

UNET = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0"
TE = "lora_te_text_model_encoder_layers_0_self_attn"


def _values(path: Path) -> dict[str, Any]:
    with SafetensorsFile(path) as f:
        return {
            name: scalar(f.raw(name), info) if info.shape == () else to_float32(f.raw(name), info)
            for name, info in f.header.tensors.items()
        }


def _kohya_source(path: Path) -> dict[str, tuple[Any, Any, float]]:
    """Three modules with different ranks/alphas (one conv), returned as name → (up, down, scale)."""
    gen = np.random.default_rng(7)
    spec = {
        f"{UNET}_attn1_to_q": ((4, 320), (320, 4), 2.0),
        f"{UNET}_attn2_to_k": ((8, 768), (320, 8), 8.0),
        f"{TE}_q_proj": ((4, 768), (768, 4), 1.0),
        "lora_unet_down_blocks_0_resnets_0_conv1": ((4, 320, 3, 3), (320, 4, 1, 1), 3.0),
    }
    tensors: dict[str, tuple[str, tuple[int, ...], bytes]] = {}
    modules = {}
    for name, (down_shape, up_shape, alpha) in spec.items():
        down = gen.standard_normal(down_shape).astype(np.float32)
        up = gen.standard_normal(up_shape).astype(np.float32)
        tensors[f"{name}.lora_down.weight"] = ("F32", down_shape, down.tobytes())
        tensors[f"{name}.lora_up.weight"] = ("F32", up_shape, up.tobytes())
        tensors[f"{name}.alpha"] = ("F32", (), np.float32(alpha).tobytes())
        modules[name] = (up, down, alpha / down_shape[0])
    write(path, tensors, {"ss_network_module": "networks.lora", "ss_base_model_version": "sd_v1"})
    return modules


def _delta(up: Any, down: Any, scale: float) -> Any:
    flat = up.reshape(up.shape[0], -1).astype(np.float64) @ down.reshape(down.shape[0], -1).astype(np.float64)
    return (flat * scale).reshape(up.shape[0], *down.shape[1:])


# --- comfyui -------------------------------------------------------------------------------------------------------


def test_comfyui_names_and_values(tmp_path: Path) -> None:
    source = tmp_path / "kohya.safetensors"
    modules = _kohya_source(source)
    out = tmp_path / "comfy.safetensors"
    report = convert(source, out, to="comfyui")
    assert report.max_abs_error == 0.0 and report.modules == 4
    values = _values(out)
    # SGM names for the UNet (input_blocks.1.1 is down_blocks.0.attentions.0; input_blocks.1.0 its resnet)
    q = "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q"
    conv = "diffusion_model.input_blocks.1.0.in_layers.2"
    te = "text_encoders.clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj"
    assert {f"{q}.lora_up.weight", f"{conv}.lora_down.weight", f"{te}.alpha"} <= set(values)
    up, _down, _ = modules[f"{UNET}_attn1_to_q"]
    assert np.array_equal(values[f"{q}.lora_up.weight"], up) and values[f"{q}.alpha"] == 2.0
    assert values[f"{conv}.lora_down.weight"].shape == (4, 320, 3, 3)
    back = load_adapter(out)
    assert back.source_format == "comfyui" and back.unmapped == [] and back.family == "sd1"
    again = convert(out, tmp_path / "again.safetensors", to="kohya")
    assert again.max_abs_error == 0.0
    assert _values(tmp_path / "again.safetensors").keys() == _values(source).keys()


def test_comfyui_sdxl_text_encoder_2_is_clip_g(tmp_path: Path) -> None:
    gen = np.random.default_rng(3)
    name = "lora_te2_text_model_encoder_layers_31_mlp_fc2"
    down, up = gen.standard_normal((4, 5120)).astype(np.float32), gen.standard_normal((1280, 4)).astype(np.float32)
    unet = "lora_unet_input_blocks_4_1_transformer_blocks_1_attn2_to_k"
    down2, up2 = gen.standard_normal((4, 2048)).astype(np.float32), gen.standard_normal((640, 4)).astype(np.float32)
    write(
        tmp_path / "xl.safetensors",
        {
            f"{name}.lora_down.weight": ("F32", down.shape, down.tobytes()),
            f"{name}.lora_up.weight": ("F32", up.shape, up.tobytes()),
            f"{unet}.lora_down.weight": ("F32", down2.shape, down2.tobytes()),
            f"{unet}.lora_up.weight": ("F32", up2.shape, up2.tobytes()),
        },
        {"ss_base_model_version": "sdxl_base_v1-0"},
    )
    report = convert(tmp_path / "xl.safetensors", tmp_path / "c.safetensors", to="comfyui")
    assert report.family == "sdxl" and report.max_abs_error == 0.0
    keys = set(read_header(tmp_path / "c.safetensors").tensors)
    assert "text_encoders.clip_g.transformer.text_model.encoder.layers.31.mlp.fc2.lora_up.weight" in keys
    assert "diffusion_model.input_blocks.4.1.transformer_blocks.1.attn2.to_k.lora_down.weight" in keys


# --- peft ----------------------------------------------------------------------------------------------------------


def test_peft_folder_per_component_and_config(tmp_path: Path) -> None:
    source = tmp_path / "kohya.safetensors"
    modules = _kohya_source(source)
    out = tmp_path / "peft"
    report = convert(source, out, to="peft")
    assert report.max_abs_error == 0.0 and report.modules == 4
    assert sorted(p.name for p in out.iterdir()) == ["text_encoder", "unet"]
    config = json.loads((out / "unet" / "adapter_config.json").read_text())
    path = "down_blocks.0.attentions.0.transformer_blocks.0"
    assert config["peft_type"] == "LORA"
    ranks = {m: config["rank_pattern"].get(m, config["r"]) for m in config["target_modules"]}
    alphas = {m: config["alpha_pattern"].get(m, config["lora_alpha"]) for m in config["target_modules"]}
    assert ranks == {f"{path}.attn1.to_q": 4, f"{path}.attn2.to_k": 8, "down_blocks.0.resnets.0.conv1": 4}
    assert alphas == {f"{path}.attn1.to_q": 2, f"{path}.attn2.to_k": 8, "down_blocks.0.resnets.0.conv1": 3}
    weights = _values(out / "unet" / "adapter_model.safetensors")
    up, down, _ = modules[f"{UNET}_attn2_to_k"]
    assert np.array_equal(weights[f"base_model.model.{path}.attn2.to_k.lora_B.weight"], up)
    assert np.array_equal(weights[f"base_model.model.{path}.attn2.to_k.lora_A.weight"], down)
    back = convert(out, tmp_path / "back.safetensors", to="kohya")
    assert back.source_format == "peft" and back.max_abs_error == 0.0
    original, result = _values(source), _values(tmp_path / "back.safetensors")
    assert original.keys() == result.keys()
    for key, value in original.items():
        assert np.array_equal(result[key], value), key


def test_peft_config_reads_in_peft_and_scales_match(tmp_path: Path) -> None:
    """PEFT's own ``LoraConfig.from_pretrained`` parses the config; its per-module ``alpha/r`` gives our ΔW."""
    peft = pytest.importorskip("peft")
    source = tmp_path / "kohya.safetensors"
    modules = _kohya_source(source)
    convert(source, tmp_path / "peft", to="peft")
    config = peft.LoraConfig.from_pretrained(str(tmp_path / "peft" / "unet"))
    weights = _values(tmp_path / "peft" / "unet" / "adapter_model.safetensors")
    kohya_of = {m.removeprefix("lora_unet_").replace("_", "."): m for m in modules}
    other = pytest.importorskip("peft.utils.other")
    for target in config.target_modules:
        r = config.rank_pattern.get(other.get_pattern_key(list(config.rank_pattern), target), config.r)
        alpha = config.alpha_pattern.get(other.get_pattern_key(list(config.alpha_pattern), target), config.lora_alpha)
        a = weights[f"base_model.model.{target}.lora_A.weight"]
        b = weights[f"base_model.model.{target}.lora_B.weight"]
        up, down, scale = modules[kohya_of[target.replace("_", ".")]]
        np.testing.assert_allclose(_delta(b, a, alpha / r), _delta(up, down, scale), rtol=1e-12)


def test_peft_single_component_writes_into_the_folder(tmp_path: Path) -> None:
    source = tmp_path / "unet_only.safetensors"
    gen = np.random.default_rng(1)
    down, up = gen.standard_normal((4, 320)).astype(np.float32), gen.standard_normal((320, 4)).astype(np.float32)
    write(
        source,
        {
            f"{UNET}_attn1_to_v.lora_down.weight": ("F32", down.shape, down.tobytes()),
            f"{UNET}_attn1_to_v.lora_up.weight": ("F32", up.shape, up.tobytes()),
            f"{UNET}_attn1_to_v.alpha": ("F32", (), np.float32(1.0).tobytes()),
        },
        {"ss_base_model_version": "sd_v1"},
    )
    convert(source, tmp_path / "p", to="peft")
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert load_adapter(tmp_path / "p").family == "sd1"


# --- full ----------------------------------------------------------------------------------------------------------


def test_full_diff_is_the_explicit_delta(tmp_path: Path) -> None:
    source = tmp_path / "kohya.safetensors"
    modules = _kohya_source(source)
    out = tmp_path / "full.safetensors"
    report = convert(source, out, to="full")
    assert report.max_rel_error <= 1e-6
    values = _values(out)
    assert {k.rsplit(".", 1)[1] for k in values} == {"diff"}
    for name, (up, down, scale) in modules.items():
        np.testing.assert_allclose(values[f"{name}.diff"], _delta(up, down, scale), rtol=1e-5, atol=1e-5)
    assert values["lora_unet_down_blocks_0_resnets_0_conv1.diff"].shape == (320, 320, 3, 3)
    assert read_adapter(out).source_format == "lycoris"


def test_full_keeps_names_of_an_unknown_architecture(tmp_path: Path) -> None:
    gen = np.random.default_rng(5)
    down, up = gen.standard_normal((2, 16)).astype(np.float32), gen.standard_normal((24, 2)).astype(np.float32)
    name = "lora_unet_mystery_block_7_proj"
    write(
        tmp_path / "odd.safetensors",
        {
            f"{name}.lora_down.weight": ("F32", down.shape, down.tobytes()),
            f"{name}.lora_up.weight": ("F32", up.shape, up.tobytes()),
            f"{name}.alpha": ("F32", (), np.float32(1.0).tobytes()),
        },
    )
    with pytest.raises(Exception, match="cannot be converted"):
        convert(tmp_path / "odd.safetensors", tmp_path / "k.safetensors", to="kohya")
    report = convert(tmp_path / "odd.safetensors", tmp_path / "full.safetensors", to="full")
    assert report.family == "unknown" and report.max_rel_error <= 1e-6
    values = _values(tmp_path / "full.safetensors")
    assert list(values) == [f"{name}.diff"]
    np.testing.assert_allclose(values[f"{name}.diff"], _delta(up, down, 0.5), rtol=1e-6)


def test_example_lora_through_every_writer_and_back(tmp_path: Path) -> None:
    source = tmp_path / "example.safetensors"
    write_example_lora(source, rank=4, alpha=2.0)
    for target in ("peft", "comfyui"):
        out = tmp_path / target
        first = convert(source, out, to=target)  # type: ignore[arg-type]
        assert first.max_abs_error == 0.0 and first.modules == 264
        back = convert(out, tmp_path / f"{target}-back.safetensors", to="kohya")
        assert back.max_abs_error == 0.0 and back.modules == 264


# --- the lean path -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["kohya", "diffusers", "comfyui"])
@pytest.mark.parametrize("dtype", [None, "bf16"])
def test_streaming_path_writes_what_the_canonical_path_writes(tmp_path: Path, target: str, dtype: str | None) -> None:
    """convert() takes the memory-lean path for these files; its output is byte-identical to the canonical writer's
    and its check reports the same errors."""
    from lorahub.adapters.check import compare
    from lorahub.adapters.streaming import stream_convert
    from lorahub.adapters.writers import write_adapter

    source = tmp_path / "kohya.safetensors"
    _kohya_source(source)
    tucker = tmp_path / "tucker.safetensors"
    gen = np.random.default_rng(9)
    down, mid = gen.standard_normal((4, 320, 1, 1)).astype(np.float32), gen.standard_normal((4, 4, 3, 3))
    up = gen.standard_normal((320, 4, 1, 1)).astype(np.float32)
    name = "lora_unet_down_blocks_0_resnets_1_conv2"
    write(
        tucker,
        {
            f"{name}.lora_down.weight": ("F32", down.shape, down.tobytes()),
            f"{name}.lora_mid.weight": ("F32", mid.shape, mid.astype(np.float32).tobytes()),
            f"{name}.lora_up.weight": ("F32", up.shape, up.tobytes()),
            f"{UNET}_attn1_to_k.lora_down.weight": ("F32", (4, 320), down.reshape(4, 320).tobytes()),
            f"{UNET}_attn1_to_k.lora_up.weight": ("F32", (320, 4), up.reshape(320, 4).tobytes()),
        },
        {"ss_base_model_version": "sd_v1", "sshs_model_hash": "0" * 64},
    )
    for path in (source, tucker):
        lean, canonical = tmp_path / f"lean-{path.name}", tmp_path / f"canonical-{path.name}"
        report = stream_convert(path, lean, to=target, dtype=dtype, check=True)
        assert report is not None
        adapter = load_adapter(path)
        written = write_adapter(adapter, canonical, to=target, dtype=dtype)  # type: ignore[arg-type]
        assert lean.read_bytes() == canonical.read_bytes()
        expected = compare(adapter, written)
        assert report.per_module.keys() == expected.keys()
        for module, errors_ in expected.items():
            assert report.per_module[module] == pytest.approx(errors_, rel=1e-6, abs=1e-12), module
        assert report.unmapped == []
    loha = tmp_path / "loha.safetensors"
    write(loha, {f"{UNET}_attn1_to_q.hada_w1_a": ("F32", (320, 1), np.zeros(320, np.float32).tobytes())})
    assert stream_convert(loha, tmp_path / "x.safetensors", to=target, dtype=dtype, check=True) is None


def test_peer_peft_loads_the_folder_and_merges_our_delta(tmp_path: Path) -> None:
    """PEFT itself: ``PeftModel.from_pretrained`` on a model with the same module paths (Linear/Conv2d of the real
    shapes) loads every tensor, and ``merge_and_unload`` adds exactly the source ΔW."""
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    source = tmp_path / "kohya.safetensors"
    modules = _kohya_source(source)
    convert(source, tmp_path / "peft", to="peft")
    folder = tmp_path / "peft" / "unet"
    config = json.loads((folder / "adapter_config.json").read_text())
    model = torch.nn.Module()
    originals = {}
    for path in config["target_modules"]:
        kohya = "lora_unet_" + path.replace(".", "_")
        up, down, _ = modules[kohya]
        if down.ndim == 4:
            layer: Any = torch.nn.Conv2d(down.shape[1], up.shape[0], down.shape[2:], padding=1, bias=False)
        else:
            layer = torch.nn.Linear(down.shape[1], up.shape[0], bias=False)
        parent = model
        *parents, leaf = path.split(".")
        for part in parents:
            if not hasattr(parent, part):
                parent.add_module(part, torch.nn.Module())
            parent = getattr(parent, part)
        parent.add_module(leaf, layer)
        originals[path] = layer.weight.detach().clone()
    with _no_missing_keys():
        peft_model = peft.PeftModel.from_pretrained(model, str(folder))
    merged = peft_model.merge_and_unload()
    for path, before in originals.items():
        after = merged.get_submodule(path).weight.detach()
        up, down, scale = modules["lora_unet_" + path.replace(".", "_")]
        np.testing.assert_allclose((after - before).double().numpy(), _delta(up, down, scale), atol=2e-5, rtol=1e-4)


class _no_missing_keys:
    """Fail on PEFT's "missing/unexpected keys" warnings while loading."""

    def __enter__(self) -> None:
        import warnings

        self._catch = warnings.catch_warnings(record=True)
        self._seen = self._catch.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc: object) -> None:
        self._catch.__exit__(*exc)
        bad = [str(w.message) for w in self._seen if "keys" in str(w.message).lower()]
        assert not bad, bad


def test_a_component_mixing_rslora_and_plain_layers_states_the_plain_rule(tmp_path: Path) -> None:
    """A PEFT config has one ``use_rslora`` per component: with both rules in one component (as the canonical model
    can hold), the rsLoRA layer is written with the equivalent alpha·√r, and every layer keeps its ΔW."""
    from lorahub.adapters.canonical import CanonicalAdapter, CanonicalLayer
    from lorahub.adapters.check import compare
    from lorahub.adapters.writers import write_adapter

    gen = np.random.default_rng(3)
    block = "unet.down_blocks.0.attentions.0.transformer_blocks.0"
    layers = {}
    for name, rslora in ((f"{block}.attn1.to_q", True), (f"{block}.attn1.to_k", False)):
        down = gen.standard_normal((4, 320)).astype(np.float32)
        up = gen.standard_normal((320, 4)).astype(np.float32)
        layers[name] = CanonicalLayer(name, "lora", {"down": down, "up": up}, 8.0, "F32", rslora=rslora)
    adapter = CanonicalAdapter("sd1", layers, {}, "diffusers")
    written = write_adapter(adapter, tmp_path / "mixed.safetensors", to="diffusers")
    config = json.loads(read_header(tmp_path / "mixed.safetensors").metadata["lora_adapter_metadata"])
    assert config["unet.use_rslora"] is False
    path = "down_blocks.0.attentions.0.transformer_blocks.0.attn1"
    pattern, common = config["unet.alpha_pattern"], config["unet.lora_alpha"]
    alphas = {leaf: pattern.get(f"{path}.{leaf}", common) for leaf in ("to_q", "to_k")}
    assert alphas == {"to_q": 16.0, "to_k": 8.0}
    assert not any(layer.rslora for layer in written.layers.values())
    assert all(rel <= 1e-6 for _, rel in compare(adapter, written).values())
    q = written.layers[f"{block}.attn1.to_q"]
    explicit = 8.0 / 2.0 * _delta(layers[q.name].tensors["up"], layers[q.name].tensors["down"], 1.0)
    np.testing.assert_allclose(q.delta().weight, explicit, rtol=1e-5)
