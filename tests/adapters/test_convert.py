"""Exact conversion kohya ↔ diffusers: ΔW preserved, true alpha kept, hashes recomputed, non-LoRA kinds refused.

ΔW references here are computed independently of lorahub (plain numpy ``up @ down · alpha/r``), and the diffusers
output is read back by diffusers/peft themselves where they are installed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest

from lorahub import errors
from lorahub.adapters.convert import ConversionRefusedError, convert
from lorahub.adapters.model import cloneofsimo_names, read_adapter
from lorahub.adapters.names import from_canonical, inventory
from lorahub.dev.example_lora import write_example_lora
from lorahub.files.digests import digest_file
from lorahub.files.numeric import scalar, to_float32
from lorahub.files.safetensors import SafetensorsFile, read_header, write
from lorahub.sdk.exporting import report_dict
from tests.support import REAL, fixture_file

CATUNDCHAT = REAL / "catundchat_sd15_lora__pytorch_lora_weights.safetensors"
CLONEOFSIMO = REAL / "cloneofsimo_lora__analog_svd_rank4.safetensors"
REAL_FILES = [
    pytest.param(CATUNDCHAT, "diffusers-old", 128, id="catundchat"),
    pytest.param(CLONEOFSIMO, "cloneofsimo", 192, id="cloneofsimo"),
]

UNET = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0"
TE = "lora_te_text_model_encoder_layers_0_self_attn"


def _arrays(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    with SafetensorsFile(path) as f:
        values = {}
        for name in f.header.tensors:
            info = f.header.tensors[name]
            values[name] = scalar(f.raw(name), info) if name.endswith(".alpha") else to_float32(f.raw(name), info)
        return values, dict(f.metadata)


def _probe(up: Any, down: Any, scale: float) -> Any:
    """ΔW·X for a fixed random X, ΔW = ``up @ down · scale`` in float64: cheap, and as telling as ΔW itself."""
    up = np.asarray(up, dtype=np.float64).reshape(up.shape[0], -1)
    down = np.asarray(down, dtype=np.float64).reshape(down.shape[0], -1)
    probe = np.random.default_rng(down.shape[1]).standard_normal((down.shape[1], 3))
    result: Any = up @ (down @ probe) * scale
    return result


def _kohya_deltas(path: Path) -> dict[str, Any]:
    """ΔW·X of a kohya file by hand: ``up @ down · alpha/r`` (alpha missing ⇒ r)."""
    values, _ = _arrays(path)
    out = {}
    for key, down in values.items():
        if not key.endswith(".lora_down.weight"):
            continue
        module = key.removesuffix(".lora_down.weight")
        rank = down.shape[0]
        out[module] = _probe(values[f"{module}.lora_up.weight"], down, values.get(f"{module}.alpha", rank) / rank)
    return out


def _write_kohya(path: Path, modules: dict[str, dict[str, Any]], metadata: dict[str, str] | None = None) -> None:
    tensors = {}
    for module, roles in modules.items():
        for suffix, value in roles.items():
            array = np.asarray(value)
            dtype = {np.dtype(np.float16): "F16", np.dtype(np.float32): "F32"}[array.dtype]
            tensors[f"{module}.{suffix}"] = (dtype, array.shape, array.tobytes())
    write(path, tensors, metadata)


def _mixed_kohya(path: Path) -> None:
    """Two ranks, three alphas, one module without alpha, a LoCon conv and a text-encoder module."""
    gen = np.random.default_rng(1)

    def pair(rank: int, fan_in: int, fan_out: int, alpha: float | None) -> dict[str, Any]:
        roles: dict[str, Any] = {
            "lora_down.weight": gen.standard_normal((rank, fan_in)).astype(np.float32),
            "lora_up.weight": gen.standard_normal((fan_out, rank)).astype(np.float32),
        }
        if alpha is not None:
            roles["alpha"] = np.float32(alpha)
        return roles

    conv = {
        "lora_down.weight": gen.standard_normal((4, 320, 3, 3)).astype(np.float32),
        "lora_up.weight": gen.standard_normal((320, 4, 1, 1)).astype(np.float32),
        "alpha": np.float32(1.0),
    }
    modules = {
        f"{UNET}_attn1_to_q": pair(4, 320, 320, 1.5),
        f"{UNET}_attn1_to_k": pair(8, 320, 320, 4.0),
        f"{UNET}_attn2_to_k": pair(4, 768, 320, 1.5),
        f"{UNET}_attn2_to_v": pair(4, 768, 320, None),
        f"{TE}_q_proj": pair(4, 768, 768, 1.5),
        "lora_unet_down_blocks_0_resnets_0_conv1": conv,
    }
    metadata = {
        "ss_network_module": "networks.lora",
        "modelspec.architecture": "stable-diffusion-v1/lora",
        "sshs_model_hash": "0" * 64,
        "sshs_legacy_hash": "deadbeef",
    }
    _write_kohya(path, modules, metadata)


def _check_hash(path: Path) -> dict[str, str]:
    header = read_header(path)
    autov3 = digest_file(path, header, check_values=False).hashes.autov3
    assert header.metadata["sshs_model_hash"] == autov3
    return dict(header.metadata)


# --- real files ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "fmt", "count"), REAL_FILES)
def test_real_file_maps_every_module(path: Path, fmt: str, count: int) -> None:
    fixture_file(path)
    adapter = read_adapter(path)
    assert (adapter.family, adapter.source_format, adapter.unmapped) == ("sd1", fmt, [])
    assert len(adapter.layers) == count
    assert set(adapter.layers) <= set(inventory("sd1"))


def test_cloneofsimo_indices_fit_sd1_shapes() -> None:
    """Index → layer is checked against the SD 1.5 widths of each block (context 768 for attn2 k/v, GEGLU 8×)."""
    fixture_file(CLONEOFSIMO)
    width = {"down_blocks.0": 320, "down_blocks.1": 640, "down_blocks.2": 1280, "mid_block": 1280}
    width |= {"up_blocks.1": 1280, "up_blocks.2": 640, "up_blocks.3": 320}
    adapter = read_adapter(CLONEOFSIMO)
    for name, layer in adapter.layers.items():
        fan_in, fan_out = layer.tensors["down"].shape[1], layer.tensors["up"].shape[0]
        if name.startswith("text_encoder."):
            assert (fan_in, fan_out) == (768, 768)
            continue
        block = re.match(r"unet\.((?:down|up)_blocks\.\d|mid_block)", name)
        assert block is not None
        dim = width[block[1]]
        if name.endswith("ff.net.0.proj"):
            assert (fan_in, fan_out) == (dim, 8 * dim)
        elif re.search(r"attn2\.to_[kv]$", name):
            assert (fan_in, fan_out) == (768, dim)
        else:
            assert (fan_in, fan_out) == (dim, dim), name
    assert len(cloneofsimo_names("sd1")["unet"]) == 144


@pytest.mark.parametrize(
    ("path", "count", "targets"),
    [
        pytest.param(CATUNDCHAT, 128, ("kohya", "diffusers"), id="catundchat-kohya-diffusers"),
        pytest.param(CATUNDCHAT, 128, ("diffusers", "kohya"), id="catundchat-diffusers-kohya"),
        pytest.param(CLONEOFSIMO, 192, ("diffusers", "kohya"), id="cloneofsimo-diffusers-kohya"),
    ],
)
def test_real_file_round_trip(tmp_path: Path, path: Path, count: int, targets: tuple[str, str]) -> None:
    """Source → first target → second target, each checked by the converter; the kohya file is then checked by
    hand against the source factors (these files carry no alpha, so the scale is 1 and kohya alpha must be r)."""
    fixture_file(path)
    first, second = tmp_path / "first.safetensors", tmp_path / "second.safetensors"
    report = convert(path, first, to=targets[0])  # type: ignore[arg-type]
    assert (report.modules, report.unmapped, report.refused) == (count, [], [])
    assert report.max_rel_error <= 1e-6 and len(report.per_module) == count
    back = convert(first, second, to=targets[1])  # type: ignore[arg-type]
    assert back.max_rel_error <= 1e-6 and back.modules == count
    deltas = _kohya_deltas(first if targets[0] == "kohya" else second)
    assert len(deltas) == count
    for layer in read_adapter(path).layers.values():
        kohya_name = from_canonical("sd1", "kohya", layer.name)
        assert kohya_name is not None
        expected = _probe(layer.tensors["up"], layer.tensors["down"], 1.0)
        np.testing.assert_allclose(deltas[kohya_name], expected, rtol=1e-12, atol=0)


def test_dtype_is_kept_and_can_be_changed(tmp_path: Path) -> None:
    fixture_file(CLONEOFSIMO)
    fixture_file(CATUNDCHAT)
    convert(CLONEOFSIMO, tmp_path / "kept.safetensors", to="kohya", check=False)
    header = read_header(tmp_path / "kept.safetensors")
    assert {t.dtype for n, t in header.tensors.items() if not n.endswith(".alpha")} == {"F16"}
    bf16 = convert(CATUNDCHAT, tmp_path / "bf16.safetensors", to="diffusers", dtype="bf16")
    assert {t.dtype for t in read_header(tmp_path / "bf16.safetensors").tensors.values()} == {"BF16"}
    assert 0.0 < bf16.max_rel_error < 2e-2


# --- kohya ↔ diffusers with alphas ---------------------------------------------------------------------------------


def test_example_kohya_through_diffusers_keeps_alpha_and_hash(tmp_path: Path) -> None:
    source = tmp_path / "example.safetensors"
    write_example_lora(source, rank=4, alpha=2.0)
    diffusers_file, back = tmp_path / "diffusers.safetensors", tmp_path / "back.safetensors"
    first = convert(source, diffusers_file, to="diffusers")
    assert first.max_abs_error == 0.0 and first.modules == 264
    config = json.loads(read_header(diffusers_file).metadata["lora_adapter_metadata"])
    assert (config["unet.r"], config["unet.lora_alpha"], config["text_encoder.lora_alpha"]) == (4, 2, 2)
    second = convert(diffusers_file, back, to="kohya")
    assert second.max_abs_error == 0.0
    original, _ = _arrays(source)
    result, _ = _arrays(back)
    assert set(result) == set(original)
    for key, value in original.items():
        assert np.array_equal(result[key], value), key  # alpha 2.0 exactly, factors bit-identical
    metadata = _check_hash(back)
    assert metadata["ss_network_alpha"] == "2.0"


def test_autov3_without_a_claim_is_computed_when_asked(tmp_path: Path) -> None:
    """A header that states no hash leaves AutoV3 to the report (issue 16: the conversion skips the SHA-256); asked
    for, on the lean path and on the canonical one, it is the output's, as ``inspect`` computes it, and JSON has it."""
    fixture_file(CLONEOFSIMO)
    example = tmp_path / "example.safetensors"
    write_example_lora(example, rank=4, alpha=2.0)
    header = read_header(example)
    plain = {k: v for k, v in header.metadata.items() if k != "sshs_model_hash" and not k.startswith("modelspec.")}
    source = tmp_path / "plain.safetensors"
    with SafetensorsFile(example) as f:
        write(source, {n: (t.dtype, t.shape, bytes(f.raw(n))) for n, t in header.tensors.items()}, plain)
    for src, out in ((source, tmp_path / "lean.safetensors"), (CLONEOFSIMO, tmp_path / "canonical.safetensors")):
        report = convert(src, out, to="diffusers")
        assert callable(report._autov3)  # not hashed during the conversion
        written = read_header(out)
        assert not {"sshs_model_hash", "modelspec.hash_sha256"} & set(written.metadata)
        expected = digest_file(out, written, check_values=False).hashes.autov3
        assert report_dict(report)["autov3"] == report.autov3 == expected
        assert "_autov3" not in report_dict(report)


def test_mixed_alphas_and_ranks_survive_both_ways(tmp_path: Path) -> None:
    source = tmp_path / "mixed.safetensors"
    _mixed_kohya(source)
    diffusers_file, back = tmp_path / "diffusers.safetensors", tmp_path / "back.safetensors"
    report = convert(source, diffusers_file, to="diffusers")
    assert report.modules == 6 and report.max_rel_error <= 1e-6
    header = read_header(diffusers_file)
    config = json.loads(header.metadata["lora_adapter_metadata"])
    path = "down_blocks.0.attentions.0.transformer_blocks.0"
    assert config["unet.r"] == 4 and config["unet.rank_pattern"] == {f"{path}.attn1.to_k": 8}
    alphas = {p: config["unet.alpha_pattern"].get(p, config["unet.lora_alpha"]) for p in config["unet.target_modules"]}
    assert alphas[f"{path}.attn1.to_k"] == 4 and alphas[f"{path}.attn1.to_q"] == 1.5
    assert alphas[f"{path}.attn2.to_v"] == 4  # no alpha in kohya: alpha = rank
    assert alphas["down_blocks.0.resnets.0.conv1"] == 1
    assert header.metadata["format"] == "pt"
    convert(diffusers_file, back, to="kohya")
    expected, got = _kohya_deltas(source), _kohya_deltas(back)
    assert set(expected) == set(got)
    for module, delta in expected.items():
        np.testing.assert_allclose(got[module], delta, rtol=1e-6, atol=1e-7)
    values, metadata = _arrays(back)
    assert values[f"{UNET}_attn1_to_k.alpha"] == 4.0 and values[f"{UNET}_attn1_to_q.alpha"] == 1.5
    assert values[f"{UNET}_attn2_to_v.alpha"] == 4.0  # written as rank: scale 1, as before
    metadata = _check_hash(back)
    assert metadata["modelspec.hash_sha256"] == "0x" + metadata["sshs_model_hash"]
    assert "sshs_legacy_hash" not in metadata and metadata["ss_network_module"] == "networks.lora"


def test_tucker_mid_folds_into_diffusers_down(tmp_path: Path) -> None:
    gen = np.random.default_rng(2)
    source = tmp_path / "tucker.safetensors"
    module = {
        "lora_down.weight": gen.standard_normal((4, 320, 1, 1)).astype(np.float32),
        "lora_mid.weight": gen.standard_normal((4, 4, 3, 3)).astype(np.float32),
        "lora_up.weight": gen.standard_normal((320, 4, 1, 1)).astype(np.float32),
        "alpha": np.float32(2.0),
    }
    modules: dict[str, dict[str, Any]] = {"lora_unet_down_blocks_0_resnets_0_conv1": module}
    gen2 = np.random.default_rng(3)
    modules[f"{UNET}_attn2_to_k"] = {
        "lora_down.weight": gen2.standard_normal((4, 768)).astype(np.float32),
        "lora_up.weight": gen2.standard_normal((320, 4)).astype(np.float32),
    }
    _write_kohya(source, modules)
    kohya = convert(source, tmp_path / "k.safetensors", to="kohya")
    assert kohya.max_abs_error == 0.0
    assert "lora_unet_down_blocks_0_resnets_0_conv1.lora_mid.weight" in read_header(tmp_path / "k.safetensors").tensors
    report = convert(source, tmp_path / "d.safetensors", to="diffusers")
    assert report.max_rel_error <= 1e-6


# --- peers -------------------------------------------------------------------------------------------------------


def _peft_deltas(path: Path) -> dict[str, Any]:
    """Our diffusers output as diffusers + peft read it: state dict, then ``lora_alpha/r`` from the metadata."""
    lora_pipeline = pytest.importorskip("diffusers.loaders.lora_pipeline")
    other = pytest.importorskip("peft.utils.other")
    state, alphas, metadata = lora_pipeline.StableDiffusionLoraLoaderMixin.lora_state_dict(
        str(path), return_lora_metadata=True
    )
    assert alphas is None
    out = {}
    for key, value in state.items():
        if not key.endswith(".lora_A.weight"):
            continue
        module = key.removesuffix(".lora_A.weight")
        component, _, rel = module.partition(".")
        config = {k.removeprefix(f"{component}."): v for k, v in metadata.items() if k.startswith(f"{component}.")}
        rank_key = other.get_pattern_key(list(config["rank_pattern"]), rel)
        alpha_key = other.get_pattern_key(list(config["alpha_pattern"]), rel)
        r = config["rank_pattern"].get(rank_key, config["r"])
        alpha = config["alpha_pattern"].get(alpha_key, config["lora_alpha"])
        assert value.shape[0] == r
        out[module] = _probe(state[f"{module}.lora_B.weight"].double().numpy(), value.double().numpy(), alpha / r)
    return out


_OLD_TE = {"to_q_lora": "q_proj", "to_k_lora": "k_proj", "to_v_lora": "v_proj", "to_out_lora": "out_proj"}
_OLD_UNET = {"to_q_lora": "to_q", "to_k_lora": "to_k", "to_v_lora": "to_v", "to_out_lora": "to_out.0"}


def _diffusers_own_deltas(path: Path) -> dict[str, Any]:
    """The kohya file as diffusers' own converter reads it (``network_alphas`` applied), keyed by PEFT path."""
    lora_pipeline = pytest.importorskip("diffusers.loaders.lora_pipeline")
    state, alphas = lora_pipeline.StableDiffusionLoraLoaderMixin.lora_state_dict(str(path))
    out = {}
    for key, value in state.items():
        if not key.endswith(".down.weight"):
            continue
        raw = key.removesuffix(".down.weight")
        up = state[f"{raw}.up.weight"].double().numpy()
        down = value.double().numpy()
        rank = int(down.shape[0])
        alpha = alphas.get(f"{key}.alpha", alphas.get(f"{raw.removesuffix('.lora')}.alpha", rank))
        name = raw.removesuffix(".lora").removesuffix(".lora_linear_layer").replace(".processor.", ".")
        parent, _, child = name.rpartition(".")
        table = _OLD_TE if name.startswith("text_encoder.") else _OLD_UNET
        name = f"{parent}.{table.get(child, child)}"
        out[name] = _probe(up, down, float(alpha) / rank)
    return out


def test_peer_diffusers_reads_our_output_like_its_own_conversion(tmp_path: Path) -> None:
    source = tmp_path / "example.safetensors"
    write_example_lora(source, rank=4, alpha=2.0)
    ours = tmp_path / "ours.safetensors"
    convert(source, ours, to="diffusers", check=False)  # the peers are the check here
    peft_view = _peft_deltas(ours)
    diffusers_view = _diffusers_own_deltas(source)
    assert len(peft_view) == 264 and set(peft_view) == set(diffusers_view)
    for module, delta in diffusers_view.items():
        np.testing.assert_allclose(peft_view[module], delta, rtol=1e-12, atol=0)


def test_peer_alpha_pattern_applies_in_peft(tmp_path: Path) -> None:
    source = tmp_path / "mixed.safetensors"
    _mixed_kohya(source)
    ours = tmp_path / "ours.safetensors"
    convert(source, ours, to="diffusers")
    peft_view = _peft_deltas(ours)
    expected = _kohya_deltas(source)
    assert len(peft_view) == len(expected) == 6
    for module, delta in expected.items():
        canonical = read_adapter(source).layers
        name = next(n for n, layer in canonical.items() if layer.source_name == module)
        np.testing.assert_allclose(peft_view[name], delta, rtol=1e-6, atol=1e-7)


# --- refusals ------------------------------------------------------------------------------------------------------


def test_loha_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    gen = np.random.default_rng(4)
    source = tmp_path / "loha.safetensors"
    loha: dict[str, Any] = {
        f"hada_w{n}_{part}": gen.standard_normal(shape).astype(np.float32)
        for n in (1, 2)
        for part, shape in (("a", (320, 4)), ("b", (4, 320)))
    }
    loha["alpha"] = np.float32(4.0)
    lora = {
        "lora_down.weight": gen.standard_normal((4, 768)).astype(np.float32),
        "lora_up.weight": gen.standard_normal((320, 4)).astype(np.float32),
    }
    _write_kohya(source, {f"{UNET}_attn1_to_q": loha, f"{UNET}_attn2_to_k": lora})
    out = tmp_path / "out.safetensors"
    targets: tuple[Literal["kohya", "diffusers"], ...] = ("kohya", "diffusers")
    for target in targets:
        with pytest.raises(errors.LorahubError, match="cannot be converted exactly") as caught:
            convert(source, out, to=target)
        assert "--lossy" in (caught.value.hint or "")
        assert isinstance(caught.value, ConversionRefusedError)
        assert [r.split(" ")[0] for r in caught.value.report.refused] == [
            "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
        ]
        assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["loha.safetensors"]


def test_unknown_target_and_dtype_are_errors(tmp_path: Path) -> None:
    source = tmp_path / "mixed.safetensors"
    _mixed_kohya(source)
    with pytest.raises(errors.LorahubError, match="unknown target"):
        convert(source, tmp_path / "o.safetensors", to="onnx")  # type: ignore[arg-type]
    with pytest.raises(errors.LorahubError, match="unknown dtype"):
        convert(source, tmp_path / "o.safetensors", to="kohya", dtype="fp8")  # type: ignore[arg-type]
    assert not (tmp_path / "o.safetensors").exists()
