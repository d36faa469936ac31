"""Stacking adapters on a pipeline, and the A1111 prompt syntax ``<lora:name:weight>``.

A prompt decides which adapters a generation uses, as in A1111: after :func:`apply_prompt`, exactly the prompt's
adapters are active with the prompt's weights. Adapters applied before stay injected but inactive, so a later prompt
that names them again costs a ``set_adapters`` call, not a load.

Syntax: ``<lora:NAME>`` (weight 1.0), ``<lora:NAME:0.7>``, ``<lora:NAME@2:0.7>``; a backslash before ``<`` keeps the
tag in the prompt as text (``\\<lora:x>`` → ``<lora:x>``). Other ``<…>`` tags (``<hypernet:…>``) are left alone.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lorahub import errors
from lorahub.sdk.refs import parse_ref

if TYPE_CHECKING:
    from lorahub.sdk.hub import Hub
    from lorahub.sdk.pipelines import AdapterHandle

TAG = re.compile(r"(\\?)<lora:([^<>]*)>")
SPACES = re.compile(r"[ \t]{2,}")
SPACE_BEFORE_COMMA = re.compile(r"[ \t]+,")
REPEATED_COMMAS = re.compile(r",(\s*,)+")


@dataclass(frozen=True)
class PromptAdapter:
    ref: str
    weight: float


@dataclass
class ParsedPrompt:
    text: str
    """The prompt without its adapter tags (escaped tags kept as text)."""
    adapters: list[PromptAdapter] = field(default_factory=list)


@dataclass
class AppliedPrompt:
    """What :func:`lorahub.apply_prompt` did: the prompt to give the pipeline and a handle for each adapter it
    applied (to change a weight or unload it)."""

    prompt: str
    """The prompt to give the pipeline: tags removed, trigger words appended unless asked not to."""
    handles: list[AdapterHandle] = field(default_factory=list)
    license_verdict: str | None = None
    """The licence engine's answer for the declared use (None when no use was declared)."""


def _tidy(text: str) -> str:
    """What removing tags leaves behind: double spaces, a space before a comma, empty comma-separated items."""
    text = REPEATED_COMMAS.sub(",", SPACE_BEFORE_COMMA.sub(",", SPACES.sub(" ", text)))
    return text.strip().strip(",").strip()


def parse_prompt(prompt: str) -> ParsedPrompt:
    """Split a prompt into its text and its ``<lora:…>`` tags; a malformed tag is an error, not text."""
    adapters: list[PromptAdapter] = []

    def take(match: re.Match[str]) -> str:
        escaped, body = match.group(1), match.group(2)
        if escaped:
            return f"<lora:{body}>"
        parts = body.split(":")
        if len(parts) > 2 or not parts[0].strip():
            raise errors.PromptTagError(f"cannot read the prompt tag <lora:{body}>")
        weight = 1.0
        if len(parts) == 2:
            try:
                weight = float(parts[1])
            except ValueError:
                raise errors.PromptTagError(
                    f"<lora:{body}>: the weight {parts[1]!r} is not a number", hint="For example <lora:ink:0.7>."
                ) from None
        adapters.append(PromptAdapter(parts[0].strip(), weight))
        return ""

    text = TAG.sub(take, prompt)
    return ParsedPrompt(text=_tidy(text), adapters=adapters)


def _check_known(hub: Hub, refs: Sequence[str]) -> None:
    """Every name must be catalogued; unknown ones are reported together, with near matches."""
    names = sorted({v.name for v in hub.list_versions()})
    unknown = []
    for ref in refs:
        parsed = parse_ref(ref)
        if parsed.name is not None and parsed.name not in names:
            unknown.append(parsed.name)
    if unknown:
        lines = []
        for name in unknown:
            near = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
            lines.append(f"{name!r}" + (f" (did you mean {', '.join(near)}?)" if near else ""))
        raise errors.UnknownAdapterNameError(
            f"no catalogued adapter named {'; '.join(lines)}",
            hint="lorahub list shows the catalogue; add the file first (lorahub add FILE --name NAME).",
        )


def stack(
    pipe: Any,
    specs: Sequence[str | tuple[str, float]],
    *,
    hub: Hub,
    verify: bool = True,
    use: str | None = None,
    accept_uncertain: bool = False,
    exclusive: bool = False,
) -> list[AdapterHandle]:
    """Apply several adapters with weights (``"pixel-art:0.7"``, ``("ink@2", 0.4)``). Every adapter is resolved,
    licence-checked and verified before the first one is applied, so a refusal leaves the pipeline as it was.
    ``exclusive`` makes these the only active adapters (what a prompt does)."""
    from lorahub.sdk.licensing import require_license
    from lorahub.sdk.loading import apply, resolve, settle_family
    from lorahub.sdk.pipelines import activate, applied, check_family, check_loadable, pipeline_family
    from lorahub.sdk.refs import parse_weighted

    pairs = [parse_weighted(s) if isinstance(s, str) else (s[0], float(s[1])) for s in specs]
    if use is not None and pairs:
        require_license(hub, [r for r, _ in pairs], use=use, accept_uncertain=accept_uncertain, action="stack")
    verified = [(resolve(hub, ref, verify=verify), weight) for ref, weight in pairs]
    for item, _ in verified:
        adapter = settle_family(item, pipeline_family(pipe), stored=True)
        check_family(adapter, pipe, item.label)
        check_loadable(adapter, item.label)
    if exclusive:
        applied(pipe).clear()
        activate(pipe)
    return [apply(item, pipe, weight=weight) for item, weight in verified]


def apply_prompt(
    pipe: Any,
    prompt: str,
    *,
    hub: Hub,
    triggers: bool = True,
    verify: bool = True,
    use: str | None = None,
    accept_uncertain: bool = False,
) -> AppliedPrompt:
    """Load the prompt's ``<lora:…>`` adapters with their weights (and only those), and return the cleaned prompt
    with each adapter's trigger words appended when they are not in it already (``triggers=False`` to keep it as
    written)."""
    from lorahub.sdk.licensing import require_license

    parsed = parse_prompt(prompt)
    refs = [a.ref for a in parsed.adapters]
    _check_known(hub, refs)
    verdict = None
    if use is not None and refs:
        verdict = require_license(hub, refs, use=use, accept_uncertain=accept_uncertain, action="prompt").verdict
    handles = stack(pipe, [(a.ref, a.weight) for a in parsed.adapters], hub=hub, verify=verify, exclusive=True)
    text = parsed.text
    if triggers:
        present = text.lower()
        words = [w for h in handles for w in h.adapter.trigger_words if w.lower() not in present]
        text = ", ".join([text, *dict.fromkeys(words)]) if text else ", ".join(dict.fromkeys(words))
    return AppliedPrompt(prompt=text, handles=handles, license_verdict=verdict)
