"""Dataset consent manifest: one record per training image (hash, caption, source, licence, consent, people)
plus the opt-out signals found in the image itself, with a digest a model card can pin (``Consent.manifest_digest``).

Deterministic on purpose (sorted items, no timestamps, no absolute paths): scanning the same folder twice gives the
same digest, and the manifest can be shared without revealing where the data lives.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import rfc8785

from lorahub import errors
from lorahub.consent import signals as sig
from lorahub.consent.sources import STATUSES, SourceEntry, read_sources
from lorahub.files.atomic import atomic_write

if TYPE_CHECKING:
    from lorahub.signing.card import Consent

SCHEMA = "lorahub.dataset-manifest/v1"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
CAPTION_SUFFIXES = (".txt", ".caption")
MAX_IMAGE_BYTES = 512 * 1024 * 1024
"""Images are read whole (hash and XMP search in one pass); anything larger is not a training image."""
MAX_CAPTION_BYTES = 1024 * 1024

CARD_STATUS = {
    "explicit-opt-in": "consented",
    "licensed": "licensed",
    "public-domain": "public-domain",
    "opt-out-checked-clear": "opt-out-checked",
    "opted-out": "opted-out",
    "unknown": "unknown",
}
"""Per-image status → the card's summary vocabulary (``lorahub.signing.card.CONSENT_STATUSES``)."""

ITEM_FIELDS = (
    "path",
    "sha256",
    "size",
    "caption",
    "source",
    "author",
    "license",
    "declared_status",
    "status",
    "people",
    "likeness_release",
    "signals",
    "notes",
)


@dataclass(frozen=True)
class Item:
    """One image. ``declared_status`` is what the sources file says; ``status`` is what holds after the image's own
    signals (an embedded opt-out wins, and both stay on record)."""

    path: str
    sha256: str
    size: int
    caption: str | None = None
    source: str | None = None
    author: str | None = None
    license: str | None = None
    declared_status: str = "unknown"
    status: str = "unknown"
    people: tuple[str, ...] = ()
    likeness_release: str | None = None
    signals: tuple[sig.Signal, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def opt_outs(self) -> tuple[sig.Signal, ...]:
        return tuple(s for s in self.signals if s.effect == sig.OPT_OUT)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "size": self.size,
            "caption": self.caption,
            "source": self.source,
            "author": self.author,
            "license": self.license,
            "declared_status": self.declared_status,
            "status": self.status,
            "people": list(self.people),
            "likeness_release": self.likeness_release,
            "signals": [s.to_dict() for s in self.signals],
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Item:
        d = _object(data, where, ITEM_FIELDS)
        size = d["size"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise _invalid(f"{where}.size", "expected a non-negative integer")
        sha = _string(d["sha256"], f"{where}.sha256")
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise _invalid(f"{where}.sha256", "expected 64 lowercase hex digits")
        try:
            signals = tuple(sig.Signal.from_dict(s) for s in _list(d["signals"], f"{where}.signals"))
        except (TypeError, ValueError, AttributeError) as exc:
            raise _invalid(f"{where}.signals", str(exc)) from exc
        return cls(
            path=_string(d["path"], f"{where}.path"),
            sha256=sha,
            size=size,
            caption=_optional_string(d["caption"], f"{where}.caption"),
            source=_optional_string(d["source"], f"{where}.source"),
            author=_optional_string(d["author"], f"{where}.author"),
            license=_optional_string(d["license"], f"{where}.license"),
            declared_status=_status(d["declared_status"], f"{where}.declared_status"),
            status=_status(d["status"], f"{where}.status"),
            people=tuple(_string(p, f"{where}.people[]") for p in _list(d["people"], f"{where}.people")),
            likeness_release=_optional_string(d["likeness_release"], f"{where}.likeness_release"),
            signals=signals,
            notes=tuple(_string(n, f"{where}.notes[]") for n in _list(d["notes"], f"{where}.notes")),
        )


@dataclass(frozen=True)
class Manifest:
    """The whole dataset: items sorted by path, which checks ran (tool and version), the sources file's digest and
    the sources entries that matched no image (usually a renamed or deleted file: worth a look)."""

    items: tuple[Item, ...]
    checks: tuple[tuple[str, str], ...] = ()
    sources_sha256: str | None = None
    unmatched_sources: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "checks": dict(self.checks),
            "sources_sha256": self.sources_sha256,
            "unmatched_sources": list(self.unmatched_sources),
            "items": [item.to_dict() for item in self.items],
        }

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        d = _object(data, "manifest", ("schema", "checks", "sources_sha256", "unmatched_sources", "items"))
        if d["schema"] != SCHEMA:
            raise _invalid("manifest.schema", f"expected {SCHEMA!r}, got {d['schema']!r}")
        checks = d["checks"]
        if not isinstance(checks, dict) or not all(isinstance(v, str) for v in checks.values()):
            raise _invalid("manifest.checks", "expected an object of strings")
        return cls(
            items=tuple(Item.from_dict(item, f"items[{n}]") for n, item in enumerate(_list(d["items"], "items"))),
            checks=tuple(sorted(checks.items())),
            sources_sha256=_optional_string(d["sources_sha256"], "manifest.sources_sha256"),
            unmatched_sources=tuple(_string(u, "unmatched_sources[]") for u in _list(d["unmatched_sources"], "u")),
        )

    def canonical(self) -> bytes:
        """RFC 8785 bytes: the form the digest covers, identical whichever tool re-serialises the manifest."""
        return bytes(rfc8785.dumps(self.to_dict()))

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()

    def summary(self) -> dict[str, int]:
        """Items per status, every status present (zeros included) so reports line up."""
        counts = Counter(item.status for item in self.items)
        return {status: counts.get(status, 0) for status in STATUSES}

    def card_status(self) -> str:
        """The card's one-word summary: any opt-out dominates, then any unknown; a uniform set keeps its status."""
        statuses = {item.status for item in self.items}
        if "opted-out" in statuses:
            return "opted-out"
        if not statuses or "unknown" in statuses:
            return "unknown"
        if len(statuses) == 1:
            return CARD_STATUS[statuses.pop()]
        return "mixed"

    def card_consent(self) -> Consent:
        """A ``lorahub.signing.card.Consent`` pinning this manifest by digest, with the counts as its record."""
        from lorahub.signing.card import Consent

        record: dict[str, Any] = {"schema": SCHEMA, "items": len(self.items), "summary": self.summary()}
        return Consent(status=self.card_status(), record=record, manifest_digest=self.digest)

    def write(self, path: Path) -> None:
        """Atomically, as indented JSON (readable in review); the digest is over the canonical form, not these
        bytes, so formatting never changes it."""
        data = (json.dumps(self.to_dict(), indent=2, ensure_ascii=False, sort_keys=True) + "\n").encode()
        atomic_write(Path(path), lambda f: f.write(data))


def load(path: Path) -> Manifest:
    """Read a manifest written by ``Manifest.write`` (or any JSON of the same schema)."""
    path = Path(path)
    if not path.is_file():
        raise errors.PathNotFoundError(f"consent manifest not found: {path}")
    try:
        data = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _invalid(str(path), f"not JSON ({exc})") from exc
    try:
        return Manifest.from_dict(data)
    except errors.InvalidFileError as exc:
        raise errors.InvalidFileError(f"consent manifest {path}: {exc.message}", hint=exc.hint) from exc


# --- scanning --------------------------------------------------------------------------------------------------


def scan(directory: Path, sources: Path | None = None, *, read_c2pa: bool = True) -> Manifest:
    """Record every image under ``directory``. ``read_c2pa=False`` skips C2PA (and says so in ``checks``) for
    installs without the ``c2pa`` extra; otherwise a missing c2pa-python is an error, not a silent gap."""
    directory = Path(directory)
    if not directory.is_dir():
        raise errors.PathNotFoundError(f"dataset folder not found: {directory}")
    c2pa = sig.load_c2pa() if read_c2pa else None
    context = sig.offline_context(c2pa) if c2pa is not None else None
    paths = _image_paths(directory)
    items = [_read_item(directory, path, c2pa, context) for path in paths]
    entries = read_sources(Path(sources)) if sources is not None else []
    items, unmatched = _apply_sources(items, entries, sources)
    checks = {"xmp": "plus:DataMining (lorahub byte search)", "c2pa": sig.c2pa_version(c2pa) if c2pa else "skipped"}
    return Manifest(
        items=tuple(items),
        checks=tuple(sorted(checks.items())),
        sources_sha256=hashlib.sha256(Path(sources).read_bytes()).hexdigest() if sources is not None else None,
        unmatched_sources=tuple(unmatched),
    )


def _image_paths(directory: Path) -> list[Path]:
    """Images by relative path; hidden files and folders are skipped (``._x.png`` is macOS metadata, not art)."""
    found = []
    for path in directory.rglob("*"):
        rel = path.relative_to(directory)
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() and not any(p.startswith(".") for p in rel.parts):
            found.append(path)
    return sorted(found, key=lambda p: p.relative_to(directory).as_posix())


def _read_item(directory: Path, path: Path, c2pa: ModuleType | None, context: Any) -> Item:
    size = path.stat().st_size
    if size > MAX_IMAGE_BYTES:
        raise errors.InvalidFileError(
            f"{path}: {size} bytes is larger than {MAX_IMAGE_BYTES}", hint="Remove it from the dataset folder."
        )
    data = path.read_bytes()
    found = sig.xmp_signals(data)
    notes: list[str] = []
    if c2pa is not None:
        c2pa_found, notes = sig.c2pa_signals(c2pa, context, data, path.suffix.lower())
        found = c2pa_found + found
    caption, caption_notes = _caption(path)
    item = Item(
        path=path.relative_to(directory).as_posix(),
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        caption=caption,
        signals=tuple(found),
        notes=tuple(notes + caption_notes),
    )
    return _resolve(item)


def _caption(path: Path) -> tuple[str | None, list[str]]:
    """The kohya-style sibling ``NAME.txt``, else ``NAME.caption`` (kohya's default caption extension)."""
    txt = next((c for c in map(path.with_suffix, CAPTION_SUFFIXES) if c.is_file()), None)
    if txt is None:
        return None, []
    raw = txt.read_bytes()[: MAX_CAPTION_BYTES + 1]
    if len(raw) > MAX_CAPTION_BYTES:
        return None, [f"caption {txt.name} longer than {MAX_CAPTION_BYTES} bytes: not recorded"]
    try:
        return raw.decode("utf-8-sig").strip(), []
    except UnicodeDecodeError:
        return None, [f"caption {txt.name} is not UTF-8: not recorded"]


def _resolve(item: Item) -> Item:
    """The effective status: an opt-out in the image beats any declaration."""
    return replace(item, status="opted-out" if item.opt_outs else item.declared_status)


def _apply_sources(
    items: Sequence[Item], entries: Sequence[SourceEntry], sources: Path | None
) -> tuple[list[Item], list[str]]:
    """Match entries by relative path, sha256 or bare file name; an image matched twice, or a file name that
    names several images, is an error (the curator must say which record holds)."""
    by_key = {(e.key_kind, e.key): e for e in entries}
    used: set[tuple[str, str]] = set()
    names = Counter(Path(item.path).name for item in items)
    out = []
    for item in items:
        name = Path(item.path).name
        keys = [("path", item.path), ("sha256", item.sha256), ("file", name)]
        matched = [k for k in keys if k in by_key]
        if ("file", name) in matched and names[name] > 1:
            raise _source_error(sources, f"file name {name!r} names {names[name]} images: key them by path")
        if len(matched) > 1:
            raise _source_error(sources, f"{item.path} is described by {len(matched)} entries ({matched})")
        used.update(matched)
        out.append(_with_entry(item, by_key[matched[0]]) if matched else item)
    unmatched = sorted(f"{kind}:{key}" for kind, key in by_key if (kind, key) not in used)
    return out, unmatched


def _with_entry(item: Item, entry: SourceEntry) -> Item:
    return _resolve(
        replace(
            item,
            source=entry.source,
            author=entry.author,
            license=entry.license,
            declared_status=entry.consent,
            people=entry.people,
            likeness_release=entry.likeness_release,
        )
    )


def _source_error(sources: Path | None, problem: str) -> errors.InvalidFileError:
    return errors.InvalidFileError(f"sources file {sources}: {problem}", hint="Give each image exactly one entry.")


# --- validation helpers ----------------------------------------------------------------------------------------


def _invalid(where: str, problem: str) -> errors.InvalidFileError:
    return errors.InvalidFileError(
        f"{where}: {problem}",
        hint=f"The file is not a {SCHEMA} manifest, or it was edited by hand: scan the dataset again.",
    )


def _object(data: Any, where: str, fields: Sequence[str]) -> Mapping[str, Any]:
    if not isinstance(data, dict):
        raise _invalid(where, "expected an object")
    if set(data) != set(fields):
        missing, extra = sorted(set(fields) - set(data)), sorted(set(data) - set(fields))
        raise _invalid(where, f"missing {missing}, unexpected {extra}")
    return data


def _list(data: Any, where: str) -> list[Any]:
    if not isinstance(data, list):
        raise _invalid(where, "expected a list")
    return data


def _string(data: Any, where: str) -> str:
    if not isinstance(data, str):
        raise _invalid(where, "expected a string")
    return data


def _optional_string(data: Any, where: str) -> str | None:
    return None if data is None else _string(data, where)


def _status(data: Any, where: str) -> str:
    if data not in STATUSES:
        raise _invalid(where, f"{data!r} is not one of {', '.join(STATUSES)}")
    return str(data)
