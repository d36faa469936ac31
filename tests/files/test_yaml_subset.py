"""The YAML subset against PyYAML on the files tools ship, and a clear refusal of everything outside it."""

from __future__ import annotations

from typing import Any

import pytest

from lorahub import errors
from lorahub.files.yaml_subset import Value, parse_mapping, top_level_scalar

yaml = pytest.importorskip("yaml")  # the reference reader (installed with the docs tools), not a lorahub dependency

COMFYUI_EXAMPLE = """#Rename this to extra_model_paths.yaml and ComfyUI will load it


#config for a1111 ui
#all you have to do is change the base_path to where yours is installed
a1111:
    base_path: path/to/stable-diffusion-webui/

    checkpoints: models/Stable-diffusion
    configs: models/Stable-diffusion
    vae: models/VAE
    loras: |
         models/Lora
         models/LyCORIS
    upscale_models: |
                  models/ESRGAN
                  models/RealESRGAN
                  models/SwinIR
    embeddings: embeddings
    hypernetworks: models/hypernetworks
    controlnet: models/ControlNet

#config for comfyui
#your base path should be either an existing comfy install or a central folder where you store all of your models

#comfyui:
#     base_path: path/to/comfyui/
#     checkpoints: models/checkpoints/
#     loras: models/loras/
"""

EVERY_FORM = """---
quoted:
  base_path: "C:/Comfy stuff"  # a comment after a quoted value
  'single': 'it''s # not a comment'
  "double": "tab\\there \\u00e9\\x41 \\"q\\" \\\\"
  hash: a#b
  colon: C:\\models\\loras
blocks:
  clip: |
    one
      indented

    two # kept

  strip: |-
    last
  keep: |+
    kept

  indicator: |2
      four spaces
  empty: |
nulls:
  tilde: ~
  word: null
  nothing:
twice: first
twice: second
"""


def _as_strings(value: Any) -> Value:
    """PyYAML's answer with scalars as the strings this reader keeps them as."""
    if isinstance(value, dict):
        return {str(k): _as_strings(v) for k, v in value.items()}
    if value is None:
        return None
    return str(value).lower() if isinstance(value, bool) else str(value)


@pytest.mark.parametrize("text", [COMFYUI_EXAMPLE, EVERY_FORM, "", "# only a comment\n", "\ufeffa: b\r\nc: d\r\n"])
def test_reads_as_pyyaml_does(text: str) -> None:
    assert parse_mapping(text, "t.yaml") == _as_strings(yaml.safe_load(text) or {})


def test_the_values_read() -> None:
    document = parse_mapping(EVERY_FORM, "t.yaml")
    assert document["blocks"] == {
        "clip": "one\n  indented\n\ntwo # kept\n",
        "strip": "last",
        "keep": "kept\n\n",
        "indicator": "  four spaces\n",
        "empty": "",
    }
    assert document["twice"] == "second"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a:\n  - x\n", "line 2: lists"),
        ("a:\n- x\n", "line 2: lists"),
        ("- x\n", "line 1: lists"),
        ("a: [1, 2]\n", "line 1: flow lists"),
        ("a: {b: c}\n", "line 1: flow mappings"),
        ("a: &anchor x\n", "line 1: anchors"),
        ("a: *anchor\n", "line 1: aliases"),
        ("a: !!str x\n", "line 1: tags"),
        ("a: >\n  folded\n", "line 1: folded blocks"),
        ("a: plain\n  continued\n", "line 2: unexpected indentation"),
        ("a: 'open\n  close'\n", "line 1: a quoted value without its closing quote"),
        ('a: "\\q"\n', "line 1: the escape \\\\q"),
        ("a: 'x' y\n", "line 1: text after the closing quote"),
        ("a: b: c\n", "line 1: `: ` inside a plain value"),
        ("\ta: 1\n", "line 1: a tab"),
        ("  a: 1\n", "line 1: the first key is indented"),
        ("a: 1\n---\nb: 2\n", "line 2: unexpected line"),
        ("just words\n", "line 1: expected `key: value`"),
    ],
)
def test_everything_else_is_refused_with_its_line(text: str, message: str) -> None:
    with pytest.raises(errors.ToolConfigError, match=message):
        parse_mapping(text, "t.yaml")


def test_a_top_level_scalar_is_read_whatever_else_the_file_holds() -> None:
    text = (
        "schema_version: 4.0.2\n"
        "remote_api_tokens:\n"
        "  - url_regex: civitai.com\n"
        "    models_dir: not/this\n"
        "models_dir: D:\\invokeai\\models # store models on an external drive\n"
    )
    assert top_level_scalar(text, "models_dir", "invokeai.yaml") == "D:\\invokeai\\models"
    assert top_level_scalar(text + "models_dir: 'later'\n", "models_dir", "invokeai.yaml") == "later"
    assert top_level_scalar(text, "host", "invokeai.yaml") is None
    assert top_level_scalar("models_dir:\n", "models_dir", "invokeai.yaml") is None
    with pytest.raises(errors.ToolConfigError, match="line 1: models_dir is a block scalar"):
        top_level_scalar("models_dir: |\n  x\n", "models_dir", "invokeai.yaml")
