"""Turning a header's keys into modules: the one algorithm every name-based format shares.

A format is a :class:`Scheme` (which prefixes it accepts and what component each means, which suffixes and what
role each is); grouping never raises and never drops a key: anything that does not fit the scheme, or that would
give a module a second tensor for the same role, is returned as unmatched so callers can show it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from lorahub.files.safetensors import TensorInfo
from lorahub.formats.base import Embedding, Layout, Module
from lorahub.formats.naming import (
    DIFFUSERS_BARE_ROOTS,
    EMBEDDING_PREFIX,
    KNOWN,
    ROLE_STEMS,
    PrefixTable,
    by_length,
    guess_component,
    resolve_component,
    strip_prefix,
)

Keys = Mapping[str, TensorInfo]
Metadata = Mapping[str, str]


def meta_text(metadata: Metadata, key: str) -> str:
    """A metadata value as text, "" when absent: detection reads metadata and must not trip over odd values."""
    value = metadata.get(key)
    return value if isinstance(value, str) else ""


@dataclass(frozen=True)
class Scheme:
    """How one format spells its keys. ``bare`` is the component rule for names without a listed prefix; None
    means such keys do not belong to the format."""

    prefixes: Mapping[str, str]
    suffixes: Mapping[str, str]
    bare: str | None = None
    embeddings: bool = False
    table: PrefixTable = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "table", by_length(self.prefixes))


def split_role(key: str, suffixes: Mapping[str, str]) -> tuple[str, str] | None:
    """``(module, role)`` by the longest known dotted suffix (up to three parts), so ``x.lora.down.weight`` is not
    read as ``down.weight`` of a module ``x.lora``. Unrolled: it runs once per key of every file."""
    last = key.rfind(".")
    if last <= 0:
        return None
    second = key.rfind(".", 0, last)
    third = key.rfind(".", 0, second) if second > 0 else -1
    for cut in (third, second, last):
        if cut > 0:
            role = suffixes.get(key[cut + 1 :])
            if role is not None:
                return key[:cut], role
    return None


def component_of(module: str, scheme: Scheme) -> str | None:
    """The component of a module name under a scheme, or None when the name is not the scheme's.

    A name is the scheme's only when its whole pattern fits: a flattened (``…_``) prefix is followed by a flattened
    path (kohya names have no dots), the prefix is not written twice (``lora_unet_lora_unet_…``, ``unet.unet.…``),
    the name does not end in a LoRA role (a changed separator), and a bare name under the ``known`` rule names a
    known layer. Keys whose names fail stay unmatched, where :mod:`lorahub.formats.misnaming` reads them."""
    rest, rule = strip_prefix(module, scheme.table)
    if rule is None:
        rule = scheme.bare
        prefix = ""
    else:
        prefix = module[: len(module) - len(rest)]
    if rule is None or not rest or rest.endswith(ROLE_STEMS):
        return None
    if prefix and (rest.startswith(prefix) or (prefix.endswith("_") and "." in rest)):
        return None
    if rule == KNOWN:
        component = guess_component(rest)
        known = rest.partition(".")[0] in DIFFUSERS_BARE_ROOTS
        return component if known and component != "unknown" else None
    return resolve_component(rule, rest)


def embedding_of(key: str, info: TensorInfo) -> Embedding | None:
    """An A1111 bundled embedding, when the key is one."""
    if not key.startswith(EMBEDDING_PREFIX):
        return None
    name, dot, tail = key[len(EMBEDDING_PREFIX) :].partition(".")
    if not name or not dot:
        return None
    if tail in ("clip_l", "clip_g"):
        encoder: str | None = tail
    elif tail.startswith("string_to_param.") or tail == "string_to_param":
        encoder = None
    else:
        return None
    return token_embedding(name, key, info, encoder)


def token_embedding(name: str, key: str, info: TensorInfo, encoder: str | None = None) -> Embedding:
    """An embedding from one tensor: rows are vectors, the last axis their width (a 1-D tensor is one vector)."""
    shape = info.shape
    dim = shape[-1] if shape else 0
    vectors = math.prod(shape[:-1]) if len(shape) > 1 else (1 if shape else 0)
    return Embedding(name=name, vectors=vectors, dim=dim, keys=[key], encoder=encoder)


@dataclass
class Grouped:
    """What grouping found, before it becomes a :class:`Layout`."""

    modules: dict[str, Module] = field(default_factory=dict)
    embeddings: list[Embedding] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)

    def add(self, key: str, info: TensorInfo, where: tuple[str, str, str] | None) -> None:
        """File a key under its module and role; a second tensor for a taken role is unmatched, never overwritten."""
        if where is None:
            self.unmatched.append(key)
            return
        name, component, role = where
        module = self.modules.get(name)
        if module is None:
            module = self.modules[name] = Module(name=name, component=component)
        if role in module.tensors:
            self.unmatched.append(key)
            return
        module.tensors[role] = info

    def layout(self, format_id: str, notes: list[str] | None = None) -> Layout:
        return Layout(
            format=format_id,
            modules=list(self.modules.values()),
            embeddings=self.embeddings,
            unmatched=self.unmatched,
            notes=notes or [],
        )


def group(keys: Keys, scheme: Scheme) -> Grouped:
    """Every key into a module, an embedding or the unmatched list."""
    grouped = Grouped()
    for key, info in keys.items():
        if scheme.embeddings and key.startswith(EMBEDDING_PREFIX):
            embedding = embedding_of(key, info)
            if embedding is not None:
                grouped.embeddings.append(embedding)
                continue
        split = split_role(key, scheme.suffixes)
        if split is None:
            grouped.unmatched.append(key)
            continue
        name, role = split
        module = grouped.modules.get(name)
        if module is None:  # a module has several keys: resolve its prefix once
            component = component_of(name, scheme)
            if component is None:
                grouped.unmatched.append(key)
                continue
            module = grouped.modules[name] = Module(name=name, component=component)
        if role in module.tensors:
            grouped.unmatched.append(key)
        else:
            module.tensors[role] = info
    return grouped


def share(keys: Keys, predicate: Callable[[str], bool]) -> float:
    """Fraction of keys for which ``predicate`` holds (0 for an empty file): formats claim a file by majority, so
    a few stray keys of another spelling do not decide its format."""
    if not keys:
        return 0.0
    return sum(1 for key in keys if predicate(key)) / len(keys)


def mostly(keys: Keys, predicate: Callable[[str], bool]) -> bool:
    """At least half the keys satisfy ``predicate``."""
    return share(keys, predicate) >= 0.5


@dataclass(eq=False)
class SchemeFormat:
    """A format that is nothing but a scheme and a detection rule."""

    id: str
    description: str
    scheme: Scheme
    detector: Callable[[Keys, Metadata], bool]
    notes: Callable[[Grouped, Metadata], list[str]] | None = None

    def detect(self, keys: Keys, metadata: Metadata) -> bool:
        return self.detector(keys, metadata)

    def parse(self, keys: Keys, metadata: Metadata) -> Layout:
        grouped = group(keys, self.scheme)
        notes = self.notes(grouped, metadata) if self.notes is not None else []
        return grouped.layout(self.id, notes)
