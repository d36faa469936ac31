"""The support matrix: one table the converter, the loader and inspect read, and docs/reference/support-matrix.md
generated from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from lorahub.adapters.delta import KINDS
from lorahub.adapters.support import (
    KIND_SUPPORT,
    ModuleFacts,
    capabilities,
    exactly_convertible,
    peft_loadable,
    support_matrix,
)
from lorahub.formats import FORMATS

DOC = Path(__file__).resolve().parents[2] / "docs" / "reference" / "support-matrix.md"


def _tables_in_doc() -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index("<!-- support-matrix:start -->\n") + len("<!-- support-matrix:start -->\n")
    return text[start : text.index("<!-- support-matrix:end -->")]


def test_the_doc_is_generated_from_the_code() -> None:
    assert _tables_in_doc() == support_matrix(), "regenerate with lorahub.adapters.support.support_matrix()"


def test_every_kind_with_a_delta_rule_has_a_row_and_every_layout_a_line() -> None:
    assert set(KIND_SUPPORT) == set(KINDS)
    matrix = support_matrix()
    assert all(f"| `{fmt.id}` |" in matrix for fmt in FORMATS)


@pytest.mark.parametrize(
    ("roles", "exact", "peft"),
    [
        ({"down", "up"}, True, True),
        ({"down", "up", "mid"}, True, True),
        ({"down", "up", "dora_scale"}, False, False),
        ({"down", "up", "magnitude"}, False, False),
        ({"down", "up", "diff_b"}, False, False),
        ({"down", "up", "up_bias"}, False, False),
        ({"down", "up", "scale"}, False, False),
        ({"down"}, False, False),
    ],
)
def test_a_lora_with_extras_is_neither_exactly_convertible_nor_peft(roles: set[str], exact: bool, peft: bool) -> None:
    assert exactly_convertible("lora", roles) is exact
    assert peft_loadable("lora", roles) is peft


def test_file_capabilities_follow_the_rules_of_the_converter_and_the_loader() -> None:
    lora = ModuleFacts("lora", frozenset({"down", "up"}))
    lokr = ModuleFacts("lokr", frozenset({"lokr_w1", "lokr_w2"}))
    dora = ModuleFacts("lora", frozenset({"down", "up", "dora_scale"}))
    plain = capabilities([lora, lora])
    assert (plain.convert_exact, plain.load_via, plain.needs_base, plain.reasons) == (True, "peft", [], [])
    mixed = capabilities([lora, lokr, dora], family="sd1")
    assert (mixed.convert_exact, mixed.convert_lossy, mixed.load, mixed.bake) == (False, True, True, True)
    assert mixed.load_via == "delta" and mixed.needs_base == ["dora"]
    unmapped = capabilities([lora, ModuleFacts("lora", frozenset({"down", "up"}), "unmapped")], family="sd1")
    assert not (unmapped.convert_lossy or unmapped.load or unmapped.bake) and "sd1" in unmapped.reasons[0]
    fused_lokr = capabilities([ModuleFacts("lokr", frozenset({"lokr_w1", "lokr_w2"}), "fused")], family="flux1")
    assert fused_lokr.load and fused_lokr.bake and not fused_lokr.convert_exact
    fused_dora = capabilities([ModuleFacts("lora", frozenset({"down", "up", "dora_scale"}), "fused")])
    assert not (fused_dora.load or fused_dora.bake or fused_dora.convert_lossy)
    assert not capabilities([ModuleFacts("unknown", frozenset({"alpha"}))]).load
    norm = capabilities([lora, ModuleFacts("norm", frozenset({"w_norm", "b_norm"}))])
    assert norm.load and not norm.convert_lossy  # no SVD makes a LoRA of a norm's diff: the converter refuses it


FLUX_SUPPORT = {
    "flux_control_lora_format.json": (True, "delta"),
    "flux_dora_onetrainer_format.json": (True, "delta"),
    "flux_lokr_bfl_format.json": (True, "delta"),
    "flux_lora_kohya_format.json": (True, "peft"),
    "flux_lora_xlabs_format.json": (True, "peft"),
    "qwen_image_lora_kohya_format.json": (True, "delta"),
}
"""Real FLUX key lists (tests/fixtures/keylists) → what ``inspect`` says ``load`` does with them: the LyCORIS kinds
go through the ΔW patch, as do BFL Control LoRAs (biases, QK norms); LoRAs (XLabs' processor names included) through
PEFT; Qwen-Image names map too. The small key lists: inspecting means
hashing the sparse file."""


@pytest.mark.parametrize("name", sorted(FLUX_SUPPORT))
def test_inspect_reports_the_support_of_real_flux_layouts(tmp_path: Path, name: str) -> None:
    import json

    import lorahub
    from tests.support import keylist_file, write_sparse

    shapes = json.loads(keylist_file(name).read_text())["tensors"]
    support = lorahub.inspect(write_sparse(tmp_path / "flux.safetensors", shapes)).as_dict()["support"]
    assert (support["load"], support["load_via"]) == FLUX_SUPPORT[name]
    assert support["bake"] == support["load"] and bool(support["reasons"]) != support["load"]
    assert support["kinds"] and all(row["modules"] > 0 for row in support["kinds"].values())
    if name == "flux_control_lora_format.json":  # its biases and norms fit two layouts only
        assert not support["convert_exact"] and support["exact_into"] == ["diffusers", "bfl-control"]


def test_inspect_marks_a_lycoris_sd15_file_with_every_kind(tmp_path: Path) -> None:
    import lorahub
    from lorahub.dev.example_lora import sd15_unet_linears
    from lorahub.dev.example_lycoris import write_example_lycoris

    kinds = ["lokr", "loha", "dora", "ia3", "oft"]
    layers = {f"lora_unet_{path.replace('.', '_')}": (out, fan_in) for path, fan_in, out in sd15_unet_linears()}
    plan = {name: kinds[i % len(kinds)] for i, name in enumerate(layers)}
    write_example_lycoris(tmp_path / "every.safetensors", layers, kind=plan)
    report = lorahub.inspect(tmp_path / "every.safetensors")
    assert report.base_model.family == "sd1"
    support = report.support
    assert (support["convert_exact"], support["convert_lossy"], support["load"], support["bake"]) == (
        False, True, True, True,
    )  # fmt: skip
    assert support["load_via"] == "delta" and support["needs_base"] == ["dora", "ia3", "oft"]
    assert set(support["kinds"]) == {"lokr", "loha", "lora", "dora", "ia3", "oft"}
    assert support["kinds"]["lokr"]["load"] == "delta" and support["kinds"]["lora"]["load"] == "peft"
