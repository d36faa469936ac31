"""`lorahub bake` from the shell: weights in the spec, JSON report, licence refusal exit code with nothing written."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

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
