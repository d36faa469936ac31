"""`bake` of a rank-16 SDXL adapter into a ~5 GB fp16 SDXL UNet file, against load-everything/merge/save.

The base is written once, streaming, with the real SDXL UNet tensor names and shapes (the diffusers model built on
torch's ``meta`` device from the real config lists them; the data is a repeated random fp16 block). The adapter is
a kohya LoRA/LoCon of rank 16 on every Linear and Conv2d module of the UNet (SGM names, as sd-scripts writes them).

Each contender runs in its own subprocess, so its peak RSS (``ru_maxrss``) is its own:

* ``bake``: ``lorahub.merge.bake`` (memory-mapped base, one tensor at a time, fp32 accumulation);
* ``naive``: ``safetensors.torch.load_file`` the base and the adapter, ``W ← W + scale·up@down`` in fp32 with torch
  (sd-scripts' formulas), ``save_file``.

The base's page cache is warmed first; rounds alternate the two. The targets (issue 6): bake's peak RSS ≤ 1.5 GB
and its time ≤ the naive baseline's in the same run. Needs ~16 GB free in the temp folder (base + two outputs).

    python benchmarks/bake_sdxl.py [--rounds 1] [--tmp DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

RANK = 16
ALPHA = 8.0
WEIGHT = 0.8
BLOCK_BYTES = 16 * 2**20

CHILD_BAKE = """
import json, resource, sys, time
start = time.perf_counter()
from lorahub.adapters.model import read_adapter
from lorahub.merge import bake
base, adapter, out, weight = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
report = bake(base, [(read_adapter(adapter), weight)], out)
seconds = time.perf_counter() - start
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": seconds, "peak_rss": rss, "changed": report.changed_tensors}))
"""

CHILD_NAIVE = """
import json, resource, sys, time
start = time.perf_counter()
import torch
from safetensors.torch import load_file, save_file
base, adapter, out, weight = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
names = json.loads(open(sys.argv[5]).read())
sd = load_file(base)
lora = load_file(adapter)
for key, target in names.items():
    down = lora[f"{key}.lora_down.weight"].float()
    up = lora[f"{key}.lora_up.weight"].float()
    scale = lora[f"{key}.alpha"].item() / down.shape[0]
    w = sd[target]
    if down.dim() == 4 and down.shape[2:] != (1, 1):
        delta = torch.nn.functional.conv2d(down.permute(1, 0, 2, 3), up).permute(1, 0, 2, 3)
    else:
        delta = (up.flatten(1) @ down.flatten(1)).reshape(w.shape)
    sd[target] = (w.float() + weight * scale * delta).to(w.dtype)
save_file(sd, out)
seconds = time.perf_counter() - start
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": seconds, "peak_rss": rss, "changed": len(names)}))
"""


def unet_shapes() -> dict[str, tuple[int, ...]]:
    """Every tensor of the SDXL UNet with its shape, without allocating it."""
    import torch
    from diffusers import UNet2DConditionModel

    from lorahub.dev.model_configs import SDXL_UNET

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SDXL_UNET)
    return {name: tuple(tensor.shape) for name, tensor in unet.state_dict().items()}


def write_base(path: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    """An fp16 safetensors file, header first, then data streamed from one repeated random block."""
    entries: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name in sorted(shapes):
        nbytes = math.prod(shapes[name]) * 2
        entries[name] = {"dtype": "F16", "shape": list(shapes[name]), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header = json.dumps(entries, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    block = (np.random.default_rng(0).standard_normal(BLOCK_BYTES // 2, dtype=np.float32) * 0.05).astype("<f2")
    data = block.tobytes()
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(header)) + header)
        left = offset
        while left:
            piece = data[: min(left, len(data))]
            out.write(piece)
            left -= len(piece)


def write_adapter(path: Path, shapes: dict[str, tuple[int, ...]]) -> dict[str, str]:
    """A kohya rank-16 LoRA/LoCon (fp16) on every UNet Linear/Conv2d; returns kohya key → base tensor name."""
    from lorahub.adapters.names import from_canonical, inventory
    from lorahub.files.safetensors import write

    rng = np.random.default_rng(1)
    tensors: dict[str, tuple[str, tuple[int, ...], bytes]] = {}
    names: dict[str, str] = {}
    for canonical in inventory("sdxl", "unet"):
        key = from_canonical("sdxl", "kohya", canonical)
        assert key is not None
        target = f"{canonical.removeprefix('unet.')}.weight"
        shape = shapes[target]
        down_shape = (RANK, shape[1], *shape[2:])
        up_shape = (shape[0], RANK, *([1, 1] if len(shape) == 4 else []))
        for role, part in (("lora_down", down_shape), ("lora_up", up_shape)):
            array = (rng.standard_normal(math.prod(part), dtype=np.float32) * 0.02).astype("<f2")
            tensors[f"{key}.{role}.weight"] = ("F16", part, array.tobytes())
        tensors[f"{key}.alpha"] = ("F16", (), np.float16(ALPHA).tobytes())
        names[key] = target
    write(path, tensors, {"ss_network_module": "networks.lora", "ss_network_dim": str(RANK)})
    return names


def run_child(code: str, *args: str) -> dict[str, Any]:
    result = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True, text=True)
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def warm(path: Path) -> None:
    with open(path, "rb") as handle:
        while handle.read(64 * 2**20):
            pass


def compare(a: Path, b: Path, names: list[str]) -> tuple[float, int]:
    """Largest relative difference (to the tensor's largest value) and largest distance in fp16 units in the last
    place between the two outputs, over a sample of changed tensors: both round fp32 sums to fp16, and products
    taken in a different order may round to neighbouring fp16 values."""
    from lorahub.files.numeric import as_numpy, to_float32
    from lorahub.files.safetensors import SafetensorsFile

    worst, ulps = 0.0, 0
    with SafetensorsFile(a) as fa, SafetensorsFile(b) as fb:
        for name in names:
            ia, ib = fa.header.tensors[name], fb.header.tensors[name]
            x, y = to_float32(fa.raw(name), ia), to_float32(fb.raw(name), ib)
            worst = max(worst, float(np.abs(x - y).max() / max(np.abs(y).max(), 1e-12)))
            bits = [as_numpy(f.raw(name), i).view(np.int16).astype(np.int32) for f, i in ((fa, ia), (fb, ib))]
            ordered = [np.where(v < 0, -(v & 0x7FFF), v) for v in bits]  # sign-magnitude → ordered integers
            ulps = max(ulps, int(np.abs(ordered[0] - ordered[1]).max()))
    return worst, ulps


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown cpu"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--tmp", type=Path, default=None, help="where to put the ~15 GB of files")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bake-sdxl-", dir=args.tmp))
    try:
        free = shutil.disk_usage(tmp).free
        if free < 16 * 2**30:
            raise SystemExit(f"{tmp}: {free / 2**30:.1f} GiB free, need 16")
        shapes = unet_shapes()
        base, adapter = tmp / "unet.safetensors", tmp / "lora.safetensors"
        write_base(base, shapes)
        names = write_adapter(adapter, shapes)
        names_file = tmp / "names.json"
        names_file.write_text(json.dumps(names))
        outputs = {"bake": tmp / "baked.safetensors", "naive": tmp / "naive.safetensors"}
        runs: dict[str, list[dict[str, Any]]] = {"bake": [], "naive": []}
        warm(base)
        for _ in range(args.rounds):
            for name, code in (("bake", CHILD_BAKE), ("naive", CHILD_NAIVE)):
                outputs[name].unlink(missing_ok=True)
                extra = [str(names_file)] if name == "naive" else []
                runs[name].append(run_child(code, str(base), str(adapter), str(outputs[name]), str(WEIGHT), *extra))
        sample = list(names.values())[:: max(1, len(names) // 40)]
        error, ulps = compare(outputs["bake"], outputs["naive"], sample)
        print(
            f"machine: {platform.machine()}, {cpu_model()}, {os.cpu_count()} cores, python {platform.python_version()}"
        )
        print(
            f"base: {base.stat().st_size / 1e9:.2f} GB fp16, {len(shapes)} tensors; adapter: rank {RANK}, "
            f"{len(names)} modules, {adapter.stat().st_size / 1e6:.0f} MB; rounds: {args.rounds}"
        )
        for name, results in runs.items():
            seconds = [r["seconds"] for r in results]
            rss = max(r["peak_rss"] for r in results)
            print(
                f"{name:>6}: median {statistics.median(seconds):.1f} s ({', '.join(f'{s:.1f}' for s in seconds)}), "
                f"peak RSS {rss / 2**30:.2f} GiB"
            )
        ratio = statistics.median(r["seconds"] for r in runs["bake"]) / statistics.median(
            r["seconds"] for r in runs["naive"]
        )
        print(f"time bake/naive: {ratio:.2f}")
        print(f"outputs (sampled changed tensors): max relative difference {error:.2e}, at most {ulps} fp16 ulp apart")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
