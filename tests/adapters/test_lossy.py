"""--lossy: every LyCORIS kind → plain LoRA by truncated SVD, the reported error checked against an explicit
reference (ΔW written out by hand here, then numpy's dense SVD truncated at the same rank); refusals without
--lossy or --base; resize through QR against the dense SVD; pickled inputs.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lorahub import errors
from lorahub.adapters.convert import convert
from lorahub.adapters.resize import product_svd, resize
from lorahub.adapters.sources import load_adapter
from lorahub.files.numeric import to_float32
from lorahub.files.safetensors import SafetensorsFile, write

BLOCK = "down_blocks.0.attentions.0.transformer_blocks.0"
KOHYA = f"lora_unet_{BLOCK.replace('.', '_')}"
RANK = 4


def _f32(gen: np.random.Generator, *shape: int) -> Any:
    return gen.standard_normal(shape).astype(np.float32)


def _cases(gen: np.random.Generator, base: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """kohya-named modules of every kind (tensors by file suffix) and their ΔW written out explicitly."""
    w = {name: base[name].astype(np.float64) for name in base}
    mods: dict[str, dict[str, Any]] = {}
    ref: dict[str, Any] = {}
    # LoHa: (w1a·w1b) ⊙ (w2a·w2b) · alpha/r
    t = {"hada_w1_a": _f32(gen, 320, 4), "hada_w1_b": _f32(gen, 4, 320), "hada_w2_a": _f32(gen, 320, 4)}
    t |= {"hada_w2_b": _f32(gen, 4, 320), "alpha": np.float32(2.0)}
    mods["attn1.to_q"] = t
    ref["attn1.to_q"] = (t["hada_w1_a"] @ t["hada_w1_b"]) * (t["hada_w2_a"] @ t["hada_w2_b"]).astype(np.float64) / 2
    # LoKr: kron(w1, w2a·w2b) · alpha/r(w2)
    t = {"lokr_w1": _f32(gen, 4, 4), "lokr_w2_a": _f32(gen, 80, 2), "lokr_w2_b": _f32(gen, 2, 80)}
    t["alpha"] = np.float32(1.0)
    mods["attn1.to_k"] = t
    ref["attn1.to_k"] = np.kron(t["lokr_w1"], t["lokr_w2_a"] @ t["lokr_w2_b"]).astype(np.float64) * 0.5
    # full: the diff itself
    t = {"diff": _f32(gen, 320, 320) * 0.01}
    mods["attn1.to_v"] = t
    ref["attn1.to_v"] = t["diff"].astype(np.float64)
    # GLoRA (new layout): (W·a1·a2 + b1·b2) · alpha/r
    t = {"a1.weight": _f32(gen, 320, 4), "a2.weight": _f32(gen, 4, 320), "b1.weight": _f32(gen, 320, 4)}
    t |= {"b2.weight": _f32(gen, 4, 320), "alpha": np.float32(4.0)}
    mods["attn1.to_out.0"] = t
    wo = w[f"{BLOCK}.attn1.to_out.0"]
    ref["attn1.to_out.0"] = wo @ t["a1.weight"] @ t["a2.weight"] + t["b1.weight"] @ t["b2.weight"]
    # OFT (no constraint): rows of each block rotated by Rᵀ, R = (I+Q)(I−Q)⁻¹, Q = B − Bᵀ
    blocks = _f32(gen, 4, 80, 80) * 0.01
    mods["attn2.to_q"] = {"oft_blocks": blocks, "alpha": np.float32(0.0)}
    wq = w[f"{BLOCK}.attn2.to_q"]
    rotated = np.zeros_like(wq)
    for k in range(4):
        q = blocks[k].astype(np.float64) - blocks[k].T
        r = (np.eye(80) + q) @ np.linalg.inv(np.eye(80) - q)
        rotated[k * 80 : (k + 1) * 80] = r.T @ wq[k * 80 : (k + 1) * 80]
    ref["attn2.to_q"] = rotated - wq
    # IA3 on the output axis: W ⊙ w
    vec = _f32(gen, 320)
    mods["attn2.to_v"] = {"weight": vec, "on_input": np.zeros((), np.float32)}
    ref["attn2.to_v"] = w[f"{BLOCK}.attn2.to_v"] * vec[:, None]
    # DoRA on a LoRA: m · (W+ΔW)/‖W+ΔW‖ per output row, minus W
    down, up = _f32(gen, 4, 320), _f32(gen, 320, 4) * 0.1
    mag = np.abs(_f32(gen, 320, 1)) + 1
    mods["attn2.to_out.0"] = {"lora_down.weight": down, "lora_up.weight": up, "alpha": np.float32(4.0)}
    mods["attn2.to_out.0"]["dora_scale"] = mag
    wd = w[f"{BLOCK}.attn2.to_out.0"]
    combined = wd + up.astype(np.float64) @ down
    ref["attn2.to_out.0"] = mag * combined / np.linalg.norm(combined, axis=1, keepdims=True) - wd
    return mods, ref


def _write(path: Path, mods: dict[str, dict[str, Any]]) -> None:
    tensors = {}
    for module, roles in mods.items():
        for suffix, value in roles.items():
            array = np.asarray(value, dtype=np.float32)
            tensors[f"{KOHYA}_{module.replace('.', '_')}.{suffix}"] = ("F32", array.shape, array.tobytes())
    write(path, tensors, {"ss_base_model_version": "sd_v1", "ss_network_module": "lycoris.kohya"})


def _base(path: Path, gen: np.random.Generator) -> dict[str, Any]:
    """A diffusers-named UNet component file holding just the weights the base-dependent kinds need."""
    shapes = {f"{BLOCK}.attn1.to_out.0": (320, 320), f"{BLOCK}.attn2.to_q": (320, 320)}
    shapes |= {f"{BLOCK}.attn2.to_v": (320, 768), f"{BLOCK}.attn2.to_out.0": (320, 320)}
    values = {name: _f32(gen, *shape) * 0.05 for name, shape in shapes.items()}
    write(path, {f"{n}.weight": ("F32", v.shape, v.tobytes()) for n, v in values.items()})
    return values


def _truncation_error(delta: Any, rank: int) -> tuple[float, float]:
    u, s, vt = np.linalg.svd(delta, full_matrices=False)
    approx = (u[:, :rank] * s[:rank]) @ vt[:rank]
    diff = float(np.abs(delta - approx).max())
    return diff, diff / float(np.abs(delta).max())


@pytest.fixture(scope="module")
def lycoris(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("lycoris")
    gen = np.random.default_rng(11)
    base = _base(tmp / "base.safetensors", gen)
    mods, ref = _cases(gen, base)
    # IA3's vector is per output row of attn2.to_v (320 outputs, 768 inputs)
    _write(tmp / "lycoris.safetensors", mods)
    return tmp / "lycoris.safetensors", tmp / "base.safetensors", ref


def test_lossy_errors_match_the_explicit_reference(lycoris: tuple[Path, Path, dict[str, Any]], tmp_path: Path) -> None:
    source, base, ref = lycoris
    out = tmp_path / "lora.safetensors"
    report = convert(source, out, to="kohya", lossy=True, rank=RANK, base=base)
    assert report.modules == len(ref) == len(report.lossy)
    assert set(report.ranks.values()) == {RANK}
    written = load_adapter(out)
    for module, delta in ref.items():
        name = f"unet.{BLOCK}.{module}"
        expected_abs, expected_rel = _truncation_error(delta, RANK)
        got_abs, got_rel = report.per_module[name]
        assert got_abs == pytest.approx(expected_abs, rel=1e-4), module
        assert got_rel == pytest.approx(expected_rel, rel=1e-4), module
        layer = written.layers[name]
        assert layer.kind == "lora" and layer.rank == RANK and layer.alpha == RANK
        u, s, vt = np.linalg.svd(delta, full_matrices=False)
        best = (u[:, :RANK] * s[:RANK]) @ vt[:RANK]
        np.testing.assert_allclose(layer.tensors["up"] @ layer.tensors["down"], best, atol=1e-5 * np.abs(best).max())


def test_lossy_to_diffusers_and_comfyui_too(lycoris: tuple[Path, Path, dict[str, Any]], tmp_path: Path) -> None:
    source, base, ref = lycoris
    for target in ("diffusers", "comfyui", "peft"):
        report = convert(source, tmp_path / target, to=target, lossy=True, rank=RANK, base=base)  # type: ignore[arg-type]
        loha = report.per_module[f"unet.{BLOCK}.attn1.to_q"]
        assert loha[0] == pytest.approx(_truncation_error(ref["attn1.to_q"], RANK)[0], rel=1e-4)


def test_full_target_is_exact_with_the_base(lycoris: tuple[Path, Path, dict[str, Any]], tmp_path: Path) -> None:
    source, base, ref = lycoris
    out = tmp_path / "full.safetensors"
    report = convert(source, out, to="full", base=base)
    assert report.max_rel_error <= 1e-6 and not report.lossy
    with SafetensorsFile(out) as f:
        for module, delta in ref.items():
            key = f"{KOHYA}_{module.replace('.', '_')}.diff"
            got = to_float32(f.raw(key), f.header.tensors[key])
            np.testing.assert_allclose(got, delta, atol=1e-6 * np.abs(delta).max() + 1e-12)


def test_without_lossy_every_kind_is_refused(lycoris: tuple[Path, Path, dict[str, Any]], tmp_path: Path) -> None:
    source, base, _ = lycoris
    out = tmp_path / "x.safetensors"
    for target in ("kohya", "diffusers", "peft", "comfyui"):
        with pytest.raises(errors.ConversionRefusedError, match="cannot be converted exactly") as caught:
            convert(source, out, to=target, base=base)  # type: ignore[arg-type]
        assert "--lossy" in (caught.value.hint or "")
        assert len(caught.value.report.refused) == 7  # type: ignore[attr-defined]
    assert not out.exists()


def test_base_dependent_kinds_need_the_base(lycoris: tuple[Path, Path, dict[str, Any]], tmp_path: Path) -> None:
    source, _, _ = lycoris
    with pytest.raises(errors.LorahubError, match="depends on the base weight") as caught:
        convert(source, tmp_path / "x.safetensors", to="kohya", lossy=True, rank=RANK)
    assert "--base" in (caught.value.hint or "")
    empty = tmp_path / "empty_base.safetensors"
    write(empty, {"unrelated.weight": ("F32", (1,), np.float32(0).tobytes())})
    with pytest.raises(errors.LorahubError, match="has no weight for") as missing:
        convert(source, tmp_path / "x.safetensors", to="kohya", lossy=True, rank=RANK, base=empty)
    assert "base checkpoint" in (missing.value.hint or "")


def test_default_rank_is_the_modules_own(tmp_path: Path) -> None:
    gen = np.random.default_rng(2)
    t = {"hada_w1_a": _f32(gen, 320, 3), "hada_w1_b": _f32(gen, 3, 320), "hada_w2_a": _f32(gen, 320, 3)}
    t |= {"hada_w2_b": _f32(gen, 3, 320), "alpha": np.float32(3.0)}
    _write(tmp_path / "loha.safetensors", {"attn1.to_q": t})
    report = convert(tmp_path / "loha.safetensors", tmp_path / "o.safetensors", to="kohya", lossy=True)
    assert report.ranks == {f"unet.{BLOCK}.attn1.to_q": 3}


# --- resize ----------------------------------------------------------------------------------------------------------


def _small_lora(path: Path, rank: int = 8) -> None:
    """Four SD1 modules at real shapes, fp16, alpha = rank/2 (scale 0.5)."""
    gen = np.random.default_rng(4)
    mods = {}
    for module, fan_in in (("attn1.to_q", 320), ("attn1.to_k", 320), ("attn2.to_k", 768), ("ff.net.2", 1280)):
        down, up = _f32(gen, rank, fan_in).astype(np.float16), _f32(gen, 320, rank).astype(np.float16)
        mods[module] = {"lora_down.weight": down, "lora_up.weight": up, "alpha": np.float32(rank / 2)}
    tensors = {}
    for module, roles in mods.items():
        for suffix, value in roles.items():
            array = np.asarray(value)
            dtype = "F16" if array.dtype == np.float16 else "F32"
            tensors[f"{KOHYA}_{module.replace('.', '_')}.{suffix}"] = (dtype, array.shape, array.tobytes())
    write(path, tensors, {"ss_base_model_version": "sd_v1", "ss_network_module": "networks.lora"})


def test_product_svd_equals_the_dense_svd() -> None:
    gen = np.random.default_rng(0)
    up, down = gen.standard_normal((200, 8)), gen.standard_normal((8, 150))
    svd = product_svd(up, down)
    dense = np.linalg.svd(up @ down, compute_uv=False)
    np.testing.assert_allclose(svd.s, dense[:8], rtol=1e-10)
    np.testing.assert_allclose((svd.u * svd.s) @ svd.vt, up @ down, atol=1e-10)


def test_resize_rank_and_energy(tmp_path: Path) -> None:
    source = tmp_path / "small.safetensors"
    _small_lora(source)
    report = resize(source, tmp_path / "r3.safetensors", rank=3)
    assert report.target == "kohya" and report.modules == 4
    adapter = load_adapter(source)
    written = load_adapter(tmp_path / "r3.safetensors")
    for name in adapter.layers:
        layer = adapter.layers[name]
        delta = (layer.tensors["up"].astype(np.float64) @ layer.tensors["down"]) * 0.5
        s = np.linalg.svd(delta, compute_uv=False)
        expected_energy = float((s[:3] ** 2).sum() / (s**2).sum())
        resized = report.per_module[name]
        assert resized.rank_after == 3 and resized.kept_energy == pytest.approx(expected_energy, rel=1e-9)
        assert resized.max_abs_error == pytest.approx(_truncation_error(delta, 3)[0], rel=2e-2)  # fp16 storage
        assert written.layers[name].rank == 3
    energy = resize(source, tmp_path / "e.safetensors", energy=0.9)
    assert energy.min_kept_energy >= 0.9
    assert all(m.rank_after <= 8 for m in energy.per_module.values())


def test_resize_refuses_lycoris_and_bad_requests(tmp_path: Path) -> None:
    gen = np.random.default_rng(2)
    t = {"diff": _f32(gen, 320, 320)}
    _write(tmp_path / "full.safetensors", {"attn1.to_q": t})
    with pytest.raises(errors.ConversionRefusedError, match="not plain LoRA"):
        resize(tmp_path / "full.safetensors", tmp_path / "o.safetensors", rank=2)
    with pytest.raises(errors.LorahubError, match="exactly one"):
        resize(tmp_path / "full.safetensors", tmp_path / "o.safetensors")


# --- pickled inputs --------------------------------------------------------------------------------------------------


def test_torch_saved_kohya_state_dict_converts_like_its_safetensors(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    source = tmp_path / "small.safetensors"
    _small_lora(source, rank=4)
    with SafetensorsFile(source) as f:
        state = {n: torch.from_numpy(np.array(to_float32(f.raw(n), i))).half() for n, i in f.header.tensors.items()}
    state = {n: (t.float() if n.endswith(".alpha") else t) for n, t in state.items()}
    torch.save(state, tmp_path / "example.pt")
    from_pickle = convert(tmp_path / "example.pt", tmp_path / "a.safetensors", to="diffusers")
    from_safetensors = convert(source, tmp_path / "b.safetensors", to="diffusers")
    assert from_pickle.modules == from_safetensors.modules == 4 and from_pickle.max_abs_error == 0.0
    with SafetensorsFile(tmp_path / "a.safetensors") as a, SafetensorsFile(tmp_path / "b.safetensors") as b:
        assert a.header.tensors.keys() == b.header.tensors.keys()
        for name in a.header.tensors:
            assert bytes(a.raw(name)) == bytes(b.raw(name)), name
    legacy = tmp_path / "legacy.ckpt"
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    resized = resize(legacy, tmp_path / "r.safetensors", rank=2)
    assert resized.modules == 4


class _Marker:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (exec, (f"open({str(self.path)!r}, 'w').close()",))


def test_malicious_pickle_is_refused_before_loading(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"lora_unet_x.lora_down.weight": _Marker(marker)}, protocol=4)
    evil = tmp_path / "evil.pt"
    evil.write_bytes(payload)
    # control: unpickling it really runs the payload (in a child process)
    control = tmp_path / "control.pt"
    control.write_bytes(pickle.dumps({"x": _Marker(tmp_path / "control-ran")}, protocol=4))
    subprocess.run([sys.executable, "-c", f"import pickle; pickle.load(open({str(control)!r}, 'rb'))"], check=True)
    assert (tmp_path / "control-ran").exists()
    with pytest.raises(errors.UnsafePickleError):
        convert(evil, tmp_path / "o.safetensors", to="kohya")
    with pytest.raises(errors.UnsafePickleError):
        resize(evil, tmp_path / "o.safetensors", rank=2)
    assert not marker.exists() and not (tmp_path / "o.safetensors").exists()
    cli = subprocess.run(
        [sys.executable, "-m", "lorahub", "convert", str(evil), str(tmp_path / "o.safetensors"), "--to", "kohya"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert cli.returncode == 5 and "error[pickle-dangerous]" in cli.stderr
    assert not marker.exists()


def test_resize_locon_flattens_the_kernel(tmp_path: Path) -> None:
    gen = np.random.default_rng(6)
    down, up = _f32(gen, 6, 320, 3, 3), _f32(gen, 320, 6, 1, 1)
    name = "lora_unet_down_blocks_0_resnets_0_conv1"
    write(
        tmp_path / "locon.safetensors",
        {
            f"{name}.lora_down.weight": ("F32", down.shape, down.tobytes()),
            f"{name}.lora_up.weight": ("F32", up.shape, up.tobytes()),
            f"{name}.alpha": ("F32", (), np.float32(3.0).tobytes()),
        },
        {"ss_base_model_version": "sd_v1"},
    )
    report = resize(tmp_path / "locon.safetensors", tmp_path / "r.safetensors", rank=2)
    layer = load_adapter(tmp_path / "r.safetensors").layers["unet.down_blocks.0.resnets.0.conv1"]
    assert layer.kind == "locon" and layer.tensors["down"].shape == (2, 320, 3, 3)
    assert layer.tensors["up"].shape == (320, 2, 1, 1)
    delta = up.reshape(320, 6).astype(np.float64) @ down.reshape(6, -1) * 0.5
    got = report.per_module["unet.down_blocks.0.resnets.0.conv1"]
    assert got.max_abs_error == pytest.approx(_truncation_error(delta, 2)[0], rel=1e-4)


def test_lossy_full_rank_conv_lokr_keeps_the_kernel(tmp_path: Path) -> None:
    """Full-rank LoKr (alpha ignored) on a 3×3 conv: ΔW = kron(w1, w2) with w2 4-D; the LoCon written has the kernel."""
    gen = np.random.default_rng(8)
    w1, w2 = _f32(gen, 4, 4), _f32(gen, 80, 80, 3, 3) * 0.1
    name = "lora_unet_down_blocks_0_resnets_0_conv1"
    write(
        tmp_path / "lokr.safetensors",
        {
            f"{name}.lokr_w1": ("F32", w1.shape, w1.tobytes()),
            f"{name}.lokr_w2": ("F32", w2.shape, w2.tobytes()),
            f"{name}.alpha": ("F32", (), np.float32(7.0).tobytes()),
        },
        {"ss_base_model_version": "sd_v1"},
    )
    report = convert(tmp_path / "lokr.safetensors", tmp_path / "o.safetensors", to="kohya", lossy=True, rank=6)
    delta = np.kron(w1[:, :, None, None].astype(np.float64), w2).reshape(320, -1)
    got = report.per_module["unet.down_blocks.0.resnets.0.conv1"]
    assert got[0] == pytest.approx(_truncation_error(delta, 6)[0], rel=1e-4)
    layer = load_adapter(tmp_path / "o.safetensors").layers["unet.down_blocks.0.resnets.0.conv1"]
    assert layer.kind == "locon" and layer.tensors["down"].shape == (6, 320, 3, 3)
