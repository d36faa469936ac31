"""Where lorahub keeps its state, and the settings that say so.

Precedence, highest first: the argument (``--home``), the environment (``LORAHUB_HOME``, ``LORAHUB_DATABASE_URL``,
``LORAHUB_BLOBS_URL``), the home's ``config.toml``, the default. Every command works on a fresh home: folders are
created on first use.
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lorahub import errors

if TYPE_CHECKING:
    from lorahub.registry.blobs import BlobStorage

HOME_ENV = "LORAHUB_HOME"
DATABASE_ENV = "LORAHUB_DATABASE_URL"
BLOBS_ENV = "LORAHUB_BLOBS_URL"
CONFIG_FILE = "config.toml"
POLICY_FILE = "policy.toml"


def default_home(env: Mapping[str, str] = os.environ) -> Path:
    """The per-user data folder, as each platform's conventions place it."""
    if sys.platform == "win32":
        return Path(env.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "lorahub"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "lorahub"
    return Path(env.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "lorahub"


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    sources: Mapping[str, str]
    """For each setting, where its value came from: ``argument``, ``environment``, ``config.toml`` or ``default``."""
    blobs_url: str | None = None
    """``s3://BUCKET/PREFIX`` for an S3-compatible blob store; None for the home's ``blobs/`` folder."""

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @property
    def blobs_dir(self) -> Path:
        return self.home / "blobs"

    @property
    def blob_cache_dir(self) -> Path:
        """Verified local copies of blobs kept in a remote store, fetched on demand (safe to delete)."""
        return self.home / "cache" / "blobs"

    @property
    def policy_path(self) -> Path:
        return self.home / POLICY_FILE

    @property
    def config_path(self) -> Path:
        return self.home / CONFIG_FILE

    @classmethod
    def resolve(cls, home: str | os.PathLike[str] | None = None, env: Mapping[str, str] = os.environ) -> Settings:
        sources = {}
        if home is not None:
            root, sources["home"] = Path(home), "argument"
        elif env.get(HOME_ENV):
            root, sources["home"] = Path(env[HOME_ENV]), "environment"
        else:
            root, sources["home"] = default_home(env), "default"
        root = root.expanduser().absolute()
        config = read_config(root / CONFIG_FILE)
        if env.get(DATABASE_ENV):
            url, sources["database_url"] = env[DATABASE_ENV], "environment"
        elif "database_url" in config:
            url, sources["database_url"] = str(config["database_url"]), CONFIG_FILE
        else:
            url, sources["database_url"] = f"sqlite:///{root / 'catalog.db'}", "default"
        blobs_url: str | None = None
        if env.get(BLOBS_ENV):
            blobs_url, sources["blobs"] = env[BLOBS_ENV], "environment"
        elif "blobs_url" in config:
            blobs_url, sources["blobs"] = str(config["blobs_url"]), CONFIG_FILE
        else:
            sources["blobs"] = "default"
        return cls(home=root, database_url=url, sources=sources, blobs_url=blobs_url)


def open_blob_store(settings: Settings) -> BlobStorage:
    """The store ``blobs_url`` names: the home's ``blobs/`` folder when unset, a bucket for ``s3://BUCKET/PREFIX``
    (its local copies verified in :attr:`Settings.blob_cache_dir`)."""
    url = settings.blobs_url
    if url is None:
        from lorahub.registry.blobs import BlobStore

        return BlobStore(settings.blobs_dir)
    if url.startswith("s3://"):
        from lorahub.registry.s3blobs import S3BlobStore

        return S3BlobStore.from_url(url, cache=settings.blob_cache_dir)
    raise errors.SettingsError(
        f"blobs_url {url!r} names no blob store lorahub knows",
        hint="Use s3://BUCKET/PREFIX for an S3-compatible store, or leave it unset for the home's blobs/ folder.",
    )


def read_config(path: Path) -> dict[str, object]:
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise errors.SettingsError(f"{path}: {exc}", hint="Fix the TOML syntax, or delete the file.") from None


def mask_url(url: str) -> str:
    """A database URL fit to print: the password replaced by ***."""
    return re.sub(r"(://[^:/@]+:)[^@]+@", r"\1***@", url)
