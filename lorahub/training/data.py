"""The training set: images and captions, their consent manifest, and what was left out and why.

A dataset is a folder of images with kohya-style caption files (``img.png`` + ``img.txt``) or a JSONL file whose
lines name an image (relative to the JSONL's folder) and its caption. Its consent manifest
(:mod:`lorahub.consent`) is read from ``manifest`` or made by scanning the folder. Images whose owners opted out,
and people shown without a likeness release, are excluded before training and recorded (path, hash and reason):
the card says what was *not* learnt from as well as what was. The manifest the card pins lists the images actually
trained on, so its consent status describes the adapter; the scanned manifest's digest is recorded beside it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorahub import errors
from lorahub.consent import Manifest, check, load, scan
from lorahub.consent.manifest import IMAGE_SUFFIXES

JSONL_IMAGE_KEYS = ("image", "file_name", "path")
JSONL_CAPTION_KEYS = ("caption", "text")


@dataclass(frozen=True)
class Example:
    path: Path
    rel: str
    """The image's path in the manifest (relative to the dataset folder, ``/``-separated)."""
    sha256: str
    caption: str
    repeats: int = 1
    """How many times an epoch shows it: kohya's ``N_name`` folder convention (``10_mychar/`` = 10)."""


@dataclass(frozen=True)
class Excluded:
    path: str
    sha256: str
    reasons: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "reasons": list(self.reasons)}


@dataclass(frozen=True)
class Dataset:
    examples: tuple[Example, ...]
    excluded: tuple[Excluded, ...]
    scanned: Manifest
    """The manifest of every image found (as scanned or as given)."""
    used: Manifest
    """The manifest of the images trained on: what the card's consent pins."""
    kind: str
    """``folder`` or ``jsonl``."""
    uncaptioned: int

    @property
    def unknown_consent(self) -> tuple[str, ...]:
        return tuple(item.path for item in self.used.items if item.status == "unknown")

    def card_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "manifest_digest": self.used.digest,
            "scanned_manifest_digest": self.scanned.digest,
            "images": len(self.examples),
            "uncaptioned": self.uncaptioned,
            "repeats": {e.rel.split("/")[0]: e.repeats for e in self.examples if e.repeats != 1},
            "excluded": [e.as_dict() for e in self.excluded],
            "consent": {"status": self.used.card_status(), "summary": self.used.summary()},
            "checks": dict(self.used.checks),
        }


def read_dataset(
    data: Path,
    *,
    trigger: str | None = None,
    sources: Path | None = None,
    manifest: Path | None = None,
) -> Dataset:
    """The dataset at ``data`` (a folder or a ``.jsonl`` file), consent-checked; see the module docstring."""
    data = Path(data)
    if not data.exists():
        raise errors.PathNotFoundError(f"training data not found: {data}")
    root = data if data.is_dir() else data.parent
    listed = _jsonl(data) if data.is_file() else None
    scanned = _manifest(root, sources, manifest)
    by_path = {item.path: item for item in scanned.items}
    wanted = list(listed) if listed is not None else [item.path for item in scanned.items]
    missing = [rel for rel in wanted if rel not in by_path]
    if missing:
        raise errors.TrainingError(
            f"{len(missing)} listed image(s) are not in the dataset folder or its manifest: {', '.join(missing[:5])}",
            hint="Image paths in the JSONL are relative to its folder; a given manifest must be rescanned after "
            "the images change.",
        )
    excluded = _exclusions(scanned)
    skip = {e.path for e in excluded}
    examples = []
    for rel in wanted:
        if rel in skip:
            continue
        item = by_path[rel]
        caption = listed[rel] if listed is not None and listed[rel] is not None else item.caption
        repeats, class_tokens = folder_repeats(rel)
        caption = caption or class_tokens  # kohya: an uncaptioned image in 10_mychar/ is captioned "mychar"
        examples.append(Example(root / rel, rel, item.sha256, with_trigger(caption or "", trigger), repeats))
    if not examples:
        raise errors.TrainingError(
            f"no trainable images in {data} ({len(excluded)} excluded)",
            hint="Add images (.png, .jpg, .webp) with caption .txt files beside them.",
        )
    used_paths = {example.rel for example in examples}
    used = dataclasses.replace(scanned, items=tuple(i for i in scanned.items if i.path in used_paths))
    uncaptioned = sum(1 for rel in used_paths if not (listed or {}).get(rel) and not by_path[rel].caption)
    kind = "jsonl" if listed is not None else "folder"
    return Dataset(tuple(examples), tuple(e for e in excluded if e.path in wanted), scanned, used, kind, uncaptioned)


def folder_repeats(rel: str) -> tuple[int, str | None]:
    """(repeats, class tokens) of an image from its top folder: ``10_my char/a.png`` → (10, "my char");
    (1, None) when the folder does not follow kohya's ``N_name`` convention."""
    folder, slash, _ = rel.partition("/")
    count, underscore, name = folder.partition("_")
    if not slash or not underscore or not count.isdigit():
        return 1, None
    if int(count) < 1:
        raise errors.TrainingError(
            f"folder {folder!r} repeats its images {int(count)} times: nothing would be trained on from it",
            hint="Name it N_name with N ≥ 1 (kohya's convention), or move its images out of the dataset.",
        )
    return int(count), name.strip() or None


def with_trigger(caption: str, trigger: str | None) -> str:
    """The caption with the trigger words first (kohya's habit), unless the caption already contains them."""
    caption = caption.strip()
    if not trigger or trigger in caption:
        return caption
    return f"{trigger}, {caption}" if caption else trigger


def _manifest(root: Path, sources: Path | None, manifest: Path | None) -> Manifest:
    """The given manifest, checked against the files (a stale one would pin the wrong images), or a fresh scan.
    C2PA is read when c2pa-python is installed; otherwise the manifest's ``checks`` says it was skipped."""
    if manifest is None:
        return scan(root, sources, read_c2pa=importlib.util.find_spec("c2pa") is not None)
    given = load(manifest)
    current = scan(root, None, read_c2pa=False)
    on_disk = {item.path: item.sha256 for item in current.items}
    recorded = {item.path: item.sha256 for item in given.items}
    if on_disk != recorded:
        changed = sorted(set(on_disk.items()) ^ set(recorded.items()))
        raise errors.TrainingError(
            f"consent manifest {manifest} does not match the images in {root} ({len(changed)} difference(s), "
            f"e.g. {changed[0][0]})",
            hint=f"Scan again: lorahub dataset scan {root} --out {manifest}",
        )
    return given


def _exclusions(manifest: Manifest) -> list[Excluded]:
    report = check(manifest)
    out = {o.path: Excluded(o.path, o.sha256, ("opted out: " + "; ".join(o.reasons),)) for o in report.opted_out}
    hashes = {item.path: item.sha256 for item in manifest.items}
    for flag in report.people:
        previous = out.get(flag.path)
        reasons = (previous.reasons if previous else ()) + (flag.problem,)
        out[flag.path] = Excluded(flag.path, hashes[flag.path], reasons)
    return [out[path] for path in sorted(out)]


def _jsonl(path: Path) -> dict[str, str | None]:
    """``{relative image path: caption or None}`` from a JSONL file, in file order."""
    if path.suffix.lower() != ".jsonl":
        raise errors.TrainingError(
            f"{path} is a file but not a .jsonl", hint="Pass a folder of images, or a JSONL of image/caption lines."
        )
    listed: dict[str, str | None] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _jsonl_error(path, number, f"not JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise _jsonl_error(path, number, "expected an object")
        listed[_image_key(record, path, number)] = _caption_key(record, path, number)
    return listed


def _image_key(record: Mapping[str, Any], path: Path, number: int) -> str:
    image = next((record[k] for k in JSONL_IMAGE_KEYS if k in record), None)
    if not isinstance(image, str) or not image:
        raise _jsonl_error(path, number, f"needs an image path under one of {', '.join(JSONL_IMAGE_KEYS)}")
    rel = Path(image)
    if rel.is_absolute() or ".." in rel.parts or rel.suffix.lower() not in IMAGE_SUFFIXES:
        raise _jsonl_error(path, number, f"{image!r} must be an image path inside the JSONL's folder")
    return rel.as_posix()


def _caption_key(record: Mapping[str, Any], path: Path, number: int) -> str | None:
    caption = next((record[k] for k in JSONL_CAPTION_KEYS if k in record), None)
    if caption is not None and not isinstance(caption, str):
        raise _jsonl_error(path, number, "the caption must be a string")
    return caption


def _jsonl_error(path: Path, number: int, problem: str) -> errors.TrainingError:
    return errors.TrainingError(
        f"{path}:{number}: {problem}", hint='Each line: {"image": "a.png", "caption": "a photo of sks cat"}'
    )
