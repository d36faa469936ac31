"""Where and with what a run trained: software versions, the lorahub commit, the hardware. Recorded in the card
because the same settings give different adapters on different library versions and GPUs."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from lorahub.version import __version__

LIBRARIES = ("torch", "diffusers", "peft", "transformers", "accelerate", "bitsandbytes", "safetensors")


def software() -> dict[str, Any]:
    versions: dict[str, Any] = {"python": platform.python_version(), "lorahub": __version__}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    versions["lorahub_git_commit"] = git_commit()
    return versions


def git_commit() -> str | None:
    """The commit of the lorahub source tree when it is a git checkout (``None`` for an installed wheel)."""
    source = Path(__file__).resolve().parents[2]  # lorahub/training/environment.py → the checkout
    if not (source / ".git").exists():
        return None
    try:
        result = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    if result.returncode != 0 or len(commit) != 40:
        return None
    dirty = subprocess.run(
        ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return commit + ("-dirty" if dirty.stdout.strip() else "")


def hardware(torch: Any, device: Any) -> dict[str, Any]:
    """The device trained on: the GPU's name and memory, or the CPU's, and the host's core count and memory."""
    facts: dict[str, Any] = {
        "device": device.type,
        "machine": platform.machine(),
        "system": platform.system(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "memory_bytes": _memory_bytes(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        facts["gpu"] = {"name": props.name, "memory_bytes": int(props.total_memory), "count": torch.cuda.device_count()}
        facts["cuda"] = torch.version.cuda
    return facts


def _memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None
