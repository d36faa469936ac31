"""In-place library scans (`lorahub scan`): files per second, re-scans, peak memory, large-file throughput.

1. Small files: libraries of 3,000 and 30,000 small kohya SD 1.5 LoRA files (about 40 KB each, 100 per folder),
   each scanned by a whole `lorahub scan` command into a fresh home: files per second and the command's peak RSS
   (memory must not grow with the number of files). Then, on the 30,000-file library: a re-scan with nothing
   changed, and one after touching 1% of the files (new mtimes, same bytes: each is read again), as fractions of
   the first scan's time.
2. Large files: an in-place scan of N large safetensors files, in process, against a single-stream
   `hashlib.sha256` over the same bytes, alternating rounds on warm files (the ratio is the figure; nothing is
   written, so the scan should run at the hashing's speed).

    python benchmarks/library_scan.py [--files 30000] [--large 4] [--large-mib 512] [--rounds 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bulk_add import make_library

from lorahub.files.safetensors import write

MIB = 1 << 20


def scan_command(home: Path, library: Path) -> tuple[float, int]:
    """Seconds and peak RSS (KiB) of one `lorahub scan` process."""
    return command(home, "scan", str(library))


def command(home: Path, *args: str) -> tuple[float, int]:
    """Seconds and peak RSS (KiB) of one `lorahub` process."""
    env = {k: v for k, v in os.environ.items() if k != "LORAHUB_DATABASE_URL"} | {"LORAHUB_HOME": str(home)}
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "lorahub", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"lorahub {' '.join(args)} failed")
    return elapsed, usage.ru_maxrss


def new_home(root: Path) -> Path:
    home = root / f"home-{time.monotonic_ns()}"
    env = {k: v for k, v in os.environ.items() if k != "LORAHUB_DATABASE_URL"} | {"LORAHUB_HOME": str(home)}
    subprocess.run(
        [sys.executable, "-m", "lorahub", "keys", "create", "Bench <bench@lorahub.example>"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return home


def small_files(tmp: Path, count: int, *, verify: bool) -> None:
    for files in sorted({max(1, count // 10), count}):
        library = tmp / f"library-{files}"
        library.mkdir()
        make_library(library, files)
        home = new_home(tmp)
        first, rss = scan_command(home, library)
        print(f"{files} files: first scan {first:.1f} s, {files / first:.0f} files/s, peak RSS {rss / 1024:.0f} MiB")
        if files != count:
            continue
        again, _ = scan_command(home, library)
        print(f"  re-scan, nothing changed: {again:.2f} s = {again / first:.1%} of the first")
        touched = sorted(library.rglob("*.safetensors"))[::100]
        for path in touched:
            os.utime(path, ns=(time.time_ns(), time.time_ns()))
        after, _ = scan_command(home, library)
        share = f"{len(touched)} files ({len(touched) / files:.0%})"
        print(f"  re-scan, {share} touched: {after:.2f} s = {after / first:.1%} of the first")
        for label in ("first run, every file read", "second run, nothing changed") if verify else ():
            seconds, rss = command(home, "verify", "--all")
            print(f"  verify --all, {label}: {seconds:.1f} s, peak RSS {rss / 1024:.0f} MiB")


def large_files(tmp: Path, count: int, mib: int, rounds: int) -> None:
    from lorahub import Hub

    folder = tmp / "large"
    folder.mkdir()
    rng = np.random.default_rng(0)
    block = rng.standard_normal(8 * MIB // 2).astype(np.float16).tobytes()  # 8 MiB of fp16 values
    for i in range(count):
        own = np.full(len(block) // 2, i, dtype=np.float16).tobytes()  # one tensor per file differs: new content
        tensors = {
            f"lora_unet_block_{t}.lora_{'down' if t % 2 else 'up'}.weight": (
                "F16",
                (len(block) // 2,),
                own if t == 0 else block,
            )
            for t in range(mib // 8)
        }
        write(folder / f"big-{i}.safetensors", tensors, {"ss_output_name": f"big-{i}"})
    files = sorted(folder.glob("*.safetensors"))
    total = sum(p.stat().st_size for p in files)
    baseline(files)  # warm the page cache
    scans, hashes = [], []
    for _ in range(rounds):
        hub = Hub.open(new_home(tmp))
        start = time.perf_counter()
        result = hub.scan([folder])
        scans.append(time.perf_counter() - start)
        assert len(result.added) == count, result.failures
        start = time.perf_counter()
        baseline(files)
        hashes.append(time.perf_counter() - start)
    scan, sha = float(np.median(scans)), float(np.median(hashes))
    print(
        f"{count} files of {total / count / MIB:.0f} MiB: scan {total / scan / 1e9:.2f} GB/s, "
        f"sha256 {total / sha / 1e9:.2f} GB/s, scan throughput = {sha / scan:.2f} × sha256 (median of {rounds})"
    )


def baseline(files: list[Path]) -> None:
    for path in files:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(16 * MIB):
                digest.update(chunk)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=30000)
    parser.add_argument("--large", type=int, default=4)
    parser.add_argument("--large-mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-small", action="store_true")
    parser.add_argument("--skip-verify", action="store_true", help="Leave out the two `verify --all` runs.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_small:
            small_files(Path(tmp), args.files, verify=not args.skip_verify)
        if args.large:
            large_files(Path(tmp), args.large, args.large_mib, args.rounds)


if __name__ == "__main__":
    main()
