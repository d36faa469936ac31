"""Bulk `lorahub add DIR` of 2,000 small LoRA files, then the same command again with nothing changed.

The second run must take at most 10% of the first: unchanged files (same path, size, mtime and inode as recorded)
are not read at all. Both are whole commands, interpreter start-up included.

    python benchmarks/bulk_add.py [--files 2000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lorahub.files.safetensors import write

MODULES = 8  # small, real-shaped kohya SD 1.5 attention LoRAs (~40 KB each)


def make_library(root: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):
        tensors: dict[str, tuple[str, tuple[int, ...], bytes]] = {}
        for m in range(MODULES):
            key = f"lora_unet_down_blocks_0_attentions_{m % 2}_transformer_blocks_0_attn{1 + m // 4}_to_{'qkvo'[m % 4]}"
            down = rng.standard_normal((4, 320)).astype(np.float16)
            up = rng.standard_normal((320, 4)).astype(np.float16)
            tensors[f"{key}.lora_down.weight"] = ("F16", down.shape, down.tobytes())
            tensors[f"{key}.lora_up.weight"] = ("F16", up.shape, up.tobytes())
            tensors[f"{key}.alpha"] = ("F16", (), np.float16(4).tobytes())
        folder = root / f"set-{i // 100:02d}"
        folder.mkdir(exist_ok=True)
        write(folder / f"lora-{i:05d}.safetensors", tensors, {"ss_output_name": f"lora-{i:05d}"})


def run(home: Path, *args: str) -> float:
    start = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k != "LORAHUB_DATABASE_URL"}
    subprocess.run(
        [sys.executable, "-m", "lorahub", "--home", str(home), *args], check=True, env=env, stdout=subprocess.DEVNULL
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        library, home = Path(tmp) / "library", Path(tmp) / "home"
        library.mkdir()
        make_library(library, args.files)
        run(home, "keys", "create", "Bench <bench@lorahub.example>")
        first = run(home, "add", str(library))
        second = run(home, "add", str(library))
    print(f"{args.files} files: first run {first:.1f} s ({args.files / first:.0f} files/s)")
    print(f"second run, nothing changed: {second:.2f} s = {second / first:.1%} of the first")


if __name__ == "__main__":
    main()
