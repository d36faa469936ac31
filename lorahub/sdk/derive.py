"""Derived versions: an adapter made from catalogued ones (converted, resized, merged, trained from, resumed).

The new version is added like any file, but its card names its parents by content digest with the relation and
parameters, says what a single parent said (licence, base, triggers, consent) unless told otherwise, and the audit
event is the derivation (``convert``, ``merge``…) rather than a plain ``add``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lorahub.registry.catalog import AdapterVersion
    from lorahub.sdk.adding import AddOptions, AddResult
    from lorahub.sdk.hub import Hub


def add_derived(
    hub: Hub,
    path: str | os.PathLike[str],
    parents: Sequence[tuple[AdapterVersion, Mapping[str, Any]]],
    *,
    relation: str,
    action: str,
    options: AddOptions | None = None,
    details: Mapping[str, Any] | None = None,
) -> AddResult:
    """Catalogue ``path`` as derived from ``parents`` (each with its card parameters: weight, rank, format…).

    Without a name in ``options`` the result becomes the next version of the first parent's adapter.
    """
    from lorahub.sdk.adding import AddOptions
    from lorahub.signing.card import Parent

    base = options or AddOptions()
    lineage = tuple(Parent(digest=v.content_digest, relation=relation, parameters=dict(p)) for v, p in parents)
    inherit = hub.signed_card(parents[0][0]).card if len(parents) == 1 else base.inherit
    audit_details = {"parents": [{"ref": v.ref, "content_digest": v.content_digest, **p} for v, p in parents]}
    derived = dataclasses.replace(
        base,
        name=base.name or parents[0][0].name,
        lineage=lineage,
        inherit=inherit,
        audit_action=action,
        audit_details=audit_details | dict(details or {}),
    )
    return hub.add(path, derived)
