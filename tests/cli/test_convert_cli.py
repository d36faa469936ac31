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
