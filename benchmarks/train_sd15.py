"""LoRA training throughput on GPU: lorahub's loop against diffusers' ``train_text_to_image_lora.py`` loop.

Full SD 1.5 geometry (UNet, VAE and CLIP-L text encoder from the real configs, random weights: no download), 512 px,
batch 4, bf16 mixed precision, rank 16 on to_q/to_k/to_v/to_out.0, AdamW. Each loop runs warm-up steps, then timed
steps (CUDA-synchronised); it/s and peak GPU memory (``max_memory_allocated`` since the loop's models were loaded)
are reported for:

* ``diffusers``: the loop of diffusers' ``examples/text_to_image/train_text_to_image_lora.py`` re-implemented step
  for step (VAE encode and text encoder forward every step, LoRA params left in bf16 as the script does for bf16,
  accelerate's autocast, ``clip_grad_norm_``, AdamW, LR scheduler);
* ``lorahub``: :class:`lorahub.training.loop.Trainer` as ``lorahub train`` runs it (text embeddings cached, VAE
  every step);
* ``lorahub --cache-latents``: the same with latents cached and the VAE freed.

The loops run in the same process, alternating, ``--rounds`` times; the figure is the median per-round ratio
lorahub / diffusers, which GPU clock drift affects less than the it/s themselves.

    python benchmarks/train_sd15.py [--steps 30] [--warmup 5] [--rounds 2] [--json]
    python benchmarks/train_sd15.py --smoke   # tiny pipeline on CPU: checks the script runs, measures nothing
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lorahub.dev.model_configs import CLIP_L, SD15_UNET

SD15_VAE = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}

CLIP_L_TEXT = {
    **CLIP_L,
    "max_position_embeddings": 77,
    "projection_dim": 768,
    "hidden_act": "quick_gelu",
}

SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "skip_prk_steps": True,
}

TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
RESOLUTION, BATCH, RANK, LR = 512, 4, 16, 1e-4
IMAGES = 16


def write_base(directory: Path) -> Path:
    """An SD 1.5-geometry pipeline folder with random weights (stored in bf16), and a local tokenizer."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from lorahub.dev.tiny_pipeline import _clip_tokenizer

    torch.manual_seed(0)
    tokenizer = _clip_tokenizer(directory.parent)
    text = CLIPTextConfig(
        vocab_size=49408,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|startoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        **CLIP_L_TEXT,
    )
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL(**SD15_VAE),
        text_encoder=CLIPTextModel(text),
        tokenizer=tokenizer,
        unet=UNet2DConditionModel(**SD15_UNET),
        scheduler=PNDMScheduler(**SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.to(torch.bfloat16)
    pipe.save_pretrained(directory)
    return directory


def write_images(directory: Path, resolution: int) -> Path:
    import numpy as np
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(IMAGES):
        pixels = rng.integers(0, 256, (resolution, resolution, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(directory / f"img-{index}.png")
        (directory / f"img-{index}.txt").write_text(f"a photo of sks thing number {index}")
    return directory


# --- diffusers' train_text_to_image_lora.py, re-implemented -----------------------------------------------------


class DiffusersLoop:
    """The model set-up (lines ~480-560) and the inner loop (lines ~850-950) of the diffusers example script."""

    def __init__(self, base: Path, data: Path, device: str, resolution: int) -> None:
        import torch
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from diffusers.optimization import get_scheduler
        from peft import LoraConfig
        from PIL import Image
        from transformers import CLIPTextModel, CLIPTokenizer

        self.torch = torch
        weight_dtype = torch.bfloat16
        self.noise_scheduler = DDPMScheduler.from_pretrained(base, subfolder="scheduler")
        tokenizer = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer")
        self.text_encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder")
        self.vae = AutoencoderKL.from_pretrained(base, subfolder="vae")
        self.unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
        for model in (self.unet, self.vae, self.text_encoder):
            model.requires_grad_(False)
        lora = LoraConfig(r=RANK, lora_alpha=RANK, init_lora_weights="gaussian", target_modules=TARGETS)
        self.unet.to(device, dtype=weight_dtype)
        self.vae.to(device, dtype=weight_dtype)
        self.text_encoder.to(device, dtype=weight_dtype)
        self.unet.add_adapter(lora)
        # the script upcasts LoRA params only for fp16 (``if args.mixed_precision == "fp16"``); bf16 keeps them bf16
        self.params = [p for p in self.unet.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=LR, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-08)
        self.lr_scheduler = get_scheduler("constant", optimizer=self.optimizer, num_warmup_steps=0)
        self.unet.train()
        # the dataloader: resize, centre crop, flip, to tensor, normalise; tokenised captions (pinned CPU batches)
        pixels, ids = [], []
        for index in range(IMAGES):
            image = Image.open(data / f"img-{index}.png").convert("RGB")
            array = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(resolution, resolution, 3)
            pixels.append(array.permute(2, 0, 1).float() / 127.5 - 1.0)
            caption = (data / f"img-{index}.txt").read_text()
            ids.append(tokenizer(caption, max_length=77, padding="max_length", truncation=True, return_tensors="pt")[
                "input_ids"][0])  # fmt: skip
        self.batches = [
            (_pinned(torch.stack(pixels[i : i + BATCH])), _pinned(torch.stack(ids[i : i + BATCH])))
            for i in range(0, IMAGES, BATCH)
        ]
        self.weight_dtype, self.device, self.step_index = weight_dtype, torch.device(device), 0

    def step(self) -> float:
        torch, F = self.torch, self.torch.nn.functional
        pixel_values, input_ids = self.batches[self.step_index % len(self.batches)]
        self.step_index += 1
        pixel_values = pixel_values.to(self.device, non_blocking=True)
        input_ids = input_ids.to(self.device, non_blocking=True)
        latents = self.vae.encode(pixel_values.to(dtype=self.weight_dtype)).latent_dist.sample()
        latents = latents * self.vae.config.scaling_factor
        noise = torch.randn_like(latents)
        bsz = latents.shape[0]
        timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (bsz,), device=latents.device)
        noisy_latents = self.noise_scheduler.add_noise(latents, noise, timesteps.long())
        encoder_hidden_states = self.text_encoder(input_ids, return_dict=False)[0]
        target = noise
        # accelerate.prepare(unet) under mixed_precision="bf16": the UNet's forward runs in autocast, outputs in fp32
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            model_pred = self.unet(noisy_latents, timesteps, encoder_hidden_states, return_dict=False)[0]
        loss = F.mse_loss(model_pred.float(), target.float(), reduction="mean")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad()
        return float(loss.detach())


def _pinned(tensor: Any) -> Any:
    return tensor.pin_memory() if tensor.device.type == "cpu" and _cuda() else tensor


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


class LorahubLoop:
    def __init__(
        self, base: Path, data: Path, *, cache_latents: bool, total_steps: int, device: str, resolution: int
    ) -> None:
        from lorahub.training.base import describe_base
        from lorahub.training.config import TrainConfig
        from lorahub.training.data import read_dataset
        from lorahub.training.loop import Trainer

        config = TrainConfig(
            rank=RANK, steps=total_steps, lr=LR, batch=BATCH, resolution=resolution, mixed_precision="bf16",
            cache_latents=cache_latents, targets=tuple(TARGETS),
        )  # fmt: skip
        self.trainer = Trainer(describe_base(base), config, read_dataset(data).examples, device=device)

    def step(self) -> float:
        self.trainer.train(self.trainer.run.step + 1)
        return self.trainer.run.losses[-1]


def measure(make: Callable[[], Any], steps: int, warmup: int) -> dict[str, float]:
    import torch

    gc.collect()
    cuda = _cuda()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    loop = make()
    for _ in range(warmup):
        loop.step()
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        loop.step()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    del loop
    return {"it_s": steps / seconds, "peak_gib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="Tiny pipeline on CPU, 2 steps: does the script run?")
    args = parser.parse_args()
    import torch

    if args.smoke:
        args.steps, args.warmup, args.rounds = 2, 1, 1
    elif not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU (--smoke runs a tiny pipeline on CPU)")
    device, resolution = ("cpu", 64) if args.smoke else ("cuda", RESOLUTION)
    total = args.steps + args.warmup + 1
    with tempfile.TemporaryDirectory() as tmp:
        if args.smoke:
            from lorahub.dev.tiny_pipeline import write_tiny_pipeline

            base = write_tiny_pipeline(Path(tmp) / "tiny", "sd1")
        else:
            base = write_base(Path(tmp) / "sd15")
        data = write_images(Path(tmp) / "data", resolution)
        common = {"total_steps": total, "device": device, "resolution": resolution}
        loops: dict[str, Callable[[], Any]] = {
            "diffusers": lambda: DiffusersLoop(base, data, device, resolution),
            "lorahub": lambda: LorahubLoop(base, data, cache_latents=False, **common),
            "lorahub --cache-latents": lambda: LorahubLoop(base, data, cache_latents=True, **common),
        }
        results: dict[str, list[dict[str, float]]] = {name: [] for name in loops}
        for _ in range(args.rounds):
            for name, make in loops.items():
                results[name].append(measure(make, args.steps, args.warmup))
    summary = {
        name: {
            "it_s": statistics.median(r["it_s"] for r in runs),
            "peak_gib": max(r["peak_gib"] for r in runs),
            "rounds": [round(r["it_s"], 3) for r in runs],
        }
        for name, runs in results.items()
    }
    ratios = {
        name: statistics.median(r["it_s"] / d["it_s"] for r, d in zip(results[name], results["diffusers"], strict=True))
        for name in loops
        if name != "diffusers"
    }
    gpu = torch.cuda.get_device_name(0) if _cuda() else "no GPU (smoke run)"
    machine = {"gpu": gpu, "torch": torch.__version__, "python": platform.python_version()}
    if args.json:
        print(json.dumps({"machine": machine, "results": summary, "ratio_vs_diffusers": ratios}, indent=2))
        return
    print(f"machine: {machine['gpu']}, torch {machine['torch']}; SD1.5 UNet, {resolution}px, batch {BATCH}, bf16, "
          f"rank {RANK}; {args.steps} timed steps after {args.warmup}, {args.rounds} rounds")  # fmt: skip
    for name, row in summary.items():
        ratio = f"  ×{ratios[name]:.2f} vs diffusers" if name in ratios else ""
        print(f"{name:>24}: {row['it_s']:.2f} it/s, peak {row['peak_gib']:.1f} GiB{ratio}")


if __name__ == "__main__":
    main()
