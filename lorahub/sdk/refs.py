"""Adapter references as users type them: ``name``, ``name@3``, or a content digest."""

from __future__ import annotations

import re
from dataclasses import dataclass

from lorahub import errors

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
DIGEST = re.compile(r"^(?:sha256:)?([0-9a-f]{64})$")


@dataclass(frozen=True)
class Ref:
    name: str | None = None
    version: int | None = None
    digest: str | None = None

    def __str__(self) -> str:
        if self.digest:
            return self.digest
        return f"{self.name}@{self.version}" if self.version is not None else str(self.name)


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise errors.LorahubError(
            f"{name!r} is not a valid adapter name",
            hint="Use 1-128 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit.",
        )
    return name


def parse_ref(text: str) -> Ref:
    text = text.strip()
    digest = DIGEST.match(text.lower())
    if digest:
        return Ref(digest=digest.group(1))
    name, _, version = text.partition("@")
    if version and not version.isdigit():
        raise errors.LorahubError(f"{text!r}: the version after @ must be a number", hint="For example pixel-art@2.")
    return Ref(name=check_name(name), version=int(version) if version else None)


def parse_weighted(spec: str, default: float = 1.0) -> tuple[str, float]:
    """``NAME[@V][:W]`` (or a path or digest, optionally ``:W``) → (reference, weight). A ``sha256:`` prefix is part
    of the reference, not a weight separator."""
    ref, sep, weight = spec.strip().rpartition(":")
    if not sep or ref.lower() == "sha256" or ref == "":
        return spec.strip(), default
    try:
        return ref, float(weight)
    except ValueError:
        raise errors.LorahubError(
            f"{spec!r}: the weight after ':' must be a number", hint="For example pixel-art:0.7 or ink@2:0.4."
        ) from None
