"""`lorahub convert` from the shell: exact conversions report their error; impossible ones write nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lorahub.files.safetensors import write
from tests.cli.test_catalog_cli import Home
from tests.support import real_file


def test_convert_reports_exactness_and_refuses_loha(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    source = real_file("catundchat_sd15_lora__pytorch_lora_weights.safetensors")
    kohya = tmp_path / "kohya.safetensors"
    report = home.json("convert", str(source), str(kohya), "--to", "kohya")
    assert report["modules"] == 128 and report["max_rel_error"] <= 1e-6  # type: ignore[index]
    inspected = home.json("inspect", str(kohya))
    assert inspected["format"] == "kohya" and inspected["base_model"]["family"] == "sd1"  # type: ignore[index]
    assert inspected["claims"][0]["status"] == "match"  # type: ignore[index]

    rng = np.random.default_rng(0)
    prefix = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    loha = {
        f"{prefix}.hada_w1_a": ("F32", (320, 4), rng.standard_normal((320, 4)).astype("f4").tobytes()),
        f"{prefix}.hada_w1_b": ("F32", (4, 768), rng.standard_normal((4, 768)).astype("f4").tobytes()),
        f"{prefix}.hada_w2_a": ("F32", (320, 4), rng.standard_normal((320, 4)).astype("f4").tobytes()),
        f"{prefix}.hada_w2_b": ("F32", (4, 768), rng.standard_normal((4, 768)).astype("f4").tobytes()),
        f"{prefix}.alpha": ("F32", (), np.float32(4).tobytes()),
    }
    src = tmp_path / "loha.safetensors"
    write(src, loha)
    out = tmp_path / "refused.safetensors"
    refused = home.run("convert", str(src), str(out), "--to", "diffusers", check=False)
    assert refused.returncode != 0 and "error[conversion-refused]" in refused.stderr
    assert not out.exists()
    assert json.loads(home.run("inspect", "--json", str(src)).stdout)["layer_kinds"] == ["loha"]


def _loha_and_lora(path: Path) -> None:
    rng = np.random.default_rng(1)
    prefix = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0"
    tensors = {
        f"{prefix}_attn1_to_q.hada_w1_a": ("F32", (320, 2), rng.standard_normal((320, 2)).astype("f4").tobytes()),
        f"{prefix}_attn1_to_q.hada_w1_b": ("F32", (2, 320), rng.standard_normal((2, 320)).astype("f4").tobytes()),
        f"{prefix}_attn1_to_q.hada_w2_a": ("F32", (320, 2), rng.standard_normal((320, 2)).astype("f4").tobytes()),
        f"{prefix}_attn1_to_q.hada_w2_b": ("F32", (2, 320), rng.standard_normal((2, 320)).astype("f4").tobytes()),
        f"{prefix}_attn1_to_k.lora_down.weight": (
            "F32",
            (8, 320),
            rng.standard_normal((8, 320)).astype("f4").tobytes(),
        ),
        f"{prefix}_attn1_to_k.lora_up.weight": ("F32", (320, 8), rng.standard_normal((320, 8)).astype("f4").tobytes()),
    }
    write(path, tensors, {"ss_base_model_version": "sd_v1"})


def test_convert_lossy_and_resize_report_errors(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    source = tmp_path / "mixed.safetensors"
    _loha_and_lora(source)
    lossy = home.json("convert", str(source), str(tmp_path / "lora.safetensors"), "--to", "comfyui", "--lossy")
    assert lossy["lossy"] == ["unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"]  # type: ignore[index]
    assert lossy["ranks"] == {lossy["lossy"][0]: 2}  # type: ignore[index]
    assert 0 < lossy["per_module"][lossy["lossy"][0]]["rel"] < 1  # type: ignore[index]
    text = home.run("convert", str(source), str(tmp_path / "peft"), "--to", "peft", "--lossy", "--rank", "3").stdout
    assert "lossy: 1 module(s) converted by truncated SVD at rank 3" in text and "ΔW check" in text
    assert (tmp_path / "peft" / "adapter_config.json").is_file()
    refused = home.run("resize", str(source), str(tmp_path / "r.safetensors"), "--rank", "2", check=False)
    assert refused.returncode == 1 and "error[conversion-refused]" in refused.stderr
    resized = home.json("resize", str(tmp_path / "lora.safetensors"), str(tmp_path / "r.safetensors"), "--rank", "1")
    assert resized["target"] == "comfyui" and resized["modules"] == 2  # type: ignore[index]
    assert all(m["rank_after"] == 1 for m in resized["per_module"].values())  # type: ignore[index]
    assert 0 < resized["min_kept_energy"] < 1  # type: ignore[index]


def test_catalogued_convert_and_resize_become_signed_versions_with_lineage(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    home.run("keys", "create", "Alice <alice@example.com>")
    source = tmp_path / "ink.safetensors"
    home.run("dev", "example-lora", str(source), "--rank", "4")
    home.run("add", str(source), "--name", "ink", "--license", "MIT")
    converted = home.json("convert", "ink", str(tmp_path / "ink-diffusers.safetensors"), "--to", "diffusers")
    assert converted["parent"] == "ink@1" and converted["catalogued"]["version"] == 2
    assert converted["max_rel_error"] == 0.0
    resized = home.json("resize", "ink@1", str(tmp_path / "ink-r2.safetensors"), "--rank", "2")
    assert resized["parent"] == "ink@1" and resized["catalogued"]["version"] == 3
    assert 0 < resized["min_kept_energy"] < 1
    tree = home.json("lineage", "ink@3")
    assert [(p["ref"], p["relation"]) for p in tree["parents"]] == [("ink@1", "resized-from")]  # type: ignore[index]
    assert {e["action"] for e in home.json("audit")} >= {"convert", "resize"}  # type: ignore[union-attr]
    plain = home.json("convert", str(source), str(tmp_path / "plain.safetensors"), "--to", "diffusers")
    assert plain["catalogued"] is None  # a file is converted without touching the catalogue


def test_rslora_is_named_by_inspect_and_convert_says_what_kohya_got(tmp_path: Path) -> None:
    """A diffusers file whose config says use_rslora (scale alpha/√r): inspect names the rule; converting to kohya,
    which has no such flag, writes alpha·√r and says so."""
    home = Home(tmp_path / "home")
    rng = np.random.default_rng(2)
    prefix = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1"
    tensors = {}
    for leaf in ("to_q", "to_k"):
        tensors[f"{prefix}.{leaf}.lora_A.weight"] = (
            "F32",
            (4, 320),
            rng.standard_normal((4, 320)).astype("f4").tobytes(),
        )
        tensors[f"{prefix}.{leaf}.lora_B.weight"] = (
            "F32",
            (320, 4),
            rng.standard_normal((320, 4)).astype("f4").tobytes(),
        )
    config = {"unet.r": 4, "unet.lora_alpha": 8, "unet.use_rslora": True}
    src = tmp_path / "rs.safetensors"
    write(src, tensors, {"lora_adapter_metadata": json.dumps(config), "ss_base_model_version": "sd_v1"})
    assert "alpha/sqrt(rank) (rsLoRA)" in home.run("inspect", str(src)).stdout
    assert home.json("inspect", str(src))["scale_rule"] == {"alpha/sqrt(rank)": 2}  # type: ignore[index]
    out = tmp_path / "rs-kohya.safetensors"
    converted = home.run("convert", str(src), str(out), "--to", "kohya")
    assert "rsLoRA: 2 module(s) written with the equivalent alpha·√rank" in converted.stdout
    assert "max rel error 0" in converted.stdout
    inspected = home.json("inspect", str(out))
    assert inspected["scale_rule"] == {"alpha/rank": 2} and inspected["alpha"]["counts"] == {"16": 2}  # type: ignore[index]
