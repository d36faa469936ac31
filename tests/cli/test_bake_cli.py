"""`lorahub bake` from the shell: weights in the spec, JSON report, licence refusal exit code with nothing written."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import pytest
from safetensors.torch import save_file

from tests.cli.test_catalog_cli import Home
from tests.merge import tiny

EXIT_FORBIDDEN = 9


def test_bake_cli(tmp_path: Path) -> None:
    pipe = tiny.pipeline()
    base = tmp_path / "sd1.safetensors"
    save_file(tiny.ldm_state_dict(pipe), str(base))
    home = Home(tmp_path / "home")
    home.run("keys", "create", "Alice <alice@studio.example>")
    home.run("add", str(tiny.kohya_adapter(pipe, tmp_path / "a.safetensors")), "--name", "style", "--license", "MIT")
    nc = tiny.kohya_adapter(pipe, tmp_path / "b.safetensors", seed=7)
    home.run("add", str(nc), "--name", "nc", "--license", "CC-BY-NC-4.0")

    out = tmp_path / "baked.safetensors"
    report = json.loads(home.run("bake", str(base), "style:0.6", "--out", str(out), "--json").stdout)
    assert report["layout"] == "ldm" and report["family"] == "sd1"
    assert [(a["name"], a["weight"]) for a in report["adapters"]] == [("style", 0.6)]
    assert report["output_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert report["base_sha256"] == hashlib.sha256(base.read_bytes()).hexdigest()

    refused = tmp_path / "refused.safetensors"
    result = home.run("bake", str(base), "nc", "--out", str(refused), "--use", "commercial", check=False)
    assert result.returncode == EXIT_FORBIDDEN, result.stderr
    assert "error[license-forbidden]" in result.stderr and not refused.exists()
    bad = home.run("bake", str(base), "style:heavy", "--out", str(refused), check=False)
    assert bad.returncode == 1 and "must be a number" in bad.stderr
    assert [e["action"] for e in json.loads(home.run("audit", "--json").stdout)].count("bake") == 1


@pytest.mark.slow
def test_bake_cli_takes_a_repo_id_from_the_cache(tiny_bases: Mapping[str, Path], tmp_path: Path) -> None:
    """BASE as a repo id: baked into a new pipeline folder named by repo and revision; a non-empty --out is refused."""
    pytest.importorskip("diffusers")
    from tests.files.test_bases import REVISION, hf_cache_layout
    from tests.sdk.pipes import make_adapter

    hf_cache_layout(tiny_bases["sd1"], tmp_path / "hub", "org/tiny-sd")
    cache = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    home = Home(tmp_path / "home")
    home.run("keys", "create", "Alice <alice@studio.example>")
    home.run("add", str(make_adapter("sd1", tmp_path / "a", seed=1)), "--name", "ink", "--license", "MIT")

    out = tmp_path / "baked"
    report = json.loads(home.run("bake", "org/tiny-sd", "ink:0.5", "--out", str(out), "--json", env=cache).stdout)
    assert (report["base"], report["revision"], report["layout"]) == ("org/tiny-sd", REVISION, "diffusers-pipeline")
    assert [c["file"] for c in report["components"]] == ["unet/diffusion_pytorch_model.safetensors"]
    assert (out / "model_index.json").is_file() and not (out / "model_index.json").is_symlink()

    refused = home.run("bake", "org/tiny-sd", "ink", "--out", str(out), env=cache, check=False)
    assert refused.returncode == 1 and "error[merge-option-invalid]" in refused.stderr
    missing = home.run("bake", "org/not-cached", "ink", "--out", str(tmp_path / "x"), env=cache, check=False)
    assert missing.returncode == 3 and "hf download org/not-cached" in missing.stderr
