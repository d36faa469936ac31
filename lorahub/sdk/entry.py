"""The functions the package root exports that work on a home: ``lorahub.load``, ``lorahub.stack`` and
``lorahub.apply_prompt``. Each opens the default home when no ``hub`` is given.

Why here: opening a home needs :class:`~lorahub.sdk.hub.Hub`, while the work itself (:mod:`lorahub.sdk.loading`,
:mod:`lorahub.sdk.prompts`) sits below the Hub, which calls it for ``bake``, ``merge`` and ``generate``; these
entry points are the one place above both.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lorahub.sdk import prompts
from lorahub.sdk.hub import Hub
from lorahub.sdk.licensing import require_license
from lorahub.sdk.loading import apply, resolve

if TYPE_CHECKING:
    from lorahub.sdk.pipelines import AdapterHandle
    from lorahub.sdk.prompts import AppliedPrompt

__all__ = ["apply_prompt", "load", "stack"]


def load(
    ref: str | os.PathLike[str],
    pipe: Any = None,
    *,
    weight: float = 1.0,
    hub: Hub | None = None,
    verify: bool = True,
    use: str | None = None,
    accept_uncertain: bool = False,
    adapter_name: str | None = None,
    replace: AdapterHandle | None = None,
) -> Any:
    """Load an adapter: without ``pipe`` the :class:`~lorahub.sdk.loading.VerifiedAdapter`; with a diffusers
    pipeline, the adapter is applied with ``weight`` and an :class:`~lorahub.sdk.pipelines.AdapterHandle` is
    returned.

    ``use`` (``commercial``, ``non-commercial``, ``research``) asks the licence engine first: forbidden stops the
    load, uncertain too unless ``accept_uncertain``. ``replace`` swaps this adapter into the place of an applied
    one, in place through a PEFT hotswap when the targets allow it (much faster than a fresh load).
    """
    hub = hub or Hub.open()
    if use is not None:
        require_license(hub, [str(ref)], use=use, accept_uncertain=accept_uncertain, action="load")
    verified = resolve(hub, ref, verify=verify)
    if pipe is None:
        return verified
    return apply(verified, pipe, weight=weight, adapter_name=adapter_name, replace=replace)


def stack(
    pipe: Any,
    specs: Sequence[str | tuple[str, float]],
    *,
    hub: Hub | None = None,
    verify: bool = True,
    use: str | None = None,
    accept_uncertain: bool = False,
    exclusive: bool = False,
) -> list[AdapterHandle]:
    """:func:`lorahub.sdk.prompts.stack` on ``hub``, or on the default home."""
    return prompts.stack(
        pipe, specs, hub=hub or Hub.open(), verify=verify, use=use, accept_uncertain=accept_uncertain,
        exclusive=exclusive,
    )  # fmt: skip


def apply_prompt(
    pipe: Any,
    prompt: str,
    *,
    hub: Hub | None = None,
    triggers: bool = True,
    verify: bool = True,
    use: str | None = None,
    accept_uncertain: bool = False,
) -> AppliedPrompt:
    """:func:`lorahub.sdk.prompts.apply_prompt` on ``hub``, or on the default home."""
    return prompts.apply_prompt(
        pipe, prompt, hub=hub or Hub.open(), triggers=triggers, verify=verify, use=use,
        accept_uncertain=accept_uncertain,
    )  # fmt: skip
