"""``oci://HOST[:PORT]/REPOSITORY[:TAG|@sha256:HEX]``: where an artifact lives in an OCI registry.

The grammar is the distribution spec's (lowercase path components, tags of at most 128 word characters, SHA-256
digests), checked here so that a typo is refused before any connection is made rather than by the registry.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from lorahub import errors

SCHEME = "oci://"
REPOSITORY = re.compile(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$")
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
HOST = re.compile(r"^(?:\[[0-9a-fA-F:]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::[0-9]{1,5})?$")
LOOPBACK_NAMES = frozenset({"localhost"})


@dataclass(frozen=True)
class OciReference:
    """A parsed reference; ``tag`` and ``digest`` are both None when the user named neither."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def host(self) -> str:
        """The registry's host name or address, without port or IPv6 brackets."""
        if self.registry.startswith("["):
            return self.registry[1:].split("]", 1)[0]
        return self.registry.split(":", 1)[0]

    @property
    def is_loopback(self) -> bool:
        if self.host.lower() in LOOPBACK_NAMES:
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def with_tag(self, tag: str) -> OciReference:
        return OciReference(self.registry, self.repository, tag, None)

    def with_digest(self, digest: str) -> OciReference:
        return OciReference(self.registry, self.repository, None, digest)

    @property
    def target(self) -> str:
        """What goes after ``/manifests/``: the digest when there is one, else the tag."""
        if self.digest is not None:
            return self.digest
        if self.tag is None:
            raise errors.InvalidArgumentError(f"{self} names neither a tag nor a digest")
        return self.tag

    def __str__(self) -> str:
        suffix = f"@{self.digest}" if self.digest else f":{self.tag}" if self.tag else ""
        return f"{SCHEME}{self.registry}/{self.repository}{suffix}"


def parse_oci_reference(text: str) -> OciReference:
    """Split and check a reference; anything the distribution spec would refuse is refused here, with the rule."""
    if not text.startswith(SCHEME):
        raise _invalid(text, f"it does not start with {SCHEME}")
    registry, slash, rest = text[len(SCHEME) :].partition("/")
    if not slash or not rest:
        raise _invalid(text, "it names no repository after the host")
    if not HOST.match(registry):
        raise _invalid(text, f"{registry!r} is not a host name or address with an optional :PORT")
    repository, digest, tag = rest, None, None
    if "@" in rest:
        repository, digest = rest.split("@", 1)
        if not DIGEST.match(digest):
            raise _invalid(text, f"{digest!r} is not sha256: and 64 lowercase hex digits")
    elif ":" in rest.rsplit("/", 1)[-1]:
        repository, tag = rest.rsplit(":", 1)
        if not TAG.match(tag):
            raise _invalid(text, f"tag {tag!r} is not 1 to 128 letters, digits, '_', '.' or '-'")
    if not REPOSITORY.match(repository):
        raise _invalid(text, f"repository {repository!r} must be lowercase path components (a-z, 0-9, '.', '_', '-')")
    return OciReference(registry, repository, tag, digest)


def _invalid(text: str, why: str) -> errors.InvalidArgumentError:
    return errors.InvalidArgumentError(
        f"{text!r} is not an OCI reference: {why}",
        hint="Write oci://HOST[:PORT]/REPOSITORY[:TAG] or oci://HOST[:PORT]/REPOSITORY@sha256:DIGEST.",
    )
