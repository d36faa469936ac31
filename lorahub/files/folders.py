"""The weights digest of a model folder, and file SHA-256s the Hugging Face cache already states.

The weights digest pins an exact base: SHA-256 over the sorted ``relative/path sha256`` lines of every weight and
config file in the folder, so a re-saved copy with the same bytes has the same digest and a changed config (which
changes the model as surely as a changed weight) does not. Training records it; bake states it for the base
pipeline and the pipeline it writes.

The Hugging Face cache names the blob of every large (LFS) file by the file's SHA-256, and a snapshot's files are
symlinks to those blobs: such a file's digest is read from its blob's name instead of re-hashing gigabytes to learn
what the name already says. Small files kept in git have 40-hex (git SHA-1) blob names and are hashed. A blob
damaged after download keeps its name, so this digest, like huggingface_hub itself, trusts the cache.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf")
CONFIG_NAMES = ("model_index.json", "config.json", "scheduler_config.json")
BOOKKEEPING = ".cache"
"""huggingface_hub's download bookkeeping inside a ``--local-dir`` folder: not part of the model. (A ``.cache``
above the folder, as in ``~/.cache/…``, is where bases live and is no concern here.)"""
CHUNK = 1 << 20
_LFS_BLOB = re.compile(r"[0-9a-f]{64}")


def model_files(folder: Path) -> list[Path]:
    """Every file of the model folder (through symlinks), sorted, without the download bookkeeping."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and BOOKKEEPING not in p.relative_to(folder).parts)


def is_digested(path: Path) -> bool:
    """Whether the weights digest covers this file: weights and configs (tokenizers and READMEs do not change the
    model's numbers)."""
    return path.suffix in WEIGHT_SUFFIXES or path.name in CONFIG_NAMES


def folder_digest(sha256s: Mapping[str, str]) -> str:
    """SHA-256 over the ``relative/path sha256`` lines of ``{relative path: sha256}``, sorted as paths (part by
    part: ``unet/…`` before ``unet.x/…``)."""
    lines = "".join(f"{name} {sha256s[name]}\n" for name in sorted(sha256s, key=lambda name: name.split("/")))
    return hashlib.sha256(lines.encode()).hexdigest()


def cached_sha256(path: Path) -> str | None:
    """The SHA-256 a Hugging Face cache blob's name states, when ``path`` is a symlink to a 64-hex blob."""
    if not path.is_symlink():
        return None
    blob = path.resolve()
    return blob.name if blob.parent.name == "blobs" and _LFS_BLOB.fullmatch(blob.name) else None


def file_sha256(path: Path) -> str:
    """The file's SHA-256: from the cache blob's name when it has one, else hashed."""
    return cached_sha256(path) or _hash(path)


def copy_file(source: Path, target: Path) -> str:
    """Copy the bytes of ``source`` (through any symlink: a real, self-contained copy) to a new ``target``, fsynced,
    and return their SHA-256, from the cache blob's name or hashed in the same read."""
    known = cached_sha256(source)
    if known is None:
        return _hash(source, target)
    shutil.copyfile(source, target)
    with target.open("rb") as written:
        os.fsync(written.fileno())
    return known


def _hash(path: Path, copy_to: Path | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle, ExitStack() as stack:
        sink = stack.enter_context(copy_to.open("xb")) if copy_to is not None else None
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            if sink is not None:
                sink.write(chunk)
        if sink is not None:
            sink.flush()
            os.fsync(sink.fileno())
    return digest.hexdigest()
