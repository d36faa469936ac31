"""Format detection and parsing on headers built at real key names and shapes."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lorahub.files.safetensors import read_header
from lorahub.formats import FORMATS, by_id, detect
from lorahub.formats.base import COMPONENTS, ROLES, Layout
from lorahub.formats.families import detect_family
from lorahub.formats.layers import layer_kinds, problems_in, rank
from tests.formats.headers import assert_partition, header, lora, merge, peft
from tests.support import real_file

SD1_BLOCK = "down_blocks_0_attentions_0_transformer_blocks_0"


def parsed(shapes: dict[str, list[int]], metadata: dict[str, str] | None = None) -> Layout:
    keys = header(shapes)
    layout = detect(keys, metadata or {})
    assert_partition(keys, layout)
    for module in layout.modules:
        assert module.component in COMPONENTS
        assert module.tensors.keys() <= ROLES
    return layout


def components(layout: Layout) -> dict[str, int]:
    return dict(Counter(module.component for module in layout.modules))


def module(layout: Layout, name: str) -> dict[str, tuple[int, ...]]:
    found = {m.name: m for m in layout.modules}[name]
    return {role: info.shape for role, info in found.tensors.items()}


# --- kohya -----------------------------------------------------------------------------------------------------------

KOHYA_SD1 = merge(
    lora(f"lora_unet_{SD1_BLOCK}_attn1_to_q", 320, 320),
    lora(f"lora_unet_{SD1_BLOCK}_attn2_to_k", 768, 320),
    lora("lora_unet_down_blocks_0_attentions_0_proj_in", 320, 320),
    lora("lora_te_text_model_encoder_layers_0_self_attn_q_proj", 768, 768),
    lora("lora_te_text_model_encoder_layers_0_mlp_fc1", 768, 3072),
)


def test_kohya_sd1_with_text_encoder() -> None:
    layout = parsed(KOHYA_SD1, {"ss_network_module": "networks.lora"})
    assert layout.format == "kohya"
    assert len(layout.modules) == 5
    assert components(layout) == {"unet": 3, "text_encoder": 2}
    assert module(layout, f"lora_unet_{SD1_BLOCK}_attn2_to_k") == {"down": (4, 768), "up": (320, 4), "alpha": ()}
    assert layout.unmatched == []
    assert "written by sd-scripts network module 'networks.lora'" in layout.notes


def test_kohya_sdxl_sgm_names_and_two_text_encoders() -> None:
    layout = parsed(
        merge(
            lora("lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k", 2048, 640),
            lora("lora_unet_input_blocks_4_1_transformer_blocks_1_attn1_to_q", 640, 640),
            lora("lora_unet_middle_block_1_transformer_blocks_9_attn1_to_out_0", 1280, 1280),
            lora("lora_unet_output_blocks_0_1_proj_in", 1280, 1280),
            lora("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", 768, 768),
            lora("lora_te2_text_model_encoder_layers_31_self_attn_k_proj", 1280, 1280),
        )
    )
    assert layout.format == "kohya"
    assert components(layout) == {"unet": 4, "text_encoder": 1, "text_encoder_2": 1}
    assert detect_family(layout, {}).family == "sdxl"


def test_kohya_locon_conv_layers() -> None:
    shapes = merge(
        KOHYA_SD1,
        {
            "lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight": [8, 320, 3, 3],
            "lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight": [320, 8, 1, 1],
            "lora_unet_down_blocks_0_resnets_0_conv1.alpha": [],
            "lora_unet_down_blocks_0_downsamplers_0_conv.lora_down.weight": [8, 320, 3, 3],
            "lora_unet_down_blocks_0_downsamplers_0_conv.lora_up.weight": [320, 8, 1, 1],
        },
    )
    layout = parsed(shapes, {"ss_network_args": json.dumps({"conv_dim": "8", "conv_alpha": "4"})})
    assert layout.format == "kohya"
    conv = {m.name: m for m in layout.modules}["lora_unet_down_blocks_0_resnets_0_conv1"]
    assert layer_kinds(conv) == ["locon"]
    assert rank(conv) == 8
    assert components(layout)["unet"] == 5


def test_kohya_keeps_stray_and_duplicate_keys_visible() -> None:
    shapes = merge(KOHYA_SD1, {"some_optimizer_state": [3], "lora_unet_x.lora_down.weight.extra": [1]})
    layout = parsed(shapes)
    assert layout.format == "kohya"
    assert sorted(layout.unmatched) == ["lora_unet_x.lora_down.weight.extra", "some_optimizer_state"]


def test_bundled_a1111_embeddings_are_embeddings() -> None:
    shapes = merge(
        KOHYA_SD1,
        {
            "bundle_emb.mychar.string_to_param.*": [2, 768],
            "bundle_emb.xlchar.clip_l": [3, 768],
            "bundle_emb.xlchar.clip_g": [3, 1280],
            "bundle_emb.broken": [1],
        },
    )
    layout = parsed(shapes)
    assert layout.format == "kohya"
    got = sorted((e.name, e.vectors, e.dim, e.encoder) for e in layout.embeddings)
    assert got == [("mychar", 2, 768, None), ("xlchar", 3, 768, "clip_l"), ("xlchar", 3, 1280, "clip_g")]
    assert layout.unmatched == ["bundle_emb.broken"]


def test_kohya_oft_is_kohya_with_its_alpha_meaning_noted() -> None:
    layout = parsed({"oft_unet_down_blocks_0_attentions_0_proj_in.oft_blocks": [8, 40, 40], "oft_unet_x.alpha": []})
    assert layout.format == "kohya"
    assert any("out_dim" in note for note in layout.notes)


# --- LyCORIS ---------------------------------------------------------------------------------------------------------

Q = f"lora_unet_{SD1_BLOCK}_attn1_to_k"
LYCORIS_CASES: dict[str, tuple[dict[str, list[int]], list[str], int | None]] = {
    "loha": (
        {
            f"{Q}.hada_w1_a": [320, 4],
            f"{Q}.hada_w1_b": [4, 320],
            f"{Q}.hada_w2_a": [320, 4],
            f"{Q}.hada_w2_b": [4, 320],
        },
        ["loha"],
        4,
    ),
    "lokr": ({f"{Q}.lokr_w1": [8, 8], f"{Q}.lokr_w2_a": [40, 4], f"{Q}.lokr_w2_b": [4, 40]}, ["lokr"], 4),
    "lokr-full-rank": ({f"{Q}.lokr_w1": [8, 8], f"{Q}.lokr_w2": [40, 40]}, ["lokr"], None),
    "full": ({f"{Q}.diff": [320, 320], f"{Q}.diff_b": [320]}, ["full"], None),
    "oft": ({f"{Q}.oft_blocks": [16, 20, 20]}, ["oft"], None),
    "boft": ({f"{Q}.oft_blocks": [4, 8, 40, 40]}, ["boft"], None),
    "glora": (
        {
            f"{Q}.a1.weight": [320, 4],
            f"{Q}.a2.weight": [4, 320],
            f"{Q}.b1.weight": [320, 4],
            f"{Q}.b2.weight": [4, 320],
        },
        ["glora"],
        4,
    ),
    "ia3": ({f"{Q}.weight": [320], f"{Q}.on_input": []}, ["ia3"], None),
    "dora": (
        {f"{Q}.lora_down.weight": [4, 320], f"{Q}.lora_up.weight": [320, 4], f"{Q}.dora_scale": [320, 1]},
        ["lora", "dora"],
        4,
    ),
    "tucker": (
        {
            f"{Q}.lora_down.weight": [4, 320, 1, 1],
            f"{Q}.lora_mid.weight": [4, 4, 3, 3],
            f"{Q}.lora_up.weight": [320, 4, 1, 1],
        },
        ["lora-tucker"],
        4,
    ),
}


@pytest.mark.parametrize("case", sorted(LYCORIS_CASES))
def test_lycoris_kinds_under_kohya_names(case: str) -> None:
    tensors, kinds, expected_rank = LYCORIS_CASES[case]
    layout = parsed(merge(KOHYA_SD1, {**tensors, f"{Q}.alpha": []}))
    assert layout.format == "lycoris"
    assert len(layout.modules) == 6
    target = {m.name: m for m in layout.modules}[Q]
    assert layer_kinds(target) == kinds
    assert rank(target) == expected_rank
    assert problems_in(target) == []
    assert layout.unmatched == []


def test_lycoris_declared_in_metadata_even_for_plain_lora() -> None:
    metadata = {"ss_network_module": "lycoris.kohya", "ss_network_args": json.dumps({"algo": "locon"})}
    layout = parsed(KOHYA_SD1, metadata)
    assert layout.format == "lycoris"
    assert "ss_network_args declares algo 'locon'" in layout.notes


def test_lycoris_own_prefix() -> None:
    layout = parsed(lora("lycoris_transformer_blocks_0_attn_to_q", 3072, 3072))
    assert layout.format == "lycoris"
    assert components(layout) == {"transformer": 1}


# --- diffusers / PEFT ------------------------------------------------------------------------------------------------

DIFFUSERS_SD1 = merge(
    peft("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", 320, 320),
    peft("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k", 768, 320),
    peft("unet.up_blocks.1.attentions.2.transformer_blocks.0.attn1.to_out.0", 1280, 1280),
)


@pytest.mark.parametrize("te_path", ["text_model.encoder.layers", "encoder.layers"])
def test_diffusers_sd1_both_text_encoder_spellings(te_path: str) -> None:
    layout = parsed(merge(DIFFUSERS_SD1, peft(f"text_encoder.{te_path}.0.self_attn.q_proj", 768, 768)))
    assert layout.format == "diffusers"
    assert components(layout) == {"unet": 3, "text_encoder": 1}
    assert module(layout, f"text_encoder.{te_path}.0.self_attn.q_proj") == {"down": (4, 768), "up": (768, 4)}
    assert all(m.config_alpha is None for m in layout.modules)
    assert detect_family(layout, {}).family == "sd1"


def test_diffusers_sdxl() -> None:
    layout = parsed(
        merge(
            peft("unet.down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k", 2048, 640),
            peft("unet.mid_block.attentions.0.transformer_blocks.9.attn1.to_q", 1280, 1280),
            peft("text_encoder.text_model.encoder.layers.0.self_attn.q_proj", 768, 768),
            peft("text_encoder_2.text_model.encoder.layers.31.self_attn.q_proj", 1280, 1280),
        )
    )
    assert layout.format == "diffusers"
    assert components(layout) == {"unet": 2, "text_encoder": 1, "text_encoder_2": 1}
    assert detect_family(layout, {}).family == "sdxl"


def test_diffusers_alpha_from_lora_adapter_metadata() -> None:
    config = {
        "unet.r": 4,
        "unet.lora_alpha": 8,
        "unet.alpha_pattern": {"attn2.to_k": 2, "up_blocks\\.1.*to_out\\.0": 16},
        "unet.use_dora": True,
        "text_encoder.r": 4,
        "text_encoder.lora_alpha": 4,
        "text_encoder.use_rslora": True,
    }
    shapes = merge(
        DIFFUSERS_SD1,
        peft("text_encoder.text_model.encoder.layers.0.self_attn.q_proj", 768, 768),
        {
            "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_magnitude_vector": [320],
            "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.bias": [320],
        },
    )
    layout = parsed(shapes, {"format": "pt", "lora_adapter_metadata": json.dumps(config)})
    alphas = {m.name: m.config_alpha for m in layout.modules}
    assert alphas == {
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q": 8.0,
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k": 2.0,
        "unet.up_blocks.1.attentions.2.transformer_blocks.0.attn1.to_out.0": 16.0,
        "text_encoder.text_model.encoder.layers.0.self_attn.q_proj": 4.0,
    }
    dora = {m.name: m for m in layout.modules}["unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"]
    assert set(dora.tensors) == {"down", "up", "magnitude", "up_bias"}
    assert layer_kinds(dora) == ["lora", "dora"]
    assert "text_encoder: use_rslora, scale is alpha/sqrt(rank)" in layout.notes


@pytest.mark.parametrize("bad", ["not json", "[1, 2]", json.dumps({"unet.lora_alpha": "eight"}), "{" * 5000])
def test_diffusers_malformed_adapter_metadata_gives_no_alpha(bad: str) -> None:
    layout = parsed(DIFFUSERS_SD1, {"lora_adapter_metadata": bad})
    assert layout.format == "diffusers"
    assert all(m.config_alpha is None for m in layout.modules)


def test_diffusers_without_component_prefix() -> None:
    shapes = {
        "transformer_blocks.0.attn.to_k.lora_down.weight": [64, 3072],
        "transformer_blocks.0.attn.to_k.lora_up.weight": [3072, 64],
        "transformer_blocks.0.attn.to_k.alpha": [],
    }
    layout = parsed(shapes)
    assert (layout.format, components(layout)) == ("diffusers", {"transformer": 1})


def test_diffusers_old_lora_down_spelling() -> None:
    shapes = merge(
        lora(
            f"unet.{SD1_BLOCK.replace('_', '.')}.attn1.to_q", 320, 320, down=".lora.down.weight", up=".lora.up.weight"
        ),
        lora(
            "text_encoder.text_model.encoder.layers.0.self_attn.q_proj",
            768,
            768,
            down=".lora_linear_layer.down.weight",
            up=".lora_linear_layer.up.weight",
            alpha=None,
        ),
    )
    layout = parsed(shapes)
    assert layout.format == "diffusers-old"
    assert components(layout) == {"unet": 1, "text_encoder": 1}
    assert "text_encoder.text_model.encoder.layers.0.self_attn.q_proj" in {m.name for m in layout.modules}


def test_peft_raw_state_dict() -> None:
    shapes = merge(
        peft("base_model.model.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", 320, 320),
        peft("base_model.model.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k", 768, 320),
    )
    layout = parsed(shapes)
    assert layout.format == "peft"
    assert components(layout) == {"unet": 2}
    assert any("adapter_config.json" in note for note in layout.notes)


# --- other layouts ---------------------------------------------------------------------------------------------------


def test_comfyui_names_with_kohya_suffixes_and_bias_diffs() -> None:
    shapes = merge(
        lora("diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k", 2048, 640),
        lora("text_encoders.clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj", 768, 768),
        lora("text_encoders.clip_g.transformer.text_model.encoder.layers.0.self_attn.q_proj", 1280, 1280),
        {"diffusion_model.input_blocks.4.1.proj_in.diff_b": [640]},
    )
    layout = parsed(shapes)
    assert layout.format == "comfyui"
    assert components(layout) == {"unet": 2, "text_encoder": 1, "text_encoder_2": 1}
    bias = {m.name: m for m in layout.modules}["diffusion_model.input_blocks.4.1.proj_in"]
    assert layer_kinds(bias) == ["full"]
    assert detect_family(layout, {}).family == "sdxl"


def test_cloneofsimo_with_token_embeddings() -> None:
    shapes = {
        "unet:0:down": [4, 320],
        "unet:0:up": [320, 4],
        "unet:1:down": [4, 768],
        "unet:1:up": [320, 4],
        "text_encoder:0:down": [4, 768],
        "text_encoder:0:up": [768, 4],
        "<s1>": [768],
        "<s2>": [768],
        "leftover": [1],
    }
    metadata = {"unet": '["CrossAttention", "Attention", "GEGLU"]', "unet:0:rank": "4", "<s1>": "<embed>"}
    layout = parsed(shapes, metadata)
    assert layout.format == "cloneofsimo"
    assert [m.name for m in layout.modules] == ["text_encoder:0", "unet:0", "unet:1"]
    assert components(layout) == {"unet": 2, "text_encoder": 1}
    assert sorted((e.name, e.vectors, e.dim) for e in layout.embeddings) == [("<s1>", 1, 768), ("<s2>", 1, 768)]
    assert layout.unmatched == ["leftover"]


def test_ai_toolkit_told_by_its_software_metadata() -> None:
    shapes = peft("transformer.single_transformer_blocks.0.attn.to_q", 3072, 3072)
    assert parsed(shapes).format == "diffusers"
    software = json.dumps({"name": "ai-toolkit", "repo": "https://github.com/ostris/ai-toolkit", "version": "0.1"})
    layout = parsed(shapes, {"software": software})
    assert layout.format == "ai-toolkit"
    assert layout.notes == ["ai-toolkit writes no alpha: scale 1 (alpha = rank)"]


def test_onetrainer_bfl_names_under_transformer_prefix() -> None:
    shapes = merge(
        lora("transformer.double_blocks.0.img_attn.qkv.0", 3072, 3072),
        lora("transformer.single_blocks.0.linear1.3", 3072, 12288),
    )
    layout = parsed(shapes)
    assert layout.format == "onetrainer"
    assert components(layout) == {"transformer": 2}


def test_garbage_is_unknown_with_every_key_unmatched() -> None:
    shapes = {
        "model.layers.0.weight": [10, 10],
        "hello": [1],
        "": [2],
        "a:b:c": [3],
        "....": [1],
        ".alpha": [],
        "lora_unet_": [1],
        "x.alpha": [],
        "é.ü": [0],
    }
    layout = parsed(shapes)
    assert layout.format == "unknown"
    assert layout.modules == []
    assert sorted(layout.unmatched) == sorted(shapes)


def test_unknown_still_groups_unambiguous_lora_tensors() -> None:
    shapes = merge(lora("my_model.blocks.0.q", 64, 64), {"junk": [1], "other.thing": [2], "third": [3]})
    layout = parsed(shapes)
    assert layout.format == "unknown"
    assert [m.name for m in layout.modules] == ["my_model.blocks.0.q"]
    assert sorted(layout.unmatched) == ["junk", "other.thing", "third"]


def test_huge_indices_and_hostile_patterns_do_not_raise_or_stall() -> None:
    digits = "9" * 5000
    shapes = merge(
        lora(f"lora_unet_double_blocks_{digits}_img_attn_qkv", 3072, 9216),
        lora(f"lora_te1_text_model_encoder_layers_{digits}_self_attn_q_proj", 768, 768),
        {f"unet:{digits}:down": [4, 320]},
    )
    layout = parsed(shapes)
    assert detect_family(layout, {}).family
    hostile = {"unet.lora_alpha": 4, "unet.alpha_pattern": {"(a+)+$": 1, ".*" * 40 + "x": 2, "[": 3, "to_q": 5}}
    start = time.perf_counter()
    layout = parsed(
        merge(DIFFUSERS_SD1, peft("unet." + "a" * 60, 4, 4)), {"lora_adapter_metadata": json.dumps(hostile)}
    )
    assert time.perf_counter() - start < 1.0
    assert any(note.startswith("alpha_pattern entries matched literally") for note in layout.notes)
    assert {m.name.rpartition(".")[2]: m.config_alpha for m in layout.modules} == {
        "to_q": 5.0,
        "to_k": 4.0,
        "0": 4.0,
        "a" * 60: 4.0,
    }


def test_empty_file_is_unknown() -> None:
    layout = detect({}, {})
    assert (layout.format, layout.modules, layout.unmatched) == ("unknown", [], [])


def test_registry_ids_are_unique_and_unknown_is_last() -> None:
    ids = [fmt.id for fmt in FORMATS]
    assert len(ids) == len(set(ids))
    assert ids[-1] == "unknown"
    assert by_id("kohya") is FORMATS[ids.index("kohya")]
    assert by_id("nope") is None
    assert all(fmt.description for fmt in FORMATS)


# --- the two real files ----------------------------------------------------------------------------------------------


def test_real_catundchat_diffusers_attention_processors() -> None:
    head = read_header(real_file("catundchat_sd15_lora__pytorch_lora_weights.safetensors"))
    layout = detect(head.tensors, head.metadata)
    assert_partition(head.tensors, layout)
    assert layout.format == "diffusers-old"
    assert len(layout.modules) == 128
    assert components(layout) == {"unet": 128}
    assert {rank(m) for m in layout.modules} == {4}
    assert all(set(m.tensors) == {"down", "up"} for m in layout.modules)
    assert "down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_k_lora" in {
        m.name for m in layout.modules
    }
    assert detect_family(layout, head.metadata).family == "sd1"


def test_real_cloneofsimo_lora_diffusion() -> None:
    head = read_header(real_file("cloneofsimo_lora__analog_svd_rank4.safetensors"))
    layout = detect(head.tensors, head.metadata)
    assert_partition(head.tensors, layout)
    assert layout.format == "cloneofsimo"
    assert components(layout) == {"unet": 144, "text_encoder": 48}
    assert layout.embeddings == []
    assert layout.unmatched == []
    assert {rank(m) for m in layout.modules} == {4}
    assert detect_family(layout, head.metadata).family == "sd1"


# --- robustness and speed --------------------------------------------------------------------------------------------

TOKENS = st.sampled_from(
    [
        "lora_unet_",
        "lora_te1_",
        "unet.",
        "transformer.",
        "diffusion_model.",
        "base_model.model.",
        "double_blocks.0.",
        "processor.",
        "to_k_lora",
        "attn2_to_k",
        ".lora_down.weight",
        ".lora_A.weight",
        ".lora.down.weight",
        ".alpha",
        ".hada_w1_a",
        ".lokr_w2_b",
        ".oft_blocks",
        ".a1.weight",
        ".weight",
        ".on_input",
        ".dora_scale",
        "unet:0:down",
        "<s1>",
        "bundle_emb.x.clip_g",
        ".",
        ":",
        "_",
        "é",
    ]
)
KEYS = st.lists(TOKENS, min_size=0, max_size=6).map("".join) | st.text(max_size=30)
SHAPES = st.lists(st.integers(min_value=0, max_value=4096), max_size=5)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(KEYS, SHAPES, max_size=25), st.dictionaries(st.text(max_size=20), st.text(max_size=40)))
def test_any_header_parses_without_error_and_loses_no_key(
    shapes: dict[str, list[int]], metadata: dict[str, str]
) -> None:
    keys = header(shapes)
    layout = detect(keys, metadata)
    assert_partition(keys, layout)
    for found in layout.modules:
        layer_kinds(found)
        rank(found)
        problems_in(found)
    verdict = detect_family(layout, metadata)
    assert verdict.family


def test_a_2000_key_file_is_read_in_milliseconds() -> None:
    """A FLUX DoRA LoRA with both text encoders (OneTrainer-sized); the bound only catches quadratic blow-ups."""
    modules: dict[str, tuple[int, int]] = {}
    for block in range(19):
        for stream in ("img", "txt"):
            modules |= {f"double_blocks_{block}_{stream}_attn_qkv": (3072, 9216)}
            modules |= {f"double_blocks_{block}_{stream}_{name}": (3072, 3072) for name in ("attn_proj", "mod_lin")}
            modules |= {f"double_blocks_{block}_{stream}_mlp_0": (3072, 12288)}
            modules |= {f"double_blocks_{block}_{stream}_mlp_2": (12288, 3072)}
    for block in range(38):
        modules |= {f"single_blocks_{block}_linear1": (3072, 21504), f"single_blocks_{block}_linear2": (15360, 3072)}
        modules |= {f"single_blocks_{block}_modulation_lin": (3072, 9216)}
    modules = {f"lora_unet_{name}": dims for name, dims in modules.items()}
    for layer in range(12):
        for name in ("self_attn_q_proj", "self_attn_k_proj", "self_attn_v_proj", "self_attn_out_proj", "mlp_fc1"):
            modules[f"lora_te1_text_model_encoder_layers_{layer}_{name}"] = (768, 768)
    for block in range(24):
        for name in ("SelfAttention_q", "SelfAttention_k", "SelfAttention_v", "SelfAttention_o"):
            modules[f"lora_te3_encoder_block_{block}_layer_0_{name}"] = (4096, 4096)
        for name in ("DenseReluDense_wi_0", "DenseReluDense_wi_1"):
            modules[f"lora_te3_encoder_block_{block}_layer_1_{name}"] = (4096, 10240)
    shapes: dict[str, list[int]] = {}
    for name, (fan_in, fan_out) in modules.items():
        shapes |= lora(name, fan_in, fan_out, 16) | {f"{name}.dora_scale": [fan_out, 1]}
    keys = header(shapes)
    assert len(keys) >= 2000
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        layout = detect(keys, {})
        verdict = detect_family(layout, {})
        best = min(best, time.perf_counter() - start)
    assert (layout.format, verdict.family) == ("lycoris", "flux1")
    assert components(layout) == {"transformer": 304, "text_encoder": 60, "text_encoder_3": 144}
    assert best < 0.25, f"{len(keys)} keys took {best * 1000:.1f} ms"
