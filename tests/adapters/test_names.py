"""Name maps of SD 1.x/2.x and SDXL LoRAs, checked against the real models and diffusers' own kohya converter.

The models are built on torch's ``meta`` device from the real configs (no weights). transformers 5 flattened
``CLIPTextModel`` (no ``text_model`` submodule) while ``CLIPTextModelWithProjection`` keeps it; the canonical names
always spell ``text_model.``, so the model paths are normalised to that form before comparing.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from lorahub.adapters import names
from lorahub.adapters.names import from_canonical, inventory, to_canonical
from lorahub.dev.model_configs import CLIP_L, SD15_UNET, SD21_UNET, SDXL_UNET

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

OPENCLIP_H_SD2: dict[str, Any] = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_attention_heads": 16,
    "num_hidden_layers": 23,
}
OPENCLIP_G: dict[str, Any] = {
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_attention_heads": 20,
    "num_hidden_layers": 32,
    "projection_dim": 1280,
}
UNET_CONFIGS = {"sd1": SD15_UNET, "sd2": SD21_UNET, "sdxl": SDXL_UNET}
TE_CONFIGS: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {
    "sd1": {"text_encoder": ("CLIPTextModel", CLIP_L)},
    "sd2": {"text_encoder": ("CLIPTextModel", OPENCLIP_H_SD2)},
    "sdxl": {
        "text_encoder": ("CLIPTextModel", CLIP_L),
        "text_encoder_2": ("CLIPTextModelWithProjection", OPENCLIP_G),
    },
}
FAMILIES = ("sd1", "sd2", "sdxl")


def _module_paths(model: Any) -> set[str]:
    return {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear | torch.nn.Conv2d)}


@pytest.mark.parametrize("family", FAMILIES)
def test_unet_inventory_is_the_models_linear_and_conv_modules(family: str) -> None:
    with torch.device("meta"):
        unet = diffusers.UNet2DConditionModel(**UNET_CONFIGS[family])
    expected = {f"unet.{p}" for p in _module_paths(unet)}
    assert set(inventory(family, "unet")) == expected
    assert len(inventory(family, "unet")) == len(expected)  # no duplicates


@pytest.mark.parametrize("family", FAMILIES)
def test_text_encoder_inventories_are_the_models_linear_modules(family: str) -> None:
    for component, (cls_name, config) in TE_CONFIGS[family].items():
        cls = getattr(transformers, cls_name)
        with torch.device("meta"):
            model = cls(transformers.CLIPTextConfig(**config))
        # transformers 5 CLIPTextModel has no text_model submodule: normalise to the canonical text_model. form
        expected = set()
        for path in _module_paths(model):
            flat = path.removeprefix("text_model.")
            expected.add(f"{component}.{path if flat == 'text_projection' else 'text_model.' + flat}")
        assert set(inventory(family, component)) == expected


def test_known_counts_from_the_reference() -> None:
    """sd-scripts' counts: SD1.5 attention LoRA 192 modules, SDXL 722; CLIP-L 72, OpenCLIP-G 192 (+ text_projection)."""

    def attention_only(family: str) -> int:
        return sum(1 for n in inventory(family, "unet") if ".attentions." in n)

    assert attention_only("sd1") == 192
    assert attention_only("sdxl") == 722
    assert len(inventory("sdxl", "text_encoder")) == 72
    assert len(inventory("sdxl", "text_encoder_2")) == 193


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("fmt", ["kohya", "diffusers"])
def test_round_trip_every_module(family: str, fmt: str) -> None:
    for canonical in inventory(family):
        written = from_canonical(family, fmt, canonical)
        assert written is not None, canonical
        assert to_canonical(family, fmt, written) == canonical
        component = canonical.split(".")[0]
        assert to_canonical(family, fmt, written, component) == canonical


def test_written_names_are_distinct() -> None:
    for family in FAMILIES:
        for fmt in ("kohya", "diffusers", "comfyui"):
            written = [from_canonical(family, fmt, c) for c in inventory(family)]
            known = [w for w in written if w is not None]
            assert len(set(known)) == len(known), (family, fmt)


def test_comfyui_unet_and_clip_l_round_trip() -> None:
    for family in FAMILIES:
        for canonical in inventory(family):
            written = from_canonical(family, "comfyui", canonical)
            clip_l = family in ("sd1", "sdxl") and canonical.startswith("text_encoder.")
            if canonical.startswith("unet.") or clip_l:
                assert written is not None
                assert to_canonical(family, "comfyui", written) == canonical
            else:
                assert written is None  # OpenCLIP-H/G ComfyUI spellings are not confirmed


def test_examples_from_the_reference() -> None:
    kohya_sdxl = {
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q": (
            "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
        ),
        "lora_unet_middle_block_1_transformer_blocks_9_attn1_to_out_0": (
            "unet.mid_block.attentions.0.transformer_blocks.9.attn1.to_out.0"
        ),
        "lora_unet_output_blocks_0_1_proj_in": "unet.up_blocks.0.attentions.0.proj_in",
        "lora_unet_input_blocks_1_0_in_layers_2": "unet.down_blocks.0.resnets.0.conv1",
        "lora_unet_input_blocks_1_0_out_layers_3": "unet.down_blocks.0.resnets.0.conv2",
        "lora_unet_input_blocks_1_0_emb_layers_1": "unet.down_blocks.0.resnets.0.time_emb_proj",
        "lora_unet_input_blocks_4_0_skip_connection": "unet.down_blocks.1.resnets.0.conv_shortcut",
        "lora_unet_input_blocks_3_0_op": "unet.down_blocks.0.downsamplers.0.conv",
        "lora_unet_output_blocks_2_2_conv": "unet.up_blocks.0.upsamplers.0.conv",
        "lora_unet_input_blocks_0_0": "unet.conv_in",
        "lora_unet_out_2": "unet.conv_out",
        "lora_unet_time_embed_0": "unet.time_embedding.linear_1",
        "lora_unet_label_emb_0_2": "unet.add_embedding.linear_2",
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_1_ff_net_0_proj": (
            "unet.down_blocks.1.attentions.0.transformer_blocks.1.ff.net.0.proj"
        ),
        "lora_te1_text_model_encoder_layers_11_mlp_fc2": "text_encoder.text_model.encoder.layers.11.mlp.fc2",
        "lora_te2_text_model_encoder_layers_31_self_attn_out_proj": (
            "text_encoder_2.text_model.encoder.layers.31.self_attn.out_proj"
        ),
        "lora_te2_encoder_layers_0_self_attn_q_proj": "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj",
        "lora_te2_text_projection": "text_encoder_2.text_projection",
    }
    for name, canonical in kohya_sdxl.items():
        assert to_canonical("sdxl", "kohya", name) == canonical, name
    assert from_canonical("sdxl", "kohya", "unet.down_blocks.1.attentions.0.proj_in") == (
        "lora_unet_input_blocks_4_1_proj_in"
    )
    # SD 1.5 kohya keeps diffusers names; SGM (A1111 compvis) names are read too
    sd1_conv = "unet.up_blocks.0.upsamplers.0.conv"
    assert from_canonical("sd1", "kohya", sd1_conv) == "lora_unet_up_blocks_0_upsamplers_0_conv"
    assert to_canonical("sd1", "kohya", "lora_unet_output_blocks_2_1_conv") == sd1_conv
    assert from_canonical("sd1", "comfyui", sd1_conv) == "diffusion_model.output_blocks.2.1.conv"
    assert to_canonical("sd1", "kohya", "lora_unet_time_embedding_linear_1") == "unet.time_embedding.linear_1"


def test_diffusers_text_model_spellings() -> None:
    canonical = "text_encoder.text_model.encoder.layers.0.self_attn.q_proj"
    assert from_canonical("sd1", "diffusers", canonical) == canonical
    flat = "text_encoder.encoder.layers.0.self_attn.q_proj"
    assert from_canonical("sd1", "diffusers", canonical, transformers5=True) == flat
    assert to_canonical("sd1", "diffusers", flat) == canonical
    assert to_canonical("sd1", "diffusers", "encoder.layers.0.self_attn.q_proj", "text_encoder") == canonical
    assert to_canonical("sd1", "diffusers", "down_blocks.0.attentions.0.proj_in", "unet") == (
        "unet.down_blocks.0.attentions.0.proj_in"
    )
    proj = "text_encoder_2.text_projection"
    assert from_canonical("sdxl", "diffusers", proj, transformers5=True) == proj


def test_unknown_names_are_none() -> None:
    unknown = [
        ("sd1", "kohya", "lora_unet_down_blocks_0_attentions_2_proj_in"),  # only 2 attentions per down block
        ("sd1", "kohya", "lora_unet_down_blocks_3_attentions_0_proj_in"),  # block 3 has no attention
        ("sdxl", "kohya", "lora_unet_input_blocks_1_1_proj_in"),  # SDXL down block 0 has no attention
        ("sdxl", "kohya", "lora_unet_input_blocks_4_1_transformer_blocks_2_attn1_to_q"),  # only 2 layers
        ("sd1", "kohya", "lora_unet_down_blocks_0_resnets_0_conv_shortcut"),  # 320 → 320: no shortcut
        ("sd1", "kohya", "lora_te2_text_model_encoder_layers_0_mlp_fc1"),  # SD1 has one text encoder
        ("sd1", "kohya", "lora_te_text_model_encoder_layers_12_mlp_fc1"),  # CLIP-L has 12 layers
        ("sd2", "kohya", "lora_te_text_model_encoder_layers_23_mlp_fc1"),  # SD2's OpenCLIP-H has 23
        ("sdxl", "kohya", "lora_te_text_model_encoder_layers_0_mlp_fc1"),  # SDXL writes lora_te1_
        ("sdxl", "kohya", "lora_unet_joint_blocks_0_x_block_attn_qkv"),  # SD3
        ("sdxl", "diffusers", "unet.down_blocks.0.attentions.0.proj_in"),
        ("sd1", "diffusers", "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight"),
        ("sd1", "diffusers", "unet.down_blocks.0.resnets.0.norm1"),  # GroupNorm, no LoRA
        ("flux", "kohya", "lora_unet_double_blocks_0_img_attn_qkv"),
        ("sd1", "peft", "unet.conv_in"),
    ]
    for family, fmt, name in unknown:
        assert to_canonical(family, fmt, name) is None, name
    assert to_canonical("sd1", "kohya", "lora_unet_conv_in", "text_encoder") is None  # wrong component
    assert from_canonical("sd1", "kohya", "unet.down_blocks.0.resnets.0.norm1") is None
    assert from_canonical("sd3", "kohya", "unet.conv_in") is None
    assert from_canonical("sd1", "kohya", "conv_in") is None
    assert inventory("flux") == ()


def _kohya_state_dict(family: str, canonical_names: list[str]) -> dict[str, Any]:
    """A kohya state dict whose ``lora_down`` holds the module's index, so renamed keys can be traced back."""
    state: dict[str, Any] = {}
    for index, canonical in enumerate(canonical_names):
        key = from_canonical(family, "kohya", canonical)
        assert key is not None
        state[f"{key}.lora_down.weight"] = torch.tensor([float(index)])
        state[f"{key}.lora_up.weight"] = torch.zeros(1)
        state[f"{key}.alpha"] = torch.tensor(1.0)
    return state


def _diffusers_modules(family: str, state: dict[str, Any]) -> dict[int, str]:
    """Run diffusers' own kohya → PEFT conversion; index → converted module path."""
    import importlib

    conv: Any = importlib.import_module("diffusers.loaders.lora_conversion_utils")
    utils: Any = importlib.import_module("diffusers.utils.state_dict_utils")

    config = SimpleNamespace(layers_per_block=UNET_CONFIGS[family]["layers_per_block"])
    state = conv._maybe_map_sgm_blocks_to_diffusers(state, config)
    converted, _alphas = conv._convert_non_diffusers_lora_to_diffusers(state)
    unet = {k: v for k, v in converted.items() if k.startswith("unet.")}
    text = {k: v for k, v in converted.items() if not k.startswith("unet.")}
    peft = {**utils.convert_unet_state_dict_to_peft(unet), **(utils.convert_state_dict_to_peft(text) if text else {})}
    # diffusers leaves text_projection in its older ``.lora.down.weight`` spelling; both name the same module
    downs = (".lora_A.weight", ".lora.down.weight")
    return {
        int(v.item()): k.rsplit(".", 3 if k.endswith(downs[1]) else 2)[0] for k, v in peft.items() if k.endswith(downs)
    }


@pytest.mark.parametrize("family", FAMILIES)
def test_kohya_names_agree_with_diffusers_converter(family: str) -> None:
    canonical_names = list(inventory(family))
    modules = _diffusers_modules(family, _kohya_state_dict(family, canonical_names))
    assert len(modules) == len(canonical_names)
    mismatches = [(c, modules[i]) for i, c in enumerate(canonical_names) if modules[i] != c]
    assert mismatches == []


def test_diffusers_named_sdxl_kohya_keys_agree_with_diffusers_converter() -> None:
    """Diffusers-converted SDXL kohya files (``lora_unet_down_blocks_1_…``) are read, and diffusers agrees."""
    canonical_names = list(inventory("sdxl", "unet"))
    state: dict[str, Any] = {}
    for index, canonical in enumerate(canonical_names):
        key = "lora_unet_" + canonical.removeprefix("unet.").replace(".", "_")
        assert to_canonical("sdxl", "kohya", key) == canonical
        state[f"{key}.lora_down.weight"] = torch.tensor([float(index)])
        state[f"{key}.lora_up.weight"] = torch.zeros(1)
    modules = _diffusers_modules("sdxl", state)
    # diffusers 0.42.1 mangles lora_unet_add_embedding_linear_{1,2}: its SDXL "emb" heuristic strips the index and
    # both land on ``add.embedding.linear`` (one overwrites the other). Our names come from the model inventory.
    diverging = {"unet.add_embedding.linear_1", "unet.add_embedding.linear_2"}
    agreeing = [(i, c) for i, c in enumerate(canonical_names) if c not in diverging]
    assert [modules[i] for i, _ in agreeing] == [c for _, c in agreeing]


def test_package_code_needs_no_torch() -> None:
    import ast
    import inspect

    from lorahub.adapters import name_tables

    for module in (names, name_tables):
        tree = ast.parse(inspect.getsource(module))
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])
        }
        assert not imported & {"torch", "diffusers", "transformers"}
