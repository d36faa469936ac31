"""LoKr and LoHa in a full-size SD1.5 UNet: `lorahub.load` against lorahub's load of a LoRA with the same number of
parameters (same run), and the inference cost of the unfused ΔW patch against the same UNet with ΔW fused.

The UNet is built from the real SD1.5 config with random weights (no download); the adapters are LyCORIS files on
the 192 Linear layers kohya's default LoRA targets in the UNet (attention, feed-forward, projections): a LoRA of rank
8, a LoHa of rank 4 (the same parameter count, exactly) and a LoKr (factor 8, the larger half of rank chosen so its
parameter count is closest to the LoRA's), each catalogued and signed in a fresh home.

Load (fp16 UNet, as `load_sd15.py`): every load is cold (the tensors lorahub keeps per pipeline are dropped first:
read, verify trust and policy, convert, inject or patch), then unloaded; alternating rounds, median of per-round
ratios. ΔW of a LoKr/LoHa is computed on first use, so the first forward after a load pays for it: that is reported
too ("ΔW build on first use", every patched layer's ΔW computed as that forward would).

Inference (fp32 UNet, 64×64 latent = 512 px, batch 1, CPU): one UNet forward with the LoKr (then the LoHa) applied
unfused at weight 1 (ΔW already built: the steady state of a generation), against the same UNet whose weights had
ΔW added, alternating; median of per-round ratios. The unfused forward is the fused one plus the adds that form
``W + ΔW`` in each patched layer, so that work is also timed alone (every patched layer's ``effective()``), which a
noisy machine measures far more steadily than the difference of two forwards.

    python benchmarks/lycoris_sd15.py [--rounds 5] [--forward-rounds 3] [--skip-forward]
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

LORA_RANK = 8


def timed(action: Callable[[], Any]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def layers() -> dict[str, tuple[int, int]]:
    from lorahub.dev.example_lora import sd15_unet_linears

    return {f"lora_unet_{path.replace('.', '_')}": (out, fan_in) for path, fan_in, out in sd15_unet_linears()}


def lokr_rank(shapes: dict[str, tuple[int, int]]) -> int:
    """The rank of LoKr's factorised half (factor 8) whose parameter count is closest to the rank-8 LoRA's."""
    from lorahub.dev.example_lycoris import factor_pair

    target = sum(LORA_RANK * (out + fan_in) for out, fan_in in shapes.values())
    whole = sum(factor_pair(out, 8)[0] * factor_pair(fan_in, 8)[0] for out, fan_in in shapes.values())
    per_rank = sum(factor_pair(out, 8)[1] + factor_pair(fan_in, 8)[1] for out, fan_in in shapes.values())
    return max(1, round((target - whole) / per_rank))


def setup(root: Path) -> tuple[Any, dict[str, int]]:
    """A home with the three adapters catalogued and signed; their parameter counts."""
    import lorahub
    from lorahub.dev.example_lycoris import write_example_lycoris
    from lorahub.sdk.adding import AddOptions

    hub = lorahub.Hub.open(root / "home")
    hub.create_identity("Bench <bench@lorahub.example>")
    shapes = layers()
    ranks = {"lora": LORA_RANK, "loha": LORA_RANK // 2, "lokr": lokr_rank(shapes)}
    counts = {}
    for kind, rank in ranks.items():
        path = root / f"{kind}.safetensors"
        tensors = write_example_lycoris(path, shapes, kind=kind, rank=rank, seed=len(counts))
        counts[kind] = sum(array.size for module in tensors.values() for array in module.values())
        hub.add(path, AddOptions(name=kind, license="MIT"))
    return hub, counts


def cold(pipe: Any) -> None:
    from lorahub.sdk.pipelines import prepared_states

    prepared_states(pipe).__init__()  # type: ignore[misc]


def build_on_first_use(pipe: Any) -> None:
    from lorahub.sdk.patching import patched

    for components in patched(pipe).values():
        for patches in components.values():
            for patch in patches:
                patch.prepare()


def load_rounds(hub: Any, pipe: Any, rounds: int) -> dict[str, list[float]]:
    import lorahub

    def load(name: str) -> Callable[[], None]:
        def run() -> None:
            cold(pipe)
            lorahub.load(name, pipe, hub=hub).unload()

        return run

    def first_use(name: str) -> float:
        cold(pipe)
        handle = lorahub.load(name, pipe, hub=hub)
        seconds = timed(lambda: build_on_first_use(pipe))
        handle.unload()
        return seconds

    for name in ("lora", "lokr", "loha"):
        load(name)()  # warm: imports, first verification (recorded for the cache), allocator
    times: dict[str, list[float]] = {"lora": [], "lokr": [], "loha": [], "lokr-build": [], "loha-build": []}
    for _ in range(rounds):
        for name in ("lora", "lokr", "loha"):
            times[name].append(timed(load(name)))
    for _ in range(max(1, rounds // 2)):
        for name in ("lokr", "loha"):
            times[f"{name}-build"].append(first_use(name))
    return times


def forward_rounds(hub: Any, rounds: int) -> dict[str, list[float]]:
    """Unfused (patched, ΔW built) against fused (weights + ΔW, no patch), alternating, for the LoKr and the LoHa."""
    import torch
    from load_sd15 import sd15_pipeline  # type: ignore[import-not-found]

    import lorahub
    from lorahub.sdk.patching import patched

    pipe = sd15_pipeline()
    pipe.unet.to(torch.float32)
    sample = torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(0))
    context = torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(1))

    def forward() -> None:
        with torch.no_grad():
            pipe.unet(sample, 500, encoder_hidden_states=context)

    times: dict[str, list[float]] = {}
    for name in ("lokr", "loha"):
        handle = lorahub.load(name, pipe, hub=hub)
        build_on_first_use(pipe)
        patches = [p for components in patched(pipe).values() for ps in components.values() for p in ps]
        original = [p.module.weight.data for p in patches]
        fused = [p.effective()[0].detach() for p in patches]

        def mode(fuse: bool, patches: list[Any] = patches, original: list[Any] = original, fused: list[Any] = fused
                 ) -> None:  # fmt: skip
            for patch, plain, summed in zip(patches, original, fused, strict=True):
                patch.module.weight.data = summed if fuse else plain
                if fuse:
                    patch.module.__dict__.pop("forward", None)
                else:
                    patch.module.forward = patch.forward

        def added_work(patches: list[Any] = patches) -> None:
            with torch.no_grad():
                for patch in patches:
                    patch.effective()

        forward()  # warm
        times[name], times[f"{name}-fused"], times[f"{name}-added"] = [], [], []
        for _ in range(rounds):
            mode(False)
            times[name].append(timed(forward))
            mode(True)
            times[f"{name}-fused"].append(timed(forward))
            mode(False)
            times[f"{name}-added"].append(timed(added_work))
        mode(False)
        handle.unload()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--forward-rounds", type=int, default=3)
    parser.add_argument("--skip-forward", action="store_true", help="only the load figures")
    args = parser.parse_args()
    import torch
    from load_sd15 import sd15_pipeline

    torch.set_num_threads(os.cpu_count() or 1)

    def show(values: list[float]) -> str:
        return f"median {statistics.median(values) * 1000:.0f} ms ({', '.join(f'{v * 1000:.0f}' for v in values)})"

    def ratio(a: list[float], b: list[float]) -> float:
        return statistics.median(x / y for x, y in zip(a, b, strict=True))

    with tempfile.TemporaryDirectory() as tmp:
        hub, counts = setup(Path(tmp))
        pipe = sd15_pipeline()
        loads = load_rounds(hub, pipe, args.rounds)
        del pipe
        print(f"SD1.5 UNet (fp16, random), 192 Linear layers; parameters: {counts}; {args.rounds} rounds")
        for name in ("lora", "lokr", "loha"):
            print(f"load + unload (cold) {name}: {show(loads[name])}")
        for name in ("lokr", "loha"):
            print(f"median ratio {name}/lora: {ratio(loads[name], loads['lora']):.2f}")
            print(f"ΔW build on first use {name}: {show(loads[f'{name}-build'])}")
        if not args.skip_forward:
            forwards = forward_rounds(hub, args.forward_rounds)
            print(f"UNet forward, fp32, 64x64 latent, CPU, {torch.get_num_threads()} threads")
            for name in ("lokr", "loha"):
                fused, added = forwards[name + "-fused"], forwards[name + "-added"]
                print(f"{name} unfused: {show(forwards[name])}; fused: {show(fused)}")
                print(f"median ratio unfused/fused {name}: {ratio(forwards[name], fused):.3f}")
                share = statistics.median(added) / statistics.median(fused)
                print(f"{name}: the work the patch adds to a forward (W + ΔW of every layer), alone: {show(added)}; "
                      f"(fused + added) / fused: {1 + share:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
