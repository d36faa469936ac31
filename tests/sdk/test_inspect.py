"""`lorahub.inspect` end to end: real files, every real FLUX key list at real geometry, problems."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import lorahub
from lorahub.files.safetensors import write
from tests.support import REAL_FILES, keylist_file, keylist_files, real_file, write_sparse

FLUX_FORMATS = {
    "flux_control_lora_format.json": "bfl-control",
    "flux_dora_onetrainer_format.json": "onetrainer",
    "flux_lokr_bfl_format.json": "comfyui",
    "flux_lora_aitoolkit_format.json": "ai-toolkit",
    "flux_lora_diffusers_base_model_format.json": "peft",
    "flux_lora_diffusers_format.json": "diffusers",
    "flux_lora_diffusers_no_proj_mlp_format.json": "diffusers",
    "flux_lora_kohya_format.json": "kohya",
    "flux_lora_kohya_with_te1_format.json": "kohya",
    "flux_lora_xlabs_format.json": "xlabs",
}


def test_every_flux_keylist_is_covered() -> None:
    assert {p.name for p in keylist_files() if p.name.startswith("flux_")} == set(FLUX_FORMATS)


@pytest.mark.parametrize("name", sorted(FLUX_FORMATS))
def test_flux_keylists_at_real_geometry(tmp_path: Path, name: str) -> None:
    shapes = json.loads(keylist_file(name).read_text())["tensors"]
    report = lorahub.inspect(write_sparse(tmp_path / "flux.safetensors", shapes))
    assert report.format == FLUX_FORMATS[name]
    assert report.base_model.family == "flux1"
    assert report.base_model.evidence
    assert report.tensors == len(shapes)
    assert report.unmatched_keys == []
    assert "unknown-keys" not in {p.code for p in report.problems}
    assert "all-zero-up" in {p.code for p in report.problems}  # the sparse file's weights are zeros


@pytest.mark.parametrize("name", sorted(REAL_FILES))
def test_real_files(name: str) -> None:
    report = lorahub.inspect(real_file(name))
    assert report.format == REAL_FILES[name]["format"]
    assert report.base_model.family == "sd1"
    assert report.problems == []
    assert report.rank.counts == {"4": report.modules}
    assert report.alpha.missing == report.modules  # neither file stores alpha: loaders use scale 1


def test_problems_are_found(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    down = rng.standard_normal((4, 320)).astype(np.float16)
    up_nan = rng.standard_normal((320, 4)).astype(np.float16)
    up_nan[3, 1] = np.nan
    prefix = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1"
    tensors = {
        f"{prefix}_to_q.lora_down.weight": ("F16", down.shape, down.tobytes()),
        f"{prefix}_to_q.lora_up.weight": ("F16", up_nan.shape, up_nan.tobytes()),
        f"{prefix}_to_k.lora_down.weight": ("F16", down.shape, down.tobytes()),
        f"{prefix}_to_k.lora_up.weight": ("F16", (320, 4), bytes(320 * 4 * 2)),
        f"{prefix}_to_v.lora_down.weight": ("F16", down.shape, down.tobytes()),
        "something_else.weight": ("F16", (2,), bytes(4)),
    }
    path = tmp_path / "broken.safetensors"
    write(path, tensors, {"sshs_model_hash": "0x" + "00" * 32, "ss_base_model_version": "sdxl_base_v1-0"})
    report = lorahub.inspect(path)
    problems = {p.code: p for p in report.problems}
    assert problems["non-finite"].keys == [f"{prefix}_to_q.lora_up.weight"]
    assert problems["all-zero-up"].keys == [f"{prefix}_to_k.lora_up.weight"]
    assert "to_v" in problems["structure"].message
    assert problems["unknown-keys"].keys == ["something_else.weight"]
    assert "hash-claim-mismatch" in problems
    assert report.claims[0].status == "mismatch"
    assert report.base_model.metadata_family == "sdxl"


def test_report_json_round_trips() -> None:
    report = lorahub.inspect(real_file(sorted(REAL_FILES)[0]))
    data = json.loads(json.dumps(report.as_dict()))
    assert data["hashes"]["content"] == report.hashes.content
    assert data["base_model"]["family"] == "sd1"
