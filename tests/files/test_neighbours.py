"""Neighbours on real folders: every kind the tools write, names that only look like one, links, and no writes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from lorahub import errors
from lorahub.files.neighbours import (
    KIND_ORDER,
    NEIGHBOUR_KINDS,
    FolderListing,
    Neighbour,
    find_neighbours,
    kind_of,
    match_neighbours,
    neighbour_stem,
)

ADAPTER = "style.v2.safetensors"
NEIGHBOURS = {  # name -> kind, for ADAPTER
    "style.v2.safetensors.lorahub.json": "lorahub-card",
    "style.v2.json": "a1111-json",
    "style.v2.civitai.info": "civitai-info",
    "style.v2.api_info.json": "civitai-api-info",
    "style.v2.html": "civitai-html",
    "style.v2.metadata.json": "lora-manager-json",
    "style.v2.txt": "description",
    "style.v2.description.txt": "description",
    "style.v2.PNG": "preview",
    "style.v2.preview.png": "preview",
    "style.v2.Preview.JPEG": "preview",
    "style.v2.gif": "preview",
    "style.v2.mp4": "preview",
    "style.v2.preview.webm": "preview",
}
NOT_NEIGHBOURS = [
    "style.json",  # the neighbour of an adapter called style
    "Style.v2.png",  # NAME itself matches exactly
    "style.v2_0.png",  # sd-civitai-browser-plus sample image
    "style.v2.thumb.jpg",  # SD.Next's cache
    "style.v2.preview.bmp",
    "style.v2.ckpt",  # another adapter with the same NAME
    "style.v2.ckpt.lorahub.json",  # that adapter's card
    "other.png",
]


def _layout(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    adapter = folder / ADAPTER
    adapter.write_bytes(b"adapter bytes")
    for index, name in enumerate([*NEIGHBOURS, *NOT_NEIGHBOURS]):
        (folder / name).write_bytes(f"{name} #{index}".encode() * (index + 1))
    return adapter


def _expected(adapter: Path) -> list[Neighbour]:
    """Computed apart from the module: os.stat and hashlib over the whole file."""
    found = []
    for name, kind in NEIGHBOURS.items():
        path = adapter.with_name(name)
        info, digest = os.stat(path), hashlib.sha256(path.read_bytes()).hexdigest()
        found.append(Neighbour(kind, path, info.st_size, info.st_mtime_ns, digest))
    return sorted(found, key=lambda n: (KIND_ORDER.index(n.kind), n.path.name))


def _snapshot(folder: Path) -> dict[str, tuple[bytes | str, int]]:
    """Every entry's bytes (or link target) and modification time, links not followed."""
    state: dict[str, tuple[bytes | str, int]] = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        if path.is_symlink():
            state[str(path)] = (os.readlink(path), info.st_mtime_ns)
        elif path.is_file():
            state[str(path)] = (path.read_bytes(), info.st_mtime_ns)
        else:
            state[str(path)] = ("folder", info.st_mtime_ns)
    return state


def test_every_kind_the_tools_write_is_found_with_its_size_time_and_digest(tmp_path: Path) -> None:
    adapter = _layout(tmp_path / "loras")
    assert find_neighbours(adapter) == _expected(adapter)


def test_the_kinds_come_in_a_fixed_order_and_names_within_a_kind_sorted(tmp_path: Path) -> None:
    adapter = _layout(tmp_path)
    kinds = [kind for kind, _ in match_neighbours(adapter)]
    assert kinds == sorted(kinds, key=KIND_ORDER.index)
    assert [p.name for k, p in match_neighbours(adapter) if k == "preview"] == [
        "style.v2.PNG",
        "style.v2.Preview.JPEG",
        "style.v2.gif",
        "style.v2.mp4",
        "style.v2.preview.png",
        "style.v2.preview.webm",
    ]


def test_a_listing_is_used_instead_of_the_folder(tmp_path: Path) -> None:
    adapter = _layout(tmp_path)
    names = os.listdir(tmp_path)
    expected = _expected(adapter)
    assert find_neighbours(adapter, set(names)) == expected
    assert find_neighbours(adapter, FolderListing(names)) == expected
    partial = [name for name in names if name != "style.v2.gif"]
    assert [n.path.name for n in find_neighbours(adapter, FolderListing(partial))] == [
        n.path.name for n in expected if n.path.name != "style.v2.gif"
    ]
    assert find_neighbours(adapter, ["style.v2.webp"]) == []  # in the listing, gone from the folder: not a neighbour


def test_a_symlinked_preview_is_read_through_and_recorded_as_found(tmp_path: Path) -> None:
    elsewhere = tmp_path / "pictures" / "cover.webp"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"RIFF....WEBP picture")
    adapter = tmp_path / "loras" / "ink.safetensors"
    adapter.parent.mkdir()
    adapter.write_bytes(b"x")
    (adapter.parent / "ink.preview.webp").symlink_to(elsewhere)
    (adapter.parent / "ink.png").symlink_to(tmp_path / "missing.png")  # dangling: not a neighbour
    (found,) = find_neighbours(adapter)
    assert found.path == adapter.parent / "ink.preview.webp"
    assert found.path.is_symlink()
    assert (found.size, found.mtime_ns) == (len(b"RIFF....WEBP picture"), elsewhere.stat().st_mtime_ns)
    assert found.sha256 == hashlib.sha256(b"RIFF....WEBP picture").hexdigest()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_folders_and_pipes_with_a_neighbours_name_are_not_neighbours(tmp_path: Path) -> None:
    adapter = tmp_path / "ink.safetensors"
    adapter.write_bytes(b"x")
    (tmp_path / "ink.webp").mkdir()
    os.mkfifo(tmp_path / "ink.png")  # opening it would wait for a writer forever
    (tmp_path / "ink.json").write_text("{}")
    assert [(n.kind, n.path.name) for n in find_neighbours(adapter)] == [("a1111-json", "ink.json")]
    assert [path.name for _, path in match_neighbours(adapter)] == [
        "ink.json",
        "ink.png",
        "ink.webp",
    ]


def test_the_card_follows_the_whole_file_name_in_any_case(tmp_path: Path) -> None:
    upper = tmp_path / "Ink.SAFETENSORS"
    assert kind_of(upper, "Ink.SAFETENSORS.lorahub.json") == "lorahub-card"
    assert kind_of(upper, "Ink.safetensors.LoraHub.JSON") == "lorahub-card"
    assert kind_of(tmp_path / "ink.ckpt", "ink.safetensors.lorahub.json") is None
    assert kind_of(tmp_path / "ink", "ink.lorahub.json") == "lorahub-card"  # no suffix at all
    assert kind_of(upper, "Ink.SAFETENSORS") is None  # the adapter is not its own neighbour
    assert kind_of(upper, "Ink.WEBM") == "preview"


def test_name_is_the_file_name_without_its_last_suffix() -> None:
    assert neighbour_stem(Path("a/style.v2.safetensors")) == "style.v2"
    assert neighbour_stem(Path("a/plain")) == "plain"
    assert neighbour_stem(Path("a/.hidden")) == ".hidden"


def test_the_table_has_one_kind_per_suffix() -> None:
    suffixes = [suffix for each in NEIGHBOUR_KINDS.values() for suffix in each]
    assert len(suffixes) == len(set(suffixes))
    assert all(suffix == suffix.lower() and suffix.startswith(".") for suffix in suffixes)


def test_a_missing_folder_is_an_error_when_nothing_was_listed(tmp_path: Path) -> None:
    with pytest.raises(errors.PathNotFoundError):
        find_neighbours(tmp_path / "gone" / "ink.safetensors")
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(errors.NotAFolderError):
        find_neighbours(tmp_path / "file" / "ink.safetensors")


def test_folder_listing_is_a_collection_of_names() -> None:
    listing = FolderListing(["b.png", "a.safetensors", "a.json", "a.safetensors", "ab.png"])
    assert len(listing) == 4 and list(listing) == ["a.json", "a.safetensors", "ab.png", "b.png"]
    assert "a.json" in listing and "a" not in listing and 3 not in listing
    assert list(listing.starting_with("a.")) == ["a.json", "a.safetensors"]
    assert list(listing.starting_with("c")) == []


def test_nothing_in_the_folder_is_written(tmp_path: Path) -> None:
    adapter = _layout(tmp_path / "loras")
    (tmp_path / "loras" / "style.v2.jpg").symlink_to(tmp_path / "loras" / "style.v2.PNG")
    before = _snapshot(tmp_path)
    find_neighbours(adapter)
    find_neighbours(adapter, FolderListing(os.listdir(adapter.parent)))
    match_neighbours(adapter)
    assert _snapshot(tmp_path) == before
