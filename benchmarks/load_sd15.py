"""`lorahub.load` of a signed, catalogued rank-16 adapter into a full-size SD1.5 UNet, against diffusers'
`load_lora_weights` of the same file; and switching adapters on a warm pipeline against a fresh load.

The UNet is built from the real SD1.5 config with random fp16 weights (no download); the text encoder is the real
CLIP-L geometry; the VAE is tiny (loading adapters never touches it). The adapters are fp16 kohya files (UNet
attention, feed-forward and projections, and the text encoder: what kohya's trainer writes; and the same UNet
modules alone, which isolates the UNet: diffusers' text-encoder path goes through transformers' PEFT integration,
lorahub's through PEFT itself), catalogued and signed in a fresh home, then loaded `--rounds` times each way,
alternating; the figure is the median of the per-round ratios, of wall time and of the process's CPU time (on a
machine shared with other work the CPU time is the steadier of the two). Switching
loads adapter A, then B into A's place (`replace=`: hotswap), against a fresh load of B. Every timed load starts
cold (the converted tensors lorahub keeps per pipeline are dropped first) except the "prepared" switch row, which
shows switching back and forth between two adapters the pipeline has held before.

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


def sd15_pipeline() -> Any:
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from lorahub.dev.model_configs import CLIP_L, SD15_UNET
    from lorahub.dev.tiny_pipeline import build_tiny_pipeline

    tiny = build_tiny_pipeline("sd1")
    unet = UNet2DConditionModel(**SD15_UNET).to(torch.float16)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=tiny.tokenizer.vocab_size, max_position_embeddings=77, **CLIP_L)).to(
        torch.float16
    )
    vae: AutoencoderKL = tiny.vae
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text, tokenizer=tiny.tokenizer, unet=unet, scheduler=DDIMScheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip


def timed(action: Callable[[], Any]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def timed_both(action: Callable[[], Any]) -> tuple[float, float]:
    """(wall, CPU) seconds of ``action``; the CPU time is the whole process's, every thread."""
    wall, cpu = time.perf_counter(), time.process_time()
    action()
    return time.perf_counter() - wall, time.process_time() - cpu


def setup(root: Path) -> tuple[Any, Any, dict[str, Path]]:
    """A home with two signed rank-16 kohya adapters and a UNet-only one, and the SD1.5-size pipeline."""
    import lorahub
    from lorahub.dev.example_lora import write_example_lora
    from lorahub.sdk.adding import AddOptions

    hub = lorahub.Hub.open(root / "home")
    hub.create_identity("Bench <bench@lorahub.example>")
    files = {}
    for name, seed in (("style-a", 1), ("style-b", 2), ("unet-only", 3)):
        files[name] = root / f"{name}.safetensors"
        write_example_lora(
            files[name], rank=16, alpha=8.0, seed=seed, name=name, text_encoder=name != "unet-only"
        )  # fmt: skip
        hub.add(files[name], AddOptions(name=name, license="MIT"))
    return hub, sd15_pipeline(), files


def cold(pipe: Any) -> None:
    """Forget the converted tensors lorahub keeps per pipeline: the next load reads and converts the file."""
    from lorahub.sdk.pipelines import prepared_states

    prepared_states(pipe).__init__()  # type: ignore[misc]


def load_rounds(hub: Any, pipe: Any, name: str, file: Path, rounds: int) -> dict[str, list[float]]:
    """Wall and CPU seconds of each side's loads (``ours``, ``theirs``, ``ours-cpu``, ``theirs-cpu``)."""
    import lorahub

    def ours() -> None:
        cold(pipe)
        lorahub.load(name, pipe, hub=hub).unload()

    def theirs() -> None:
        pipe.load_lora_weights(str(file), adapter_name="ref")
        pipe.delete_adapters(["ref"])

    ours(), theirs()  # warm: imports, first verification (recorded for the cache), allocator
    times: dict[str, list[float]] = {"ours": [], "theirs": [], "ours-cpu": [], "theirs-cpu": []}
    for _ in range(rounds):
        for side, action in (("ours", ours), ("theirs", theirs)):
            wall, cpu = timed_both(action)
            times[side].append(wall)
            times[f"{side}-cpu"].append(cpu)
    return times


def switch_rounds(hub: Any, pipe: Any, rounds: int) -> tuple[list[float], list[float], list[float]]:
    import lorahub

    handle = lorahub.load("style-a", pipe, hub=hub)
    switch_s: list[float] = []
    warm_s: list[float] = []
    fresh_s: list[float] = []
    names = ["style-b", "style-a"]
    for i in range(rounds):
        cold(pipe)
        switch_s.append(timed(lambda: lorahub.load(names[0], pipe, hub=hub, replace=handle)))
        warm_s.append(timed(lambda: lorahub.load(names[1], pipe, hub=hub, replace=handle)))
        assert handle.hotswapped, i
        cold(pipe)
        fresh_s.append(timed(lambda: lorahub.load(names[0], pipe, hub=hub).unload()))
    return switch_s, warm_s, fresh_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        hub, pipe, files = setup(Path(tmp))
        sizes = {name: path.stat().st_size / 2**20 for name, path in files.items()}
        loads = {name: load_rounds(hub, pipe, name, files[name], args.rounds) for name in ("style-a", "unet-only")}
        switch_s, warm_s, fresh_s = switch_rounds(hub, pipe, args.rounds)

    def show(values: list[float]) -> str:
        return f"median {statistics.median(values) * 1000:.0f} ms ({', '.join(f'{v * 1000:.0f}' for v in values)})"

    def ratio(a: list[float], b: list[float]) -> float:
        return statistics.median(x / y for x, y in zip(a, b, strict=True))

    print(f"SD1.5 UNet + CLIP-L (fp16, random), kohya rank-16 fp16 adapters, {args.rounds} rounds")
    for name, times in loads.items():
        what = "UNet + text encoder" if name == "style-a" else "UNet only"
        print(f"{what} ({sizes[name]:.1f} MiB)")
        print(f"  lorahub.load + unload (cold):      {show(times['ours'])}; CPU {show(times['ours-cpu'])}")
        print(f"  diffusers load_lora_weights + del: {show(times['theirs'])}; CPU {show(times['theirs-cpu'])}")
        print(f"  median ratio load/diffusers: wall {ratio(times['ours'], times['theirs']):.2f}, "
              f"CPU {ratio(times['ours-cpu'], times['theirs-cpu']):.2f}")  # fmt: skip
    print(f"switch (replace=, hotswap; cold):  {show(switch_s)}")
    print(f"switch back (both prepared):       {show(warm_s)}")
    print(f"fresh load + unload (cold):        {show(fresh_s)}")
    print(f"median ratio switch/fresh: {ratio(switch_s, fresh_s):.2f}")


if __name__ == "__main__":
    main()
