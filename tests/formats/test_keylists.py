"""Every real FLUX/Qwen/Anima/Krea key list in ``tests/fixtures/keylists`` reads as the layout it documents.

The lists come from InvokeAI's per-format test state dicts (see the fixtures README). Expectations that are a
decision rather than the file's own description are explained next to the entry.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from lorahub.formats import detect
from lorahub.formats.families import detect_family
from lorahub.formats.layers import layer_kinds, problems_in
from tests.formats.headers import assert_partition, header, keylist
from tests.support import keylist_file, keylist_files

# file: (format, family, modules by component, layer kinds)
EXPECTED: dict[str, tuple[str, str, dict[str, int], set[str]]] = {
    "flux_lora_kohya_format.json": ("kohya", "flux1", {"transformer": 304}, {"lora"}),
    "flux_lora_kohya_with_te1_format.json": ("kohya", "flux1", {"transformer": 304, "text_encoder": 72}, {"lora"}),
    "flux_lora_diffusers_format.json": ("diffusers", "flux1", {"transformer": 494}, {"lora"}),
    "flux_lora_diffusers_no_proj_mlp_format.json": ("diffusers", "flux1", {"transformer": 342}, {"lora"}),
    # diffusers module paths wrapped as a raw PEFT model (base_model.model.): the peft layout.
    "flux_lora_diffusers_base_model_format.json": ("peft", "flux1", {"transformer": 381}, {"lora"}),
    # diffusion_model. + BFL block names + plain lora_A/lora_B, no alpha: ai-toolkit's FLUX layout.
    "flux_lora_aitoolkit_format.json": ("ai-toolkit", "flux1", {"transformer": 228}, {"lora"}),
    "flux_lora_xlabs_format.json": ("xlabs", "flux1", {"transformer": 12}, {"lora"}),
    # QK-norm scales are whole replacement weights: 152 "set" modules beside 314 LoRAs.
    "flux_control_lora_format.json": ("bfl-control", "flux1", {"transformer": 466}, {"lora", "set"}),
    # T5 sits in OneTrainer's lora_te2_ slot; as a component it is text_encoder_3 (T5) all the same.
    "flux_dora_onetrainer_format.json": (
        "onetrainer",
        "flux1",
        {"transformer": 266, "text_encoder": 72, "text_encoder_3": 168},
        {"lora", "dora"},
    ),
    # "BFL LoKr": diffusion_model. names are ComfyUI's naming, LoKr the layer kind; no separate format id needed.
    "flux_lokr_bfl_format.json": ("comfyui", "flux1", {"transformer": 6}, {"lokr"}),
    "anima_lora_kohya_format.json": ("kohya", "anima", {"transformer": 11}, {"lora"}),
    "anima_lora_kohya_with_te_format.json": ("kohya", "anima", {"transformer": 2, "text_encoder": 7}, {"lora"}),
    # diffusion-pipe style: diffusion_model. names with PEFT suffixes, read as ComfyUI names.
    "anima_lora_peft_format.json": ("comfyui", "anima", {"transformer": 6}, {"lora"}),
    "anima_lora_lokr_format.json": ("comfyui", "anima", {"transformer": 3}, {"lokr", "dora"}),
    "krea2_lora_kohya_format.json": ("kohya", "krea2", {"transformer": 40}, {"lora"}),
    # LoKr under kohya names is LyCORIS by the kohya/lycoris rule.
    "qwen_image_lora_kohya_format.json": ("lycoris", "qwen-image", {"transformer": 8}, {"lokr"}),
    # Two blocks of attn.to_q/to_k at width 3072 fit FLUX.1's double blocks as well as Qwen-Image's: undecided.
    "qwen_image_lora_diffusers_format.json": ("diffusers", "unknown", {"transformer": 3}, {"lora"}),
}

PATHS = keylist_files()


def test_every_keylist_has_an_expectation() -> None:
    assert sorted(path.name for path in PATHS) == sorted(EXPECTED)


@pytest.mark.parametrize("path", PATHS, ids=[path.name for path in PATHS])
def test_keylist(path: Path) -> None:
    fmt, family, by_component, kinds = EXPECTED[path.name]
    _, shapes = keylist(path)
    keys = header(shapes)
    layout = detect(keys, {})
    assert_partition(keys, layout)
    assert layout.format == fmt
    assert layout.unmatched == []
    assert dict(Counter(module.component for module in layout.modules)) == by_component
    assert {kind for module in layout.modules for kind in layer_kinds(module)} == kinds
    verdict = detect_family(layout, {})
    assert verdict.family == family, verdict.evidence
    assert verdict.metadata_family is None
    assert verdict.disagreement is None


@pytest.mark.parametrize("path", [p for p in PATHS if p.name.startswith("flux_")], ids=lambda p: p.name)
def test_flux_keylists_have_whole_modules(path: Path) -> None:
    _, shapes = keylist(path)
    layout = detect(header(shapes), {})
    problems = {module.name: problems_in(module) for module in layout.modules if problems_in(module)}
    assert problems == {}


def test_flux_evidence_names_the_geometry() -> None:
    _, shapes = keylist(keylist_file("flux_lora_kohya_format.json"))
    verdict = detect_family(detect(header(shapes), {}), {})
    assert verdict.evidence[0].startswith("19 double blocks, 38 single blocks, hidden 3072")


def test_metadata_does_not_override_flux_shapes() -> None:
    _, shapes = keylist(keylist_file("flux_lora_diffusers_format.json"))
    metadata = {"modelspec.architecture": "stable-diffusion-xl-v1-base/lora"}
    verdict = detect_family(detect(header(shapes), metadata), metadata)
    assert (verdict.family, verdict.metadata_family) == ("flux1", "sdxl")
    assert verdict.disagreement is not None
    assert "FLUX.1" in verdict.disagreement
    assert "SDXL" in verdict.disagreement
