"""What ``from lorahub import load`` does (:func:`lorahub.sdk.entry.load`): a verified adapter, alone or applied to
a diffusers pipeline.

Order matters and is the point: resolve the reference, ask the licence engine (when a use is declared), verify the
file under the home policy, and only then read tensors; a refusal at any step leaves the pipeline untouched.
Verification of a catalogued blob is remembered by its size, mtime and inode, so loading the same adapter again does
not hash it again; trust, signatures and policy are still checked every time.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorahub import errors
from lorahub.sdk.refs import is_catalogue_ref
from lorahub.sdk.verified import VerifiedAdapter

if TYPE_CHECKING:
    from lorahub.adapters.model import CanonicalAdapter
    from lorahub.registry.catalog import AdapterVersion
    from lorahub.sdk.hub import Hub
    from lorahub.sdk.pipelines import AdapterHandle
    from lorahub.sdk.verifying import VerifyReport


def _require(report: VerifyReport) -> VerifyReport:
    if not report.ok:
        failed = "; ".join(f"{c.name}: {c.detail}" for c in report.checks if not c.ok)
        raise errors.VerificationFailedError(
            f"{report.target} failed verification, nothing was loaded ({failed})",
            hint="lorahub verify shows every check; trust the signer (lorahub trust add) or fix the file. "
            "verify=False skips verification for files you made yourself.",
        )
    return report


def resolve(hub: Hub, ref: str | os.PathLike[str], *, verify: bool = True) -> VerifiedAdapter:
    """The adapter behind ``ref`` (name, name@N, content digest or path), verified unless ``verify`` is False."""
    from lorahub.files.safetensors import check_path

    version: AdapterVersion | None = None
    report: VerifyReport | None = None
    if isinstance(ref, os.PathLike) or not is_catalogue_ref(ref):
        path = check_path(Path(ref))
        if verify:
            report = _require(hub.verify(path))
    else:
        from lorahub.sdk.locating import version_file
        from lorahub.sdk.verifying import verify_catalogued

        version = hub.version(str(ref))
        if verify:
            report = _require(verify_catalogued(hub, version, hub.policy()))
        path = version_file(hub, version).path
    signed = hub.signed_card(version) if version is not None else None
    digest = version.content_digest if version is not None else (report.content_digest if report else None)
    if digest is None:
        from lorahub.sdk.inspect import inspect

        digest = inspect(path).hashes.content or ""
    return VerifiedAdapter(
        ref=str(ref), path=path, content_digest=digest, version=version, signed=signed, report=report
    )


def adapter_name_for(verified: VerifiedAdapter) -> str:
    """A pipeline adapter name derived from the content digest: unique per content and never a substring of PEFT's own
    key names (diffusers filters keys by substring: a name like ``B`` matches ``lora_B``). A slot that another adapter
    was swapped into keeps its name, so the name is checked against what the slot holds (``injected_contents``)."""
    stem = verified.version.name if verified.version is not None else "file"
    return f"{stem}-{verified.content_digest[:12]}"


def apply(
    verified: VerifiedAdapter,
    pipe: Any,
    *,
    weight: float = 1.0,
    adapter_name: str | None = None,
    replace: AdapterHandle | None = None,
) -> AdapterHandle:
    """Apply a verified adapter to ``pipe``; every check runs before the first tensor reaches the pipeline."""
    from lorahub.sdk.pipelines import (
        AdapterHandle,
        activate,
        active_as_injected,
        applied,
        check_family,
        check_loadable,
        inject,
        injected_contents,
        loaded,
        pipeline_family,
        prepare,
        prepared_states,
    )

    states = prepared_states(pipe).get(verified.content_digest)  # prepared: checked and converted for this pipeline
    if states is None:
        adapter = settle_family(verified, pipeline_family(pipe), stored=True)
        check_family(adapter, pipe, verified.label)
        check_loadable(adapter, verified.label)
        states = prepared_states(pipe).put(verified.content_digest, prepare(adapter, pipe))
    targets = {component: state.targets for component, state in states.items()}
    weights = applied(pipe)
    if replace is not None:
        return _swap(replace, verified, states, targets, weight)
    contents = injected_contents(pipe)
    name = adapter_name or _free_name(pipe, adapter_name_for(verified), verified.content_digest)
    injected = contents.get(name) != verified.content_digest
    if injected:  # else the same content stays injected: only its weight changes
        if name in loaded(pipe):
            raise errors.AdapterNameTakenError(
                f"the pipeline already has an adapter named {name!r} holding other tensors",
                hint="Pass another adapter_name, or unload that adapter first.",
            )
        inject(pipe, states, name, copy=verified.content_digest in contents.values())
        contents[name] = verified.content_digest
    weights[name] = float(weight)
    if not (injected and active_as_injected(pipe, name)):
        activate(pipe)
    return AdapterHandle(pipe=pipe, adapter_name=name, adapter=verified, targets=targets)


def _free_name(pipe: Any, name: str, digest: str) -> str:
    """``name``, or ``name-2``, ``name-3``… when a swapped slot already uses it for other content."""
    from lorahub.sdk.pipelines import injected_contents, loaded

    contents, taken = injected_contents(pipe), loaded(pipe)
    candidate, n = name, 1
    while candidate in taken and contents.get(candidate) != digest:
        n += 1
        candidate = f"{name}-{n}"
    return candidate


def settle_family(verified: VerifiedAdapter, families: Sequence[str], *, stored: bool = False) -> CanonicalAdapter:
    """An adapter whose family the evidence leaves open (small or unusual geometry: ``unknown``) is read as the first
    of ``families`` (a pipeline's, or every family with name tables) under which all its modules map. An SD3/FLUX
    adapter with fused modules whose delta has no exact per-projection factors (a LoKr over ``img_attn.qkv``) is read
    again with those modules as their dense ΔW, which splits by rows exactly: the ΔW patches apply it as a full
    diff.

    The settled adapter is kept on ``verified`` and returned: its :attr:`~VerifiedAdapter.stored` tensors for a
    pipeline (``stored``), else its canonical ``adapter``."""
    from lorahub.adapters.model import read_adapter

    def settled(adapter: CanonicalAdapter) -> CanonicalAdapter:
        if stored:
            verified.stored = adapter
        else:
            verified.adapter = adapter
        return adapter

    adapter = verified.stored if stored else verified.adapter
    if adapter.family == "unknown":
        for family in families:
            candidate = read_adapter(verified.path, family=family, widen=not stored)
            if candidate.layers and not candidate.unmapped:
                return settled(candidate)
    if adapter.unsplit:
        try:
            dense = read_adapter(verified.path, family=adapter.family, materialize_fused=True, widen=not stored)
        except errors.BaseWeightRequiredError:
            return adapter  # a base-dependent kind over a fused module: check_loadable refuses it as unmapped
        if not dense.unsplit:
            return settled(dense)
    return adapter


def _swap(
    handle: AdapterHandle,
    verified: VerifiedAdapter,
    states: dict[str, Any],
    targets: dict[str, dict[str, int]],
    weight: float,
) -> AdapterHandle:
    """Put ``verified`` in ``handle``'s place: hotswap where diffusers can, re-inject the other components."""
    from lorahub.sdk.patching import patched
    from lorahub.sdk.pipelines import (
        activate,
        applied,
        delete_component_adapter,
        hotswap,
        hotswappable,
        inject,
        injected_contents,
        prepared_states,
    )

    contents = injected_contents(handle.pipe)
    prepared_states(handle.pipe).drop(contents.get(handle.adapter_name))  # its tensors may be the slot's weights
    on_patches = set(patched(handle.pipe).get(handle.adapter_name, {}))
    new_patches = {c for c, s in states.items() if s.deltas}
    peft_old = {c: t for c, t in handle.targets.items() if c not in on_patches}
    swap = hotswappable(peft_old, {c: t for c, t in targets.items() if c not in new_patches})
    for component in set(handle.targets) - swap:
        delete_component_adapter(handle.pipe, component, handle.adapter_name)
    for component in swap:
        hotswap(handle.pipe, component, states[component], handle.adapter_name)
    inject(handle.pipe, {c: s for c, s in states.items() if c not in swap}, handle.adapter_name)
    applied(handle.pipe)[handle.adapter_name] = float(weight)
    contents[handle.adapter_name] = verified.content_digest
    activate(handle.pipe)
    handle.adapter, handle.hotswapped = verified, bool(swap or on_patches & new_patches)
    handle.targets = {c: (handle.targets[c] if c in swap else t) for c, t in targets.items()}
    return handle
