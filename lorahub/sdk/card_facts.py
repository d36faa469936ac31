"""What a file and its neighbours already say about an adapter, to prefill its card.

Trainers and UIs leave facts in many places: kohya ``ss_*`` metadata, ModelSpec, an A1111 ``NAME.json`` sidecar,
a Civitai Helper ``NAME.civitai.info``. The user's options always win; each suggestion records where it came from.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorahub.files.metadata import decode_value
from lorahub.files.neighbours import match_neighbours

KOHYA_DIR = re.compile(r"^\d+_(.+)$")
MAX_TAG_CANDIDATES = 3
NEIGHBOUR_MAX_BYTES = 4 * 1024 * 1024


@dataclass
class Suggestions:
    name: str | None = None
    trigger_words: list[str] = field(default_factory=list)
    description: str | None = None
    license: str | None = None
    tags: list[str] = field(default_factory=list)
    base_model_name: str | None = None
    base_weights_digest: str | None = None
    sources: dict[str, str] = field(default_factory=dict)

    def offer(self, attribute: str, value: Any, source: str) -> None:
        """Keep the first non-empty suggestion for each field: sources are offered most reliable first."""
        if value and not getattr(self, attribute):
            setattr(self, attribute, value)
            self.sources[attribute] = source


def suggest(path: Path, metadata: Mapping[str, str], *, listing: Collection[str] | None = None) -> Suggestions:
    """What the file's metadata and its neighbours say; ``listing`` names the files beside it when the caller has
    already found them (a library scan), so the folder is not listed once per file."""
    found = Suggestions()
    _from_civitai_info(found, path, listing)
    _from_a1111_sidecar(found, path, listing)
    _from_modelspec(found, metadata)
    _from_kohya(found, metadata)
    found.offer("name", _slug(path.name.split(".")[0]), "file name")
    return found


def _split(text: str) -> list[str]:
    return [part.strip() for part in re.split(r"[,\n]", text) if part.strip()]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", text.strip().lower()).strip("-._") or "adapter"


def _neighbour_json(path: Path, kind: str, listing: Collection[str] | None) -> tuple[str, dict[str, Any]] | None:
    """The first neighbour of that kind (:mod:`lorahub.files.neighbours`) that is a JSON object, with its name."""
    try:
        candidates = [candidate for found, candidate in match_neighbours(path, listing) if found == kind]
    except OSError:
        return None
    for candidate in candidates:
        try:
            if not candidate.is_file() or candidate.stat().st_size > NEIGHBOUR_MAX_BYTES:
                continue
            data = json.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(data, dict):
            return candidate.name, data
    return None


def _from_civitai_info(found: Suggestions, path: Path, listing: Collection[str] | None) -> None:
    neighbour = _neighbour_json(path, "civitai-info", listing)
    if neighbour is None:
        return
    source, info = neighbour
    words = info.get("trainedWords")
    if isinstance(words, list):
        found.offer("trigger_words", [w.strip() for w in words if isinstance(w, str) and w.strip()], source)
    model = info.get("model") if isinstance(info.get("model"), dict) else {}
    name = model.get("name") if isinstance(model, dict) else None
    found.offer("name", _slug(name) if isinstance(name, str) else None, source)
    if isinstance(info.get("description"), str):
        found.offer("description", re.sub(r"<[^>]+>", "", info["description"]).strip(), source)
    if isinstance(info.get("baseModel"), str):
        found.offer("base_model_name", info["baseModel"], source)


def _from_a1111_sidecar(found: Suggestions, path: Path, listing: Collection[str] | None) -> None:
    neighbour = _neighbour_json(path, "a1111-json", listing)
    if neighbour is None:
        return
    source, sidecar = f"{neighbour[0]} (A1111)", neighbour[1]
    if isinstance(sidecar.get("activation text"), str):
        found.offer("trigger_words", _split(sidecar["activation text"]), source)
    for key in ("description", "notes"):
        if isinstance(sidecar.get(key), str):
            found.offer("description", sidecar[key].strip(), source)


def _from_modelspec(found: Suggestions, metadata: Mapping[str, str]) -> None:
    found.offer("trigger_words", _split(metadata.get("modelspec.trigger_phrase", "")), "modelspec.trigger_phrase")
    found.offer("name", _slug(metadata["modelspec.title"]) if metadata.get("modelspec.title") else None, "modelspec")
    found.offer("license", metadata.get("modelspec.license"), "modelspec.license")
    found.offer("description", metadata.get("modelspec.description"), "modelspec.description")
    found.offer("tags", _split(metadata.get("modelspec.tags", "")), "modelspec.tags")


def _from_kohya(found: Suggestions, metadata: Mapping[str, str]) -> None:
    found.offer("name", _slug(metadata["ss_output_name"]) if metadata.get("ss_output_name") else None, "ss_output_name")
    found.offer("trigger_words", trigger_candidates(metadata), "ss_tag_frequency / ss_dataset_dirs")
    found.offer("base_model_name", metadata.get("ss_sd_model_name"), "ss_sd_model_name")
    digest = metadata.get("ss_new_sd_model_hash", "").lower()
    found.offer(
        "base_weights_digest", digest if re.fullmatch(r"[0-9a-f]{64}", digest) else None, "ss_new_sd_model_hash"
    )


def trigger_candidates(metadata: Mapping[str, str]) -> list[str]:
    """kohya folders are named ``<repeats>_<class token>``, and the most frequent caption tags usually include the
    trigger word: both are candidates, folder tokens first."""
    candidates: list[str] = []
    for key in ("ss_dataset_dirs", "ss_tag_frequency"):
        value = decode_value(metadata.get(key, ""))
        if isinstance(value, dict):
            candidates += [m.group(1) for d in value if (m := KOHYA_DIR.match(str(d)))]
    frequency = decode_value(metadata.get("ss_tag_frequency", ""))
    if isinstance(frequency, dict):
        counts: Counter[str] = Counter()
        for tags in frequency.values():
            if isinstance(tags, dict):
                counts.update({str(t).strip(): int(n) for t, n in tags.items() if isinstance(n, int)})
        candidates += [tag for tag, _ in counts.most_common(MAX_TAG_CANDIDATES)]
    return list(dict.fromkeys(c for c in candidates if c))
