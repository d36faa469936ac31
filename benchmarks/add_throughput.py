"""`lorahub add` of a 1 GiB file against `sha256sum` of the same file.

add reads the file once: every digest, the NaN/Inf checks and the copy into the blob store (fsynced) happen in that
read; then the card is signed and one transaction records it. Each round adds into a fresh copy of a prepared home
(identity already created), alternating with sha256sum; the figure is the median of the per-round ratios.

    python benchmarks/add_throughput.py [--size-mib 1024] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hash_throughput import cpu_model, make_file, timed  # type: ignore[import-not-found]


def lorahub(home: Path, *args: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "lorahub", "--home", str(home), *args],
        check=True,
        stdout=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if k != "LORAHUB_DATABASE_URL"},
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("LORAHUB_BENCH_DIR")) as tmp:
        root = Path(tmp)
        big = root / "big.safetensors"
        make_file(big, args.size_mib)
        template = root / "template"
        lorahub(template, "keys", "create", "Bench <bench@lorahub.example>")
        timed(["sha256sum", str(big)])  # warm the page cache
        ratios, add_s, sha_s = [], [], []
        for i in range(args.rounds):
            home = root / f"home-{i}"
            shutil.copytree(template, home)
            add_s.append(lorahub(home, "add", str(big), "--name", "big"))
            sha_s.append(timed(["sha256sum", str(big)]))
            ratios.append(add_s[-1] / sha_s[-1])
            shutil.rmtree(home)
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; file {args.size_mib} MiB; rounds {args.rounds}")
    print(f"lorahub add: median {statistics.median(add_s):.2f} s ({', '.join(f'{v:.2f}' for v in add_s)})")
    print(f"  sha256sum: median {statistics.median(sha_s):.2f} s ({', '.join(f'{v:.2f}' for v in sha_s)})")
    print(f"median ratio add/sha256sum: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
