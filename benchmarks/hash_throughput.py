"""`lorahub inspect` against `sha256sum` on a 1 GiB safetensors file.

inspect computes SHA-256, AutoV1/V2/V3, BLAKE3, CRC32, the content digest and NaN/Inf/zero checks; sha256sum
computes one SHA-256. Both run as whole commands on the same warm file, alternating, several rounds; the figure
is the median of the per-round ratios (inspect / sha256sum), which machine noise affects far less than seconds.

    python benchmarks/hash_throughput.py [--size-mib 1024] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lorahub.files.safetensors import write

TENSOR_MIB = 8


def make_file(path: Path, size_mib: int) -> None:
    """Realistic content: fp16 LoRA-shaped tensors plus fp32 alphas, random values."""
    rng = np.random.default_rng(0)
    tensors: dict[str, tuple[str, tuple[int, ...], bytes]] = {}
    for i in range(size_mib // TENSOR_MIB):
        up = rng.standard_normal(TENSOR_MIB * 1024 * 1024 // 2, dtype=np.float32).astype(np.float16)
        key = f"lora_unet_block_{i:04d}"
        tensors[f"{key}.lora_up.weight"] = ("F16", (up.size // 64, 64), up.tobytes())
        tensors[f"{key}.alpha"] = ("F32", (), np.float32(32).tobytes())
    write(path, tensors, {"ss_network_dim": "64"})


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown cpu"


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    lorahub = shutil.which("lorahub") or str(Path(sys.executable).with_name("lorahub"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.safetensors"
        make_file(path, args.size_mib)
        commands = {"inspect": [lorahub, "inspect", "--json", str(path)], "sha256sum": ["sha256sum", str(path)]}
        for command in commands.values():  # warm the page cache and the interpreter
            timed(command)
        ratios, seconds = [], {name: [] for name in commands}  # type: ignore[var-annotated]
        for _ in range(args.rounds):
            round_times = {name: timed(command) for name, command in commands.items()}
            for name, value in round_times.items():
                seconds[name].append(value)
            ratios.append(round_times["inspect"] / round_times["sha256sum"])
        size = path.stat().st_size
    print(f"machine: {platform.machine()}, {cpu_model()}, {os.cpu_count()} cores, python {platform.python_version()}")
    print(f"file: {size / 2**20:,.0f} MiB safetensors, rounds: {args.rounds}")
    for name, values in seconds.items():
        print(f"{name:>10}: median {statistics.median(values):.2f} s  ({', '.join(f'{v:.2f}' for v in values)})")
    print(f"median ratio inspect/sha256sum: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
