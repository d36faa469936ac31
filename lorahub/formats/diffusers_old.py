"""diffusers before PEFT: ``….to_q.lora.down.weight`` (0.2x), TE ``lora_linear_layer``, and the attention-processor
format (``….attn1.processor.to_q_lora.down.weight``, usually without a component prefix, never with alpha).

The processor format names the processor's child (``to_q_lora``), not the layer it adapts (``to_q``); the module
keeps the file's name and converters map it (``to_out_lora`` → ``to_out.0``).
"""

from __future__ import annotations

from lorahub.formats.base import Layout
from lorahub.formats.diffusers import adapter_configs, apply_configs, rslora_notes
from lorahub.formats.grouping import Keys, Metadata, Scheme, group, mostly
from lorahub.formats.naming import DIFFUSERS_OLD_SUFFIXES, DIFFUSERS_PREFIXES, KNOWN

SCHEME = Scheme(prefixes=DIFFUSERS_PREFIXES, suffixes=DIFFUSERS_OLD_SUFFIXES, bare=KNOWN)
_NEW_SPELLINGS = (
    ".lora.down.weight",
    ".lora.up.weight",
    ".lora_linear_layer.down.weight",
    ".lora_linear_layer.up.weight",
)
_PROCESSOR_SPELLINGS = ("_lora.down.weight", "_lora.up.weight")


def _old_key(key: str) -> bool:
    if key.endswith(_NEW_SPELLINGS):
        return True
    return ".processor." in key and key.endswith(_PROCESSOR_SPELLINGS)


def _detect(keys: Keys, metadata: Metadata) -> bool:
    return mostly(keys, _old_key)


class DiffusersOldFormat:
    """The old spellings; diffusers' own training scripts still write them (``convert_state_dict_to_diffusers``)
    next to a ``lora_adapter_metadata`` PEFT config, whose alpha diffusers applies when it loads, so we do too."""

    id = "diffusers-old"
    description = "diffusers before PEFT (.lora.down.weight, lora_linear_layer, processor.to_q_lora attn-procs)"

    def detect(self, keys: Keys, metadata: Metadata) -> bool:
        return _detect(keys, metadata)

    def parse(self, keys: Keys, metadata: Metadata) -> Layout:
        layout = group(keys, SCHEME).layout(self.id)
        configs = adapter_configs(metadata)
        if configs:
            apply_configs(layout.modules, configs)
            layout.notes = [f"alpha from lora_adapter_metadata for {', '.join(sorted(configs))}"]
            layout.notes += rslora_notes(configs)
        return layout


FORMAT = DiffusersOldFormat()
