"""The files other tools keep beside an adapter ``DIR/NAME.safetensors``: sidecars and previews.

A library catalogued in place must know these files: they move and are deleted with the adapter, and they say
things about it (trigger words, a description, a picture). Each is found by its name alone; nothing here writes.

``NAME`` is the adapter's file name without its last suffix, as every tool below derives it
(``os.path.splitext``): ``style.v2.safetensors`` has the neighbours ``style.v2.json`` and ``style.v2.png``.
lorahub's own signed-card sidecar is the one exception: it keeps the whole file name
(``style.v2.safetensors.lorahub.json``), so that ``x.ckpt`` and ``x.safetensors`` never share one.

Where each name comes from (read in the tools' sources, 2026):

* A1111 / Forge, ``modules/ui_extra_networks.py``: previews ``NAME.{png,jpg,jpeg,webp,gif}`` and
  ``NAME.preview.{…}`` (``find_preview``), descriptions ``NAME.txt`` and ``NAME.description.txt``
  (``find_description``), user metadata ``NAME.json`` (``ui_extra_networks_user_metadata``).
* Civitai Helper: ``NAME.civitai.info`` and ``NAME.preview.png``.
* sd-civitai-browser-plus, ``scripts/civitai_file_manage.py``: ``NAME.preview.png``, ``NAME.png``, ``NAME.html``,
  ``NAME.civitai.info``, ``NAME.api_info.json`` (its ``save_api_info`` option), and ``activation text``,
  ``sha256`` and ``modelId`` merged into the A1111 ``NAME.json``.
* ComfyUI-Lora-Manager, ``py/utils/constants.py`` ``PREVIEW_EXTENSIONS`` and ``py/utils/sidecar_paths.py``:
  ``NAME.metadata.json``; previews ``NAME.{webp,png,jpeg,jpg,gif,mp4,webm}`` and
  ``NAME.preview.{webp,png,jpeg,jpg,mp4}``.
* ComfyUI itself, ``app/model_manager.py`` ``get_model_previews``: any image ``NAME.*`` or ``NAME.preview.*``.

Suffixes match case-insensitively (``NAME.PNG`` is a preview: Windows tools treat it as one); ``NAME`` itself must
match exactly. Neither SD.Next's generated ``NAME.thumb.*`` nor sd-civitai-browser-plus' sample images
``NAME_0.png``… are neighbours: the first is a cache, the second is named like another adapter's file.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import stat
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lorahub import errors

SIDECAR_SUFFIX = ".lorahub.json"
"""lorahub's signed-card sidecar: ``FILE`` + this, the whole file name kept (:mod:`lorahub.signing.embed`)."""

HASH_CHUNK_BYTES = 1024 * 1024

PREVIEW_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "gif", "mp4", "webm")
"""Every preview extension one of the tools above shows; ComfyUI's "any image" adds no other common one."""

NEIGHBOUR_KINDS: Mapping[str, tuple[str, ...]] = {
    "a1111-json": (".json",),
    "civitai-info": (".civitai.info",),
    "civitai-api-info": (".api_info.json",),
    "civitai-html": (".html",),
    "lora-manager-json": (".metadata.json",),
    "description": (".txt", ".description.txt"),
    "preview": tuple(f"{middle}.{ext}" for middle in ("", ".preview") for ext in PREVIEW_EXTENSIONS),
}
"""Kind → the suffixes that follow ``NAME`` (lower case). ``lorahub-card`` follows the whole file name instead."""

LORAHUB_CARD = "lorahub-card"
KIND_ORDER: tuple[str, ...] = (LORAHUB_CARD, *NEIGHBOUR_KINDS)
"""The order :func:`find_neighbours` lists kinds in: lorahub's card first, previews last."""

_KIND_BY_SUFFIX: Mapping[str, str] = {suffix: kind for kind, suffixes in NEIGHBOUR_KINDS.items() for suffix in suffixes}


@dataclass(frozen=True)
class Neighbour:
    """One file beside an adapter, as it was when read: ``path`` is the name found in the folder (a symbolic link
    stays a link here; its size, time and digest are those of the file it points to)."""

    kind: str
    path: Path
    size: int
    mtime_ns: int
    sha256: str


class FolderListing(Collection[str]):
    """A folder's file names, sorted once so that finding one adapter's neighbours costs a binary search.

    A walk that finds thousands of adapters in one folder passes one of these for all of them; any other collection
    of names works too, read through once per adapter.
    """

    def __init__(self, names: Iterable[str]) -> None:
        self._names = sorted(set(names))

    def __contains__(self, name: object) -> bool:
        index = bisect.bisect_left(self._names, name) if isinstance(name, str) else len(self._names)
        return index < len(self._names) and self._names[index] == name

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def starting_with(self, prefix: str) -> Sequence[str]:
        start = bisect.bisect_left(self._names, prefix)
        end = start
        while end < len(self._names) and self._names[end].startswith(prefix):
            end += 1
        return self._names[start:end]


def neighbour_stem(path: Path) -> str:
    """``NAME`` of ``DIR/NAME.safetensors``: the file name without its last suffix, as the tools derive it."""
    return os.path.splitext(path.name)[0]


def kind_of(adapter: Path, name: str) -> str | None:
    """The neighbour kind of the file called ``name`` in the adapter's folder, or None when it is not one."""
    stem = neighbour_stem(adapter)
    if not name.startswith(stem) or name == adapter.name:
        return None
    rest = name[len(stem) :].lower()
    if rest == (adapter.name[len(stem) :] + SIDECAR_SUFFIX).lower():
        return LORAHUB_CARD
    return _KIND_BY_SUFFIX.get(rest)


def match_neighbours(path: Path, listing: Collection[str] | None = None) -> list[tuple[str, Path]]:
    """``(kind, path)`` of each neighbour of the adapter at ``path``, by name only: nothing is opened or stat'ed.

    ``listing`` holds the names in the adapter's folder, as the caller's walk already read them; without it the folder
    is listed here (once). Sorted by kind (:data:`KIND_ORDER`), then name.
    """
    names = _names_in(path.parent) if listing is None else listing
    stem = neighbour_stem(path)
    candidates = names.starting_with(stem) if isinstance(names, FolderListing) else names
    found = [(kind, name) for name in candidates if (kind := kind_of(path, name)) is not None]
    found.sort(key=lambda item: (KIND_ORDER.index(item[0]), item[1]))
    return [(kind, path.with_name(name)) for kind, name in found]


def find_neighbours(
    path: Path, listing: Collection[str] | None = None, *, known: Mapping[tuple[str, int, int], str] | None = None
) -> list[Neighbour]:
    """Every neighbour of the adapter at ``path`` with its size, modification time and SHA-256.

    Only names that match are stat'ed and read. A name that is gone by the time it is read, a dangling link and
    anything that is not a regular file (a folder called ``NAME.png``) are not neighbours. A file that cannot be
    read, or that changes while it is read, raises FileReadError: a neighbour is never recorded half-known.
    """
    return [
        neighbour
        for kind, candidate in match_neighbours(path, listing)
        if (neighbour := _read(kind, candidate, known or {})) is not None
    ]


def _names_in(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except FileNotFoundError:
        raise errors.PathNotFoundError(f"{folder}: no such folder") from None
    except NotADirectoryError:
        raise errors.NotAFolderError(f"{folder} is not a folder", hint="Give the path of an adapter file.") from None
    except OSError as exc:
        raise errors.FileReadError(f"{folder}: {exc.strerror}") from None


def _read(kind: str, path: Path, known: Mapping[tuple[str, int, int], str]) -> Neighbour | None:
    try:
        found = os.stat(path)  # follows a link: a dangling one is gone
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise errors.FileReadError(f"{path}: {exc.strerror}") from None
    if not stat.S_ISREG(found.st_mode):
        return None  # a folder, or a pipe that would block the scan
    sha256 = known.get((path.name, found.st_size, found.st_mtime_ns))
    if sha256 is not None:  # seen before with this size and mtime: a re-scan does not read every preview again
        return Neighbour(kind, path, found.st_size, found.st_mtime_ns, sha256)
    try:
        with open(path, "rb") as handle:
            before = os.fstat(handle.fileno())
            digest, read = hashlib.sha256(), 0
            while chunk := handle.read(HASH_CHUNK_BYTES):
                digest.update(chunk)
                read += len(chunk)
            after = os.fstat(handle.fileno())
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise errors.FileReadError(f"{path}: {exc.strerror}") from None
    if (
        (before.st_ino, before.st_dev) != (found.st_ino, found.st_dev)
        or read != before.st_size
        or (
            after.st_size,
            after.st_mtime_ns,
        )
        != (before.st_size, before.st_mtime_ns)
    ):
        raise errors.FileReadError(
            f"{path} changed while it was read", hint="Run the scan again once nothing is writing into the folder."
        )
    return Neighbour(kind, path, before.st_size, before.st_mtime_ns, digest.hexdigest())
