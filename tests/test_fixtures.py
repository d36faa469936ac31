"""The vendored fixtures stay redistributable: each file is described in tests/fixtures/README.md (the real files
with their sha256) and has its licence file beside it; nothing else lives there."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.support import FIXTURES, KEYLISTS, REAL, fixture_file, keylist_files

README = FIXTURES / "README.md"
INVOKEAI_PATH = "invoke-ai/InvokeAI tests/backend/patches/lora_conversions/lora_state_dicts/"
INVOKEAI_COMMIT = "8e71a8a519399d6db32054ae9afc7c6c4e2355af"
KEYLIST_LICENCE = "LICENSE-InvokeAI-Apache-2.0.txt"
LICENCE_OF = {
    "catundchat_sd15_lora__pytorch_lora_weights.safetensors": "LICENSE-catundchat-MIT.txt",
    "diffusers_pr8283__sd-pokemon-model-lora__pytorch_lora_weights.safetensors": "LICENSE-diffusers-Apache-2.0.txt",
    "cloneofsimo_lora__analog_svd_rank4.safetensors": "LICENSE-cloneofsimo-lora-Apache-2.0.txt",
}


def _readme() -> str:
    return fixture_file(README).read_text(encoding="utf-8")


def test_only_described_files_and_their_licences_are_there() -> None:
    assert {p.name for p in FIXTURES.iterdir()} == {"README.md", "real", "keylists"}
    assert {p.name for p in REAL.iterdir()} == set(LICENCE_OF) | set(LICENCE_OF.values())
    assert {p.suffix for p in KEYLISTS.iterdir() if p.name != KEYLIST_LICENCE} == {".json"}
    fixture_file(KEYLISTS / KEYLIST_LICENCE)


@pytest.mark.parametrize("name", sorted(LICENCE_OF))
def test_real_file_has_its_licence_and_the_readme_has_its_hash(name: str) -> None:
    fixture_file(REAL / LICENCE_OF[name])
    readme = _readme()
    assert f"`{name}`" in readme and f"`{LICENCE_OF[name]}`" in readme
    assert hashlib.sha256(fixture_file(REAL / name).read_bytes()).hexdigest() in readme


@pytest.mark.parametrize("path", keylist_files(), ids=lambda path: path.name)
def test_keylist_names_its_origin(path: Path) -> None:
    source = json.loads(path.read_text(encoding="utf-8"))["source"]
    assert source.startswith(f"{INVOKEAI_PATH}{path.stem}.py @ {INVOKEAI_COMMIT}")
    assert f"`{path.name}`" in _readme()
