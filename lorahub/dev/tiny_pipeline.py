"""Tiny diffusers pipelines (SD 1.5, SDXL, FLUX.1, FLUX.2, Qwen-Image shapes) built from configs with random
weights, offline.

Tests and the quickstart need a real ``DiffusionPipeline`` folder to load, generate with and train on, in seconds and
without the network. The configs keep the real module *names* and wiring (so LoRA keys, kohya conversion and
``load_lora_weights`` behave as on the real models) at toy widths. Tokenizers are made locally: a byte-level CLIP BPE
learned from a few sentences, a Unigram T5 vocab, and a byte-level Qwen BPE (with the ``<|im_start|>`` chat tokens)
for the Qwen text encoders of FLUX.2 klein (Qwen3) and Qwen-Image (Qwen2.5-VL). FLUX.2 is built as its klein variant
(``Flux2KleinPipeline``): dev's Mistral 3 encoder needs a Pixtral processor, while both share the transformer, whose
module names are what adapters target. Needs torch, diffusers and transformers (the ``train`` extra).
"""

from __future__ import annotations

import importlib
import json
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

from lorahub import errors

Family = Literal["sd1", "sdxl", "flux1", "flux2", "qwen-image"]
FAMILIES: tuple[Family, ...] = ("sd1", "sdxl", "flux1", "flux2", "qwen-image")

# Toy text the tokenizers learn from: words that captions in tests, examples and the quickstart use.
CORPUS = (
    "a photo of sks cat",
    "a photo of a dog in the style of example style",
    "example style, solid colour 0 1 2 3 painting portrait landscape",
    "a red green blue yellow square on a white background",
    "photo photo photo style style style colour colour",
)
BPE_MERGES = 200  # enough that every corpus word becomes one token (the loop stops when nothing is left to merge)
CLIP_MAX_LENGTH = 77
START, END = "<|startoftext|>", "<|endoftext|>"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's byte → printable-character table (every byte gets a visible symbol)."""
    printable = list(range(ord("!"), ord("~") + 1))
    printable += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {byte: chr(code) for byte, code in zip(printable, codes, strict=True)}


def _learn_merges(words: list[str], count: int, *, word_end: str = "</w>") -> list[tuple[str, str]]:
    """The most frequent adjacent pair, merged ``count`` times (ties broken by the pair itself: deterministic).
    ``word_end`` marks a word's last symbol (CLIP's ``</w>``; GPT-2-style BPEs such as Qwen's mark nothing)."""
    table = _bytes_to_unicode()
    spelled = [[table[b] for b in word.encode()] for word in words]
    for symbols in spelled:
        symbols[-1] += word_end
    merges: list[tuple[str, str]] = []
    for _ in range(count):
        pairs = Counter(pair for symbols in spelled for pair in pairwise(symbols))
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        spelled = [_merge(symbols, best) for symbols in spelled]
    return merges


def _merge(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    out: list[str] = []
    index = 0
    while index < len(symbols):
        if index + 1 < len(symbols) and (symbols[index], symbols[index + 1]) == pair:
            out.append(pair[0] + pair[1])
            index += 2
        else:
            out.append(symbols[index])
            index += 1
    return out


def _clip_tokenizer(workdir: Path) -> Any:
    """A CLIP BPE tokenizer: 256 byte symbols, the same with ``</w>``, the learned merges and the two specials."""
    transformers = _module("transformers")

    words = [word for line in CORPUS for word in line.replace(",", " ").split()]
    merges = _learn_merges(words, BPE_MERGES)
    symbols = list(_bytes_to_unicode().values())
    vocab_list = symbols + [s + "</w>" for s in symbols] + [a + b for a, b in merges] + [START, END]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(vocab_list))}
    (workdir / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (workdir / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return transformers.CLIPTokenizer(
        vocab=str(workdir / "vocab.json"),
        merges=str(workdir / "merges.txt"),
        model_max_length=CLIP_MAX_LENGTH,
    )


def _t5_tokenizer() -> Any:
    """A Unigram T5 tokenizer from an in-memory vocab (no sentencepiece file): word pieces, then single letters."""
    transformers = _module("transformers")

    words = sorted({word for line in CORPUS for word in line.replace(",", " ").split()})
    letters = sorted({char for word in words for char in word})
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(f"▁{word}", -1.0) for word in words] + [(char, -3.0) for char in letters]
    return transformers.T5Tokenizer(vocab=vocab, extra_ids=0)


QWEN_END, QWEN_CHAT = "<|endoftext|>", ("<|im_start|>", "<|im_end|>")
QWEN_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""Qwen's chat markup, which FLUX.2 klein applies to a prompt (``apply_chat_template``); Qwen-Image writes it itself."""


def _qwen_tokenizer() -> Any:
    """A byte-level Qwen BPE (GPT-2 style: no word-end marks) learned from the corpus, with Qwen's end and chat
    tokens; the vocab and merges are given in memory."""
    transformers = _module("transformers")

    words = [word for line in CORPUS for word in line.replace(",", " ").split()]
    merges = _learn_merges(words, BPE_MERGES, word_end="")
    symbols = list(_bytes_to_unicode().values())
    vocab_list = [*symbols, *(a + b for a, b in merges), QWEN_END]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(vocab_list))}
    tokenizer = transformers.Qwen2Tokenizer(vocab=vocab, merges=merges)
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_CHAT)})
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    return tokenizer


def _qwen_text(tokenizer: Any) -> dict[str, Any]:
    """The smallest Qwen decoder: 2 layers of width 32 (FLUX.2 klein's Qwen3 and Qwen-Image's Qwen2.5-VL share it)."""
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 512,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": None,
    }


def _clip_config(tokenizer: Any) -> Any:
    transformers = _module("transformers")

    return transformers.CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=CLIP_MAX_LENGTH,
        projection_dim=32,
        bos_token_id=tokenizer.convert_tokens_to_ids(START),
        eos_token_id=tokenizer.convert_tokens_to_ids(END),  # CLIP pools at the eos position
        pad_token_id=tokenizer.convert_tokens_to_ids(END),
    )


def _sd_vae() -> Any:
    """Four blocks, as in real SD: vae_scale_factor 8, so 64 px images are 8×8 latents."""
    diffusers = _module("diffusers")

    return diffusers.AutoencoderKL(
        block_out_channels=(16, 16, 16, 16),
        norm_num_groups=4,
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        sample_size=64,
    )


def _build_sd1(workdir: Path) -> Any:
    diffusers = _module("diffusers")
    transformers = _module("transformers")

    tokenizer = _clip_tokenizer(workdir)
    unet = diffusers.UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    scheduler = diffusers.DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return diffusers.StableDiffusionPipeline(
        vae=_sd_vae(),
        text_encoder=transformers.CLIPTextModel(_clip_config(tokenizer)),
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _build_sdxl(workdir: Path) -> Any:
    diffusers = _module("diffusers")
    transformers = _module("transformers")

    tokenizer = _clip_tokenizer(workdir)
    unet = diffusers.UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,  # 6 × 8 time ids + 32 pooled text
        cross_attention_dim=64,  # 32 + 32: both encoders' hidden states, concatenated
    )
    scheduler = diffusers.EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="leading",
        steps_offset=1,
    )
    return diffusers.StableDiffusionXLPipeline(
        vae=_sd_vae(),
        text_encoder=transformers.CLIPTextModel(_clip_config(tokenizer)),
        text_encoder_2=transformers.CLIPTextModelWithProjection(_clip_config(tokenizer)),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
    )


def _build_flux1(workdir: Path) -> Any:
    diffusers = _module("diffusers")
    transformers = _module("transformers")

    tokenizer = _clip_tokenizer(workdir)
    tokenizer_2 = _t5_tokenizer()
    transformer = diffusers.FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 × latent channels: FLUX packs 2×2 latent patches
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=(4, 4, 8),  # sums to attention_head_dim
    )
    vae = diffusers.AutoencoderKL(
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
        sample_size=64,
    )
    text_encoder_2 = transformers.T5EncoderModel(
        transformers.T5Config(
            vocab_size=len(tokenizer_2),
            d_model=32,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    )
    return diffusers.FluxPipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=transformers.CLIPTextModel(_clip_config(tokenizer)),
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )


FLUX2_TEXT_LAYERS = (1, 2, 2)
"""The text encoder's hidden states FLUX.2 stacks (klein: layers 9, 18, 27 of 36): here those of 2 layers; the
transformer's joint width is three times the encoder's."""


def _build_flux2(workdir: Path) -> Any:
    """FLUX.2 klein's wiring (``Flux2KleinPipeline``) at FLUX.2's ratios: SwiGLU MLP 3, 4-axis RoPE, shared
    modulation; a Qwen3 text encoder; the FLUX.2 VAE with its 2×2 patch batch norm."""
    diffusers = _module("diffusers")
    transformers = _module("transformers")

    tokenizer = _qwen_tokenizer()
    text_encoder = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(head_dim=16, **_qwen_text(tokenizer)))
    transformer = diffusers.Flux2Transformer2DModel(
        in_channels=16,  # 4 latent channels × 2×2 patches
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=3 * 32,
        axes_dims_rope=(4, 4, 4, 4),  # sums to attention_head_dim
        guidance_embeds=False,  # klein is distilled: no guidance embedder
    )
    vae = diffusers.AutoencoderKLFlux2(
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        norm_num_groups=4,
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=64,
    )
    return diffusers.Flux2KleinPipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        is_distilled=True,
    )


def _build_qwen_image(workdir: Path) -> Any:
    """Qwen-Image's wiring (``QwenImagePipeline``): its double-stream transformer, a Qwen2.5-VL text encoder (with a
    one-block vision tower, which text prompts never run) and the Qwen-Image VAE (temporal, 8× spatial)."""
    diffusers = _module("diffusers")
    transformers = _module("transformers")

    tokenizer = _qwen_tokenizer()
    config = transformers.Qwen2_5_VLConfig(
        text_config={**_qwen_text(tokenizer), "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}},
        vision_config={
            "depth": 1,
            "hidden_size": 16,
            "out_hidden_size": 32,
            "num_heads": 2,
            "intermediate_size": 16,
            "fullatt_block_indexes": [0],
        },
    )
    transformer = diffusers.QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,  # 4 latent channels × 2×2 patches
        out_channels=4,
        num_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        axes_dims_rope=(4, 6, 6),  # sums to attention_head_dim
    )
    vae = diffusers.AutoencoderKLQwenImage(
        base_dim=8,
        z_dim=4,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        latents_mean=[0.0] * 4,
        latents_std=[1.0] * 4,
    )
    return diffusers.QwenImagePipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=transformers.Qwen2_5_VLForConditionalGeneration(config),
        tokenizer=tokenizer,
        transformer=transformer,
    )


BUILDERS: dict[Family, Callable[[Path], Any]] = {
    "sd1": _build_sd1,
    "sdxl": _build_sdxl,
    "flux1": _build_flux1,
    "flux2": _build_flux2,
    "qwen-image": _build_qwen_image,
}

# What each family's pipeline needs at call time to run tiny and fast (FLUX's T5 would otherwise pad to 512 tokens).
CALL_KWARGS: dict[Family, dict[str, Any]] = {
    "sd1": {},
    "sdxl": {},
    "flux1": {"max_sequence_length": 16, "guidance_scale": 3.5},
    "flux2": {"max_sequence_length": 32, "text_encoder_out_layers": FLUX2_TEXT_LAYERS},
    "qwen-image": {"max_sequence_length": 32},
}


def _module(name: str) -> Any:
    """diffusers and transformers, imported when used (``import lorahub`` stays light) and typed loosely: they
    are only partly annotated, so checking calls into them would only produce noise."""
    return importlib.import_module(name)


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's global generator for the weight init without leaving the caller's random state changed."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build_tiny_pipeline(family: Family = "sd1", seed: int = 0) -> Any:
    """The tiny pipeline of ``family`` in memory (fp32, CPU); the same ``seed`` gives the same weights."""
    if family not in BUILDERS:
        raise errors.UnknownChoiceError(
            f"unknown tiny pipeline family {family!r}", hint=f"use one of: {', '.join(FAMILIES)}"
        )
    try:
        import diffusers  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        raise errors.MissingExtraError("building a tiny pipeline", "train") from None
    with tempfile.TemporaryDirectory(prefix="lorahub-tok-") as workdir, _seeded(seed):
        pipeline = BUILDERS[family](Path(workdir))
    for component in pipeline.components.values():
        if hasattr(component, "eval"):
            component.eval()  # fresh modules start in train mode (T5 dropout); from_pretrained gives eval mode
    return pipeline


def write_tiny_pipeline(directory: Path, family: Family = "sd1", seed: int = 0) -> Path:
    """Write the tiny pipeline of ``family`` as a diffusers folder (``save_pretrained``); return ``directory``.

    ``DiffusionPipeline.from_pretrained(directory)`` loads it offline; 2 steps at 64×64 px take tens of ms on CPU
    (pass ``CALL_KWARGS[family]`` to the call).
    """
    pipeline = build_tiny_pipeline(family, seed)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    pipeline.save_pretrained(directory, safe_serialization=True)
    return directory
