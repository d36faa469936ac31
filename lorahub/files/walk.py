"""A library folder walked one folder at a time: what a scan needs and nothing it would have to hold.

``os.scandir`` reads each folder's names once; the adapter files are stat'ed (their size, mtime, inode and device
decide whether they must be read again), their neighbours are looked up in the folder's listing instead of being
stat'ed by guess. Hidden entries (a leading dot) are skipped, and folder symlinks are not followed, so a link back up
the tree cannot loop. Nothing is opened for writing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from lorahub import errors

ADAPTER_SUFFIX: Final = ".safetensors"


@dataclass(frozen=True)
class Folder:
    path: Path
    listing: frozenset[str]
    """Every name in the folder, as the neighbours of its files are found by name."""
    files: tuple[tuple[Path, os.stat_result], ...]
    """The adapter files in it (``*.safetensors``, any case), with their stat, by name."""


def walk(root: Path) -> Iterator[Folder]:
    """Folders under ``root`` (itself first, then depth first by name) that hold adapter files."""
    if not root.is_dir():
        raise errors.NotAFolderError(f"{root} is not a folder", hint="Name a library folder to scan.")
    pending = [root]
    while pending:
        folder = pending.pop()
        names: list[str] = []
        children: list[Path] = []
        files: list[tuple[Path, os.stat_result]] = []
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            raise errors.FileReadError(f"{folder}: {exc.strerror or exc}") from None
        for entry in entries:
            names.append(entry.name)
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                children.append(Path(entry.path))
            elif entry.name.lower().endswith(ADAPTER_SUFFIX):
                try:
                    stat = entry.stat()
                except OSError:
                    continue  # a dangling symlink or a file that vanished since the listing: nothing to catalogue
                if entry.is_file():
                    files.append((Path(entry.path), stat))
        pending.extend(sorted(children, reverse=True))
        if files:
            yield Folder(folder, frozenset(names), tuple(sorted(files, key=lambda f: f[0].name)))


def count_files(root: Path) -> int:
    """How many adapter files :func:`walk` will yield, from the names alone (a progress bar's total)."""
    total, pending = 0, [root]
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                pending.append(Path(entry.path))
            elif entry.name.lower().endswith(ADAPTER_SUFFIX):
                total += 1
    return total
