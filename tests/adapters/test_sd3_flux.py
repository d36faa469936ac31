"""SD3 and FLUX.1 conversion kohya ↔ diffusers: ΔW preserved through fused/split projections and swapped rows.

Files are built at real geometry from the shared FLUX key lists (and from SD3 Medium's widths), at a small rank,
zero-filled except a few modules with random values; ΔW is compared through a probe ``ΔW·X`` (X fixed, random) in
float64, computed here by hand from the stored tensors (``up @ down · alpha/rank``, rows stacked or swapped as
docs/reference/sd3-flux-conversion.md says), never through lorahub's ΔW code. Peers: diffusers' own kohya-FLUX LoRA
converter at real FLUX geometry, and diffusers' single-file SD3/FLUX *checkpoint* converters applied to ΔW (ΔW is linear
in the weight, so converting ΔW like a checkpoint weight must give the same per-module ΔW as our conversion).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lorahub.adapters import dit_names
from lorahub.adapters.convert import ConversionRefusedError, convert
from lorahub.adapters.model import read_adapter
from lorahub.files.numeric import scalar, to_float32
from lorahub.files.safetensors import SafetensorsFile, write
from tests.formats.headers import keylist
from tests.support import keylist_file

RANK = 2
Arrays = dict[str, Any]

# --- files -------------------------------------------------------------------------------------------------------


def _write(path: Path, tensors: Arrays, metadata: dict[str, str] | None = None) -> Path:
    out = {}
    for key, value in tensors.items():
        array = np.asarray(value)
        dtype = {np.dtype(np.float16): "F16", np.dtype(np.float32): "F32"}[array.dtype]
        out[key] = (dtype, tuple(array.shape), np.ascontiguousarray(array).tobytes())
    write(path, out, metadata or {})
    return path


def _load(path: Path) -> tuple[Arrays, dict[str, str]]:
    with SafetensorsFile(path) as f:
        values = {}
        for name, info in f.header.tensors.items():
            values[name] = scalar(f.raw(name), info) if not info.shape else to_float32(f.raw(name), info)
        return values, dict(f.metadata)


def _shapes(name: str, rank: int = RANK) -> dict[str, list[int]]:
    """A real key list at ``rank`` (the rank axis of every down/up replaced)."""
    _, shapes = keylist(keylist_file(name))
    out = {}
    for key, shape in shapes.items():
        if key.endswith(("lora_down.weight", "lora_A.weight")):
            out[key] = [rank, *shape[1:]]
        elif key.endswith(("lora_up.weight", "lora_B.weight")):
            out[key] = [shape[0], rank, *shape[2:]]
        else:
            out[key] = shape
    return out


def _fill(shapes: dict[str, list[int]], chosen: Callable[[str], bool], seed: int = 0) -> Arrays:
    """Random fp16 values in the chosen modules, zeros elsewhere; kohya alphas 1.5 (scale 0.75 at rank 2)."""
    rng = np.random.default_rng(seed)
    tensors: Arrays = {}
    for key, shape in shapes.items():
        if key.endswith(".alpha"):
            tensors[key] = np.float32(1.5)
        elif chosen(key):
            tensors[key] = (rng.standard_normal(shape) * 0.05).astype(np.float16)
        else:
            tensors[key] = np.zeros(shape, dtype=np.float16)
    return tensors


def _kohya_pair(tensors: Arrays, name: str, dims: tuple[int, int], alpha: float, rng: Any) -> None:
    fan_in, fan_out = dims
    tensors[f"{name}.lora_down.weight"] = (rng.standard_normal((RANK, fan_in)) * 0.05).astype(np.float16)
    tensors[f"{name}.lora_up.weight"] = (rng.standard_normal((fan_out, RANK)) * 0.05).astype(np.float16)
    tensors[f"{name}.alpha"] = np.float32(alpha)


def _block_diagonal(rng: Any, rows: list[int], rank: int) -> Any:
    up = np.zeros((sum(rows), rank * len(rows)), dtype=np.float16)
    start = 0
    for i, n in enumerate(rows):
        up[start : start + n, i * rank : (i + 1) * rank] = rng.standard_normal((n, rank)) * 0.05
        start += n
    return up


# --- ΔW probes, by hand ------------------------------------------------------------------------------------------


def _x(fan_in: int) -> Any:
    return np.random.default_rng(fan_in).standard_normal((fan_in, 3))


def _probe(down: Any, up: Any, scale: float) -> Any:
    down = np.asarray(down, dtype=np.float64).reshape(down.shape[0], -1)
    up = np.asarray(up, dtype=np.float64).reshape(up.shape[0], -1)
    result: Any = up @ (down @ _x(down.shape[1])) * scale
    return result


def _kohya_probes(values: Arrays) -> dict[str, Any]:
    """Module → ΔW·X of a kohya file (alpha/rank, alpha missing ⇒ scale 1)."""
    out = {}
    for key, down in values.items():
        if key.endswith(".lora_down.weight"):
            module, rank = key.removesuffix(".lora_down.weight"), down.shape[0]
            out[module] = _probe(down, values[f"{module}.lora_up.weight"], values.get(f"{module}.alpha", rank) / rank)
    return out


def _diffusers_probes(values: Arrays, metadata: dict[str, str]) -> dict[str, Any]:
    """Module → ΔW·X of a diffusers file: alpha from ``lora_adapter_metadata`` as PEFT reads it (the first
    ``alpha_pattern`` key matching the path's end, else ``lora_alpha``; no config ⇒ alpha = rank)."""
    config = json.loads(metadata.get("lora_adapter_metadata", "{}"))
    out = {}
    for key, down in values.items():
        if not key.endswith(".lora_A.weight"):
            continue
        module = key.removesuffix(".lora_A.weight")
        component, _, path = module.partition(".")
        rank = down.shape[0]
        alpha = config.get(f"{component}.lora_alpha", rank)
        for pattern, value in config.get(f"{component}.alpha_pattern", {}).items():
            if re.match(rf"(.*\.)?({pattern})$", path):  # PEFT ``get_pattern_key``: first match wins
                alpha = value
                break
        out[module] = _probe(down, values[f"{module}.lora_B.weight"], alpha / rank)
    return out


def _stack(probes: Iterable[Any]) -> Any:
    return np.concatenate(list(probes), axis=0)


def _swap(probe: Any) -> Any:
    """diffusers ``swap_scale_shift``: ``shift, scale = chunk(2); cat([scale, shift])``."""
    shift, scale = np.split(probe, 2)
    return np.concatenate([scale, shift])


def _assert_close(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    assert sorted(actual) == sorted(expected)
    for name, want in expected.items():
        got = actual[name]
        assert got.shape == want.shape, name
        size = float(np.max(np.abs(want), initial=0.0))
        error = float(np.max(np.abs(got - want), initial=0.0))
        assert error <= 1e-6 * size if size else error == 0.0, (name, error, size)


# --- FLUX: expected canonical probes of a kohya file, by docs/reference/sd3-flux-conversion.md ----------------------

QKV = ("to_q", "to_k", "to_v")
ADD_QKV = ("add_q_proj", "add_k_proj", "add_v_proj")
FLUX_RENAMES = {
    "img_mod_lin": "norm1.linear",
    "img_attn_proj": "attn.to_out.0",
    "img_mlp_0": "ff.net.0.proj",
    "img_mlp_2": "ff.net.2",
    "txt_mod_lin": "norm1_context.linear",
    "txt_attn_proj": "attn.to_add_out",
    "txt_mlp_0": "ff_context.net.0.proj",
    "txt_mlp_2": "ff_context.net.2",
    "linear2": "proj_out",
    "modulation_lin": "norm.linear",
}
FLUX_TOP = {
    "img_in": "x_embedder",
    "txt_in": "context_embedder",
    "time_in_in_layer": "time_text_embed.timestep_embedder.linear_1",
    "time_in_out_layer": "time_text_embed.timestep_embedder.linear_2",
    "vector_in_in_layer": "time_text_embed.text_embedder.linear_1",
    "vector_in_out_layer": "time_text_embed.text_embedder.linear_2",
    "guidance_in_in_layer": "time_text_embed.guidance_embedder.linear_1",
    "guidance_in_out_layer": "time_text_embed.guidance_embedder.linear_2",
    "final_layer_linear": "proj_out",
}
FLUX_TOP_DIMS = {  # (in, out) at FLUX.1-dev geometry
    "img_in": (64, 3072),
    "txt_in": (4096, 3072),
    "time_in_in_layer": (256, 3072),
    "time_in_out_layer": (3072, 3072),
    "vector_in_in_layer": (768, 3072),
    "vector_in_out_layer": (3072, 3072),
    "guidance_in_in_layer": (256, 3072),
    "guidance_in_out_layer": (3072, 3072),
    "final_layer_linear": (3072, 64),
    "final_layer_adaLN_modulation_1": (3072, 6144),
}
DOUBLE = re.compile(r"^lora_unet_double_blocks_(\d+)_(\w+)$")
SINGLE = re.compile(r"^lora_unet_single_blocks_(\d+)_(\w+)$")
TE = re.compile(r"^lora_te1_text_model_encoder_layers_(\d+)_(self_attn|mlp)_(\w+)$")


def _flux_canonical_probes(kohya: dict[str, Any]) -> dict[str, Any]:
    """What the canonical (diffusers) layers of a kohya FLUX file must compute, by the rules of
    docs/reference/sd3-flux-conversion.md."""
    out: dict[str, Any] = {}
    for module, probe in kohya.items():
        if m := DOUBLE.match(module):
            block, rest = f"transformer.transformer_blocks.{m.group(1)}", m.group(2)
            if rest in ("img_attn_qkv", "txt_attn_qkv"):
                names = QKV if rest.startswith("img") else ADD_QKV
                for name, chunk in zip(names, np.split(probe, 3), strict=True):
                    out[f"{block}.attn.{name}"] = chunk
            else:
                out[f"{block}.{FLUX_RENAMES[rest]}"] = probe
        elif m := SINGLE.match(module):
            block, rest = f"transformer.single_transformer_blocks.{m.group(1)}", m.group(2)
            if rest == "linear1":
                hidden = probe.shape[0] // 7
                parts = np.split(probe, [hidden, 2 * hidden, 3 * hidden])
                for name, chunk in zip(("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"), parts, strict=True):
                    out[f"{block}.{name}"] = chunk
            else:
                out[f"{block}.{FLUX_RENAMES[rest]}"] = probe
        elif m := TE.match(module):
            out[f"text_encoder.text_model.encoder.layers.{m.group(1)}.{m.group(2)}.{m.group(3)}"] = probe
        elif module == "lora_unet_final_layer_adaLN_modulation_1":
            out["transformer.norm_out.linear"] = _swap(probe)
        else:
            out[f"transformer.{FLUX_TOP[module.removeprefix('lora_unet_')]}"] = probe
    return out


def _nonzero(probes: dict[str, Any]) -> dict[str, Any]:
    return {name: probe for name, probe in probes.items() if np.any(probe)}


FLUX_RANDOM = re.compile(r"^lora_(unet_(double_blocks_(0|18)|single_blocks_(0|37))_|te1_text_model_encoder_layers_0_)")


def _flux_kohya(tmp_path: Path) -> Path:
    """FLUX.1-dev kohya LoRA with CLIP-L (real key list), plus the optional top-level modules, a block-sparse
    ``split_qkv`` qkv (rank 3r, alpha unchanged: sd-scripts#2204) and a block-sparse linear1 with another alpha."""
    tensors = _fill(_shapes("flux_lora_kohya_with_te1_format.json"), lambda key: bool(FLUX_RANDOM.match(key)))
    rng = np.random.default_rng(1)
    for name, (fan_in, fan_out) in FLUX_TOP_DIMS.items():
        _kohya_pair(tensors, f"lora_unet_{name}", (fan_in, fan_out), float(RANK), rng)  # diffusers ignores final alphas
    qkv = "lora_unet_double_blocks_5_img_attn_qkv"
    tensors[f"{qkv}.lora_down.weight"] = (rng.standard_normal((3 * RANK, 3072)) * 0.05).astype(np.float16)
    tensors[f"{qkv}.lora_up.weight"] = _block_diagonal(rng, [3072] * 3, RANK)
    tensors[f"{qkv}.alpha"] = np.float32(RANK)
    linear1 = "lora_unet_single_blocks_10_linear1"
    tensors[f"{linear1}.lora_down.weight"] = (rng.standard_normal((4 * RANK, 3072)) * 0.05).astype(np.float16)
    tensors[f"{linear1}.lora_up.weight"] = _block_diagonal(rng, [3072, 3072, 3072, 12288], RANK)
    tensors[f"{linear1}.alpha"] = np.float32(3.0)
    tensors["lora_unet_double_blocks_0_txt_attn_qkv.alpha"] = np.float32(0.5)
    return _write(
        tmp_path / "flux_kohya.safetensors", tensors, {"ss_base_model_version": "flux1", "ss_network_dim": "2"}
    )


# --- FLUX tests --------------------------------------------------------------------------------------------------


def test_flux_kohya_to_diffusers_and_back(tmp_path: Path) -> None:
    source = _flux_kohya(tmp_path)
    kohya, _ = _load(source)
    expected = _flux_canonical_probes(_kohya_probes(kohya))

    adapter = read_adapter(source)
    assert adapter.family == "flux1" and adapter.unmapped == [] and adapter.unsplit == []
    assert set(adapter.layers) == set(expected)
    sparse = adapter.layers["transformer.transformer_blocks.5.attn.to_k"]
    assert sparse.rank == RANK and sparse.alpha == pytest.approx(RANK / 3)  # own rank slice, scale kept
    dense = adapter.layers["transformer.transformer_blocks.0.attn.add_v_proj"]
    assert dense.rank == RANK and dense.alpha == 0.5  # whole down, same alpha

    report = convert(source, tmp_path / "flux_diffusers.safetensors", to="diffusers")  # with the ΔW check
    assert report.family == "flux1" and report.modules == len(expected)
    assert report.max_abs_error == 0.0  # same factors, same alpha/rank: the check need not build ΔW
    values, diffusers_metadata = _load(tmp_path / "flux_diffusers.safetensors")
    assert diffusers_metadata["ss_base_model_version"] == "flux1"
    _assert_close(_diffusers_probes(values, diffusers_metadata), expected)

    convert(tmp_path / "flux_diffusers.safetensors", tmp_path / "back.safetensors", to="kohya", check=False)
    back, back_metadata = _load(tmp_path / "back.safetensors")
    assert sorted(back) == sorted(kohya)  # one fused module again per native Linear, same ranks
    for key, value in kohya.items():
        if key.endswith(".alpha"):
            assert back[key] == pytest.approx(value, rel=1e-6), key
        else:
            assert np.array_equal(back[key], value), key  # the factors themselves come back, bit for bit
    assert back_metadata["ss_network_dim"] == "2" and "sshs_model_hash" in back_metadata


def _flux_diffusers(tmp_path: Path, keylist_name: str) -> Path:
    """A diffusers FLUX LoRA (real key list) whose q/k/v have different downs, ranks and alphas."""
    shapes = _shapes(keylist_name)
    rng = np.random.default_rng(2)
    chosen = re.compile(r"^transformer\.(transformer_blocks\.(0|7)|single_transformer_blocks\.(0|20))\.")
    tensors: Arrays = {}
    for key, shape in shapes.items():
        if chosen.match(key):
            tensors[key] = (rng.standard_normal(shape) * 0.05).astype(np.float32)
        else:
            tensors[key] = np.zeros(shape, dtype=np.float32)
    to_k = "transformer.transformer_blocks.0.attn.to_k"
    tensors[f"{to_k}.lora_A.weight"] = (rng.standard_normal((3, 3072)) * 0.05).astype(np.float32)
    tensors[f"{to_k}.lora_B.weight"] = (rng.standard_normal((3072, 3)) * 0.05).astype(np.float32)
    config = {
        "transformer.r": RANK,
        "transformer.lora_alpha": 4,
        "transformer.rank_pattern": {"transformer_blocks.0.attn.to_k": 3},
        "transformer.alpha_pattern": {
            "transformer_blocks.0.attn.to_k": 1.5,
            "single_transformer_blocks.0.attn.to_v": 0.25,
        },
    }
    metadata = {"format": "pt", "lora_adapter_metadata": json.dumps(config)}
    return _write(tmp_path / "flux_diffusers.safetensors", tensors, metadata)


@pytest.mark.parametrize(
    "keylist_name", ["flux_lora_diffusers_format.json", "flux_lora_diffusers_no_proj_mlp_format.json"]
)
def test_flux_diffusers_to_kohya_and_back(tmp_path: Path, keylist_name: str) -> None:
    source = _flux_diffusers(tmp_path, keylist_name)
    values, metadata = _load(source)
    expected = _diffusers_probes(values, metadata)

    convert(source, tmp_path / "kohya.safetensors", to="kohya", check=False)
    kohya, _ = _load(tmp_path / "kohya.safetensors")
    fused = _kohya_probes(kohya)
    assert _nonzero(_flux_canonical_probes(fused)).keys() == _nonzero(expected).keys()
    # the fused modules' ΔW is the parts' ΔW stacked by rows (zero rows for proj_mlp when the LoRA has none)
    qkv = fused["lora_unet_double_blocks_0_img_attn_qkv"]
    np.testing.assert_allclose(
        qkv,
        _stack(expected[f"transformer.transformer_blocks.0.attn.{n}"] for n in QKV),
        rtol=0,
        atol=1e-6 * np.abs(qkv).max(),
    )
    assert kohya["lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight"].shape[0] == RANK + 3 + RANK
    linear1 = fused["lora_unet_single_blocks_0_linear1"]
    mlp_name = "transformer.single_transformer_blocks.0.proj_mlp"
    mlp = expected.get(mlp_name, np.zeros((12288, 3)))
    parts = [expected[f"transformer.single_transformer_blocks.0.attn.{n}"] for n in QKV]
    np.testing.assert_allclose(linear1, _stack([*parts, mlp]), rtol=0, atol=1e-6 * np.abs(linear1).max())

    convert(tmp_path / "kohya.safetensors", tmp_path / "back.safetensors", to="diffusers", check=False)
    back, back_metadata = _load(tmp_path / "back.safetensors")
    probes = _diffusers_probes(back, back_metadata)
    _assert_close({name: probes[name] for name in expected}, expected)
    # a fused module whose up is all zero cannot tell which parts existed: every part comes back, adapting nothing
    # (a fresh LoRA, up = 0, keeps its modules); where the LoRA has values, no proj_mlp appears that was not there
    extra = set(probes) - set(expected)
    assert all(not np.any(probes[name]) for name in extra)
    assert not extra & {f"transformer.single_transformer_blocks.{i}.proj_mlp" for i in (0, 20)}


def test_flux_check_reports_the_error_both_ways(tmp_path: Path) -> None:
    """The converter's own ΔW check (dense ΔW per module) on a tiny FLUX (hidden 8): widths come from the tensors."""
    rng = np.random.default_rng(3)
    tensors: Arrays = {}
    h = 8
    for name, (fan_in, fan_out) in {
        "double_blocks_0_img_attn_qkv": (h, 3 * h),
        "double_blocks_0_txt_mod_lin": (h, 6 * h),
        "single_blocks_3_linear1": (h, 7 * h),
        "final_layer_adaLN_modulation_1": (h, 2 * h),
    }.items():
        _kohya_pair(tensors, f"lora_unet_{name}", (fan_in, fan_out), 0.75, rng)
    tensors = {k: v.astype(np.float32) for k, v in tensors.items()}
    source = _write(tmp_path / "small.safetensors", tensors, {"ss_base_model_version": "flux1"})
    there = convert(source, tmp_path / "d.safetensors", to="diffusers")
    back = convert(tmp_path / "d.safetensors", tmp_path / "k.safetensors", to="kohya")
    assert there.modules == 3 + 1 + 4 + 1
    for report in (there, back):
        assert report.family == "flux1" and report.max_rel_error <= 1e-6
    assert sorted(_load(tmp_path / "k.safetensors")[0]) == sorted(tensors)


def test_flux_ai_toolkit_and_onetrainer_names_read_into_the_same_layers(tmp_path: Path) -> None:
    shapes = _shapes("flux_lora_aitoolkit_format.json")
    tensors = _fill(shapes, lambda key: ".double_blocks.1." in key or ".single_blocks.2." in key)
    source = _write(tmp_path / "aitk.safetensors", tensors)
    adapter = read_adapter(source)
    assert adapter.source_format == "ai-toolkit" and adapter.unmapped == []
    assert "transformer.single_transformer_blocks.2.proj_mlp" in adapter.layers
    assert adapter.layers["transformer.transformer_blocks.1.attn.to_q"].alpha is None  # ai-toolkit: scale 1
    convert(source, tmp_path / "k.safetensors", to="kohya", check=False)
    kohya, _ = _load(tmp_path / "k.safetensors")
    assert kohya["lora_unet_double_blocks_1_img_attn_qkv.alpha"] == RANK  # no alpha = scale 1 = alpha rank
    values, _ = _load(source)
    ours = _kohya_probes(kohya)
    for native in ("double_blocks.1.img_attn.qkv", "single_blocks.2.linear1"):
        key = f"diffusion_model.{native}"
        want = _probe(values[f"{key}.lora_A.weight"], values[f"{key}.lora_B.weight"], 1.0)
        np.testing.assert_allclose(ours[f"lora_unet_{native.replace('.', '_')}"], want, rtol=1e-6)


def test_fused_lokr_is_refused_without_lossy(tmp_path: Path) -> None:
    _, shapes = keylist(keylist_file("flux_lokr_bfl_format.json"))
    tensors = {k: (np.float32(1.0) if not s else np.full(s, 0.01, dtype=np.float32)) for k, s in shapes.items()}
    final = "diffusion_model.final_layer.adaLN_modulation.1"  # [shift, scale] rows: a Kronecker delta cannot swap
    tensors |= {f"{final}.lokr_w1": np.full((2, 2), 0.01, np.float32), f"{final}.lokr_w2": np.ones((8, 8), np.float32)}
    source = _write(tmp_path / "lokr.safetensors", tensors)
    adapter = read_adapter(source)
    assert sorted(reason.split(":")[0] for reason in adapter.unsplit) == [
        "diffusion_model.double_blocks.0.img_attn.qkv",
        final,
        "diffusion_model.single_blocks.0.linear1",
    ]
    assert "diffusion_model.double_blocks.0.img_attn.qkv" in adapter.layers  # kept whole, not dropped
    assert "transformer.transformer_blocks.0.attn.to_out.0" in adapter.layers  # unfused LoKr modules just rename
    out = tmp_path / "out.safetensors"
    with pytest.raises(ConversionRefusedError) as refused:
        convert(source, out, to="diffusers")
    assert "fused" in refused.value.message and "--lossy" in (refused.value.hint or "")
    assert not out.exists()


# --- peers: diffusers' own converters ----------------------------------------------------------------------------


def _diffusers_peer_probes(state_dict: dict[str, Any]) -> dict[str, Any]:
    """ΔW·X of a diffusers-converted kohya FLUX state dict (alpha folded into the weights), TE names normalised."""
    out = {}
    for key, value in state_dict.items():
        for down_suffix, up_suffix in (
            (".lora_A.weight", ".lora_B.weight"),
            (".lora_linear_layer.down.weight", ".lora_linear_layer.up.weight"),
            ("_lora.down.weight", "_lora.up.weight"),
        ):
            if key.endswith(down_suffix):
                module = key.removesuffix(down_suffix)
                up = state_dict[module + up_suffix]
                module = re.sub(r"self_attn\.to_(q|k|v|out)$", r"self_attn.\1_proj", module)
                if not module.startswith(("transformer.", "text_encoder.")):
                    module = f"transformer.{module}"  # diffusers leaves top-level modules (img_in, …) unprefixed
                out[module] = _probe(value.float().numpy(), up.float().numpy(), 1.0)
    return out


def test_peer_diffusers_kohya_flux_converter_gives_the_same_delta(tmp_path: Path) -> None:
    """diffusers ``_convert_kohya_flux_lora_to_diffusers`` (FLUX.1-dev geometry hard-coded) on our kohya input vs our
    diffusers output, module by module. Final-layer alphas are rank in the source: diffusers drops them (its
    ``assign_remaining_weights`` does not scale), a difference from sd-scripts that this test does not hide."""
    torch = pytest.importorskip("torch")
    conversion = pytest.importorskip("diffusers.loaders.lora_conversion_utils")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    source = _flux_kohya(tmp_path)
    state = {k: v.to(torch.float32) for k, v in safetensors_torch.load_file(source).items()}
    peer = _diffusers_peer_probes(conversion._convert_kohya_flux_lora_to_diffusers(state))
    convert(source, tmp_path / "ours.safetensors", to="diffusers", check=False)
    values, metadata = _load(tmp_path / "ours.safetensors")
    _assert_close(_diffusers_probes(values, metadata), peer)


def _dense(down: Any, up: Any, scale: float) -> Any:
    down = np.asarray(down, dtype=np.float64)
    up = np.asarray(up, dtype=np.float64)
    weight: Any = (up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1)).reshape(
        (up.shape[0], *down.shape[1:])
    ) * scale
    return weight


def _checkpoint_of_deltas(kohya: Arrays, prefix: str = "lora_unet_") -> dict[str, Any]:
    """A native checkpoint whose Linear weights are the kohya modules' ΔW (biases zero)."""
    torch = pytest.importorskip("torch")
    checkpoint = {}
    for key, down in kohya.items():
        if key.endswith(".lora_down.weight"):
            module, rank = key.removesuffix(".lora_down.weight"), down.shape[0]
            weight = _dense(down, kohya[f"{module}.lora_up.weight"], kohya.get(f"{module}.alpha", rank) / rank)
            checkpoint[module] = torch.from_numpy(weight)
    return checkpoint


def _our_canonical_deltas(path: Path, family: str) -> dict[str, Any]:
    adapter = read_adapter(path, family=family)
    return {
        name: _dense(layer.tensors["down"], layer.tensors["up"], (layer.alpha or layer.rank or 1) / (layer.rank or 1))
        for name, layer in adapter.layers.items()
    }


SD3_TINY = {"hidden": 16, "context": 12, "pooled": 10, "patch_out": 2 * 2 * 4, "depth": 3}


def _sd3_tiny_modules() -> dict[str, tuple[int, int]]:
    """(in, out) of every Linear of a tiny SD3.5-Medium-like MMDiT: dual attention in block 0, pre-only last block."""
    h, depth = SD3_TINY["hidden"], SD3_TINY["depth"]
    modules = {
        "context_embedder": (SD3_TINY["context"], h),
        "t_embedder.mlp.0": (256, h),
        "t_embedder.mlp.2": (h, h),
        "y_embedder.mlp.0": (SD3_TINY["pooled"], h),
        "y_embedder.mlp.2": (h, h),
        "final_layer.linear": (h, SD3_TINY["patch_out"]),
        "final_layer.adaLN_modulation.1": (h, 2 * h),
    }
    for i in range(depth):
        blocks = ["x_block", "context_block"]
        for block in blocks:
            last_context = block == "context_block" and i == depth - 1
            modules[f"joint_blocks.{i}.{block}.attn.qkv"] = (h, 3 * h)
            modules[f"joint_blocks.{i}.{block}.adaLN_modulation.1"] = (
                h,
                (2 if last_context else 9 if i == 0 and block == "x_block" else 6) * h,
            )
            if not last_context:
                modules[f"joint_blocks.{i}.{block}.attn.proj"] = (h, h)
                modules[f"joint_blocks.{i}.{block}.mlp.fc1"] = (h, 4 * h)
                modules[f"joint_blocks.{i}.{block}.mlp.fc2"] = (4 * h, h)
        if i == 0:
            modules[f"joint_blocks.{i}.x_block.attn2.qkv"] = (h, 3 * h)
            modules[f"joint_blocks.{i}.x_block.attn2.proj"] = (h, h)
    return modules


def test_peer_diffusers_sd3_checkpoint_converter_maps_delta_like_a_weight(tmp_path: Path) -> None:
    """``convert_sd3_transformer_checkpoint_to_diffusers`` chunks qkv, renames, and swaps [shift, scale] of the final
    layer and of the last (pre-only) context block; run on ΔW it must give our diffusers layers' ΔW."""
    torch = pytest.importorskip("torch")
    single_file = pytest.importorskip("diffusers.loaders.single_file_utils")
    rng = np.random.default_rng(4)
    tensors: Arrays = {}
    for path, (fan_in, fan_out) in _sd3_tiny_modules().items():
        _kohya_pair(tensors, f"lora_unet_{path.replace('.', '_')}", (fan_in, fan_out), 1.0 + rng.random(), rng)
    tensors = {k: v.astype(np.float32) for k, v in tensors.items()}
    source = _write(tmp_path / "sd3.safetensors", tensors, {"modelspec.architecture": "stable-diffusion-3-medium/lora"})
    names = {f"lora_unet_{p.replace('.', '_')}": p for p in _sd3_tiny_modules()}
    checkpoint = {f"{names[k]}.weight": v for k, v in _checkpoint_of_deltas(tensors).items()}
    for key in list(checkpoint):
        checkpoint[key.replace(".weight", ".bias")] = torch.zeros(checkpoint[key].shape[0], dtype=torch.float64)
    checkpoint["pos_embed"] = torch.zeros(1)
    checkpoint["x_embedder.proj.weight"] = torch.zeros(1)
    checkpoint["x_embedder.proj.bias"] = torch.zeros(1)
    peer = single_file.convert_sd3_transformer_checkpoint_to_diffusers(checkpoint)
    peer = {f"transformer.{k.removesuffix('.weight')}": v.numpy() for k, v in peer.items() if k.endswith(".weight")}
    peer.pop("transformer.pos_embed.proj")

    report = convert(source, tmp_path / "ours.safetensors", to="diffusers")
    assert report.family == "sd3" and report.max_rel_error <= 1e-6
    ours = _our_canonical_deltas(tmp_path / "ours.safetensors", "sd3")
    assert sorted(ours) == sorted(peer)
    for name, weight in peer.items():
        np.testing.assert_allclose(ours[name], weight, rtol=1e-6, atol=1e-9, err_msg=name)


def test_peer_diffusers_flux_checkpoint_converter_maps_delta_like_a_weight(tmp_path: Path) -> None:
    """``convert_flux_transformer_checkpoint_to_diffusers`` (hard-coded 3072/12288 split of ``linear1``, so single
    blocks keep FLUX.1's output widths; input widths are tiny) applied to ΔW, against our diffusers output."""
    torch = pytest.importorskip("torch")
    single_file = pytest.importorskip("diffusers.loaders.single_file_utils")
    h = 8
    modules = {
        "img_in": (6, h), "txt_in": (5, h), "time_in.in_layer": (4, h), "time_in.out_layer": (h, h),
        "vector_in.in_layer": (3, h), "vector_in.out_layer": (h, h), "guidance_in.in_layer": (4, h),
        "guidance_in.out_layer": (h, h), "final_layer.linear": (h, 6), "final_layer.adaLN_modulation.1": (h, 2 * h),
        "single_blocks.0.linear1": (h, 21504), "single_blocks.0.linear2": (15360, h),
        "single_blocks.0.modulation.lin": (h, 3 * h),
    }  # fmt: skip
    for stream in ("img", "txt"):
        modules |= {
            f"double_blocks.0.{stream}_mod.lin": (h, 6 * h),
            f"double_blocks.0.{stream}_attn.qkv": (h, 3 * h),
            f"double_blocks.0.{stream}_attn.proj": (h, h),
            f"double_blocks.0.{stream}_mlp.0": (h, 4 * h),
            f"double_blocks.0.{stream}_mlp.2": (4 * h, h),
        }
    rng = np.random.default_rng(5)
    tensors: Arrays = {}
    for path, (fan_in, fan_out) in modules.items():
        _kohya_pair(tensors, f"lora_unet_{path.replace('.', '_')}", (fan_in, fan_out), 1.0 + rng.random(), rng)
    tensors = {k: v.astype(np.float32) for k, v in tensors.items()}
    source = _write(tmp_path / "flux.safetensors", tensors, {"ss_base_model_version": "flux1"})
    names = {f"lora_unet_{p.replace('.', '_')}": p for p in modules}
    checkpoint = {f"{names[k]}.weight": v for k, v in _checkpoint_of_deltas(tensors).items()}
    for key in list(checkpoint):
        checkpoint[key.replace(".weight", ".bias")] = torch.zeros(checkpoint[key].shape[0], dtype=torch.float64)
    for norm in ("img_attn.norm", "txt_attn.norm"):
        for which in ("query_norm", "key_norm"):
            checkpoint[f"double_blocks.0.{norm}.{which}.scale"] = torch.zeros(1)
    for which in ("query_norm", "key_norm"):
        checkpoint[f"single_blocks.0.norm.{which}.scale"] = torch.zeros(1)
    peer = single_file.convert_flux_transformer_checkpoint_to_diffusers(checkpoint)
    peer = {f"transformer.{k.removesuffix('.weight')}": v.numpy() for k, v in peer.items() if k.endswith(".weight")}
    peer = {k: v for k, v in peer.items() if not k.endswith(("norm_q", "norm_k", "norm_added_q", "norm_added_k"))}

    report = convert(source, tmp_path / "ours.safetensors", to="diffusers")
    assert report.family == "flux1" and report.max_rel_error <= 1e-6
    ours = _our_canonical_deltas(tmp_path / "ours.safetensors", "flux1")
    assert sorted(ours) == sorted(peer)
    for name, weight in peer.items():
        np.testing.assert_allclose(ours[name], weight, rtol=1e-6, atol=1e-9, err_msg=name)


# --- SD3 at SD3 Medium geometry ----------------------------------------------------------------------------------

SD3_MEDIUM = {"hidden": 1536, "depth": 24}


def _sd3_medium_kohya(tmp_path: Path) -> Path:
    h, depth = SD3_MEDIUM["hidden"], SD3_MEDIUM["depth"]
    shapes: dict[str, tuple[int, int]] = {
        "context_embedder": (4096, h),
        "t_embedder_mlp_0": (256, h),
        "y_embedder_mlp_0": (2048, h),
        "final_layer_linear": (h, 64),
        "final_layer_adaLN_modulation_1": (h, 2 * h),
    }
    for i in range(depth):
        for block in ("x_block", "context_block"):
            pre_only = block == "context_block" and i == depth - 1
            shapes[f"joint_blocks_{i}_{block}_attn_qkv"] = (h, 3 * h)
            shapes[f"joint_blocks_{i}_{block}_adaLN_modulation_1"] = (h, (2 if pre_only else 6) * h)
            if not pre_only:
                shapes[f"joint_blocks_{i}_{block}_attn_proj"] = (h, h)
                shapes[f"joint_blocks_{i}_{block}_mlp_fc1"] = (h, 4 * h)
                shapes[f"joint_blocks_{i}_{block}_mlp_fc2"] = (4 * h, h)
    rng = np.random.default_rng(6)
    tensors: Arrays = {}
    for name, (fan_in, fan_out) in shapes.items():
        _kohya_pair(tensors, f"lora_unet_{name}", (fan_in, fan_out), 1.0, rng)
        if not re.match(r"joint_blocks_(0|23)_|final_layer|context_embedder", name):
            tensors[f"lora_unet_{name}.lora_up.weight"][:] = 0
    te = "lora_te1_text_model_encoder_layers_0_self_attn_q_proj"
    _kohya_pair(tensors, te, (768, 768), 4.0, rng)
    _kohya_pair(tensors, "lora_te3_encoder_block_0_layer_0_SelfAttention_q", (4096, 4096), 2.0, rng)
    return _write(tmp_path / "sd3_kohya.safetensors", tensors, {"ss_base_model_version": "medium"})


def test_sd3_kohya_to_diffusers_and_back_at_medium_geometry(tmp_path: Path) -> None:
    source = _sd3_medium_kohya(tmp_path)
    kohya, _ = _load(source)
    probes = _kohya_probes(kohya)
    adapter = read_adapter(source)
    assert adapter.family == "sd3" and adapter.unmapped == [] and adapter.unsplit == []

    convert(source, tmp_path / "d.safetensors", to="diffusers", check=False)
    values, metadata = _load(tmp_path / "d.safetensors")
    ours = _diffusers_probes(values, metadata)
    last = "transformer.transformer_blocks.23"
    # last block: context qkv chunks; its [shift, scale] modulation is swapped, the x_block's 6-chunk one is not
    for name, chunk in zip(
        ADD_QKV, np.split(probes["lora_unet_joint_blocks_23_context_block_attn_qkv"], 3), strict=True
    ):
        np.testing.assert_allclose(ours[f"{last}.attn.{name}"], chunk, rtol=1e-6)
    np.testing.assert_allclose(
        ours[f"{last}.norm1_context.linear"],
        _swap(probes["lora_unet_joint_blocks_23_context_block_adaLN_modulation_1"]),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        ours[f"{last}.norm1.linear"], probes["lora_unet_joint_blocks_23_x_block_adaLN_modulation_1"], rtol=1e-6
    )
    np.testing.assert_allclose(
        ours["transformer.norm_out.linear"], _swap(probes["lora_unet_final_layer_adaLN_modulation_1"]), rtol=1e-6
    )
    np.testing.assert_allclose(
        ours["text_encoder_3.encoder.block.0.layer.0.SelfAttention.q"],
        probes["lora_te3_encoder_block_0_layer_0_SelfAttention_q"],
        rtol=1e-6,
    )
    assert f"{last}.attn.to_add_out" not in ours and len(ours) == len(adapter.layers)

    convert(tmp_path / "d.safetensors", tmp_path / "k.safetensors", to="kohya", check=False)
    back, _ = _load(tmp_path / "k.safetensors")
    assert sorted(back) == sorted(kohya)
    for key, value in kohya.items():
        if key.endswith(".alpha"):
            assert back[key] == pytest.approx(value, rel=1e-6)
        else:
            assert np.array_equal(back[key], value), key


def test_sd3_diffusers_with_different_qkv_ranks_through_kohya(tmp_path: Path) -> None:
    """Split q/k/v with their own downs, ranks and alphas fuse block-diagonally (scales folded) and split back."""
    h = SD3_MEDIUM["hidden"]
    rng = np.random.default_rng(8)
    tensors: Arrays = {}
    ranks = {"to_q": 2, "to_k": 3, "to_v": 1, "add_q_proj": 2, "add_k_proj": 2, "add_v_proj": 2}
    for block in (0, 23):
        for name, rank in ranks.items():
            module = f"transformer.transformer_blocks.{block}.attn.{name}"
            tensors[f"{module}.lora_A.weight"] = (rng.standard_normal((rank, h)) * 0.05).astype(np.float32)
            tensors[f"{module}.lora_B.weight"] = (rng.standard_normal((h, rank)) * 0.05).astype(np.float32)
        module = f"transformer.transformer_blocks.{block}.norm1_context.linear"
        tensors[f"{module}.lora_A.weight"] = (rng.standard_normal((2, h)) * 0.05).astype(np.float32)
        tensors[f"{module}.lora_B.weight"] = (rng.standard_normal(((2 if block == 23 else 6) * h, 2)) * 0.05).astype(
            np.float32
        )
    config = {
        "transformer.r": 2,
        "transformer.lora_alpha": 2,
        "transformer.rank_pattern": {"transformer_blocks.0.attn.to_k": 3, "transformer_blocks.0.attn.to_v": 1},
        "transformer.alpha_pattern": {
            "transformer_blocks.0.attn.to_k": 1.0,
            "transformer_blocks.23.attn.add_v_proj": 8,
        },
    }
    source = _write(tmp_path / "sd3_d.safetensors", tensors, {"lora_adapter_metadata": json.dumps(config)})
    there = convert(source, tmp_path / "k.safetensors", to="kohya")
    back = convert(tmp_path / "k.safetensors", tmp_path / "d.safetensors", to="diffusers")
    assert there.family == back.family == "sd3"
    assert there.max_rel_error <= 1e-6 and back.max_rel_error <= 1e-6
    kohya, _ = _load(tmp_path / "k.safetensors")
    assert kohya["lora_unet_joint_blocks_0_x_block_attn_qkv.lora_down.weight"].shape == (6, h)
    values, metadata = _load(source)
    expected = _diffusers_probes(values, metadata)
    fused = _kohya_probes({k: v for k, v in kohya.items()})
    for block in (0, 23):
        names = [f"transformer.transformer_blocks.{block}.attn.{n}" for n in QKV]
        got = fused[f"lora_unet_joint_blocks_{block}_x_block_attn_qkv"]
        np.testing.assert_allclose(got, _stack(expected[n] for n in names), rtol=0, atol=1e-6 * np.abs(got).max())
    assert dit_names.lookup("sd3", "lora_unet_joint_blocks_23_context_block_adaLN_modulation_1") is not None
    final, _ = _load(tmp_path / "d.safetensors")
    _assert_close(_diffusers_probes(final, _load(tmp_path / "d.safetensors")[1]), expected)


TINY_FLUX = 8  # hidden width of the tiny FluxTransformer2DModel below (1 head of 8)


def _tiny_flux_modules() -> dict[str, tuple[int, int]]:
    """(in, out) of every native Linear of the tiny FLUX model (BFL names)."""
    h = TINY_FLUX
    modules = {
        "img_in": (4, h), "txt_in": (6, h), "time_in.in_layer": (256, h), "time_in.out_layer": (h, h),
        "vector_in.in_layer": (5, h), "vector_in.out_layer": (h, h), "guidance_in.in_layer": (256, h),
        "guidance_in.out_layer": (h, h), "final_layer.linear": (h, 4), "final_layer.adaLN_modulation.1": (h, 2 * h),
        "single_blocks.0.linear1": (h, 7 * h), "single_blocks.0.linear2": (5 * h, h),
        "single_blocks.0.modulation.lin": (h, 3 * h),
    }  # fmt: skip
    for stream in ("img", "txt"):
        modules |= {
            f"double_blocks.0.{stream}_mod.lin": (h, 6 * h),
            f"double_blocks.0.{stream}_attn.qkv": (h, 3 * h),
            f"double_blocks.0.{stream}_attn.proj": (h, h),
            f"double_blocks.0.{stream}_mlp.0": (h, 4 * h),
            f"double_blocks.0.{stream}_mlp.2": (4 * h, h),
        }
    return modules


def test_our_flux_diffusers_output_loads_into_diffusers_with_the_same_delta(tmp_path: Path) -> None:
    """End to end through diffusers + PEFT: a tiny ``FluxTransformer2DModel`` takes our diffusers output with no missing
    or unexpected module, and each injected layer's ``get_delta_weight`` is the kohya ΔW (rows split or swapped as
    docs/reference/sd3-flux-conversion.md says). The top-level ``proj_out`` has its own alpha: PEFT must not give it to
    ``single_transformer_blocks.0.proj_out`` as well (the anchored ``^proj_out`` pattern key)."""
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    rng = np.random.default_rng(9)
    tensors: Arrays = {}
    for path, dims in _tiny_flux_modules().items():
        alpha = 2.5 if path == "final_layer.linear" else 0.5 if path.endswith("qkv") else 1.0
        _kohya_pair(tensors, f"lora_unet_{path.replace('.', '_')}", dims, alpha, rng)
    tensors = {k: v.astype(np.float32) for k, v in tensors.items()}
    source = _write(tmp_path / "tiny.safetensors", tensors, {"ss_base_model_version": "flux1"})
    ours = tmp_path / "ours.safetensors"
    convert(source, ours, to="diffusers")
    state, metadata = diffusers.FluxPipeline.lora_state_dict(str(ours), return_lora_metadata=True)
    with torch.device("cpu"):
        model = diffusers.FluxTransformer2DModel(
            in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=TINY_FLUX, num_attention_heads=1,
            joint_attention_dim=6, pooled_projection_dim=5, guidance_embeds=True, axes_dims_rope=(2, 2, 4),
        )  # fmt: skip
    model.load_lora_adapter(state, prefix="transformer", metadata=metadata, adapter_name="ours")
    peft_layers = {
        f"transformer.{name}": module for name, module in model.named_modules() if hasattr(module, "get_delta_weight")
    }
    expected = _flux_canonical_probes(_kohya_probes(tensors))
    assert sorted(peft_layers) == sorted(expected)
    for name, layer in peft_layers.items():
        delta = layer.get_delta_weight("ours").detach().double().numpy()
        np.testing.assert_allclose(delta @ _x(delta.shape[1]), expected[name], rtol=1e-5, err_msg=name)


def test_comfyui_names_convert_to_the_kohya_names_of_the_same_modules(tmp_path: Path) -> None:
    """ComfyUI spells BFL paths with dots under ``diffusion_model.`` and text encoders under
    ``text_encoders.clip_l.transformer.`` / ``text_encoders.t5xxl.transformer.`` (ComfyUI ``comfy/lora.py``, read by
    diffusers' ``_convert_kohya_flux_lora_to_diffusers``)."""
    h = TINY_FLUX
    modules = {  # ComfyUI name → (kohya name, (in, out))
        "diffusion_model.double_blocks.0.img_attn.qkv": ("lora_unet_double_blocks_0_img_attn_qkv", (h, 3 * h)),
        "diffusion_model.double_blocks.0.img_mod.lin": ("lora_unet_double_blocks_0_img_mod_lin", (h, 6 * h)),
        "diffusion_model.single_blocks.0.linear1": ("lora_unet_single_blocks_0_linear1", (h, 7 * h)),
        "diffusion_model.final_layer.adaLN_modulation.1": ("lora_unet_final_layer_adaLN_modulation_1", (h, 2 * h)),
        "text_encoders.clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj": (
            "lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
            (8, 8),
        ),
        "text_encoders.t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.q": (
            "lora_te3_encoder_block_0_layer_0_SelfAttention_q",
            (8, 8),
        ),
    }
    rng = np.random.default_rng(10)
    tensors: Arrays = {}
    for name, (_, dims) in modules.items():
        _kohya_pair(tensors, name, dims, 1.25, rng)
    source = _write(tmp_path / "comfy.safetensors", tensors, {"ss_base_model_version": "flux1"})
    adapter = read_adapter(source)
    assert adapter.source_format == "comfyui" and adapter.unmapped == []
    assert "text_encoder_2.encoder.block.0.layer.0.SelfAttention.q" in adapter.layers
    report = convert(source, tmp_path / "kohya.safetensors", to="kohya")
    assert report.max_abs_error == 0.0
    kohya, _ = _load(tmp_path / "kohya.safetensors")
    expected = {
        key.replace(name, modules[name][0]): value
        for name in modules
        for key, value in tensors.items()
        if key.startswith(f"{name}.")
    }
    assert sorted(kohya) == sorted(expected)
    for key, value in expected.items():
        assert np.array_equal(np.asarray(kohya[key], dtype=np.float32), np.asarray(value, dtype=np.float32)), key


def test_flux_comfyui_writes_native_fused_modules_and_peft_keeps_diffusers_paths(tmp_path: Path) -> None:
    source = _flux_kohya(tmp_path)
    expected = _flux_canonical_probes(_kohya_probes(_load(source)[0]))
    report = convert(source, tmp_path / "comfy.safetensors", to="comfyui")  # the ΔW check reads it back
    assert report.max_rel_error == 0.0
    keys = list(_load(tmp_path / "comfy.safetensors")[0])
    assert "diffusion_model.double_blocks.5.img_attn.qkv.lora_down.weight" in keys
    assert not any(".to_q." in key for key in keys)
    assert set(read_adapter(tmp_path / "comfy.safetensors").layers) == set(expected)
    peft = convert(source, tmp_path / "peft", to="peft")
    assert peft.max_rel_error == 0.0


def test_fused_lokr_with_lossy_splits_its_dense_delta_and_reports_the_error(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    w1, w2 = rng.standard_normal((3, 2)).astype(np.float32), rng.standard_normal((16, 8)).astype(np.float32)
    qkv = "diffusion_model.double_blocks.0.img_attn.qkv"
    source = _write(
        tmp_path / "lokr.safetensors",
        {f"{qkv}.lokr_w1": w1, f"{qkv}.lokr_w2": w2},
        {"ss_base_model_version": "flux1"},
    )
    out = tmp_path / "out.safetensors"
    report = convert(source, out, to="diffusers", lossy=True, rank=2)
    full = np.kron(w1.astype(np.float64), w2.astype(np.float64))  # the LoKr ΔW (full-rank LoKr: scale 1), 48 × 16
    written = read_adapter(out, family="flux1")
    for i, part in enumerate(("to_q", "to_k", "to_v")):
        expected = full[16 * i : 16 * (i + 1)]
        u, s, vt = np.linalg.svd(expected)
        best = (u[:, :2] * s[:2]) @ vt[:2]  # Eckart-Young: the best rank-2 approximation
        layer = written.layers[f"transformer.transformer_blocks.0.attn.{part}"]
        got = layer.tensors["up"].astype(np.float64) @ layer.tensors["down"].astype(np.float64) * (layer.alpha or 2) / 2
        np.testing.assert_allclose(got, best, atol=1e-4)
        name = f"transformer.transformer_blocks.0.attn.{part}"
        assert report.per_module[name][0] == pytest.approx(np.abs(expected - got).max(), rel=1e-3, abs=1e-5)
    assert report.max_rel_error > 0 and report.lossy
