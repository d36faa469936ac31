"""Registry credentials, found where the container tools keep them, so a `docker login` is all a user does.

Order: ``LORAHUB_REGISTRY_USERNAME``/``LORAHUB_REGISTRY_PASSWORD`` (CI secrets), then the auth file named by
``REGISTRY_AUTH_FILE`` (podman, skopeo, buildah), then the Docker config (``$DOCKER_CONFIG/config.json`` or
``~/.docker/config.json``): its inline ``auths`` entry, else its ``credHelpers``/``credsStore`` program, asked with
the docker-credential-helpers protocol (host on stdin, JSON with Username and Secret on stdout). Nothing is written.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorahub import errors

HELPER_TIMEOUT_S = 30
DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io")


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = ""

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=***)"


def credentials_for(registry: str, environ: Mapping[str, str] | None = None) -> Credentials | None:
    env = os.environ if environ is None else environ
    username = env.get("LORAHUB_REGISTRY_USERNAME")
    if username:
        return Credentials(username, env.get("LORAHUB_REGISTRY_PASSWORD", ""))
    for config in _config_files(env):
        found = _from_config(_read_config(config), registry)
        if found is not None:
            return found
    return None


def _config_files(env: Mapping[str, str]) -> list[Path]:
    files = []
    if env.get("REGISTRY_AUTH_FILE"):
        files.append(Path(env["REGISTRY_AUTH_FILE"]))
    docker_dir = Path(env["DOCKER_CONFIG"]) if env.get("DOCKER_CONFIG") else Path.home() / ".docker"
    files.append(docker_dir / "config.json")
    return [f for f in files if f.is_file()]


def _read_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise errors.SettingsError(f"cannot read registry credentials from {path}: {error}") from None
    if not isinstance(data, dict):
        raise errors.SettingsError(f"{path} is not a JSON object")
    return data


def _from_config(config: Mapping[str, Any], registry: str) -> Credentials | None:
    keys = _keys_for(registry)
    auths = config.get("auths") or {}
    for key in keys:
        entry = auths.get(key)
        if isinstance(entry, dict) and entry.get("auth"):
            return _decode_auth(str(entry["auth"]), registry)
    helpers = config.get("credHelpers") or {}
    helper = next((helpers[k] for k in keys if k in helpers), None) or config.get("credsStore")
    return _ask_helper(str(helper), registry) if helper else None


def _keys_for(registry: str) -> tuple[str, ...]:
    """The spellings tools use for one registry in ``auths``: bare, with a scheme, with Docker Hub's v1 path."""
    if registry in DOCKER_HUB_KEYS or registry == "registry-1.docker.io":
        return DOCKER_HUB_KEYS
    return (registry, f"https://{registry}", f"http://{registry}", f"https://{registry}/v1/")


def _decode_auth(auth: str, registry: str) -> Credentials:
    try:
        username, _, password = base64.b64decode(auth, validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise errors.SettingsError(
            f"the Docker config's auth entry for {registry} is not base64 of USER:PASSWORD",
            hint=f"Run `docker login {registry}` again.",
        ) from None
    return Credentials(username, password)


def _ask_helper(helper: str, registry: str) -> Credentials | None:
    program = shutil.which(f"docker-credential-{helper}")
    if program is None:
        return None
    try:
        done = subprocess.run(
            [program, "get"], input=registry, capture_output=True, text=True, timeout=HELPER_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise errors.RegistryAuthError(f"the credential helper {program} failed: {error}") from None
    if done.returncode != 0:
        return None  # the helper's way of saying it has nothing for this host
    try:
        answer = json.loads(done.stdout)
        return Credentials(str(answer["Username"]), str(answer["Secret"]))
    except (ValueError, KeyError, TypeError):
        what = f"the credential helper {program} answered something that is not its JSON"
        raise errors.RegistryAuthError(what) from None
