"""`lorahub convert --to diffusers` of a full-geometry SDXL kohya LoRA against a plain safetensors load-and-save.

The adapter has every module kohya's default SDXL LoRA trains (the 722 UNet transformer Linears, CLIP-L's 72 and
OpenCLIP-G's 192 attention/MLP Linears; names from ``lorahub.adapters.name_tables``' inventories, shapes from the
SDXL widths), rank 32, bf16: about 220 MB. Both sides run as child processes on the same warm file, alternating, for
several rounds; time is what each child spends after its imports (load/convert and save), the figure the median of
per-round ratios, and peak RSS is each child's ``ru_maxrss``
(``resource.getrusage(RUSAGE_CHILDREN)`` after it exits, one fresh child per measurement). Targets (issue 4): time
≤ 1.5× the baseline, peak RSS ≤ 2× the file size. The converter's ΔW check is on, as by default.

    python benchmarks/convert_sdxl.py [--rounds 5] [--rank 32]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from lorahub.adapters.name_tables import TEXT_ENCODERS
from lorahub.adapters.names import from_canonical, inventory
from lorahub.files.safetensors import write

SDXL_CHANNELS = {"down_blocks.1": 640, "down_blocks.2": 1280, "mid_block": 1280, "up_blocks.0": 1280}
SDXL_CHANNELS["up_blocks.1"] = 640
SDXL_CONTEXT = 2048

# Each child times its own work after its imports (torch's import alone takes longer than the work) and prints it:
# wall seconds, then the CPU seconds of all its threads (on a shared machine the steadier of the two).
BASELINE = """
import sys, time
from safetensors import safe_open
from safetensors.torch import load_file, save_file
start, cpu = time.perf_counter(), time.process_time()
with safe_open(sys.argv[1], "pt") as f:
    metadata = f.metadata()
save_file(load_file(sys.argv[1]), sys.argv[2], metadata)
print(time.perf_counter() - start, time.process_time() - cpu)
"""
CONVERT = """
import sys, time
from lorahub.adapters.convert import convert
start, cpu = time.perf_counter(), time.process_time()
convert(sys.argv[1], sys.argv[2], to="diffusers")
print(time.perf_counter() - start, time.process_time() - cpu)
"""


def unet_shape(path: str) -> tuple[int, int]:
    """(in, out) of a UNet transformer Linear from its block's width (SDXL: attn2 k/v read the 2048-wide context)."""
    block = re.match(r"unet\.((?:down|up)_blocks\.\d|mid_block)", path)
    assert block is not None, path
    width = SDXL_CHANNELS[block[1]]
    if re.search(r"attn2\.to_[kv]$", path):
        return SDXL_CONTEXT, width
    if path.endswith("ff.net.0.proj"):
        return width, 8 * width
    if path.endswith("ff.net.2"):
        return 4 * width, width
    return width, width


def te_shape(component: str, path: str) -> tuple[int, int]:
    width = {"text_encoder": 768, "text_encoder_2": 1280}[component]
    if path.endswith("mlp.fc1"):
        return width, 4 * width
    if path.endswith("mlp.fc2"):
        return 4 * width, width
    return width, width


def kohya_modules() -> list[tuple[str, int, int]]:
    """(kohya name, in, out) of kohya's default SDXL targets: Transformer2DModel Linears, CLIP attention and MLP."""
    modules = []
    for canonical in inventory("sdxl"):
        component = canonical.partition(".")[0]
        if component == "unet":
            if ".attentions." not in canonical:
                continue
            fan_in, fan_out = unet_shape(canonical)
        else:
            if not re.search(r"\.(self_attn|mlp)\.", canonical):
                continue
            fan_in, fan_out = te_shape(component, canonical)
        name = from_canonical("sdxl", "kohya", canonical)
        assert name is not None
        modules.append((name, fan_in, fan_out))
    assert len(TEXT_ENCODERS["sdxl"]) == 2
    return modules


def make_file(path: Path, rank: int) -> int:
    rng = np.random.default_rng(0)
    tensors: dict[str, tuple[str, tuple[int, ...], bytes]] = {}
    modules = kohya_modules()
    for name, fan_in, fan_out in modules:
        for suffix, shape in (("lora_down.weight", (rank, fan_in)), ("lora_up.weight", (fan_out, rank))):
            values = rng.standard_normal(shape, dtype=np.float32) * 0.02
            bf16 = (values.view(np.uint32) >> 16).astype("<u2")
            tensors[f"{name}.{suffix}"] = ("BF16", shape, bf16.tobytes())
        tensors[f"{name}.alpha"] = ("BF16", (), (np.float32(rank / 2).view(np.uint32) >> 16).astype("<u2").tobytes())
    metadata = {"ss_network_module": "networks.lora", "ss_base_model_version": "sdxl_base_v1-0"}
    metadata |= {"ss_network_dim": str(rank), "ss_network_alpha": str(rank / 2)}
    write(path, tensors, metadata)
    return len(modules)


def run_child(code: str, *args: str) -> tuple[float, float]:
    """(wall, CPU) seconds one fresh child process spent on its work (it prints them)."""
    out = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True, text=True)
    wall, cpu = out.stdout.strip().splitlines()[-1].split()
    return float(wall), float(cpu)


def measure_rss(code: str, *args: str) -> int:
    """Peak RSS (bytes) of one child, read by a fresh wrapper process: ``RUSAGE_CHILDREN`` is a maximum over all
    children so far, so each measurement gets its own parent."""
    wrapper = (
        "import resource, subprocess, sys\n"
        "subprocess.run([sys.executable, '-c', sys.argv[1], *sys.argv[2:]], check=True)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", wrapper, code, *args], check=True, capture_output=True, text=True)
    return int(out.stdout.strip().splitlines()[-1])


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown cpu"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rank", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "sdxl_kohya.safetensors"
        modules = make_file(src, args.rank)
        size = src.stat().st_size
        jobs = {
            "load-and-save": (BASELINE, str(src), str(Path(tmp) / "copy.safetensors")),
            "convert": (CONVERT, str(src), str(Path(tmp) / "diffusers.safetensors")),
        }
        for code, *paths in jobs.values():  # warm the page cache and the interpreter
            run_child(code, *paths)
        seconds: dict[str, list[float]] = {name: [] for name in jobs}
        cpu: dict[str, list[float]] = {name: [] for name in jobs}
        ratios, cpu_ratios = [], []
        for _ in range(args.rounds):
            times = {name: run_child(code, *paths) for name, (code, *paths) in jobs.items()}
            for name, (wall, used) in times.items():
                seconds[name].append(wall)
                cpu[name].append(used)
            ratios.append(times["convert"][0] / times["load-and-save"][0])
            cpu_ratios.append(times["convert"][1] / times["load-and-save"][1])
        rss = {name: measure_rss(code, *paths) for name, (code, *paths) in jobs.items()}
    print(f"machine: {platform.machine()}, {cpu_model()}, {os.cpu_count()} cores, python {platform.python_version()}")
    print(f"file: {size / 1e6:,.1f} MB, {modules} modules, rank {args.rank}, bf16; rounds: {args.rounds}")
    for name, values in seconds.items():
        shown = ", ".join(f"{v:.2f}" for v in values)
        print(f"{name:>14}: median {statistics.median(values):.2f} s ({shown}); peak RSS {rss[name] / 1e6:,.0f} MB")
        print(f"{'':>14}  CPU median {statistics.median(cpu[name]):.2f} s")
    ratio = statistics.median(ratios)
    print(
        f"median time ratio convert/load-and-save: {ratio:.2f} (target ≤ 1.5); CPU {statistics.median(cpu_ratios):.2f}"
    )
    print(f"convert peak RSS / file size: {rss['convert'] / size:.2f} (target ≤ 2.0)")


if __name__ == "__main__":
    main()
