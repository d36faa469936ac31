"""`lorahub.load` of a signed, catalogued rank-16 adapter into a full-size SD1.5 UNet, against diffusers'
`load_lora_weights` of the same file; and switching adapters on a warm pipeline against a fresh load.

The UNet is built from the real SD1.5 config with random fp16 weights (no download); the text encoder is the real
CLIP-L geometry; the VAE is tiny (loading adapters never touches it). The adapter is a kohya file (UNet attention,
feed-forward and projections, and the text encoder: what kohya's trainer writes), catalogued and signed in a fresh
home, then loaded `--rounds` times each way, alternating; the figure is the median of the per-round ratios. Switching
loads adapter A, then B into A's place (`replace=`: diffusers hotswap), against a fresh load of B.

    python benchmarks/load_sd15.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SD15_UNET = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 768, "attention_head_dim": 8,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}  # fmt: skip


def sd15_pipeline() -> Any:
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from lorahub.dev.tiny_pipeline import build_tiny_pipeline

    tiny = build_tiny_pipeline("sd1")
    unet = UNet2DConditionModel(**SD15_UNET).to(torch.float16)
    text = CLIPTextModel(
        CLIPTextConfig(vocab_size=tiny.tokenizer.vocab_size, hidden_size=768, intermediate_size=3072,
                       num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77)
    ).to(torch.float16)  # fmt: skip
    vae: AutoencoderKL = tiny.vae
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text, tokenizer=tiny.tokenizer, unet=unet, scheduler=DDIMScheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip


def timed(action: Callable[[], Any]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    import torch

    import lorahub
    from lorahub.dev.example_lora import write_example_lora
    from lorahub.sdk.adding import AddOptions

    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        hub = lorahub.Hub.open(root / "home")
        hub.create_identity("Bench <bench@lorahub.example>")
        files = {}
        for name, seed in (("style-a", 1), ("style-b", 2)):
            files[name] = root / f"{name}.safetensors"
            write_example_lora(files[name], rank=16, alpha=8.0, seed=seed, name=name)
            hub.add(files[name], AddOptions(name=name, license="MIT"))
        pipe = sd15_pipeline()
        size = files["style-a"].stat().st_size / 2**20

        def ours() -> None:
            lorahub.load("style-a", pipe, hub=hub).unload()

        def theirs() -> None:
            pipe.load_lora_weights(str(files["style-a"]), adapter_name="ref")
            pipe.delete_adapters(["ref"])

        ours(), theirs()  # warm: imports, first verification (recorded for the cache), allocator
        load_ratios, ours_s, theirs_s = [], [], []
        for _ in range(args.rounds):
            ours_s.append(timed(ours))
            theirs_s.append(timed(theirs))
            load_ratios.append(ours_s[-1] / theirs_s[-1])

        handle = lorahub.load("style-a", pipe, hub=hub)
        switch_s, fresh_s, switch_ratios = [], [], []
        current = "style-a"
        for _ in range(args.rounds):
            target = "style-b" if current == "style-a" else "style-a"
            switch_s.append(timed(lambda t=target: lorahub.load(t, pipe, hub=hub, replace=handle)))  # type: ignore[misc]
            assert handle.hotswapped
            current = target
            other = "style-b" if current == "style-a" else "style-a"
            fresh_s.append(timed(lambda o=other: lorahub.load(o, pipe, hub=hub).unload()))  # type: ignore[misc]
            switch_ratios.append(switch_s[-1] / fresh_s[-1])

    def show(values: list[float]) -> str:
        return f"median {statistics.median(values) * 1000:.0f} ms ({', '.join(f'{v * 1000:.0f}' for v in values)})"

    print(f"SD1.5 UNet + CLIP-L (fp16, random), kohya rank-16 adapter {size:.1f} MiB, {args.rounds} rounds")
    print(f"lorahub.load + unload:            {show(ours_s)}")
    print(f"diffusers load_lora_weights + del: {show(theirs_s)}")
    print(f"median ratio load/diffusers: {statistics.median(load_ratios):.2f}")
    print(f"switch (replace=, hotswap):        {show(switch_s)}")
    print(f"fresh load + unload:               {show(fresh_s)}")
    print(f"median ratio switch/fresh: {statistics.median(switch_ratios):.2f}")


if __name__ == "__main__":
    main()
