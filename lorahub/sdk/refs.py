"""Adapter references as users type them: ``name``, ``name@3``, or a content digest."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

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


def is_catalogue_ref(source: str | os.PathLike[str]) -> bool:
    """The one rule for "file or catalogue reference": an existing path, anything with a separator or a
    .safetensors name is a file; anything else is ``name``, ``name@N`` or a content digest."""
    text = os.fspath(source)
    return not (Path(text).exists() or os.sep in text or text.endswith(".safetensors"))


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise errors.InvalidReferenceError(
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
        raise errors.InvalidReferenceError(
            f"{text!r}: the version after @ must be a number", hint="For example pixel-art@2."
        )
    return Ref(name=check_name(name), version=int(version) if version else None)


_WEIGHT = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")


def parse_weighted(spec: str, *, default: float = 1.0) -> tuple[str, float]:
    """``NAME[@V][:W]`` (or ``DIGEST[:W]``) → (reference, weight); a missing weight is ``default``.

    The weight is the part after the last ``:`` when it reads as a number, so ``sha256:<hex>`` keeps its colon.
    A catalogue reference is checked with :func:`parse_ref`, so a typo fails here, before anything is loaded;
    a path (``stack`` and ``load`` take files too) is left to the caller.
    """
    text = spec.strip()
    ref, weight = text, ""
    head, colon, tail = text.rpartition(":")
    if colon and head.lower() != "sha256":
        if not _WEIGHT.match(tail.strip()):
            raise errors.InvalidReferenceError(
                f"{spec!r}: the weight after ':' must be a number", hint="For example pixel-art:0.7 or ink@2:0.4."
            )
        ref, weight = head, tail
    value = float(weight) if weight else default
    if not math.isfinite(value):
        raise errors.InvalidReferenceError(
            f"{spec!r}: the weight must be a finite number", hint="For example pixel-art:0.7."
        )
    if "/" not in ref and not ref.endswith(".safetensors"):
        parse_ref(ref)
    return ref.strip(), value
