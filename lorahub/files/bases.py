"""Where a base model's files are: a pipeline folder anywhere, or a Hugging Face repo id found in the local cache.

Users keep their diffusers bases in the Hugging Face cache (``models--ORG--NAME/snapshots/REV/``, whose files are
symlinks into ``blobs/``). lorahub reads them where they are and never downloads one: a repo id that is not cached
is an error naming the download command. A folder inside the cache keeps its identity (repo id and revision), so
records name the base as the Hub does rather than by a snapshot's hash.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from lorahub import errors

REPO_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[\w./-]+))?$")
"""``ORG/NAME`` with an optional ``@REVISION`` (a branch, tag or commit)."""


@dataclass(frozen=True)
class BaseLocation:
    """A base's folder (or file) and, when it lies in the Hugging Face cache, the repo and revision it is."""

    path: Path
    repo_id: str | None = None
    revision: str | None = None

    @property
    def name(self) -> str:
        """What records call the base: the repo id when known (a snapshot folder's own name is a commit hash)."""
        return self.repo_id or self.path.absolute().name


def hub_cache() -> Path:
    """The Hugging Face hub cache as huggingface_hub finds it, read at call time (not at import) so a changed
    ``HF_HUB_CACHE``/``HF_HOME`` is honoured."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def locate_base(ref: str | os.PathLike[str]) -> BaseLocation:
    """An existing path as it is (with its cache identity, if it has one); otherwise a repo id from the cache."""
    path = Path(ref).expanduser()
    if path.exists():
        return BaseLocation(path, *cache_identity(path))
    match = REPO_ID.match(os.fspath(ref))
    if match is None:
        raise errors.PathNotFoundError(
            f"{ref}: no such file or folder",
            hint="Give a diffusers pipeline folder (or a checkpoint file), or a Hugging Face repo id ORG/NAME[@REV] "
            "already in the local cache.",
        )
    return _from_cache(match["repo"], match["revision"])


def cache_identity(path: Path) -> tuple[str | None, str | None]:
    """(repo id, revision) of a path inside a cache snapshot (``…/models--ORG--NAME/snapshots/REV/…``)."""
    parts = path.absolute().parts
    for index, part in enumerate(parts[:-2]):
        if part.startswith("models--") and parts[index + 1] == "snapshots":
            return part.removeprefix("models--").replace("--", "/"), parts[index + 2]
    return None, None


def _from_cache(repo_id: str, revision: str | None) -> BaseLocation:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError
    except ImportError:
        raise errors.MissingExtraError("finding a base in the Hugging Face cache", "train") from None
    cache = hub_cache()
    try:
        folder = snapshot_download(repo_id, revision=revision, cache_dir=cache, local_files_only=True)
    except (LocalEntryNotFoundError, HFValidationError, OSError) as exc:
        wanted = f"{repo_id}@{revision}" if revision else repo_id
        command = f"hf download {repo_id}" + (f" --revision {revision}" if revision else "")
        raise errors.BaseNotCachedError(
            f"{wanted} is not in the Hugging Face cache at {cache} ({exc.__class__.__name__})",
            hint=f"lorahub never downloads a base: fetch it once with `{command}` (HF_HUB_CACHE or HF_HOME choose "
            "the cache), or give the pipeline folder's path.",
        ) from None
    path = Path(str(folder))
    return BaseLocation(path, repo_id, cache_identity(path)[1] or revision)
