"""The verification policy: what ``lorahub verify`` requires beyond a file being intact.

A TOML file; the home has a default one (``policy.toml``), ``--policy FILE`` replaces it.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from lorahub import errors

DEFAULT_POLICY_TOML = """\
# lorahub verify policy. `lorahub verify --policy FILE` uses another file instead of this one.

# A card signed by at least one trusted (own or `lorahub trust add`-ed), unrevoked key.
require_signature = true
# Fingerprints (or prefixes of at least 8 hex) of which at least one must have signed; empty: any trusted key.
trusted_signers = []
# The card must name a licence other than "unknown".
require_license = false
# Licence identifiers that fail verification, e.g. ["LicenseRef-FLUX-1-dev-Non-Commercial"].
forbidden_licenses = []
# The card's dataset consent must be known (not "unknown").
require_known_consent = false
# Refuse adapters whose dataset includes items whose owners opted out of training.
forbid_opted_out = false
# Keys that match no known layout (loaders would silently ignore them).
max_unknown_keys = 0
"""


@dataclass(frozen=True)
class Policy:
    """The home's rules for what verification accepts (``<home>/policy.toml``, or the file given to
    :meth:`Hub.verify`): required signatures and trusted signers, licences, consent, unknown keys. ``source``
    says where the rules came from."""

    require_signature: bool = True
    trusted_signers: list[str] = field(default_factory=list)
    require_license: bool = False
    forbidden_licenses: list[str] = field(default_factory=list)
    require_known_consent: bool = False
    forbid_opted_out: bool = False
    max_unknown_keys: int = 0
    source: str = "built-in default"

    @classmethod
    def load(cls, path: Path) -> Policy:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise errors.PolicyError(f"{path}: no such policy file") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise errors.PolicyError(f"{path}: {exc}", hint="Fix the TOML syntax.") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str) -> Policy:
        known = {f.name: f for f in fields(cls) if f.name != "source"}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise errors.PolicyError(
                f"{source}: unknown setting(s) {', '.join(unknown)}", hint=f"Known settings: {', '.join(known)}."
            )
        for name, value in data.items():
            expected = type(getattr(cls(), name))
            if type(value) is not expected or (expected is list and not all(isinstance(v, str) for v in value)):
                raise errors.PolicyError(f"{source}: {name} must be a {expected.__name__}")
        return cls(**data, source=source)


def ensure_default_policy(path: Path) -> None:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(DEFAULT_POLICY_TOML, encoding="utf-8")
