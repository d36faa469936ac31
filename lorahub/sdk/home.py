"""Where lorahub keeps its state, and the settings that say so.

Precedence, highest first: the argument (``--home``), the environment (``LORAHUB_HOME``, ``LORAHUB_DATABASE_URL``,
``LORAHUB_BLOBS_URL``), the team config the home's ``config.toml`` points at (``team = "PATH"``: the team's database
and blob store, see docs/team.md), the home's ``config.toml`` itself, the default. Keys always stay in the home.
Every command works on a fresh home: folders are created on first use.
"""

from __future__ import annotations

import json
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
TEAM_KEY = "team"
"""The key of the home's ``config.toml`` that names the team config file the home belongs to."""


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
    """For each setting, where its value came from: ``argument``, ``environment``, ``team config``,
    ``config.toml`` or ``default``."""
    team: TeamConfig | None = None
    """The team config the home points at, or None for a home of its own."""
    blobs_url: str | None = None
    """``s3://BUCKET/PREFIX`` for an S3-compatible blob store; None for a folder (the team's, or ``blobs/``)."""

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @property
    def blobs_dir(self) -> Path:
        """The blob store's folder: the team's when its config names a folder (shared by the members), else the
        home's own. A store at an ``s3://`` URL (``blobs_url``) is used instead of any folder."""
        if self.team is not None and self.team.blobs_folder is not None:
            return self.team.blobs_folder
        return self.home / "blobs"

    @property
    def local_database_url(self) -> str:
        """The home's own SQLite catalogue, whatever the team or the environment points at: where versions made
        before joining a team stay, and what ``lorahub team push`` copies from."""
        return f"sqlite:///{self.home / 'catalog.db'}"

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
        team = TeamConfig.read(_team_path(root, config[TEAM_KEY])) if TEAM_KEY in config else None
        if env.get(DATABASE_ENV):
            url, sources["database_url"] = env[DATABASE_ENV], "environment"
        elif team is not None:
            url, sources["database_url"] = team.database_url, "team config"
        elif "database_url" in config:
            url, sources["database_url"] = str(config["database_url"]), CONFIG_FILE
        else:
            url, sources["database_url"] = f"sqlite:///{root / 'catalog.db'}", "default"
        blobs_url: str | None = None
        if env.get(BLOBS_ENV):
            blobs_url, sources["blobs"] = env[BLOBS_ENV], "environment"
        elif team is not None and team.blobs_url is not None and team.blobs_folder is None:
            blobs_url, sources["blobs"] = team.blobs_url, "team config"
        elif "blobs_url" in config:
            blobs_url, sources["blobs"] = str(config["blobs_url"]), CONFIG_FILE
        else:
            sources["blobs"] = "team config" if team is not None and team.blobs_folder is not None else "default"
        return cls(home=root, database_url=url, sources=sources, team=team, blobs_url=blobs_url)


@dataclass(frozen=True)
class TeamConfig:
    """A team's shared settings, in a TOML file each member's home points at: the catalogue database every member
    uses and, when there is one, the team's blob store (a folder all members reach, or an ``s3://`` URL)."""

    path: Path
    database_url: str
    blobs_url: str | None = None

    @property
    def blobs_folder(self) -> Path | None:
        """The blob store as a local folder (a plain path or ``file://``), or None for an object store URL."""
        if self.blobs_url is None:
            return None
        if self.blobs_url.startswith("file://"):
            return Path(self.blobs_url.removeprefix("file://"))
        if "://" in self.blobs_url:
            return None
        return Path(self.blobs_url)

    @classmethod
    def read(cls, path: Path) -> TeamConfig:
        if not path.is_file():
            raise errors.TeamError(
                f"the team config {path} does not exist",
                hint="Give the path of the file `lorahub team init` wrote, or `lorahub team join` it again.",
            )
        data = read_config(path)
        url, blobs = data.get("database_url"), data.get("blobs_url")
        if not isinstance(url, str) or not url or not (blobs is None or isinstance(blobs, str)):
            raise errors.TeamError(
                f"{path}: a team config holds database_url (text) and, optionally, blobs_url (text)",
                hint="Write it again with `lorahub team init`, or fix those two keys.",
            )
        return cls(path=path, database_url=url, blobs_url=blobs or None)

    def text(self) -> str:
        """The file's TOML: two keys, strings only (JSON's string escapes are TOML's basic-string escapes)."""
        lines = ["# a lorahub team: each member's home points here (lorahub team join THIS-FILE)"]
        lines.append(f"database_url = {json.dumps(self.database_url)}")
        if self.blobs_url is not None:
            lines.append(f"blobs_url = {json.dumps(self.blobs_url)}")
        return "\n".join(lines) + "\n"


def _team_path(home: Path, value: object) -> Path:
    if not isinstance(value, str) or not value:
        raise errors.SettingsError(f"{home / CONFIG_FILE}: {TEAM_KEY} must be the path of a team config file")
    return (home / Path(value).expanduser()).absolute()


def set_config_value(path: Path, key: str, value: str) -> None:
    """Set one top-level string key of a home's ``config.toml``, keeping every other line as it is."""
    line = f"{key} = {json.dumps(value)}"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
    kept = [existing for existing in lines if not pattern.match(existing)]
    first_table = next((i for i, existing in enumerate(kept) if existing.lstrip().startswith("[")), len(kept))
    kept.insert(first_table, line)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(kept) + "\n", encoding="utf-8")
    read_config(path)  # what was written must read back


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
