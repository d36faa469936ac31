"""A library catalogued where it lies: in place, moved, vanished, changed, duplicated — on SQLite and PostgreSQL.

Every test also checks the promise that matters most to the user: nothing under the library folder is written, moved
or deleted by lorahub (bytes and mtimes compared before and after).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from lorahub import Hub, errors
from lorahub.dev.example_lora import write_example_lora
from tests.registry.helpers import postgres_reason, postgres_schema
from tests.support import postgres_unavailable

Snapshot = dict[str, tuple[bytes, int]]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def library_hub(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hub]:
    monkeypatch.delenv("LORAHUB_DATABASE_URL", raising=False)
    if request.param == "sqlite":
        hub = Hub.open(tmp_path / "home")
        hub.create_identity("Alice <alice@example.com>")
        yield hub
        return
    reason = postgres_reason()
    if reason is not None:
        postgres_unavailable(reason)
    with postgres_schema() as url:
        monkeypatch.setenv("LORAHUB_DATABASE_URL", url)
        hub = Hub.open(tmp_path / "home")
        hub.create_identity("Alice <alice@example.com>")
        yield hub
        hub.catalog.engine.dispose()


@pytest.fixture
def library(tmp_path: Path) -> Path:
    """Two folders of adapters as a LoRA folder holds them, with neighbours lorahub must leave alone."""
    root = tmp_path / "models" / "Lora"
    for folder, name, seed in (("styles", "ink", 1), ("styles", "watercolor", 2), ("characters", "alice", 3)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        write_example_lora(root / folder / f"{name}.safetensors", rank=1, seed=seed, name=name)
    (root / "styles" / "notes.txt").write_text("not an adapter")
    (root / ".trash").mkdir()
    write_example_lora(root / ".trash" / "old.safetensors", rank=1, seed=9, name="old")
    return root


def snapshot(root: Path) -> Snapshot:
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


def refs(pairs: list[tuple[str, str]]) -> list[str]:
    return sorted(ref for _, ref in pairs)


def test_a_scan_catalogues_in_place_copies_nothing_and_writes_nothing(library_hub: Hub, library: Path) -> None:
    hub, before = library_hub, snapshot(library)
    result = hub.scan([library])
    assert sorted(f"{a.name}@{a.version}" for a in result.added) == ["alice@1", "ink@1", "watercolor@1"]
    assert not result.failures and not result.missing
    assert list(hub.blobs.iter_blobs()) == []  # nothing copied
    for added in result.added:
        version = hub.version(f"{added.name}@{added.version}")
        (location,) = hub.catalog.locations.of_sha256([version.blob_sha256])
        assert location.path == str(added.path) and location.state == "present"
        assert location.facts.size == Path(location.path).stat().st_size
        assert hub.verify(version.ref).ok
        assert hub.verify_version(version).ok
    assert not hub.library(state="missing") and not hub.duplicates()
    assert snapshot(library) == before


def test_a_rescan_with_nothing_changed_reads_nothing_and_logs_nothing(library_hub: Hub, library: Path) -> None:
    hub = library_hub
    hub.scan([library])
    events = len(hub.catalog.audit_events())
    again = hub.scan([library])
    assert again.unchanged == 3 and not (again.added or again.refreshed or again.moved or again.missing)
    assert len(hub.catalog.audit_events()) == events


def test_a_moved_file_is_found_by_its_digest_and_the_move_is_audited(library_hub: Hub, library: Path) -> None:
    hub = library_hub
    hub.scan([library])
    old, new = library / "styles" / "ink.safetensors", library / "characters" / "ink-v1.safetensors"
    old.rename(new)
    before = snapshot(library)
    result = hub.scan([library])
    assert result.moved == [(str(old), str(new), "ink@1")] and not result.missing and not result.added
    (location,) = hub.catalog.locations.of_sha256([hub.version("ink").blob_sha256])
    assert location.path == str(new)
    (event,) = [e for e in hub.catalog.audit_events() if e.action == "move"]
    assert (event.subject_name, event.subject_version) == ("ink", 1)
    assert hub.verify("ink").ok and hub.verify_audit() == []
    assert snapshot(library) == before


def test_a_vanished_file_stays_catalogued_as_missing_with_its_card(library_hub: Hub, library: Path) -> None:
    hub = library_hub
    hub.scan([library])
    card = hub.signed_card(hub.version("alice")).card
    gone = library / "characters" / "alice.safetensors"
    gone.unlink()
    result = hub.scan([library])
    assert result.missing == [(str(gone), "alice@1")]
    assert [(e.ref, e.location.state) for e in hub.library(state="missing")] == [("alice@1", "missing")]
    shown = hub.show("alice")
    assert shown["card"] == card.to_dict() and shown["signatures"][0]["valid"]
    assert [loc["state"] for loc in shown["locations"]] == ["missing"]
    report = hub.verify_version(hub.version("alice"))
    assert not report.ok and [c.name for c in report.checks] == ["file present"]
    with pytest.raises(errors.FileMissingError, match="last seen at"):
        hub.verify("alice")
    assert [r.target for r in hub.verify_all() if not r.ok] == ["alice@1"]


def test_a_file_that_comes_back_is_present_again(library_hub: Hub, library: Path, tmp_path: Path) -> None:
    hub = library_hub
    hub.scan([library])
    path = library / "characters" / "alice.safetensors"
    kept = shutil.copy2(path, tmp_path / "kept.safetensors")
    path.unlink()
    hub.scan([library])
    shutil.copy2(kept, path)
    result = hub.scan([library])
    assert result.refreshed == [str(path)] and not result.added
    assert hub.library(state="missing") == []


def test_a_changed_file_fails_verify_and_is_offered_as_a_new_version(library_hub: Hub, library: Path) -> None:
    hub = library_hub
    hub.scan([library])
    path = library / "styles" / "ink.safetensors"
    write_example_lora(path, rank=1, seed=42, name="ink")  # the user retrained it and saved over the old file
    report = hub.verify("ink@1")
    failed = [c for c in report.checks if not c.ok]
    assert failed and failed[0].name == "blob integrity" and "in-place file" in failed[0].detail
    assert not hub.verify_version(hub.version("ink@1")).ok
    assert [e.ref for e in hub.library(state="changed")] == ["ink@1"]  # verify records what it found
    result = hub.scan([library])
    assert result.changed == [(str(path), "ink@1")]
    assert [(a.name, a.version) for a in result.added] == [("ink", 2)]
    assert [e.ref for e in hub.library(state="changed")] == ["ink@1"]
    assert hub.verify("ink@2").ok
    assert hub.signed_card(hub.version("ink@1")).card.version == 1  # the old version keeps its card


def test_the_same_content_at_several_paths_is_listed_as_duplicates(library_hub: Hub, library: Path) -> None:
    hub = library_hub
    original, copy = library / "styles" / "ink.safetensors", library / "characters" / "ink copy.safetensors"
    shutil.copy2(original, copy)
    result = hub.scan([library])
    assert len(result.added) == 3 and result.duplicates == [(str(original), "ink@1")]  # characters/ is walked first
    (group,) = hub.duplicates()
    assert [e.location.path for e in group] == sorted([str(copy), str(original)])
    assert {e.ref for e in group} == {"ink@1"}


def test_a_root_that_is_not_there_is_refused_and_nothing_is_marked_missing(
    library_hub: Hub, library: Path, tmp_path: Path
) -> None:
    hub = library_hub
    hub.scan([library])
    unmounted = tmp_path / "unmounted"
    library.rename(unmounted)
    with pytest.raises(errors.PathNotFoundError):
        hub.scan([library])
    assert hub.library(state="missing") == []


def test_link_hard_links_into_the_store_and_leaves_the_file_alone(library_hub: Hub, library: Path) -> None:
    hub = library_hub
    path = library / "styles" / "ink.safetensors"
    mode, before = path.stat().st_mode, snapshot(library)
    result = hub.scan([path], link=True, find_missing=False)
    assert result.linked == 1
    stored = hub.blobs.path_for(hub.version("ink").blob_sha256)
    assert os.path.samefile(stored, path) and path.stat().st_mode == mode
    path.unlink()  # the library loses the file; the store's link keeps the version loadable
    assert hub.verify("ink").ok
    assert {k: v for k, v in before.items() if k != str(path)} == snapshot(library)


def test_a_file_that_cannot_be_read_fails_alone(library_hub: Hub, library: Path) -> None:
    hub = library_hub
    (library / "styles" / "broken.safetensors").write_bytes(b"\x09\x00\x00\x00\x00\x00\x00\x00{not json")
    result = hub.scan([library])
    assert [(Path(p).name, code) for p, code, _ in result.failures] == [("broken.safetensors", "header-not-json")]
    assert len(result.added) == 3


def test_previews_and_sidecars_are_recorded_with_their_digests(library_hub: Hub, library: Path) -> None:
    hub = library_hub
    folder = library / "styles"
    (folder / "ink.preview.png").write_bytes(b"\x89PNG preview")
    (folder / "ink.civitai.info").write_text('{"trainedWords": ["inky"]}')
    before = snapshot(library)
    hub.scan([library])
    (location,) = hub.show("ink")["locations"]
    kinds = {n["kind"]: n for n in location["neighbours"]}
    assert sorted(kinds) == ["civitai-info", "preview"]
    assert kinds["preview"]["name"] == "ink.preview.png" and kinds["preview"]["size"] == len(b"\x89PNG preview")
    assert hub.signed_card(hub.version("ink")).card.trigger_words == ("inky",)  # what the sidecar said
    (folder / "ink.json").write_text('{"activation text": "inky"}')  # a neighbour appears: the row follows
    again = hub.scan([library])
    assert again.refreshed == [str(folder / "ink.safetensors")] and not again.added
    (location,) = hub.show("ink")["locations"]
    assert sorted(n["kind"] for n in location["neighbours"]) == ["a1111-json", "civitai-info", "preview"]
    assert {k: v for k, v in snapshot(library).items() if not k.endswith("ink.json")} == before


def test_an_empty_root_does_not_mark_its_library_missing(library_hub: Hub, library: Path) -> None:
    """An unmounted drive leaves its mount point as an empty folder."""
    hub = library_hub
    hub.scan([library])
    for path in library.rglob("*.safetensors"):
        path.unlink()
    result = hub.scan([library])
    assert result.empty_roots == [str(library)] and not result.missing
    assert hub.library(state="missing") == []


def test_a_scan_marks_missing_only_under_its_own_roots(library_hub: Hub, library: Path) -> None:
    """A sibling whose name starts with the root's (``Lora`` and ``Lora-old``, ``lora``) is another folder."""
    hub = library_hub
    siblings = [library.with_name("Lora-old"), library.with_name("lora")]
    for index, sibling in enumerate(siblings):
        sibling.mkdir()
        write_example_lora(sibling / "kept.safetensors", rank=1, seed=20 + index, name=f"kept-{index}")
    hub.scan([library, *siblings])
    for sibling in siblings:
        (sibling / "kept.safetensors").unlink()
        (sibling / "other.safetensors").write_bytes((library / "styles" / "ink.safetensors").read_bytes())
    assert hub.scan([library]).missing == []
    assert sorted(ref for _, ref in hub.scan(siblings).missing) == ["kept-0@1", "kept-1@1"]
