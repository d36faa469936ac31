"""The fallback: no format claimed the file. Keys that still end in an unambiguous LoRA-family suffix are grouped
into modules (component read from the name) so ``inspect`` can say something; everything else is unmatched."""

from __future__ import annotations

from lorahub.formats.base import Layout
from lorahub.formats.grouping import Keys, Metadata, Scheme, group, split_role
from lorahub.formats.naming import (
    COMFY_PREFIXES,
    DIFFUSERS_PREFIXES,
    DOTTED_SUFFIXES,
    GUESS,
    ONETRAINER_PREFIXES,
    PEFT_PREFIXES,
)

_DIFFUSERS_OLD = {"lora.down.weight": "down", "lora.up.weight": "up"}
SCHEME = Scheme(
    prefixes={**ONETRAINER_PREFIXES, **DIFFUSERS_PREFIXES, **COMFY_PREFIXES, **PEFT_PREFIXES},
    suffixes={**DOTTED_SUFFIXES, **_DIFFUSERS_OLD},
    bare=GUESS,
)
_NOT_WEIGHTS = frozenset({"alpha", "scale"})


class UnknownFormat:
    """Always matches; groups only what is unambiguous."""

    id = "unknown"
    description = "no known layout; recognisable LoRA tensors grouped, the rest unmatched"

    def detect(self, keys: Keys, metadata: Metadata) -> bool:
        return True

    def parse(self, keys: Keys, metadata: Metadata) -> Layout:
        grouped = group(keys, SCHEME)
        dropped = {name for name, module in grouped.modules.items() if module.tensors.keys() <= _NOT_WEIGHTS}
        if dropped:
            for name in dropped:
                del grouped.modules[name]
            kept = set(grouped.unmatched)
            grouped.unmatched += [
                key for key in keys if key not in kept and (split_role(key, SCHEME.suffixes) or ("",))[0] in dropped
            ]
        return grouped.layout(self.id, ["no known format matched this file"])


FORMAT = UnknownFormat()
