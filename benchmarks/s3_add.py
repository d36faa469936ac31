"""`lorahub add` of a 1 GiB file into the S3 blob store on loopback, against a bare client upload of the same file.

One SeaweedFS server (the tests' fixture: `weed server` on 127.0.0.1) serves every upload; all run as whole commands
on the same warm file, alternating, several rounds, and each writes a new object (a fresh prefix or key per round):

- add: `lorahub add FILE` into a fresh copy of a prepared home (identity made beforehand) whose `LORAHUB_BLOBS_URL`
  names a fresh prefix: one read of the file computes every digest and spools it into the home's cache, then the
  spooled file goes up under its digest (multipart, a SHA-256 checksum per part, `If-None-Match: *`), then the card
  is signed and recorded;
- boto3: a Python process uploading the file with boto3's managed transfer (`upload_file`, multipart, a SHA-256
  checksum per part): what one would do without lorahub;
- with `--clients`, also obstore (`put` of the path, SHA-256 checksums) and obstore with `mode="create"` (its only
  conditional write, which obstore makes one request holding the whole file in memory), for the choice of client.

Each command's peak memory (max RSS) is reported too. The figure is the median of the per-round ratios add/boto3.

    python benchmarks/s3_add.py [--size-mib 1024] [--rounds 3] [--clients]
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
import uuid
from dataclasses import dataclass
from pathlib import Path

from hash_throughput import cpu_model  # type: ignore[import-not-found]

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the SeaweedFS launcher lives with the tests
from tests.support import SeaweedFS, running_seaweedfs

BOTO3_UPLOAD = """
import sys, boto3
boto3.client("s3").upload_file(sys.argv[1], sys.argv[2], sys.argv[3], ExtraArgs={"ChecksumAlgorithm": "SHA256"})
"""
OBSTORE_UPLOAD = """
import os, sys, obstore
from pathlib import Path
from obstore.store import S3Store
store = S3Store(sys.argv[2], endpoint=os.environ["AWS_ENDPOINT_URL"], region="us-east-1", allow_http=True,
                checksum_algorithm="SHA256")
obstore.put(store, sys.argv[3], Path(sys.argv[1]), **({"mode": "create"} if sys.argv[4] == "create" else {}))
"""


def write_in_child(path: Path, size_mib: int) -> None:
    """The test file, made by another process: on Linux a child's peak memory starts from its parent's, so this one
    must never hold a file's worth of tensors."""
    code = (
        f"from hash_throughput import make_file; from pathlib import Path; make_file(Path({str(path)!r}), {size_mib})"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent)


@dataclass(frozen=True)
class Run:
    seconds: float
    peak_mib: float
    cpu_s: float
    """The command's own CPU time, user and system."""
    server_cpu_s: float
    """The server's CPU time while the command ran: on a small machine the two compete for the same cores."""


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a running process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(command: list[str], env: dict[str, str], server: SeaweedFS) -> Run:
    """One whole command: wall seconds, peak memory, its CPU time and the server's."""
    server_before = cpu_seconds(server.pid)
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{command[:4]} exited {os.waitstatus_to_exitcode(status)}")
    server_cpu = cpu_seconds(server.pid) - server_before
    return Run(seconds, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, server_cpu)


def empty(server: SeaweedFS) -> None:
    """Delete every object, so that the server's disk holds one round's uploads at a time."""
    client = server.client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=server.bucket):
        for entry in page.get("Contents", []):
            client.delete_object(Bucket=server.bucket, Key=entry["Key"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", action="store_true", help="also time obstore, for the choice of client")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("LORAHUB_BENCH_DIR")) as tmp:
        root = Path(tmp)
        big = root / "big.safetensors"
        write_in_child(big, args.size_mib)
        with running_seaweedfs(root / "seaweedfs") as server:
            env = {k: v for k, v in os.environ.items() if not k.startswith("LORAHUB_")} | server.env()
            template = root / "template"
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "lorahub",
                    "--home",
                    str(template),
                    "keys",
                    "create",
                    "Bench <b@lorahub.example>",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                env=env,
            )
            commands = {
                "add": lambda home, key: (
                    [sys.executable, "-m", "lorahub", "--home", str(home), "add", str(big), "--name", "big"],
                    {**env, "LORAHUB_BLOBS_URL": f"s3://{server.bucket}/{key}"},
                ),
                "boto3": lambda home, key: ([sys.executable, "-c", BOTO3_UPLOAD, str(big), server.bucket, key], env),
            }
            if args.clients:
                for mode in ("overwrite", "create"):
                    commands[f"obstore-{mode}"] = lambda home, key, mode=mode: (
                        [sys.executable, "-c", OBSTORE_UPLOAD, str(big), server.bucket, key, mode],
                        env,
                    )
            runs: dict[str, list[Run]] = {name: [] for name in commands}
            ratios = []
            subprocess.run(["sha256sum", str(big)], check=True, stdout=subprocess.DEVNULL)  # warm the page cache
            for i in range(args.rounds):
                for name, make in commands.items():
                    home = root / f"home-{i}"
                    shutil.copytree(template, home)
                    command, command_env = make(home, f"{name}-{uuid.uuid4().hex[:8]}")
                    runs[name].append(measured(command, command_env, server))
                    shutil.rmtree(home)
                    empty(server)
                ratios.append(runs["add"][-1].seconds / runs["boto3"][-1].seconds)
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; file {args.size_mib} MiB; rounds {args.rounds}")
    print("median of each: wall seconds (every round), peak memory, CPU seconds of the command and of the server")
    for name, done in runs.items():
        walls = ", ".join(f"{r.seconds:.2f}" for r in done)
        print(
            f"{name:>17}: {statistics.median(r.seconds for r in done):6.2f} s ({walls}), "
            f"peak {max(r.peak_mib for r in done):.0f} MiB, cpu {statistics.median(r.cpu_s for r in done):.2f} s, "
            f"server cpu {statistics.median(r.server_cpu_s for r in done):.2f} s"
        )
    print(f"median ratio add/boto3: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
